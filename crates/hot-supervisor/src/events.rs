//! The lifecycle events `supervisor events` streams and `--log-format
//! json` attaches to its lines: one typed [`Record`] per event, one JSON
//! object per line. Only the type and its text: who emits the events and
//! how they travel is the binary's business. Never reads the clock or the
//! machine's state itself.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// A reload was asked for (`source`: `SIGHUP`, `control pid N`,
    /// `watch PATH`, ...).
    ReloadRequested,
    /// A reload was asked for while a generation starts: it runs after.
    ReloadQueued,
    /// A generation's process (or one worker) was started (`pid`).
    Spawned,
    /// A generation is ready and serves (`duration_ms`: from spawn;
    /// `replaced`: the generation it replaces).
    Ready,
    /// New connections go to this generation now.
    Switched,
    /// A replaced generation waits for its queue to empty before its stop
    /// signal.
    Quiescing,
    /// A generation (or worker) was sent its stop signal: it drains.
    Stopping,
    /// A generation (or worker) was killed (`reason`: `drain timeout`,
    /// `forced stop`, ...).
    Killed,
    /// A generation (or worker) exited (`status`; `reason`: `drained`,
    /// `crashed`).
    Exited,
    /// A crashed generation (or worker) starts again after `duration_ms`.
    Restart,
    /// A starting generation failed (`reason`).
    StartFailed,
    /// A reload is done: its generation serves.
    ReloadSucceeded,
    /// A reload failed (`reason`); the old generation still serves.
    ReloadFailed,
    /// A canary serves its share (`percent`).
    Canary,
    /// A canary was promoted.
    Promoted,
    /// A canary or rolling reload was rolled back (`reason`).
    RolledBack,
    /// New connections are split between generations (`reason`: the
    /// shares).
    Split,
    /// `--max-generations` was reached: this generation, no longer
    /// receiving, was killed (`connections`: what it still held).
    GenerationCap,
    /// A `--watch` path changed (`path`).
    Watch,
    /// The supervisor executes a new image of itself in place: the stream
    /// ends here (reconnect).
    Upgrade,
    /// Another supervisor (`pid`) takes over: the stream ends here
    /// (reconnect).
    Takeover,
    /// A stop began.
    Stop,
    /// The supervisor exits (`status`): the stream ends here.
    Exit,
}

/// One lifecycle event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix time, in seconds.
    pub time: f64,
    /// What happened.
    pub event: Kind,
    /// The generation it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The worker, with `--workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// The process it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Why, or what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long (see each kind), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The generation replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<u64>,
    /// How a process exited: `exit status N`, `killed by SIGKILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Open connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// A path (`--watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Who asked (`SIGHUP`, `control pid N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A share of new connections, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

impl Record {
    /// An event of this kind at Unix time `time`, with no other field.
    pub fn new(time: f64, event: Kind) -> Record {
        Record {
            time,
            event,
            generation: None,
            worker: None,
            pid: None,
            reason: None,
            duration_ms: None,
            replaced: None,
            status: None,
            connections: None,
            path: None,
            source: None,
            percent: None,
        }
    }

    /// Its kind's name, as in the JSON: `reload_requested`.
    pub fn kind_name(&self) -> String {
        serde_json::to_value(self.event)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// One line for people: `12:00:01.234 ready generation=3 pid=42
    /// duration_ms=12.5`.
    pub fn render(&self) -> String {
        let mut out = self.kind_name();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (k, v) in map {
                if k == "time" || k == "event" {
                    continue;
                }
                match v {
                    serde_json::Value::String(s) => out.push_str(&format!(" {k}={s:?}")),
                    v => out.push_str(&format!(" {k}={v}")),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_line_with_only_its_fields() {
        let mut r = Record::new(1.5, Kind::ReloadRequested);
        r.source = Some("SIGHUP".into());
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"time":1.5,"event":"reload_requested","source":"SIGHUP"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        assert_eq!(r.render(), r#"reload_requested source="SIGHUP""#);
    }
}
