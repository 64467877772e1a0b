//! What `supervisor status` reports: one type, serialized by the supervisor,
//! read back by the client and the tests.
//!
//! The supervisor fills a [`Status`] from its parts and sends it as JSON on
//! the control socket; `supervisor status --json` prints that JSON and
//! `supervisor status` renders it with [`Status::render`]. Fields added later
//! carry `#[serde(default)]`, so a newer client reads an older supervisor.
//! Pure data: no I/O here.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::human;

/// Everything `supervisor status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The supervisor process itself.
    pub supervisor: Supervisor,
    /// The command and its arguments (lossy UTF-8).
    pub command: Vec<String>,
    /// How readiness is proven: `notify`, `delay:1s`, ...
    pub ready: String,
    /// The generations' stop signal, e.g. `SIGTERM`.
    pub stop_signal: String,
    /// The drain timeout, in milliseconds.
    pub drain_timeout_ms: u64,
    /// The listeners, in the order of their fds in the children.
    pub listeners: Vec<Listener>,
    /// Every generation not yet reaped, oldest first.
    pub generations: Vec<Generation>,
    /// Generations started by the crash policy.
    pub restarts: u64,
    /// Reload counts.
    pub reloads: Reloads,
    /// Each `--env-file`, read again at every generation's start.
    #[serde(default)]
    pub env_files: Vec<EnvFile>,
    /// The `--watch` paths.
    #[serde(default)]
    pub watch: Vec<String>,
    /// The change that last made `--watch` ask for a reload.
    #[serde(default)]
    pub last_watch_trigger: Option<WatchTrigger>,
}

/// A `--watch` path that changed and asked for a reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchTrigger {
    /// The path, as given.
    pub path: String,
    /// How long ago, in milliseconds.
    pub ms_ago: u64,
}

/// An `--env-file` and when it was last read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFile {
    /// Its path, as given.
    pub path: String,
    /// Time since it was last read whole, in milliseconds (`None`: not
    /// since this image started, as after an in-place upgrade).
    pub read_ms_ago: Option<u64>,
}

/// The supervisor process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervisor {
    /// Its pid.
    pub pid: u32,
    /// Time since it started, in milliseconds.
    pub uptime_ms: u64,
    /// Its version.
    pub version: String,
    /// The control socket's path.
    pub control: String,
    /// Whether a stop has begun.
    pub stopping: bool,
    /// The binary an in-place upgrade executes (the path it was started
    /// from).
    #[serde(default)]
    pub binary: String,
    /// In-place upgrades so far.
    #[serde(default)]
    pub upgrades: u64,
    /// Time since the last in-place upgrade, in milliseconds.
    #[serde(default)]
    pub upgraded_ms_ago: Option<u64>,
}

/// One listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// The address it is bound to.
    pub address: String,
    /// Its fd number in the children.
    pub fd: i32,
    /// Whether a service manager handed it over.
    pub inherited: bool,
    /// `steer` (a socket per generation, new connections routed) or
    /// `shared` (one socket for every generation).
    #[serde(default)]
    pub mode: Mode,
    /// Steer mode: sockets of the supervisor's own in the group, never
    /// routed, that no generation holds: the one made ahead of time for
    /// the next generation, and any that stood in for a leaving member so
    /// that the routed one never moves (closed at the next reload).
    #[serde(default)]
    pub spare_sockets: u32,
    /// Of those, the ones made ahead of time for the next generation (a
    /// reserve: at most one).
    #[serde(default)]
    pub reserve_sockets: u32,
}

/// Where a generation is in its life (for status reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Started, not yet ready.
    Starting,
    /// Serving.
    Active,
    /// Replaced; no new connections; waiting for its queue to empty.
    Quiescing,
    /// Sent its stop signal; finishing its work.
    Draining,
    /// Ready, receiving a share of new connections beside the active one.
    Canary,
}

impl Phase {
    /// `starting`, `active`, `quiescing`, `draining` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Active => "active",
            Phase::Quiescing => "quiescing",
            Phase::Draining => "draining",
            Phase::Canary => "canary",
        }
    }
}

/// Where a worker is (for status reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerPhase {
    /// No process (not started yet in a rolling reload, or gone).
    Vacant,
    /// Started, not ready yet.
    Starting,
    /// Ready.
    Ready,
    /// Stopped alone (rolling reload), or stopped for not being ready.
    Retiring,
    /// Crashed, waiting for its restart.
    Backoff,
    /// Exited, not to be started again.
    Exited,
}

impl WorkerPhase {
    /// `vacant`, `starting`, `ready`, `retiring`, `backoff` or `exited`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerPhase::Vacant => "vacant",
            WorkerPhase::Starting => "starting",
            WorkerPhase::Ready => "ready",
            WorkerPhase::Retiring => "retiring",
            WorkerPhase::Backoff => "backoff",
            WorkerPhase::Exited => "exited",
        }
    }
}

/// How a listener's sockets are shared between generations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A socket per generation, new connections routed.
    #[default]
    Steer,
    /// One socket for every generation.
    Shared,
}

impl Mode {
    /// `steer` or `shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Steer => "steer",
            Mode::Shared => "shared",
        }
    }
}

/// Display, and comparison with the name (`state == "active"`), for the
/// enums shown by name.
macro_rules! named {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    )*};
}
named!(Phase, WorkerPhase, Mode);

/// One generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Its number.
    pub generation: u64,
    /// Its pid, if it was spawned.
    pub pid: Option<i32>,
    /// Where it is in its life (`starting`, `active`, `quiescing`,
    /// `draining`, `canary` in the JSON).
    pub state: Phase,
    /// Time since it was spawned, in milliseconds.
    pub age_ms: Option<u64>,
    /// Time in its current state, in milliseconds.
    pub state_ms: u64,
    /// The last `STATUS=` it sent.
    pub status: Option<String>,
    /// Connections waiting in its own steered sockets' queues (none in
    /// shared mode).
    #[serde(default)]
    pub queued: Option<u64>,
    /// Its open connections, from the kernel (established TCP
    /// connections on the listeners' ports held by its processes), while
    /// it quiesces or drains: what cutting it short would cut.
    #[serde(default)]
    pub connections: Option<u64>,
    /// Its workers (`--workers N`; one otherwise), by index.
    #[serde(default)]
    pub workers: Vec<Worker>,
    /// Its share of new connections in percent, while a rolling reload or
    /// a canary splits them between generations.
    #[serde(default)]
    pub share: Option<u32>,
}

/// One worker of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    /// Its index, 0 to N-1 (`SUPERVISOR_WORKER`).
    pub index: u32,
    /// Its pid, while it has a process.
    pub pid: Option<i32>,
    /// `starting`, `ready`, `retiring` (stopped alone), `backoff`
    /// (crashed, restarting), `exited` or `vacant` (no process).
    pub state: WorkerPhase,
    /// Times it was restarted after exiting on its own.
    pub restarts: u64,
    /// Time since its process was spawned, in milliseconds.
    #[serde(default)]
    pub age_ms: Option<u64>,
}

/// Reload counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloads {
    /// Reloads whose new generation became ready.
    pub succeeded: u64,
    /// Reloads whose new generation failed.
    pub failed: u64,
    /// Reload requests not answered yet.
    pub pending: u64,
    /// The last failed reload, if any.
    pub last_failure: Option<String>,
}

impl Status {
    /// The generation in `state` (`active`, `starting`), if any.
    pub fn in_state(&self, state: &str) -> Option<&Generation> {
        self.generations.iter().find(|g| g.state == state)
    }

    /// The human form, as `supervisor status` prints it.
    pub fn render(&self) -> String {
        let ms = |x: u64| human(Duration::from_millis(x));
        let mut out = String::new();
        let sup = &self.supervisor;
        let stopping = if sup.stopping { ", stopping" } else { "" };
        let upgraded = match sup.upgraded_ms_ago {
            Some(ago) => format!(
                ", upgraded in place {} time{} (last {} ago)",
                sup.upgrades,
                if sup.upgrades == 1 { "" } else { "s" },
                ms(ago)
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "supervisor pid {}, up {}, version {}{upgraded}{stopping}",
            sup.pid,
            ms(sup.uptime_ms),
            sup.version
        );
        let _ = writeln!(out, "control:     {}", sup.control);
        if !sup.binary.is_empty() {
            let _ = writeln!(out, "binary:      {}", sup.binary);
        }
        let command: Vec<String> = self.command.iter().map(|w| shell_word(w)).collect();
        let _ = writeln!(out, "command:     {}", command.join(" "));
        let _ = writeln!(
            out,
            "settings:    ready {}, stop signal {}, drain timeout {}",
            self.ready,
            self.stop_signal,
            ms(self.drain_timeout_ms)
        );
        if self.listeners.is_empty() {
            let _ = writeln!(out, "listeners:   none");
        } else {
            let _ = writeln!(out, "listeners:");
            let width = self.listeners.iter().map(|l| l.name.len()).max();
            let width = width.unwrap_or(0);
            for l in &self.listeners {
                let from = if l.inherited {
                    "  (handed over by the service manager)"
                } else {
                    ""
                };
                let mode = format!("  {}", l.mode);
                let _ = writeln!(
                    out,
                    "  fd {:<3} {:<width$}  {}{mode}{from}",
                    l.fd.to_string(),
                    l.name,
                    l.address
                );
            }
        }
        if self.generations.is_empty() {
            let _ = writeln!(out, "generations: none");
        } else {
            let _ = writeln!(out, "generations:");
            for g in &self.generations {
                let pid = match g.pid {
                    Some(p) => format!("pid {p}"),
                    None => "no pid".to_string(),
                };
                let age = g.age_ms.map_or_else(|| "-".to_string(), ms);
                let mut line = format!(
                    "  {:<4} {:<10} {:<9} up {age}",
                    g.generation.to_string(),
                    pid,
                    g.state,
                );
                if g.state != "active" {
                    let _ = write!(line, ", {} for {}", g.state, ms(g.state_ms));
                }
                if let Some(c) = g.connections {
                    let _ = write!(line, ", {c} open connection(s)");
                }
                if let Some(q) = g.queued.filter(|&q| q > 0) {
                    let _ = write!(line, ", {q} queued");
                }
                if let Some(p) = g.share {
                    let _ = write!(line, ", {p}% of new connections");
                }
                if let Some(text) = &g.status {
                    // A child's text must not be able to forge lines.
                    let _ = write!(line, "  status: {}", text.escape_debug());
                }
                let _ = writeln!(out, "{line}");
                if g.workers.len() > 1 {
                    for w in &g.workers {
                        let pid = w
                            .pid
                            .map_or_else(|| "no pid".to_string(), |p| format!("pid {p}"));
                        let age = w.age_ms.map_or_else(|| "-".to_string(), ms);
                        let _ = writeln!(
                            out,
                            "       worker {:<3} {:<10} {:<9} up {age}, {} restart{}",
                            w.index,
                            pid,
                            w.state,
                            w.restarts,
                            if w.restarts == 1 { "" } else { "s" }
                        );
                    }
                }
            }
        }
        let r = &self.reloads;
        let _ = writeln!(
            out,
            "restarts:    {}\nreloads:     {} succeeded, {} failed, {} pending",
            self.restarts, r.succeeded, r.failed, r.pending
        );
        if let Some(f) = &r.last_failure {
            let _ = writeln!(out, "last failed reload: {f}");
        }
        for f in &self.env_files {
            let when = f
                .read_ms_ago
                .map_or("not read since the supervisor started".to_string(), |ms| {
                    format!("read {} ago", human(Duration::from_millis(ms)))
                });
            let _ = writeln!(out, "env file:    {} ({when})", f.path);
        }
        if !self.watch.is_empty() {
            let last = self.last_watch_trigger.as_ref().map_or(String::new(), |t| {
                format!(
                    " (last reload for a change: {}, {} ago)",
                    t.path,
                    human(Duration::from_millis(t.ms_ago))
                )
            });
            let _ = writeln!(out, "watching:    {}{last}", self.watch.join(", "));
        }
        out
    }
}

/// A word as a shell would need it quoted (for showing commands).
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            supervisor: Supervisor {
                pid: 42,
                uptime_ms: 61_000,
                version: "0.1.0".into(),
                control: "/run/app/supervisor.sock".into(),
                stopping: false,
                binary: "/usr/bin/supervisor".into(),
                upgrades: 0,
                upgraded_ms_ago: None,
            },
            command: vec!["./server".into(), "--name".into(), "two words".into()],
            ready: "notify".into(),
            stop_signal: "SIGTERM".into(),
            drain_timeout_ms: 30_000,
            listeners: vec![Listener {
                name: "http".into(),
                address: "127.0.0.1:8080".into(),
                fd: 3,
                inherited: false,
                mode: Mode::Steer,
                spare_sockets: 0,
                reserve_sockets: 0,
            }],
            generations: vec![
                Generation {
                    generation: 6,
                    pid: Some(100),
                    state: Phase::Draining,
                    age_ms: Some(90_000),
                    state_ms: 2_100,
                    status: None,
                    queued: Some(2),
                    connections: None,
                    workers: Vec::new(),
                    share: None,
                },
                Generation {
                    generation: 7,
                    pid: Some(101),
                    state: Phase::Active,
                    age_ms: Some(2_300),
                    state_ms: 2_100,
                    status: Some("serving\n3".into()),
                    queued: Some(0),
                    connections: None,
                    workers: vec![
                        Worker {
                            index: 0,
                            pid: Some(101),
                            state: WorkerPhase::Ready,
                            restarts: 0,
                            age_ms: Some(2_300),
                        },
                        Worker {
                            index: 1,
                            pid: Some(105),
                            state: WorkerPhase::Ready,
                            restarts: 2,
                            age_ms: Some(300),
                        },
                    ],
                    share: Some(80),
                },
            ],
            restarts: 1,
            reloads: Reloads {
                succeeded: 5,
                failed: 1,
                pending: 0,
                last_failure: None,
            },
            env_files: vec![EnvFile {
                path: "/etc/app.env".into(),
                read_ms_ago: Some(3000),
            }],
            watch: Vec::new(),
            last_watch_trigger: None,
        }
    }

    #[test]
    fn renders() {
        let text = sample().render();
        assert!(
            text.contains("worker 1   pid 105    ready     up 300ms, 2 restarts"),
            "{text}"
        );
        assert!(text.contains(", 80% of new connections"), "{text}");
        assert!(
            text.contains("env file:    /etc/app.env (read 3s ago)"),
            "{text}"
        );
        assert!(text.contains("supervisor pid 42, up 1m1s"), "{text}");
        assert!(
            text.contains("command:     ./server --name 'two words'"),
            "{text}"
        );
        assert!(
            text.contains("fd 3   http  127.0.0.1:8080  steer"),
            "{text}"
        );
        assert!(
            text.contains("6    pid 100    draining  up 1m30s, draining for 2.1s, 2 queued"),
            "{text}"
        );
        assert!(text.contains("status: serving\\n3"), "{text}");
        assert!(
            text.contains("reloads:     5 succeeded, 1 failed, 0 pending"),
            "{text}"
        );
        assert!(text.contains("binary:      /usr/bin/supervisor"), "{text}");
        assert_eq!(text.lines().count(), 15, "{text}");
        // After an upgrade, the first line says so.
        let mut upgraded = sample();
        upgraded.supervisor.upgrades = 3;
        upgraded.supervisor.upgraded_ms_ago = Some(120_000);
        let text = upgraded.render();
        assert!(
            text.contains("version 0.1.0, upgraded in place 3 times (last 2m0s ago)"),
            "{text}"
        );
    }

    #[test]
    fn round_trips_through_json() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        assert_eq!(s.in_state("active").unwrap().generation, 7);
    }
}
