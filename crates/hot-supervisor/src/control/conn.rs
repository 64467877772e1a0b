//! One control connection and its one exchange: reading the request line,
//! waiting for the outcome, writing the answer, sending listeners, or
//! streaming events. Non-blocking throughout; it never acts on a request
//! (the server turns it into an event for the driver).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use hot_supervisor::parse::control::{
    Line, Request, RequestError, answer, parse_request, take_line,
};

use super::transfer::{SendStep, Transfer, send_some};
use super::{REQUEST_TIMEOUT, WRITE_TIMEOUT};

/// Where a connection is in its one exchange.
#[derive(Debug)]
pub enum Stage {
    /// Reading the request line.
    Reading(Vec<u8>),
    /// The request is being carried out; the answer comes later.
    Waiting,
    /// Sending the answer, from this offset; then close.
    Writing(Vec<u8>, usize),
    /// Sending listeners with `SCM_RIGHTS`; then close.
    Sending(Transfer),
    /// Streaming lifecycle events: what is left to send, from this
    /// offset; open until the client leaves, falls [`EVENT_BUFFER`]
    /// behind, or the stream ends (upgrade, takeover, exit).
    Streaming(Vec<u8>, usize),
}

/// Bytes of events a subscriber may fall behind (on top of what its
/// socket's buffer holds) before it is dropped: a reload makes about ten
/// events of 100 to 250 bytes, so this is some fifty reloads' worth, far
/// more than a client that reads at all lets pile up. The loop never
/// waits for a subscriber.
pub const EVENT_BUFFER: usize = 64 * 1024;

/// At most this many event streams at once; more are refused. Counted
/// apart from [`MAX_CONNECTIONS`](super::MAX_CONNECTIONS), as waiting requesters are.
pub const MAX_SUBSCRIBERS: usize = 32;

/// One control connection.
#[derive(Debug)]
pub struct Conn {
    /// The non-blocking stream.
    pub stream: UnixStream,
    /// The peer's pid (from SO_PEERCRED; 0 if unknown).
    pub pid: i32,
    /// The peer's uid (from SO_PEERCRED).
    pub uid: u32,
    /// Where it is.
    pub stage: Stage,
    /// When reading or writing gives up.
    pub deadline: Option<Instant>,
}

/// What a read step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStep {
    /// Nothing complete yet.
    Pending,
    /// A request, or the error to answer with.
    Request(Result<Request, RequestError>),
    /// The peer left without a request: close quietly.
    Gone,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(stream: UnixStream, pid: i32, uid: u32, now: Instant) -> Conn {
        Conn {
            stream,
            pid,
            uid,
            stage: Stage::Reading(Vec::new()),
            deadline: Some(now + REQUEST_TIMEOUT),
        }
    }

    /// The fd to poll, with whether to wait for input (else output); `None`
    /// while waiting for an outcome (a half-closed peer must not wake the
    /// loop over and over).
    pub fn interest(&self) -> Option<(BorrowedFd<'_>, bool)> {
        match self.stage {
            Stage::Reading(_) => Some((self.stream.as_fd(), true)),
            Stage::Writing(..) => Some((self.stream.as_fd(), false)),
            Stage::Sending(ref t) if t.retry_at().is_none() => Some((self.stream.as_fd(), false)),
            // Events to send: wait for room; none: watch for the client
            // leaving (its end of stream).
            Stage::Streaming(ref out, pos) => Some((self.stream.as_fd(), pos >= out.len())),
            Stage::Sending(_) | Stage::Waiting => None,
        }
    }

    /// When the connection next needs the loop: its give-up deadline, or
    /// the retry time of a refused transfer.
    pub fn next_time(&self) -> Option<Instant> {
        let retry = match &self.stage {
            Stage::Sending(t) => t.retry_at(),
            _ => None,
        };
        [self.deadline, retry].into_iter().flatten().min()
    }

    /// The request is being carried out: no deadline until its answer.
    pub fn wait(&mut self) {
        self.stage = Stage::Waiting;
        self.deadline = None;
    }

    /// Send listeners; the caller then calls [`Conn::send`].
    pub fn start_transfer(&mut self, t: Transfer, now: Instant) {
        self.stage = Stage::Sending(t);
        self.deadline = Some(now + WRITE_TIMEOUT);
    }

    /// Send what the socket takes of the transfer; on a failure before
    /// anything went out, the error is answered as a line instead.
    pub fn send(&mut self, now: Instant) -> SendStep {
        let Stage::Sending(t) = &mut self.stage else {
            return SendStep::Done;
        };
        if t.retry_at().is_some_and(|r| r > now) {
            return SendStep::Pending;
        }
        t.clear_retry();
        let step = send_some(&self.stream, t, now);
        if let SendStep::Failed(true, why) = &step {
            let line = answer(false, why);
            self.reply(line, now);
            if !self.write() {
                return SendStep::Pending;
            }
        }
        step
    }

    /// Read what is there; never blocks.
    pub fn read(&mut self) -> ReadStep {
        let Stage::Reading(buf) = &mut self.stage else {
            return ReadStep::Pending;
        };
        let mut chunk = [0u8; 512];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    // End of input: a request without its newline still
                    // counts; nothing at all means the peer left.
                    if buf.is_empty() {
                        return ReadStep::Gone;
                    }
                    return match take_line(buf) {
                        Line::TooLong => ReadStep::Request(Err(RequestError::TooLong)),
                        Line::Complete(l) => ReadStep::Request(parse_request(l)),
                        Line::Incomplete => ReadStep::Request(parse_request(buf)),
                    };
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    match take_line(buf) {
                        Line::Incomplete => continue,
                        Line::TooLong => return ReadStep::Request(Err(RequestError::TooLong)),
                        Line::Complete(l) => return ReadStep::Request(parse_request(l)),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadStep::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return ReadStep::Gone,
            }
        }
    }

    /// Start sending `line`; the caller then calls [`Conn::write`].
    pub fn reply(&mut self, line: String, now: Instant) {
        self.stage = Stage::Writing(line.into_bytes(), 0);
        self.deadline = Some(now + WRITE_TIMEOUT);
    }

    /// Send what the socket takes; `true` once done (sent, or the peer is
    /// gone) and the connection can be closed.
    pub fn write(&mut self) -> bool {
        let Stage::Writing(out, pos) = &mut self.stage else {
            return false;
        };
        while *pos < out.len() {
            match self.stream.write(&out[*pos..]) {
                Ok(0) => return true,
                Ok(n) => *pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // EPIPE and friends: the client left; SIGPIPE is not a
                // concern, std ignores it for the process.
                Err(_) => return true,
            }
        }
        true
    }

    /// An event stream: send what the socket takes of what is queued;
    /// `false` once the client is gone.
    pub(super) fn flush_stream(&mut self) -> bool {
        let Stage::Streaming(out, pos) = &mut self.stage else {
            return false;
        };
        while *pos < out.len() {
            match self.stream.write(&out[*pos..]) {
                Ok(0) => return false,
                Ok(n) => *pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if *pos == out.len() {
            out.clear();
            *pos = 0;
        }
        true
    }

    /// An event stream: take (and ignore) what the client sent; `false`
    /// once it has left.
    pub(super) fn still_there(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}
