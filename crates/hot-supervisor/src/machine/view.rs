//! Making a new machine, and what the driver and the status may read of
//! it. Reads only: nothing here
//! changes a generation.

use super::*;

impl Machine {
    /// A machine that starts generation 1 at once.
    pub fn new(cfg: Config, now: Instant) -> Machine {
        let mut m = Machine {
            cfg,
            gens: BTreeMap::new(),
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
            served: false,
            now,
            starts: VecDeque::new(),
            rollout: None,
            queued_strategy: None,
            split: Vec::new(),
            surge: 1,
            actions: VecDeque::new(),
        };
        m.spawn(now, Cause::Initial, Vec::new());
        m
    }

    /// The crash policy in force: [`Config::restart`], except that while
    /// taking over, until a generation of ours has served, a failed start
    /// is final ([`Config::first_start_final`]).
    pub(super) fn restart_policy(&self) -> RestartPolicy {
        if self.cfg.first_start_final && !self.served {
            RestartPolicy::Never
        } else {
            self.cfg.restart
        }
    }

    /// The next action for the driver, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] must be called next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let rolling = self.rolling_new();
        let timers = self.states().filter_map(|(g, s)| match s {
            State::Starting { .. } if Some(g) == rolling || self.exec_pending(g) => None,
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
    pub(super) fn worker_timers(&self) -> Vec<(Generation, u32, Instant, WorkerDue)> {
        let rolling = self.rolling_new();
        let mut out = Vec::new();
        for (g, x) in &self.gens {
            let (state, pool) = (Some(&x.state), &x.workers);
            let alone = matches!(state, Some(State::Active { .. } | State::Canary { .. }))
                || Some(*g) == rolling;
            let draining = matches!(state, Some(State::Draining { .. }));
            for (w, worker) in pool.iter().enumerate() {
                let w = w as u32;
                match worker.state {
                    // A ready delay counts from the exec.
                    WorkerState::Starting {
                        executed: false, ..
                    } if self.delays() => {}
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

    /// Whether readiness is a delay.
    pub(super) fn delays(&self) -> bool {
        matches!(self.cfg.ready, ReadyMode::Delay(_))
    }

    /// With a ready delay: whether a worker of `g` has not exec'd yet (the
    /// generation's delay then waits for [`Input::WorkerExecuted`]).
    pub(super) fn exec_pending(&self, g: Generation) -> bool {
        self.delays()
            && self.pool(g).is_some_and(|p| {
                p.iter().any(|x| {
                    matches!(
                        x.state,
                        WorkerState::Starting {
                            executed: false,
                            ..
                        }
                    )
                })
            })
    }

    /// The generation of a rolling reload under way, if any.
    pub(super) fn rolling_new(&self) -> Option<Generation> {
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
        let Some(pool) = self.pool(g) else {
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
        self.worker(g, w)
            .is_some_and(|x| matches!(x.state, WorkerState::Starting { .. }))
    }

    /// The workers of `g` that have not proven ready yet.
    pub fn starting_workers(&self, g: Generation) -> Vec<u32> {
        self.pool(g).map_or_else(Vec::new, |p| {
            p.iter()
                .enumerate()
                .filter(|(_, x)| matches!(x.state, WorkerState::Starting { .. }))
                .map(|(w, _)| w as u32)
                .collect()
        })
    }

    /// The generations with a worker that has not proven ready yet.
    pub fn generations_with_starting_workers(&self) -> Vec<Generation> {
        self.gens
            .iter()
            .filter(|(_, x)| {
                x.workers
                    .iter()
                    .any(|x| matches!(x.state, WorkerState::Starting { .. }))
            })
            .map(|(g, _)| *g)
            .collect()
    }

    /// Whether worker `w` of `g` has a process the machine has not yet
    /// seen exit.
    pub fn worker_alive(&self, g: Generation, w: u32) -> bool {
        self.worker(g, w).is_some_and(|x| x.state.alive())
    }

    /// Workers alive, every generation counted.
    pub fn alive_workers(&self) -> u32 {
        self.all_workers().filter(|w| w.state.alive()).count() as u32
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
        self.states()
            .map(|(g, s)| match s {
                State::Starting { spawned, .. } => (g, Phase::Starting, *spawned),
                State::Active { since } => (g, Phase::Active, *since),
                State::Quiescing { since, .. } => (g, Phase::Quiescing, *since),
                State::Draining { since, .. } => (g, Phase::Draining, *since),
                State::Canary { since } => (g, Phase::Canary, *since),
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
        self.gens.contains_key(&g)
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
            .states()
            .map(|(_, s)| match s {
                State::Starting { tickets, .. } => tickets.len(),
                _ => 0,
            })
            .sum();
        carried + self.queued.as_ref().map_or(0, Vec::len)
    }

    /// Time must never go backwards: a driver bug, caught in debug builds;
    /// in release builds an earlier time is treated as the latest seen.
    pub(super) fn tick(&mut self, now: Instant) -> Instant {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
        self.now
    }

    /// Whether the machine has asked the driver to exit.
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How long a new generation or worker has to become ready: the ready
    /// timeout, or the delay that makes it ready.
    pub(super) fn ready_wait(&self) -> Duration {
        match self.cfg.ready {
            ReadyMode::Notify | ReadyMode::Probe => self.cfg.ready_timeout,
            ReadyMode::Delay(d) => d,
        }
    }
}
