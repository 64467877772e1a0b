//! `/metrics`: the supervisor's state in the Prometheus text exposition
//! format (version 0.0.4), written from the status and the report's counts.
//! Pure: it formats what it is given.

use std::fmt::Write as _;
use std::time::Duration;

use hot_supervisor::status::Status;

/// Bucket bounds of the duration histograms, in seconds.
pub const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A Prometheus histogram of durations.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`].
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Record one duration.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// What `/metrics` shows besides the status.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Time from spawn to ready of the generations that served reloads.
    pub reload_seconds: Histogram,
    /// Time from stop signal to exit of drained generations.
    pub drain_seconds: Histogram,
    /// Unix time of the last successful reload.
    pub last_reload_success: Option<f64>,
    /// Unix time the supervisor started.
    pub start_time: f64,
    /// Connections waiting in each listener's serving socket, in order.
    pub queued: Vec<u64>,
    /// Workers of serving generations that exited on their own.
    #[serde(default)]
    pub worker_crashes: u64,
    /// Generations killed by `--max-generations`.
    #[serde(default)]
    pub generations_cut: u64,
    /// Connections they held (open, and queued) when they were killed.
    #[serde(default)]
    pub connections_cut: u64,
}

/// A label value, escaped as the format wants.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition.
pub fn render(status: &Status, counts: &Counts) -> String {
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let serving = status.in_state("active").map_or(0, |g| g.generation);
    gauge(
        &mut out,
        "supervisor_serving_generation",
        "The number of the generation that serves (0: none).",
        "gauge",
        &[(String::new(), serving as f64)],
    );
    let states = ["starting", "active", "quiescing", "draining", "canary"];
    let rows: Vec<(String, f64)> = states
        .iter()
        .map(|s| {
            let n = status.generations.iter().filter(|g| g.state == *s).count();
            (format!("{{state=\"{s}\"}}"), n as f64)
        })
        .collect();
    gauge(
        &mut out,
        "supervisor_generations",
        "Generations by state.",
        "gauge",
        &rows,
    );
    gauge(
        &mut out,
        "supervisor_reloads_total",
        "Reloads by outcome.",
        "counter",
        &[
            (
                "{outcome=\"succeeded\"}".into(),
                status.reloads.succeeded as f64,
            ),
            ("{outcome=\"failed\"}".into(), status.reloads.failed as f64),
        ],
    );
    gauge(
        &mut out,
        "supervisor_crash_restarts_total",
        "Generations started by the crash policy.",
        "counter",
        &[(String::new(), status.restarts as f64)],
    );
    if let Some(t) = counts.last_reload_success {
        gauge(
            &mut out,
            "supervisor_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload.",
            "gauge",
            &[(String::new(), t)],
        );
    }
    gauge(
        &mut out,
        "supervisor_start_time_seconds",
        "Unix time the supervisor started.",
        "gauge",
        &[(String::new(), counts.start_time)],
    );
    gauge(
        &mut out,
        "supervisor_stopping",
        "1 while the supervisor stops (the shutdown delay included).",
        "gauge",
        &[(
            String::new(),
            f64::from(u8::from(status.supervisor.stopping)),
        )],
    );
    let rows: Vec<(String, f64)> = status
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                format!(
                    "{{listener=\"{}\",mode=\"{}\"}}",
                    label(&l.name),
                    label(l.mode.as_str())
                ),
                counts.queued.get(i).copied().unwrap_or(0) as f64,
            )
        })
        .collect();
    gauge(
        &mut out,
        "supervisor_listener_queued_connections",
        "Connections waiting in the accept queue of each listener's serving socket.",
        "gauge",
        &rows,
    );
    let mut workers = Vec::new();
    let mut restarts = Vec::new();
    let mut shares = Vec::new();
    for g in &status.generations {
        for w in &g.workers {
            let labels = format!(
                "{{generation=\"{}\",worker=\"{}\",pid=\"{}\",state=\"{}\"}}",
                g.generation,
                w.index,
                w.pid.map_or_else(String::new, |p| p.to_string()),
                label(w.state.as_str())
            );
            workers.push((labels, 1.0));
            restarts.push((
                format!("{{generation=\"{}\",worker=\"{}\"}}", g.generation, w.index),
                w.restarts as f64,
            ));
        }
        if let Some(p) = g.share {
            shares.push((format!("{{generation=\"{}\"}}", g.generation), f64::from(p)));
        }
    }
    gauge(
        &mut out,
        "supervisor_worker_info",
        "Every worker of every generation, with its pid and state (1 each).",
        "gauge",
        &workers,
    );
    gauge(
        &mut out,
        "supervisor_worker_restarts_total",
        "Times each worker was restarted after it exited on its own.",
        "counter",
        &restarts,
    );
    gauge(
        &mut out,
        "supervisor_worker_crashes_total",
        "Workers of serving generations that exited on their own.",
        "counter",
        &[(String::new(), counts.worker_crashes as f64)],
    );
    gauge(
        &mut out,
        "supervisor_generations_cut_total",
        "Generations killed before the end of their drain because --max-generations was reached.",
        "counter",
        &[(String::new(), counts.generations_cut as f64)],
    );
    gauge(
        &mut out,
        "supervisor_connections_cut_total",
        "Connections those generations held (open, or queued) when they were killed.",
        "counter",
        &[(String::new(), counts.connections_cut as f64)],
    );
    gauge(
        &mut out,
        "supervisor_generation_share_percent",
        "Each generation's share of new connections while a rolling reload or a canary splits them.",
        "gauge",
        &shares,
    );
    counts.reload_seconds.write(
        &mut out,
        "supervisor_reload_duration_seconds",
        "Time from spawn to ready of generations started by reloads.",
    );
    counts.drain_seconds.write(
        &mut out,
        "supervisor_drain_duration_seconds",
        "Time from the stop signal to the exit of drained generations.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(300));
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count 2\n"), "{out}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
