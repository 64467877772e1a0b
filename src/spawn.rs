//! Starting a child: `fork` + `execve`, the only code in the supervisor that
//! runs between the two.
//!
//! `LISTEN_PID` must hold the child's own pid, which exists only after
//! `fork`, and `std::process::Command` cannot patch its prebuilt
//! environment. So everything the child needs (argv, envp with a fixed-width
//! digit slot after `LISTEN_PID=`, the fd list) is built here in the parent,
//! and the forked child only runs async-signal-safe calls on that memory
//! before `execve`. An exec failure travels back through a CLOEXEC pipe,
//! as `Command` does it.
//!
//! The supervisor process blocks most signals for its signalfd and Rust's
//! runtime ignores SIGPIPE; the child restores an empty mask and default
//! dispositions, moves to its own process group, and keeps nothing of the
//! supervisor's but fds 0-2 and the listeners.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::wait::waitpid;
use nix::unistd::{AccessFlags, Pid, access};

/// Width of the `LISTEN_PID` digit slot: enough for any 64-bit pid.
const PID_DIGITS: usize = 20;

/// Where the child failed before `execve` took over.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Stage {
    Fds = 1,
    Exec = 2,
}

/// Everything the child of one spawn needs, built in the parent.
pub struct Plan {
    program: CString,
    program_display: String,
    argv: Vec<CString>,
    env: Vec<Vec<u8>>,
    /// Index in `env` of the `LISTEN_PID=` entry, if any.
    listen_pid: Option<usize>,
    /// Signal the child gets if the supervisor dies (PR_SET_PDEATHSIG).
    parent_death_signal: i32,
}

impl Plan {
    /// Prepare to run `argv` (resolved through `PATH` now, so that each
    /// generation runs whatever the path names at its start) with `env`,
    /// plus `LISTEN_PID` when `with_listen_pid`.
    ///
    /// # Errors
    /// The command cannot be found or executed, or an argument or variable
    /// holds a NUL byte.
    pub fn new(
        argv: &[OsString],
        env: Vec<(OsString, OsString)>,
        with_listen_pid: bool,
        parent_death_signal: i32,
    ) -> Result<Plan> {
        let Some(first) = argv.first() else {
            bail!("no command given");
        };
        let path = resolve(first)?;
        let program = cstring(path.as_os_str().as_bytes().to_vec(), "command path")?;
        let argv = argv
            .iter()
            .map(|a| cstring(a.as_bytes().to_vec(), "argument"))
            .collect::<Result<Vec<_>>>()?;
        let mut entries = Vec::with_capacity(env.len() + 1);
        for (k, v) in env {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            if e.contains(&0) {
                bail!(
                    "environment variable {} holds a NUL byte",
                    String::from_utf8_lossy(&e)
                );
            }
            e.push(0);
            entries.push(e);
        }
        let listen_pid = with_listen_pid.then(|| {
            let mut e = format!("{}=", supervisor::child::LISTEN_PID).into_bytes();
            e.resize(e.len() + PID_DIGITS + 1, 0);
            entries.push(e);
            entries.len() - 1
        });
        Ok(Plan {
            program,
            program_display: path.display().to_string(),
            argv,
            env: entries,
            listen_pid,
            parent_death_signal,
        })
    }
}

fn cstring(bytes: Vec<u8>, what: &str) -> Result<CString> {
    CString::new(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {:?} holds a NUL byte",
            String::from_utf8_lossy(&e.into_vec())
        )
    })
}

/// Find `program` as `execvp` would: a name with a `/` is used as it is,
/// any other is looked up in `PATH`.
///
/// # Errors
/// Not found, or found but not executable; the message names the command.
pub fn resolve(program: &OsStr) -> Result<PathBuf> {
    let name = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return executable(name).map(|()| name.to_path_buf());
    }
    if program.is_empty() {
        bail!("command not found: empty command name");
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            match executable(&candidate) {
                Ok(()) => return Ok(candidate),
                Err(e) => denied = Some(e),
            }
        }
    }
    match denied {
        Some(e) => Err(e),
        None => bail!("command not found: {}", name.display()),
    }
}

fn executable(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("command not found: {}", path.display()))?;
    if meta.is_dir() {
        bail!("command {} is a directory", path.display());
    }
    access(path, AccessFlags::X_OK)
        .with_context(|| format!("command {} is not executable", path.display()))
}

/// Fork and exec `plan` with `listeners` at fds 3.. (in order).
///
/// Returns once the child has called `execve` successfully; if it failed
/// before or in `execve`, the child is reaped here and the error names the
/// step and the OS reason.
///
/// # Errors
/// `pipe2` or `fork` failed, or the child could not exec.
pub fn spawn(plan: &mut Plan, listeners: &[BorrowedFd<'_>]) -> Result<Pid> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("create exec-status pipe")?;

    // Everything the child touches is prepared here: no allocation after fork.
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let slot: *mut u8 = match plan.listen_pid {
        Some(i) => {
            let prefix = supervisor::child::LISTEN_PID.len() + 1;
            // The entry was sized in Plan::new: prefix + PID_DIGITS + NUL.
            plan.env[i][prefix..].as_mut_ptr()
        }
        None => std::ptr::null_mut(),
    };
    let envp: Vec<*const libc::c_char> = plan
        .env
        .iter()
        .map(|e| e.as_ptr().cast::<libc::c_char>())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut fds: Vec<RawFd> = listeners.iter().map(|fd| fd.as_raw_fd()).collect();
    let parent = std::process::id() as libc::pid_t;
    let child = ChildSetup {
        program: plan.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        listen_pid_slot: slot,
        fds: fds.as_mut_ptr(),
        nfds: fds.len(),
        status_fd: write_end.as_raw_fd(),
        parent,
        parent_death_signal: plan.parent_death_signal,
    };

    // SAFETY: the supervisor is single-threaded, so no lock can be held
    // across the fork; the child runs only `child_after_fork`, which is
    // async-signal-safe and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child; every pointer in `child`
        // points at memory built above, which the child's copy of the
        // address space still holds.
        unsafe { child_after_fork(&child) }
    }
    let pid = Pid::from_raw(pid);
    drop(write_end);
    // Also set the group from the parent, so that the process group exists
    // before we might signal it, whichever of the two runs first. EACCES
    // (the child already exec'd) is fine: it did it itself.
    let _ = nix::unistd::setpgid(pid, pid);

    let mut report = [0u8; 8];
    let n = read_full(&read_end, &mut report);
    if n == 0 {
        return Ok(pid);
    }
    // The child failed and is exiting with 127; reap it now so that no
    // zombie and no stray SIGCHLD-less pid remains.
    let _ = waitpid(pid, None);
    if n != report.len() {
        bail!("child of {} failed before exec", plan.program_display);
    }
    let stage = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    let err = io::Error::from_raw_os_error(errno);
    if stage == Stage::Fds as u32 {
        bail!("place listener fds for {}: {err}", plan.program_display)
    }
    bail!("exec {}: {err}", plan.program_display)
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    got
}

/// Raw pointers into parent-built memory, for the child.
struct ChildSetup {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    listen_pid_slot: *mut u8,
    fds: *mut RawFd,
    nfds: usize,
    status_fd: RawFd,
    parent: libc::pid_t,
    parent_death_signal: i32,
}

/// The child's side of [`spawn`]: set up the process and exec.
///
/// # Async-signal safety
/// Runs between `fork` and `execve` and calls only async-signal-safe
/// functions (`setpgid`, `rt_sigaction`, `rt_sigprocmask`, `prctl`, `getppid`,
/// `fcntl`, `dup2`, `close_range`, `getpid`, `execve`, `write`, `_exit`) on
/// memory prepared before the fork: no allocation, no locks, no formatting,
/// no panics (no indexing that can fail, no unwrap).
///
/// # Safety
/// Must be called only in a child just forked from a single-threaded
/// parent, with `s` pointing at valid memory as built by [`spawn`].
unsafe fn child_after_fork(s: &ChildSetup) -> ! {
    // SAFETY: each call below is an async-signal-safe libc call on values or
    // memory prepared before the fork (see the function's doc).
    unsafe {
        // Own process group: a terminal's Ctrl+C reaches only the supervisor,
        // which decides how each generation stops, and the drain-timeout
        // SIGKILL can reach the child's own children.
        libc::setpgid(0, 0);

        // Default dispositions for every signal. Ignored ones would survive
        // the exec. The raw syscall, because glibc's sigaction refuses its
        // internal signals (32, 33), which a launcher may have ignored. An
        // all-zero kernel sigaction is SIG_DFL with no flags and an empty
        // mask, whatever the architecture's field order.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
        // The raw syscall: glibc's sigprocmask leaves its own internal
        // signals (32, 33) as they were, and a supervisor started by a
        // multithreaded parent may have them blocked.
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        );

        // If the supervisor dies, its children are asked to stop rather than
        // live on with the sockets. The parent may already be gone: check.
        if s.parent_death_signal > 0 {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                s.parent_death_signal as libc::c_ulong,
            );
        }
        if libc::getppid() != s.parent {
            libc::_exit(127);
        }

        // Place the listeners at 3..3+n, in order. Before target 3+i is
        // overwritten, any source still to be placed that sits there is
        // moved above the range; nothing else moves, so a block of
        // listeners already at 3.. (the usual case) or shifted up by fds
        // the supervisor inherited needs no extra fd at all. The status
        // pipe is kept out of the range first.
        let first = supervisor::child::LISTEN_FDS_START;
        let end = first + s.nfds as RawFd;
        let mut status_fd = s.status_fd;
        if (first..end).contains(&status_fd) {
            status_fd = libc::fcntl(status_fd, libc::F_DUPFD_CLOEXEC, end);
            if status_fd < 0 {
                libc::_exit(127);
            }
        }
        for i in 0..s.nfds {
            let target = first + i as RawFd;
            for j in i + 1..s.nfds {
                let later = s.fds.add(j);
                if *later == target {
                    let moved = libc::fcntl(*later, libc::F_DUPFD_CLOEXEC, end);
                    if moved < 0 {
                        fail(status_fd, Stage::Fds);
                    }
                    *later = moved;
                }
            }
            let src = *s.fds.add(i);
            // dup2 to another number clears FD_CLOEXEC on the new fd;
            // dup2(fd, fd) would not, so clear it by hand.
            let placed = if src == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, target)
            };
            if placed < 0 {
                fail(status_fd, Stage::Fds);
            }
        }
        // Nothing else of ours may cross the exec: everything the supervisor
        // opens is CLOEXEC already, and this also covers fds it inherited.
        let r = libc::syscall(
            libc::SYS_close_range,
            end as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
        if r != 0 {
            // Kernels before 5.11: one fd at a time, up to the fd limit.
            let mut lim: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(1 << 20) as RawFd
            } else {
                4096
            };
            for fd in end..max {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }

        if !s.listen_pid_slot.is_null() {
            write_decimal(s.listen_pid_slot, libc::getpid() as u64);
        }
        libc::execve(s.program, s.argv, s.envp);
        fail(status_fd, Stage::Exec)
    }
}

/// Report `stage` and errno to the parent and exit with 127.
///
/// # Safety
/// Child side only; async-signal-safe.
unsafe fn fail(fd: RawFd, stage: Stage) -> ! {
    // SAFETY: errno location, write and _exit are async-signal-safe; `buf`
    // lives on this stack frame.
    unsafe {
        let errno = *libc::__errno_location();
        let [a, b, c, d] = (stage as u32).to_ne_bytes();
        let [e, f, g, h] = errno.to_ne_bytes();
        let buf = [a, b, c, d, e, f, g, h];
        libc::write(fd, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    }
}

/// Write `n` in decimal at `slot`, NUL-terminated; the slot has room for
/// [`PID_DIGITS`] digits and the NUL.
///
/// # Safety
/// `slot` must point at `PID_DIGITS + 1` writable bytes. Async-signal-safe.
unsafe fn write_decimal(slot: *mut u8, n: u64) {
    // Count the digits first, then write them from the last one back: no
    // indexing, so no panic path.
    let mut len = 1;
    let mut rest = n / 10;
    while rest > 0 && len < PID_DIGITS {
        len += 1;
        rest /= 10;
    }
    let mut n = n;
    let mut i = len;
    while i > 0 {
        i -= 1;
        // SAFETY: i < len <= PID_DIGITS, inside the slot.
        unsafe { *slot.add(i) = b'0' + (n % 10) as u8 };
        n /= 10;
    }
    // SAFETY: len <= PID_DIGITS, so the NUL still fits.
    unsafe { *slot.add(len) = 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_slot() {
        let mut buf = [0xffu8; PID_DIGITS + 1];
        for (n, want) in [
            (0u64, "0"),
            (7, "7"),
            (4211, "4211"),
            (u64::MAX, "18446744073709551615"),
        ] {
            // SAFETY: buf has PID_DIGITS + 1 bytes.
            unsafe { write_decimal(buf.as_mut_ptr(), n) };
            let end = buf.iter().position(|&b| b == 0).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..end]).unwrap(), want);
        }
    }

    #[test]
    fn resolve_errors_name_the_command() {
        let e = resolve(OsStr::new("no-such-command-xyz")).unwrap_err();
        assert_eq!(e.to_string(), "command not found: no-such-command-xyz");
        let e = resolve(OsStr::new("./no/such/file")).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("command not found: ./no/such/file"),
            "{e:#}"
        );
        assert!(resolve(OsStr::new("sh")).unwrap().is_absolute());
        let dir = std::env::temp_dir().join(format!("resolve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "data").unwrap();
        let e = resolve(plain.as_os_str()).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(format!("{e:#}").contains("is not executable"), "{e:#}");
    }
}
