//! Processes that exit: a generation's or a worker's, while starting,
//! serving, canary or draining; crash restarts with backoff and the start
//! limit. Never starts a generation a policy forbids.

use super::*;

impl Machine {
    /// Generation `g` has ended: its last process is gone (or none could
    /// be spawned) and none will be started again. A start that fails, a
    /// crash of the serving generation (restart, or stop, by the crash
    /// policy), the end of a drain; `g` is forgotten.
    pub(super) fn generation_ended(&mut self, now: Instant, g: Generation, ended: Ended) {
        // A generation that could not be spawned counts as exit status 127,
        // as a shell reports a command it cannot run.
        let status = match ended {
            Ended::Exited(s) => s,
            Ended::SpawnFailed(_) => ExitStatus::Code(127),
        };
        // Killed by the stop signal we sent it: a clean stop (uvicorn and
        // Puma drain, then re-raise SIGTERM).
        let stopped_cleanly = status == ExitStatus::Signal(self.cfg.stop_signal)
            && matches!(self.state(g), Some(State::Draining { .. }));
        if self.exit_with == Some(g) {
            self.exit_status = Some(if stopped_cleanly {
                ExitStatus::Code(0)
            } else {
                status
            });
        }
        match self.state(g) {
            None => return,
            Some(State::Starting { .. }) => {
                let why = match ended {
                    Ended::SpawnFailed(e) => StartFailure::Spawn(e),
                    Ended::Exited(s) => StartFailure::Exited(s),
                };
                self.fail_start(now, g, why, Left::Nothing);
            }
            Some(State::Active { since }) => {
                let since = *since;
                self.forget(g);
                self.last_status = Some(status);
                if now.saturating_duration_since(since) >= self.cfg.healthy_after {
                    self.failures = 0;
                }
                // A canary takes over as a starting generation would.
                let starting = self.starting().or_else(|| self.canary());
                let restart = self.restart_policy().restarts(status)
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
                self.forget(g);
                self.report(Event::Drained {
                    generation: g,
                    after: now.saturating_duration_since(since),
                    status,
                });
            }
        }
        self.maybe_exit();
    }

    /// A worker was reaped (or could not be spawned): what it means for
    /// its generation (a failed start, a rollback, a restart of the
    /// worker alone); then, if it was the generation's last process and
    /// none will be started again, the generation has ended
    /// ([`Machine::generation_ended`], the one place a generation ends).
    pub(super) fn worker_exited(&mut self, now: Instant, g: Generation, w: u32, ended: Ended) {
        let status = match &ended {
            Ended::Exited(s) => *s,
            Ended::SpawnFailed(_) => ExitStatus::Code(127),
        };
        let Some(worker) = self.worker_mut(g, w) else {
            // A generation the machine has forgotten, or never had.
            self.generation_ended(now, g, ended);
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
        match self.state(g) {
            None | Some(State::Quiescing { .. } | State::Draining { .. }) => {}
            Some(State::Starting { .. }) if Some(g) == self.rolling_new() => {
                let cause = RollbackCause::Worker {
                    worker: w,
                    why: why.clone(),
                };
                self.roll_back(now, cause, Some(why));
            }
            // The last one gone: the generation's end says why it failed.
            Some(State::Starting { .. }) if alive > 0 => {
                self.fail_start(now, g, why, Left::Running);
            }
            Some(State::Starting { .. }) => {}
            Some(State::Active { .. }) => {
                let restart = matches!(was, WorkerState::Retiring { restart: true, .. });
                // A rolling reload's old worker: its share went first.
                let replaced = matches!(was, WorkerState::Retiring { restart: false, .. });
                if !replaced && (n > 1 || restart) && !self.stopping() {
                    self.worker_crashed(now, g, w, status, &was);
                }
            }
            Some(State::Canary { .. }) => {
                let cause = RollbackCause::Worker {
                    worker: w,
                    why: why.clone(),
                };
                self.roll_back(now, cause, None);
            }
        }
        if alive == 0 && !self.restarts_pending(g) && self.gens.contains_key(&g) {
            self.generation_ended(now, g, ended);
        }
        self.roll(now);
        self.fill(now);
        self.maybe_exit();
    }

    /// Whether a worker of `g` waits for its restart: only the serving
    /// generation's, and not once the supervisor stops.
    fn restarts_pending(&self, g: Generation) -> bool {
        self.gens.get(&g).is_some_and(|x| {
            matches!(x.state, State::Active { .. })
                && !self.stopping()
                && x.workers
                    .iter()
                    .any(|w| matches!(w.state, WorkerState::Backoff { .. }))
        })
    }

    /// A worker of a serving generation exited: restart it alone, with its
    /// own backoff, if the crash policy says so.
    pub(super) fn worker_crashed(
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
        let wanted = self.restart_policy().restarts(status)
            || matches!(was, WorkerState::Retiring { restart: true, .. });
        let restart = wanted && self.may_start(now, status);
        let mut restart_in = None;
        let cfg = self.cfg.clone();
        if let Some(x) = self.worker_mut(g, w) {
            if healthy {
                x.failures = 0;
            }
            if restart {
                let delay = backoff(&cfg, x.failures);
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

    pub(super) fn schedule_restart(&mut self, now: Instant) -> Duration {
        let delay = backoff(&self.cfg, self.failures);
        self.failures = self.failures.saturating_add(1);
        self.restart_at = Some(now + delay);
        delay
    }

    /// Whether the start limit allows one more start by the crash policy;
    /// if not, say so (the caller then stops with `status`).
    pub(super) fn may_start(&mut self, now: Instant, status: ExitStatus) -> bool {
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
}

/// The delay before a restart after `failures` failures in a row (of a
/// generation, or of one worker): the initial delay, doubled with each
/// failure, capped.
fn backoff(cfg: &Config, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    cfg.backoff_initial
        .saturating_mul(factor)
        .min(cfg.backoff_max)
}
