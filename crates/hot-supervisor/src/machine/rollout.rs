//! Rolling and canary reloads: workers replaced K at a time, a canary's
//! share, promote and rollback. Never lets more than N+K workers live.

use super::*;

impl Machine {
    /// The next step of a rolling reload: when every new worker is ready,
    /// the switch; else retire old workers that ready new ones replace
    /// (keeping one until the switch), set the shares, and start new
    /// workers as far as N+K allows.
    pub(super) fn roll(&mut self, now: Instant) {
        let Some(Rollout::Rolling { old, new, k }) = self.rollout.clone() else {
            return;
        };
        let n = self.workers_per_generation();
        let count = |m: &Machine, g: Generation, f: fn(&WorkerState) -> bool| {
            m.pool(g)
                .map_or(0, |p| p.iter().filter(|x| f(&x.state)).count() as u32)
        };
        let ready = |s: &WorkerState| matches!(s, WorkerState::Ready { .. });
        let new_ready = count(self, new, ready);
        if new_ready >= n {
            self.rollout = None;
            self.generation_ready(now, new);
            return;
        }
        let old_serves = matches!(self.state(old), Some(State::Active { .. }));
        let old_ready = if old_serves {
            count(self, old, ready)
        } else {
            0
        };
        let extra = (old_ready + new_ready)
            .saturating_sub(n)
            .min(old_ready.saturating_sub(1));
        let victims: Vec<u32> = self.pool(old).map_or(Vec::new(), |p| {
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
        let vacant: Vec<u32> = self.pool(new).map_or(Vec::new(), |p| {
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
    pub(super) fn fill(&mut self, now: Instant) {
        if self.rollout.is_some() || self.stopping() {
            return;
        }
        let Some(g) = self.active() else {
            return;
        };
        let cap = self.workers_per_generation() + self.surge;
        let vacant: Vec<u32> = self.pool(g).map_or(Vec::new(), |p| {
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
    pub(super) fn spawn_worker(&mut self, now: Instant, g: Generation, w: u32, counted: bool) {
        if counted {
            self.starts.push_back(now);
        }
        let wait = self.ready_wait();
        if let Some(x) = self.worker_mut(g, w) {
            x.state = WorkerState::Starting {
                spawned: now,
                deadline: now + wait,
                executed: false,
            };
        }
        self.push(Action::SpawnWorker(g, w));
    }

    pub(super) fn handle_promote(&mut self, now: Instant, ticket: Ticket) {
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
    pub(super) fn promote(&mut self, now: Instant, automatic: bool) {
        let Some(Rollout::Canary { old, new, .. }) = self.rollout.take() else {
            return;
        };
        self.set_state(new, State::Active { since: now });
        self.set_split(Vec::new());
        self.push(Action::Route(new));
        self.report(Event::Promoted {
            generation: new,
            replaced: old,
            automatic,
        });
        if matches!(self.state(old), Some(State::Active { .. })) {
            self.retire(now, old);
        }
        self.start_queued(now);
    }

    pub(super) fn handle_rollback(&mut self, now: Instant, ticket: Ticket) {
        let outcome = match &self.rollout {
            Some(r) => {
                let (old, new) = (r.old_generation(), r.new_generation());
                self.roll_back(now, RollbackCause::Asked, Some(StartFailure::RolledBack));
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
    pub(super) fn roll_back(
        &mut self,
        now: Instant,
        why: RollbackCause,
        failure: Option<StartFailure>,
    ) {
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
        match self.state(new) {
            Some(State::Starting { .. }) => {
                let left = match (self.alive_in(new) > 0, traffic) {
                    (false, _) => Left::Nothing,
                    (true, false) => Left::Running,
                    (true, true) => Left::Serving,
                };
                let failure = failure.unwrap_or(StartFailure::RolledBack);
                self.fail_start(now, new, failure, left);
            }
            Some(State::Canary { .. }) => self.retire(now, new),
            _ => {}
        }
        self.fill(now);
    }

    /// Ask steering for these shares (percent), unless already asked.
    pub(super) fn set_split(&mut self, shares: Vec<(Generation, u32)>) {
        if shares == self.split {
            return;
        }
        self.split = shares.clone();
        self.push(Action::Split(shares.clone()));
        if !shares.is_empty() {
            self.report(Event::Split { shares });
        }
    }

    pub(super) fn worker_mut(&mut self, g: Generation, w: u32) -> Option<&mut Worker> {
        self.pool_mut(g).and_then(|p| p.get_mut(w as usize))
    }

    /// Workers of `g` alive.
    pub(super) fn alive_in(&self, g: Generation) -> u32 {
        self.pool(g)
            .map_or(0, |p| p.iter().filter(|x| x.state.alive()).count() as u32)
    }
}
