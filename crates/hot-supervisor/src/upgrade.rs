//! Upgrading the supervisor in place: the same process (same pid, same
//! children, same sockets) re-executes the supervisor binary, which may be
//! a new version, and carries on from the state the old image handed it.
//!
//! The procedure (`supervisor upgrade` or `SIGUSR2`):
//!
//! 1. **Check.** The state is written to a memfd and the binary at the path
//!    the supervisor was started from is run as a separate process with the
//!    same arguments, `SUPERVISOR_UPGRADE_CHECK=1` and the state on its
//!    standard input. It must answer `ok VERSION` on standard output within
//!    the timeout: it parsed the command line and can read the state. A
//!    binary that cannot be executed, exits, refuses the state or stays
//!    silent fails the upgrade here, and nothing has changed. Meanwhile the
//!    supervisor goes on as usual (the check is one more fd in its poll).
//! 2. **Exec.** The state is written again (it may have moved on during the
//!    check) to a new memfd; every fd it names, the memfd and an fd of the
//!    running binary lose their close-on-exec flag; and the process execs
//!    the binary with `SUPERVISOR_UPGRADE_STATE=FD`. If `execve` fails, the
//!    flags are set again and the old image answers the error.
//! 3. **Restore.** The new image reads and checks the whole state before it
//!    adopts a single fd (so that a refusal changes nothing), then builds
//!    its parts from it and answers the `upgrade` request. If it refuses
//!    the state after all, it execs the old binary again (through the fd
//!    the old image left open for exactly this) with the same state and the
//!    reason, and the old image answers the request with that reason.
//!
//! The state is JSON with a format name and a version number: a binary
//! reads every version up to its own, and refuses a newer one by name.
//! Instants travel as `CLOCK_MONOTONIC` readings, which go on counting
//! through the exec ([`crate::carry::mono`]).

use std::ffi::{CString, OsStr};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::state::{FORMAT, State, VERSION};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// The variable naming the state's fd in the new image.
pub const STATE_VAR: &str = "SUPERVISOR_UPGRADE_STATE";

/// Set (to `1`) for the check run of the new binary.
pub const CHECK_VAR: &str = "SUPERVISOR_UPGRADE_CHECK";

/// The fd of the old binary, for the new image to go back to.
pub const OLD_EXE_VAR: &str = "SUPERVISOR_UPGRADE_OLD_EXE";

/// Set by a new image that refused the state and went back to the old one:
/// why it refused.
pub const REFUSED_VAR: &str = "SUPERVISOR_UPGRADE_REFUSED";

/// The default bound on the check.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// This binary's version, as `status` shows it.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Write `state` to a new memfd (close-on-exec), at offset 0.
///
/// # Errors
/// The memfd cannot be created or written.
pub fn write_state(state: &State) -> Result<OwnedFd> {
    let fd =
        nix::sys::memfd::memfd_create(c"supervisor-state", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .context("memfd_create")?;
    let mut file = std::fs::File::from(fd);
    // One write, not one per token.
    let text = serde_json::to_vec(state).context("serialize the upgrade state")?;
    file.write_all(&text).context("write the upgrade state")?;
    file.rewind().context("rewind the upgrade state")?;
    Ok(OwnedFd::from(file))
}

/// Read a state from `r` and check its format and version.
///
/// # Errors
/// Not a state, a newer version than this binary reads, or malformed: the
/// message says which.
pub fn read_state(r: &mut dyn Read) -> Result<State> {
    let mut text = Vec::new();
    r.read_to_end(&mut text).context("read the upgrade state")?;
    parse_state(&text)
}

/// Parse and check a state.
///
/// # Errors
/// As [`read_state`].
pub fn parse_state(text: &[u8]) -> Result<State> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| anyhow!("not a supervisor state: {e}"))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        bail!("not a supervisor state (no \"format\": {FORMAT:?})");
    }
    let found = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| anyhow!("the state has no version number"))?;
    if found > u64::from(VERSION) {
        let writer = value.get("writer").and_then(|w| w.as_str()).unwrap_or("?");
        bail!(
            "the state is version {found} (written by supervisor {writer}); this binary ({}) reads versions up to {VERSION}",
            version()
        );
    }
    serde_json::from_value(value).map_err(|e| anyhow!("state version {found} is malformed: {e}"))
}

/// The check run (`SUPERVISOR_UPGRADE_CHECK=1`): read the state from
/// standard input, answer `ok VERSION` or `error WHY` on standard output.
/// Returns the exit status.
pub fn check_main() -> i32 {
    let result = read_state(&mut std::io::stdin().lock());
    let mut out = std::io::stdout().lock();
    match result {
        Ok(_) => {
            let _ = writeln!(out, "ok {}", version());
            0
        }
        Err(e) => {
            let _ = writeln!(out, "error {e:#}");
            1
        }
    }
}

/// What the check of a new binary said.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It can take over; its version.
    Ok(String),
    /// It cannot; why.
    Failed(String),
}

/// A check run in flight.
#[derive(Debug)]
pub struct Check {
    pid: nix::unistd::Pid,
    out: OwnedFd,
    buf: Vec<u8>,
    deadline: Instant,
    timeout: Duration,
    /// The binary checked.
    pub binary: PathBuf,
    /// The control connection to answer, if any.
    pub waiter: Option<u64>,
    /// When the upgrade was asked for.
    pub requested: Instant,
}

impl Check {
    /// Run `binary` with this process's arguments in check mode, the state
    /// on its standard input.
    ///
    /// # Errors
    /// The check process cannot be started (the binary is missing or not
    /// executable, and the like).
    pub fn start(
        binary: &Path,
        state: OwnedFd,
        timeout: Duration,
        waiter: Option<u64>,
        now: Instant,
    ) -> Result<Check> {
        use std::os::unix::process::CommandExt;
        // A file that is neither a program nor a script would be run by
        // /bin/sh (execvp's fallback): say what it is instead.
        let mut head = [0u8; 4];
        let n = std::fs::File::open(binary)
            .and_then(|mut f| f.read(&mut head))
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !(head[..n].starts_with(b"\x7fELF") || head[..n].starts_with(b"#!")) {
            bail!(
                "{} is not a program (neither an ELF binary nor a #! script)",
                binary.display()
            );
        }
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        // What it says on standard error (a usage error, say) is its answer
        // too.
        let errors = write.try_clone().context("dup")?;
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| binary.as_os_str().to_owned());
        let mut cmd = std::process::Command::new(binary);
        cmd.arg0(arg0)
            .args(args)
            .env(CHECK_VAR, "1")
            .env_remove(STATE_VAR)
            .env_remove(OLD_EXE_VAR)
            .env_remove(REFUSED_VAR)
            .stdin(std::process::Stdio::from(state))
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::from(errors))
            // A group of its own, so that giving up kills whatever it
            // started too.
            .process_group(0);
        // SAFETY: the closure only calls sigprocmask, which is
        // async-signal-safe (it runs between fork and exec).
        unsafe {
            cmd.pre_exec(|| {
                // The supervisor blocks the signals it reads from its
                // signalfd; the check must be killable by them as usual.
                let none = nix::sys::signal::SigSet::empty();
                nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&none),
                    None,
                )
                .map_err(std::io::Error::from)
            })
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        nix::fcntl::fcntl(&read, FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .context("make the check's pipe non-blocking")?;
        Ok(Check {
            pid: nix::unistd::Pid::from_raw(child.id() as i32),
            out: read,
            buf: Vec::new(),
            deadline: now + timeout,
            timeout,
            binary: binary.to_path_buf(),
            waiter,
            requested: now,
        })
    }

    /// The fd to poll for input.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.out.as_fd()
    }

    /// The check's pid (the supervisor reaps it as an orphan).
    pub fn pid(&self) -> nix::unistd::Pid {
        self.pid
    }

    /// When the check gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Read what the check wrote; its verdict once a line or EOF came.
    pub fn on_readable(&mut self) -> Option<Verdict> {
        let mut chunk = [0u8; 512];
        loop {
            match nix::unistd::read(&self.out, &mut chunk) {
                Ok(0) => {
                    return Some(self.verdict().unwrap_or_else(|| {
                        Verdict::Failed(format!(
                            "{} ended without confirming (it exited, or is not a supervisor that can upgrade)",
                            self.binary.display()
                        ))
                    }));
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(v) = self.verdict() {
                        return Some(v);
                    }
                    if self.buf.len() > 64 * 1024 {
                        return Some(Verdict::Failed(format!(
                            "{} answered the check with no line",
                            self.binary.display()
                        )));
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return None,
                Err(e) => return Some(Verdict::Failed(format!("read the check's answer: {e}"))),
            }
        }
    }

    fn verdict(&self) -> Option<Verdict> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        Some(if let Some(v) = line.strip_prefix("ok ") {
            Verdict::Ok(v.trim().to_string())
        } else if let Some(why) = line.strip_prefix("error ") {
            Verdict::Failed(format!("{} refused: {why}", self.binary.display()))
        } else {
            Verdict::Failed(format!(
                "{} answered the check with {:?}",
                self.binary.display(),
                line.chars().take(80).collect::<String>()
            ))
        })
    }

    /// The verdict if the deadline passed.
    pub fn on_timeout(&self, now: Instant) -> Option<Verdict> {
        (now >= self.deadline).then(|| {
            Verdict::Failed(format!(
                "{} did not confirm within {}",
                self.binary.display(),
                hot_supervisor::duration::human(self.timeout)
            ))
        })
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        // Done or given up: the check process has nothing more to say. (It
        // is reaped with the orphans.)
        let _ = nix::sys::signal::killpg(self.pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Replace this image with `binary`, handing it `state` (a
/// [`write_state`] memfd). The fds the state names must have lost their
/// close-on-exec flag already (a [`crate::carry::Keep`] with
/// [`crate::carry::Carry::AcrossExec`]). Returns only if `execve` failed,
/// with the flags of `state` and of the running binary's fd as they were.
pub fn exec(binary: &Path, state: BorrowedFd<'_>, refused: Option<&str>) -> anyhow::Error {
    // The running binary, for a new image that refuses the state to come
    // back to (the file at `binary` may be the new one already).
    let old = match std::fs::File::open("/proc/self/exe") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => return anyhow!("open /proc/self/exe: {e}"),
    };
    exec_with(binary, state, old.as_fd(), refused)
}

/// [`exec`], naming `old` as the old binary's fd.
fn exec_with(
    binary: &Path,
    state: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    refused: Option<&str>,
) -> anyhow::Error {
    let set = |cloexec: bool| {
        let flag = if cloexec {
            FdFlag::FD_CLOEXEC
        } else {
            FdFlag::empty()
        };
        for fd in [state, old] {
            let _ = fcntl(fd, FcntlArg::F_SETFD(flag));
        }
    };
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| {
            ![STATE_VAR, OLD_EXE_VAR, REFUSED_VAR, CHECK_VAR]
                .iter()
                .any(|v| k == OsStr::new(v))
        })
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes()).ok()
        })
        .collect();
    let extra = [
        Some(format!("{STATE_VAR}={}", state.as_raw_fd())),
        Some(format!("{OLD_EXE_VAR}={}", old.as_raw_fd())),
        refused.map(|why| format!("{REFUSED_VAR}={}", why.replace('\0', " "))),
    ];
    env.extend(
        extra
            .into_iter()
            .flatten()
            .filter_map(|s| CString::new(s).ok()),
    );
    let path = match CString::new(binary.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(_) => return anyhow!("{}: a path with a NUL byte", binary.display()),
    };
    set(false);
    let e = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    set(true);
    anyhow!("execve {}: {e}", binary.display())
}

/// A new image that cannot take the state goes back to the old binary
/// (the fd the old image left open) with the same state and the reason.
/// The fds the state names go as they came: this image took none of them
/// (it checks the whole state first), so their close-on-exec flags are
/// still clear. Returns only if that fails too.
pub fn go_back(state: BorrowedFd<'_>, old_exe: BorrowedFd<'_>, why: &str) -> anyhow::Error {
    let path = PathBuf::from(format!("/proc/self/fd/{}", old_exe.as_raw_fd()));
    // The old image closes the fd it is handed as "old binary": this one,
    // so that nothing is left open.
    exec_with(&path, state, old_exe, Some(why))
}

/// What an upgrade handed this image: the state's memfd, the old binary's
/// fd, and the refusal reason if a new image went back to this one.
#[derive(Debug)]
pub struct Handed {
    /// The state, at offset 0 (read with `pread`).
    pub state: OwnedFd,
    /// The old binary, for going back to it.
    pub old_exe: Option<OwnedFd>,
    /// Why a new image refused the state, if one went back to this one.
    pub refused: Option<String>,
}

/// Take what an upgrade handed this image, if it was started by one, and
/// remove the variables that say so, so that no child inherits them and
/// nothing takes their fds twice.
///
/// # Errors
/// The variables name an fd that is not open.
///
/// # Safety
/// Call while the process has one thread (the variables are removed), and
/// before anything opens an fd that could take a number they name: at the
/// start of `main`.
pub unsafe fn take_handed() -> Option<Result<Handed>> {
    let number = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
    };
    let (state, old, refused) = (
        number(STATE_VAR),
        number(OLD_EXE_VAR),
        std::env::var(REFUSED_VAR).ok(),
    );
    for var in [STATE_VAR, OLD_EXE_VAR, REFUSED_VAR] {
        // SAFETY: one thread, as the caller guarantees.
        unsafe { std::env::remove_var(var) };
    }
    let own = |raw: RawFd, var: &str| -> Result<OwnedFd> {
        // SAFETY: F_GETFD on any number is harmless; it only asks whether
        // the fd is open.
        if raw < 0 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            bail!("fd {raw} named by {var} is not open");
        }
        // SAFETY: the old image opened this fd for this one, cleared its
        // close-on-exec flag and named it in `var`, which was just removed:
        // it is owned here once, before anything else could (the caller's
        // guarantee), and by nothing else.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
    };
    let handed = own(state?, STATE_VAR).and_then(|state| {
        Ok(Handed {
            state,
            old_exe: old.map(|o| own(o, OLD_EXE_VAR)).transpose()?,
            refused,
        })
    });
    Some(handed)
}

/// Read the handed state from `fd` (without taking it: a refusal must be
/// able to hand it on).
///
/// # Errors
/// As [`read_state`].
pub fn read_handed(fd: BorrowedFd<'_>) -> Result<State> {
    parse_state(&read_raw(fd)?)
}

/// The bytes of the state at `fd`, read from offset 0 (pread: the offset
/// does not matter, and stays as it is for the image it may go back to).
fn read_raw(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = 0i64;
    loop {
        let n = nix::sys::uio::pread(fd, &mut chunk, at)
            .with_context(|| format!("read the upgrade state from fd {}", fd.as_raw_fd()))?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&chunk[..n]);
        at += n as i64;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_of_other_formats_and_newer_versions_are_refused_by_name() {
        let e = parse_state(b"garbage").unwrap_err().to_string();
        assert!(e.starts_with("not a supervisor state"), "{e}");
        let e = parse_state(br#"{"format":"other","version":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no \"format\""), "{e}");
        let e = parse_state(br#"{"format":"supervisor-state","version":99,"writer":"9.0.0"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("version 99 (written by supervisor 9.0.0)")
                && e.contains(&format!("reads versions up to {VERSION}")),
            "{e}"
        );
        let e = parse_state(br#"{"format":"supervisor-state","version":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("state version 1 is malformed"), "{e}");
    }
}
