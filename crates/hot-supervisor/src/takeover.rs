//! Takeover: a new supervisor (`supervisor --takeover PATH ...`) takes every
//! socket of the running one over its control socket, starts its own first
//! generation on them, and once that serves tells the old supervisor to let
//! its generations go (quiesce, stop, drain) and exit.
//!
//! The exchange, on one connection to the old supervisor's control socket:
//!
//! 1. new → old: `takeover`.
//! 2. old → new: `ok N`, then one line of JSON ([`Payload`]: the listeners
//!    with their reuseport groups, members in the kernel's order, the
//!    control socket, the health socket), then N lines, each the number the
//!    old supervisor knows an fd by, with the N fds attached (`SCM_RIGHTS`,
//!    in the batches of the `fds` answer). From then on the old supervisor
//!    changes no group (no program, no member joins or leaves: the new
//!    one's copy of the order must stay true), accepts no control
//!    connection (the new one does, on the same socket), starts no
//!    generation, and keeps serving.
//! 3. new → old: `drain` once the new generation is ready and routed. The
//!    old supervisor's generations go as replaced ones do; it exits 0 when
//!    they are gone, leaving its Unix socket files to the new one.
//! 4. If the new generation fails instead, the new supervisor stops it and
//!    exits (non-zero) without a word: the old one sees the connection end
//!    before a `drain`, and carries on as before (its groups lost only the
//!    new one's members, at their end, so its copy of the order is true).
//!
//! The new supervisor learns that the old one has exited when the
//! connection ends after its `drain`; only then does it close the sockets
//! of the old generations (which every one of them held).
//!
//! It also times the takeover for the new supervisor's log ([`Began`],
//! [`Sink::took`]): from the start of `main`, with the thread's time on a
//! CPU and waiting for one. It never decides when a generation serves.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::control::{SendStep, Transfer, send_some};
use hot_supervisor::parse::control::fds_header;

/// The payload's format name.
pub const FORMAT: &str = "supervisor-takeover";

/// The payload's version; a supervisor takes over from versions up to its
/// own.
pub const VERSION: u32 = 1;

/// What the old supervisor hands over besides the fds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The old supervisor's version.
    pub writer: String,
    /// The old supervisor's pid.
    pub pid: u32,
    /// The listeners and their groups.
    pub steering: crate::steer::Saved,
    /// The control socket.
    pub control: crate::listen::Saved,
    /// The health endpoint's socket.
    pub health: Option<crate::health::Saved>,
}

/// A payload's format and version, read before the rest: from a JSON
/// object, the two fields (of any other type: missing), every other field
/// skipped unread; anything else than an object has neither.
#[derive(Default)]
struct Head {
    format: Option<String>,
    version: Option<u64>,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Head, D::Error> {
        d.deserialize_any(HeadVisitor)
    }
}

struct HeadVisitor;

impl<'de> serde::de::Visitor<'de> for HeadVisitor {
    type Value = Head;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        use serde::de::IgnoredAny;
        let mut head = Head::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: serde_json::Value = match key.as_ref() {
                "format" | "version" => map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if key == "format" {
                head.format = value.as_str().map(str::to_string);
            } else {
                head.version = value.as_u64();
            }
        }
        Ok(head)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Head, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Head::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Head, E> {
        Ok(Head::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Head, E> {
        Ok(Head::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Head, E> {
        Ok(Head::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Head, E> {
        Ok(Head::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<Head, E> {
        Ok(Head::default())
    }

    fn visit_unit<E>(self) -> Result<Head, E> {
        Ok(Head::default())
    }
}

/// What the old supervisor hears back.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// The new supervisor serves: let the generations go.
    Drain,
    /// The new supervisor is gone without `drain` (its generation failed):
    /// carry on.
    Gone,
}

/// The old supervisor's side of a takeover: the transfer, then the wait for
/// `drain` (or the end). After `drain` the connection stays open, unpolled,
/// until this process exits: its end tells the new supervisor.
#[derive(Debug)]
pub struct Source {
    stream: UnixStream,
    transfer: Option<Transfer>,
    read: Vec<u8>,
    drained: bool,
    /// The new supervisor's pid.
    pub peer: i32,
}

impl Source {
    /// Send `payload` and `fds` (duplicates, each with the number the
    /// payload names it by) to the new supervisor on `stream`.
    ///
    /// # Errors
    /// The payload cannot be serialized.
    pub fn new(
        stream: UnixStream,
        peer: i32,
        payload: &Payload,
        fds: Vec<(RawFd, OwnedFd)>,
    ) -> Result<Source> {
        // The header and the payload written once, into the buffer that is
        // sent (hundreds of kilobytes with thousands of listeners; a few
        // hundred bytes a listener, so rarely grown).
        let mut head = Vec::with_capacity(4096 + 256 * fds.len());
        head.extend_from_slice(fds_header(fds.len()).as_bytes());
        serde_json::to_writer(&mut head, payload).context("serialize the takeover")?;
        head.push(b'\n');
        // Room for the whole answer in the socket's buffer where the
        // system allows it (net.core.wmem_max caps it, 208 KiB by default;
        // the kernel doubles what it is given; never less than it has):
        // with thousands of listeners the payload is hundreds of
        // kilobytes, and each time the buffer fills costs a round of both
        // loops, which a busy machine may each delay.
        use nix::sys::socket::{getsockopt, setsockopt, sockopt::SndBuf};
        let room = head.len() + 64 * fds.len();
        if getsockopt(&stream, SndBuf).is_ok_and(|now| now < room) {
            let _ = setsockopt(&stream, SndBuf, &room);
        }
        stream
            .set_nonblocking(true)
            .context("make the takeover connection non-blocking")?;
        let transfer = Transfer::with_head(head, fds, |number, data| {
            // The number the payload names the fd by, a line each.
            let _ = writeln!(data, "{number}");
        });
        Ok(Source {
            stream,
            transfer: Some(transfer),
            read: Vec::new(),
            drained: false,
            peer,
        })
    }

    /// The fd to poll and whether for input (else output); none once
    /// `drain` was heard.
    pub fn interest(&self) -> Option<(BorrowedFd<'_>, bool)> {
        if self.drained {
            return None;
        }
        match &self.transfer {
            Some(t) if t.retry_at().is_some() => None,
            Some(_) => Some((self.stream.as_fd(), false)),
            None => Some((self.stream.as_fd(), true)),
        }
    }

    /// When a refused send is tried again.
    pub fn deadline(&self) -> Option<Instant> {
        self.transfer.as_ref().and_then(Transfer::retry_at)
    }

    /// The connection is ready (or a retry is due): send, or read.
    pub fn step(&mut self, now: Instant) -> Option<Heard> {
        if let Some(t) = &mut self.transfer {
            if t.retry_at().is_some_and(|r| r > now) {
                return None;
            }
            t.clear_retry();
            return match send_some(&self.stream, t, now) {
                SendStep::Pending => None,
                SendStep::Done => {
                    self.transfer = None;
                    None
                }
                SendStep::Failed(_, why) => {
                    log::warn!("takeover by pid {}: {why}", self.peer);
                    self.transfer = None;
                    Some(Heard::Gone)
                }
            };
        }
        if self.drained {
            return None;
        }
        let mut chunk = [0u8; 256];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(Heard::Gone),
                Ok(n) => {
                    self.read.extend_from_slice(&chunk[..n]);
                    if let Some(end) = self.read.iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(&self.read[..end]).into_owned();
                        self.read.drain(..=end);
                        if line == "drain" {
                            self.drained = true;
                            return Some(Heard::Drain);
                        }
                        log::warn!(
                            "takeover by pid {}: unexpected {:?}",
                            self.peer,
                            line.chars().take(40).collect::<String>()
                        );
                    }
                    if self.read.len() > 1024 {
                        return Some(Heard::Gone);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(_) => return Some(Heard::Gone),
            }
        }
    }
}

/// What a new supervisor received.
#[derive(Debug)]
pub struct Taken {
    /// The payload.
    pub payload: Payload,
    /// The fds, in order, with the numbers the old supervisor knew them by.
    pub numbers: Vec<i32>,
    /// The fds.
    pub fds: Vec<OwnedFd>,
    /// The connection (kept: see [`Sink`]).
    pub stream: UnixStream,
}

/// Ask the supervisor at `path` for its sockets (blocking: the new
/// supervisor does this before it serves anything).
///
/// # Errors
/// It cannot be reached, refuses (the message is its answer), or sends
/// something else than a takeover this binary can read.
pub fn fetch(path: &Path) -> Result<Taken> {
    let answer = supervisor_child::exchange(path, "takeover", 1)
        .map_err(|e| anyhow!("take over from the supervisor at {}: {e}", path.display()))?;
    let text = String::from_utf8(answer.data).context("the takeover is not UTF-8")?;
    let mut lines = text.lines();
    let payload = read_payload(lines.next().unwrap_or_default(), path)?;
    let numbers = lines
        .map(|l| {
            l.trim()
                .parse::<i32>()
                .context("an fd number of the takeover")
        })
        .collect::<Result<Vec<i32>>>()?;
    Ok(Taken {
        payload,
        numbers,
        fds: answer.fds,
        stream: answer.stream,
    })
}

/// When this process began (the start of `main`), with its scheduler's
/// counts then (a takeover reports the time from then: [`Sink::took`]).
#[derive(Clone, Copy, Debug)]
pub struct Began {
    at: Instant,
    sched: Option<(std::time::Duration, std::time::Duration)>,
}

impl Began {
    /// Now.
    pub fn now() -> Began {
        Began {
            at: Instant::now(),
            sched: schedstat(),
        }
    }
}

/// This thread's time on a CPU and waiting in a run queue, from
/// `/proc/thread-self/schedstat` (nanoseconds; absent without
/// `CONFIG_SCHED_INFO`).
fn schedstat() -> Option<(std::time::Duration, std::time::Duration)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let on = fields.next()?.ok()?;
    let waiting = fields.next()?.ok()?;
    Some((
        std::time::Duration::from_nanos(on),
        std::time::Duration::from_nanos(waiting),
    ))
}

/// The payload line from the supervisor at `path`: its format and version
/// first (every other field skipped, nothing built), so that a payload this
/// binary cannot read is refused by name rather than as malformed; then the
/// payload itself, parsed once.
fn read_payload(json: &str, path: &Path) -> Result<Payload> {
    let head: Head = serde_json::from_str(json).context("the takeover's payload")?;
    if head.format.as_deref() != Some(FORMAT) {
        bail!(
            "the supervisor at {} sent no takeover payload",
            path.display()
        );
    }
    let version = head.version;
    if version.is_none_or(|v| v > u64::from(VERSION)) {
        bail!(
            "the supervisor at {} hands over in version {version:?}; this binary ({}) takes versions up to {VERSION}: upgrade this binary, or the old one in place (supervisor upgrade) first",
            path.display(),
            crate::upgrade::version()
        );
    }
    serde_json::from_str(json).context("the takeover's payload is malformed")
}

/// The new supervisor's side once it serves on what it took: `drain` to
/// the old one, then the connection's end says the old one has exited.
#[derive(Debug)]
pub struct Sink {
    stream: UnixStream,
    /// The old supervisor's pid.
    pub peer: u32,
    drained: bool,
    /// When this process began.
    began: Began,
}

impl Sink {
    /// The connection to the old supervisor, whose pid is `peer`; this
    /// process `began`.
    pub fn new(stream: UnixStream, peer: u32, began: Began) -> Sink {
        let _ = stream.set_nonblocking(true);
        Sink {
            stream,
            peer,
            drained: false,
            began,
        }
    }

    /// How long the takeover took, from the start of `main`, and how
    /// much of that it spent on a CPU and waiting for one (the kernel's
    /// count for this thread, where `/proc` has it): on a busy machine,
    /// the part a supervisor's own work cannot shorten.
    pub fn took(&self) -> String {
        let took = hot_supervisor::duration::human(self.began.at.elapsed());
        match (self.began.sched, schedstat()) {
            (Some((on0, waiting0)), Some((on, waiting))) => format!(
                "{took} after this supervisor started: {} on a CPU, {} waiting for one",
                hot_supervisor::duration::human(on.saturating_sub(on0)),
                hot_supervisor::duration::human(waiting.saturating_sub(waiting0))
            ),
            _ => format!("{took} after this supervisor started"),
        }
    }

    /// Whether `drain` was sent.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Tell the old supervisor to let its generations go.
    ///
    /// # Errors
    /// The old supervisor is gone (its generations went with it).
    pub fn drain(&mut self) -> Result<()> {
        // Six bytes into a socket the old supervisor reads: bounded all the
        // same, the loop must never wait on it for long.
        let _ = self.stream.set_nonblocking(false);
        let _ = self
            .stream
            .set_write_timeout(Some(std::time::Duration::from_secs(1)));
        let sent = self.stream.write_all(b"drain\n");
        let _ = self.stream.set_nonblocking(true);
        sent.context("tell the old supervisor to drain")?;
        self.drained = true;
        Ok(())
    }

    /// The fd to poll for the end of the connection.
    pub fn interest(&self) -> Option<BorrowedFd<'_>> {
        Some(self.stream.as_fd())
    }

    /// Readable: whether the old supervisor has exited.
    pub fn gone(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(json: &str) -> String {
        format!(
            "{:#}",
            read_payload(json, Path::new("/run/c.sock")).expect_err(json)
        )
    }

    #[test]
    fn a_payload_of_another_format_or_a_later_version_is_refused_by_name() {
        for json in [
            r#"{"format":"something-else","version":1}"#,
            r#"{"version":1}"#,
            r#"{"format":7,"version":1}"#,
            r#"[1,2]"#,
            r#"[1,2,3]"#,
            r#"["supervisor-takeover",1]"#,
            "null",
            "5",
            r#""x""#,
        ] {
            assert_eq!(
                refusal(json),
                "the supervisor at /run/c.sock sent no takeover payload",
                "{json}"
            );
        }
        let later = refusal(r#"{"format":"supervisor-takeover","version":2,"what":[1]}"#);
        assert!(
            later.starts_with("the supervisor at /run/c.sock hands over in version Some(2);"),
            "{later}"
        );
        let none = refusal(r#"{"format":"supervisor-takeover","version":"1"}"#);
        assert!(none.contains("hands over in version None"), "{none}");
    }

    #[test]
    fn a_payload_that_is_not_json_or_lacks_a_field_is_malformed() {
        assert!(refusal("not json").starts_with("the takeover's payload: "));
        let missing = refusal(r#"{"format":"supervisor-takeover","version":1,"pid":3}"#);
        assert!(
            missing.starts_with("the takeover's payload is malformed: missing field"),
            "{missing}"
        );
    }
}
