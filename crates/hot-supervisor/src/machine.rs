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

/// A short description of a failure, for the machine's own texts.
fn describe(why: &StartFailure) -> String {
    match why {
        StartFailure::Spawn(e) => format!("could not be started: {e}"),
        StartFailure::Exited(ExitStatus::Code(c)) => format!("exited with status {c}"),
        StartFailure::Exited(ExitStatus::Signal(n)) => format!("was killed by signal {n}"),
        StartFailure::NotReady(d) => format!("was not ready within {}ms", d.as_millis()),
        StartFailure::Stopping => "was stopped: the supervisor is stopping".into(),
        StartFailure::RolledBack => "was rolled back".into(),
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
        /// Why (`asked`, or what failed).
        why: String,
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

impl Worker {
    fn vacant() -> Worker {
        Worker {
            state: WorkerState::Vacant,
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
    /// Each generation's workers (index = worker number).
    pools: BTreeMap<Generation, Vec<Worker>>,
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

/// The machine's state as carried across an in-place upgrade (everything
/// but the settings, which the new image reads from its command line, and
/// the actions, which are all carried out before an upgrade).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    generations: Vec<(Generation, State)>,
    last: u64,
    queued: Option<Vec<Ticket>>,
    #[serde(with = "crate::carry::mono::opt")]
    restart_at: Option<Instant>,
    failures: u32,
    stopping: Stopping,
    exit_with: Option<Generation>,
    exit_status: Option<ExitStatus>,
    last_status: Option<ExitStatus>,
    done: bool,
    restarts: u64,
    #[serde(with = "crate::carry::mono")]
    now: Instant,
    #[serde(with = "crate::carry::mono::seq")]
    starts: VecDeque<Instant>,
    #[serde(default)]
    pools: Vec<(Generation, Vec<Worker>)>,
    #[serde(default)]
    rollout: Option<Rollout>,
    #[serde(default)]
    queued_strategy: Option<Strategy>,
    #[serde(default)]
    split: Vec<(Generation, u32)>,
    #[serde(default)]
    surge: u32,
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
    /// Ready, receiving a share of new connections beside the active one.
    Canary,
}

impl Phase {
    /// `starting`, `active`, `quiescing`, `draining` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Active => "active",
            Phase::Quiescing => "quiescing",
            Phase::Draining => "draining",
            Phase::Canary => "canary",
        }
    }
}

/// Where a worker is (for status reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerPhase {
    /// No process (not started yet in a rolling reload, or gone).
    Vacant,
    /// Started, not ready yet.
    Starting,
    /// Ready.
    Ready,
    /// Stopped alone (rolling reload), or stopped for not being ready.
    Retiring,
    /// Crashed, waiting for its restart.
    Backoff,
    /// Exited, not to be started again.
    Exited,
}

impl WorkerPhase {
    /// `vacant`, `starting`, `ready`, `retiring`, `backoff` or `exited`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerPhase::Vacant => "vacant",
            WorkerPhase::Starting => "starting",
            WorkerPhase::Ready => "ready",
            WorkerPhase::Retiring => "retiring",
            WorkerPhase::Backoff => "backoff",
            WorkerPhase::Exited => "exited",
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
            pools: BTreeMap::new(),
            rollout: None,
            queued_strategy: None,
            split: Vec::new(),
            surge: 1,
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
            pools: self.pools.iter().map(|(g, p)| (*g, p.clone())).collect(),
            rollout: self.rollout.clone(),
            queued_strategy: self.queued_strategy,
            split: self.split.clone(),
            surge: self.surge,
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
            pools: saved.pools.into_iter().collect(),
            rollout: saved.rollout,
            queued_strategy: saved.queued_strategy,
            split: saved.split,
            surge: saved.surge.max(1),
            actions: VecDeque::new(),
        }
        .with_pools()
    }

    /// A state saved by a version without workers has no pools: each
    /// generation gets its one worker, in its generation's phase.
    fn with_pools(mut self) -> Machine {
        let gens: Vec<(Generation, State)> = self
            .generations
            .iter()
            .filter(|(g, _)| !self.pools.contains_key(g))
            .map(|(g, s)| (*g, s.clone()))
            .collect();
        for (g, s) in gens {
            let state = match s {
                State::Starting {
                    spawned, deadline, ..
                } => WorkerState::Starting { spawned, deadline },
                State::Active { since } | State::Canary { since } => WorkerState::Ready { since },
                State::Quiescing { since, .. } | State::Draining { since, .. } => {
                    WorkerState::Ready { since }
                }
            };
            self.pools.insert(
                g,
                vec![Worker {
                    state,
                    failures: 0,
                    restarts: 0,
                }],
            );
        }
        self
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
        let rolling = self.rolling_new();
        let timers = self.generations.iter().filter_map(|(g, s)| match s {
            State::Starting { .. } if Some(*g) == rolling => None,
            State::Starting { deadline, .. } => Some(*deadline),
            State::Draining { deadline, .. } => *deadline,
            State::Quiescing { check_at, .. } => Some(*check_at),
            State::Active { .. } | State::Canary { .. } => None,
        });
        let delay = match self.stopping {
            Stopping::Delay(until) => Some(until),
            _ => None,
        };
        let promote = match &self.rollout {
            Some(Rollout::Canary { promote_at, .. }) => *promote_at,
            _ => None,
        };
        let workers = self.worker_timers().into_iter().map(|(_, _, t, _)| t);
        timers
            .chain(self.restart_at)
            .chain(delay)
            .chain(promote)
            .chain(workers)
            .min()
    }

    /// The deadlines of workers handled one by one: restarts due, workers
    /// started alone that must be ready, workers stopped alone that must
    /// be killed.
    fn worker_timers(&self) -> Vec<(Generation, u32, Instant, WorkerDue)> {
        let rolling = self.rolling_new();
        let mut out = Vec::new();
        for (g, pool) in &self.pools {
            let state = self.generations.get(g);
            let alone = matches!(state, Some(State::Active { .. } | State::Canary { .. }))
                || Some(*g) == rolling;
            let draining = matches!(state, Some(State::Draining { .. }));
            for (w, worker) in pool.iter().enumerate() {
                let w = w as u32;
                match worker.state {
                    WorkerState::Starting { deadline, .. } if alone => {
                        out.push((*g, w, deadline, WorkerDue::Ready));
                    }
                    WorkerState::Backoff { at } if alone && !self.stopping() => {
                        out.push((*g, w, at, WorkerDue::Restart));
                    }
                    WorkerState::Retiring {
                        deadline: Some(d), ..
                    } if !draining => out.push((*g, w, d, WorkerDue::Kill)),
                    _ => {}
                }
            }
        }
        out
    }

    /// The generation of a rolling reload under way, if any.
    fn rolling_new(&self) -> Option<Generation> {
        match &self.rollout {
            Some(Rollout::Rolling { new, .. }) => Some(*new),
            _ => None,
        }
    }

    /// The canary, once it is ready.
    pub fn canary(&self) -> Option<Generation> {
        self.find(|s| matches!(s, State::Canary { .. }))
    }

    /// The shares of new connections, in percent, while a rolling reload
    /// or a canary splits them (empty otherwise: all to the active one).
    pub fn shares(&self) -> &[(Generation, u32)] {
        &self.split
    }

    /// Processes per generation.
    pub fn workers_per_generation(&self) -> u32 {
        self.cfg.workers.max(1)
    }

    /// Generation `g`'s workers: index, phase, since when, restarts.
    pub fn workers(&self, g: Generation) -> Vec<(u32, WorkerPhase, Option<Instant>, u64)> {
        let Some(pool) = self.pools.get(&g) else {
            return Vec::new();
        };
        pool.iter()
            .enumerate()
            .map(|(w, worker)| {
                let (phase, since) = match worker.state {
                    WorkerState::Vacant => (WorkerPhase::Vacant, None),
                    WorkerState::Starting { spawned, .. } => (WorkerPhase::Starting, Some(spawned)),
                    WorkerState::Ready { since } => (WorkerPhase::Ready, Some(since)),
                    WorkerState::Retiring { since, .. } => (WorkerPhase::Retiring, Some(since)),
                    WorkerState::Backoff { .. } => (WorkerPhase::Backoff, None),
                    WorkerState::Exited => (WorkerPhase::Exited, None),
                };
                (w as u32, phase, since, worker.restarts)
            })
            .collect()
    }

    /// Whether worker `w` of `g` was spawned and has not proven ready yet.
    pub fn worker_starting(&self, g: Generation, w: u32) -> bool {
        self.pools
            .get(&g)
            .and_then(|p| p.get(w as usize))
            .is_some_and(|x| matches!(x.state, WorkerState::Starting { .. }))
    }

    /// The workers of `g` that have not proven ready yet.
    pub fn starting_workers(&self, g: Generation) -> Vec<u32> {
        self.pools.get(&g).map_or_else(Vec::new, |p| {
            p.iter()
                .enumerate()
                .filter(|(_, x)| matches!(x.state, WorkerState::Starting { .. }))
                .map(|(w, _)| w as u32)
                .collect()
        })
    }

    /// The generations with a worker that has not proven ready yet.
    pub fn generations_with_starting_workers(&self) -> Vec<Generation> {
        self.pools
            .iter()
            .filter(|(_, p)| {
                p.iter()
                    .any(|x| matches!(x.state, WorkerState::Starting { .. }))
            })
            .map(|(g, _)| *g)
            .collect()
    }

    /// Whether worker `w` of `g` has a process the machine has not yet
    /// seen exit.
    pub fn worker_alive(&self, g: Generation, w: u32) -> bool {
        self.pools
            .get(&g)
            .and_then(|p| p.get(w as usize))
            .is_some_and(|x| x.state.alive())
    }

    /// Workers alive, every generation counted.
    pub fn alive_workers(&self) -> u32 {
        self.pools
            .values()
            .flat_map(|p| p.iter())
            .filter(|w| w.state.alive())
            .count() as u32
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
                State::Canary { since } => (*g, Phase::Canary, *since),
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
            Input::WorkerReady(g, w) => self.handle_worker_ready(now, g, w),
            Input::WorkerExited(g, w, status) => {
                self.handle_worker_exit(now, g, w, Ended::Exited(status));
            }
            Input::WorkerSpawnFailed(g, w, why) => {
                // A generation's workers are spawned in order, all at once:
                // those after one that could not be spawned never were,
                // and now never will be (the start has failed).
                if matches!(self.generations.get(&g), Some(State::Starting { .. }))
                    && Some(g) != self.rolling_new()
                    && let Some(pool) = self.pools.get_mut(&g)
                {
                    for x in pool.iter_mut().skip(w as usize + 1) {
                        if matches!(x.state, WorkerState::Starting { .. }) {
                            x.state = WorkerState::Vacant;
                        }
                    }
                }
                self.handle_worker_exit(now, g, w, Ended::SpawnFailed(why));
            }
            Input::Reload(t) => self.handle_reload(now, t, self.cfg.reload),
            Input::ReloadWith(t, strategy) => self.handle_reload(now, t, strategy),
            Input::Promote(t) => self.handle_promote(now, t),
            Input::Rollback(t) => self.handle_rollback(now, t),
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
        let rolling = self.rolling_new();
        let due: Vec<(Generation, Due)> = self
            .generations
            .iter()
            .filter_map(|(g, s)| match s {
                State::Starting { .. } if Some(*g) == rolling => None,
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
                        self.fail_start(now, g, why, true, false);
                    }
                }
                Due::Measure => self.measure(now, g),
            }
        }
        for (g, w, at, due) in self.worker_timers() {
            if at > now {
                continue;
            }
            // Re-check: an earlier entry may have changed it.
            let Some(state) = self
                .pools
                .get(&g)
                .and_then(|p| p.get(w as usize))
                .map(|x| x.state.clone())
            else {
                continue;
            };
            match (due, state) {
                (WorkerDue::Ready, WorkerState::Starting { .. }) => {
                    // A delay is readiness by definition; for a probe or
                    // READY=1, a timeout is a failure, never readiness.
                    if let ReadyMode::Delay(_) = self.cfg.ready {
                        self.handle_worker_ready(now, g, w);
                    } else {
                        self.worker_not_ready(now, g, w);
                    }
                }
                (WorkerDue::Restart, WorkerState::Backoff { .. }) => {
                    self.restarts += 1;
                    if let Some(x) = self.worker_mut(g, w) {
                        x.restarts += 1;
                    }
                    self.spawn_worker(now, g, w, true);
                }
                (WorkerDue::Kill, WorkerState::Retiring { .. }) => {
                    if let Some(x) = self.worker_mut(g, w)
                        && let WorkerState::Retiring { deadline, .. } = &mut x.state
                    {
                        *deadline = None;
                    }
                    self.push(Action::KillWorker(g, w));
                }
                _ => {}
            }
        }
        if let Some(Rollout::Canary {
            promote_at: Some(at),
            new,
            ..
        }) = self.rollout.clone()
            && at <= now
            && self.canary() == Some(new)
        {
            self.promote(now, true);
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
        if let Some(pool) = self.pools.get_mut(&g) {
            for w in pool.iter_mut() {
                if let WorkerState::Starting { .. } = w.state {
                    w.state = WorkerState::Ready { since: now };
                }
            }
        }
        if let Some(Rollout::Canary {
            old,
            new,
            percent,
            promote_after,
            ..
        }) = self.rollout.clone()
            && new == g
        {
            // A canary: ready, but only a share of new connections.
            self.generations.insert(g, State::Canary { since: now });
            if let Some(Rollout::Canary { promote_at, .. }) = &mut self.rollout {
                *promote_at = promote_after.map(|d| now + d);
            }
            self.set_split(vec![(old, 100 - percent), (g, percent)]);
            self.report(Event::Canary {
                generation: g,
                percent,
                after,
            });
            self.answer(
                tickets,
                ReloadOutcome::Canary {
                    generation: g,
                    after,
                    percent,
                    serving: old,
                },
            );
            // Reloads asked for meanwhile cannot start beside a canary.
            if let Some(queued) = self.queued.take() {
                self.queued_strategy = None;
                self.push(Action::Answer(
                    queued,
                    ReloadOutcome::Refused(Refusal::CanaryRunning(g)),
                ));
            }
            return;
        }
        let replaced = self.active();
        // A generation that served long enough before being replaced ends
        // any crash streak, as if it had exited after a healthy run.
        if let Some(State::Active { since }) = replaced.and_then(|r| self.generations.get(&r))
            && now.saturating_duration_since(*since) >= self.cfg.healthy_after
        {
            self.failures = 0;
        }
        self.generations.insert(g, State::Active { since: now });
        self.set_split(Vec::new());
        self.push(Action::Route(g));
        self.report(Event::Ready {
            generation: g,
            after,
            replaced,
        });
        if let Some(old) = replaced {
            self.retire(now, old);
        }
        self.answer(
            tickets,
            ReloadOutcome::Ready {
                generation: g,
                after,
                replaced,
            },
        );
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
                self.fail_start(now, g, why, false, false);
            }
            Some(State::Active { since }) => {
                let since = *since;
                self.generations.remove(&g);
                self.last_status = Some(status);
                if now.saturating_duration_since(since) >= self.cfg.healthy_after {
                    self.failures = 0;
                }
                // A canary takes over as a starting generation would.
                let starting = self.starting().or_else(|| self.canary());
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
                if self.canary().is_some() && !self.stopping() {
                    self.promote(now, true);
                }
                if !restart && starting.is_none() && !self.done {
                    match self.stopping {
                        Stopping::Graceful | Stopping::Forced | Stopping::HandedOff => {}
                        _ => self.begin_stop(now, Some(status)),
                    }
                }
            }
            Some(
                State::Draining { since, .. }
                | State::Quiescing { since, .. }
                | State::Canary { since },
            ) => {
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

    fn handle_reload(&mut self, now: Instant, ticket: Ticket, strategy: Strategy) {
        let refuse = |m: &mut Machine, why| {
            m.push(Action::Answer(vec![ticket], ReloadOutcome::Refused(why)));
        };
        if self.stopping() {
            refuse(self, Refusal::Stopping);
        } else if let Some(Rollout::Canary { new, .. }) = &self.rollout {
            let new = *new;
            refuse(self, Refusal::CanaryRunning(new));
        } else if matches!(strategy, Strategy::Canary { .. }) && self.active().is_none() {
            refuse(self, Refusal::NothingServing);
        } else if let Some(starting) = self.starting() {
            self.queued.get_or_insert_with(Vec::new).push(ticket);
            self.queued_strategy = Some(strategy);
            self.report(Event::ReloadQueued { starting });
        } else {
            // A reload during a restart backoff starts at once.
            self.restart_at = None;
            self.start(now, strategy, vec![ticket]);
        }
    }

    /// Start a reload's generation, as `strategy` says.
    fn start(&mut self, now: Instant, strategy: Strategy, tickets: Vec<Ticket>) {
        let old = self.active();
        match (strategy, old) {
            (Strategy::Rolling(k), Some(old)) => {
                let n = self.workers_per_generation();
                self.cap(now);
                self.last += 1;
                let g = Generation(self.last);
                self.generations.insert(
                    g,
                    State::Starting {
                        spawned: now,
                        // Unused: each worker has its own deadline.
                        deadline: now + self.cfg.ready_timeout,
                        cause: Cause::Reload,
                        tickets,
                    },
                );
                self.pools.insert(g, vec![Worker::vacant(); n as usize]);
                self.rollout = Some(Rollout::Rolling {
                    old,
                    new: g,
                    k: k.clamp(1, n),
                });
                self.roll(now);
            }
            (
                Strategy::Canary {
                    percent,
                    promote_after,
                },
                Some(old),
            ) => {
                self.spawn(now, Cause::Reload, tickets);
                self.rollout = Some(Rollout::Canary {
                    old,
                    new: Generation(self.last),
                    percent: percent.clamp(1, 99),
                    promote_after,
                    promote_at: None,
                });
            }
            _ => self.spawn(now, Cause::Reload, tickets),
        }
    }

    fn handle_worker_ready(&mut self, now: Instant, g: Generation, w: u32) {
        let Some(worker) = self.worker_mut(g, w) else {
            return;
        };
        if !matches!(worker.state, WorkerState::Starting { .. }) {
            // A duplicate READY=1, or one from a worker already stopped.
            return;
        }
        worker.state = WorkerState::Ready { since: now };
        match self.generations.get(&g) {
            Some(State::Starting { .. }) if Some(g) == self.rolling_new() => self.roll(now),
            Some(State::Starting { .. }) => {
                let all = self.pools.get(&g).is_some_and(|p| {
                    p.iter()
                        .all(|x| matches!(x.state, WorkerState::Ready { .. }))
                });
                if all {
                    self.handle_ready(now, g);
                }
            }
            _ => {}
        }
    }

    /// A worker was reaped (or could not be spawned).
    fn handle_worker_exit(&mut self, now: Instant, g: Generation, w: u32, ended: Ended) {
        let status = match &ended {
            Ended::Exited(s) => *s,
            Ended::SpawnFailed(_) => ExitStatus::Code(127),
        };
        let Some(worker) = self.worker_mut(g, w) else {
            // A generation the machine has forgotten, or never had.
            self.handle_exit(now, g, ended);
            return;
        };
        if !worker.state.alive() {
            return;
        }
        let was = std::mem::replace(&mut worker.state, WorkerState::Exited);
        if let WorkerState::Retiring { restart: false, .. } = was {
            // A rolling reload's old worker: its place is taken by a new
            // one, or by a new old one if the reload is rolled back.
            worker.state = WorkerState::Vacant;
        }
        let alive = self.alive_in(g);
        let n = self.workers_per_generation();
        let why = match &ended {
            Ended::SpawnFailed(e) => StartFailure::Spawn(e.clone()),
            Ended::Exited(s) => StartFailure::Exited(*s),
        };
        match self.generations.get(&g) {
            None => {}
            Some(State::Starting { .. }) if Some(g) == self.rolling_new() => {
                let text = format!("worker {w} {}", describe(&why));
                self.roll_back(now, text, Some(why));
                if alive == 0 && self.generations.contains_key(&g) {
                    self.handle_exit(now, g, ended);
                }
            }
            Some(State::Starting { .. }) => {
                if alive == 0 {
                    self.handle_exit(now, g, ended);
                } else {
                    self.fail_start(now, g, why, true, false);
                }
            }
            Some(State::Active { .. }) => {
                let restart = matches!(was, WorkerState::Retiring { restart: true, .. });
                if matches!(was, WorkerState::Retiring { restart: false, .. }) {
                    // A rolling reload's old worker: its share went first.
                } else if (n > 1 || restart) && !self.stopping() {
                    self.worker_crashed(now, g, w, status, &was);
                } else if alive == 0 {
                    self.handle_exit(now, g, ended);
                }
                if self.generations.contains_key(&g)
                    && alive == 0
                    && !self.pools.get(&g).is_some_and(|p| {
                        p.iter()
                            .any(|x| matches!(x.state, WorkerState::Backoff { .. }))
                    })
                    && matches!(self.generations.get(&g), Some(State::Active { .. }))
                {
                    // Nothing left and nothing to restart: the generation
                    // has ended, as if it were one process.
                    self.handle_exit(now, g, Ended::Exited(status));
                }
            }
            Some(State::Canary { .. }) => {
                let text = format!("worker {w} {}", describe(&why));
                self.roll_back(now, text, None);
                if alive == 0 {
                    self.handle_exit(now, g, ended);
                }
            }
            Some(State::Quiescing { .. } | State::Draining { .. }) if alive == 0 => {
                self.handle_exit(now, g, ended);
            }
            Some(State::Quiescing { .. } | State::Draining { .. }) => {}
        }
        self.roll(now);
        self.fill(now);
        self.maybe_exit();
    }

    /// A worker of a serving generation exited: restart it alone, with its
    /// own backoff, if the crash policy says so.
    fn worker_crashed(
        &mut self,
        now: Instant,
        g: Generation,
        w: u32,
        status: ExitStatus,
        was: &WorkerState,
    ) {
        let healthy = matches!(was, WorkerState::Ready { since }
            if now.saturating_duration_since(*since) >= self.cfg.healthy_after);
        // One stopped for not being ready is started again whatever its
        // status.
        let wanted = self.cfg.restart.restarts(status)
            || matches!(was, WorkerState::Retiring { restart: true, .. });
        let restart = wanted && self.may_start(now, status);
        let mut restart_in = None;
        let (initial, max) = (self.cfg.backoff_initial, self.cfg.backoff_max);
        if let Some(x) = self.worker_mut(g, w) {
            if healthy {
                x.failures = 0;
            }
            if restart {
                let factor = 1u32.checked_shl(x.failures.min(31)).unwrap_or(u32::MAX);
                let delay = initial.saturating_mul(factor).min(max);
                x.failures = x.failures.saturating_add(1);
                x.state = WorkerState::Backoff { at: now + delay };
                restart_in = Some(delay);
            }
        }
        self.report(Event::WorkerCrashed {
            generation: g,
            worker: w,
            status,
            restart_in,
        });
        if !restart && wanted {
            // The start limit was hit: give up, as for a generation.
            self.last_status = Some(status);
            self.begin_stop(now, Some(status));
        }
    }

    /// A worker started alone was not ready in time.
    fn worker_not_ready(&mut self, now: Instant, g: Generation, w: u32) {
        let why = StartFailure::NotReady(self.cfg.ready_timeout);
        if Some(g) == self.rolling_new() {
            let text = format!("worker {w} {}", describe(&why));
            self.roll_back(now, text, Some(why));
            return;
        }
        if self.canary() == Some(g) {
            let text = format!("worker {w} {}", describe(&why));
            self.roll_back(now, text, None);
        }
        self.report(Event::WorkerNotReady {
            generation: g,
            worker: w,
        });
        let restart = self.active() == Some(g) && !self.stopping();
        let kill_at = now + self.cfg.drain_timeout;
        if let Some(x) = self.worker_mut(g, w) {
            x.state = WorkerState::Retiring {
                since: now,
                deadline: Some(kill_at),
                restart,
            };
        }
        self.push(Action::StopWorker(g, w));
    }

    /// The next step of a rolling reload: when every new worker is ready,
    /// the switch; else retire old workers that ready new ones replace
    /// (keeping one until the switch), set the shares, and start new
    /// workers as far as N+K allows.
    fn roll(&mut self, now: Instant) {
        let Some(Rollout::Rolling { old, new, k }) = self.rollout.clone() else {
            return;
        };
        let n = self.workers_per_generation();
        let count = |m: &Machine, g: Generation, f: fn(&WorkerState) -> bool| {
            m.pools
                .get(&g)
                .map_or(0, |p| p.iter().filter(|x| f(&x.state)).count() as u32)
        };
        let ready = |s: &WorkerState| matches!(s, WorkerState::Ready { .. });
        let new_ready = count(self, new, ready);
        if new_ready >= n {
            self.rollout = None;
            self.handle_ready(now, new);
            return;
        }
        let old_serves = matches!(self.generations.get(&old), Some(State::Active { .. }));
        let old_ready = if old_serves {
            count(self, old, ready)
        } else {
            0
        };
        let extra = (old_ready + new_ready)
            .saturating_sub(n)
            .min(old_ready.saturating_sub(1));
        let victims: Vec<u32> = self.pools.get(&old).map_or(Vec::new(), |p| {
            (0..p.len())
                .rev()
                .filter(|&w| ready(&p[w].state))
                .take(extra as usize)
                .map(|w| w as u32)
                .collect()
        });
        let old_left = old_ready - victims.len() as u32;
        if new_ready > 0 && old_left > 0 {
            let total = old_left + new_ready;
            let pct = ((new_ready * 100 + total / 2) / total).clamp(1, 99);
            self.set_split(vec![(old, 100 - pct), (new, pct)]);
        }
        let kill_at = now + self.cfg.drain_timeout;
        for w in victims {
            if let Some(x) = self.worker_mut(old, w) {
                x.state = WorkerState::Retiring {
                    since: now,
                    deadline: Some(kill_at),
                    restart: false,
                };
            }
            self.push(Action::StopWorker(old, w));
            self.report(Event::WorkerRetired {
                generation: old,
                worker: w,
            });
        }
        let starting = count(self, new, |s| matches!(s, WorkerState::Starting { .. }));
        let used = count(self, new, |s| !matches!(s, WorkerState::Vacant));
        let room = (n + k).saturating_sub(self.alive_workers());
        let want = k.saturating_sub(starting).min(n - used).min(room);
        let vacant: Vec<u32> = self.pools.get(&new).map_or(Vec::new(), |p| {
            (0..p.len())
                .filter(|&w| p[w].state == WorkerState::Vacant)
                .take(want as usize)
                .map(|w| w as u32)
                .collect()
        });
        for w in vacant {
            self.spawn_worker(now, new, w, false);
        }
        debug_assert!(self.alive_workers() <= n + k || room == 0);
    }

    /// After a rolled-back rolling reload: start the serving generation's
    /// missing workers again, while fewer than N + K are alive.
    fn fill(&mut self, now: Instant) {
        if self.rollout.is_some() || self.stopping() {
            return;
        }
        let Some(g) = self.active() else {
            return;
        };
        let cap = self.workers_per_generation() + self.surge;
        let vacant: Vec<u32> = self.pools.get(&g).map_or(Vec::new(), |p| {
            (0..p.len())
                .filter(|&w| p[w].state == WorkerState::Vacant)
                .map(|w| w as u32)
                .collect()
        });
        for w in vacant {
            if self.alive_workers() >= cap {
                break;
            }
            self.spawn_worker(now, g, w, false);
        }
    }

    /// Fork one worker of `g` (counted by the start limit if `counted`).
    fn spawn_worker(&mut self, now: Instant, g: Generation, w: u32, counted: bool) {
        if counted {
            self.starts.push_back(now);
        }
        let wait = match self.cfg.ready {
            ReadyMode::Notify | ReadyMode::Probe => self.cfg.ready_timeout,
            ReadyMode::Delay(d) => d,
        };
        if let Some(x) = self.worker_mut(g, w) {
            x.state = WorkerState::Starting {
                spawned: now,
                deadline: now + wait,
            };
        }
        self.push(Action::SpawnWorker(g, w));
    }

    fn handle_promote(&mut self, now: Instant, ticket: Ticket) {
        let outcome = match (&self.rollout, self.canary()) {
            (Some(Rollout::Canary { old, new, .. }), Some(c)) if *new == c => {
                let (old, new) = (*old, *new);
                self.promote(now, false);
                ReloadOutcome::Promoted {
                    generation: new,
                    replaced: old,
                }
            }
            (Some(Rollout::Rolling { new, .. }), _) => {
                ReloadOutcome::Refused(Refusal::Rolling(*new))
            }
            _ if self.stopping() => ReloadOutcome::Refused(Refusal::Stopping),
            _ => ReloadOutcome::Refused(Refusal::NothingToPromote),
        };
        self.push(Action::Answer(vec![ticket], outcome));
    }

    /// The canary serves everything; the old generation quiesces.
    fn promote(&mut self, now: Instant, automatic: bool) {
        let Some(Rollout::Canary { old, new, .. }) = self.rollout.take() else {
            return;
        };
        self.generations.insert(new, State::Active { since: now });
        self.set_split(Vec::new());
        self.push(Action::Route(new));
        self.report(Event::Promoted {
            generation: new,
            replaced: old,
            automatic,
        });
        if matches!(self.generations.get(&old), Some(State::Active { .. })) {
            self.retire(now, old);
        }
        self.start_queued(now);
    }

    fn handle_rollback(&mut self, now: Instant, ticket: Ticket) {
        let outcome = match &self.rollout {
            Some(r) => {
                let (old, new) = (r.old_generation(), r.new_generation());
                self.roll_back(now, "asked".into(), Some(StartFailure::RolledBack));
                ReloadOutcome::RolledBack {
                    generation: new,
                    serving: old,
                }
            }
            None if self.stopping() => ReloadOutcome::Refused(Refusal::Stopping),
            None => ReloadOutcome::Refused(Refusal::NothingToPromote),
        };
        self.push(Action::Answer(vec![ticket], outcome));
    }

    /// Undo the rollout: everything to the old generation again; the new
    /// one quiesces if it had a share (else it is stopped at once); a
    /// rolling reload's old workers that were stopped start again.
    fn roll_back(&mut self, now: Instant, why: String, failure: Option<StartFailure>) {
        let Some(r) = self.rollout.take() else {
            return;
        };
        let (old, new) = (r.old_generation(), r.new_generation());
        let traffic = self.split.iter().any(|(g, _)| *g == new);
        self.set_split(Vec::new());
        if let Rollout::Rolling { k, .. } = r {
            self.surge = k.max(1);
        }
        self.report(Event::RolledBack {
            generation: new,
            serving: old,
            why,
        });
        match self.generations.get(&new) {
            Some(State::Starting { .. }) => {
                let still = self.alive_in(new) > 0;
                let failure = failure.unwrap_or(StartFailure::RolledBack);
                self.fail_start(now, new, failure, still, traffic);
            }
            Some(State::Canary { .. }) => self.retire(now, new),
            _ => {}
        }
        self.fill(now);
    }

    /// Ask steering for these shares (percent), unless already asked.
    fn set_split(&mut self, shares: Vec<(Generation, u32)>) {
        if shares == self.split {
            return;
        }
        self.split = shares.clone();
        self.push(Action::Split(shares.clone()));
        if !shares.is_empty() {
            self.report(Event::Split { shares });
        }
    }

    fn worker_mut(&mut self, g: Generation, w: u32) -> Option<&mut Worker> {
        self.pools.get_mut(&g).and_then(|p| p.get_mut(w as usize))
    }

    /// Workers of `g` alive.
    fn alive_in(&self, g: Generation) -> u32 {
        self.pools
            .get(&g)
            .map_or(0, |p| p.iter().filter(|x| x.state.alive()).count() as u32)
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
        self.rollout = None;
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
                    self.fail_start(now, g, StartFailure::Stopping, true, false);
                }
                Some(State::Active { .. } | State::Canary { .. }) => self.retire(now, g),
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
        self.rollout = None;
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
                    self.fail_start(now, g, StartFailure::Stopping, true, false);
                }
                Some(State::Active { .. } | State::Quiescing { .. } | State::Canary { .. }) => {
                    self.drain(now, g);
                }
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
    fn fail_start(
        &mut self,
        now: Instant,
        g: Generation,
        why: StartFailure,
        still_running: bool,
        quiesce_first: bool,
    ) {
        let Some(State::Starting { cause, tickets, .. }) = self.generations.remove(&g) else {
            return;
        };
        if self.rollout.as_ref().map(Rollout::new_generation) == Some(g) {
            // A canary that failed its start (the rolling case comes here
            // through `roll_back`).
            self.rollout = None;
        }
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
                StartFailure::NotReady(_) | StartFailure::Stopping | StartFailure::RolledBack => {
                    ExitStatus::Code(1)
                }
            };
            self.last_status = Some(status);
            if self.cfg.restart.restarts(status) && self.may_start(now, status) {
                restart_in = Some(self.schedule_restart(now));
            } else {
                stop_with = Some(status);
            }
        }
        self.push(Action::Abandon(g));
        self.report(Event::StartFailed {
            generation: g,
            cause,
            why: why.clone(),
            serving,
            restart_in,
        });
        self.answer(
            tickets,
            ReloadOutcome::Failed {
                generation: g,
                why,
                serving,
                stopping: self.stopping(),
            },
        );
        if still_running {
            if quiesce_first && self.cfg.quiesce.is_some() {
                // A rolling reload's workers had a share of new
                // connections: their queue is answered before they stop.
                self.retire(now, g);
            } else {
                self.drain(now, g);
            }
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
            && self.canary().is_none()
            && let Some(tickets) = self.queued.take()
        {
            self.restart_at = None;
            let strategy = self.queued_strategy.take().unwrap_or(self.cfg.reload);
            self.start(now, strategy, tickets);
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
        self.cap(now);
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
        let worker = Worker {
            state: WorkerState::Starting {
                spawned: now,
                deadline: now + wait,
            },
            failures: 0,
            restarts: 0,
        };
        self.pools
            .insert(g, vec![worker; self.workers_per_generation() as usize]);
        self.push(Action::Spawn(g));
    }

    /// Make room for one more generation under `--max-generations`: while
    /// the live generations (those not yet killed) would be more than the
    /// cap, the oldest one that receives no new connections (quiescing or
    /// draining) is killed at once. Generations that serve (starting,
    /// active, canary) are never cut: with none to cut, the cap is
    /// exceeded for this start (the cap's minimum, 2, leaves room for the
    /// serving one and the new one).
    fn cap(&mut self, now: Instant) {
        let Some(max) = self.cfg.max_generations else {
            return;
        };
        loop {
            let live = self
                .generations
                .values()
                .filter(|s| !matches!(s, State::Draining { deadline: None, .. }))
                .count();
            if live < max {
                return;
            }
            let Some((g, was)) = self.generations.iter().find_map(|(g, s)| match s {
                State::Quiescing { .. } => Some((*g, Phase::Quiescing)),
                State::Draining {
                    deadline: Some(_), ..
                } => Some((*g, Phase::Draining)),
                _ => None,
            }) else {
                return;
            };
            self.report(Event::Cut {
                generation: g,
                was,
                max,
            });
            let since = match self.generations.get(&g) {
                Some(State::Draining { since, .. }) => *since,
                _ => now,
            };
            self.generations.insert(
                g,
                State::Draining {
                    since,
                    deadline: None,
                },
            );
            self.push(Action::Kill(g));
        }
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
    /// shares that name a generation no longer serving are dropped; the
    /// workers of forgotten generations go.
    fn tidy(&mut self) {
        if let Some(r) = &self.rollout
            && !matches!(
                self.generations.get(&r.new_generation()),
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
        if self
            .split
            .iter()
            .any(|(g, _)| !serving(self.generations.get(g)))
        {
            self.set_split(Vec::new());
        }
        let known = &self.generations;
        self.pools.retain(|g, _| known.contains_key(g));
    }

    fn check(&mut self) {
        self.tidy();
        let count = |f: fn(&State) -> bool| self.generations.values().filter(|s| f(s)).count();
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
            workers: 1,
            reload: Strategy::AllAtOnce,
            max_generations: None,
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
            .filter(|a| !matches!(a, Action::Route(_) | Action::Abandon(_)))
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
        m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
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
        back.handle(ms(t0, 3300), Input::WorkerReady(G3, 0));
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
        m.handle(ms(t0, 300), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
        assert_eq!(all_actions(&mut m).last(), Some(&Action::Exit(0)));
        assert!(m.is_done());
    }

    /// A machine with generation 1 active (notify mode).
    fn serving(restart: RestartPolicy) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(ReadyMode::Notify, restart), t0);
        assert_eq!(actions(&mut m), vec![Action::Spawn(G1)]);
        m.handle(ms(t0, 50), Input::WorkerReady(G1, 0));
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
        m.handle(ms(t0, 1200), Input::WorkerReady(G2, 0));
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
        m.handle(ms(t0, 400), Input::WorkerReady(G2, 0));
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
        m.handle(
            ms(t0, 1600),
            Input::WorkerExited(G1, 0, ExitStatus::Code(0)),
        );
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
        m.handle(ms(t0, 150), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
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
        m.handle(
            ms(t0, 201),
            Input::WorkerSpawnFailed(G3, 0, "exec x: ENOENT".into()),
        );
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
        m.handle(ms(t0, 5200), Input::WorkerReady(G2, 0));
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
        m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
        let _ = actions(&mut m);
        m.handle_timeout(ms(t0, 3199));
        assert!(actions(&mut m).is_empty());
        m.handle_timeout(ms(t0, 3200));
        let acts = actions(&mut m);
        assert_eq!(signals(&acts), vec![(G1, Signal::Kill)]);
        m.handle(
            ms(t0, 3210),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
        );
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
            m.handle(ms(t0, at + 10), Input::WorkerReady(g, 0));
        }
        let acts = actions(&mut m);
        assert_eq!(signals(&acts), vec![(G1, Signal::Stop), (G2, Signal::Stop)]);
        assert_eq!(m.active(), Some(G3));
        // Generation 1's deadline (1010 + 3000) comes first, then 2's.
        m.handle_timeout(ms(t0, 4010));
        assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Kill)]);
        m.handle_timeout(ms(t0, 5010));
        assert_eq!(signals(&actions(&mut m)), vec![(G2, Signal::Kill)]);
        m.handle(
            ms(t0, 5020),
            Input::WorkerExited(G2, 0, ExitStatus::Signal(9)),
        );
        m.handle(
            ms(t0, 5030),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
        );
        let acts = actions(&mut m);
        assert_eq!(acts.len(), 2);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.active(), Some(G3));
    }

    #[test]
    fn the_generation_cap_kills_the_oldest_draining_generation_before_a_start() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.cfg.max_generations = Some(2);
        m.handle(ms(t0, 1000), Input::Reload(1));
        m.handle(ms(t0, 1010), Input::WorkerReady(G2, 0));
        assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Stop)]);
        // Generation 1 drains, 2 serves: a third would make 3.
        m.handle(ms(t0, 2000), Input::Reload(2));
        let acts = actions(&mut m);
        assert_eq!(
            acts[..3],
            [
                Action::Report(Event::Cut {
                    generation: G1,
                    was: Phase::Draining,
                    max: 2
                }),
                Action::Kill(G1),
                Action::Spawn(G3),
            ]
        );
        // Killed already: its drain deadline is gone, and it no longer
        // counts against the cap, so nothing else is cut.
        m.handle(ms(t0, 2010), Input::WorkerReady(G3, 0));
        assert_eq!(signals(&actions(&mut m)), vec![(G2, Signal::Stop)]);
        m.handle(
            ms(t0, 2020),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
        );
        actions(&mut m);
        assert_eq!(m.phases().len(), 2);
        // Once generation 2 has drained, one serves: a reload cuts
        // nothing (a serving generation is never cut).
        m.handle(
            ms(t0, 2030),
            Input::WorkerExited(G2, 0, ExitStatus::Code(0)),
        );
        m.handle(ms(t0, 3000), Input::Reload(3));
        let acts = actions(&mut m);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Kill(_))),
            "{acts:?}"
        );
        assert!(acts.contains(&Action::Spawn(Generation(4))));
    }

    #[test]
    fn reloads_during_a_start_coalesce_into_one_queued_reload() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 110), Input::Reload(2));
        m.handle(ms(t0, 120), Input::Reload(3));
        let acts = actions(&mut m);
        assert_eq!(spawns(&acts), vec![G2]);
        m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
        let acts = actions(&mut m);
        assert_eq!(spawns(&acts), vec![G3]);
        assert!(acts.iter().any(|a| matches!(a, Action::Answer(t, ReloadOutcome::Ready { generation: G2, .. }) if *t == vec![1])));
        m.handle(ms(t0, 300), Input::WorkerReady(G3, 0));
        let acts = actions(&mut m);
        assert!(acts.iter().any(|a| matches!(a, Action::Answer(t, ReloadOutcome::Ready { generation: G3, .. }) if *t == vec![2, 3])));
        assert_eq!(signals(&acts), vec![(G2, Signal::Stop)]);
    }

    #[test]
    fn phases_and_restarts_are_reported_as_they_are() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        assert_eq!(m.phases(), vec![(G1, Phase::Active, ms(t0, 50))]);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 150), Input::WorkerReady(G2, 0));
        assert_eq!(
            m.phases(),
            vec![
                (G1, Phase::Draining, ms(t0, 150)),
                (G2, Phase::Active, ms(t0, 150))
            ]
        );
        assert_eq!(m.restarts(), 0);
        // A crash restart counts; a reload does not.
        m.handle(ms(t0, 200), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
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
                Input::WorkerExited(Generation(g), 0, ExitStatus::Code(1)),
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
            m.handle(ms(t0, now), Input::WorkerReady(Generation(g + 1), 0));
            let _ = actions(&mut m);
        }
        assert_eq!(delays, vec![100, 200, 400, 400, 400]);
        // Ten seconds of healthy service resets the backoff.
        now += 10_000;
        m.handle(
            ms(t0, now),
            Input::WorkerExited(Generation(6), 0, ExitStatus::Signal(11)),
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
        m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
        let (mut m, t0) = serving(RestartPolicy::Always);
        m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
        let _ = actions(&mut m);
        assert_eq!(m.next_deadline(), Some(ms(t0, 200)));
        let (mut m, t0) = serving(RestartPolicy::Never);
        m.handle(
            ms(t0, 100),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(6)),
        );
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(134)));
    }

    #[test]
    fn initial_spawn_failure_exits_127_whatever_the_policy() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::Always), t0);
        let _ = actions(&mut m);
        m.handle(
            t0,
            Input::WorkerSpawnFailed(G1, 0, "exec x: Exec format error".into()),
        );
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(127)));
        // A later spawn failure (a restart) is retried with backoff.
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
        m.handle_timeout(ms(t0, 200));
        let _ = actions(&mut m);
        m.handle(
            ms(t0, 200),
            Input::WorkerSpawnFailed(G2, 0, "exec x: ETXTBSY".into()),
        );
        assert!(!actions(&mut m).iter().any(|a| matches!(a, Action::Exit(_))));
        assert_eq!(m.next_deadline(), Some(ms(t0, 400)));
    }

    #[test]
    fn replacing_a_healthy_generation_resets_the_backoff() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        // A crash streak: 100ms, 200ms.
        m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
        m.handle_timeout(ms(t0, 200));
        m.handle(ms(t0, 210), Input::WorkerReady(G2, 0));
        m.handle(ms(t0, 300), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
        m.handle_timeout(ms(t0, 500));
        m.handle(ms(t0, 510), Input::WorkerReady(G3, 0));
        // Then an hour of service, a reload, and a quick crash of the new
        // generation: back to the first delay.
        m.handle(ms(t0, 3_600_000), Input::Reload(1));
        m.handle(ms(t0, 3_600_100), Input::WorkerReady(Generation(4), 0));
        let _ = actions(&mut m);
        m.handle(
            ms(t0, 3_600_200),
            Input::WorkerExited(Generation(4), 0, ExitStatus::Code(1)),
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
        m.handle(t0, Input::WorkerSpawnFailed(G1, 0, "exec: ENOENT".into()));
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
        m.handle(ms(t0, 300), Input::WorkerExited(G2, 0, ExitStatus::Code(0)));
        // Killed by the stop signal it was sent: a clean stop.
        m.handle(
            ms(t0, 400),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(15)),
        );
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
    }

    #[test]
    fn a_death_by_another_signal_or_an_unsent_stop_signal_stays_a_failure() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::Stop);
        m.handle(
            ms(t0, 200),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(6)),
        );
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(134)));
        // SIGTERM from someone else, while serving: a crash.
        let (mut m, t0) = serving(RestartPolicy::Never);
        m.handle(
            ms(t0, 100),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(15)),
        );
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(143)));
    }

    #[test]
    fn stop_before_anything_is_ready_exits_with_the_starting_status() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::OnFailure), t0);
        let _ = actions(&mut m);
        m.handle(ms(t0, 10), Input::Stop);
        assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Stop)]);
        m.handle(
            ms(t0, 20),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(15)),
        );
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
        m.handle(
            ms(t0, 210),
            Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
        );
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(137)));
    }

    #[test]
    fn stop_during_a_restart_backoff_exits_with_the_crash_status() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(3)));
        let _ = actions(&mut m);
        m.handle(ms(t0, 150), Input::Stop);
        assert_eq!(actions(&mut m).last(), Some(&Action::Exit(3)));
    }

    #[test]
    fn reload_during_backoff_starts_at_once() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
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
        m.handle(ms(t0, 150), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
        let acts = actions(&mut m);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Exit(_))),
            "{acts:?}"
        );
        m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
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
        m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
        let acts = all_actions(&mut m);
        assert_eq!(acts[0], Action::Route(G1), "the first generation is routed");
        m.handle(ms(t0, 100), Input::Reload(1));
        assert_eq!(all_actions(&mut m), vec![Action::Spawn(G2)]);
        m.handle(ms(t0, 150), Input::WorkerReady(G2, 0));
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
        m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
        all_actions(&mut m);
        m.handle(ms(t0, 20), Input::Reload(1));
        m.handle(ms(t0, 30), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
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
        m.handle(ms(t0, 200), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
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

    /// A steered machine with `n` workers per generation, generation 1
    /// serving with every worker ready.
    fn pool(n: u32) -> (Machine, Instant) {
        let t0 = Instant::now();
        let mut m = Machine::new(
            Config {
                workers: n,
                ..steer_cfg()
            },
            t0,
        );
        assert_eq!(all_actions(&mut m), vec![Action::Spawn(G1)]);
        for w in 0..n {
            assert_eq!(m.active(), None, "ready before worker {w}");
            m.handle(ms(t0, 10), Input::WorkerReady(G1, w));
        }
        assert_eq!(m.active(), Some(G1));
        assert_eq!(all_actions(&mut m)[0], Action::Route(G1));
        (m, t0)
    }

    fn answers(acts: &[Action]) -> Vec<ReloadOutcome> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Answer(_, o) => Some(o.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn workers_a_generation_is_ready_once_every_worker_is() {
        let (mut m, t0) = pool(3);
        assert_eq!(m.alive_workers(), 3);
        // A duplicate READY=1 changes nothing.
        m.handle(ms(t0, 20), Input::WorkerReady(G1, 1));
        assert!(all_actions(&mut m).is_empty());
        // A reload (all at once): the new generation waits for all three.
        m.handle(ms(t0, 100), Input::Reload(1));
        assert_eq!(all_actions(&mut m), vec![Action::Spawn(G2)]);
        assert_eq!(m.alive_workers(), 6);
        m.handle(ms(t0, 110), Input::WorkerReady(G2, 2));
        m.handle(ms(t0, 120), Input::WorkerReady(G2, 0));
        assert!(all_actions(&mut m).is_empty(), "not all ready");
        m.handle(ms(t0, 130), Input::WorkerReady(G2, 1));
        let acts = all_actions(&mut m);
        assert_eq!(acts[0], Action::Route(G2));
        assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
        assert!(matches!(answers(&acts)[..], [ReloadOutcome::Ready { .. }]));
    }

    /// With a probe, as with READY=1, a worker's ready timeout is a
    /// failure, never readiness: in a reload, and for a worker restarted
    /// alone (which then counts as a failed start and is tried again).
    #[test]
    fn workers_a_probe_timeout_is_never_readiness() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            Config {
                workers: 2,
                ready: ReadyMode::Probe,
                ..steer_cfg()
            },
            t0,
        );
        let _ = all_actions(&mut m);
        m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
        m.handle(ms(t0, 10), Input::WorkerReady(G1, 1));
        let _ = all_actions(&mut m);
        assert_eq!(m.active(), Some(G1));
        // A reload whose second worker is never verified fails.
        m.handle(ms(t0, 100), Input::Reload(1));
        let _ = all_actions(&mut m);
        m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
        let _ = all_actions(&mut m);
        m.handle_timeout(ms(t0, 100 + 5000));
        let acts = all_actions(&mut m);
        assert!(
            matches!(
                answers(&acts)[..],
                [ReloadOutcome::Failed {
                    serving: Some(G1),
                    ..
                }]
            ),
            "{acts:?}"
        );
        assert_eq!(m.active(), Some(G1));
        // A worker of the serving generation restarted alone and never
        // verified is stopped at its ready timeout, not counted ready.
        m.handle(
            ms(t0, 6000),
            Input::WorkerExited(G1, 1, ExitStatus::Code(1)),
        );
        let _ = all_actions(&mut m);
        m.handle_timeout(ms(t0, 6100));
        assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G1, 1)]);
        assert!(m.worker_starting(G1, 1));
        m.handle_timeout(ms(t0, 6100 + 5000));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::StopWorker(G1, 1)), "{acts:?}");
        assert!(!m.worker_starting(G1, 1), "never counted ready");
        assert_eq!(m.starting_workers(G1), Vec::<u32>::new());
    }

    #[test]
    fn workers_one_that_exits_at_start_fails_the_whole_start() {
        let (mut m, t0) = pool(3);
        m.handle(ms(t0, 100), Input::Reload(1));
        let _ = all_actions(&mut m);
        m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
        m.handle(ms(t0, 120), Input::WorkerExited(G2, 1, ExitStatus::Code(3)));
        let acts = all_actions(&mut m);
        assert!(
            acts.contains(&Action::Stop(G2)),
            "the others stop: {acts:?}"
        );
        assert!(matches!(
            answers(&acts)[..],
            [ReloadOutcome::Failed {
                serving: Some(G1),
                ..
            }]
        ));
        assert_eq!(m.active(), Some(G1));
        // The generation goes once its last worker is reaped.
        m.handle(ms(t0, 130), Input::WorkerExited(G2, 0, ExitStatus::Code(0)));
        assert!(m.knows(G2));
        m.handle(ms(t0, 140), Input::WorkerExited(G2, 2, ExitStatus::Code(0)));
        assert!(!m.knows(G2));
    }

    #[test]
    fn workers_a_crashed_worker_is_restarted_alone_with_its_own_backoff() {
        let (mut m, t0) = pool(3);
        m.handle(
            ms(t0, 1000),
            Input::WorkerExited(G1, 1, ExitStatus::Code(1)),
        );
        let acts = all_actions(&mut m);
        assert_eq!(
            acts,
            vec![Action::Report(Event::WorkerCrashed {
                generation: G1,
                worker: 1,
                status: ExitStatus::Code(1),
                restart_in: Some(Duration::from_millis(100)),
            })]
        );
        assert_eq!(m.active(), Some(G1), "the others serve on");
        assert_eq!(m.next_deadline(), Some(ms(t0, 1100)));
        m.handle_timeout(ms(t0, 1100));
        assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G1, 1)]);
        assert_eq!(m.restarts(), 1);
        m.handle(ms(t0, 1150), Input::WorkerReady(G1, 1));
        // A second crash soon after: twice the delay.
        m.handle(
            ms(t0, 1200),
            Input::WorkerExited(G1, 1, ExitStatus::Signal(9)),
        );
        assert!(matches!(
            all_actions(&mut m)[..],
            [Action::Report(Event::WorkerCrashed {
                restart_in: Some(d),
                ..
            })] if d == Duration::from_millis(200)
        ));
        // A restarted worker that is never ready is stopped, then started
        // again.
        m.handle_timeout(ms(t0, 1400));
        assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G1, 1)]);
        m.handle_timeout(ms(t0, 1400 + 5000));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::StopWorker(G1, 1)), "{acts:?}");
        m.handle(
            ms(t0, 6500),
            Input::WorkerExited(G1, 1, ExitStatus::Code(0)),
        );
        assert!(matches!(
            all_actions(&mut m)[..],
            [Action::Report(Event::WorkerCrashed {
                restart_in: Some(_),
                ..
            })]
        ));
        // Every worker gone with nothing to restart (a clean exit under
        // on-failure): the generation has ended, as one process would.
        let (mut m, t0) = pool(2);
        m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
        assert_eq!(m.active(), Some(G1));
        m.handle(ms(t0, 200), Input::WorkerExited(G1, 1, ExitStatus::Code(0)));
        let acts = all_actions(&mut m);
        assert!(
            acts.iter()
                .any(|a| matches!(a, Action::Report(Event::Crashed { .. }))),
            "{acts:?}"
        );
        assert_eq!(acts.last(), Some(&Action::Exit(0)));
    }

    /// Drive a rolling reload of `n` workers, `k` at a time, with every
    /// new worker ready and every retired one exiting as soon as they can,
    /// one fact at a time; check that no more than n + k are ever alive.
    fn roll_all(m: &mut Machine, t0: Instant, n: u32, k: u32) -> Vec<Action> {
        m.handle(ms(t0, 100), Input::ReloadWith(1, Strategy::Rolling(k)));
        let mut seen = Vec::new();
        let mut facts = VecDeque::new();
        let mut at = 100;
        loop {
            assert!(m.alive_workers() <= n + k, "{} alive", m.alive_workers());
            for a in all_actions(m) {
                match &a {
                    Action::SpawnWorker(g, w) => facts.push_back(Input::WorkerReady(*g, *w)),
                    Action::StopWorker(g, w) => {
                        facts.push_back(Input::WorkerExited(*g, *w, ExitStatus::Code(0)));
                    }
                    _ => {}
                }
                seen.push(a);
            }
            let Some(next) = facts.pop_front() else {
                break;
            };
            at += 10;
            m.handle(ms(t0, at), next);
        }
        seen
    }

    #[test]
    fn rolling_replaces_workers_one_at_a_time_never_more_than_n_plus_1() {
        let (mut m, t0) = pool(4);
        let acts = roll_all(&mut m, t0, 4, 1);
        let spawned: Vec<u32> = acts
            .iter()
            .filter_map(|a| match a {
                Action::SpawnWorker(G2, w) => Some(*w),
                _ => None,
            })
            .collect();
        assert_eq!(spawned, vec![0, 1, 2, 3]);
        let stopped: Vec<u32> = acts
            .iter()
            .filter_map(|a| match a {
                Action::StopWorker(G1, w) => Some(*w),
                _ => None,
            })
            .collect();
        assert_eq!(stopped, vec![3, 2, 1], "the last old worker quiesces");
        // The shares follow the ready workers: 1 of 4, 2 of 4, 3 of 4.
        let splits: Vec<Vec<(Generation, u32)>> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Split(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            splits,
            vec![
                vec![(G1, 75), (G2, 25)],
                vec![(G1, 50), (G2, 50)],
                vec![(G1, 25), (G2, 75)],
                vec![],
            ]
        );
        assert_eq!(m.active(), Some(G2));
        assert!(acts.contains(&Action::Route(G2)));
        assert!(acts.contains(&Action::MeasureQueue(G1)));
        assert!(matches!(answers(&acts)[..], [ReloadOutcome::Ready { .. }]));
        assert!(m.shares().is_empty());
    }

    #[test]
    fn rolling_two_at_a_time_never_more_than_n_plus_2() {
        let (mut m, t0) = pool(5);
        let acts = roll_all(&mut m, t0, 5, 2);
        assert_eq!(m.active(), Some(G2));
        assert_eq!(
            acts.iter()
                .filter(|a| matches!(a, Action::SpawnWorker(G2, _)))
                .count(),
            5
        );
    }

    #[test]
    fn rolling_a_failing_new_worker_rolls_everything_back() {
        let (mut m, t0) = pool(4);
        m.handle(ms(t0, 100), Input::ReloadWith(7, Strategy::Rolling(1)));
        assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G2, 0)]);
        m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Split(vec![(G1, 75), (G2, 25)])));
        assert!(acts.contains(&Action::StopWorker(G1, 3)));
        m.handle(ms(t0, 120), Input::WorkerExited(G1, 3, ExitStatus::Code(0)));
        assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G2, 1)]);
        // The second new worker fails.
        m.handle(ms(t0, 130), Input::WorkerExited(G2, 1, ExitStatus::Code(1)));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Split(vec![])), "{acts:?}");
        assert!(
            acts.contains(&Action::MeasureQueue(G2)),
            "the new generation had a share: it quiesces: {acts:?}"
        );
        assert!(matches!(
            answers(&acts)[..],
            [ReloadOutcome::Failed {
                serving: Some(G1),
                ..
            }]
        ));
        // The old generation's stopped worker starts again (5 alive at most).
        assert!(acts.contains(&Action::SpawnWorker(G1, 3)), "{acts:?}");
        assert_eq!(m.active(), Some(G1));
        assert!(m.alive_workers() <= 5);
        // A new worker not ready in time rolls back the same way.
        let (mut m, t0) = pool(2);
        m.handle(ms(t0, 100), Input::ReloadWith(8, Strategy::Rolling(1)));
        let _ = all_actions(&mut m);
        assert_eq!(m.next_deadline(), Some(ms(t0, 5100)));
        m.handle_timeout(ms(t0, 5100));
        let acts = all_actions(&mut m);
        assert!(
            acts.contains(&Action::Stop(G2)),
            "no share: stopped at once"
        );
        assert!(matches!(answers(&acts)[..], [ReloadOutcome::Failed { .. }]));
    }

    #[test]
    fn rolling_by_default_for_a_plain_reload() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            Config {
                workers: 2,
                reload: Strategy::Rolling(1),
                ..steer_cfg()
            },
            t0,
        );
        let _ = all_actions(&mut m);
        m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
        m.handle(ms(t0, 10), Input::WorkerReady(G1, 1));
        let _ = all_actions(&mut m);
        m.handle(ms(t0, 100), Input::Reload(1));
        assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G2, 0)]);
        // `rollback` during a rolling reload.
        m.handle(ms(t0, 110), Input::Rollback(2));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Stop(G2)));
        assert!(answers(&acts).contains(&ReloadOutcome::RolledBack {
            generation: G2,
            serving: G1
        }));
    }

    /// Generation 2 a canary with `percent`, beside generation 1.
    fn canary(percent: u32, promote_after: Option<Duration>) -> (Machine, Instant) {
        let (mut m, t0) = pool(2);
        m.handle(
            ms(t0, 100),
            Input::ReloadWith(
                1,
                Strategy::Canary {
                    percent,
                    promote_after,
                },
            ),
        );
        assert_eq!(all_actions(&mut m), vec![Action::Spawn(G2)]);
        m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
        m.handle(ms(t0, 120), Input::WorkerReady(G2, 1));
        let acts = all_actions(&mut m);
        assert_eq!(
            acts[0],
            Action::Split(vec![(G1, 100 - percent), (G2, percent)])
        );
        assert!(!acts.iter().any(|a| matches!(a, Action::Route(_))));
        assert!(matches!(
            answers(&acts)[..],
            [ReloadOutcome::Canary {
                generation: G2,
                serving: G1,
                ..
            }]
        ));
        assert_eq!(m.active(), Some(G1));
        assert_eq!(m.canary(), Some(G2));
        (m, t0)
    }

    #[test]
    fn canary_gets_its_share_then_promote_switches() {
        let (mut m, t0) = canary(20, None);
        assert_eq!(m.shares(), &[(G1, 80), (G2, 20)]);
        // Another reload waits for the canary's verdict.
        m.handle(ms(t0, 200), Input::Reload(5));
        assert_eq!(
            answers(&all_actions(&mut m)),
            vec![ReloadOutcome::Refused(Refusal::CanaryRunning(G2))]
        );
        m.handle(ms(t0, 300), Input::Promote(6));
        let acts = all_actions(&mut m);
        assert_eq!(acts[0], Action::Split(vec![]));
        assert_eq!(acts[1], Action::Route(G2));
        assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
        assert_eq!(
            answers(&acts),
            vec![ReloadOutcome::Promoted {
                generation: G2,
                replaced: G1
            }]
        );
        assert_eq!(m.active(), Some(G2));
        // Nothing left to promote.
        m.handle(ms(t0, 400), Input::Promote(7));
        assert_eq!(
            answers(&all_actions(&mut m)),
            vec![ReloadOutcome::Refused(Refusal::NothingToPromote)]
        );
    }

    #[test]
    fn canary_rollback_sends_everything_back_and_quiesces_it() {
        let (mut m, t0) = canary(20, None);
        m.handle(ms(t0, 300), Input::Rollback(6));
        let acts = all_actions(&mut m);
        assert_eq!(acts[0], Action::Split(vec![]));
        assert!(acts.contains(&Action::MeasureQueue(G2)), "{acts:?}");
        assert!(!acts.contains(&Action::Stop(G2)), "it quiesces first");
        assert_eq!(m.active(), Some(G1));
        assert_eq!(m.canary(), None);
        // It stops once its queue has been empty for the quiet period.
        m.handle(ms(t0, 310), Input::Queued(G2, 0));
        m.handle_timeout(ms(t0, 510));
        m.handle(ms(t0, 511), Input::Queued(G2, 0));
        assert!(all_actions(&mut m).contains(&Action::Stop(G2)));
    }

    #[test]
    fn canary_a_crash_rolls_back_at_once() {
        let (mut m, t0) = canary(10, Some(Duration::from_secs(60)));
        m.handle(
            ms(t0, 300),
            Input::WorkerExited(G2, 1, ExitStatus::Signal(11)),
        );
        let acts = all_actions(&mut m);
        assert_eq!(acts[0], Action::Split(vec![]));
        assert!(
            acts.iter()
                .any(|a| matches!(a, Action::Report(Event::RolledBack { generation: G2, .. }))),
            "{acts:?}"
        );
        assert!(acts.contains(&Action::MeasureQueue(G2)));
        assert_eq!(m.canary(), None);
        // No promotion comes later.
        m.handle_timeout(ms(t0, 120 + 60_000));
        assert_eq!(m.active(), Some(G1));
    }

    #[test]
    fn canary_promotes_itself_after_promote_after() {
        let (mut m, t0) = canary(20, Some(Duration::from_secs(30)));
        assert_eq!(m.next_deadline(), Some(ms(t0, 120 + 30_000)));
        m.handle_timeout(ms(t0, 120 + 30_000));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Route(G2)));
        assert!(acts.contains(&Action::Report(Event::Promoted {
            generation: G2,
            replaced: G1,
            automatic: true
        })));
        assert_eq!(m.active(), Some(G2));
    }

    #[test]
    fn canary_takes_over_when_the_serving_generation_dies() {
        let t0 = Instant::now();
        let mut m = Machine::new(steer_cfg(), t0);
        let _ = all_actions(&mut m);
        m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
        m.handle(
            ms(t0, 20),
            Input::ReloadWith(
                1,
                Strategy::Canary {
                    percent: 10,
                    promote_after: None,
                },
            ),
        );
        m.handle(ms(t0, 30), Input::WorkerReady(G2, 0));
        assert_eq!(m.canary(), Some(G2));
        let _ = all_actions(&mut m);
        m.handle(ms(t0, 40), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Route(G2)), "{acts:?}");
        assert!(spawns(&acts).is_empty(), "no restart: {acts:?}");
        assert_eq!(m.active(), Some(G2));
        assert_eq!(m.canary(), None);
    }

    #[test]
    fn workers_not_started_after_a_spawn_failure_end_the_generation() {
        let (mut m, t0) = pool(3);
        m.handle(ms(t0, 100), Input::Reload(1));
        let _ = all_actions(&mut m);
        // Worker 0 started, worker 1 could not be: worker 2 never is (the
        // machine says so; the driver spawns only starting workers).
        m.handle(
            ms(t0, 101),
            Input::WorkerSpawnFailed(G2, 1, "fork: EAGAIN".into()),
        );
        assert!(!m.worker_starting(G2, 2));
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Stop(G2)), "{acts:?}");
        assert!(m.knows(G2));
        m.handle(
            ms(t0, 150),
            Input::WorkerExited(G2, 0, ExitStatus::Signal(15)),
        );
        assert!(!m.knows(G2));
        assert_eq!(m.active(), Some(G1));
    }

    #[test]
    fn canary_needs_a_serving_generation_and_a_stop_ends_it() {
        let t0 = Instant::now();
        let mut m = Machine::new(steer_cfg(), t0);
        let _ = all_actions(&mut m);
        m.handle(
            ms(t0, 5),
            Input::ReloadWith(
                1,
                Strategy::Canary {
                    percent: 20,
                    promote_after: None,
                },
            ),
        );
        assert_eq!(
            answers(&all_actions(&mut m)),
            vec![ReloadOutcome::Refused(Refusal::NothingServing)]
        );
        let (mut m, t0) = canary(20, None);
        m.handle(ms(t0, 300), Input::Stop);
        let acts = all_actions(&mut m);
        assert!(acts.contains(&Action::Stop(G1)) && acts.contains(&Action::Stop(G2)));
    }

    #[test]
    fn workers_and_rollouts_survive_an_upgrade() {
        let (mut m, t0) = canary(20, Some(Duration::from_secs(30)));
        m.handle(ms(t0, 200), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
        let _ = all_actions(&mut m);
        let text = serde_json::to_string(&m.save()).unwrap();
        let saved: Saved = serde_json::from_str(&text).unwrap();
        let mut back = Machine::restore(
            Config {
                workers: 2,
                ..steer_cfg()
            },
            saved,
            ms(t0, 250),
        );
        assert_eq!(back.canary(), Some(G2));
        assert_eq!(back.shares(), &[(G1, 80), (G2, 20)]);
        assert_eq!(back.workers(G1)[0].1, WorkerPhase::Backoff);
        let (a, b) = (m.next_deadline().unwrap(), back.next_deadline().unwrap());
        let gap = if a > b { a - b } else { b - a };
        assert!(gap < Duration::from_millis(5), "deadline moved by {gap:?}");
        back.handle_timeout(ms(t0, 310));
        assert_eq!(all_actions(&mut back), vec![Action::SpawnWorker(G1, 0)]);
        // A state saved before workers existed has no pools: each
        // generation gets its one worker.
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in ["pools", "rollout", "queued_strategy", "split", "surge"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let saved: Saved = serde_json::from_value(old).unwrap();
        let back = Machine::restore(steer_cfg(), saved, ms(t0, 250));
        assert_eq!(back.workers(G1).len(), 1);
        assert!(back.worker_alive(G1, 0));
    }

    #[test]
    fn pending_reloads_are_counted_by_the_machine() {
        let (mut m, t0) = serving(RestartPolicy::OnFailure);
        assert_eq!(m.pending_reloads(), 0);
        m.handle(ms(t0, 100), Input::Reload(1));
        m.handle(ms(t0, 110), Input::Reload(2));
        m.handle(ms(t0, 120), Input::Reload(3));
        assert_eq!(m.pending_reloads(), 3);
        m.handle(ms(t0, 130), Input::WorkerReady(G2, 0));
        assert_eq!(m.pending_reloads(), 2, "the queued ones ride on gen 3");
        m.handle(ms(t0, 140), Input::WorkerReady(G3, 0));
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
