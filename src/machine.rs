//! The supervisor's lifecycle as a pure state machine (sans-IO).
//!
//! Inputs (a child is ready, a child exited, a reload or stop was requested,
//! time passed) go in through [`Machine::handle`] and
//! [`Machine::handle_timeout`]; the actions they cause (spawn, signal,
//! report, exit) come out of [`Machine::poll_action`]. The machine makes no
//! syscalls, reads no clock and knows no pids: time is an argument and
//! children are [`Generation`]s. The driver executes the actions.
//!
//! In steer mode ([`Config::quiesce`]) a replaced generation is not stopped
//! at once: new connections go to its successor ([`Action::Route`]) and it
//! *quiesces* until the driver reports its own queue empty for a quiet
//! period (or a bound passes), and only then gets its stop signal.
//!
//! Invariants, checked after every input:
//! - at most one generation is starting and at most one is active; any number
//!   may be quiescing or draining;
//! - time never goes backwards between inputs;
//! - an active generation is only ever stopped once a newer one is ready (or
//!   the whole supervisor stops);
//! - once stopping, nothing new is spawned.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// One start of the child command, numbered from 1.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {}", self.0)
    }
}

/// Identifies one reload request, so that its requester can be answered.
pub type Ticket = u64;

/// How a child ended, as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Whether this is a clean exit (code 0).
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The status a shell would report: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// How a generation proves it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyMode {
    /// `READY=1` on the notify socket.
    Notify,
    /// Alive for this long (or `READY=1`, whichever comes first).
    Delay(Duration),
    /// A probe by the driver (or `READY=1`) says so; like `Notify`, the
    /// ready timeout bounds it.
    Probe,
}

/// What to do when the active generation exits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart unless it exited with status 0.
    OnFailure,
    /// Always restart.
    Always,
    /// Never restart: the supervisor exits with the child's status.
    Never,
}

impl RestartPolicy {
    fn restarts(self, status: ExitStatus) -> bool {
        match self {
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
            RestartPolicy::Never => false,
        }
    }
}

/// The machine's timing and policy settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// How readiness is proven.
    pub ready: ReadyMode,
    /// How long a starting generation may take to become ready.
    pub ready_timeout: Duration,
    /// How long a stopped generation may take to exit before SIGKILL.
    pub drain_timeout: Duration,
    /// Crash policy.
    pub restart: RestartPolicy,
    /// First restart delay after a crash; doubles with each further crash.
    pub backoff_initial: Duration,
    /// Upper bound of the restart delay.
    pub backoff_max: Duration,
    /// A generation active at least this long resets the backoff.
    pub healthy_after: Duration,
    /// Steer mode: quiesce replaced generations before stopping them.
    /// `None` (shared mode): stop them as soon as their successor is ready.
    pub quiesce: Option<Quiesce>,
    /// The stop signal's number: a generation that dies of it after it was
    /// sent has stopped cleanly (as systemd treats its `KillSignal=`).
    pub stop_signal: i32,
    /// At most this many starts by the crash policy (and the first start)
    /// within this interval; then the supervisor gives up and exits with
    /// the failing generation's status. `None`: no limit.
    pub start_limit: Option<StartLimit>,
    /// On a stop request, keep serving this long first (for an
    /// orchestrator to take the service out of rotation).
    pub shutdown_delay: Duration,
}

/// The start limit, as systemd's `StartLimitBurst=` and
/// `StartLimitIntervalSec=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLimit {
    /// Starts allowed within `interval`.
    pub burst: u32,
    /// The window.
    pub interval: Duration,
}

/// How a replaced generation is retired in steer mode: it keeps running,
/// with no new connection routed to it, until its own queue has been empty
/// for `quiet` (so that every connection it accepted has been read and
/// answered), or until `limit` has passed since the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiesce {
    /// How long the queue must stay empty.
    pub quiet: Duration,
    /// The longest a generation quiesces before it is stopped anyway.
    pub limit: Duration,
    /// How often the queue is measured while it is not empty.
    pub poll: Duration,
}

/// Why a generation started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Cause {
    /// The first generation.
    Initial,
    /// A reload request.
    Reload,
    /// A restart after the active generation exited.
    Restart,
}

/// Why a starting generation did not become ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartFailure {
    /// It could not be spawned (fork or exec failed).
    Spawn(String),
    /// It exited before it was ready.
    Exited(ExitStatus),
    /// It was not ready within the ready timeout.
    NotReady(Duration),
    /// The supervisor began to stop while it was starting.
    Stopping,
}

/// The answer to a reload request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new generation is ready; `replaced` is now draining.
    Ready {
        /// The new active generation.
        generation: Generation,
        /// Time from spawn to ready.
        after: Duration,
        /// The generation it replaced, if one was active.
        replaced: Option<Generation>,
    },
    /// The new generation failed; `serving` (if any) is untouched.
    Failed {
        /// The generation that failed.
        generation: Generation,
        /// Why.
        why: StartFailure,
        /// The generation still serving, if any.
        serving: Option<Generation>,
        /// Whether the supervisor is stopping (why nothing serves).
        stopping: bool,
    },
    /// The request was refused without starting anything.
    Refused(Refusal),
}

/// Why a reload request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The supervisor is stopping.
    Stopping,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopping => write!(f, "the supervisor is stopping"),
        }
    }
}

/// Something the driver should log (the machine's lifecycle events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A generation became ready (and active).
    Ready {
        /// The generation.
        generation: Generation,
        /// Time from spawn to ready.
        after: Duration,
        /// The generation it replaced.
        replaced: Option<Generation>,
    },
    /// A starting generation failed.
    StartFailed {
        /// The generation.
        generation: Generation,
        /// Why it started.
        cause: Cause,
        /// Why it failed.
        why: StartFailure,
        /// The generation still serving, if any.
        serving: Option<Generation>,
        /// When the next start is due, if nothing serves and the crash
        /// policy restarts.
        restart_in: Option<Duration>,
    },
    /// The stop signal was sent to a generation.
    Draining {
        /// The generation.
        generation: Generation,
    },
    /// A draining generation outlived the drain timeout and was killed.
    Killed {
        /// The generation.
        generation: Generation,
        /// The drain timeout it exceeded.
        after: Duration,
    },
    /// A draining generation exited.
    Drained {
        /// The generation.
        generation: Generation,
        /// Time from the stop signal to its exit.
        after: Duration,
        /// How it exited.
        status: ExitStatus,
    },
    /// The active generation exited on its own.
    Crashed {
        /// The generation.
        generation: Generation,
        /// How it exited.
        status: ExitStatus,
        /// When it will be restarted, if it will.
        restart_in: Option<Duration>,
        /// The generation starting at that moment, which takes over.
        starting: Option<Generation>,
    },
    /// A replaced generation stops only once its queue is empty.
    Quiescing {
        /// The generation.
        generation: Generation,
    },
    /// A quiescing generation's queue did not empty within the limit; it
    /// is stopped anyway.
    QuiesceTimedOut {
        /// The generation.
        generation: Generation,
        /// Connections still in its queue at the last measurement.
        queued: u64,
        /// The limit.
        after: Duration,
    },
    /// A reload was requested while a generation is starting.
    ReloadQueued {
        /// The generation currently starting.
        starting: Generation,
    },
    /// A stop was requested; everything keeps serving for this long.
    ShutdownDelay {
        /// The delay.
        delay: Duration,
    },
    /// Too many starts within the start limit's interval: giving up.
    StartLimitHit {
        /// The limit.
        limit: StartLimit,
        /// The status the supervisor exits with.
        status: ExitStatus,
    },
    /// A graceful stop began.
    Stopping,
    /// Another supervisor took over: the generations are replaced by its
    /// own, and this one exits once they are gone.
    HandedOff,
    /// A second stop request: everything is killed now.
    ForcedStop,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fork and exec this generation; report failure as
    /// [`Input::SpawnFailed`].
    Spawn(Generation),
    /// Send this generation its stop signal.
    Stop(Generation),
    /// SIGKILL this generation's whole process group.
    Kill(Generation),
    /// Send new connections to this generation's sockets (steer mode; a
    /// no-op for shared listeners).
    Route(Generation),
    /// Measure how many connections wait in this quiescing generation's
    /// own queues; answer with [`Input::Queued`].
    MeasureQueue(Generation),
    /// Log this event.
    Report(Event),
    /// Answer these reload requests.
    Answer(Vec<Ticket>, ReloadOutcome),
    /// Exit the supervisor with this status.
    Exit(i32),
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The generation sent `READY=1`.
    Ready(Generation),
    /// The generation was reaped.
    Exited(Generation, ExitStatus),
    /// The generation could not be spawned (no process exists for it).
    SpawnFailed(Generation, String),
    /// Reload requested (SIGHUP or a control request).
    Reload(Ticket),
    /// Stop requested (SIGTERM, SIGINT); a second one forces.
    Stop,
    /// The answer to [`Action::MeasureQueue`]: connections waiting.
    Queued(Generation, u64),
    /// Another supervisor took over and serves: every generation goes as a
    /// replaced one does (quiesce, stop, drain), then exit with status 0.
    HandOff,
}

/// How a generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    /// It was reaped with this status.
    Exited(ExitStatus),
    /// It could not be spawned (no process ever existed).
    SpawnFailed(String),
}

/// Which deadline of a generation passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// The ready timeout (or the ready delay).
    Ready,
    /// The drain timeout.
    Drain,
    /// A quiescing generation's next queue measurement.
    Measure,
}

/// Whether, and how, the supervisor is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Stopping {
    /// Not stopping.
    No,
    /// A stop was requested: everything serves until then (the shutdown
    /// delay), then the graceful stop begins.
    Delay(#[serde(with = "crate::upgrade::mono")] Instant),
    /// Stop signals sent; waiting for the drains.
    Graceful,
    /// Another supervisor took over: the generations go as replaced ones
    /// (quiescing first); a stop request makes it [`Stopping::Graceful`].
    HandedOff,
    /// A second stop request: everything was killed.
    Forced,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum State {
    Starting {
        #[serde(with = "crate::upgrade::mono")]
        spawned: Instant,
        #[serde(with = "crate::upgrade::mono")]
        deadline: Instant,
        cause: Cause,
        tickets: Vec<Ticket>,
    },
    Active {
        #[serde(with = "crate::upgrade::mono")]
        since: Instant,
    },
    Quiescing {
        #[serde(with = "crate::upgrade::mono")]
        since: Instant,
        /// When the queue is measured next.
        #[serde(with = "crate::upgrade::mono")]
        check_at: Instant,
        /// Since when the queue has been seen empty.
        #[serde(with = "crate::upgrade::mono::opt")]
        empty_since: Option<Instant>,
        /// The last measurement.
        queued: u64,
    },
    Draining {
        #[serde(with = "crate::upgrade::mono")]
        since: Instant,
        /// The SIGKILL deadline; `None` once SIGKILL was sent.
        #[serde(with = "crate::upgrade::mono::opt")]
        deadline: Option<Instant>,
    },
}

/// The lifecycle state machine. See the module documentation.
#[derive(Debug)]
pub struct Machine {
    cfg: Config,
    generations: BTreeMap<Generation, State>,
    last: u64,
    /// Reload requests waiting for the current start to end (at most one
    /// queued reload, answering all of them).
    queued: Option<Vec<Ticket>>,
    restart_at: Option<Instant>,
    /// Consecutive failures since the last healthy run, for the backoff.
    failures: u32,
    stopping: Stopping,
    /// The generation whose exit status becomes the supervisor's.
    exit_with: Option<Generation>,
    /// The status the supervisor exits with, once known.
    exit_status: Option<ExitStatus>,
    /// Status of the last generation that ended while serving or starting.
    last_status: Option<ExitStatus>,
    done: bool,
    /// Generations started by the crash policy so far.
    restarts: u64,
    /// The latest time seen (time must never go backwards).
    now: Instant,
    /// When the recent starts counted by the start limit happened.
    starts: VecDeque<Instant>,
    actions: VecDeque<Action>,
}

/// The machine's state as carried across an in-place upgrade (everything
/// but the settings, which the new image reads from its command line, and
/// the actions, which are all carried out before an upgrade).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    generations: Vec<(Generation, State)>,
    last: u64,
    queued: Option<Vec<Ticket>>,
    #[serde(with = "crate::upgrade::mono::opt")]
    restart_at: Option<Instant>,
    failures: u32,
    stopping: Stopping,
    exit_with: Option<Generation>,
    exit_status: Option<ExitStatus>,
    last_status: Option<ExitStatus>,
    done: bool,
    restarts: u64,
    #[serde(with = "crate::upgrade::mono")]
    now: Instant,
    #[serde(with = "crate::upgrade::mono::seq")]
    starts: VecDeque<Instant>,
}

/// Where a generation is in its life (for status reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started, not yet ready.
    Starting,
    /// Serving.
    Active,
    /// Replaced; no new connections; waiting for its queue to empty.
    Quiescing,
    /// Sent its stop signal; finishing its work.
    Draining,
}

impl Phase {
    /// `starting`, `active` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Active => "active",
            Phase::Quiescing => "quiescing",
            Phase::Draining => "draining",
        }
    }
}

impl Machine {
    /// A machine that starts generation 1 at once.
    pub fn new(cfg: Config, now: Instant) -> Machine {
        let mut m = Machine {
            cfg,
            generations: BTreeMap::new(),
            last: 0,
            queued: None,
            restart_at: None,
            failures: 0,
            stopping: Stopping::No,
            exit_with: None,
            exit_status: None,
            last_status: None,
            done: false,
            restarts: 0,
            now,
            starts: VecDeque::new(),
            actions: VecDeque::new(),
        };
        m.spawn(now, Cause::Initial, Vec::new());
        m
    }

    /// The state to carry across an in-place upgrade.
    ///
    /// # Panics
    /// In debug builds, if actions are still waiting to be carried out.
    pub fn save(&self) -> Saved {
        debug_assert!(self.actions.is_empty(), "saved with actions pending");
        Saved {
            generations: self
                .generations
                .iter()
                .map(|(g, s)| (*g, s.clone()))
                .collect(),
            last: self.last,
            queued: self.queued.clone(),
            restart_at: self.restart_at,
            failures: self.failures,
            stopping: self.stopping,
            exit_with: self.exit_with,
            exit_status: self.exit_status,
            last_status: self.last_status,
            done: self.done,
            restarts: self.restarts,
            now: self.now,
            starts: self.starts.clone(),
        }
    }

    /// The machine an upgrade carried across, with this image's settings.
    /// Its time is `now` at the earliest (the clock goes on through exec,
    /// but the carried instants are approximations).
    pub fn restore(cfg: Config, saved: Saved, now: Instant) -> Machine {
        Machine {
            cfg,
            generations: saved.generations.into_iter().collect(),
            last: saved.last,
            queued: saved.queued,
            restart_at: saved.restart_at,
            failures: saved.failures,
            stopping: saved.stopping,
            exit_with: saved.exit_with,
            exit_status: saved.exit_status,
            last_status: saved.last_status,
            done: saved.done,
            restarts: saved.restarts,
            now: saved.now.max(now),
            starts: saved.starts,
            actions: VecDeque::new(),
        }
    }

    /// What to do when the active generation exits on its own, from now.
    pub fn set_restart(&mut self, policy: RestartPolicy) {
        self.cfg.restart = policy;
    }

    /// The next action for the driver, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] must be called next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timers = self.generations.values().filter_map(|s| match s {
            State::Starting { deadline, .. } => Some(*deadline),
            State::Draining { deadline, .. } => *deadline,
            State::Quiescing { check_at, .. } => Some(*check_at),
            State::Active { .. } => None,
        });
        let delay = match self.stopping {
            Stopping::Delay(until) => Some(until),
            _ => None,
        };
        timers.chain(self.restart_at).chain(delay).min()
    }

    /// The generation currently serving, if any.
    pub fn active(&self) -> Option<Generation> {
        self.find(|s| matches!(s, State::Active { .. }))
    }

    /// The generation currently starting, if any.
    pub fn starting(&self) -> Option<Generation> {
        self.find(|s| matches!(s, State::Starting { .. }))
    }

    /// Every generation with its phase and when it entered that phase.
    pub fn phases(&self) -> Vec<(Generation, Phase, Instant)> {
        self.generations
            .iter()
            .map(|(g, s)| match s {
                State::Starting { spawned, .. } => (*g, Phase::Starting, *spawned),
                State::Active { since } => (*g, Phase::Active, *since),
                State::Quiescing { since, .. } => (*g, Phase::Quiescing, *since),
                State::Draining { since, .. } => (*g, Phase::Draining, *since),
            })
            .collect()
    }

    /// How many generations the crash policy has started.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Whether the machine still tracks generation `g` (its exit has not
    /// been handled yet).
    pub fn knows(&self, g: Generation) -> bool {
        self.generations.contains_key(&g)
    }

    /// Whether replaced generations quiesce before they are stopped
    /// (steer mode).
    pub fn quiesces(&self) -> bool {
        self.cfg.quiesce.is_some()
    }

    /// Whether a stop has been requested (the shutdown delay included).
    pub fn stopping(&self) -> bool {
        self.stopping != Stopping::No
    }

    /// While the shutdown delay runs: when it ends.
    pub fn shutdown_delay_until(&self) -> Option<Instant> {
        match self.stopping {
            Stopping::Delay(until) => Some(until),
            _ => None,
        }
    }

    /// Reload requests not answered yet (carried by the starting
    /// generation or queued behind it).
    pub fn pending_reloads(&self) -> usize {
        let carried: usize = self
            .generations
            .values()
            .map(|s| match s {
                State::Starting { tickets, .. } => tickets.len(),
                _ => 0,
            })
            .sum();
        carried + self.queued.as_ref().map_or(0, Vec::len)
    }

    /// Time must never go backwards: a driver bug, caught in debug builds;
    /// in release builds an earlier time is treated as the latest seen.
    fn tick(&mut self, now: Instant) -> Instant {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
        self.now
    }

    /// Whether the machine has asked the driver to exit.
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.done {
            return;
        }
        let now = self.tick(now);
        match input {
            Input::Ready(g) => self.handle_ready(now, g),
            Input::Exited(g, status) => self.handle_exit(now, g, Ended::Exited(status)),
            Input::SpawnFailed(g, why) => self.handle_exit(now, g, Ended::SpawnFailed(why)),
            Input::Reload(t) => self.handle_reload(now, t),
            Input::Stop => self.handle_stop(now),
            Input::Queued(g, n) => self.handle_queued(now, g, n),
            Input::HandOff => self.handle_hand_off(now),
        }
        self.check();
    }

    /// Act on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done {
            return;
        }
        let now = self.tick(now);
        let due: Vec<(Generation, Due)> = self
            .generations
            .iter()
            .filter_map(|(g, s)| match s {
                State::Starting { deadline, .. } if *deadline <= now => Some((*g, Due::Ready)),
                State::Draining {
                    deadline: Some(d), ..
                } if *d <= now => Some((*g, Due::Drain)),
                State::Quiescing { check_at, .. } if *check_at <= now => Some((*g, Due::Measure)),
                _ => None,
            })
            .collect();
        for (g, due) in due {
            match due {
                Due::Drain => {
                    // Re-check: an earlier entry of `due` may have changed it.
                    let Some(State::Draining { deadline, .. }) = self.generations.get_mut(&g)
                    else {
                        continue;
                    };
                    if deadline.take().is_none() {
                        continue;
                    }
                    self.push(Action::Kill(g));
                    self.report(Event::Killed {
                        generation: g,
                        after: self.cfg.drain_timeout,
                    });
                }
                Due::Ready => {
                    if let ReadyMode::Delay(_) = self.cfg.ready {
                        self.handle_ready(now, g);
                    } else {
                        let why = StartFailure::NotReady(self.cfg.ready_timeout);
                        self.fail_start(now, g, why, true);
                    }
                }
                Due::Measure => self.measure(now, g),
            }
        }
        if let Stopping::Delay(until) = self.stopping
            && until <= now
        {
            self.begin_stop(now, self.stop_status());
        }
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            if !self.stopping() && self.starting().is_none() {
                let tickets = self.queued.take().unwrap_or_default();
                let cause = if tickets.is_empty() {
                    self.restarts += 1;
                    Cause::Restart
                } else {
                    Cause::Reload
                };
                self.spawn(now, cause, tickets);
            }
        }
        self.check();
    }

    fn handle_ready(&mut self, now: Instant, g: Generation) {
        let Some(State::Starting {
            spawned, tickets, ..
        }) = self.generations.get(&g)
        else {
            // A duplicate READY=1, or one from a generation already being
            // stopped: neither changes who serves.
            return;
        };
        let (after, tickets) = (now.saturating_duration_since(*spawned), tickets.clone());
        let replaced = self.active();
        // A generation that served long enough before being replaced ends
        // any crash streak, as if it had exited after a healthy run.
        if let Some(State::Active { since }) = replaced.and_then(|r| self.generations.get(&r))
            && now.saturating_duration_since(*since) >= self.cfg.healthy_after
        {
            self.failures = 0;
        }
        self.generations.insert(g, State::Active { since: now });
        self.push(Action::Route(g));
        self.report(Event::Ready {
            generation: g,
            after,
            replaced,
        });
        if let Some(old) = replaced {
            self.retire(now, old);
        }
        if !tickets.is_empty() {
            self.push(Action::Answer(
                tickets,
                ReloadOutcome::Ready {
                    generation: g,
                    after,
                    replaced,
                },
            ));
        }
        self.start_queued(now);
    }

    fn handle_exit(&mut self, now: Instant, g: Generation, ended: Ended) {
        // A generation that could not be spawned counts as exit status 127,
        // as a shell reports a command it cannot run.
        let status = match ended {
            Ended::Exited(s) => s,
            Ended::SpawnFailed(_) => ExitStatus::Code(127),
        };
        // Killed by the stop signal we sent it: a clean stop (uvicorn and
        // Puma drain, then re-raise SIGTERM).
        let stopped_cleanly = status == ExitStatus::Signal(self.cfg.stop_signal)
            && matches!(self.generations.get(&g), Some(State::Draining { .. }));
        if self.exit_with == Some(g) {
            self.exit_status = Some(if stopped_cleanly {
                ExitStatus::Code(0)
            } else {
                status
            });
        }
        match self.generations.get(&g) {
            None => return,
            Some(State::Starting { .. }) => {
                let why = match ended {
                    Ended::SpawnFailed(e) => StartFailure::Spawn(e),
                    Ended::Exited(s) => StartFailure::Exited(s),
                };
                self.fail_start(now, g, why, false);
            }
            Some(State::Active { since }) => {
                let since = *since;
                self.generations.remove(&g);
                self.last_status = Some(status);
                if now.saturating_duration_since(since) >= self.cfg.healthy_after {
                    self.failures = 0;
                }
                let starting = self.starting();
                let restart = self.cfg.restart.restarts(status)
                    && !self.stopping()
                    && (starting.is_some() || self.may_start(now, status));
                // A generation already starting takes over by itself.
                let restart_in = if restart && starting.is_none() {
                    Some(self.schedule_restart(now))
                } else {
                    None
                };
                self.report(Event::Crashed {
                    generation: g,
                    status,
                    restart_in,
                    starting,
                });
                if !restart && starting.is_none() && !self.done {
                    match self.stopping {
                        Stopping::Graceful | Stopping::Forced | Stopping::HandedOff => {}
                        _ => self.begin_stop(now, Some(status)),
                    }
                }
            }
            Some(State::Draining { since, .. } | State::Quiescing { since, .. }) => {
                let since = *since;
                self.generations.remove(&g);
                self.report(Event::Drained {
                    generation: g,
                    after: now.saturating_duration_since(since),
                    status,
                });
            }
        }
        self.maybe_exit();
    }

    /// A measurement of a quiescing generation's queue.
    fn handle_queued(&mut self, now: Instant, g: Generation, n: u64) {
        let Some(q) = self.cfg.quiesce else {
            return;
        };
        let Some(State::Quiescing {
            check_at,
            empty_since,
            queued,
            ..
        }) = self.generations.get_mut(&g)
        else {
            return;
        };
        *queued = n;
        if n > 0 {
            *empty_since = None;
            *check_at = now + q.poll;
            return;
        }
        let since = *empty_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= q.quiet {
            self.drain(now, g);
        } else {
            // Measure again once the quiet period is over: a connection
            // whose handshake was under way at the switch may still land.
            *check_at = since + q.quiet;
        }
    }

    /// A quiescing generation's measurement is due: ask for it, or stop
    /// the generation if the limit has passed.
    fn measure(&mut self, now: Instant, g: Generation) {
        let Some(q) = self.cfg.quiesce else {
            return;
        };
        let Some(State::Quiescing {
            since,
            check_at,
            queued,
            ..
        }) = self.generations.get_mut(&g)
        else {
            return;
        };
        if now.saturating_duration_since(*since) >= q.limit {
            let queued = *queued;
            self.report(Event::QuiesceTimedOut {
                generation: g,
                queued,
                after: q.limit,
            });
            self.drain(now, g);
            return;
        }
        // Until the answer comes, the limit is the next deadline.
        *check_at = *since + q.limit;
        self.push(Action::MeasureQueue(g));
    }

    fn handle_reload(&mut self, now: Instant, ticket: Ticket) {
        if self.stopping() {
            self.push(Action::Answer(
                vec![ticket],
                ReloadOutcome::Refused(Refusal::Stopping),
            ));
        } else if let Some(starting) = self.starting() {
            self.queued.get_or_insert_with(Vec::new).push(ticket);
            self.report(Event::ReloadQueued { starting });
        } else {
            // A reload during a restart backoff starts at once.
            self.restart_at = None;
            self.spawn(now, Cause::Reload, vec![ticket]);
        }
    }

    /// The exit status of a stop begun now: the serving generation's (once
    /// it exits), else the starting one's, else that of the last one that
    /// ended.
    fn stop_status(&self) -> Option<ExitStatus> {
        if self.active().is_some() || self.starting().is_some() {
            None
        } else {
            Some(self.last_status.unwrap_or(ExitStatus::Code(0)))
        }
    }

    fn handle_stop(&mut self, now: Instant) {
        match self.stopping {
            Stopping::No if !self.cfg.shutdown_delay.is_zero() && self.active().is_some() => {
                // Keep serving while the orchestrator takes us out of
                // rotation; a reload queued meanwhile will not happen.
                self.stopping = Stopping::Delay(now + self.cfg.shutdown_delay);
                self.restart_at = None;
                if let Some(tickets) = self.queued.take() {
                    self.push(Action::Answer(
                        tickets,
                        ReloadOutcome::Refused(Refusal::Stopping),
                    ));
                }
                self.report(Event::ShutdownDelay {
                    delay: self.cfg.shutdown_delay,
                });
            }
            Stopping::No | Stopping::Delay(_) => {
                // A second request during the delay cuts it short.
                self.begin_stop(now, self.stop_status());
            }
            Stopping::HandedOff => {
                // The new supervisor serves: stop what is left now, still
                // with status 0.
                self.begin_stop(now, Some(ExitStatus::Code(0)));
            }
            Stopping::Graceful => {
                self.stopping = Stopping::Forced;
                self.report(Event::ForcedStop);
                let gens: Vec<Generation> = self.generations.keys().copied().collect();
                for g in gens {
                    if let Some(State::Draining { deadline, .. }) = self.generations.get_mut(&g)
                        && deadline.take().is_some()
                    {
                        self.actions.push_back(Action::Kill(g));
                    }
                }
            }
            Stopping::Forced => {}
        }
    }

    fn handle_hand_off(&mut self, now: Instant) {
        if self.stopping() {
            return;
        }
        self.stopping = Stopping::HandedOff;
        self.restart_at = None;
        self.report(Event::HandedOff);
        if let Some(tickets) = self.queued.take() {
            self.push(Action::Answer(
                tickets,
                ReloadOutcome::Refused(Refusal::Stopping),
            ));
        }
        // The generations served well: whatever they exit with, the
        // supervisor that hands over exits 0.
        self.exit_status = Some(ExitStatus::Code(0));
        let gens: Vec<Generation> = self.generations.keys().copied().collect();
        for g in gens {
            match self.generations.get(&g) {
                Some(State::Starting { .. }) => {
                    self.fail_start(now, g, StartFailure::Stopping, true);
                }
                Some(State::Active { .. }) => self.retire(now, g),
                _ => {}
            }
        }
        self.maybe_exit();
    }

    /// Stop everything; exit with `status`, or with the active generation's
    /// status once it has exited.
    fn begin_stop(&mut self, now: Instant, status: Option<ExitStatus>) {
        self.stopping = Stopping::Graceful;
        self.restart_at = None;
        self.report(Event::Stopping);
        if let Some(tickets) = self.queued.take() {
            self.push(Action::Answer(
                tickets,
                ReloadOutcome::Refused(Refusal::Stopping),
            ));
        }
        match status {
            Some(s) => self.exit_status = Some(s),
            None => self.exit_with = self.active().or(self.starting()),
        }
        let gens: Vec<Generation> = self.generations.keys().copied().collect();
        for g in gens {
            match self.generations.get(&g) {
                Some(State::Starting { .. }) => {
                    self.fail_start(now, g, StartFailure::Stopping, true);
                }
                Some(State::Active { .. } | State::Quiescing { .. }) => self.drain(now, g),
                _ => {}
            }
        }
        self.maybe_exit();
    }

    fn maybe_exit(&mut self) {
        if self.stopping() && self.generations.is_empty() && !self.done {
            self.done = true;
            let code = self.exit_status.map_or(0, ExitStatus::shell_code);
            self.push(Action::Exit(code));
        }
    }

    /// A starting generation failed: report it, answer its requesters, stop
    /// it if it still runs, then restart, start the queued reload or stop
    /// the supervisor as the crash policy says.
    fn fail_start(&mut self, now: Instant, g: Generation, why: StartFailure, still_running: bool) {
        let Some(State::Starting { cause, tickets, .. }) = self.generations.remove(&g) else {
            return;
        };
        let serving = self.active();
        let mut restart_in = None;
        let mut stop_with = None;
        if !self.stopping()
            && cause == Cause::Initial
            && let StartFailure::Spawn(_) = why
        {
            // The command cannot even be executed (ENOEXEC, EACCES, a bad
            // interpreter...): retrying the first start would only loop.
            stop_with = Some(ExitStatus::Code(127));
        } else if !self.stopping() && serving.is_none() && self.queued.is_none() {
            // Nothing serves: the crash policy decides, as if the service
            // had exited.
            let status = match &why {
                StartFailure::Exited(s) => *s,
                StartFailure::Spawn(_) => ExitStatus::Code(127),
                StartFailure::NotReady(_) | StartFailure::Stopping => ExitStatus::Code(1),
            };
            self.last_status = Some(status);
            if self.cfg.restart.restarts(status) && self.may_start(now, status) {
                restart_in = Some(self.schedule_restart(now));
            } else {
                stop_with = Some(status);
            }
        }
        self.report(Event::StartFailed {
            generation: g,
            cause,
            why: why.clone(),
            serving,
            restart_in,
        });
        if !tickets.is_empty() {
            self.push(Action::Answer(
                tickets,
                ReloadOutcome::Failed {
                    generation: g,
                    why,
                    serving,
                    stopping: self.stopping(),
                },
            ));
        }
        if still_running {
            self.drain(now, g);
        }
        if let Some(status) = stop_with {
            self.begin_stop(now, Some(status));
        } else {
            self.start_queued(now);
        }
    }

    fn start_queued(&mut self, now: Instant) {
        if !self.stopping()
            && self.starting().is_none()
            && let Some(tickets) = self.queued.take()
        {
            self.restart_at = None;
            self.spawn(now, Cause::Reload, tickets);
        }
    }

    fn schedule_restart(&mut self, now: Instant) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        let delay = self
            .cfg
            .backoff_initial
            .saturating_mul(factor)
            .min(self.cfg.backoff_max);
        self.failures = self.failures.saturating_add(1);
        self.restart_at = Some(now + delay);
        delay
    }

    /// Whether the start limit allows one more start by the crash policy;
    /// if not, say so (the caller then stops with `status`).
    fn may_start(&mut self, now: Instant, status: ExitStatus) -> bool {
        let Some(limit) = self.cfg.start_limit else {
            return true;
        };
        while self
            .starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= limit.interval)
        {
            self.starts.pop_front();
        }
        if self.starts.len() < limit.burst as usize {
            return true;
        }
        self.report(Event::StartLimitHit { limit, status });
        false
    }

    fn spawn(&mut self, now: Instant, cause: Cause, tickets: Vec<Ticket>) {
        if cause != Cause::Reload {
            self.starts.push_back(now);
        }
        self.last += 1;
        let g = Generation(self.last);
        let wait = match self.cfg.ready {
            ReadyMode::Notify | ReadyMode::Probe => self.cfg.ready_timeout,
            ReadyMode::Delay(d) => d,
        };
        self.generations.insert(
            g,
            State::Starting {
                spawned: now,
                deadline: now + wait,
                cause,
                tickets,
            },
        );
        self.push(Action::Spawn(g));
    }

    /// A replaced generation: in steer mode it quiesces first (its queue
    /// is measured at once), in shared mode it drains at once.
    fn retire(&mut self, now: Instant, g: Generation) {
        if self.cfg.quiesce.is_none() {
            self.drain(now, g);
            return;
        }
        self.generations.insert(
            g,
            State::Quiescing {
                since: now,
                check_at: now,
                empty_since: None,
                queued: 0,
            },
        );
        self.report(Event::Quiescing { generation: g });
        self.measure(now, g);
    }

    /// Send the stop signal and start the drain clock.
    fn drain(&mut self, now: Instant, g: Generation) {
        self.generations.insert(
            g,
            State::Draining {
                since: now,
                deadline: Some(now + self.cfg.drain_timeout),
            },
        );
        self.push(Action::Stop(g));
        self.report(Event::Draining { generation: g });
    }

    fn find(&self, f: impl Fn(&State) -> bool) -> Option<Generation> {
        self.generations.iter().find(|(_, s)| f(s)).map(|(g, _)| *g)
    }

    fn report(&mut self, e: Event) {
        self.actions.push_back(Action::Report(e));
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn check(&self) {
        let count = |f: fn(&State) -> bool| self.generations.values().filter(|s| f(s)).count();
        debug_assert!(count(|s| matches!(s, State::Starting { .. })) <= 1);
        debug_assert!(count(|s| matches!(s, State::Active { .. })) <= 1);
        if matches!(self.stopping, Stopping::Graceful | Stopping::Forced) {
            debug_assert!(count(|s| !matches!(s, State::Draining { .. })) == 0);
        }
        if self.stopping == Stopping::HandedOff {
            debug_assert!(
                count(|s| matches!(s, State::Starting { .. } | State::Active { .. })) == 0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: Generation = Generation(1);
    const G2: Generation = Generation(2);
    const G3: Generation = Generation(3);

    fn cfg(ready: ReadyMode, restart: RestartPolicy) -> Config {
        Config {
            ready,
            ready_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(3),
            restart,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            healthy_after: Duration::from_secs(10),
            quiesce: None,
            stop_signal: 15,
            start_limit: None,
            shutdown_delay: Duration::ZERO,
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// The actions, less `Route` (a no-op in shared mode; the steer tests
    /// below look at every action).
    fn actions(m: &mut Machine) -> Vec<Action> {
        all_actions(m)
            .into_iter()
            .filter(|a| !matches!(a, Action::Route(_)))
            .collect()
    }

    fn all_actions(m: &mut Machine) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Signal {
        Stop,
        Kill,
    }

    fn signals(acts: &[Action]) -> Vec<(Generation, Signal)> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Stop(g) => Some((*g, Signal::Stop)),
                Action::Kill(g) => Some((*g, Signal::Kill)),
                _ => None,
            })
            .collect()
    }

    fn spawns(acts: &[Action]) -> Vec<Generation> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Spawn(g) => Some(*g),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_upgrade_carries_generations_deadlines_and_tickets() {
        // Generation 1 draining, 2 active, 3 starting with a ticket, a
        // reload queued behind it.
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 200), Input::Ready(G2));
        m.handle(ms(t0, 300), Input::Reload(2));
        m.handle(ms(t0, 350), Input::Reload(3));
        let _ = all_actions(&mut m);
        let text = serde_json::to_string(&m.save()).unwrap();
        let saved: Saved = serde_json::from_str(&text).unwrap();
        let mut back = Machine::restore(
            cfg(ReadyMode::Notify, RestartPolicy::OnFailure),
            saved,
            ms(t0, 400),
        );
        assert_eq!(
            back.phases()
                .iter()
                .map(|(g, p, _)| (*g, *p))
                .collect::<Vec<_>>(),
            m.phases()
                .iter()
                .map(|(g, p, _)| (*g, *p))
                .collect::<Vec<_>>()
        );
        assert_eq!(back.pending_reloads(), m.pending_reloads());
        let (a, b) = (m.next_deadline().unwrap(), back.next_deadline().unwrap());
        let gap = if a > b { a - b } else { b - a };
        assert!(gap < Duration::from_millis(5), "deadline moved by {gap:?}");
        // The restored machine finishes what the old one began: the drain
        // deadline kills generation 1, the start answers ticket 2, and the
        // reload queued behind it (ticket 3) starts generation 4.
        back.handle_timeout(ms(t0, 200 + 3000 + 1));
        assert!(signals(&all_actions(&mut back)).contains(&(G1, Signal::Kill)));
        back.handle(ms(t0, 3300), Input::Ready(G3));
        let acts = all_actions(&mut back);
        let answered: Vec<Vec<Ticket>> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Answer(t, _) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(answered, vec![vec![2]]);
        assert_eq!(spawns(&acts), vec![Generation(4)]);
    }

    #[test]
    fn a_hand_off_quiesces_the_active_generation_then_exits_0() {
        let (mut m, t0) = serving(RestartPolicy::Always);
        m.cfg.quiesce = Some(Quiesce {
            quiet: Duration::from_millis(100),
            limit: Duration::from_secs(5),
            poll: Duration::from_millis(10),
        });
        m.handle(ms(t0, 100), Input::HandOff);
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Report(Event::HandedOff)), "{acts:?}");
        assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
        assert!(
            signals(&acts).is_empty(),
            "stopped before its queue emptied"
        );
        assert!(m.stopping());
        // Reloads are refused from now on.
        m.handle(ms(t0, 110), Input::Reload(7));
        assert!(all_actions(&mut m).contains(&Action::Answer(
            vec![7],
            ReloadOutcome::Refused(Refusal::Stopping)
        )));
        // Queue empty for the quiet period: stop signal, then the exit.
        m.handle(ms(t0, 120), Input::Queued(G1, 0));
        m.handle_timeout(ms(t0, 220));
        m.handle(ms(t0, 221), Input::Queued(G1, 0));
        assert_eq!(signals(&all_actions(&mut m)), vec![(G1, Signal::Stop)]);
        // A generation that dies of something else still ends in status 0,
        // and is not restarted.
        m.handle(ms(t0, 300), Input::Exited(G1, ExitStatus::Code(1)));
        assert_eq!(all_actions(&mut m).last(), Some(&Action::Exit(0)));
        assert!(m.is_done());
    }

    /// A machine with generation 1 active (notify mode).
    fn serving(restart: RestartPolicy) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(ReadyMode::Notify, restart), t0);
        assert_eq!(actions(&mut m), vec![Action::Spawn(G1)]);
        m.handle(ms(t0, 50), Input::Ready(G1));
        let acts = actions(&mut m);
        assert_eq!(
            acts,
            vec![Action::Report(Event::Ready {
                generation: G1,
                after: Duration::from_millis(50),
                replaced: None
            })]
        );
        assert_eq!(m.active(), Some(G1));
        (m, t0)
    }

    #[test]
    fn idle_active_generation_has_no_deadline() {
        let (m, _) = serving(RestartPolicy::OnFailure);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn delay_mode_is_ready_at_its_deadline() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            cfg(
                ReadyMode::Delay(Duration::from_secs(1)),
                RestartPolicy::OnFailure,
            ),
            t0,
        );
        assert_eq!(actions(&mut m), vec![Action::Spawn(G1)]);
        assert_eq!(m.next_deadline(), Some(ms(t0, 1000)));
        m.handle_timeout(ms(t0, 999));
        assert!(actions(&mut m).is_empty());
        m.handle_timeout(ms(t0, 1000));
        assert_eq!(m.active(), Some(G1));
        // READY=1 before the delay also counts.
        m.handle(ms(t0, 1100), Input::Reload(1));
        let _ = actions(&mut m);
        m.handle(ms(t0, 1200), Input::Ready(G2));
        assert_eq!(m.active(), Some(G2));
    }

    #[test]
    fn reload_stops_the_old_generation_only_once_the_new_one_is_ready() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(7));
        assert_eq!(actions(&mut m), vec![Action::Spawn(G2)]);
        m.handle_timeout(ms(t0, 350));
        assert!(
            actions(&mut m).is_empty(),
            "nothing happens to gen 1 while gen 2 starts"
        );
        m.handle(ms(t0, 400), Input::Ready(G2));
        let acts = actions(&mut m);
        let ready = ReloadOutcome::Ready {
            generation: G2,
            after: Duration::from_millis(300),
            replaced: Some(G1),
        };
        assert_eq!(
            acts,
            vec![
                Action::Report(Event::Ready {
                    generation: G2,
                    after: Duration::from_millis(300),
                    replaced: Some(G1)
                }),
                Action::Stop(G1),
                Action::Report(Event::Draining { generation: G1 }),
                Action::Answer(vec![7], ready),
            ]
        );
        assert_eq!(m.next_deadline(), Some(ms(t0, 3400)));
        m.handle(ms(t0, 1600), Input::Exited(G1, ExitStatus::Code(0)));
        assert_eq!(
            actions(&mut m),
            vec![Action::Report(Event::Drained {
                generation: G1,
                after: Duration::from_millis(1200),
                status: ExitStatus::Code(0)
            })]
        );
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn new_generation_exiting_at_start_fails_the_reload_and_keeps_the_old() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        let _ = actions(&mut m);
        m.handle(ms(t0, 150), Input::Exited(G2, ExitStatus::Code(1)));
        let acts = actions(&mut m);
        assert!(signals(&acts).is_empty(), "{acts:?}");
        assert!(acts.contains(&Action::Answer(
            vec![1],
            ReloadOutcome::Failed {
                generation: G2,
                why: StartFailure::Exited(ExitStatus::Code(1)),
                serving: Some(G1),
                stopping: false,
            }
        )));
        assert_eq!(m.active(), Some(G1));
        assert_eq!(m.next_deadline(), None);
        // A spawn failure reads the same way.
        m.handle(ms(t0, 200), Input::Reload(2));
        let _ = actions(&mut m);
        m.handle(ms(t0, 201), Input::SpawnFailed(G3, "exec x: ENOENT".into()));
        let acts = actions(&mut m);
        assert!(signals(&acts).is_empty());
        assert_eq!(m.active(), Some(G1));
    }

    #[test]
    fn new_generation_never_ready_is_stopped_then_killed() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        let _ = actions(&mut m);
        assert_eq!(m.next_deadline(), Some(ms(t0, 5100)));
        m.handle_timeout(ms(t0, 5100));
        let acts = actions(&mut m);
        assert_eq!(signals(&acts), vec![(G2, Signal::Stop)]);
        assert!(acts.contains(&Action::Answer(
            vec![1],
            ReloadOutcome::Failed {
                generation: G2,
                why: StartFailure::NotReady(Duration::from_secs(5)),
                serving: Some(G1),
                stopping: false,
            }
        )));
        // A late READY=1 from the failed generation changes nothing.
        m.handle(ms(t0, 5200), Input::Ready(G2));
        assert!(actions(&mut m).is_empty());
        assert_eq!(m.active(), Some(G1));
        m.handle_timeout(ms(t0, 8100));
        assert_eq!(signals(&actions(&mut m)), vec![(G2, Signal::Kill)]);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn old_generation_ignoring_its_stop_signal_is_killed_after_the_drain_timeout() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 200), Input::Ready(G2));
        let _ = actions(&mut m);
        m.handle_timeout(ms(t0, 3199));
        assert!(actions(&mut m).is_empty());
        m.handle_timeout(ms(t0, 3200));
        let acts = actions(&mut m);
        assert_eq!(signals(&acts), vec![(G1, Signal::Kill)]);
        m.handle(ms(t0, 3210), Input::Exited(G1, ExitStatus::Signal(9)));
        assert!(matches!(
            actions(&mut m).as_slice(),
            [Action::Report(Event::Drained { generation: G1, .. })]
        ));
    }

    #[test]
    fn several_old_generations_drain_at_once_each_with_its_own_deadline() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        for (g, at) in [(G2, 1000), (G3, 2000)] {
            m.handle(ms(t0, at), Input::Reload(g.0));
            m.handle(ms(t0, at + 10), Input::Ready(g));
        }
        let acts = actions(&mut m);
        assert_eq!(signals(&acts), vec![(G1, Signal::Stop), (G2, Signal::Stop)]);
        assert_eq!(m.active(), Some(G3));
        // Generation 1's deadline (1010 + 3000) comes first, then 2's.
        m.handle_timeout(ms(t0, 4010));
        assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Kill)]);
        m.handle_timeout(ms(t0, 5010));
        assert_eq!(signals(&actions(&mut m)), vec![(G2, Signal::Kill)]);
        m.handle(ms(t0, 5020), Input::Exited(G2, ExitStatus::Signal(9)));
        m.handle(ms(t0, 5030), Input::Exited(G1, ExitStatus::Signal(9)));
        let acts = actions(&mut m);
        assert_eq!(acts.len(), 2);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.active(), Some(G3));
    }

    #[test]
    fn reloads_during_a_start_coalesce_into_one_queued_reload() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 110), Input::Reload(2));
        m.handle(ms(t0, 120), Input::Reload(3));
        let acts = actions(&mut m);
        assert_eq!(spawns(&acts), vec![G2]);
        m.handle(ms(t0, 200), Input::Ready(G2));
        let acts = actions(&mut m);
        assert_eq!(spawns(&acts), vec![G3]);
        assert!(acts.iter().any(|a| matches!(a, Action::Answer(t, ReloadOutcome::Ready { generation: G2, .. }) if *t == vec![1])));
        m.handle(ms(t0, 300), Input::Ready(G3));
        let acts = actions(&mut m);
        assert!(acts.iter().any(|a| matches!(a, Action::Answer(t, ReloadOutcome::Ready { generation: G3, .. }) if *t == vec![2, 3])));
        assert_eq!(signals(&acts), vec![(G2, Signal::Stop)]);
    }

    #[test]
    fn phases_and_restarts_are_reported_as_they_are() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        assert_eq!(m.phases(), vec![(G1, Phase::Active, ms(t0, 50))]);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 150), Input::Ready(G2));
        assert_eq!(
            m.phases(),
            vec![
                (G1, Phase::Draining, ms(t0, 150)),
                (G2, Phase::Active, ms(t0, 150))
            ]
        );
        assert_eq!(m.restarts(), 0);
        // A crash restart counts; a reload does not.
        m.handle(ms(t0, 200), Input::Exited(G2, ExitStatus::Code(1)));
        m.handle_timeout(ms(t0, 300));
        assert_eq!(m.restarts(), 1);
        assert!(matches!(m.phases().last(), Some((G3, Phase::Starting, _))));
        assert!(!m.stopping());
        m.handle(ms(t0, 400), Input::Stop);
        assert!(m.stopping());
    }

    #[test]
    fn crash_restarts_with_capped_backoff_reset_by_a_healthy_run() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        let mut now = 1000;
        let mut delays = Vec::new();
        for g in 1..=5u64 {
            m.handle(
                ms(t0, now),
                Input::Exited(Generation(g), ExitStatus::Code(1)),
            );
            let acts = actions(&mut m);
            let Some(Action::Report(Event::Crashed {
                restart_in: Some(d),
                ..
            })) = acts.first()
            else {
                panic!("{acts:?}");
            };
            delays.push(d.as_millis());
            assert_eq!(m.next_deadline(), Some(ms(t0, now) + *d));
            now += d.as_millis() as u64;
            m.handle_timeout(ms(t0, now));
            assert_eq!(actions(&mut m), vec![Action::Spawn(Generation(g + 1))]);
            m.handle(ms(t0, now), Input::Ready(Generation(g + 1)));
            let _ = actions(&mut m);
        }
        assert_eq!(delays, vec![100, 200, 400, 400, 400]);
        // Ten seconds of healthy service resets the backoff.
        now += 10_000;
        m.handle(
            ms(t0, now),
            Input::Exited(Generation(6), ExitStatus::Signal(11)),
        );
        let acts = actions(&mut m);
        assert!(matches!(
            acts.first(),
            Some(Action::Report(Event::Crashed { restart_in: Some(d), .. })) if d.as_millis() == 100
        ));
    }

    #[test]
    fn restart_policy_decides_on_a_clean_exit() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Code(0)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
        let (mut m, t0) = serving(RestartPolicy::Always);
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Code(0)));
        let _ = actions(&mut m);
        assert_eq!(m.next_deadline(), Some(ms(t0, 200)));
        let (mut m, t0) = serving(RestartPolicy::Never);
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Signal(6)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(134)));
    }

    #[test]
    fn initial_spawn_failure_exits_127_whatever_the_policy() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::Always), t0);
        let _ = actions(&mut m);
        m.handle(
            t0,
            Input::SpawnFailed(G1, "exec x: Exec format error".into()),
        );
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(127)));
        // A later spawn failure (a restart) is retried with backoff.
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Code(1)));
        m.handle_timeout(ms(t0, 200));
        let _ = actions(&mut m);
        m.handle(
            ms(t0, 200),
            Input::SpawnFailed(G2, "exec x: ETXTBSY".into()),
        );
        assert!(!actions(&mut m).iter().any(|a| matches!(a, Action::Exit(_))));
        assert_eq!(m.next_deadline(), Some(ms(t0, 400)));
    }

    #[test]
    fn replacing_a_healthy_generation_resets_the_backoff() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        // A crash streak: 100ms, 200ms.
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Code(1)));
        m.handle_timeout(ms(t0, 200));
        m.handle(ms(t0, 210), Input::Ready(G2));
        m.handle(ms(t0, 300), Input::Exited(G2, ExitStatus::Code(1)));
        m.handle_timeout(ms(t0, 500));
        m.handle(ms(t0, 510), Input::Ready(G3));
        // Then an hour of service, a reload, and a quick crash of the new
        // generation: back to the first delay.
        m.handle(ms(t0, 3_600_000), Input::Reload(1));
        m.handle(ms(t0, 3_600_100), Input::Ready(Generation(4)));
        let _ = actions(&mut m);
        m.handle(
            ms(t0, 3_600_200),
            Input::Exited(Generation(4), ExitStatus::Code(1)),
        );
        let acts = actions(&mut m);
        assert!(
            matches!(acts.first(), Some(Action::Report(Event::Crashed { restart_in: Some(d), .. })) if d.as_millis() == 100),
            "{acts:?}"
        );
    }

    #[test]
    fn initial_spawn_failure_with_never_exits_127() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::Never), t0);
        let _ = actions(&mut m);
        m.handle(t0, Input::SpawnFailed(G1, "exec: ENOENT".into()));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(127)));
        assert!(m.is_done());
    }

    #[test]
    fn stop_drains_everything_and_exits_with_the_active_status() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        let _ = actions(&mut m);
        m.handle(ms(t0, 200), Input::Stop);
        let acts = actions(&mut m);
        assert_eq!(signals(&acts), vec![(G1, Signal::Stop), (G2, Signal::Stop)]);
        assert!(acts.contains(&Action::Answer(
            vec![1],
            ReloadOutcome::Failed {
                generation: G2,
                why: StartFailure::Stopping,
                serving: None,
                stopping: true,
            }
        )));
        m.handle(ms(t0, 250), Input::Reload(2));
        assert!(matches!(
            actions(&mut m).as_slice(),
            [Action::Answer(_, ReloadOutcome::Refused(_))]
        ));
        m.handle(ms(t0, 300), Input::Exited(G2, ExitStatus::Code(0)));
        // Killed by the stop signal it was sent: a clean stop.
        m.handle(ms(t0, 400), Input::Exited(G1, ExitStatus::Signal(15)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
    }

    #[test]
    fn a_death_by_another_signal_or_an_unsent_stop_signal_stays_a_failure() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Stop);
        m.handle(ms(t0, 200), Input::Exited(G1, ExitStatus::Signal(6)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(134)));
        // SIGTERM from someone else, while serving: a crash.
        let (mut m, t0) = serving(RestartPolicy::Never);
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Signal(15)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(143)));
    }

    #[test]
    fn stop_before_anything_is_ready_exits_with_the_starting_status() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::OnFailure), t0);
        let _ = actions(&mut m);
        m.handle(ms(t0, 10), Input::Stop);
        assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Stop)]);
        m.handle(ms(t0, 20), Input::Exited(G1, ExitStatus::Signal(15)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
    }

    #[test]
    fn second_stop_kills_at_once() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Stop);
        assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Stop)]);
        m.handle(ms(t0, 200), Input::Stop);
        let acts = actions(&mut m);
        assert_eq!(signals(&acts), vec![(G1, Signal::Kill)]);
        assert_eq!(m.next_deadline(), None);
        m.handle(ms(t0, 210), Input::Exited(G1, ExitStatus::Signal(9)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(137)));
    }

    #[test]
    fn stop_during_a_restart_backoff_exits_with_the_crash_status() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Code(3)));
        let _ = actions(&mut m);
        m.handle(ms(t0, 150), Input::Stop);
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(3)));
    }

    #[test]
    fn reload_during_backoff_starts_at_once() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Exited(G1, ExitStatus::Code(1)));
        let _ = actions(&mut m);
        m.handle(ms(t0, 120), Input::Reload(4));
        assert_eq!(spawns(&actions(&mut m)), vec![G2]);
        assert_eq!(m.next_deadline(), Some(ms(t0, 5120)));
    }

    #[test]
    fn active_exit_during_a_reload_lets_the_new_generation_take_over() {
        let (mut m, t0) = serving(RestartPolicy::Never);
        m.handle(ms(t0, 100), Input::Reload(1));
        let _ = actions(&mut m);
        m.handle(ms(t0, 150), Input::Exited(G1, ExitStatus::Code(1)));
        let acts = actions(&mut m);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Exit(_))),
            "{acts:?}"
        );
        m.handle(ms(t0, 200), Input::Ready(G2));
        assert_eq!(m.active(), Some(G2));
    }
    fn steer_cfg() -> Config {
        Config {
            quiesce: Some(Quiesce {
                quiet: Duration::from_millis(200),
                limit: Duration::from_secs(2),
                poll: Duration::from_millis(10),
            }),
            ..cfg(ReadyMode::Notify, RestartPolicy::OnFailure)
        }
    }

    /// Steer mode, generation 2 just became ready over generation 1.
    fn switched() -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(steer_cfg(), t0);
        assert_eq!(all_actions(&mut m), vec![Action::Spawn(G1)]);
        m.handle(ms(t0, 10), Input::Ready(G1));
        let acts = all_actions(&mut m);
        assert_eq!(acts[0], Action::Route(G1), "the first generation is routed");
        m.handle(ms(t0, 100), Input::Reload(1));
        assert_eq!(all_actions(&mut m), vec![Action::Spawn(G2)]);
        m.handle(ms(t0, 150), Input::Ready(G2));
        let acts = all_actions(&mut m);
        assert_eq!(
            acts[0],
            Action::Route(G2),
            "new connections go to gen 2 first"
        );
        assert!(
            !acts.contains(&Action::Stop(G1)),
            "gen 1 is not stopped at the switch: {acts:?}"
        );
        assert!(acts.contains(&Action::Report(Event::Quiescing { generation: G1 })));
        assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
        assert_eq!(m.phases()[0].1, Phase::Quiescing);
        (m, t0)
    }

    #[test]
    fn steer_a_starting_generation_is_never_routed() {
        let t0 = Instant::now();
        let mut m = Machine::new(steer_cfg(), t0);
        all_actions(&mut m);
        m.handle(ms(t0, 10), Input::Ready(G1));
        all_actions(&mut m);
        m.handle(ms(t0, 20), Input::Reload(1));
        m.handle(ms(t0, 30), Input::Exited(G2, ExitStatus::Code(1)));
        let acts = all_actions(&mut m);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Route(_))),
            "a failed start is never routed: {acts:?}"
        );
        assert_eq!(m.active(), Some(G1));
    }

    #[test]
    fn steer_the_old_generation_stops_once_its_queue_stays_empty() {
        let (mut m, t0) = switched();
        // Two connections still wait: measure again after the poll time.
        m.handle(ms(t0, 150), Input::Queued(G1, 2));
        assert_eq!(m.next_deadline(), Some(ms(t0, 160)));
        m.handle_timeout(ms(t0, 160));
        assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
        // Empty: the quiet period starts; nothing is stopped yet.
        m.handle(ms(t0, 160), Input::Queued(G1, 0));
        assert!(all_actions(&mut m).is_empty());
        assert_eq!(m.next_deadline(), Some(ms(t0, 360)));
        m.handle_timeout(ms(t0, 360));
        assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
        // A late connection (a handshake under way at the switch) restarts
        // the wait.
        m.handle(ms(t0, 360), Input::Queued(G1, 1));
        m.handle_timeout(ms(t0, 370));
        assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
        m.handle(ms(t0, 370), Input::Queued(G1, 0));
        m.handle_timeout(ms(t0, 570));
        assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
        m.handle(ms(t0, 570), Input::Queued(G1, 0));
        assert_eq!(
            all_actions(&mut m),
            vec![
                Action::Stop(G1),
                Action::Report(Event::Draining { generation: G1 })
            ]
        );
    }

    #[test]
    fn steer_a_queue_that_never_empties_is_bounded() {
        let (mut m, t0) = switched();
        let mut now = 150;
        loop {
            m.handle(ms(t0, now), Input::Queued(G1, 3));
            now = m
                .next_deadline()
                .map(|d| d.duration_since(t0).as_millis() as u64)
                .unwrap();
            m.handle_timeout(ms(t0, now));
            let acts = all_actions(&mut m);
            if acts.contains(&Action::Stop(G1)) {
                assert!(acts.contains(&Action::Report(Event::QuiesceTimedOut {
                    generation: G1,
                    queued: 3,
                    after: Duration::from_secs(2),
                })));
                break;
            }
            assert_eq!(acts, vec![Action::MeasureQueue(G1)]);
            assert!(now <= 2150, "bounded by the limit");
        }
        assert_eq!(now, 2150);
    }

    #[test]
    fn steer_a_quiescing_generation_that_exits_counts_as_drained() {
        let (mut m, t0) = switched();
        m.handle(ms(t0, 200), Input::Exited(G1, ExitStatus::Code(0)));
        assert!(matches!(
            all_actions(&mut m)[..],
            [Action::Report(Event::Drained { generation: G1, .. })]
        ));
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn steer_stop_stops_quiescing_generations_at_once() {
        let (mut m, t0) = switched();
        m.handle(ms(t0, 200), Input::Stop);
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Stop(G1)), "{acts:?}");
        assert!(acts.contains(&Action::Stop(G2)), "{acts:?}");
    }

    #[test]
    fn pending_reloads_are_counted_by_the_machine() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        assert_eq!(m.pending_reloads(), 0);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 110), Input::Reload(2));
        m.handle(ms(t0, 120), Input::Reload(3));
        assert_eq!(m.pending_reloads(), 3);
        m.handle(ms(t0, 130), Input::Ready(G2));
        assert_eq!(m.pending_reloads(), 2, "the queued ones ride on gen 3");
        m.handle(ms(t0, 140), Input::Ready(G3));
        assert_eq!(m.pending_reloads(), 0);
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn time_never_goes_backwards() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 50), Input::Stop);
    }
}
