//! The children's own channels: each worker gets, at its start, one end of
//! a connected Unix stream socket pair (its number in
//! `SUPERVISOR_CHANNEL_FD`), on which it may ask `fds [NAME...]` for its
//! own generation's sockets, whatever user it runs as; every other request
//! is refused with an `error` line. The answers have the control socket's
//! format ([`crate::control::Transfer`]), one request at a time per
//! channel, and are sent without ever blocking.
//!
//! Owns the supervisor's ends and each one's exchange in progress. It
//! never answers anything but `fds`, never reads a request while an answer
//! is being sent, and never picks the sockets itself: the driver answers
//! with the generation's sockets ([`Channels::answer`]).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use hot_supervisor::parse::control::{
    Line, Request, RequestError, answer, parse_request, take_line,
};

use crate::control::{SendStep, Transfer, send_some};
use crate::machine::Generation;

/// What a worker's channel is doing.
#[derive(Debug)]
enum Stage {
    /// Reading a request line.
    Reading(Vec<u8>),
    /// The driver is choosing the sockets.
    Asked,
    /// Sending an answer (listeners, or an error line as a transfer of
    /// none).
    Sending(Transfer),
}

#[derive(Debug)]
struct Channel {
    stream: UnixStream,
    stage: Stage,
}

/// A request the driver must answer with [`Channels::answer`].
#[derive(Debug, PartialEq, Eq)]
pub struct Ask {
    /// The worker that asked.
    pub who: (Generation, u32),
    /// The listeners asked for, every one when empty.
    pub names: Vec<String>,
}

/// The supervisor's ends of the children's channels.
#[derive(Debug, Default)]
pub struct Channels {
    map: BTreeMap<(Generation, u32), Channel>,
}

/// The channels as carried across an in-place upgrade: an exchange in
/// progress is not (the child sees its channel's answer cut short, and may
/// ask again).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    channels: Vec<((Generation, u32), i32)>,
}

/// A new connected pair: the supervisor's end (non-blocking) and the
/// child's (blocking; close-on-exec until the spawn places it).
///
/// # Errors
/// socketpair(2) failed (out of descriptors).
pub fn pair() -> std::io::Result<(UnixStream, OwnedFd)> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    Ok((ours, OwnedFd::from(theirs)))
}

impl Channels {
    /// Keep worker `who`'s end (its predecessor's, if any, is closed).
    pub fn add(&mut self, who: (Generation, u32), stream: UnixStream) {
        self.map.insert(
            who,
            Channel {
                stream,
                stage: Stage::Reading(Vec::new()),
            },
        );
    }

    /// Forget the channels of workers for which `gone` says so.
    pub fn retain(&mut self, keep: impl Fn(Generation, u32) -> bool) {
        self.map.retain(|(g, w), _| keep(*g, *w));
    }

    /// The fds to poll: (worker, fd, whether for input).
    pub fn interest(&self) -> Vec<((Generation, u32), BorrowedFd<'_>, bool)> {
        self.map
            .iter()
            .filter_map(|(who, c)| match &c.stage {
                Stage::Reading(_) => Some((*who, c.stream.as_fd(), true)),
                Stage::Sending(t) if t.retry_at().is_none() => {
                    Some((*who, c.stream.as_fd(), false))
                }
                _ => None,
            })
            .collect()
    }

    /// When a refused transfer is retried.
    pub fn deadline(&self) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|c| match &c.stage {
                Stage::Sending(t) => t.retry_at(),
                _ => None,
            })
            .min()
    }

    /// Worker `who`'s channel is ready: a request to answer, if one came.
    pub fn on_ready(&mut self, who: (Generation, u32), now: Instant) -> Option<Ask> {
        let c = self.map.get_mut(&who)?;
        match &mut c.stage {
            Stage::Sending(_) => {
                self.step(who, now);
                None
            }
            Stage::Asked => None,
            Stage::Reading(buf) => {
                let mut chunk = [0u8; 512];
                let line = loop {
                    match c.stream.read(&mut chunk) {
                        // The child closed its end (or exited): done.
                        Ok(0) => {
                            self.map.remove(&who);
                            return None;
                        }
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            match take_line(buf) {
                                Line::Incomplete => continue,
                                Line::TooLong => break Err(RequestError::TooLong),
                                Line::Complete(l) => break parse_request(l),
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => {
                            self.map.remove(&who);
                            return None;
                        }
                    }
                };
                match line {
                    Ok(Request::Fds(names)) => {
                        c.stage = Stage::Asked;
                        Some(Ask { who, names })
                    }
                    Ok(other) => {
                        let why = format!(
                            "the channel answers only fds [NAME...] (this generation's own sockets), not {}",
                            other.as_str()
                        );
                        log::warn!(
                            "generation {} worker {}: refused {} on its channel",
                            who.0.0,
                            who.1,
                            other.as_str()
                        );
                        self.refuse(who, &why, now);
                        None
                    }
                    Err(RequestError::TooLong) => {
                        self.refuse(who, "request too long", now);
                        None
                    }
                    Err(why) => {
                        self.refuse(who, &why.to_string(), now);
                        None
                    }
                }
            }
        }
    }

    /// Answer `who`'s request with these (description line, socket) pairs,
    /// or with an error.
    pub fn answer(
        &mut self,
        who: (Generation, u32),
        items: Result<Vec<(String, OwnedFd)>, String>,
        now: Instant,
    ) {
        match items {
            Ok(items) => {
                if let Some(c) = self.map.get_mut(&who) {
                    c.stage = Stage::Sending(Transfer::new(items));
                    self.step(who, now);
                }
            }
            Err(why) => self.refuse(who, &why, now),
        }
    }

    /// Answer `error WHY` (a transfer of the one line, no fd).
    fn refuse(&mut self, who: (Generation, u32), why: &str, now: Instant) {
        if let Some(c) = self.map.get_mut(&who) {
            c.stage = Stage::Sending(Transfer::line(answer(false, why)));
            self.step(who, now);
        }
    }

    /// Retry transfers the kernel refused a moment ago.
    pub fn on_timeout(&mut self, now: Instant) {
        let due: Vec<(Generation, u32)> = self
            .map
            .iter()
            .filter(|(_, c)| matches!(&c.stage, Stage::Sending(t) if t.retry_at().is_some_and(|r| r <= now)))
            .map(|(who, _)| *who)
            .collect();
        for who in due {
            if let Some(Stage::Sending(t)) = self.map.get_mut(&who).map(|c| &mut c.stage) {
                t.clear_retry();
            }
            self.step(who, now);
        }
    }

    /// Push an answer on; back to reading once it is sent.
    fn step(&mut self, who: (Generation, u32), now: Instant) {
        let Some(c) = self.map.get_mut(&who) else {
            return;
        };
        let Stage::Sending(t) = &mut c.stage else {
            return;
        };
        if t.retry_at().is_some_and(|r| r > now) {
            return;
        }
        match send_some(&c.stream, t, now) {
            SendStep::Pending => {}
            SendStep::Done => c.stage = Stage::Reading(Vec::new()),
            SendStep::Failed(_, why) => {
                log::warn!(
                    "generation {} worker {}: its channel's answer failed ({why}): closed",
                    who.0.0,
                    who.1
                );
                self.map.remove(&who);
            }
        }
    }

    /// The state for an in-place upgrade.
    pub fn save(&self, keep: &mut crate::carry::Keep) -> Saved {
        Saved {
            channels: self
                .map
                .iter()
                .map(|(who, c)| (*who, keep.fd(c.stream.as_fd())))
                .collect(),
        }
    }

    /// The channels an upgrade carried across.
    pub fn restore(saved: Saved, adopt: &mut crate::carry::Adopt) -> Channels {
        let mut out = Channels::default();
        for (who, fd) in saved.channels {
            let stream = UnixStream::from(adopt.take(fd));
            let _ = stream.set_nonblocking(true);
            out.add(who, stream);
        }
        out
    }
}
