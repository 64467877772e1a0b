//! The event loop: the only code that waits.
//!
//! One `poll` over a signalfd (SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGQUIT)
//! and every live generation's notify socket, with the state machine's next
//! deadline as its timeout: when nothing happens the supervisor sleeps with
//! no timeout at all. Inputs go to the [`Machine`]; its actions are executed
//! here: spawning, signalling (only pids not yet reaped), logging.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use supervisor::child;
use supervisor::duration::human;

use crate::compat::{self, Compat};
use crate::control::{self, Conn, ReadStep, Request};
use crate::listen::Listener;
use crate::machine::{
    Action, Cause, Event, ExitStatus, Generation, Input, Machine, ReloadOutcome, StartFailure,
    Ticket,
};
use crate::notify::{Manager, NotifyDir, NotifySocket};
use crate::spawn::{self, Plan};

/// The signals the supervisor handles; blocked from the first line of
/// `main` and read from the signalfd.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// What the driver runs and how.
pub struct Settings {
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// The generations' stop signal.
    pub stop_signal: Signal,
    /// Variables for servers written for other launchers.
    pub compat: Compat,
    /// The control socket's path (for status).
    pub control_path: PathBuf,
    /// How readiness is proven (for status).
    pub ready: String,
    /// The drain timeout (for status).
    pub drain_timeout: Duration,
}

/// A generation's process, until it is reaped.
struct Child {
    pid: Pid,
    /// When it was spawned.
    started: Instant,
    notify: NotifySocket,
    /// Set once waitpid has collected it: never signal it again.
    reaped: bool,
    /// The last `STATUS=` text, logged only when it changes.
    status: Option<String>,
}

/// At most this many notify datagrams are read per socket per wake-up, so
/// that a flooding child cannot starve signals and deadlines.
const NOTIFY_BATCH: usize = 64;

/// What the supervisor has told its own service manager.
#[derive(Debug, Default)]
struct ManagerState {
    /// `READY=1` was sent for the first generation.
    started: bool,
    /// `RELOADING=1` was sent and its `READY=1` is due.
    reloading: bool,
    /// A reload request arrived at this `CLOCK_MONOTONIC` time.
    reload_usec: Option<u64>,
    /// `STOPPING=1` was sent.
    stopping: bool,
    /// The last `STATUS=` sent.
    status: Option<String>,
}

/// What a poll entry watches.
#[derive(Clone, Copy)]
enum Watch {
    Signals,
    Control,
    Conn(u64),
    Notify(Generation),
}

/// The running supervisor.
pub struct Driver {
    machine: Machine,
    settings: Settings,
    listeners: Vec<Listener>,
    notify_dir: NotifyDir,
    signals: SignalFd,
    children: BTreeMap<Generation, Child>,
    next_ticket: u64,
    /// Reload requests not answered yet.
    outstanding: BTreeSet<Ticket>,
    /// The control socket (its file is removed when the driver is dropped).
    control: Listener,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// Accepting is paused until then (out of file descriptors: the
    /// pending connection would otherwise wake the loop at once, forever).
    accept_paused: Option<Instant>,
    /// Accepting failed and was logged; cleared by the next success.
    accept_failing: bool,
    /// Which connection waits for which reload.
    reload_waiters: BTreeMap<Ticket, u64>,
    /// Connections waiting for the supervisor to exit.
    stop_waiters: Vec<u64>,
    /// Reload answers to send once the current actions are done.
    answers: Vec<(u64, String)>,
    manager: Option<Manager>,
    /// `WATCHDOG=1` keep-alive interval for the manager and when it is due.
    watchdog: Option<(Duration, Instant)>,
    told: ManagerState,
    /// The last failed reload, until a reload succeeds (for `STATUS=`).
    last_failure: Option<String>,
    /// The last failed reload ever (for `supervisor status`).
    last_failed_reload: Option<String>,
    reloads_ok: u64,
    reloads_failed: u64,
    started: Instant,
    /// Set when the machine asks to exit.
    exit: Option<i32>,
}

impl Driver {
    /// Set up the loop around `machine` (which has already asked for
    /// generation 1).
    ///
    /// # Errors
    /// The signalfd or notify directory cannot be created.
    pub fn new(
        machine: Machine,
        settings: Settings,
        listeners: Vec<Listener>,
        control: Listener,
        manager: Option<Manager>,
    ) -> Result<Driver> {
        let signals = SignalFd::with_flags(
            &handled_signals(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .context("create signalfd")?;
        Ok(Driver {
            machine,
            settings,
            listeners,
            notify_dir: NotifyDir::create()?,
            signals,
            children: BTreeMap::new(),
            next_ticket: 0,
            outstanding: BTreeSet::new(),
            control,
            conns: BTreeMap::new(),
            next_conn: 0,
            accept_paused: None,
            accept_failing: false,
            reload_waiters: BTreeMap::new(),
            stop_waiters: Vec::new(),
            answers: Vec::new(),
            watchdog: None,
            manager,
            told: ManagerState::default(),
            last_failure: None,
            last_failed_reload: None,
            reloads_ok: 0,
            reloads_failed: 0,
            started: Instant::now(),
            exit: None,
        })
    }

    /// Send the manager `WATCHDOG=1` every `interval` (half of its
    /// `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises).
    pub fn with_watchdog(mut self, interval: Option<Duration>) -> Driver {
        if self.manager.is_some() {
            self.watchdog = interval.map(|i| (i, Instant::now()));
        }
        self
    }

    /// Run until the machine says exit; returns the exit status.
    ///
    /// # Errors
    /// Only failures of the supervisor itself (poll, signalfd): a child's
    /// failures are inputs, never errors.
    pub fn run(mut self) -> Result<i32> {
        self.execute();
        loop {
            if let Some(code) = self.exit {
                self.kill_orphans();
                self.answer_stop_waiters(code);
                return Ok(code);
            }
            if self.accept_paused.is_some_and(|t| t <= Instant::now()) {
                self.accept_paused = None;
            }
            let deadline = self
                .conns
                .values()
                .filter_map(|c| c.deadline)
                .chain(self.machine.next_deadline())
                .chain(self.accept_paused)
                .chain(self.watchdog.map(|(_, due)| due))
                .min();
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    // Round up, so that we never wake just before a deadline
                    // and spin.
                    let left = d.saturating_duration_since(Instant::now());
                    let ms = left.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms.min(i32::MAX as u128)).unwrap_or(PollTimeout::MAX)
                }
            };
            let woken: Vec<Watch> = {
                let mut watch = vec![Watch::Signals];
                let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
                if self.accept_paused.is_none() {
                    watch.push(Watch::Control);
                    fds.push(PollFd::new(self.control.fd(), PollFlags::POLLIN));
                }
                for (id, c) in &self.conns {
                    if let Some((fd, input)) = c.interest() {
                        let flags = if input {
                            PollFlags::POLLIN
                        } else {
                            PollFlags::POLLOUT
                        };
                        watch.push(Watch::Conn(*id));
                        fds.push(PollFd::new(fd, flags));
                    }
                }
                for (g, c) in &self.children {
                    watch.push(Watch::Notify(*g));
                    fds.push(PollFd::new(c.notify.fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e).context("poll"),
                }
                watch
                    .into_iter()
                    .zip(&fds)
                    .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(w, _)| w)
                    .collect()
            };
            // Signals first, whatever poll said about them: a child that
            // died just before its ready delay ran out must count as dead,
            // not ready. (The signalfd is non-blocking.)
            self.read_signals()?;
            // New control connections last, after closed ones have made room.
            let (accept, woken): (Vec<Watch>, Vec<Watch>) =
                woken.into_iter().partition(|w| matches!(w, Watch::Control));
            for w in woken.into_iter().chain(accept) {
                if self.exit.is_some() {
                    break;
                }
                match w {
                    Watch::Signals => {}
                    Watch::Notify(g) => self.read_notify(g),
                    Watch::Control => self.accept(),
                    Watch::Conn(id) => self.serve(id),
                }
            }
            if let Some((every, due)) = self.watchdog
                && due <= Instant::now()
                && let Some(m) = &self.manager
            {
                m.send("WATCHDOG=1");
                self.watchdog = Some((every, Instant::now() + every));
            }
            if self.exit.is_none() {
                self.expire_conns();
                self.machine.handle_timeout(Instant::now());
                self.execute();
            }
        }
    }

    /// Hand one input to the machine and carry out what it asks at once,
    /// so that the next input meets the world the machine believes in.
    fn feed(&mut self, input: Input) {
        self.machine.handle(Instant::now(), input);
        self.execute();
    }

    /// Before exiting: processes that left their generation's process group
    /// (setsid) and were reparented to us would otherwise outlive the
    /// supervisor and keep its sockets. They are our unreaped children, so
    /// their pids are safe to signal.
    fn kill_orphans(&mut self) {
        let me = std::process::id();
        let Ok(list) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
            return;
        };
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let pid = Pid::from_raw(pid);
            log::warn!("killing pid {pid}, left behind outside its generation's process group");
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }

    fn read_signals(&mut self) -> Result<()> {
        while self.exit.is_none() {
            let Some(info) = self.signals.read_signal().context("read signalfd")? else {
                break;
            };
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => self.reap(),
                Signal::SIGHUP => {
                    log::info!("reload requested (SIGHUP)");
                    let t = self.new_ticket();
                    self.reload(t);
                }
                _ => {
                    log::info!("received {sig}: stopping");
                    self.feed(Input::Stop);
                }
            }
        }
        Ok(())
    }

    /// Collect every exited child. Known generations are killed as a whole
    /// process group first, while the exited leader's zombie still holds
    /// the group id, so no helper it left behind outlives it and no pid is
    /// signalled after it could have been reused.
    fn reap(&mut self) {
        loop {
            let peek = waitid(
                Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            );
            let pid = match peek {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(s) => match s.pid() {
                    Some(p) => p,
                    None => return,
                },
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitid: {e}");
                    return;
                }
            };
            let generation = self
                .children
                .iter()
                .find(|(_, c)| c.pid == pid && !c.reaped)
                .map(|(g, _)| *g);
            if generation.is_some() {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let status = match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signal(sig as i32),
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid {pid}: {e}");
                    return;
                }
            };
            match generation {
                Some(g) => {
                    log::debug!("{} reaped: {}", self.who(g), describe_status(status));
                    if let Some(c) = self.children.get_mut(&g) {
                        c.reaped = true;
                    }
                    self.feed(Input::Exited(g, status));
                }
                None => log::debug!("reaped orphan pid {pid}: {}", describe_status(status)),
            }
        }
    }

    fn read_notify(&mut self, g: Generation) {
        for _ in 0..NOTIFY_BATCH {
            let Some(c) = self.children.get(&g) else {
                return;
            };
            let msg = match c.notify.recv() {
                Ok(None) => return,
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(why))) => {
                    log::warn!("{}: dropped a notify message that {why}", self.who(g));
                    continue;
                }
                Err(e) => {
                    log::warn!("{}: {e:#}", self.who(g));
                    return;
                }
            };
            if let Some(text) = msg.status {
                let who = self.who(g);
                if let Some(c) = self.children.get_mut(&g)
                    && c.status.as_deref() != Some(text.as_str())
                {
                    // Escaped: a child's text must not forge log lines.
                    log::info!("{who} status: {}", text.escape_debug());
                    c.status = Some(text);
                }
            }
            if msg.stopping {
                log::info!("{} is stopping", self.who(g));
            } else if msg.ready {
                // STOPPING beats READY in one message, as systemd has it.
                self.feed(Input::Ready(g));
            }
        }
    }

    /// Execute the machine's actions; an `Exit` is kept in `self.exit`.
    fn execute(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Spawn(g) => self.spawn(g),
                Action::Signal(g, sig) => self.signal(g, sig),
                Action::Report(e) => self.report(&e),
                Action::Answer(tickets, outcome) => self.answer(tickets, &outcome),
                Action::Exit(code) => {
                    log::info!("exiting with status {code}");
                    self.exit = Some(code);
                }
            }
        }
        // Reaped children were kept until now so that the events about them
        // could name their pids.
        self.children.retain(|_, c| !c.reaped);
        self.tell_manager();
        for (id, line) in std::mem::take(&mut self.answers) {
            self.reply(id, line);
        }
    }

    fn spawn(&mut self, g: Generation) {
        match self.try_spawn(g) {
            Ok(c) => {
                log::info!("{g} (pid {}) started", c.pid);
                self.children.insert(g, c);
            }
            Err(e) => {
                let why = format!("{e:#}");
                self.machine
                    .handle(Instant::now(), Input::SpawnFailed(g, why));
            }
        }
    }

    fn try_spawn(&mut self, g: Generation) -> Result<Child> {
        let notify = self.notify_dir.socket(g.0)?;
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                !STRIPPED.iter().any(|s| k == s)
                    && !k.to_str().is_some_and(compat::is_launcher_variable)
            })
            .collect();
        let n = self.listeners.len();
        if n > 0 {
            env.push((child::LISTEN_FDS.into(), n.to_string().into()));
            let names: Vec<&str> = self.listeners.iter().map(|l| l.name.as_str()).collect();
            env.push((child::LISTEN_FDNAMES.into(), names.join(":").into()));
        }
        env.push((child::NOTIFY_SOCKET.into(), notify.path().into()));
        env.push((child::SUPERVISOR_GENERATION.into(), g.0.to_string().into()));
        let keys: Vec<String> = self
            .listeners
            .iter()
            .map(|l| l.starter_key.clone())
            .collect();
        let extra = compat::variables(
            &self.settings.compat,
            &keys,
            child::LISTEN_FDS_START,
            g.0,
            std::process::id(),
        );
        env.extend(extra.into_iter().map(|(k, v)| (k.into(), v.into())));
        let mut plan = Plan::new(
            &self.settings.command,
            env,
            n > 0,
            self.settings.stop_signal as i32,
        )?;
        let fds: Vec<_> = self.listeners.iter().map(|l| l.fd()).collect();
        let pid = spawn::spawn(&mut plan, &fds)?;
        Ok(Child {
            pid,
            started: Instant::now(),
            notify,
            reaped: false,
            status: None,
        })
    }

    fn signal(&mut self, g: Generation, sig: crate::machine::Signal) {
        let Some(c) = self.children.get(&g).filter(|c| !c.reaped) else {
            return;
        };
        match sig {
            crate::machine::Signal::Stop => {
                let s = self.settings.stop_signal;
                log::debug!("{g} (pid {}): sending {s}", c.pid);
                if let Err(e) = kill(c.pid, s) {
                    log::warn!("{g} (pid {}): send {s}: {e}", c.pid);
                }
                // A stopped (SIGSTOP) child could not act on it otherwise.
                let _ = kill(c.pid, Signal::SIGCONT);
            }
            crate::machine::Signal::Kill => {
                log::debug!("{g} (pid {}): sending SIGKILL to its process group", c.pid);
                let _ = killpg(c.pid, Signal::SIGKILL);
                let _ = kill(c.pid, Signal::SIGKILL);
            }
        }
    }

    fn new_ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Ask for a reload (SIGHUP or a control request, already logged).
    fn reload(&mut self, ticket: Ticket) {
        self.outstanding.insert(ticket);
        self.told.reload_usec = Some(crate::notify::monotonic_usec());
        self.feed(Input::Reload(ticket));
    }

    /// The machine answered reload requests: count, remember a failure for
    /// the status, and answer the control connections waiting for them.
    fn answer(&mut self, tickets: Vec<Ticket>, outcome: &ReloadOutcome) {
        let (ok, text) = self.outcome_text(outcome);
        match outcome {
            ReloadOutcome::Ready { .. } => {
                self.reloads_ok += 1;
                self.last_failure = None;
            }
            ReloadOutcome::Failed {
                generation, why, ..
            } => {
                self.reloads_failed += 1;
                let what = format!("{} {}", self.who(*generation), describe_failure(why));
                self.last_failed_reload = Some(what.clone());
                self.last_failure = Some(what);
            }
            ReloadOutcome::Refused(_) => {}
        }
        log::debug!("reload requests {tickets:?} answered: {text}");
        for t in tickets {
            self.outstanding.remove(&t);
            if let Some(id) = self.reload_waiters.remove(&t) {
                // Sent after the service manager has heard READY=1 (see
                // `execute`), so that a reload command run by the manager
                // never ends before the manager knows the reload did.
                self.answers.push((id, control::answer(ok, &text)));
            }
        }
    }

    /// `generation 7 (pid 4211) ready in 180ms; generation 6 (pid 4100)
    /// draining`: the log line and the answer to `supervisor reload`.
    fn ready_text(&self, g: Generation, after: Duration, replaced: Option<Generation>) -> String {
        let tail = match replaced {
            Some(old) => format!("; {} draining", self.who(old)),
            None => String::new(),
        };
        format!("{} ready in {}{tail}", self.who(g), human(after))
    }

    /// The one-line answer to a reload request.
    fn outcome_text(&self, outcome: &ReloadOutcome) -> (bool, String) {
        match outcome {
            ReloadOutcome::Ready {
                generation,
                after,
                replaced,
            } => (true, self.ready_text(*generation, *after, *replaced)),
            ReloadOutcome::Failed {
                generation,
                why,
                serving,
            } => {
                let tail = match serving {
                    Some(s) => format!("; {} still serving", self.who(*s)),
                    None if self.machine.stopping() => "; the supervisor is stopping".to_string(),
                    None => "; no generation is serving".to_string(),
                };
                (
                    false,
                    format!("{} {}{tail}", self.who(*generation), describe_failure(why)),
                )
            }
            ReloadOutcome::Refused(why) => (false, format!("refused: {why}")),
        }
    }

    /// Accept every waiting control connection; refuse other users' and any
    /// beyond the connection limit.
    fn accept(&mut self) {
        for _ in 0..control::MAX_CONNECTIONS {
            let raw = match nix::sys::socket::accept4(
                self.control.fd().as_raw_fd(),
                nix::sys::socket::SockFlag::SOCK_CLOEXEC
                    | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(Errno::EAGAIN | Errno::ECONNABORTED) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // EMFILE and the like: leave the queue alone for a
                    // moment rather than spin on it (and say so once).
                    if self.accept_failing {
                        log::debug!("accept on the control socket: {e}; retrying in 100ms");
                    } else {
                        log::warn!("accept on the control socket: {e}; retrying every 100ms");
                        self.accept_failing = true;
                    }
                    self.accept_paused = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            if self.accept_failing {
                log::info!("accepting on the control socket again");
                self.accept_failing = false;
            }
            // SAFETY: accept4 just returned this new descriptor; nothing
            // else owns it.
            let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
            let now = Instant::now();
            let (pid, uid) = match nix::sys::socket::getsockopt(
                &stream,
                nix::sys::socket::sockopt::PeerCredentials,
            ) {
                Ok(c) => (c.pid(), c.uid()),
                Err(e) => {
                    log::warn!("control connection without credentials ({e}): closed");
                    continue;
                }
            };
            let me = nix::unistd::geteuid().as_raw();
            let mut conn = Conn::new(stream, pid, now);
            if uid != 0 && uid != me {
                log::warn!(
                    "refused a control connection from pid {pid} (uid {uid}): only root and uid {me} may control this supervisor"
                );
                conn.reply(
                    control::answer(
                        false,
                        &format!("permission denied: uid {uid} may not control this supervisor"),
                    ),
                    now,
                );
                let _ = conn.write();
                continue;
            }
            if self.conns.len() >= control::MAX_CONNECTIONS {
                log::warn!(
                    "refused a control connection from pid {pid}: {} already open",
                    control::MAX_CONNECTIONS
                );
                conn.reply(
                    control::answer(false, "busy: too many control connections"),
                    now,
                );
                let _ = conn.write();
                continue;
            }
            self.next_conn += 1;
            self.conns.insert(self.next_conn, conn);
        }
    }

    /// A control connection is readable or writable.
    fn serve(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.stage {
            control::Stage::Writing(..) => {
                if conn.write() {
                    self.conns.remove(&id);
                }
            }
            control::Stage::Reading(_) => match conn.read() {
                ReadStep::Pending => {}
                ReadStep::Gone => {
                    self.conns.remove(&id);
                }
                ReadStep::Request(r) => self.request(id, r),
            },
            control::Stage::Waiting => {}
        }
    }

    fn request(&mut self, id: u64, request: Result<Request, String>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let pid = conn.pid;
        match request {
            Err(why) => {
                log::warn!("control connection from pid {pid}: {why}");
                self.reply(id, control::answer(false, &why));
            }
            Ok(Request::Status) => {
                let json = self.status_json().to_string();
                self.reply(id, control::answer(true, &json));
            }
            Ok(Request::Reload) => {
                log::info!("reload requested (control socket, pid {pid})");
                conn.stage = control::Stage::Waiting;
                conn.deadline = None;
                let t = self.new_ticket();
                self.reload_waiters.insert(t, id);
                self.reload(t);
            }
            Ok(Request::Stop) => {
                conn.stage = control::Stage::Waiting;
                conn.deadline = None;
                self.stop_waiters.push(id);
                if self.machine.stopping() {
                    log::info!("stop requested (control socket, pid {pid}): already stopping");
                } else {
                    log::info!("stop requested (control socket, pid {pid})");
                    self.feed(Input::Stop);
                }
            }
        }
    }

    /// Start answering connection `id` (and finish at once if the socket
    /// takes the whole line, as it nearly always does).
    fn reply(&mut self, id: u64, line: String) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.reply(line, Instant::now());
            if conn.write() {
                self.conns.remove(&id);
            }
        }
    }

    /// Close connections that sent no request, or took no answer, in time.
    fn expire_conns(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(mut conn) = self.conns.remove(&id)
                && let control::Stage::Reading(_) = conn.stage
            {
                log::debug!(
                    "control connection from pid {}: no request within {}: closed",
                    conn.pid,
                    human(control::REQUEST_TIMEOUT)
                );
                conn.reply(
                    control::answer(
                        false,
                        &format!("no request within {}", human(control::REQUEST_TIMEOUT)),
                    ),
                    now,
                );
                let _ = conn.write();
            }
        }
    }

    /// Tell the `stop` clients that the supervisor exits now. Their
    /// connections stay open until the driver is dropped on the way out,
    /// after the control socket file is removed: EOF then means "gone".
    fn answer_stop_waiters(&mut self, code: i32) {
        let line = control::answer(true, &format!("exit status {code}"));
        let now = Instant::now();
        for id in std::mem::take(&mut self.stop_waiters) {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.reply(line.clone(), now);
                let _ = conn.write();
            }
        }
    }

    /// Send the service manager what changed: `READY=1` once the first
    /// generation serves; `RELOADING=1` with `MONOTONIC_USEC` for every
    /// reload request and `READY=1` once no reload is pending; `STOPPING=1`
    /// once stopping; `STATUS=` whenever the serving generation changes.
    fn tell_manager(&mut self) {
        if self.manager.is_none() {
            return;
        }
        let stopping = self.machine.stopping() || self.exit.is_some();
        let mut lines: Vec<String> = Vec::new();
        if let Some(usec) = self.told.reload_usec.take()
            && self.told.started
            && !stopping
        {
            lines.push(child::RELOADING.to_string());
            lines.push(format!("MONOTONIC_USEC={usec}"));
            self.told.reloading = true;
        }
        if !stopping {
            if !self.told.started && self.machine.active().is_some() {
                self.told.started = true;
                lines.push(child::READY.to_string());
            } else if self.told.reloading && self.outstanding.is_empty() {
                self.told.reloading = false;
                lines.push(child::READY.to_string());
            }
        } else if !self.told.stopping {
            self.told.stopping = true;
            self.told.reloading = false;
            lines.push(child::STOPPING.to_string());
        }
        let status = self.status_line();
        if self.told.status.as_deref() != Some(status.as_str()) {
            lines.push(format!("{}{status}", child::STATUS_PREFIX));
            self.told.status = Some(status);
        }
        if !lines.is_empty()
            && let Some(m) = &self.manager
        {
            m.send(&lines.join("\n"));
        }
    }

    /// One line for the service manager's `STATUS=`.
    fn status_line(&self) -> String {
        if self.machine.stopping() || self.exit.is_some() {
            return "stopping".to_string();
        }
        let base = match self.machine.active() {
            Some(g) => format!("{} serving", self.who(g)),
            None => "no generation serving".to_string(),
        };
        if let Some(s) = self.machine.starting() {
            format!("{base}; {} starting", self.who(s))
        } else if let Some(f) = &self.last_failure {
            format!("{base}; last reload failed: {f}")
        } else {
            base
        }
    }

    /// Everything `supervisor status` shows, as JSON.
    fn status_json(&self) -> serde_json::Value {
        use serde_json::json;
        let now = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let generations: Vec<serde_json::Value> = self
            .machine
            .phases()
            .into_iter()
            .map(|(g, phase, since)| {
                let child = self.children.get(&g);
                json!({
                    "generation": g.0,
                    "pid": child.map(|c| c.pid.as_raw()),
                    "state": phase.as_str(),
                    "age_ms": child.map(|c| ms(now.saturating_duration_since(c.started))),
                    "state_ms": ms(now.saturating_duration_since(since)),
                    "status": child.and_then(|c| c.status.clone()),
                })
            })
            .collect();
        let listeners: Vec<serde_json::Value> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                json!({
                    "name": l.name,
                    "address": l.bound,
                    "fd": child::LISTEN_FDS_START + i as i32,
                    "inherited": l.inherited,
                })
            })
            .collect();
        let command: Vec<String> = self
            .settings
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        json!({
            "supervisor": {
                "pid": std::process::id(),
                "uptime_ms": ms(now.saturating_duration_since(self.started)),
                "version": env!("CARGO_PKG_VERSION"),
                "control": self.settings.control_path.to_string_lossy(),
                "stopping": self.machine.stopping(),
            },
            "command": command,
            "ready": self.settings.ready,
            "stop_signal": self.settings.stop_signal.as_str(),
            "drain_timeout_ms": ms(self.settings.drain_timeout),
            "listeners": listeners,
            "generations": generations,
            "restarts": self.machine.restarts(),
            "reloads": {
                "succeeded": self.reloads_ok,
                "failed": self.reloads_failed,
                "pending": self.outstanding.len(),
                "last_failure": self.last_failed_reload,
            },
        })
    }

    /// `generation 3 (pid 4211)`, or without a pid if it never had one.
    fn who(&self, g: Generation) -> String {
        match self.children.get(&g) {
            Some(c) => format!("{g} (pid {})", c.pid),
            None => g.to_string(),
        }
    }

    fn report(&self, e: &Event) {
        match e {
            Event::Ready {
                generation,
                after,
                replaced,
            } => log::info!("{}", self.ready_text(*generation, *after, *replaced)),
            Event::StartFailed {
                generation,
                cause,
                why,
                serving,
                restart_in,
            } => {
                let what = format!("{} {}", self.who(*generation), describe_failure(why));
                let next = match (serving, restart_in) {
                    (Some(s), _) => format!("; {} still serving", self.who(*s)),
                    (None, Some(d)) => format!("; starting again in {}", human(*d)),
                    (None, None) => String::new(),
                };
                match (cause, why) {
                    (_, StartFailure::Stopping) => log::info!("{what}"),
                    (Cause::Reload, _) => log::warn!("reload failed: {what}{next}"),
                    _ => log::warn!("{what}{next}"),
                }
            }
            Event::Draining { generation } => {
                log::info!(
                    "{} draining: sent {}",
                    self.who(*generation),
                    self.settings.stop_signal
                );
            }
            Event::Killed { generation, after } => {
                log::warn!(
                    "{} still running after the {} drain timeout: killing its process group",
                    self.who(*generation),
                    human(*after)
                );
            }
            Event::Drained {
                generation,
                after,
                status,
            } => {
                log::info!(
                    "{} drained in {} ({})",
                    self.who(*generation),
                    human(*after),
                    describe_status(*status)
                );
            }
            Event::Crashed {
                generation,
                status,
                restart_in,
            } => {
                let next = match restart_in {
                    Some(d) => format!("restarting in {}", human(*d)),
                    None => match self.machine.starting() {
                        Some(s) => format!("{s} is starting"),
                        None => "not restarting".to_string(),
                    },
                };
                log::warn!(
                    "{} {} while serving; {next}",
                    self.who(*generation),
                    describe_status(*status)
                );
            }
            Event::ReloadQueued { starting } => {
                log::info!("reload queued: {} is still starting", self.who(*starting));
            }
            Event::Stopping => log::info!("stopping every generation"),
            Event::ForcedStop => log::warn!("second stop request: killing every generation now"),
        }
    }
}

/// Variables of the supervisor's own environment never passed to children:
/// they describe the supervisor's launcher, not the child's.
const STRIPPED: [&str; 8] = [
    child::LISTEN_FDS,
    child::LISTEN_PID,
    child::LISTEN_FDNAMES,
    child::LISTEN_PIDFDID,
    child::NOTIFY_SOCKET,
    child::WATCHDOG_PID,
    child::WATCHDOG_USEC,
    child::SUPERVISOR_GENERATION,
];

fn describe_status(s: ExitStatus) -> String {
    match s {
        ExitStatus::Code(c) => format!("exited with status {c}"),
        ExitStatus::Signal(n) => match Signal::try_from(n) {
            Ok(sig) => format!("killed by signal {n} ({sig})"),
            Err(_) => format!("killed by signal {n}"),
        },
    }
}

fn describe_failure(f: &StartFailure) -> String {
    match f {
        StartFailure::Spawn(e) => format!("could not be started: {e}"),
        StartFailure::Exited(s) => format!("{} before it was ready", describe_status(*s)),
        StartFailure::NotReady(d) => format!("was not ready within {}", human(*d)),
        StartFailure::Stopping => "was stopped before it was ready".to_string(),
    }
}
