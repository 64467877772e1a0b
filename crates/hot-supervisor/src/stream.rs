//! The lifecycle events as typed records ([`Record`]): made from the
//! machine's events and outcomes and from the driver's own steps, for the
//! control socket's event streams (`supervisor events`) and the fields of
//! the log line that tells each (`--log-format json`).
//!
//! Pure: it reads the pids of the generations named and the clock, and
//! never acts or logs.

use std::time::Duration;

use hot_supervisor::events::{Kind, Record};

use crate::children::Children;
use crate::machine::{Event, ExitStatus, Generation, ReloadOutcome};
use crate::report::unix_now;

/// An event about generation `g` (its pid, if known).
pub fn about(kind: Kind, g: Generation, children: &Children) -> Record {
    let mut r = Record::new(unix_now(), kind);
    r.generation = Some(g.0);
    r.pid = children.pid(g).map(|p| p.as_raw());
    r
}

/// An event about worker `w` of `g`.
fn about_worker(kind: Kind, g: Generation, w: u32, children: &Children) -> Record {
    let mut r = Record::new(unix_now(), kind);
    r.generation = Some(g.0);
    r.worker = Some(w);
    r.pid = children.worker_pid(g, w).map(|p| p.as_raw());
    r
}

fn ms(d: Duration) -> Option<f64> {
    Some(d.as_secs_f64() * 1000.0)
}

fn status(s: ExitStatus) -> Option<String> {
    Some(s.to_string())
}

/// The records of one machine event, the first the one its log line
/// carries.
pub fn of_event(e: &Event, children: &Children) -> Vec<Record> {
    match e {
        Event::Ready {
            generation,
            after,
            replaced,
        } => {
            let mut r = about(Kind::Ready, *generation, children);
            r.duration_ms = ms(*after);
            r.replaced = replaced.map(|g| g.0);
            vec![r]
        }
        Event::StartFailed {
            generation, why, ..
        } => {
            let mut r = about(Kind::StartFailed, *generation, children);
            r.reason = Some(why.to_string());
            vec![r]
        }
        Event::Draining { generation } => vec![about(Kind::Stopping, *generation, children)],
        Event::Killed { generation, after } => {
            let mut r = about(Kind::Killed, *generation, children);
            r.reason = Some("drain timeout".into());
            r.duration_ms = ms(*after);
            vec![r]
        }
        Event::Drained {
            generation,
            after,
            status: s,
        } => {
            let mut r = about(Kind::Exited, *generation, children);
            r.reason = Some("drained".into());
            r.duration_ms = ms(*after);
            r.status = status(*s);
            vec![r]
        }
        Event::Crashed {
            generation,
            status: s,
            restart_in,
            ..
        } => {
            let mut r = about(Kind::Exited, *generation, children);
            r.reason = Some("crashed".into());
            r.status = status(*s);
            let mut out = vec![r];
            if let Some(d) = restart_in {
                let mut r = Record::new(unix_now(), Kind::Restart);
                r.duration_ms = ms(*d);
                r.replaced = Some(generation.0);
                out.push(r);
            }
            out
        }
        Event::Quiescing { generation } => vec![about(Kind::Quiescing, *generation, children)],
        Event::QuiesceTimedOut {
            generation, queued, ..
        } => {
            let mut r = about(Kind::Stopping, *generation, children);
            r.reason = Some(format!("quiesce timeout, {queued} queued"));
            vec![r]
        }
        Event::ReloadQueued { starting } => {
            vec![about(Kind::ReloadQueued, *starting, children)]
        }
        Event::ShutdownDelay { delay } => {
            let mut r = Record::new(unix_now(), Kind::Stop);
            r.reason = Some("shutdown delay".into());
            r.duration_ms = ms(*delay);
            vec![r]
        }
        Event::StartLimitHit { status: s, .. } => {
            let mut r = Record::new(unix_now(), Kind::Stop);
            r.reason = Some("start limit hit".into());
            r.status = status(*s);
            vec![r]
        }
        Event::WorkerCrashed {
            generation,
            worker,
            status: s,
            restart_in,
        } => {
            let mut r = about_worker(Kind::Exited, *generation, *worker, children);
            r.reason = Some("crashed".into());
            r.status = status(*s);
            let mut out = vec![r];
            if let Some(d) = restart_in {
                let mut r = about_worker(Kind::Restart, *generation, *worker, children);
                r.duration_ms = ms(*d);
                out.push(r);
            }
            out
        }
        Event::WorkerNotReady { generation, worker } => {
            let mut r = about_worker(Kind::StartFailed, *generation, *worker, children);
            r.reason = Some("worker not ready in time".into());
            vec![r]
        }
        Event::WorkerRetired { generation, worker } => {
            vec![about_worker(Kind::Stopping, *generation, *worker, children)]
        }
        Event::Split { shares } => {
            let mut r = Record::new(unix_now(), Kind::Split);
            r.reason = Some(crate::report::split_text(shares));
            vec![r]
        }
        Event::Canary {
            generation,
            percent,
            after,
        } => {
            let mut r = about(Kind::Canary, *generation, children);
            r.percent = Some(*percent);
            r.duration_ms = ms(*after);
            vec![r]
        }
        Event::Promoted {
            generation,
            replaced,
            automatic,
        } => {
            let mut r = about(Kind::Promoted, *generation, children);
            r.replaced = Some(replaced.0);
            r.reason = Some(if *automatic { "promote-after" } else { "asked" }.into());
            vec![r]
        }
        Event::RolledBack {
            generation, why, ..
        } => {
            let mut r = about(Kind::RolledBack, *generation, children);
            r.reason = Some(why.to_string());
            vec![r]
        }
        Event::Stopping => vec![Record::new(unix_now(), Kind::Stop)],
        Event::HandedOff => {
            let mut r = Record::new(unix_now(), Kind::Stop);
            r.reason = Some("handed off".into());
            vec![r]
        }
        Event::ForcedStop => {
            let mut r = Record::new(unix_now(), Kind::Stop);
            r.reason = Some("forced".into());
            vec![r]
        }
        Event::Cut {
            generation, max, ..
        } => {
            let mut r = about(Kind::GenerationCap, *generation, children);
            r.reason = Some(format!("--max-generations {max}"));
            vec![r]
        }
    }
}

/// The record of a reload's outcome, if it is one (a promote's or a
/// rollback's answer has its own event already).
pub fn of_outcome(o: &ReloadOutcome, ok: bool, text: &str) -> Option<Record> {
    let kind = if ok {
        Kind::ReloadSucceeded
    } else {
        Kind::ReloadFailed
    };
    let mut r = Record::new(unix_now(), kind);
    match o {
        ReloadOutcome::Ready {
            generation,
            after,
            replaced,
        } => {
            r.generation = Some(generation.0);
            r.duration_ms = ms(*after);
            r.replaced = replaced.map(|g| g.0);
        }
        ReloadOutcome::Failed {
            generation, why, ..
        } => {
            r.generation = Some(generation.0);
            r.reason = Some(why.to_string());
        }
        ReloadOutcome::Refused(why) => r.reason = Some(format!("refused: {why}")),
        ReloadOutcome::Canary {
            generation,
            after,
            percent,
            ..
        } => {
            r.generation = Some(generation.0);
            r.duration_ms = ms(*after);
            r.percent = Some(*percent);
        }
        ReloadOutcome::Promoted { .. } | ReloadOutcome::RolledBack { .. } => return None,
    }
    if r.reason.is_none() && !ok {
        r.reason = Some(text.to_string());
    }
    Some(r)
}
