//! Machine events and reload outcomes as log lines and answers, and the
//! counts `supervisor status` shows.
//!
//! Every text is made from facts carried in the event itself, plus the
//! pids of the generations it names (`who`), never from the machine's state
//! read back afterwards. It never acts: it only writes text and counts.

use std::time::{Duration, Instant};

use hot_supervisor::duration::human;
use nix::sys::signal::Signal;

use crate::machine::{Cause, Event, ExitStatus, Generation, ReloadOutcome, StartFailure};

/// Names a generation with its pid: `generation 3 (pid 4211)`.
pub trait Who {
    /// The generation's name.
    fn who(&self, g: Generation) -> String;
    /// One worker's name: `generation 3 worker 1 (pid 4212)`.
    fn who_worker(&self, g: Generation, w: u32) -> String {
        format!("{g} worker {w}")
    }
}

impl Who for crate::children::Children {
    fn who(&self, g: Generation) -> String {
        crate::children::Children::who(self, g)
    }
    fn who_worker(&self, g: Generation, w: u32) -> String {
        crate::children::Children::who_worker(self, g, w)
    }
}

/// The reload history, for `supervisor status` and `STATUS=`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Said after "was not ready within ..." when readiness is `READY=1`:
    /// the likely cause and what to do.
    pub not_ready_hint: Option<String>,
    /// Reloads whose generation became ready.
    pub reloads_ok: u64,
    /// Reloads whose generation failed.
    pub reloads_failed: u64,
    /// The last failed reload, until a reload succeeds (for `STATUS=`).
    pub last_failure: Option<String>,
    /// The last failed reload ever (for `supervisor status`).
    pub last_failed_reload: Option<String>,
    /// Durations and times for `/metrics`.
    pub counts: crate::metrics::Counts,
}

impl Report {
    /// Log a machine event.
    pub fn event(&mut self, e: &Event, who: &dyn Who, stop_signal: Signal, steer: bool) {
        match e {
            Event::Ready {
                generation,
                after,
                replaced,
            } => log::info!("{}", ready_text(who, *generation, *after, *replaced, steer)),
            Event::StartFailed {
                generation,
                cause,
                why,
                serving,
                restart_in,
            } => {
                // The hint matters most when nothing serves: the first
                // start, a restart.
                let hint = match cause {
                    Cause::Reload => String::new(),
                    _ => self.hint(why),
                };
                let what = format!("{} {}{hint}", who.who(*generation), why);
                let next = match (serving, restart_in) {
                    (Some(s), _) => format!("; {} still serving", who.who(*s)),
                    (None, Some(d)) => format!("; starting again in {}", human(*d)),
                    (None, None) => String::new(),
                };
                match (cause, why) {
                    (_, StartFailure::Stopping) => log::info!("{what}"),
                    (Cause::Reload, _) => log::warn!("reload failed: {what}{next}"),
                    _ => log::warn!("{what}{next}"),
                }
            }
            Event::Quiescing { generation } => log::info!(
                "{} quiescing: new connections go elsewhere; it stops once its queue is empty",
                who.who(*generation)
            ),
            Event::QuiesceTimedOut {
                generation,
                queued,
                after,
            } => log::warn!(
                "{} still had {queued} connection(s) queued after {}: stopping it anyway",
                who.who(*generation),
                human(*after)
            ),
            Event::Draining { generation } => {
                log::info!("{} draining: sent {stop_signal}", who.who(*generation));
            }
            Event::Killed { generation, after } => log::warn!(
                "{} still running after the {} drain timeout: killing its process group",
                who.who(*generation),
                human(*after)
            ),
            Event::Drained {
                generation,
                after,
                status,
            } => {
                self.counts.drain_seconds.observe(*after);
                let how = if *status == ExitStatus::Signal(stop_signal as i32) {
                    "exited on its stop signal".to_string()
                } else {
                    status.to_string()
                };
                log::info!(
                    "{} drained in {} ({how})",
                    who.who(*generation),
                    human(*after)
                );
            }
            Event::Crashed {
                generation,
                status,
                restart_in,
                starting,
            } => {
                let next = match (restart_in, starting) {
                    (Some(d), _) => format!("restarting in {}", human(*d)),
                    (None, Some(s)) => format!("{s} is starting"),
                    (None, None) => "not restarting".to_string(),
                };
                log::warn!("{} {} while serving; {next}", who.who(*generation), status);
            }
            Event::ReloadQueued { starting } => {
                log::info!("reload queued: {} is still starting", who.who(*starting));
            }
            Event::ShutdownDelay { delay } => log::info!(
                "stop requested: serving on for the {} shutdown delay (a second stop request ends it now)",
                human(*delay)
            ),
            Event::StartLimitHit { limit, status } => log::error!(
                "{} starts within {}: giving up (start limit; the last one {})",
                limit.burst,
                human(limit.interval),
                status
            ),
            Event::Stopping => log::info!("stopping every generation"),
            Event::HandedOff => log::info!(
                "the new supervisor serves: every generation goes as a replaced one does, then this supervisor exits"
            ),
            Event::ForcedStop => log::warn!("second stop request: killing every generation now"),
            Event::WorkerCrashed {
                generation,
                worker,
                status,
                restart_in,
            } => {
                self.counts.worker_crashes += 1;
                let next = match restart_in {
                    Some(d) => format!("restarting it in {}", human(*d)),
                    None => "not restarting it".to_string(),
                };
                log::warn!(
                    "{} {} while serving; {next} (the other workers serve on)",
                    who.who_worker(*generation, *worker),
                    status
                );
            }
            Event::WorkerNotReady { generation, worker } => log::warn!(
                "{} was not ready in time: stopping it",
                who.who_worker(*generation, *worker)
            ),
            Event::WorkerRetired { generation, worker } => log::info!(
                "{} retiring: a new worker took its share; sent {stop_signal}",
                who.who_worker(*generation, *worker)
            ),
            Event::Split { shares } => log::info!("new connections split: {}", split_text(shares)),
            Event::Canary {
                generation,
                percent,
                after,
            } => log::info!(
                "{} ready in {}: a canary, receiving {percent}% of new connections",
                who.who(*generation),
                human(*after)
            ),
            Event::Promoted {
                generation,
                replaced,
                automatic,
            } => log::info!(
                "{} promoted{}: it receives every new connection; {} {}",
                who.who(*generation),
                if *automatic {
                    " (promote-after ran out)"
                } else {
                    ""
                },
                who.who(*replaced),
                if steer { "quiescing" } else { "draining" }
            ),
            Event::RolledBack {
                generation,
                serving,
                why,
            } => log::warn!(
                "rolled back ({why}): {} receives every new connection again; {} stops",
                who.who(*serving),
                who.who(*generation)
            ),
            Event::Cut {
                generation,
                was,
                max,
            } => {
                // What it still held is counted by the driver, which asks
                // the kernel before the kill: see `cut`.
                let _ = (generation, was, max);
            }
        }
    }

    /// A generation cut by `--max-generations`, holding `connections`
    /// open connections (`None`: they could not be counted) and `queued`
    /// connections in its own queues, which its death resets.
    pub fn cut(
        &mut self,
        who: &dyn Who,
        g: Generation,
        was: crate::machine::Phase,
        max: usize,
        connections: Option<u64>,
        queued: Option<u64>,
    ) {
        self.counts.generations_cut += 1;
        self.counts.connections_cut += connections.unwrap_or(0) + queued.unwrap_or(0);
        let held = match connections {
            Some(n) => format!("{n} open connection(s)"),
            None => "open connections not counted (sock_diag not allowed)".to_string(),
        };
        let queued = match queued {
            Some(n) if n > 0 => format!(" and {n} queued, reset"),
            _ => String::new(),
        };
        log::warn!(
            "{} killed while {}: --max-generations {max} reached; it held {held}{queued}",
            who.who(g),
            was.as_str()
        );
    }

    fn hint(&self, why: &StartFailure) -> String {
        match (why, &self.not_ready_hint) {
            (StartFailure::NotReady(_), Some(h)) => format!(" ({h})"),
            _ => String::new(),
        }
    }

    /// Count an answered reload; its one-line answer.
    pub fn outcome(
        &mut self,
        outcome: &ReloadOutcome,
        who: &dyn Who,
        steer: bool,
    ) -> (bool, String) {
        match outcome {
            ReloadOutcome::Ready {
                generation,
                after,
                replaced,
            } => {
                self.reloads_ok += 1;
                self.last_failure = None;
                self.counts.reload_seconds.observe(*after);
                self.counts.last_reload_success = Some(unix_now());
                (true, ready_text(who, *generation, *after, *replaced, steer))
            }
            ReloadOutcome::Failed {
                generation,
                why,
                serving,
                stopping,
            } => {
                self.reloads_failed += 1;
                let what = format!("{} {}", who.who(*generation), why);
                self.last_failed_reload = Some(what.clone());
                self.last_failure = Some(what.clone());
                let tail = match (serving, stopping) {
                    (Some(s), _) => format!("; {} still serving", who.who(*s)),
                    (None, true) => "; the supervisor is stopping".to_string(),
                    (None, false) => "; no generation is serving".to_string(),
                };
                (false, format!("{what}{tail}"))
            }
            ReloadOutcome::Refused(why) => (false, format!("refused: {why}")),
            ReloadOutcome::Canary {
                generation,
                after,
                percent,
                serving,
            } => {
                self.counts.reload_seconds.observe(*after);
                (
                    true,
                    format!(
                        "{} ready in {}: a canary with {percent}% of new connections; {} keeps {}%",
                        who.who(*generation),
                        human(*after),
                        who.who(*serving),
                        100 - percent
                    ),
                )
            }
            ReloadOutcome::Promoted {
                generation,
                replaced,
            } => {
                self.reloads_ok += 1;
                self.last_failure = None;
                self.counts.last_reload_success = Some(unix_now());
                (
                    true,
                    format!(
                        "{} promoted: it receives every new connection; {} {}",
                        who.who(*generation),
                        who.who(*replaced),
                        if steer { "quiescing" } else { "draining" }
                    ),
                )
            }
            ReloadOutcome::RolledBack {
                generation,
                serving,
            } => (
                true,
                format!(
                    "rolled back: {} receives every new connection; {} stops",
                    who.who(*serving),
                    who.who(*generation)
                ),
            ),
        }
    }

    /// One line for the service manager's `STATUS=`.
    pub fn status_line(
        &self,
        who: &dyn Who,
        stopping: bool,
        active: Option<Generation>,
        starting: Option<Generation>,
    ) -> String {
        if stopping {
            return "stopping".to_string();
        }
        let base = match active {
            Some(g) => format!("{} serving", who.who(g)),
            None => "no generation serving".to_string(),
        };
        if let Some(s) = starting {
            format!("{base}; {} starting", who.who(s))
        } else if let Some(f) = &self.last_failure {
            format!("{base}; last reload failed: {f}")
        } else {
            base
        }
    }
}

/// `generation 7 (pid 4211) ready in 180ms; generation 6 (pid 4100)
/// draining`: the log line and the answer to `supervisor reload`. In steer
/// mode the replaced generation quiesces first.
fn ready_text(
    who: &dyn Who,
    g: Generation,
    after: Duration,
    replaced: Option<Generation>,
    steer: bool,
) -> String {
    let tail = match replaced {
        Some(old) if steer => format!("; {} quiescing", who.who(old)),
        Some(old) => format!("; {} draining", who.who(old)),
        None => String::new(),
    };
    format!("{} ready in {}{tail}", who.who(g), human(after))
}

/// While generations drain, their progress is logged this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The drain progress lines: while generations drain, one line every
/// [`PROGRESS_EVERY`] with which are left, how long until their SIGKILL,
/// and their last `STATUS=`. Its timer runs only while something drains.
#[derive(Debug, Default)]
pub struct Progress {
    due: Option<Instant>,
}

impl Progress {
    /// When the next line is due, if anything drains.
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// `draining`: the draining generations and when each got its stop
    /// signal; `timeout` is the drain timeout.
    pub fn tick(
        &mut self,
        now: Instant,
        draining: &[(Generation, Instant)],
        timeout: Duration,
        children: &crate::children::Children,
    ) {
        if draining.is_empty() {
            self.due = None;
            return;
        }
        match self.due {
            None => self.due = Some(now + PROGRESS_EVERY),
            Some(t) if t <= now => {
                let parts: Vec<String> = draining
                    .iter()
                    .map(|(g, since)| {
                        let left = (*since + timeout).saturating_duration_since(now);
                        let status = match children.status_text(*g) {
                            Some(t) => format!(", status: {}", t.escape_debug()),
                            None => String::new(),
                        };
                        format!(
                            "{} ({} until SIGKILL{status})",
                            children.who(*g),
                            human(left)
                        )
                    })
                    .collect();
                log::info!("still draining: {}", parts.join("; "));
                self.due = Some(now + PROGRESS_EVERY);
            }
            Some(_) => {}
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `generation 6 80%, generation 7 20%`.
pub fn split_text(shares: &[(Generation, u32)]) -> String {
    let parts: Vec<String> = shares.iter().map(|(g, p)| format!("{g} {p}%")).collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pids;
    impl Who for Pids {
        fn who(&self, g: Generation) -> String {
            format!("{g} (pid {})", 100 + g.0)
        }
    }

    #[test]
    fn answers_say_what_happened() {
        let mut r = Report::default();
        let ok = ReloadOutcome::Ready {
            generation: Generation(2),
            after: Duration::from_millis(180),
            replaced: Some(Generation(1)),
        };
        assert_eq!(
            r.outcome(&ok, &Pids, false),
            (
                true,
                "generation 2 (pid 102) ready in 180ms; generation 1 (pid 101) draining".into()
            )
        );
        assert!(
            r.outcome(&ok, &Pids, true)
                .1
                .ends_with("generation 1 (pid 101) quiescing")
        );
        let failed = ReloadOutcome::Failed {
            generation: Generation(3),
            why: StartFailure::Exited(ExitStatus::Code(1)),
            serving: None,
            stopping: true,
        };
        assert_eq!(
            r.outcome(&failed, &Pids, true).1,
            "generation 3 (pid 103) exited with status 1 before it was ready; the supervisor is stopping"
        );
        assert_eq!((r.reloads_ok, r.reloads_failed), (2, 1));
        assert_eq!(
            r.status_line(&Pids, false, Some(Generation(2)), None),
            "generation 2 (pid 102) serving; last reload failed: generation 3 (pid 103) exited with status 1 before it was ready"
        );
    }
}
