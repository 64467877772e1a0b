//! Starting a generation: reload requests (coalesced while one starts),
//! the cap on live generations, the spawn, readiness (of each worker, then
//! of the generation: the switch), and a start that fails. Never signals a
//! generation that serves.

use super::*;

impl Machine {
    /// Every worker of starting generation `g` is ready (the only way
    /// here is [`Machine::worker_ready`], directly or through a
    /// rolling reload's [`Machine::roll`]): the switch, or a canary's
    /// share.
    pub(super) fn generation_ready(&mut self, now: Instant, g: Generation) {
        let Some(State::Starting {
            spawned, tickets, ..
        }) = self.state(g)
        else {
            return;
        };
        let (after, tickets) = (now.saturating_duration_since(*spawned), tickets.clone());
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
            self.set_state(g, State::Canary { since: now });
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
        if let Some(State::Active { since }) = replaced.and_then(|r| self.state(r))
            && now.saturating_duration_since(*since) >= self.cfg.healthy_after
        {
            self.failures = 0;
        }
        self.set_state(g, State::Active { since: now });
        self.served = true;
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

    pub(super) fn handle_reload(&mut self, now: Instant, ticket: Ticket, strategy: Strategy) {
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
    pub(super) fn start(&mut self, now: Instant, strategy: Strategy, tickets: Vec<Ticket>) {
        let old = self.active();
        match (strategy, old) {
            (Strategy::Rolling(k), Some(old)) => {
                let n = self.workers_per_generation();
                self.cap(now);
                self.last += 1;
                let g = Generation(self.last);
                let state = State::Starting {
                    spawned: now,
                    // Unused: each worker has its own deadline.
                    deadline: now + self.cfg.ready_timeout,
                    cause: Cause::Reload,
                    tickets,
                };
                let workers = vec![Worker::vacant(); n as usize];
                self.gens.insert(g, Gen { state, workers });
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

    /// A worker's exec succeeded. With a ready delay, the delay counts
    /// from now: a process still in exec is not yet alive for it (a hung
    /// exec must not make a generation ready).
    pub(super) fn worker_executed(&mut self, now: Instant, g: Generation, w: u32) {
        let ReadyMode::Delay(d) = self.cfg.ready else {
            if let Some(WorkerState::Starting { executed, .. }) =
                self.worker_mut(g, w).map(|x| &mut x.state)
            {
                *executed = true;
            }
            return;
        };
        let Some(WorkerState::Starting {
            executed, deadline, ..
        }) = self.worker_mut(g, w).map(|x| &mut x.state)
        else {
            return;
        };
        *executed = true;
        *deadline = (*deadline).max(now + d);
        if let Some(State::Starting { deadline, .. }) = self.state_mut(g) {
            *deadline = (*deadline).max(now + d);
        }
    }

    pub(super) fn worker_ready(&mut self, now: Instant, g: Generation, w: u32) {
        let Some(worker) = self.worker_mut(g, w) else {
            return;
        };
        if !matches!(worker.state, WorkerState::Starting { .. }) {
            // A duplicate READY=1, or one from a worker already stopped.
            return;
        }
        worker.state = WorkerState::Ready { since: now };
        match self.state(g) {
            Some(State::Starting { .. }) if Some(g) == self.rolling_new() => self.roll(now),
            Some(State::Starting { .. }) => {
                let all = self.pool(g).is_some_and(|p| {
                    p.iter()
                        .all(|x| matches!(x.state, WorkerState::Ready { .. }))
                });
                if all {
                    self.generation_ready(now, g);
                }
            }
            _ => {}
        }
    }

    /// A worker started alone was not ready in time.
    pub(super) fn worker_not_ready(&mut self, now: Instant, g: Generation, w: u32) {
        let why = StartFailure::NotReady(self.cfg.ready_timeout);
        if Some(g) == self.rolling_new() {
            let cause = RollbackCause::Worker {
                worker: w,
                why: why.clone(),
            };
            self.roll_back(now, cause, Some(why));
            return;
        }
        if self.canary() == Some(g) {
            let cause = RollbackCause::Worker {
                worker: w,
                why: why.clone(),
            };
            self.roll_back(now, cause, None);
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

    /// A starting generation failed: report it, answer its requesters, stop
    /// it if it still runs, then restart, start the queued reload or stop
    /// the supervisor as the crash policy says.
    pub(super) fn fail_start(
        &mut self,
        now: Instant,
        g: Generation,
        why: StartFailure,
        left: Left,
    ) {
        let Some(Gen {
            state: State::Starting { cause, tickets, .. },
            workers,
        }) = self.gens.remove(&g)
        else {
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
            if self.restart_policy().restarts(status) && self.may_start(now, status) {
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
        if left == Left::Nothing {
            self.push(Action::Release(g));
        } else {
            // Its processes stay known until each is reaped; `retire` or
            // `drain` below gives it its state.
            let state = State::Draining {
                since: now,
                deadline: None,
            };
            self.gens.insert(g, Gen { state, workers });
        }
        match left {
            Left::Nothing => {}
            // A rolling reload's workers had a share of new connections:
            // their queue is answered before they stop.
            Left::Serving if self.cfg.quiesce.is_some() => self.retire(now, g),
            Left::Serving | Left::Running => self.drain(now, g),
        }
        if let Some(status) = stop_with {
            self.begin_stop(now, Some(status));
        } else {
            self.start_queued(now);
        }
    }

    pub(super) fn start_queued(&mut self, now: Instant) {
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

    pub(super) fn spawn(&mut self, now: Instant, cause: Cause, tickets: Vec<Ticket>) {
        if cause != Cause::Reload {
            self.starts.push_back(now);
        }
        self.cap(now);
        self.last += 1;
        let g = Generation(self.last);
        let wait = self.ready_wait();
        let state = State::Starting {
            spawned: now,
            deadline: now + wait,
            cause,
            tickets,
        };
        let worker = Worker {
            state: WorkerState::Starting {
                spawned: now,
                deadline: now + wait,
                executed: false,
            },
            failures: 0,
            restarts: 0,
        };
        let workers = vec![worker; self.workers_per_generation() as usize];
        self.gens.insert(g, Gen { state, workers });
        self.push(Action::Spawn(g));
    }

    /// Make room for one more generation under `--max-generations`: while
    /// the live generations (those not yet killed) would be more than the
    /// cap, the oldest one that receives no new connections (quiescing or
    /// draining) is killed at once. Generations that serve (starting,
    /// active, canary) are never cut: with none to cut, the cap is
    /// exceeded for this start (the cap's minimum, 2, leaves room for the
    /// serving one and the new one).
    pub(super) fn cap(&mut self, now: Instant) {
        let Some(max) = self.cfg.max_generations else {
            return;
        };
        loop {
            let live = self
                .states()
                .filter(|(_, s)| !matches!(s, State::Draining { deadline: None, .. }))
                .count();
            if live < max {
                return;
            }
            let Some((g, was)) = self.states().find_map(|(g, s)| match s {
                State::Quiescing { .. } => Some((g, Phase::Quiescing)),
                State::Draining {
                    deadline: Some(_), ..
                } => Some((g, Phase::Draining)),
                _ => None,
            }) else {
                return;
            };
            self.report(Event::Cut {
                generation: g,
                was,
                max,
            });
            let since = match self.state(g) {
                Some(State::Draining { since, .. }) => *since,
                _ => now,
            };
            self.set_state(
                g,
                State::Draining {
                    since,
                    deadline: None,
                },
            );
            self.push(Action::Kill(g));
        }
    }
}
