//! The event loop: the only code that waits.
//!
//! One `poll` over a signalfd (SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGQUIT)
//! and every live generation's notify socket, with the state machine's next
//! deadline as its timeout: when nothing happens the supervisor sleeps with
//! no timeout at all. Inputs go to the [`Machine`]; its actions are executed
//! here: spawning, signalling (only pids not yet reaped), logging.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use supervisor::child;

use crate::compat::{self, Compat};
use crate::listen::Listener;
use crate::machine::{Action, Cause, Event, ExitStatus, Generation, Input, Machine, StartFailure};
use crate::notify::{NotifyDir, NotifySocket};
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
}

/// A generation's process, until it is reaped.
struct Child {
    pid: Pid,
    notify: NotifySocket,
    /// Set once waitpid has collected it: never signal it again.
    reaped: bool,
    /// The last `STATUS=` text, logged only when it changes.
    status: Option<String>,
}

/// At most this many notify datagrams are read per socket per wake-up, so
/// that a flooding child cannot starve signals and deadlines.
const NOTIFY_BATCH: usize = 64;

/// The running supervisor.
pub struct Driver {
    machine: Machine,
    settings: Settings,
    listeners: Vec<Listener>,
    notify_dir: NotifyDir,
    signals: SignalFd,
    children: BTreeMap<Generation, Child>,
    next_ticket: u64,
    /// Set when the machine asks to exit.
    exit: Option<i32>,
}

impl Driver {
    /// Set up the loop around `machine` (which has already asked for
    /// generation 1).
    ///
    /// # Errors
    /// The signalfd or notify directory cannot be created.
    pub fn new(machine: Machine, settings: Settings, listeners: Vec<Listener>) -> Result<Driver> {
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
            exit: None,
        })
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
                return Ok(code);
            }
            let timeout = match self.machine.next_deadline() {
                None => PollTimeout::NONE,
                Some(d) => {
                    // Round up, so that we never wake just before a deadline
                    // and spin.
                    let left = d.saturating_duration_since(Instant::now());
                    let ms = left.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms.min(i32::MAX as u128)).unwrap_or(PollTimeout::MAX)
                }
            };
            let gens: Vec<Generation> = self.children.keys().copied().collect();
            let (sig_ready, notify_ready) = {
                let mut fds = Vec::with_capacity(1 + gens.len());
                fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
                for c in self.children.values() {
                    fds.push(PollFd::new(c.notify.fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e).context("poll"),
                }
                let readable = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
                let sig = readable(&fds[0]);
                let notify: Vec<Generation> = gens
                    .iter()
                    .zip(&fds[1..])
                    .filter(|(_, p)| readable(p))
                    .map(|(g, _)| *g)
                    .collect();
                (sig, notify)
            };
            // Signals first, whatever poll said about them: a child that
            // died just before its ready delay ran out must count as dead,
            // not ready. (The signalfd is non-blocking.)
            let _ = sig_ready;
            self.read_signals()?;
            for g in notify_ready {
                if self.exit.is_none() {
                    self.read_notify(g);
                }
            }
            if self.exit.is_none() {
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
                    self.next_ticket += 1;
                    let t = self.next_ticket;
                    self.feed(Input::Reload(t));
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
                Action::Answer(tickets, outcome) => {
                    log::debug!("reload {tickets:?} answered: {outcome:?}");
                }
                Action::Exit(code) => {
                    log::info!("exiting with status {code}");
                    self.exit = Some(code);
                }
            }
        }
        // Reaped children were kept until now so that the events about them
        // could name their pids.
        self.children.retain(|_, c| !c.reaped);
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
            } => {
                let tail = match replaced {
                    Some(old) => format!("; {} draining", self.who(*old)),
                    None => String::new(),
                };
                log::info!("{} ready in {}{tail}", self.who(*generation), human(*after));
            }
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

/// `3.2ms`, `85ms`, `1.2s`, `2m30s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 10 {
        let s = format!("{:.1}", d.as_secs_f64() * 1000.0);
        format!("{}ms", s.strip_suffix(".0").unwrap_or(&s))
    } else if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.1}", d.as_secs_f64());
        format!("{}s", s.strip_suffix(".0").unwrap_or(&s))
    } else {
        let s = d.as_secs();
        format!("{}m{}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_micros(3240)), "3.2ms");
        assert_eq!(human(Duration::from_millis(5)), "5ms");
        assert_eq!(human(Duration::from_millis(85)), "85ms");
        assert_eq!(human(Duration::from_millis(1200)), "1.2s");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(150)), "2m30s");
    }
}
