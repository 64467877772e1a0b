//! The driver's answers to what is asked of the supervisor from outside:
//! control requests (status, reload, promote, rollback, upgrade,
//! takeover, events), the health endpoint, the children's own channels,
//! and reload requests from any source. It reads the parts and feeds the
//! machine; it never decides the lifecycle and never blocks.

use super::*;

impl Driver {
    /// A worker's channel: a request for its generation's own sockets is
    /// answered with them.
    pub(super) fn serve_channel(&mut self, who: (Generation, u32), now: Instant) {
        let Some(ask) = self.parts.channels.on_ready(who, now) else {
            return;
        };
        let items = self
            .parts
            .steering
            .fetch_own(who.0, &ask.names)
            .and_then(|handed| {
                handed
                    .into_iter()
                    .map(|h| {
                        let (kind, address) = crate::control::kind_and_address(&h.bound);
                        hot_supervisor::parse::control::fd_line(&h.name, kind, address)
                            .map(|line| (line, h.fd))
                    })
                    .collect::<Result<Vec<_>, String>>()
            });
        match &items {
            Ok(i) => log::debug!(
                "sending {} listener(s) to {} (its channel)",
                i.len(),
                self.parts.children.who_worker(who.0, who.1)
            ),
            Err(why) => log::warn!(
                "listeners asked for by {} on its channel: {why}",
                self.parts.children.who_worker(who.0, who.1)
            ),
        }
        self.parts.channels.answer(who, items, now);
    }

    /// A health request: answer it from the machine's state.
    pub(super) fn serve_health(&mut self, w: health::Watch, now: Instant) {
        let Some(h) = &mut self.parts.health else {
            return;
        };
        for id in h.on_ready(w, now) {
            let Some((route, _)) = self.parts.health.as_ref().and_then(|h| h.route(id)) else {
                continue;
            };
            let (code, kind, body) = match route {
                health::Route::Live => (200, "text/plain", "ok\n".to_string()),
                health::Route::Ready => {
                    let serving = self.machine.active().map(|g| self.parts.children.who(g));
                    let delay = self
                        .machine
                        .shutdown_delay_until()
                        .map(|t| t.saturating_duration_since(now));
                    let (code, text) =
                        health::readiness(serving.as_deref(), self.machine.stopping(), delay);
                    (code, "text/plain", text)
                }
                health::Route::Metrics => {
                    self.report.counts.queued = self.parts.steering.serving_queues();
                    let body = crate::metrics::render(&self.status(), &self.report.counts);
                    (200, "text/plain; version=0.0.4; charset=utf-8", body)
                }
            };
            if let Some(h) = &mut self.parts.health {
                h.answer(id, code, kind, &body, now);
            }
        }
    }

    pub(super) fn status(&self) -> hot_supervisor::status::Status {
        crate::snapshot::status(&crate::snapshot::Sources {
            machine: &self.machine,
            children: &self.parts.children,
            steering: &self.parts.steering,
            report: &self.report,
            settings: &self.settings,
            started: self.started,
            upgrades: self.upgrades,
            watcher: self.parts.watcher.as_ref(),
        })
    }

    pub(super) fn control_event(&mut self, e: ControlEvent) {
        match e {
            ControlEvent::Status(id) => {
                let json = serde_json::to_string(&self.status()).unwrap_or_default();
                self.parts.control.answer(id, true, &json, Instant::now());
            }
            ControlEvent::Takeover(id, pid) => self.hand_over(id, pid),
            ControlEvent::Upgrade(id, pid, timeout) => {
                log::info!("upgrade requested (control socket, pid {pid})");
                self.upgrade(Some(id), timeout);
            }
            ControlEvent::Reload(id, pid) => {
                let said = format!("reload requested (control socket, pid {pid})");
                let source = format!("control pid {pid}");
                self.reload(Some(id), source, log::Level::Info, &said);
            }
            ControlEvent::ReloadWith(id, ..)
            | ControlEvent::Promote(id, _)
            | ControlEvent::Rollback(id, _)
                if self.refused_during_handover(Some(id)) => {}
            ControlEvent::ReloadWith(id, pid, kind) => {
                use hot_supervisor::parse::control::ReloadKind;
                let strategy = match kind {
                    ReloadKind::Rolling(k) => Strategy::Rolling(k),
                    ReloadKind::Canary {
                        percent,
                        promote_after,
                    } => Strategy::Canary {
                        percent,
                        promote_after,
                    },
                };
                let said = format!("reload requested (control socket, pid {pid}): {strategy:?}");
                self.requested(format!("control pid {pid}"), log::Level::Info, &said);
                let t = self.ticket(Some(id));
                if let Some(m) = &mut self.parts.manager {
                    m.reload_requested();
                }
                self.feed(Input::ReloadWith(t, strategy));
            }
            ControlEvent::Promote(id, pid) => {
                log::info!("promote requested (control socket, pid {pid})");
                let t = self.ticket(Some(id));
                self.feed(Input::Promote(t));
            }
            ControlEvent::Rollback(id, pid) => {
                log::info!("rollback requested (control socket, pid {pid})");
                let t = self.ticket(Some(id));
                self.feed(Input::Rollback(t));
            }
            ControlEvent::Fds(id, pid, names) => {
                let now = Instant::now();
                match self.parts.steering.fetch(&names) {
                    Ok(handed) => {
                        log::info!(
                            "sending {} listener(s) to pid {pid} (control socket)",
                            handed.len()
                        );
                        let items = handed.into_iter().map(|h| (h.name, h.bound, h.fd));
                        self.parts.control.send_listeners(id, items.collect(), now);
                    }
                    Err(why) => {
                        log::warn!("listeners asked for by pid {pid}: {why}");
                        self.parts.control.answer(id, false, &why, now);
                    }
                }
            }
            ControlEvent::Listen(id, _, _) if self.parts.steering.held() => {
                let why = "another supervisor is taking over: ask it";
                self.parts.control.answer(id, false, why, Instant::now());
            }
            ControlEvent::Listen(id, pid, spec) => {
                let now = Instant::now();
                let known = self.parts.steering.listeners().count();
                let opened = self.parts.steering.open(&spec).and_then(|i| {
                    if i >= known {
                        let (l, mode) = self.parts.steering.listeners().nth(i).expect("just added");
                        log::info!(
                            "listening on {} as {:?} (fd {} in the next generations), {}, opened at run time for pid {pid}",
                            l.bound,
                            l.name,
                            supervisor_child::protocol::LISTEN_FDS_START + i as i32,
                            mode.as_str()
                        );
                    }
                    self.parts.steering.fetch(std::slice::from_ref(&spec.name))
                });
                match opened {
                    Ok(handed) => {
                        let items = handed.into_iter().map(|h| (h.name, h.bound, h.fd));
                        self.parts.control.send_listeners(id, items.collect(), now);
                    }
                    Err(why) => {
                        log::warn!("listener {:?} asked for by pid {pid}: {why}", spec.name);
                        self.parts.control.answer(id, false, &why, now);
                    }
                }
            }
            ControlEvent::Stop(_, pid) => {
                // During the shutdown delay a second request ends it, as a
                // second SIGTERM does; once the stop proper runs, a stop
                // client only waits (it never forces the kill).
                if self.machine.stopping() && self.machine.shutdown_delay_until().is_none() {
                    log::info!("stop requested (control socket, pid {pid}): already stopping");
                } else {
                    log::info!("stop requested (control socket, pid {pid})");
                    self.feed(Input::Stop);
                }
            }
        }
    }

    /// A new ticket, its answer going to `waiter` if any.
    pub(super) fn ticket(&mut self, waiter: Option<ConnId>) -> Ticket {
        self.next_ticket += 1;
        let t = self.next_ticket;
        if let Some(id) = waiter {
            self.reload_waiters.insert(t, id);
        }
        t
    }

    /// Refuse a reload, promote or rollback while another supervisor takes
    /// over (answering `waiter`); whether it was refused.
    pub(super) fn refused_during_handover(&mut self, waiter: Option<ConnId>) -> bool {
        let Err(why) = self.parts.handoff.may_reload() else {
            return false;
        };
        let why = why.to_string();
        log::warn!("reload refused: {why}");
        if let Some(id) = waiter {
            self.parts.control.answer(id, false, &why, Instant::now());
        }
        true
    }

    /// Ask for a reload (SIGHUP, or a control request to answer), asked by
    /// `source` (logged as `said`).
    pub(super) fn reload(
        &mut self,
        waiter: Option<ConnId>,
        source: String,
        level: log::Level,
        said: &str,
    ) {
        self.requested(source, level, said);
        if self.refused_during_handover(waiter) {
            return;
        }
        let t = self.ticket(waiter);
        if let Some(m) = &mut self.parts.manager {
            m.reload_requested();
        }
        self.feed(Input::Reload(t));
    }

    /// A reload was asked for by `source`: the log line `said` (with the
    /// event's fields) and the event.
    pub(super) fn requested(&mut self, source: String, level: log::Level, said: &str) {
        let mut r = Record::new(crate::report::unix_now(), Kind::ReloadRequested);
        r.source = Some(source);
        crate::logging::with_fields(Some(&r), || log::log!(level, "{said}"));
        self.parts.control.publish(&r);
    }
}
