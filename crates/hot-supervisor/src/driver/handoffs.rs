//! The driver's side of hand-offs: an in-place upgrade (check the new
//! binary, save the state, exec it, or go back) and a takeover in either
//! direction (handing every socket over to another supervisor, or taking
//! them from one). What may happen when is the hand-off machine's
//! ([`crate::handoff::Handoff`]); this file carries it out with the
//! parts. It never blocks: every step is polled by the loop.

use super::*;

impl Driver {
    /// Another supervisor asks for every socket (see [`crate::takeover`]).
    pub(super) fn hand_over(&mut self, id: ConnId, pid: i32) {
        let now = Instant::now();
        let refuse = self
            .parts
            .handoff
            .may_hand_over(self.machine.stopping(), self.machine.starting());
        if let Err(why) = refuse {
            log::warn!("takeover by pid {pid} refused: {why}");
            self.parts.control.answer(id, false, &why.to_string(), now);
            return;
        }
        let Some(stream) = self.parts.control.take_stream(id) else {
            return;
        };
        // Duplicates, made while each part lends its fds: what is sent.
        let mut keep = crate::carry::Keep::new(crate::carry::Carry::Duplicates);
        let payload = crate::takeover::Payload {
            format: crate::takeover::FORMAT.to_string(),
            version: crate::takeover::VERSION,
            writer: crate::upgrade::version().to_string(),
            pid: std::process::id(),
            steering: self.parts.steering.save(&mut keep),
            control: self.parts.control.save_listener(&mut keep),
            health: self.parts.health.as_ref().map(|h| h.save(&mut keep)),
        };
        let n = keep.numbers().len();
        let source = keep
            .into_duplicates()
            .context("dup")
            .and_then(|fds| crate::takeover::Source::new(stream, pid, &payload, fds));
        match source {
            Ok(source) => {
                log::info!(
                    "supervisor pid {pid} takes over: {n} socket(s) handed over; groups, control socket and new generations are its own now (this supervisor serves until it is told to drain)"
                );
                let mut r = Record::new(crate::report::unix_now(), Kind::Takeover);
                r.pid = Some(pid);
                self.parts.control.publish(&r);
                self.parts.control.end_streams();
                self.parts.steering.hold();
                self.parts.control.set_accepting(false);
                self.parts.handoff = crate::handoff::Handoff::HandingOver(source);
                self.handover_step(now);
            }
            Err(e) => log::error!("takeover by pid {pid}: {e:#}"),
        }
    }

    /// The handover's connection is ready (or its retry is due).
    pub(super) fn handover_step(&mut self, now: Instant) {
        let Some(h) = self.parts.handoff.source_mut() else {
            return;
        };
        let peer = h.peer;
        match h.step(now) {
            None => {}
            Some(crate::takeover::Heard::Drain) => {
                log::info!("supervisor pid {peer} serves: handing over");
                self.parts.steering.disown_files(true);
                self.parts.control.disown_file(true);
                self.feed(Input::HandOff);
            }
            Some(crate::takeover::Heard::Gone) => {
                log::error!(
                    "the takeover by supervisor pid {peer} failed (it is gone without taking over): carrying on"
                );
                self.parts.handoff = crate::handoff::Handoff::Idle;
                self.parts.steering.resume(&mut self.notices);
                self.parts.control.set_accepting(true);
                self.log_notices();
            }
        }
    }

    /// The supervisor taken over from: its connection ended.
    pub(super) fn predecessor_step(&mut self) {
        let crate::handoff::Handoff::TakingOver { from: t, .. } = &mut self.parts.handoff else {
            return;
        };
        if !t.gone() {
            return;
        }
        let (peer, drained) = (t.peer, t.drained());
        self.parts.handoff = crate::handoff::Handoff::Idle;
        if drained {
            log::info!("supervisor pid {peer} has exited: closing its generations' sockets");
        } else {
            log::warn!(
                "supervisor pid {peer} is gone before it was told to drain: closing its generations' sockets"
            );
        }
        self.parts.steering.release_previous(&mut self.notices);
        self.log_notices();
    }

    /// Taking over: once a generation of ours serves, tell the old
    /// supervisor; if the first one fails, give up and exit.
    pub(super) fn advance_takeover(&mut self) {
        let crate::handoff::Handoff::TakingOver { from: t, failed } = &mut self.parts.handoff
        else {
            return;
        };
        if t.drained() {
            return;
        }
        if let Some(g) = self.machine.active() {
            let peer = t.peer;
            // The files are this supervisor's from the moment the old one
            // is told to go.
            self.parts.steering.disown_files(false);
            self.parts.control.disown_file(false);
            match t.drain() {
                Ok(()) => log::info!(
                    "{} serves: supervisor pid {peer} told to let its generations go ({})",
                    self.parts.children.who(g),
                    t.took()
                ),
                Err(e) => log::warn!("{e:#}"),
            }
        } else if std::mem::take(failed) {
            log::error!(
                "the takeover failed: the new generation did not become ready; supervisor pid {} carries on, this one exits",
                t.peer
            );
            // The old supervisor owns its files still (they were never
            // this one's); it carries on once this process is gone.
            self.parts.control.set_accepting(false);
            self.exit_code = Some(1);
            if !self.machine.stopping() {
                self.feed(Input::Stop);
            }
        }
    }

    /// Begin an in-place upgrade: check the binary first (see
    /// [`crate::upgrade`]).
    pub(super) fn upgrade(&mut self, waiter: Option<ConnId>, timeout: Option<std::time::Duration>) {
        let now = Instant::now();
        let refuse = self.parts.handoff.may_upgrade(self.machine.stopping());
        let started = match refuse {
            Err(why) => Err(anyhow::anyhow!(why)),
            Ok(()) => {
                // Only the numbers: the check reads the state, nothing is
                // carried.
                let state = self.save(waiter, now, &mut crate::carry::Keep::default());
                crate::upgrade::write_state(&state).and_then(|state| {
                    crate::upgrade::Check::start(
                        &self.settings.binary,
                        state,
                        timeout.unwrap_or(crate::upgrade::DEFAULT_TIMEOUT),
                        waiter,
                        now,
                    )
                })
            }
        };
        match started {
            Ok(check) => {
                log::info!(
                    "checking {} (pid {}) before the upgrade",
                    check.binary.display(),
                    check.pid()
                );
                self.parts.handoff = crate::handoff::Handoff::Checking(check);
            }
            Err(e) => self.upgrade_failed(waiter, &format!("{e:#}")),
        }
    }

    pub(super) fn upgrade_failed(&mut self, waiter: Option<ConnId>, why: &str) {
        let text = format!(
            "{why}; supervisor {} (pid {}) carries on",
            crate::upgrade::version(),
            std::process::id()
        );
        log::error!("upgrade failed: {text}");
        if let Some(id) = waiter {
            self.parts.control.answer(id, false, &text, Instant::now());
        }
    }

    /// The check of the new binary is over.
    pub(super) fn upgrade_checked(&mut self, verdict: crate::upgrade::Verdict) {
        let crate::handoff::Handoff::Checking(check) = std::mem::take(&mut self.parts.handoff)
        else {
            return;
        };
        match verdict {
            crate::upgrade::Verdict::Ok(version) => {
                log::info!(
                    "{} (supervisor {version}) accepts the state: executing it in place",
                    check.binary.display()
                );
                self.parts.handoff = crate::handoff::Handoff::ExecDue {
                    waiter: check.waiter,
                    requested: check.requested,
                };
            }
            crate::upgrade::Verdict::Failed(why) => self.upgrade_failed(check.waiter, &why),
        }
    }

    /// Everything the next image needs; `keep` gets every fd it names.
    pub(super) fn save(
        &self,
        waiter: Option<ConnId>,
        requested: Instant,
        keep: &mut crate::carry::Keep,
    ) -> crate::state::State {
        let steering = self.parts.steering.save(keep);
        let children = self.parts.children.save(keep);
        let control = self.parts.control.save(keep);
        let health = self.parts.health.as_ref().map(|h| h.save(keep));
        let channels = self.parts.channels.save(keep);
        crate::state::State {
            channels,
            format: crate::state::FORMAT.to_string(),
            version: crate::state::VERSION,
            writer: crate::upgrade::version().to_string(),
            fds: keep.numbers(),
            machine: self.machine.save(),
            children,
            steering,
            control,
            health,
            manager: self.parts.manager.as_ref().map(|m| m.save()),
            report: crate::report::Report {
                not_ready_hint: self.report.not_ready_hint.clone(),
                reloads_ok: self.report.reloads_ok,
                reloads_failed: self.report.reloads_failed,
                last_failure: self.report.last_failure.clone(),
                last_failed_reload: self.report.last_failed_reload.clone(),
                counts: self.report.counts.clone(),
            },
            driver: crate::state::DriverSaved {
                next_ticket: self.next_ticket,
                reload_waiters: self.reload_waiters.iter().map(|(t, c)| (*t, *c)).collect(),
                upgrade_waiter: waiter,
                started: self.started,
                upgrades: self.upgrades.0 + 1,
                requested,
                from_version: crate::upgrade::version().to_string(),
                upgraded_at: crate::report::unix_now(),
            },
        }
    }

    /// Set the close-on-exec flag of every fd the state names again: the
    /// exec that was to carry them failed.
    pub(super) fn uncarry(&self) {
        let mut keep = crate::carry::Keep::new(crate::carry::Carry::Back);
        let _ = self.save(None, Instant::now(), &mut keep);
    }

    /// Exec the new image with the state as it is now; returns only if
    /// that failed (then the old image carries on and says why).
    pub(super) fn exec_upgrade(&mut self, waiter: Option<ConnId>, requested: Instant) {
        if self.machine.stopping() {
            return self.upgrade_failed(waiter, "the supervisor began to stop during the check");
        }
        // Whatever the service manager is owed goes out first.
        self.tell_manager();
        // Every fd the state names loses its close-on-exec flag as its part
        // lends it (nothing forks from here to the exec).
        let mut keep = crate::carry::Keep::new(crate::carry::Carry::AcrossExec);
        let state = self.save(waiter, requested, &mut keep);
        let fd = match crate::upgrade::write_state(&state) {
            Ok(fd) => fd,
            Err(e) => {
                self.uncarry();
                return self.upgrade_failed(waiter, &format!("{e:#}"));
            }
        };
        let mut r = Record::new(crate::report::unix_now(), Kind::Upgrade);
        r.path = Some(self.settings.binary.display().to_string());
        r.pid = Some(std::process::id() as i32);
        crate::logging::with_fields(Some(&r), || {
            log::info!(
                "executing {} in place (pid {})",
                self.settings.binary.display(),
                std::process::id()
            );
        });
        self.parts.control.publish(&r);
        self.parts.control.end_streams();
        let e = crate::upgrade::exec(&self.settings.binary, fd.as_fd(), None);
        self.uncarry();
        self.upgrade_failed(waiter, &format!("{e:#}"));
    }
}
