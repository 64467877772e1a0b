//! What `supervisor status` shows, gathered from the machine and the parts
//! into the one [`status::Status`] type. Read-only: it changes nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hot_supervisor::duration::millis;
use hot_supervisor::status;
use supervisor_child::protocol as child;

use crate::children::Children;
use crate::machine::{Generation, Machine, Phase, WorkerPhase};
use crate::report::Report;
use crate::steer::Steering;

/// What `supervisor status` shows of the settings.
pub struct Settings {
    /// The control socket's path.
    pub control_path: PathBuf,
    /// How readiness is proven, as the user wrote it.
    pub ready: String,
    /// The drain timeout.
    pub drain_timeout: Duration,
    /// The binary an in-place upgrade executes.
    pub binary: PathBuf,
}

/// Where the status comes from.
pub struct Sources<'a> {
    /// The lifecycle.
    pub machine: &'a Machine,
    /// The processes.
    pub children: &'a Children,
    /// The sockets.
    pub steering: &'a Steering,
    /// The reload counts.
    pub report: &'a Report,
    /// The settings shown.
    pub settings: &'a Settings,
    /// When the supervisor started.
    pub started: Instant,
    /// In-place upgrades so far, and the Unix time of the last.
    pub upgrades: (u64, Option<f64>),
    /// `--watch`, if any.
    pub watcher: Option<&'a crate::watch::Watcher>,
}

/// The inodes of the established TCP connections on the listeners' ports
/// (`None`: sock_diag cannot be asked here).
pub fn established(steering: &Steering) -> Option<std::collections::HashSet<u64>> {
    let ports: Vec<u16> = steering
        .listeners()
        .filter_map(|(l, _)| l.bound.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .collect();
    if ports.is_empty() {
        return Some(std::collections::HashSet::new());
    }
    hot_supervisor::sockinfo::established_inodes(&ports).ok()
}

/// How many of the connections `inodes` the processes of `g` (and their
/// descendants: a server's worker processes) hold open.
pub fn held(children: &Children, g: Generation, inodes: &std::collections::HashSet<u64>) -> u64 {
    let pids: Vec<i32> = children
        .live_pids(g)
        .into_iter()
        .flat_map(hot_supervisor::sockinfo::process_tree)
        .collect();
    hot_supervisor::sockinfo::held_by(&pids, inodes)
}

/// Everything `supervisor status` shows.
pub fn status(src: &Sources<'_>) -> status::Status {
    let now = Instant::now();
    let Sources {
        machine,
        children,
        steering,
        report,
        settings,
        started,
        upgrades,
        watcher,
    } = *src;
    // Open connections of the generations that no longer receive new
    // ones: one sock_diag dump for them all.
    let retiring: Vec<_> = machine
        .phases()
        .into_iter()
        .filter(|(_, p, _)| matches!(p, Phase::Quiescing | Phase::Draining))
        .map(|(g, _, _)| g)
        .collect();
    let inodes = if retiring.is_empty() {
        None
    } else {
        established(steering)
    };
    let generations = machine
        .phases()
        .into_iter()
        .map(|(g, phase, since)| status::Generation {
            connections: inodes
                .as_ref()
                .filter(|_| retiring.contains(&g))
                .map(|set| held(children, g, set)),
            generation: g.0,
            pid: children.pid(g).map(|p| p.as_raw()),
            state: phase,
            age_ms: children
                .started(g)
                .map(|s| millis(now.saturating_duration_since(s))),
            state_ms: millis(now.saturating_duration_since(since)),
            status: children.status_text(g).map(str::to_string),
            queued: steering.queue_of(g),
            workers: machine
                .workers(g)
                .into_iter()
                .map(|(w, phase, _, restarts)| {
                    let alive = !matches!(
                        phase,
                        WorkerPhase::Vacant | WorkerPhase::Backoff | WorkerPhase::Exited
                    );
                    let pid = children.worker_pid(g, w).filter(|_| alive);
                    status::Worker {
                        index: w,
                        pid: pid.map(|p| p.as_raw()),
                        state: phase,
                        restarts,
                        age_ms: children
                            .worker_started(g, w)
                            .filter(|_| alive)
                            .map(|s| millis(now.saturating_duration_since(s))),
                    }
                })
                .collect(),
            share: machine
                .shares()
                .iter()
                .find(|(x, _)| *x == g)
                .map(|(_, p)| *p),
        })
        .collect();
    let listeners = steering
        .listeners()
        .enumerate()
        .map(|(i, (l, mode))| status::Listener {
            name: l.name.clone(),
            address: l.bound.clone(),
            fd: child::LISTEN_FDS_START + i as i32,
            inherited: l.inherited,
            mode: match mode {
                crate::steer::Mode::Steer => status::Mode::Steer,
                crate::steer::Mode::Frozen(_) | crate::steer::Mode::Shared(_) => {
                    status::Mode::Shared
                }
            },
            spare_sockets: steering.spares(i),
            reserve_sockets: steering.reserves(i),
        })
        .collect();
    let command = children
        .command()
        .argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    status::Status {
        supervisor: status::Supervisor {
            pid: std::process::id(),
            uptime_ms: millis(now.saturating_duration_since(started)),
            version: env!("CARGO_PKG_VERSION").to_string(),
            control: settings.control_path.to_string_lossy().into_owned(),
            stopping: machine.stopping(),
            binary: settings.binary.to_string_lossy().into_owned(),
            upgrades: upgrades.0,
            upgraded_ms_ago: upgrades.1.map(|at| {
                let ago = (crate::report::unix_now() - at).max(0.0);
                millis(Duration::from_secs_f64(ago))
            }),
        },
        command,
        ready: settings.ready.clone(),
        stop_signal: children.command().stop_signal.as_str().to_string(),
        drain_timeout_ms: millis(settings.drain_timeout),
        listeners,
        generations,
        restarts: machine.restarts(),
        reloads: status::Reloads {
            succeeded: report.reloads_ok,
            failed: report.reloads_failed,
            pending: machine.pending_reloads() as u64,
            last_failure: report.last_failed_reload.clone(),
        },
        watch: watcher.map_or_else(Vec::new, |w| {
            w.paths().iter().map(|p| p.display().to_string()).collect()
        }),
        last_watch_trigger: watcher
            .and_then(|w| w.last())
            .map(|(p, at)| status::WatchTrigger {
                path: p.display().to_string(),
                ms_ago: millis(now.saturating_duration_since(at)),
            }),
        env_files: children
            .env_files()
            .into_iter()
            .map(|(path, read)| status::EnvFile {
                path: path.display().to_string(),
                read_ms_ago: read.map(|at| millis(now.saturating_duration_since(at))),
            })
            .collect(),
    }
}
