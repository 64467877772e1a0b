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
//! With `--workers N` ([`Config::workers`]) a generation is N processes of
//! the command (workers `0..N`), all on the generation's sockets. The
//! generation is ready once every worker is; a worker of the serving
//! generation that exits is restarted alone, with its own backoff
//! ([`Action::SpawnWorker`]), while the others serve. Besides the default
//! reload (all at once: N new workers, switch, quiesce the old ones), a
//! reload may be *rolling* ([`Strategy::Rolling`]: K new workers at a time,
//! each generation's share of new connections following its number of
//! ready workers ([`Action::Split`]), an old worker stopped for each new
//! one ready, never more than N+K workers alive, the last old workers
//! quiescing as a replaced generation does; a new worker that fails rolls
//! the whole reload back) or a *canary* ([`Strategy::Canary`]: the new
//! generation, once ready, gets a fixed share until [`Input::Promote`]
//! (or a deadline) switches to it or [`Input::Rollback`] (or a crash of the
//! canary) retires it).
//!
//! Invariants, checked after every input:
//! - at most one generation is starting, at most one is active and at most
//!   one is a canary (only beside an active one); any number may be
//!   quiescing or draining;
//! - during a rolling reload no worker is spawned that would make more than
//!   N+K workers alive;
//! - time never goes backwards between inputs;
//! - an active generation is only ever stopped once a newer one is ready (or
//!   the whole supervisor stops);
//! - once stopping, nothing new is spawned.

//!
//! One map holds every generation, each owning its workers ([`Gen`]):
//! a worker's readiness is the one way to its generation's
//! ([`Machine::worker_ready`]), a worker's exit the one way to its
//! generation's end ([`Machine::worker_exited`] then
//! [`Machine::generation_ended`]).
//!
//! The files follow the phases: [`view`] (making one, reading it),
//! [`input`] (the entry points), [`start`] (reloads, spawns, readiness, the
//! switch, failed starts), [`rollout`] (rolling and canary reloads),
//! [`stop`] (quiescing, draining, stopping, handing off), [`exit`]
//! (processes that exit, crash restarts), [`saved`] (the state an in-place
//! upgrade carries); the types are here, the unit tests in `tests/`, a
//! file per phase.

mod exit;
mod input;
mod rollout;
mod saved;
mod start;
mod stop;
mod view;

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
    /// Taking over from another supervisor: until a generation of this
    /// one has served, a failed start is not tried again (the other
    /// supervisor carries on; this one exits), whatever `restart` says.
    pub first_start_final: bool,
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
    /// Processes per generation (`--workers`), at least 1.
    pub workers: u32,
    /// How a plain reload (SIGHUP, `supervisor reload`) replaces the
    /// serving generation: [`Strategy::AllAtOnce`] or
    /// [`Strategy::Rolling`].
    pub reload: Strategy,
    /// At most this many live generations (`--max-generations`): a new
    /// one that would make more cuts the drain of the oldest generation
    /// that receives no new connections. `None`: no cap.
    pub max_generations: Option<usize>,
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

/// How a reload replaces the serving generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// N new workers; switch once all are ready; the old ones quiesce and
    /// stop.
    AllAtOnce,
    /// Replace the workers K at a time (at most N+K alive), the share of
    /// new connections following the ready workers of each generation.
    Rolling(u32),
    /// Start the new generation and, once ready, give it `percent` of the
    /// new connections until it is promoted or rolled back.
    Canary {
        /// The new generation's share, 1 to 99.
        percent: u32,
        /// Promote by itself after this long if the canary has not crashed.
        promote_after: Option<Duration>,
    },
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
    /// `rollback` was asked for while it was starting.
    RolledBack,
}

/// The one wording of how a process ended: `exited with status 1`,
/// `killed by signal 9 (SIGKILL)`. The log, the answers and the event
/// stream render it; none words it again.
impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exited with status {c}"),
            ExitStatus::Signal(n) => match nix::sys::signal::Signal::try_from(n) {
                Ok(sig) => write!(f, "killed by signal {n} ({sig})"),
                Err(_) => write!(f, "killed by signal {n}"),
            },
        }
    }
}

/// The one wording of a failed start, said of the generation (or worker)
/// that failed: `exited with status 1 before it was ready`, `was not
/// ready within 5s`.
impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFailure::Spawn(e) => write!(f, "could not be started: {e}"),
            StartFailure::Exited(s) => write!(f, "{s} before it was ready"),
            StartFailure::NotReady(d) => write!(
                f,
                "was not ready within {}",
                hot_supervisor::duration::human(*d)
            ),
            StartFailure::Stopping => write!(f, "was stopped before it was ready"),
            StartFailure::RolledBack => write!(f, "was rolled back"),
        }
    }
}

/// Why a canary or a rolling reload was rolled back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackCause {
    /// `supervisor rollback`.
    Asked,
    /// A worker of the new generation failed: it ended (a canary's may
    /// have been ready), could not be spawned, or was not ready in time.
    Worker {
        /// Its index.
        worker: u32,
        /// What happened to it.
        why: StartFailure,
    },
}

impl fmt::Display for RollbackCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackCause::Asked => write!(f, "asked"),
            // A canary's worker may have been ready: say only how it ended.
            RollbackCause::Worker {
                worker,
                why: StartFailure::Exited(s),
            } => write!(f, "worker {worker} {s}"),
            RollbackCause::Worker { worker, why } => write!(f, "worker {worker} {why}"),
        }
    }
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
    /// A canary generation is ready and receives `percent` of the new
    /// connections; `serving` keeps the rest.
    Canary {
        /// The canary.
        generation: Generation,
        /// Time from spawn to ready.
        after: Duration,
        /// Its share of new connections.
        percent: u32,
        /// The generation that keeps the rest.
        serving: Generation,
    },
    /// `promote`: the canary serves everything; `replaced` quiesces.
    Promoted {
        /// The generation now serving.
        generation: Generation,
        /// The generation it replaced.
        replaced: Generation,
    },
    /// `rollback`: `serving` takes everything back; `generation` quiesces
    /// and stops.
    RolledBack {
        /// The canary (or rolling) generation retired.
        generation: Generation,
        /// The generation serving everything again.
        serving: Generation,
    },
}

/// Why a reload request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The supervisor is stopping.
    Stopping,
    /// A canary runs: it must be promoted or rolled back first.
    CanaryRunning(Generation),
    /// `promote` or `rollback` with no canary (or rolling reload) to act on.
    NothingToPromote,
    /// `promote` during a rolling reload (it promotes itself as it goes).
    Rolling(Generation),
    /// A canary or rolling reload with no generation serving to compare
    /// with.
    NothingServing,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopping => write!(f, "the supervisor is stopping"),
            Refusal::CanaryRunning(g) => write!(
                f,
                "{g} is a canary: `supervisor promote` or `supervisor rollback` first"
            ),
            Refusal::NothingToPromote => write!(f, "no canary or rolling reload is under way"),
            Refusal::Rolling(g) => write!(
                f,
                "{g} is rolling in: it takes over worker by worker (`supervisor rollback` stops it)"
            ),
            Refusal::NothingServing => write!(
                f,
                "no generation is serving (a plain `supervisor reload` starts one)"
            ),
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
    /// A worker of a serving generation exited on its own.
    WorkerCrashed {
        /// Its generation.
        generation: Generation,
        /// Its index.
        worker: u32,
        /// How it exited.
        status: ExitStatus,
        /// When it will be restarted, if it will.
        restart_in: Option<Duration>,
    },
    /// A restarted worker (or one of a rolling reload) was not ready in
    /// time and was stopped.
    WorkerNotReady {
        /// Its generation.
        generation: Generation,
        /// Its index.
        worker: u32,
    },
    /// A rolling reload stopped one old worker (a new one took its share).
    WorkerRetired {
        /// Its generation.
        generation: Generation,
        /// Its index.
        worker: u32,
    },
    /// The shares of new connections changed (rolling reload, canary).
    Split {
        /// Each generation's share, in percent, summing to 100.
        shares: Vec<(Generation, u32)>,
    },
    /// A canary is ready and gets its share.
    Canary {
        /// The canary.
        generation: Generation,
        /// Its share.
        percent: u32,
        /// Time from spawn to ready.
        after: Duration,
    },
    /// The canary now serves everything (asked, or its time was up).
    Promoted {
        /// The canary.
        generation: Generation,
        /// The generation it replaced.
        replaced: Generation,
        /// `promote-after` ran out (else a request).
        automatic: bool,
    },
    /// A canary or rolling reload was rolled back.
    RolledBack {
        /// The new generation, retired.
        generation: Generation,
        /// The generation serving everything again.
        serving: Generation,
        /// Why.
        why: RollbackCause,
    },
    /// A graceful stop began.
    Stopping,
    /// Another supervisor took over: the generations are replaced by its
    /// own, and this one exits once they are gone.
    HandedOff,
    /// A second stop request: everything is killed now.
    ForcedStop,
    /// A new generation would have made more live generations than
    /// `--max-generations`: this one, which receives no new connections,
    /// is killed at once, its drain cut short. (Reported before its
    /// [`Action::Kill`], so that what it still holds can be counted.)
    Cut {
        /// The generation cut.
        generation: Generation,
        /// Its state until then: `quiescing` or `draining`.
        was: Phase,
        /// The cap.
        max: usize,
    },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fork and exec this generation's workers, in order, each while
    /// [`Machine::worker_starting`] says so; report a failure as
    /// [`Input::WorkerSpawnFailed`] (the machine then says which are left).
    Spawn(Generation),
    /// Fork and exec one worker of a generation (a restart, or a rolling
    /// reload's next worker); it gets the generation's sockets.
    SpawnWorker(Generation, u32),
    /// Send one worker its stop signal.
    StopWorker(Generation, u32),
    /// SIGKILL one worker's process group.
    KillWorker(Generation, u32),
    /// Share new connections between generations by weight (steer mode):
    /// each generation's share, in percent. Empty: everything to the routed
    /// generation again.
    Split(Vec<(Generation, u32)>),
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
    /// This generation failed to start: stop verifying its readiness
    /// (saying what the probe last found).
    Abandon(Generation),
    /// Generation `g` is gone (no process of it is left): close its own
    /// sockets (steer mode; a routed one stays for its successor) and
    /// end its probe.
    Release(Generation),
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
    /// Reload requested (SIGHUP or a control request).
    Reload(Ticket),
    /// Stop requested (SIGTERM, SIGINT); a second one forces.
    Stop,
    /// The answer to [`Action::MeasureQueue`]: connections waiting.
    Queued(Generation, u64),
    /// Another supervisor took over and serves: every generation goes as a
    /// replaced one does (quiesce, stop, drain), then exit with status 0.
    HandOff,
    /// A reload with a strategy other than the configured one.
    ReloadWith(Ticket, Strategy),
    /// Finish a canary: it serves everything, the old generation quiesces.
    Promote(Ticket),
    /// Undo a canary or a rolling reload: the old generation serves
    /// everything, the new one quiesces and stops.
    Rollback(Ticket),
    /// A worker's exec succeeded (or its status did not come within the
    /// bound, and it counts as started).
    WorkerExecuted(Generation, u32),
    /// A worker sent `READY=1`.
    WorkerReady(Generation, u32),
    /// A worker was reaped.
    WorkerExited(Generation, u32, ExitStatus),
    /// A worker could not be spawned.
    WorkerSpawnFailed(Generation, u32, String),
}

/// How a generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    /// It was reaped with this status.
    Exited(ExitStatus),
    /// It could not be spawned (no process ever existed).
    SpawnFailed(String),
}

/// What is left of a generation whose start failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Left {
    /// No process: nothing to stop.
    Nothing,
    /// Processes that never received a connection: they get their stop
    /// signal at once.
    Running,
    /// Processes that had a share of new connections (a rolling reload's
    /// new workers): in steer mode they quiesce first, so that their queue
    /// is answered.
    Serving,
}

/// Which deadline of a worker passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorkerDue {
    /// Started alone, must be ready.
    Ready,
    /// Its restart.
    Restart,
    /// Stopped alone, must be killed.
    Kill,
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
    Delay(#[serde(with = "crate::carry::mono")] Instant),
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
        #[serde(with = "crate::carry::mono")]
        spawned: Instant,
        #[serde(with = "crate::carry::mono")]
        deadline: Instant,
        cause: Cause,
        tickets: Vec<Ticket>,
    },
    Active {
        #[serde(with = "crate::carry::mono")]
        since: Instant,
    },
    Quiescing {
        #[serde(with = "crate::carry::mono")]
        since: Instant,
        /// When the queue is measured next.
        #[serde(with = "crate::carry::mono")]
        check_at: Instant,
        /// Since when the queue has been seen empty.
        #[serde(with = "crate::carry::mono::opt")]
        empty_since: Option<Instant>,
        /// The last measurement.
        queued: u64,
    },
    Draining {
        #[serde(with = "crate::carry::mono")]
        since: Instant,
        /// The SIGKILL deadline; `None` once SIGKILL was sent.
        #[serde(with = "crate::carry::mono::opt")]
        deadline: Option<Instant>,
    },
    /// Ready, receiving a share of new connections beside the active
    /// generation, until promoted or rolled back.
    Canary {
        #[serde(with = "crate::carry::mono")]
        since: Instant,
    },
}

/// One generation: where it is in its life, and its processes.
#[derive(Clone, Debug)]
struct Gen {
    state: State,
    /// Its workers (index = worker number).
    workers: Vec<Worker>,
}

/// One worker of a generation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Worker {
    state: WorkerState,
    /// Consecutive crashes since its last healthy run, for its backoff.
    failures: u32,
    /// Times it was restarted.
    restarts: u64,
}

/// Where one worker is. A worker is *alive* (has a process) while
/// starting, ready or retiring.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum WorkerState {
    /// No process: not spawned yet (rolling reload), or gone for good.
    Vacant,
    /// Spawned, not ready yet. The deadline counts for a worker started
    /// alone (a restart, a rolling reload's); a generation started whole
    /// has the generation's deadline.
    Starting {
        #[serde(with = "crate::carry::mono")]
        spawned: Instant,
        #[serde(with = "crate::carry::mono")]
        deadline: Instant,
        /// Its exec succeeded ([`Input::WorkerExecuted`]): a ready delay
        /// counts from then. (An upgrade waits for every exec status, so
        /// a saved worker has always exec'd.)
        #[serde(default = "executed_before")]
        executed: bool,
    },
    /// Ready.
    Ready {
        #[serde(with = "crate::carry::mono")]
        since: Instant,
    },
    /// Sent its stop signal alone; SIGKILL at the deadline (`None` once
    /// sent). `restart`: started again once reaped (it was not ready in
    /// time).
    Retiring {
        #[serde(with = "crate::carry::mono")]
        since: Instant,
        #[serde(with = "crate::carry::mono::opt")]
        deadline: Option<Instant>,
        restart: bool,
    },
    /// Crashed; restarted at this time.
    Backoff {
        #[serde(with = "crate::carry::mono")]
        at: Instant,
    },
    /// Exited, and not started again (the crash policy, or its generation
    /// is going).
    Exited,
}

/// A worker saved without `executed` was saved by a version that waited
/// for every exec.
fn executed_before() -> bool {
    true
}

impl Worker {
    fn vacant() -> Worker {
        Worker {
            state: WorkerState::Vacant,
            failures: 0,
            restarts: 0,
        }
    }

    /// The one worker of a generation in `state` (saved by a version
    /// without workers).
    fn alone(state: &State) -> Worker {
        let state = match *state {
            State::Starting {
                spawned, deadline, ..
            } => WorkerState::Starting {
                spawned,
                deadline,
                executed: true,
            },
            State::Active { since }
            | State::Canary { since }
            | State::Quiescing { since, .. }
            | State::Draining { since, .. } => WorkerState::Ready { since },
        };
        Worker {
            state,
            failures: 0,
            restarts: 0,
        }
    }
}

impl WorkerState {
    fn alive(&self) -> bool {
        matches!(
            self,
            WorkerState::Starting { .. } | WorkerState::Ready { .. } | WorkerState::Retiring { .. }
        )
    }
}

/// A reload in progress that is more than one switch.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Rollout {
    /// `new` replaces `old` K workers at a time.
    Rolling {
        old: Generation,
        new: Generation,
        k: u32,
    },
    /// `new` starts whole; once ready it is a canary with `percent`.
    Canary {
        old: Generation,
        new: Generation,
        percent: u32,
        promote_after: Option<Duration>,
        /// Once it is a canary with `promote_after`: when it is promoted.
        #[serde(with = "crate::carry::mono::opt")]
        promote_at: Option<Instant>,
    },
}

impl Rollout {
    fn new_generation(&self) -> Generation {
        match self {
            Rollout::Rolling { new, .. } | Rollout::Canary { new, .. } => *new,
        }
    }

    fn old_generation(&self) -> Generation {
        match self {
            Rollout::Rolling { old, .. } | Rollout::Canary { old, .. } => *old,
        }
    }
}

/// The lifecycle state machine. See the module documentation.
#[derive(Debug)]
pub struct Machine {
    cfg: Config,
    /// Every generation the machine tracks, with its workers: one map, so
    /// that a generation and its workers come and go together.
    gens: BTreeMap<Generation, Gen>,
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
    /// A generation has been active (see [`Config::first_start_final`]).
    served: bool,
    /// The latest time seen (time must never go backwards).
    now: Instant,
    /// When the recent starts counted by the start limit happened.
    starts: VecDeque<Instant>,
    /// The rolling or canary reload under way.
    rollout: Option<Rollout>,
    /// The strategy of the queued reload.
    queued_strategy: Option<Strategy>,
    /// The shares last asked of steering (empty: all to the routed one).
    split: Vec<(Generation, u32)>,
    /// After a rolled-back rolling reload, workers of the serving
    /// generation are started again only while fewer than N + this many
    /// are alive.
    surge: u32,
    actions: VecDeque<Action>,
}

pub use hot_supervisor::status::{Phase, WorkerPhase};
pub use saved::Saved;

impl Machine {
    fn find(&self, f: impl Fn(&State) -> bool) -> Option<Generation> {
        self.states().find(|(_, s)| f(s)).map(|(g, _)| g)
    }

    /// Every generation with its state, oldest first.
    fn states(&self) -> impl Iterator<Item = (Generation, &State)> {
        self.gens.iter().map(|(g, x)| (*g, &x.state))
    }

    fn state(&self, g: Generation) -> Option<&State> {
        self.gens.get(&g).map(|x| &x.state)
    }

    fn state_mut(&mut self, g: Generation) -> Option<&mut State> {
        self.gens.get_mut(&g).map(|x| &mut x.state)
    }

    /// Move `g` to `state`, its workers unchanged.
    fn set_state(&mut self, g: Generation, state: State) {
        match self.gens.get_mut(&g) {
            Some(x) => x.state = state,
            None => {
                debug_assert!(false, "{g} is not known");
                self.gens.insert(
                    g,
                    Gen {
                        state,
                        workers: Vec::new(),
                    },
                );
            }
        }
    }

    fn pool(&self, g: Generation) -> Option<&Vec<Worker>> {
        self.gens.get(&g).map(|x| &x.workers)
    }

    fn pool_mut(&mut self, g: Generation) -> Option<&mut Vec<Worker>> {
        self.gens.get_mut(&g).map(|x| &mut x.workers)
    }

    fn worker(&self, g: Generation, w: u32) -> Option<&Worker> {
        self.pool(g).and_then(|p| p.get(w as usize))
    }

    /// Generation `g` has ended: forget it, its workers with it, and
    /// have its sockets released.
    fn forget(&mut self, g: Generation) {
        if self.gens.remove(&g).is_some() {
            self.push(Action::Release(g));
        }
    }

    /// Every worker of every generation.
    fn all_workers(&self) -> impl Iterator<Item = &Worker> {
        self.gens.values().flat_map(|x| x.workers.iter())
    }

    /// Answer the reload requests `tickets`, if there are any.
    fn answer(&mut self, tickets: Vec<Ticket>, outcome: ReloadOutcome) {
        if !tickets.is_empty() {
            self.push(Action::Answer(tickets, outcome));
        }
    }

    fn report(&mut self, e: Event) {
        self.actions.push_back(Action::Report(e));
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    /// After every input: a rollout whose new generation is gone ends;
    /// shares that name a generation no longer serving are dropped.
    fn tidy(&mut self) {
        if let Some(r) = &self.rollout
            && !matches!(
                self.state(r.new_generation()),
                Some(State::Starting { .. } | State::Canary { .. })
            )
        {
            self.rollout = None;
        }
        let serving = |s: Option<&State>| {
            matches!(
                s,
                Some(State::Active { .. } | State::Canary { .. } | State::Starting { .. })
            )
        };
        if self.split.iter().any(|(g, _)| !serving(self.state(*g))) {
            self.set_split(Vec::new());
        }
    }

    fn check(&mut self) {
        self.tidy();
        let count = |f: fn(&State) -> bool| self.states().filter(|(_, s)| f(s)).count();
        debug_assert!(count(|s| matches!(s, State::Starting { .. })) <= 1);
        debug_assert!(count(|s| matches!(s, State::Active { .. })) <= 1);
        debug_assert!(count(|s| matches!(s, State::Canary { .. })) <= 1);
        debug_assert!(
            self.canary().is_none() || self.active().is_some() || self.stopping(),
            "a canary beside nothing"
        );
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
mod tests;
