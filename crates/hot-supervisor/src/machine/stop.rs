//! Generations that go: quiescing (their own queue emptied first),
//! draining (the stop signal and its deadline), the supervisor's stop
//! (shutdown delay, graceful, forced) and a hand-off to another
//! supervisor. Never kills before the drain timeout unless asked to.

use super::*;

impl Machine {
    /// A measurement of a quiescing generation's queue.
    pub(super) fn handle_queued(&mut self, now: Instant, g: Generation, n: u64) {
        let Some(q) = self.cfg.quiesce else {
            return;
        };
        let Some(State::Quiescing {
            check_at,
            empty_since,
            queued,
            ..
        }) = self.state_mut(g)
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
    pub(super) fn measure(&mut self, now: Instant, g: Generation) {
        let Some(q) = self.cfg.quiesce else {
            return;
        };
        let Some(State::Quiescing {
            since,
            check_at,
            queued,
            ..
        }) = self.state_mut(g)
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

    /// The exit status of a stop begun now: the serving generation's (once
    /// it exits), else the starting one's, else that of the last one that
    /// ended.
    pub(super) fn stop_status(&self) -> Option<ExitStatus> {
        if self.active().is_some() || self.starting().is_some() {
            None
        } else {
            Some(self.last_status.unwrap_or(ExitStatus::Code(0)))
        }
    }

    pub(super) fn handle_stop(&mut self, now: Instant) {
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
                let gens: Vec<Generation> = self.gens.keys().copied().collect();
                for g in gens {
                    if let Some(State::Draining { deadline, .. }) = self.state_mut(g)
                        && deadline.take().is_some()
                    {
                        self.actions.push_back(Action::Kill(g));
                    }
                }
            }
            Stopping::Forced => {}
        }
    }

    pub(super) fn handle_hand_off(&mut self, now: Instant) {
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
        let gens: Vec<Generation> = self.gens.keys().copied().collect();
        for g in gens {
            match self.state(g) {
                Some(State::Starting { .. }) => {
                    self.fail_start(now, g, StartFailure::Stopping, Left::Running);
                }
                Some(State::Active { .. } | State::Canary { .. }) => self.retire(now, g),
                _ => {}
            }
        }
        self.maybe_exit();
    }

    /// Stop everything; exit with `status`, or with the active generation's
    /// status once it has exited.
    pub(super) fn begin_stop(&mut self, now: Instant, status: Option<ExitStatus>) {
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
        let gens: Vec<Generation> = self.gens.keys().copied().collect();
        for g in gens {
            match self.state(g) {
                Some(State::Starting { .. }) => {
                    self.fail_start(now, g, StartFailure::Stopping, Left::Running);
                }
                Some(State::Active { .. } | State::Quiescing { .. } | State::Canary { .. }) => {
                    self.drain(now, g);
                }
                _ => {}
            }
        }
        self.maybe_exit();
    }

    pub(super) fn maybe_exit(&mut self) {
        if self.stopping() && self.gens.is_empty() && !self.done {
            self.done = true;
            let code = self.exit_status.map_or(0, ExitStatus::shell_code);
            self.push(Action::Exit(code));
        }
    }

    /// A replaced generation: in steer mode it quiesces first (its queue
    /// is measured at once), in shared mode it drains at once.
    pub(super) fn retire(&mut self, now: Instant, g: Generation) {
        if self.cfg.quiesce.is_none() {
            self.drain(now, g);
            return;
        }
        self.set_state(
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
    pub(super) fn drain(&mut self, now: Instant, g: Generation) {
        self.set_state(
            g,
            State::Draining {
                since: now,
                deadline: Some(now + self.cfg.drain_timeout),
            },
        );
        self.push(Action::Stop(g));
        self.report(Event::Draining { generation: g });
    }
}
