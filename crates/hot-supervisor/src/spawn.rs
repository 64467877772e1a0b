//! Starting a child: `fork` + `execve`, the only code in the supervisor that
//! runs between the two.
//!
//! `LISTEN_PID` must hold the child's own pid, which exists only after
//! `fork`, and `std::process::Command` cannot patch its prebuilt
//! environment. So everything the child needs (argv, envp with a fixed-width
//! digit slot after `LISTEN_PID=`, the fd list) is built here in the parent,
//! and the forked child only runs async-signal-safe calls on that memory
//! before `execve`. Any failure after the fork (a step of the setup or the
//! `execve` itself) travels back through a CLOEXEC pipe as a fixed-size
//! [`Report`], as `Command` does it; EOF on the pipe means the exec
//! succeeded. [`spawn`] returns as soon as the child is forked, with the
//! pipe's read end in a [`Pending`]: the supervisor's loop polls it beside
//! everything else (it is the supervisor's only thread, and must not wait
//! on one child), at most [`EXEC_STATUS_BOUND`].
//!
//! The supervisor process blocks most signals for its signalfd and Rust's
//! runtime ignores SIGPIPE; the child restores an empty mask and default
//! dispositions, moves to its own process group, and keeps nothing of the
//! supervisor's but fds 0-2 and the listeners.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::wait::waitpid;
use nix::unistd::{AccessFlags, Pid, access};

/// Width of the `LISTEN_PID` digit slot: enough for any 64-bit pid.
const PID_DIGITS: usize = 20;

/// How long a child's exec status is awaited (see [`Pending`]).
///
/// The loop goes on meanwhile, but what waits for the status waits too: an
/// in-place upgrade (the next image could not read a pipe of this one's),
/// and the failure of a worker spawned after this one, told only once this
/// one's status is known. A healthy exec takes milliseconds, but one that
/// stalls (the binary on a hung network mount, a file lease being broken)
/// can block in the kernel for minutes. Two seconds is far above any
/// healthy exec. Past the bound the child is treated as started; if its
/// exec fails later, it exits with status 127 and is reaped like any other
/// child.
const EXEC_STATUS_BOUND: Duration = Duration::from_secs(2);

/// The step of the child's setup that failed, sent in a [`Report`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// `setpgid(0, 0)`.
    ProcessGroup = 1,
    /// `rt_sigaction` to SIG_DFL; the detail is the signal number.
    SignalDisposition = 2,
    /// `rt_sigprocmask` to the empty set.
    SignalMask = 3,
    /// `prctl(PR_SET_PDEATHSIG)`; the detail is the signal number.
    ParentDeathSignal = 4,
    /// The supervisor died before the child got this far (no errno).
    ParentGone = 5,
    /// Moving the status pipe above the listener range; the detail is the
    /// lowest fd it may take.
    StatusPipe = 6,
    /// Moving a listener out of the way of an earlier one; the detail is the
    /// listener's index.
    MoveListener = 7,
    /// Placing a listener at its fd; the detail is the listener's index.
    PlaceListener = 8,
    /// `execve`.
    Exec = 9,
    /// `chdir` to the working directory.
    Chdir = 10,
    /// `setgroups` to the user's supplementary groups.
    Groups = 11,
    /// `setgid`; the detail is the gid.
    Gid = 12,
    /// `setuid`; the detail is the uid.
    Uid = 13,
}

impl Step {
    const ALL: [Step; 13] = [
        Step::ProcessGroup,
        Step::SignalDisposition,
        Step::SignalMask,
        Step::ParentDeathSignal,
        Step::ParentGone,
        Step::StatusPipe,
        Step::MoveListener,
        Step::PlaceListener,
        Step::Exec,
        Step::Chdir,
        Step::Groups,
        Step::Gid,
        Step::Uid,
    ];

    fn from_code(code: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == code)
    }
}

/// What a failed child writes to the status pipe before `_exit(127)`: the
/// step, errno (0 if none) and a step-specific detail, as three native-endian
/// 32-bit words. 12 bytes are below `PIPE_BUF`, so the write is atomic: the
/// parent reads all of it or nothing.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    step: u32,
    errno: i32,
    detail: i32,
}

impl Report {
    const LEN: usize = 12;

    fn encode(&self) -> [u8; Report::LEN] {
        let [a, b, c, d] = self.step.to_ne_bytes();
        let [e, f, g, h] = self.errno.to_ne_bytes();
        let [i, j, k, l] = self.detail.to_ne_bytes();
        [a, b, c, d, e, f, g, h, i, j, k, l]
    }

    fn decode(buf: &[u8; Report::LEN]) -> Report {
        let word = |i: usize| [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
        Report {
            step: u32::from_ne_bytes(word(0)),
            errno: i32::from_ne_bytes(word(4)),
            detail: i32::from_ne_bytes(word(8)),
        }
    }

    /// The error the parent returns for this report.
    fn error(&self, program: &str) -> SpawnError {
        let program = program.to_string();
        let (errno, detail) = (self.errno, self.detail);
        match Step::from_code(self.step) {
            Some(Step::Exec) => SpawnError::Exec { program, errno },
            Some(Step::ParentGone) => SpawnError::ParentGone { program },
            Some(step) => SpawnError::Setup {
                program,
                step,
                errno,
                detail,
            },
            None => SpawnError::UnknownStep {
                program,
                code: self.step,
                errno,
            },
        }
    }
}

/// Why a child could not be spawned: the supervisor could not fork it, or
/// the child said on its status pipe what failed before or in its exec.
/// Its text is what the log and the reload's answer say.
#[derive(Debug)]
pub enum SpawnError {
    /// The exec-status pipe could not be made (`pipe2`).
    Pipe(Errno),
    /// `fork` failed.
    Fork(io::Error),
    /// The `execve` of the program failed (errno).
    Exec {
        /// The program, as resolved.
        program: String,
        /// Why.
        errno: i32,
    },
    /// A step of the child's setup before the exec failed (errno, and the
    /// step's detail: see [`Step`]).
    Setup {
        /// The program, as resolved.
        program: String,
        /// The step.
        step: Step,
        /// Why.
        errno: i32,
        /// The signal, fd, listener or id the step was about.
        detail: i32,
    },
    /// The supervisor exited before the child could exec.
    ParentGone {
        /// The program, as resolved.
        program: String,
    },
    /// The child reported a step this supervisor does not know.
    UnknownStep {
        /// The program, as resolved.
        program: String,
        /// The step's code.
        code: u32,
        /// Why.
        errno: i32,
    },
    /// The child's report was cut short (its length in bytes).
    ShortReport {
        /// The program, as resolved.
        program: String,
        /// The bytes that came.
        bytes: usize,
    },
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let os = |errno: i32| io::Error::from_raw_os_error(errno);
        match self {
            SpawnError::Pipe(e) => write!(f, "create exec-status pipe: {e}"),
            SpawnError::Fork(e) => write!(f, "fork: {e}"),
            SpawnError::Exec { program, errno } => write!(f, "exec {program}: {}", os(*errno)),
            SpawnError::ParentGone { program } => write!(
                f,
                "child for {program}: the supervisor exited before the child could exec"
            ),
            SpawnError::Setup {
                program,
                step,
                errno,
                detail: d,
            } => {
                write!(f, "child for {program}: ")?;
                let first = supervisor_child::protocol::LISTEN_FDS_START;
                match step {
                    Step::ProcessGroup => write!(f, "move to a new process group"),
                    Step::SignalDisposition => write!(f, "reset the disposition of signal {d}"),
                    Step::SignalMask => write!(f, "clear the signal mask"),
                    Step::ParentDeathSignal => write!(f, "set the parent-death signal to {d}"),
                    Step::StatusPipe => write!(f, "move the exec-status pipe to fd {d} or above"),
                    Step::MoveListener => {
                        write!(f, "move listener {d} out of the listener fd range")
                    }
                    Step::PlaceListener => {
                        write!(f, "place listener {d} at fd {}", first.saturating_add(*d))
                    }
                    Step::Chdir => write!(f, "change to the working directory"),
                    Step::Groups => write!(f, "set the supplementary groups"),
                    Step::Gid => write!(f, "set the group id to {d}"),
                    Step::Uid => write!(f, "set the user id to {d}"),
                    // Their own variants; never sent as a setup step.
                    Step::Exec => write!(f, "exec"),
                    Step::ParentGone => write!(f, "the supervisor exited"),
                }?;
                write!(f, ": {}", os(*errno))
            }
            SpawnError::UnknownStep {
                program,
                code,
                errno,
            } => write!(
                f,
                "child for {program}: unknown step {code}: {}",
                os(*errno)
            ),
            SpawnError::ShortReport { program, bytes } => write!(
                f,
                "child for {program} failed before exec (a {bytes}-byte status report)"
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

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
    /// Run as this user (uid, gid, supplementary groups).
    credentials: Option<Credentials>,
    /// Run in this directory.
    chdir: Option<CString>,
    /// The soft open-files limit the child gets back (the one the
    /// supervisor started with, before it raised its own), if lower.
    nofile: Option<u64>,
}

/// Who a child runs as (`--user`, `--group`), resolved before the fork.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The user id.
    pub uid: libc::uid_t,
    /// The primary group id.
    pub gid: libc::gid_t,
    /// The supplementary groups, as `initgroups` would set them.
    pub groups: Vec<libc::gid_t>,
}

impl Credentials {
    /// The credentials for `--user USER` and `--group GROUP` (names or
    /// numbers): the user's uid, the group (default: the user's primary
    /// group), and the user's supplementary groups as `initgroups` sets
    /// them. `None` when neither is given.
    ///
    /// # Errors
    /// The supervisor is not root, or a name is unknown.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Credentials>> {
        use nix::unistd::{Gid, Group, Uid, User};
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let me = Uid::effective();
        if !me.is_root() {
            bail!(
                "--user and --group need the supervisor to run as root (it runs as uid {me}); the supervisor binds the listeners and the children run as the user"
            );
        }
        if cfg!(target_feature = "crt-static") {
            // The static build: no name service, the files themselves.
            let (uid, gid, groups) = crate::users::resolve_from_files(
                user,
                group,
                Path::new("/"),
                (me.as_raw(), Gid::effective().as_raw()),
            )
            .map_err(anyhow::Error::msg)?;
            return Ok(Some(Credentials { uid, gid, groups }));
        }
        let user = match user {
            None => None,
            Some(u) => {
                let found = match u.parse::<u32>() {
                    Ok(n) => User::from_uid(Uid::from_raw(n)),
                    Err(_) => User::from_name(u),
                };
                Some(
                    found
                        .with_context(|| format!("--user {u}"))?
                        .with_context(|| format!("--user {u}: no such user"))?,
                )
            }
        };
        let gid = match group {
            Some(g) => {
                let found = match g.parse::<u32>() {
                    Ok(n) => Group::from_gid(Gid::from_raw(n)),
                    Err(_) => Group::from_name(g),
                };
                found
                    .with_context(|| format!("--group {g}"))?
                    .with_context(|| format!("--group {g}: no such group"))?
                    .gid
            }
            None => user.as_ref().map_or(Gid::effective(), |u| u.gid),
        };
        let (uid, groups) = match &user {
            Some(u) => {
                let name = CString::new(u.name.as_bytes()).context("user name")?;
                let groups = nix::unistd::getgrouplist(&name, gid)
                    .with_context(|| format!("the groups of user {}", u.name))?;
                (u.uid, groups)
            }
            None => (me, vec![gid]),
        };
        Ok(Some(Credentials {
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            groups: groups.into_iter().map(Gid::as_raw).collect(),
        }))
    }
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
            let mut e = format!("{}=", supervisor_child::protocol::LISTEN_PID).into_bytes();
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
            credentials: None,
            chdir: None,
            nofile: None,
        })
    }

    /// Give the child `soft` back as its soft open-files limit (at least
    /// room for its listeners and 64 more), as systemd advises for a
    /// program that raised its own: servers written for `select()` break
    /// above 1,024.
    pub fn with_nofile(mut self, soft: Option<u64>) -> Plan {
        self.nofile = soft;
        self
    }

    /// Run the child as `who` (the supervisor must be root).
    pub fn with_credentials(mut self, who: Option<Credentials>) -> Plan {
        self.credentials = who;
        self
    }

    /// Run the child in `dir`.
    ///
    /// # Errors
    /// The path holds a NUL byte.
    pub fn with_chdir(mut self, dir: Option<&std::path::Path>) -> Result<Plan> {
        self.chdir = match dir {
            Some(d) => Some(cstring(d.as_os_str().as_bytes().to_vec(), "directory")?),
            None => None,
        };
        Ok(self)
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

/// Fork `plan` with `listeners` at fds 3.. (in order), and return at once:
/// the child's exec status comes back on the [`Pending`]'s pipe, which the
/// caller polls (the supervisor's loop, with everything else it waits
/// for).
///
/// # Errors
/// `pipe2` or `fork` failed: no child exists.
pub fn spawn(plan: &mut Plan, listeners: &[BorrowedFd<'_>]) -> Result<Pending, SpawnError> {
    spawn_within(plan, listeners, EXEC_STATUS_BOUND)
}

/// [`spawn`], the child's exec status awaited at most `bound`.
fn spawn_within(
    plan: &mut Plan,
    listeners: &[BorrowedFd<'_>],
    bound: Duration,
) -> Result<Pending, SpawnError> {
    // Non-blocking: the loop reads it when poll says so, and a read of a
    // pipe whose child is alive and silent must not wait. (The child's
    // end too: its one write of 12 bytes goes into an empty pipe.)
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(SpawnError::Pipe)?;

    // Everything the child touches is prepared here: no allocation after fork.
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let slot: *mut u8 = match plan.listen_pid {
        Some(i) => {
            let prefix = supervisor_child::protocol::LISTEN_PID.len() + 1;
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
    let in_the_way = in_the_way(&fds);
    let parent = std::process::id() as libc::pid_t;
    let child = ChildSetup {
        program: plan.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        listen_pid_slot: slot,
        fds: fds.as_mut_ptr(),
        nfds: fds.len(),
        in_the_way: in_the_way.as_ptr(),
        status_fd: write_end.as_raw_fd(),
        parent,
        parent_death_signal: plan.parent_death_signal,
        chdir: plan.chdir.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        nofile: plan.nofile.unwrap_or(0),
        uid: plan.credentials.as_ref().map(|c| c.uid),
        gid: plan.credentials.as_ref().map(|c| c.gid),
        groups: plan
            .credentials
            .as_ref()
            .map_or(std::ptr::null(), |c| c.groups.as_ptr()),
        ngroups: plan.credentials.as_ref().map_or(0, |c| c.groups.len()),
    };

    // SAFETY: the supervisor is single-threaded, so no lock can be held
    // across the fork; the child runs only `child_after_fork`, which is
    // async-signal-safe and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Fork(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child; every pointer in `child`
        // points at memory built above, which the child's copy of the
        // address space still holds.
        unsafe { child_after_fork(&child) }
    }
    let pid = Pid::from_raw(pid);
    // Only the child may hold the write end now, so EOF means it exec'd (or
    // died). (A sibling forked later inherits only the read end, which is
    // close-on-exec and holds no pipe open for writing.)
    drop(write_end);
    // Also set the group from the parent, so that the process group exists
    // before we might signal it, whichever of the two runs first. EACCES
    // (the child already exec'd) is fine: it did it itself.
    let _ = nix::unistd::setpgid(pid, pid);
    Ok(Pending {
        pid,
        pipe: read_end,
        report: [0; Report::LEN],
        got: 0,
        deadline: Instant::now() + bound,
        bound,
        program: plan.program_display.clone(),
    })
}

/// A child forked whose exec status has not come back yet: the read end
/// of its status pipe, the part of a [`Report`] read so far, and how long
/// it is awaited.
///
/// The status is one of: EOF with nothing read (the child exec'd, or died
/// before it could say anything), a full report (it failed, and exits
/// with 127 right after), or nothing by the deadline. A healthy exec
/// takes milliseconds, but one that stalls (the binary on a hung network
/// mount, a file lease being broken) can block in the kernel for minutes:
/// past [`EXEC_STATUS_BOUND`] the child is treated as started, and if its
/// exec fails later it exits with status 127 and is reaped like any other
/// child.
#[derive(Debug)]
pub struct Pending {
    pid: Pid,
    pipe: OwnedFd,
    report: [u8; Report::LEN],
    got: usize,
    deadline: Instant,
    bound: Duration,
    program: String,
}

/// What reading the status pipe came to.
enum Read {
    /// Nothing more for now: the child has neither exec'd nor failed.
    Again,
    /// EOF, or a full report (nothing more will come).
    Done,
    /// read failed.
    Failed(Errno),
}

impl Pending {
    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The status pipe, to poll for input.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// When the child counts as started whatever its pipe says.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The pipe is readable: read what it holds. `None` while the child
    /// has neither exec'd nor failed; `Ok` once it exec'd; `Err` if it
    /// failed (it is reaped here then, so that no zombie and no stray pid
    /// remains: it exits right after its report).
    pub fn on_readable(&mut self) -> Option<Result<(), SpawnError>> {
        match self.read() {
            Read::Again => None,
            Read::Done => Some(self.outcome(true)),
            Read::Failed(e) => Some(self.unconfirmed(&format!("read exec-status pipe: {e}"))),
        }
    }

    /// `now` is past the deadline: the child counts as started (a warning
    /// names its pid). `None` before the deadline.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Result<(), SpawnError>> {
        (now >= self.deadline).then(|| {
            let why = format!(
                "no exec status within {}",
                hot_supervisor::duration::human(self.bound)
            );
            self.unconfirmed(&why)
        })
    }

    /// The child has exited and is not reaped yet (`waitid` with `WNOWAIT`
    /// saw it): everything it wrote is in the pipe, so its status is known
    /// now, as it was when it was read before the child could be reaped.
    /// The caller reaps it.
    pub fn on_exit(mut self) -> Result<(), SpawnError> {
        match self.read() {
            // The write end is closed with the child: EOF must follow the
            // data. Were it not, the child said nothing: as EOF.
            Read::Done | Read::Again => self.outcome(false),
            Read::Failed(e) => self.unconfirmed(&format!("read exec-status pipe: {e}")),
        }
    }

    /// Read until the pipe is empty, at EOF, or the report is full.
    fn read(&mut self) -> Read {
        while self.got < self.report.len() {
            match nix::unistd::read(&self.pipe, &mut self.report[self.got..]) {
                Ok(0) => return Read::Done,
                Ok(n) => self.got += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Read::Again,
                Err(e) => return Read::Failed(e),
            }
        }
        Read::Done
    }

    /// The status once nothing more will come: nothing read means the exec
    /// succeeded. A failed child is reaped first when `reap`.
    fn outcome(&self, reap: bool) -> Result<(), SpawnError> {
        let n = self.got;
        if n == 0 {
            return Ok(());
        }
        if reap {
            // The child failed and is exiting with 127 right after its
            // report.
            let _ = waitpid(self.pid, None);
        }
        if n != self.report.len() {
            return Err(SpawnError::ShortReport {
                program: self.program.clone(),
                bytes: n,
            });
        }
        Err(Report::decode(&self.report).error(&self.program))
    }

    /// Give up on the status (`why`): the child counts as started. A
    /// failure report written later may then meet no reader; the child
    /// blocks SIGPIPE before writing, so it still exits with 127.
    fn unconfirmed(&self, why: &str) -> Result<(), SpawnError> {
        log::warn!(
            "pid {}: exec of {} not confirmed ({why}); treating it as started",
            self.pid,
            self.program
        );
        Ok(())
    }
}

/// For each target fd `3 + i` of the placement, the sources that sit
/// there and must be moved out of the way before target `i` is written,
/// as a chain: `first[i]` is the first such index `j > i` (`usize::MAX`:
/// none) and `next[j]` the next one with the same fd (a socket listed
/// twice). Built in the parent, so that the child's placement is linear.
/// A source moved out of the way lands at or above the end of the range,
/// so it never sits on a later target.
fn in_the_way(fds: &[RawFd]) -> Vec<usize> {
    let start = supervisor_child::protocol::LISTEN_FDS_START;
    let n = fds.len();
    // [first; n] then [next; n], in one allocation.
    let mut out = vec![usize::MAX; 2 * n];
    for j in (0..n).rev() {
        let i = fds[j] - start;
        if i >= 0 && (i as usize) < j {
            let i = i as usize;
            out[n + j] = out[i];
            out[i] = j;
        }
    }
    out
}

/// Raw pointers into parent-built memory, for the child.
struct ChildSetup {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    listen_pid_slot: *mut u8,
    fds: *mut RawFd,
    nfds: usize,
    /// For each target `3 + i`, the sources still to be placed that sit
    /// there, as chains (see [`in_the_way`]).
    in_the_way: *const usize,
    status_fd: RawFd,
    parent: libc::pid_t,
    parent_death_signal: i32,
    /// The working directory, or null.
    chdir: *const libc::c_char,
    /// The soft open-files limit to give back (0: leave it).
    nofile: u64,
    /// Credentials to take, if any.
    uid: Option<libc::uid_t>,
    gid: Option<libc::gid_t>,
    groups: *const libc::gid_t,
    ngroups: usize,
}

/// The child's side of [`spawn`]: set up the process and exec.
///
/// Every step that can fail reports itself through [`fail`] before the
/// child exits with 127, so the parent never mistakes a failed setup for a
/// successful exec. Steps whose failure is expected and harmless are
/// commented where their result is ignored.
///
/// # Async-signal safety
/// Runs between `fork` and `execve` and calls only async-signal-safe
/// functions (`setpgid`, `rt_sigaction`, `rt_sigprocmask`, `chdir`,
/// `setgroups`, `setgid`, `setuid`, `prctl`, `getppid`,
/// `fcntl`, `dup2`, `close_range`, `getrlimit`, `setrlimit`, `getpid`, `execve`, `write`,
/// `_exit`) on memory prepared before the fork: no allocation, no locks, no
/// formatting, no panics (no indexing that can fail, no unwrap).
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
        if libc::setpgid(0, 0) != 0 {
            fail(s.status_fd, Step::ProcessGroup, 0);
        }

        // Default dispositions for every signal. Ignored ones would survive
        // the exec. The raw syscall, because glibc's sigaction refuses its
        // internal signals (32, 33), which a launcher may have ignored. An
        // all-zero kernel sigaction is SIG_DFL with no flags and an empty
        // mask, whatever the architecture's field order.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                let r = libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    std::mem::size_of::<u64>(),
                );
                if r != 0 {
                    fail(s.status_fd, Step::SignalDisposition, sig);
                }
            }
        }
        // The raw syscall: glibc's sigprocmask leaves its own internal
        // signals (32, 33) as they were, and a supervisor started by a
        // multithreaded parent may have them blocked.
        let empty: u64 = 0;
        let r = libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        );
        if r != 0 {
            fail(s.status_fd, Step::SignalMask, 0);
        }

        if !s.chdir.is_null() && libc::chdir(s.chdir) != 0 {
            fail(s.status_fd, Step::Chdir, 0);
        }
        // Groups, then the group, then the user: once the user is changed,
        // the others can no longer be.
        if let (Some(uid), Some(gid)) = (s.uid, s.gid) {
            if libc::setgroups(s.ngroups, s.groups) != 0 {
                fail(s.status_fd, Step::Groups, 0);
            }
            if libc::setgid(gid) != 0 {
                fail(s.status_fd, Step::Gid, gid as i32);
            }
            if libc::setuid(uid) != 0 {
                fail(s.status_fd, Step::Uid, uid as i32);
            }
        }

        // If the supervisor dies, its children are asked to stop rather than
        // live on with the sockets. The parent may already be gone: check.
        // (After the credentials: changing them clears the setting.)
        if s.parent_death_signal > 0
            && libc::prctl(
                libc::PR_SET_PDEATHSIG,
                s.parent_death_signal as libc::c_ulong,
            ) != 0
        {
            fail(s.status_fd, Step::ParentDeathSignal, s.parent_death_signal);
        }
        if libc::getppid() != s.parent {
            // Nobody may be reading, but the report costs nothing; errno is
            // not meaningful here.
            report_and_exit(s.status_fd, Step::ParentGone, 0, 0);
        }

        // Place the listeners at 3..3+n, in order. Before target 3+i is
        // overwritten, any source still to be placed that sits there is
        // moved above the range; nothing else moves, so a block of
        // listeners already at 3.. (the usual case) or shifted up by fds
        // the supervisor inherited needs no extra fd at all. The status
        // pipe is kept out of the range first. F_DUPFD_CLOEXEC fails with
        // EINVAL when `end` is at or above RLIMIT_NOFILE, and dup2 with EBADF
        // when a target is.
        let first = supervisor_child::protocol::LISTEN_FDS_START;
        let end = first + s.nfds as RawFd;
        let mut status_fd = s.status_fd;
        if (first..end).contains(&status_fd) {
            status_fd = libc::fcntl(status_fd, libc::F_DUPFD_CLOEXEC, end);
            if status_fd < 0 {
                // Nothing was overwritten yet: the original is still there.
                fail(s.status_fd, Step::StatusPipe, end);
            }
        }
        for i in 0..s.nfds {
            let target = first + i as RawFd;
            // Looked up, not searched: a search of the later sources for
            // each target is quadratic (12.5 million comparisons for 5,000
            // listeners, in the child, before the exec).
            let mut j = *s.in_the_way.add(i);
            while j != usize::MAX {
                let later = s.fds.add(j);
                let moved = libc::fcntl(*later, libc::F_DUPFD_CLOEXEC, end);
                if moved < 0 {
                    fail(status_fd, Step::MoveListener, j as i32);
                }
                *later = moved;
                j = *s.in_the_way.add(s.nfds + j);
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
                fail(status_fd, Step::PlaceListener, i as i32);
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
            // These fcntl calls fail with EBADF for every fd that is not
            // open, which is most of them and no error; if getrlimit
            // fails, a common default stands in for the limit.
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

        // The soft open-files limit the supervisor started with, once the
        // fds are placed (which may need more): never below what is open.
        if s.nofile > 0 {
            let mut lim: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                let want = s.nofile.max(end as u64 + 64).min(lim.rlim_max);
                if want < lim.rlim_cur {
                    lim.rlim_cur = want;
                    // A failure leaves the higher limit: harmless.
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
            }
        }

        if !s.listen_pid_slot.is_null() {
            write_decimal(s.listen_pid_slot, libc::getpid() as u64);
        }
        libc::execve(s.program, s.argv, s.envp);
        fail(status_fd, Step::Exec, 0)
    }
}

/// Report `step`, the current errno and `detail` to the parent, then exit
/// with 127.
///
/// # Safety
/// Child side only; async-signal-safe.
unsafe fn fail(fd: RawFd, step: Step, detail: i32) -> ! {
    // SAFETY: reading errno is async-signal-safe; it is this thread's.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: child side, as our caller guarantees.
    unsafe { report_and_exit(fd, step, errno, detail) }
}

/// Write a [`Report`] to `fd` and `_exit(127)`.
///
/// # Safety
/// Child side only; async-signal-safe: `rt_sigprocmask`, `write`, `_exit`
/// on a buffer on this stack frame.
unsafe fn report_and_exit(fd: RawFd, step: Step, errno: i32, detail: i32) -> ! {
    let buf = Report {
        step: step as u32,
        errno,
        detail,
    }
    .encode();
    // SAFETY: async-signal-safe calls on `buf`, which lives on this frame.
    unsafe {
        // After a bounded wait the parent may have closed its end, and the
        // child's inherited copy of the read end may have been overwritten
        // by a listener's dup2: the write must then fail with EPIPE, not
        // kill the child with SIGPIPE (its disposition is the default by
        // now), so that the exit status is 127 as for any failed exec. A
        // blocked SIGPIPE stays pending and dies with the process.
        let pipe: u64 = 1 << (libc::SIGPIPE - 1);
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            &pipe as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        );
        // 12 bytes into an empty pipe: atomic, never a short write.
        while libc::write(fd, buf.as_ptr().cast(), buf.len()) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
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
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus};

    use super::*;

    /// Set in the re-executed test binary that runs [`fd_limit_inner`].
    const FD_LIMIT_ENV: &str = "SPAWN_TEST_FD_LIMIT_INNER";

    /// Poll `cond` until it returns `Some` or `timeout` passes.
    fn wait_until<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = cond() {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A private directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("spawn-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// An executable file that is no program: exec fails with ENOEXEC.
        fn not_a_program(&self) -> PathBuf {
            let path = self.0.join("not-a-program");
            std::fs::write(&path, "no shebang, no ELF header\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Wait for `pending`'s exec status as the supervisor's loop does:
    /// poll its pipe until it says something or the deadline passes.
    fn settle(mut pending: Pending) -> Result<Pid, SpawnError> {
        let pid = pending.pid();
        loop {
            let left = pending.deadline().saturating_duration_since(Instant::now());
            // Rounded up: a timeout truncated to 0 ms would spin.
            let ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
            let mut pfd = [nix::poll::PollFd::new(
                pending.fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => panic!("poll: {e}"),
            }
            if let Some(r) = pending.on_readable() {
                return r.map(|()| pid);
            }
            if let Some(r) = pending.on_timeout(Instant::now()) {
                return r.map(|()| pid);
            }
        }
    }

    fn plan(program: &OsStr, parent_death_signal: i32) -> Plan {
        Plan::new(
            &[program.to_os_string()],
            Vec::new(),
            true,
            parent_death_signal,
        )
        .unwrap()
    }

    #[test]
    fn report_round_trip_and_messages() {
        let r = Report {
            step: Step::PlaceListener as u32,
            errno: libc::EBADF,
            detail: 2,
        };
        let back = Report::decode(&r.encode());
        assert_eq!(back, r);
        assert_eq!(
            back.error("/srv/app").to_string(),
            "child for /srv/app: place listener 2 at fd 5: Bad file descriptor (os error 9)"
        );
        for step in Step::ALL {
            assert_eq!(Step::from_code(step as u32), Some(step));
        }
        let unknown = Report {
            step: 99,
            errno: libc::EIO,
            detail: 0,
        };
        assert!(
            unknown
                .error("x")
                .to_string()
                .starts_with("child for x: unknown step 99: ")
        );
        let short = SpawnError::ShortReport {
            program: "/srv/app".into(),
            bytes: 5,
        };
        assert_eq!(
            short.to_string(),
            "child for /srv/app failed before exec (a 5-byte status report)"
        );
        assert_eq!(
            SpawnError::Pipe(Errno::EMFILE).to_string(),
            "create exec-status pipe: EMFILE: Too many open files"
        );
        assert_eq!(
            SpawnError::Fork(io::Error::from_raw_os_error(libc::EAGAIN)).to_string(),
            "fork: Resource temporarily unavailable (os error 11)"
        );
    }

    #[test]
    fn exec_failure_is_reported() {
        let dir = TempDir::new("exec");
        let program = dir.not_a_program();
        let e = settle(spawn(&mut plan(program.as_os_str(), 0), &[]).unwrap()).unwrap_err();
        assert!(
            matches!(e, SpawnError::Exec { errno, .. } if errno == libc::ENOEXEC),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "exec {}: Exec format error (os error {})",
                program.display(),
                libc::ENOEXEC
            )
        );
    }

    /// A step before exec: an invalid parent-death signal makes prctl fail.
    /// Before each step reported itself, this spawn "succeeded".
    #[test]
    fn parent_death_signal_failure_is_reported() {
        let e = settle(spawn(&mut plan(OsStr::new("true"), 65), &[]).unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                SpawnError::Setup {
                    step: Step::ParentDeathSignal,
                    errno: libc::EINVAL,
                    detail: 65,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("child for /")
                && msg.contains("true: set the parent-death signal to 65: Invalid argument"),
            "{msg}"
        );
    }

    /// Fd arrangement under a low RLIMIT_NOFILE: more listeners than the
    /// limit allows. The limit is process-wide, so the test runs in a fresh
    /// copy of this test binary ([`fd_limit_inner`]), not among the other
    /// tests' threads.
    #[test]
    fn fd_limit_failure_is_reported() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spawn::tests::fd_limit_inner",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(FD_LIMIT_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_until(Duration::from_secs(30), || child.try_wait().unwrap());
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            status.is_some_and(|s| s.success()) && stdout.contains("1 passed"),
            "inner test: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }

    #[test]
    #[ignore = "run by fd_limit_failure_is_reported in its own process"]
    fn fd_limit_inner() {
        assert!(
            std::env::var_os(FD_LIMIT_ENV).is_some(),
            "lowers RLIMIT_NOFILE for the whole process: run fd_limit_failure_is_reported"
        );
        const LIMIT: RawFd = 32;
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(null.as_raw_fd() < LIMIT - 4, "too many fds open already");
        let mut lim: libc::rlimit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit write to / read from a valid
        // rlimit on this stack; this process runs no other test.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            lim.rlim_cur = LIMIT as libc::rlim_t;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        // The same fd as each of LIMIT + 8 listeners: the listener range
        // 3..LIMIT+11 holds the status pipe, which cannot move above it.
        let listeners = vec![null.as_fd(); LIMIT as usize + 8];
        let end = supervisor_child::protocol::LISTEN_FDS_START + listeners.len() as RawFd;
        let e = settle(spawn(&mut plan(OsStr::new("true"), 0), &listeners).unwrap()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "true: move the exec-status pipe to fd {end} or above: Invalid argument"
            )),
            "{msg}"
        );
    }

    /// Holds a write lease on a file: whoever opens the file (an `execve`
    /// of it too) blocks in the kernel until the lease is released, as an
    /// exec from a hung network mount would. On drop it releases the lease
    /// and kills and reaps the child, if one was started.
    struct Lease {
        file: std::fs::File,
        child: Option<Pid>,
    }

    impl Lease {
        fn take(path: &Path) -> Lease {
            let file = std::fs::File::open(path).unwrap();
            let fd = file.as_raw_fd();
            // SAFETY: fcntl on an fd we own. F_SETOWN 0: a lease break
            // would otherwise send SIGIO to this process, whose default
            // action would end the whole test binary.
            let (lease, owner) = unsafe {
                (
                    libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK),
                    libc::fcntl(fd, libc::F_SETOWN, 0),
                )
            };
            assert_eq!(
                lease,
                0,
                "take a write lease on {} (file leases needed by this test): {}",
                path.display(),
                io::Error::last_os_error()
            );
            assert_eq!(owner, 0, "F_SETOWN: {}", io::Error::last_os_error());
            Lease { file, child: None }
        }

        fn release(&self) {
            // SAFETY: fcntl on an fd we own. F_UNLCK, not close: the forked
            // child shares this open file (CLOEXEC closes it only once its
            // exec succeeds), so closing our fd would not end the lease.
            let r = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
            assert_eq!(r, 0, "release lease: {}", io::Error::last_os_error());
        }
    }

    impl Drop for Lease {
        fn drop(&mut self) {
            // SAFETY: as in `release`.
            unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
            if let Some(pid) = self.child.take() {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
        }
    }

    /// An exec that blocks in the kernel does not hold `spawn` beyond its
    /// bound; the child counts as started, and its later exec failure is
    /// exit status 127 (not death by SIGPIPE on the closed status pipe).
    #[test]
    fn stalled_exec_is_bounded() {
        let dir = TempDir::new("stall");
        let program = dir.not_a_program();
        let mut plan = plan(program.as_os_str(), 0);
        let mut lease = Lease::take(&program);
        // Enough listeners that the range 3.. covers the parent's read end
        // of the status pipe (the lowest free fd when it was made): dup2
        // closes the child's copy, so once the parent gives up, the child's
        // report meets a pipe without readers, EPIPE rather than SIGPIPE.
        let null = std::fs::File::open("/dev/null").unwrap();
        let listeners = vec![null.as_fd(); 200];
        let bound = Duration::from_millis(300);
        let start = Instant::now();
        let pending = spawn_within(&mut plan, &listeners, bound).expect("forked");
        assert!(start.elapsed() < bound, "spawn returns at once");
        let pid = settle(pending).expect("a stalled exec counts as started");
        let waited = start.elapsed();
        lease.child = Some(pid);
        assert!(
            waited >= bound,
            "returned after {waited:?}, before the bound"
        );
        // Far below the kernel's lease-break time (45 s by default), after
        // which the exec would go on by itself.
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap(),
            WaitStatus::StillAlive,
            "the child is still in execve"
        );

        lease.release();
        let status = wait_until(Duration::from_secs(10), || {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
                WaitStatus::StillAlive => None,
                s => Some(s),
            }
        })
        .expect("child exits once its exec can go on");
        lease.child = None;
        assert_eq!(status, WaitStatus::Exited(pid, 127));
    }

    #[test]
    fn the_sources_in_the_way_are_looked_up_not_searched() {
        const M: usize = usize::MAX;
        // Sources 5, 3, 9, 3: target 3 (i = 0) has source 3 at j = 1 and
        // j = 3 in its way; target 5 (i = 2) has none after it (5 is at
        // j = 0, placed already); 9 is outside the range 3..7.
        let w = in_the_way(&[5, 3, 9, 3]);
        assert_eq!(&w[..4], &[1, M, M, M]);
        assert_eq!(&w[4..], &[M, 3, M, M]);
        // Already in place, or all above the range: nothing moves.
        assert!(in_the_way(&[3, 4, 5]).iter().all(|&x| x == M));
        assert!(in_the_way(&[10, 11]).iter().all(|&x| x == M));
    }

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
