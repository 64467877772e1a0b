//! The machine's two entry points: an input ([`Machine::handle`]) and the
//! passing of time ([`Machine::handle_timeout`]), routed to the phases'
//! handlers. It decides nothing itself.

use super::*;

impl Machine {
    /// Feed one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.done {
            return;
        }
        let now = self.tick(now);
        match input {
            Input::WorkerExecuted(g, w) => self.worker_executed(now, g, w),
            Input::WorkerReady(g, w) => self.worker_ready(now, g, w),
            Input::WorkerExited(g, w, status) => {
                self.worker_exited(now, g, w, Ended::Exited(status));
            }
            Input::WorkerSpawnFailed(g, w, why) => {
                // A generation's workers are spawned in order, all at once:
                // those after one that could not be spawned never were,
                // and now never will be (the start has failed).
                if matches!(self.state(g), Some(State::Starting { .. }))
                    && Some(g) != self.rolling_new()
                    && let Some(pool) = self.pool_mut(g)
                {
                    for x in pool.iter_mut().skip(w as usize + 1) {
                        if matches!(x.state, WorkerState::Starting { .. }) {
                            x.state = WorkerState::Vacant;
                        }
                    }
                }
                self.worker_exited(now, g, w, Ended::SpawnFailed(why));
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
            .states()
            .filter_map(|(g, s)| match s {
                State::Starting { .. } if Some(g) == rolling || self.exec_pending(g) => None,
                State::Starting { deadline, .. } if *deadline <= now => Some((g, Due::Ready)),
                State::Draining {
                    deadline: Some(d), ..
                } if *d <= now => Some((g, Due::Drain)),
                State::Quiescing { check_at, .. } if *check_at <= now => Some((g, Due::Measure)),
                _ => None,
            })
            .collect();
        for (g, due) in due {
            match due {
                Due::Drain => {
                    // Re-check: an earlier entry of `due` may have changed it.
                    let Some(State::Draining { deadline, .. }) = self.state_mut(g) else {
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
                        // Alive for the delay: each worker is ready, so
                        // the generation is, by the one ready path.
                        for w in self.starting_workers(g) {
                            self.worker_ready(now, g, w);
                        }
                    } else {
                        let why = StartFailure::NotReady(self.cfg.ready_timeout);
                        self.fail_start(now, g, why, Left::Running);
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
                .pool(g)
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
                        self.worker_ready(now, g, w);
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
}
