//! `supervisor reload|status|stop|fds|listen`: the client side of the
//! control socket.
//!
//! Exit status: 0 when the request succeeded; 1 when the supervisor
//! answered with an error (a failed reload: the old generation still
//! serves; an unknown listener); 2 for usage errors (clap); 3 when the
//! supervisor could not be reached or did not answer in time. `fds` execs
//! its command on success (127 if that fails).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};

use crate::cli::Client;
use crate::control::{self, Request};
use hot_supervisor::parse::control::Answer;
use hot_supervisor::status::Status;

/// Exit status when the supervisor answered with an error.
const FAILED: i32 = 1;
/// Exit status when the supervisor could not be reached or did not answer.
const UNREACHABLE: i32 = 3;

/// Largest answer read (a status with thousands of listeners fits).
const MAX_ANSWER: usize = 16 << 20;

/// How long `status` waits by default: it is answered at once.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The supervisor's default bound on an upgrade's check.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Run a control command; returns the exit status.
pub fn run(client: Client) -> i32 {
    // `main` blocked the supervisor's signals; a client must die of Ctrl-C
    // as any command does.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let (path, request, timeout) = match &client {
        Client::Reload {
            control,
            timeout,
            rolling,
            canary,
            promote_after,
        } => {
            use hot_supervisor::parse::control::ReloadKind;
            let request = match (rolling, canary) {
                (Some(k), _) => Request::ReloadWith(ReloadKind::Rolling(*k)),
                (None, Some(percent)) => Request::ReloadWith(ReloadKind::Canary {
                    percent: *percent,
                    promote_after: *promote_after,
                }),
                (None, None) => Request::Reload,
            };
            (control, request, *timeout)
        }
        Client::Promote { control, timeout } => (control, Request::Promote, *timeout),
        Client::Rollback { control, timeout } => (control, Request::Rollback, *timeout),
        Client::Status { control, .. } => (control, Request::Status, Some(STATUS_TIMEOUT)),
        Client::Events { control, .. } => (control, Request::Events, Some(STATUS_TIMEOUT)),
        Client::Stop { control, timeout } => (control, Request::Stop, *timeout),
        // The supervisor bounds the check by the timeout; the exec and the
        // new image's start come on top.
        Client::Upgrade { control, timeout } => (
            control,
            Request::Upgrade(*timeout),
            Some(timeout.unwrap_or(UPGRADE_TIMEOUT) + Duration::from_secs(30)),
        ),
        Client::Fds { control, names, .. } => (control, Request::Fds(names.clone()), None),
        Client::Listen { control, listener } => (control, Request::Listen(listener.clone()), None),
    };
    if let Client::Fds { command, .. } = &client
        && command.is_empty()
    {
        eprintln!(
            "supervisor: error: no command given: supervisor fds [--control PATH] [--name NAME]... -- CMD [ARGS...]"
        );
        return 2;
    }
    // A child of a supervisor talks to its own by default.
    let path = match path.clone().or_else(supervisor_child::control_path) {
        Some(p) => p,
        None => {
            let p = control::default_path_here();
            // The shared fallback directory counts only if it is private
            // and ours, as the supervisor demands of it.
            if let Some(dir) = p.parent()
                && dir == control::fallback_dir(nix::unistd::geteuid().as_raw())
                && dir.exists()
                && let Err(e) = control::check_private(dir)
            {
                return unreachable(&format!("cannot trust {}: {e:#}", p.display()));
            }
            p
        }
    };
    match &client {
        Client::Fds { names, command, .. } => return fds(&path, names, command),
        Client::Listen { listener, .. } => return listen(&path, listener),
        _ => {}
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut session = match Session::open(&path, deadline) {
        Ok(s) => s,
        Err(e) => return unreachable(&e),
    };
    let answer = match session.ask(&request) {
        Ok(a) => a,
        Err(e) => return unreachable(&e),
    };
    let text = match answer {
        Answer::Ok(text) => text,
        Answer::Error(text) => {
            let what = match request {
                Request::Reload | Request::ReloadWith(_) => "reload failed",
                Request::Promote => "promote failed",
                Request::Rollback => "rollback failed",
                Request::Status => "status failed",
                Request::Stop => "stop failed",
                Request::Upgrade(_) => "upgrade failed",
                Request::Events => "events failed",
                Request::Fds(_) | Request::Listen(_) | Request::Takeover => "request failed",
            };
            eprintln!("supervisor: {what}: {text}");
            return FAILED;
        }
    };
    match client {
        Client::Reload { .. }
        | Client::Upgrade { .. }
        | Client::Promote { .. }
        | Client::Rollback { .. } => {
            println!("{text}");
            0
        }
        Client::Status { json, .. } => {
            let status: Status = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    return unreachable(&format!(
                        "the supervisor at {} sent a status this client cannot read: {e}",
                        path.display()
                    ));
                }
            };
            if json {
                // As sent: fields this client does not know are kept.
                println!("{text}");
            } else {
                print!("{}", status.render());
            }
            0
        }
        // A supervisor that is PID 1 of our pid namespace (`docker exec
        // ... supervisor stop`) takes us with it when it exits: its answer,
        // sent on its way out, is all the proof there can be.
        Client::Stop { .. } if session.pid == 1 => {
            println!("supervisor (pid 1) stopping: {text}");
            0
        }
        Client::Stop { .. } => match session.wait_gone() {
            Ok(()) => {
                println!("supervisor (pid {}) stopped: {text}", session.pid);
                0
            }
            Err(e) => unreachable(&e),
        },
        Client::Events { json, .. } => session.follow(json),
        Client::Fds { .. } | Client::Listen { .. } => 0,
    }
}

/// Whether a failed fetch was the supervisor's answer (`error TEXT`), not
/// a failure to reach it.
fn answered(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::Other
}

/// `supervisor fds`: fetch the listeners, put them at fds 3, 4, ... with
/// the socket-activation variables, and exec the command.
fn fds(path: &Path, names: &[String], command: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let fetched = match supervisor_child::fetch_listeners(path, &wanted) {
        Ok(f) => f,
        Err(e) if answered(&e) => {
            eprintln!("supervisor: fds failed: {e}");
            return FAILED;
        }
        Err(e) => {
            // Not reached at all (said as the other commands say it), or
            // the transfer failed.
            return unreachable(&match UnixStream::connect(path) {
                Err(c) => format!(
                    "cannot reach the supervisor at {}: {}",
                    path.display(),
                    why_not(&c, path)
                ),
                Ok(_) => format!(
                    "cannot fetch listeners from the supervisor at {}: {e}",
                    path.display()
                ),
            });
        }
    };
    let start = supervisor_child::protocol::LISTEN_FDS_START;
    let n = fetched.len() as i32;
    // First out of the way of 3..3+n (where other fds of ours may sit),
    // then into place: dup2 clears close-on-exec on the copy it makes.
    let mut moved = Vec::with_capacity(fetched.len());
    for f in &fetched {
        match nix::fcntl::fcntl(&f.fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(start + n)) {
            // SAFETY: F_DUPFD_CLOEXEC just returned this new fd; it is ours.
            Ok(raw) => moved.push(unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw)
            }),
            Err(e) => {
                eprintln!(
                    "supervisor: error: duplicate fd of listener {:?}: {e}",
                    f.name
                );
                return FAILED;
            }
        }
    }
    let names: Vec<String> = fetched.iter().map(|f| f.name.clone()).collect();
    drop(fetched);
    for (k, fd) in moved.iter().enumerate() {
        let target = start + k as i32;
        // SAFETY: dup2 takes two fd numbers and touches no memory; the
        // target is replaced, which is the point (the process execs next).
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(fd), target) } < 0 {
            eprintln!(
                "supervisor: error: place listener {:?} at fd {target}: {}",
                names[k],
                std::io::Error::last_os_error()
            );
            return FAILED;
        }
    }
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .env_remove(supervisor_child::protocol::LISTEN_PIDFDID)
        .env(
            supervisor_child::protocol::LISTEN_PID,
            std::process::id().to_string(),
        )
        .env(supervisor_child::protocol::LISTEN_FDS, n.to_string())
        .env(supervisor_child::protocol::LISTEN_FDNAMES, names.join(":"));
    // A channel this process inherited survives the exec only where no
    // listener was placed over it.
    if supervisor_child::channel().is_none_or(|fd| fd < start + n) {
        cmd.env_remove(supervisor_child::protocol::SUPERVISOR_CHANNEL_FD);
    }
    let e = cmd.exec();
    eprintln!(
        "supervisor: error: exec {}: {e}",
        command[0].to_string_lossy()
    );
    127
}

/// `supervisor listen`: open a listener at run time; print its
/// description line.
fn listen(path: &Path, spec: &hot_supervisor::parse::listen::Spec) -> i32 {
    match supervisor_child::open_listener(path, &spec.name, &spec.text) {
        Ok(f) => {
            println!("{} {} {}", f.name, f.kind, f.address);
            0
        }
        Err(e) if answered(&e) => {
            eprintln!("supervisor: listen failed: {e}");
            FAILED
        }
        Err(e) => unreachable(&format!(
            "cannot reach the supervisor at {}: {e}",
            path.display()
        )),
    }
}

/// Why connecting to the control socket at `path` failed, in words.
fn why_not(e: &std::io::Error, path: &Path) -> String {
    match e.kind() {
        ErrorKind::NotFound => {
            "no such socket (is the supervisor running? give its --control PATH)".to_string()
        }
        ErrorKind::ConnectionRefused
            if std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_socket()) =>
        {
            "not a socket".to_string()
        }
        ErrorKind::ConnectionRefused => {
            "nothing is listening (the supervisor that made it has exited)".to_string()
        }
        ErrorKind::PermissionDenied => {
            "permission denied (only root and the supervisor's own user may use it)".to_string()
        }
        ErrorKind::NotADirectory => "a part of the path is not a directory".to_string(),
        _ => e.to_string(),
    }
}

fn unreachable(why: &str) -> i32 {
    eprintln!("supervisor: error: {why}");
    UNREACHABLE
}

/// A Unix time as `HH:MM:SS.mmm` (UTC).
fn clock(t: f64) -> String {
    let ms = (t * 1000.0) as u64;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// One connection to a supervisor.
struct Session {
    stream: UnixStream,
    path: PathBuf,
    /// The supervisor's pid, from SO_PEERCRED.
    pid: i32,
    deadline: Option<Instant>,
    /// The request sent (for messages).
    request: Request,
    /// What came after the answer line (an event stream's first events).
    rest: Vec<u8>,
}

impl Session {
    fn open(path: &Path, deadline: Option<Instant>) -> Result<Session, String> {
        let shown = path.display();
        let stream = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot reach the supervisor at {shown}: {}",
                why_not(&e, path)
            )
        })?;
        // Whoever listens there must be root or us: anyone can create a
        // socket at a path in a shared directory, and a deploy script must
        // not believe a stranger's "ok".
        let cred =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| format!("cannot check who listens at {shown}: {e}"))?;
        let me = nix::unistd::geteuid().as_raw();
        if cred.uid() != 0 && cred.uid() != me {
            return Err(format!(
                "{shown} belongs to uid {} (pid {}), not to root or uid {me}: not a supervisor of ours",
                cred.uid(),
                cred.pid()
            ));
        }
        let pid = cred.pid();
        Ok(Session {
            stream,
            path: path.to_path_buf(),
            pid,
            deadline,
            request: Request::Status,
            rest: Vec::new(),
        })
    }

    /// Send the request; read the one answer line. (The error, no answer,
    /// is only ever printed.)
    fn ask(&mut self, request: &Request) -> Result<Answer, String> {
        let shown = self.path.display().to_string();
        self.request = request.clone();
        if let Err(e) = self
            .stream
            .write_all(format!("{}\n", request.line()).as_bytes())
        {
            // A refused connection (busy, or another user) is answered and
            // closed before the request is read: the answer is still there.
            if !matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) {
                return Err(format!("send to the supervisor at {shown}: {e}"));
            }
        }
        let mut line = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(n) = line.iter().position(|&b| b == b'\n') {
                self.rest = line.split_off(n + 1);
                line.truncate(n);
                break;
            }
            if line.len() > MAX_ANSWER {
                return Err(format!(
                    "the supervisor at {shown} sent an answer longer than {MAX_ANSWER} bytes"
                ));
            }
            self.arm()?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "the supervisor at {shown} closed the connection without answering"
                    ));
                }
                Ok(n) => line.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.late(request));
                }
                Err(e) => return Err(format!("read from the supervisor at {shown}: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&line);
        control::parse_answer(&line).map_err(|e| format!("the supervisor at {shown}: {e}"))
    }

    /// Set the read timeout to what is left of the deadline.
    fn arm(&self) -> Result<(), String> {
        let Some(d) = self.deadline else {
            let _ = self.stream.set_read_timeout(None);
            return Ok(());
        };
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.late(&self.request));
        }
        let _ = self.stream.set_read_timeout(Some(left));
        Ok(())
    }

    fn late(&self, request: &Request) -> String {
        let what = match request {
            Request::Reload => "; the reload may still complete (see supervisor status)",
            Request::Stop => "; the stop goes on",
            Request::Upgrade(_) => "; the upgrade may still complete (see supervisor status)",
            _ => "",
        };
        format!(
            "no answer from the supervisor at {} in time{what}",
            self.path.display()
        )
    }

    /// After `events`' answer: print each event line as it comes (as sent
    /// with `json`, else one line for people) until the supervisor ends
    /// the stream; the exit status.
    fn follow(&mut self, json: bool) -> i32 {
        use std::io::BufRead;
        let _ = self.stream.set_read_timeout(None);
        let rest = std::mem::take(&mut self.rest);
        let reader = std::io::BufReader::new(std::io::Cursor::new(rest).chain(&self.stream));
        let mut out = std::io::stdout().lock();
        for line in reader.lines() {
            let Ok(line) = line else {
                break;
            };
            let shown = if json {
                line
            } else {
                match serde_json::from_str::<hot_supervisor::events::Record>(&line) {
                    Ok(r) => format!("{} {}", clock(r.time), r.render()),
                    // A kind this client does not know: as sent.
                    Err(_) => line,
                }
            };
            if writeln!(out, "{shown}").and_then(|()| out.flush()).is_err() {
                // `supervisor events | head`: the reader left.
                return 0;
            }
        }
        let _ = writeln!(
            std::io::stderr(),
            "supervisor: the event stream of pid {} ended",
            self.pid
        );
        0
    }

    /// After a stop's answer: wait for the connection to close (the
    /// supervisor closes it on its way out), then for the process to be
    /// gone (or a zombie, if its parent has not reaped it yet).
    fn wait_gone(&mut self) -> Result<(), String> {
        let mut sink = [0u8; 256];
        loop {
            self.arm()?;
            match self.stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.late(&Request::Stop));
                }
                // A reset also means the other end is gone.
                Err(_) => break,
            }
        }
        if self.pid <= 0 {
            return Ok(());
        }
        // EOF came as its fds closed; exit follows within moments.
        let until = Instant::now() + Duration::from_secs(10);
        let until = self.deadline.map_or(until, |d| d.min(until));
        loop {
            match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
                Err(_) => return Ok(()),
                Ok(stat) => {
                    let state = stat
                        .rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next());
                    if matches!(state, Some("Z" | "X")) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= until {
                return Err(format!(
                    "the supervisor (pid {}) closed its control connection but is still running",
                    self.pid
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
