//! The event loop: the only code that waits, and the only code that routes
//! between the parts.
//!
//! One `poll` over the signalfd (SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGQUIT)
//! and whatever fds the parts want polled, with the earliest of their
//! deadlines as its timeout: when nothing happens the supervisor sleeps
//! with no timeout at all. Inputs go to the [`Machine`], which alone
//! decides the lifecycle; its actions are carried out here by calling the
//! parts ([`Parts`]: the processes, the sockets and their routing, the
//! control socket, the service manager, the probes, the health endpoint)
//! and [`Report`] (text). The driver holds no protocol and writes no text
//! of its own beyond the few lines that say which part did what. It must
//! never block: every part it calls is non-blocking.
//!
//! Here: the loop, the machine's actions carried out, the processes'
//! signals, exec statuses and readiness. In [`requests`]: what is asked
//! from outside (control requests, health, the children's channels). In
//! [`handoffs`]: in-place upgrades and takeovers.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use nix::errno::Errno;
use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::children::Reaping;
use crate::control::{self, ConnId, ControlEvent};
use crate::health;
use crate::machine::{Action, Event, Generation, Input, Machine, Strategy, Ticket};
use crate::manager::View;
use crate::parts::{Parts, Watch};
use crate::report::Report;
use crate::snapshot::Settings;
use crate::steer::Notice;
use hot_supervisor::events::{Kind, Record};

mod handoffs;
mod requests;

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
        Signal::SIGUSR2,
    ]
    .into_iter()
    .chain(FORWARDED)
    {
        set.add(s);
    }
    set
}

/// Signals the supervisor does not act on itself but passes to the serving
/// generation (as tini and dumb-init do).
pub const FORWARDED: [Signal; 2] = [Signal::SIGUSR1, Signal::SIGWINCH];

/// The most sockets made ahead of time in one turn of the loop (about
/// 2 ms of the kernel's work; see [`crate::steer::Steering::replenish`]).
const RESERVE_BATCH: usize = 128;

/// Say so when a step of the loop took long (the kernel's work on many
/// reuseport groups: sockets joining, programs attached).
fn slow(what: &str, began: Instant) {
    let took = began.elapsed();
    if took >= std::time::Duration::from_secs(1) {
        log::warn!(
            "{what} took {} (the loop waited meanwhile)",
            hot_supervisor::duration::human(took)
        );
    }
}

/// The running supervisor.
pub struct Driver {
    machine: Machine,
    settings: Settings,
    parts: Parts,
    report: Report,
    signals: SignalFd,
    next_ticket: Ticket,
    /// Which control connection waits for which reload.
    reload_waiters: BTreeMap<Ticket, ConnId>,
    /// Reload answers to send once the current actions are done.
    answers: Vec<(ConnId, bool, String)>,
    /// What steering reported while carrying out actions, for the log.
    notices: Vec<Notice>,
    started: Instant,
    /// The drain progress lines (a timer only while some generation
    /// drains).
    progress: crate::report::Progress,
    /// Set when the machine asks to exit.
    exit: Option<i32>,
    /// In-place upgrades so far, and the Unix time of the last one.
    upgrades: (u64, Option<f64>),
    /// The exit status, whatever the machine says (a failed takeover).
    exit_code: Option<i32>,
}

impl Driver {
    /// Set up the loop around `machine` (which has already asked for
    /// generation 1).
    ///
    /// # Errors
    /// The signalfd cannot be created.
    pub fn new(machine: Machine, settings: Settings, parts: Parts) -> Result<Driver> {
        let signals = SignalFd::with_flags(
            &handled_signals(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .context("create signalfd")?;
        Ok(Driver {
            machine,
            settings,
            parts,
            report: Report {
                counts: crate::metrics::Counts {
                    start_time: crate::report::unix_now(),
                    ..Default::default()
                },
                ..Report::default()
            },
            signals,
            next_ticket: 0,
            reload_waiters: BTreeMap::new(),
            answers: Vec::new(),
            notices: Vec::new(),
            started: Instant::now(),
            progress: crate::report::Progress::default(),
            exit: None,
            upgrades: (0, None),
            exit_code: None,
        })
    }

    /// The driver an in-place upgrade carried across; answers the upgrade's
    /// requester (`refused`: a new image refused the state and came back to
    /// this one, saying why).
    ///
    /// # Errors
    /// The signalfd cannot be created.
    pub fn restore(
        machine: Machine,
        settings: Settings,
        parts: Parts,
        report: Report,
        saved: crate::state::DriverSaved,
        refused: Option<String>,
    ) -> Result<Driver> {
        let mut d = Driver::new(machine, settings, parts)?;
        d.report = report;
        d.next_ticket = saved.next_ticket;
        d.reload_waiters = saved.reload_waiters.into_iter().collect();
        d.started = saved.started;
        let took = saved.requested.elapsed();
        let now = Instant::now();
        let pid = std::process::id();
        let (ok, text) = match refused {
            None => {
                d.upgrades = (saved.upgrades, Some(saved.upgraded_at));
                let text = format!(
                    "upgraded in place from supervisor {} to {} (pid {pid}) in {}",
                    saved.from_version,
                    crate::upgrade::version(),
                    hot_supervisor::duration::human(took)
                );
                log::info!("{text}");
                (true, text)
            }
            Some(why) => {
                d.upgrades = (saved.upgrades.saturating_sub(1), None);
                let text = format!(
                    "the new image refused the state ({why}); supervisor {} (pid {pid}) carries on",
                    crate::upgrade::version()
                );
                log::error!("upgrade failed: {text}");
                (false, text)
            }
        };
        if let Some(id) = saved.upgrade_waiter {
            d.parts.control.answer(id, ok, &text, now);
        }
        // A probe in flight was cut by the exec: start it again, for every
        // worker that still waits to be verified.
        for g in d.machine.generations_with_starting_workers() {
            d.probe(g, &d.machine.starting_workers(g), now);
        }
        Ok(d)
    }

    /// Say `hint` after "was not ready within ..." (the likely cause).
    pub fn not_ready_hint(&mut self, hint: &str) {
        self.report.not_ready_hint = Some(hint.to_string());
    }

    /// Run until the machine says exit; returns the exit status.
    ///
    /// # Errors
    /// Only failures of the supervisor itself (poll, signalfd): a child's
    /// failures are inputs, never errors.
    pub fn run(mut self) -> Result<i32> {
        self.execute();
        loop {
            // Not while a worker's exec status is awaited: the next image
            // could not read it (it comes within the bound).
            if let crate::handoff::Handoff::ExecDue { waiter, requested } = self.parts.handoff
                && self.exit.is_none()
                && !self.parts.children.exec_pending()
            {
                self.parts.handoff = crate::handoff::Handoff::Idle;
                self.exec_upgrade(waiter, requested);
            }
            if let Some(code) = self.exit {
                let mut r = Record::new(crate::report::unix_now(), Kind::Exit);
                r.status = Some(format!("exit status {code}"));
                self.parts.control.publish(&r);
                self.parts.control.end_streams();
                self.parts.children.kill_orphans();
                self.parts.control.answer_stop(code, Instant::now());
                return Ok(code);
            }
            // The next generation's sockets, made while nothing starts (off
            // a reload's critical path), a batch a turn; more to make:
            // poll without waiting.
            let more = !self.machine.stopping()
                && self.machine.starting().is_none()
                && self
                    .parts
                    .steering
                    .replenish(RESERVE_BATCH, &mut self.notices);
            self.log_notices();
            let woken = self.wait(more)?;
            // A listening socket that a server shut down has left its group
            // already: the bookkeeping follows before anything else changes
            // the group (the server's exit, reaped below, would).
            let (hangups, woken): (Vec<Watch>, Vec<Watch>) = woken
                .into_iter()
                .partition(|w| matches!(w, Watch::Hangup(_)));
            for w in hangups {
                if let Watch::Hangup(raw) = w {
                    self.hangup(raw);
                }
            }
            // Signals next, whatever poll said about them: a child that
            // died just before its ready delay ran out must count as dead,
            // not ready. (The signalfd is non-blocking.)
            self.read_signals()?;
            // New control connections last, after closed ones have made room.
            let (accept, woken): (Vec<Watch>, Vec<Watch>) = woken
                .into_iter()
                .partition(|w| matches!(w, Watch::Control(control::Watch::Accept)));
            for w in woken.into_iter().chain(accept) {
                if self.exit.is_some() {
                    break;
                }
                let now = Instant::now();
                match w {
                    Watch::Signals => {}
                    Watch::Exec(g, w) => {
                        let started = self.parts.children.on_exec_status(g, w);
                        self.exec_settled(started.into_iter().collect());
                    }
                    Watch::Notify(g, w) => self.read_notify(g, w),
                    Watch::Channel(g, w) => self.serve_channel((g, w), now),
                    Watch::Control(c) => {
                        for e in self.parts.control.on_ready(c, now) {
                            self.control_event(e);
                        }
                    }
                    Watch::Manager => {
                        if let Some(m) = &mut self.parts.manager {
                            m.on_writable();
                        }
                    }
                    Watch::Probe => self.advance_probe(now),
                    Watch::Health(w) => self.serve_health(w, now),
                    Watch::Upgrade => {
                        let verdict = self.parts.handoff.check_mut().and_then(|c| c.on_readable());
                        if let Some(v) = verdict {
                            self.upgrade_checked(v);
                        }
                    }
                    Watch::Handover => self.handover_step(now),
                    Watch::Takeover => self.predecessor_step(),
                    Watch::Inotify => {
                        if let Some(w) = &mut self.parts.watcher {
                            w.on_readable(now);
                        }
                    }
                    Watch::Hangup(_) => {}
                }
            }
            if self.exit.is_none() {
                let now = Instant::now();
                let started = self.parts.children.on_exec_timeout(now);
                self.exec_settled(started);
                self.parts.control.on_timeout(now);
                self.parts.channels.on_timeout(now);
                if let Some(m) = &mut self.parts.manager {
                    m.on_timeout(now);
                }
                self.advance_probe(now);
                if let Some(h) = &mut self.parts.health {
                    h.on_timeout(now);
                }
                self.drain_progress(now);
                if let Some(v) = self.parts.handoff.check().and_then(|c| c.on_timeout(now)) {
                    self.upgrade_checked(v);
                }
                if self
                    .parts
                    .handoff
                    .source()
                    .and_then(crate::takeover::Source::deadline)
                    .is_some_and(|d| d <= now)
                {
                    self.handover_step(now);
                }
                if let Some(path) = self.parts.watcher.as_mut().and_then(|w| w.on_timeout(now)) {
                    if self.machine.stopping() {
                        log::info!(
                            "--watch: {} changed; no reload during a stop",
                            path.display()
                        );
                    } else {
                        let mut r = Record::new(crate::report::unix_now(), Kind::Watch);
                        r.path = Some(path.display().to_string());
                        self.parts.control.publish(&r);
                        let said =
                            format!("reload requested (--watch: {} changed)", path.display());
                        let source = format!("watch {}", path.display());
                        self.reload(None, source, log::Level::Info, &said);
                    }
                }
                // A probe that succeeded has fed the machine a later time
                // (`feed` reads the clock): the timeout must not go back.
                self.machine.handle_timeout(Instant::now());
                self.execute();
            }
        }
    }

    /// One `poll` over every part's fds until the earliest deadline; the
    /// watches that woke.
    fn wait(&mut self, now_only: bool) -> Result<Vec<Watch>> {
        let deadline = [
            self.machine.next_deadline(),
            self.parts.deadline(),
            self.progress.deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            _ if now_only => PollTimeout::ZERO,
            None => PollTimeout::NONE,
            Some(d) => {
                // Round up, so that we never wake just before a deadline
                // and spin.
                let left = d.saturating_duration_since(Instant::now());
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128)).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut watch = vec![Watch::Signals];
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        self.parts.interest(&mut watch, &mut fds);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        Ok(watch
            .into_iter()
            .zip(&fds)
            .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(w, _)| w)
            .collect())
    }

    /// Hand one input to the machine and carry out what it asks at once,
    /// so that the next input meets the world the machine believes in.
    fn feed(&mut self, input: Input) {
        self.machine.handle(Instant::now(), input);
        self.execute();
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
                Signal::SIGCHLD => {
                    // Workers reaped before their exec status was read are
                    // told as started (or failed) first: their spawn came
                    // before their exit.
                    let (started, exited): (Vec<_>, Vec<_>) = self
                        .parts
                        .children
                        .reap()
                        .into_iter()
                        .partition(|r| matches!(r, Reaping::Started(_)));
                    let started = started.into_iter().filter_map(|r| match r {
                        Reaping::Started(s) => Some(s),
                        Reaping::Exited(_) => None,
                    });
                    self.exec_settled(started.collect());
                    for r in exited {
                        let Reaping::Exited(r) = r else { continue };
                        match r.worker {
                            Some((g, w)) => self.feed(Input::WorkerExited(g, w, r.status)),
                            None => log::debug!("reaped orphan pid {}: {}", r.pid, r.status),
                        }
                    }
                }
                Signal::SIGHUP => {
                    let said = "reload requested (SIGHUP)";
                    self.reload(None, "SIGHUP".to_string(), log::Level::Info, said);
                }
                Signal::SIGUSR2 => {
                    log::info!("upgrade requested (SIGUSR2)");
                    self.upgrade(None, None);
                }
                s if FORWARDED.contains(&s) => match self.machine.active() {
                    Some(g) => {
                        log::debug!("forwarding {s} to {}", self.parts.children.who(g));
                        self.parts.children.forward(g, s);
                    }
                    None => log::info!("received {s}: no generation serves to forward it to"),
                },
                _ => {
                    log::info!("received {sig}: stopping");
                    self.feed(Input::Stop);
                }
            }
        }
        Ok(())
    }

    fn read_notify(&mut self, g: Generation, w: u32) {
        for msg in self.parts.children.read_notify(g, w) {
            if msg.stopping {
                log::info!("{} is stopping", self.parts.children.who_worker(g, w));
            } else if msg.ready {
                // STOPPING beats READY in one message, as systemd has it.
                self.feed(Input::WorkerReady(g, w));
            }
        }
    }

    fn advance_probe(&mut self, now: Instant) {
        let Some(prober) = &mut self.parts.prober else {
            return;
        };
        for (g, w) in prober.advance(&mut self.parts.steering, now) {
            self.feed(Input::WorkerReady(g, w));
        }
    }

    /// Probe `workers` of `g` (just spawned), when readiness is probed.
    fn probe(&mut self, g: Generation, workers: &[u32], now: Instant) {
        let Some(p) = &mut self.parts.prober else {
            return;
        };
        let pids: Vec<(u32, i32)> = workers
            .iter()
            .filter_map(|&w| Some((w, self.parts.children.worker_pid(g, w)?.as_raw())))
            .collect();
        if pids.is_empty() {
            return;
        }
        let identify = self.machine.workers_per_generation() > 1;
        if let Err(e) = p.start(g, &pids, identify, &self.parts.steering, now) {
            log::error!("{g}: cannot probe its readiness: {e:#}");
        }
    }

    /// A listening socket hung up: steering puts a new one in its place,
    /// and a generation that held only the dead one is replaced.
    fn hangup(&mut self, raw: i32) {
        let replace = self.parts.steering.on_hangup(raw, &mut self.notices);
        self.log_notices();
        if replace && !self.machine.stopping() {
            let said = "reload requested (the serving generation's socket stopped listening: a new generation gets a new one)";
            let source = "a serving socket stopped listening".to_string();
            self.reload(None, source, log::Level::Warn, said);
        }
    }

    /// While generations drain: a progress line every few seconds.
    fn drain_progress(&mut self, now: Instant) {
        let draining: Vec<(Generation, Instant)> = self
            .machine
            .phases()
            .into_iter()
            .filter(|(_, p, _)| *p == crate::machine::Phase::Draining)
            .map(|(g, _, since)| (g, since))
            .collect();
        let timeout = self.settings.drain_timeout;
        self.progress
            .tick(now, &draining, timeout, &self.parts.children);
    }

    /// Carry out the machine's actions; an `Exit` is kept in `self.exit`.
    fn execute(&mut self) {
        let steer = self.machine.quiesces();
        while let Some(action) = self.machine.poll_action() {
            let now = Instant::now();
            match action {
                Action::Spawn(g) => {
                    // The machine decides what a worker that could not be
                    // spawned means: once the start has failed, no worker
                    // of the generation is left to start. (Each is probed
                    // once it has exec'd: see `exec_settled`.)
                    for w in 0..self.machine.workers_per_generation() {
                        if self.machine.worker_starting(g, w) {
                            self.spawn(g, w);
                        }
                    }
                }
                // Each new worker is verified on its own: in a rolling
                // reload, and when one is restarted alone.
                Action::SpawnWorker(g, w) => self.spawn(g, w),
                Action::Stop(g) => self.parts.children.stop(g),
                Action::Kill(g) => self.parts.children.kill(g),
                Action::StopWorker(g, w) => self.parts.children.stop_worker(g, w),
                Action::KillWorker(g, w) => self.parts.children.kill_worker(g, w),
                Action::Split(shares) => self.parts.steering.split(&shares, &mut self.notices),
                Action::Route(g) => {
                    let began = Instant::now();
                    self.parts.steering.route(g, &mut self.notices);
                    slow("routing new connections", began);
                    let r = crate::stream::about(Kind::Switched, g, &self.parts.children);
                    self.parts.control.publish(&r);
                    if let Some(p) = &mut self.parts.prober {
                        p.cancel(g, &mut self.parts.steering);
                    }
                }
                Action::Abandon(g) => {
                    self.parts.handoff.start_failed();
                    if let Some(p) = &mut self.parts.prober {
                        if let Some(why) = p.last_failure(g) {
                            log::info!("{g}: last probe: {why}");
                        }
                        p.cancel(g, &mut self.parts.steering);
                    }
                }
                Action::Release(g) => {
                    // Before any spawn that follows it: a generation
                    // spawned by these actions (a reload queued while the
                    // first generation started, which has just failed)
                    // then takes over the routed socket and the clients
                    // queued on it, as a crash restart does, instead of a
                    // socket of its own while those are reset. (Its reaped
                    // processes are forgotten only after the actions,
                    // whose reports name their pids.)
                    self.parts.steering.release(g, &mut self.notices);
                    if let Some(p) = &mut self.parts.prober {
                        p.cancel(g, &mut self.parts.steering);
                    }
                }
                Action::MeasureQueue(g) => {
                    let n = self.parts.steering.queued(g);
                    self.machine.handle(now, Input::Queued(g, n));
                }
                Action::Report(e) => {
                    if let Event::Cut {
                        generation,
                        was,
                        max,
                    } = e
                    {
                        // Counted now, before the kill that follows.
                        let open = crate::snapshot::established(&self.parts.steering).map(|set| {
                            crate::snapshot::held(&self.parts.children, generation, &set)
                        });
                        let queued = self.parts.steering.queue_of(generation);
                        let mut r = crate::stream::of_event(&e, &self.parts.children)
                            .pop()
                            .expect("one record");
                        r.connections = Some(open.unwrap_or(0) + queued.unwrap_or(0));
                        let (children, report) = (&self.parts.children, &mut self.report);
                        crate::logging::with_fields(Some(&r), || {
                            report.cut(children, generation, was, max, open, queued);
                        });
                        self.parts.control.publish(&r);
                        continue;
                    }
                    let sig = self.parts.children.command().stop_signal;
                    let records = crate::stream::of_event(&e, &self.parts.children);
                    let (children, report) = (&self.parts.children, &mut self.report);
                    crate::logging::with_fields(records.first(), || {
                        report.event(&e, children, sig, steer);
                    });
                    for r in &records {
                        self.parts.control.publish(r);
                    }
                }
                Action::Answer(tickets, outcome) => {
                    let (ok, text) = self.report.outcome(&outcome, &self.parts.children, steer);
                    if let Some(r) = crate::stream::of_outcome(&outcome, ok, &text) {
                        self.parts.control.publish(&r);
                    }
                    if matches!(outcome, crate::machine::ReloadOutcome::Refused(_)) {
                        // A refusal has no event of its own: say it here.
                        log::warn!("reload request {tickets:?} {text}");
                    } else {
                        log::debug!("reload requests {tickets:?} answered: {text}");
                    }
                    for t in tickets {
                        if let Some(id) = self.reload_waiters.remove(&t) {
                            // Sent after the service manager has heard
                            // READY=1 (below), so that a reload command run
                            // by the manager never ends before the manager
                            // knows the reload did.
                            self.answers.push((id, ok, text.clone()));
                        }
                    }
                }
                Action::Exit(code) => {
                    let code = self.exit_code.unwrap_or(code);
                    log::info!("exiting with status {code}");
                    self.exit = Some(code);
                }
            }
        }
        self.forget_gone();
        self.log_notices();
        self.advance_takeover();
        self.drain_progress(Instant::now());
        self.tell_manager();
        let now = Instant::now();
        for (id, ok, text) in std::mem::take(&mut self.answers) {
            self.parts.control.answer(id, ok, &text, now);
        }
    }

    /// Forget the processes the machine is done with, their channels,
    /// environments and probes. (Their sockets went at the machine's
    /// `Action::Release`; those of the supervisor taken over from go once
    /// it has exited: see `predecessor_step`.)
    fn forget_gone(&mut self) {
        debug_assert!(
            self.parts.steering.held()
                || self
                    .parts
                    .steering
                    .owners()
                    .iter()
                    .all(|g| self.machine.knows(*g)),
            "a generation the machine has forgotten still owns sockets"
        );
        let machine = &self.machine;
        self.parts
            .children
            .forget_reaped(|g, w| !machine.worker_alive(g, w));
        let children = &self.parts.children;
        self.parts
            .channels
            .retain(|g, w| children.worker_pid(g, w).is_some());
        self.parts.children.forget_envs(|g| !machine.knows(g));
        if let Some(p) = &mut self.parts.prober {
            p.retain(&mut self.parts.steering, |g, w| {
                machine.worker_starting(g, w)
            });
        }
    }

    /// Fork worker `w` of `g` on `g`'s sockets (a failure is fed to the
    /// machine; its exec status comes later, see `exec_settled`).
    fn spawn(&mut self, g: Generation, w: u32) {
        let now = Instant::now();
        if self.parts.steering.held() {
            let why = "another supervisor is taking over".to_string();
            self.machine
                .handle(now, Input::WorkerSpawnFailed(g, w, why));
            return;
        }
        let steering = &mut self.parts.steering;
        let names: Vec<String> = steering.listeners().map(|(l, _)| l.name.clone()).collect();
        let keys: Vec<String> = steering
            .listeners()
            .map(|(l, _)| l.starter_key.clone())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let began = Instant::now();
        let fds = steering.sockets_for(g, &mut self.notices);
        slow("giving a generation its sockets", began);
        // Its own channel; without one (out of descriptors) it still runs.
        let pair = crate::channel::pair()
            .map_err(|e| log::warn!("{g} worker {w}: no channel: {e}"))
            .ok();
        let theirs = pair.as_ref().map(|(_, t)| std::os::fd::AsFd::as_fd(t));
        let spawned = self
            .parts
            .children
            .spawn((g, w), &fds, &names, &keys, theirs);
        if let (Ok(_), Some((ours, _))) = (&spawned, pair) {
            self.parts.channels.add((g, w), ours);
        }
        match spawned {
            // Said at once, as when the spawn waited for the exec: the log
            // and the events keep the order the requests were handled in.
            Ok(pid) => {
                let workers = self.machine.workers_per_generation() > 1;
                let mut r = Record::new(crate::report::unix_now(), Kind::Spawned);
                r.generation = Some(g.0);
                r.worker = workers.then_some(w);
                r.pid = Some(pid.as_raw());
                crate::logging::with_fields(Some(&r), || {
                    if workers {
                        log::info!("{g} worker {w} (pid {pid}) started");
                    } else {
                        log::info!("{g} (pid {pid}) started");
                    }
                });
                self.parts.control.publish(&r);
            }
            Err(e) => {
                self.machine
                    .handle(now, Input::WorkerSpawnFailed(g, w, format!("{e:#}")));
            }
        }
    }

    /// Workers whose exec status came back: each of the `started` is
    /// probed, if readiness is; then the workers that could not exec are
    /// fed to the machine, in the order their spawns would have failed had
    /// each waited for its own status.
    fn exec_settled(&mut self, started: Vec<crate::children::Started>) {
        let now = Instant::now();
        for crate::children::Started { worker: (g, w) } in started {
            // A ready delay counts from now.
            self.machine.handle(now, Input::WorkerExecuted(g, w));
            if self.machine.worker_starting(g, w) {
                self.probe(g, &[w], now);
            }
        }
        while let Some(((g, w), e)) = self.parts.children.next_failure() {
            let before = self.machine.starting_workers(g);
            self.machine.handle(
                Instant::now(),
                Input::WorkerSpawnFailed(g, w, e.to_string()),
            );
            // The workers spawned after it are, to the machine, never
            // spawned (the start has failed): so they must not be.
            for x in before {
                if x > w && !self.machine.worker_alive(g, x) {
                    self.parts.children.abandon(g, x);
                }
            }
            self.execute();
        }
    }

    fn log_notices(&mut self) {
        for n in std::mem::take(&mut self.notices) {
            n.log();
        }
    }

    /// Tell the service manager what changed.
    fn tell_manager(&mut self) {
        let stopping = self.machine.stopping() || self.exit.is_some();
        let text = self.report.status_line(
            &self.parts.children,
            stopping,
            self.machine.active(),
            self.machine.starting(),
        );
        if let Some(m) = &mut self.parts.manager {
            m.update(&View {
                serving: self.machine.active().is_some(),
                stopping,
                pending_reloads: self.machine.pending_reloads(),
                status: text,
            });
        }
    }
}
