//! The health endpoint (`--health ADDR`): a small HTTP/1.x listener of the
//! supervisor's own, served from the one poll loop.
//!
//! It owns its listening socket and connections: accepting (at most
//! [`MAX_CONNECTIONS`] at once; more are closed at once), reading one request
//! head (at most [`MAX_REQUEST`] bytes, within [`REQUEST_TIMEOUT`]), and
//! writing one answer, then closing. It never decides what to answer: it
//! names the route asked for, and the driver answers with a body.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use hot_supervisor::parse::http::{Route, parse_request};

/// Connections open at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest request head read.
pub const MAX_REQUEST: usize = 8192;
/// A request must arrive within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer must be taken within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection's id.
pub type ConnId = u64;

/// What a poll entry watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// The listening socket.
    Accept,
    /// One connection.
    Conn(ConnId),
}

enum Stage {
    Reading(Vec<u8>),
    Waiting,
    Writing(Vec<u8>, usize),
}

struct Conn {
    stream: TcpStream,
    stage: Stage,
    deadline: Instant,
    head_only: bool,
    route: Option<Route>,
}

/// The health listener. See the module documentation.
pub struct HealthServer {
    listener: TcpListener,
    address: SocketAddr,
    conns: BTreeMap<ConnId, Conn>,
    next: ConnId,
    /// Accepting is paused until then (out of file descriptors).
    paused: Option<Instant>,
}

/// The length of the request head in `buf` (up to and including the blank
/// line that ends it), once it holds a whole one.
fn head_len(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    crlf.into_iter().chain(lf).min()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The `/readyz` answer: 200 while a generation serves (`serving` names it)
/// and no stop is under way; 503 with the reason otherwise (`delay` is
/// what is left of the shutdown delay).
pub fn readiness(serving: Option<&str>, stopping: bool, delay: Option<Duration>) -> (u16, String) {
    match (serving, stopping, delay) {
        (_, true, Some(left)) => (
            503,
            format!(
                "not ready: stopping (shutdown delay, {} left)\n",
                hot_supervisor::duration::human(left)
            ),
        ),
        (_, true, None) => (503, "not ready: stopping\n".to_string()),
        (Some(who), false, _) => (200, format!("ready: {who} serving\n")),
        (None, false, _) => (503, "not ready: no generation serving\n".to_string()),
    }
}

/// A whole HTTP/1.1 answer that closes the connection.
pub fn response(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The health endpoint as carried across an in-place upgrade: its listening
/// socket (requests in progress are closed by the exec; HTTP clients retry).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    fd: i32,
}

impl HealthServer {
    /// The state for an in-place upgrade.
    pub fn save(&self, keep: &mut crate::carry::Keep) -> Saved {
        Saved {
            fd: keep.fd(self.listener.as_fd()),
        }
    }

    /// The endpoint an upgrade carried across.
    ///
    /// # Errors
    /// The socket has no local address (it is not the health socket).
    pub fn restore(saved: Saved, adopt: &mut crate::carry::Adopt) -> Result<HealthServer> {
        HealthServer::serving(TcpListener::from(adopt.take(saved.fd)))
    }
}

impl HealthServer {
    /// Bind `addr`.
    ///
    /// # Errors
    /// The address cannot be bound; the message names it.
    pub fn bind(addr: SocketAddr) -> Result<HealthServer> {
        let listener = TcpListener::bind(addr).with_context(|| format!("--health {addr}"))?;
        listener
            .set_nonblocking(true)
            .context("make the health socket non-blocking")?;
        HealthServer::serving(listener)
    }

    /// Serve on a bound, non-blocking socket.
    fn serving(listener: TcpListener) -> Result<HealthServer> {
        let address = listener.local_addr().context("health socket address")?;
        Ok(HealthServer {
            listener,
            address,
            conns: BTreeMap::new(),
            next: 0,
            paused: None,
        })
    }

    /// The address it serves on (port 0 resolved).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The fds to poll, with whether each waits for input.
    pub fn interest(&self) -> Vec<(Watch, BorrowedFd<'_>, bool)> {
        let mut out = Vec::new();
        if self.paused.is_none() {
            out.push((Watch::Accept, self.listener.as_fd(), true));
        }
        for (id, c) in &self.conns {
            match c.stage {
                Stage::Reading(_) => out.push((Watch::Conn(*id), c.stream.as_fd(), true)),
                Stage::Writing(..) => out.push((Watch::Conn(*id), c.stream.as_fd(), false)),
                Stage::Waiting => {}
            }
        }
        out
    }

    /// The next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .map(|c| c.deadline)
            .chain(self.paused)
            .min()
    }

    /// Deadlines: close late connections, resume accepting.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.paused.is_some_and(|t| t <= now) {
            self.paused = None;
        }
        self.conns.retain(|_, c| c.deadline > now);
    }

    /// A watched fd is ready: the requests now complete, each with the
    /// route it asks for.
    pub fn on_ready(&mut self, w: Watch, now: Instant) -> Vec<ConnId> {
        match w {
            Watch::Accept => {
                self.accept(now);
                Vec::new()
            }
            Watch::Conn(id) => self.serve(id, now).into_iter().collect(),
        }
    }

    /// The route connection `id` asked for (once [`HealthServer::on_ready`]
    /// returned it), and whether it is a `HEAD` request.
    pub fn route(&self, id: ConnId) -> Option<(Route, bool)> {
        let c = self.conns.get(&id)?;
        let Stage::Waiting = c.stage else {
            return None;
        };
        Some((c.route?, c.head_only))
    }

    /// Answer connection `id` and close it once the answer is taken.
    pub fn answer(
        &mut self,
        id: ConnId,
        status: u16,
        content_type: &str,
        body: &str,
        now: Instant,
    ) {
        if let Some(c) = self.conns.get_mut(&id) {
            let out = response(status, content_type, body, c.head_only);
            c.stage = Stage::Writing(out, 0);
            c.deadline = now + WRITE_TIMEOUT;
            if write(c) {
                self.conns.remove(&id);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..MAX_CONNECTIONS {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        // Closed at once: the prober retries.
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.next += 1;
                    self.conns.insert(
                        self.next,
                        Conn {
                            stream,
                            stage: Stage::Reading(Vec::new()),
                            deadline: now + REQUEST_TIMEOUT,
                            head_only: false,
                            route: None,
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    log::warn!("accept on the health socket: {e}; retrying in 100ms");
                    self.paused = Some(now + Duration::from_millis(100));
                    return;
                }
            }
        }
    }

    fn serve(&mut self, id: ConnId, now: Instant) -> Option<ConnId> {
        let c = self.conns.get_mut(&id)?;
        match &mut c.stage {
            Stage::Writing(..) => {
                if write(c) {
                    self.conns.remove(&id);
                }
                None
            }
            Stage::Waiting => None,
            Stage::Reading(buf) => {
                let mut chunk = [0u8; 1024];
                loop {
                    match c.stream.read(&mut chunk) {
                        Ok(0) => {
                            self.conns.remove(&id);
                            return None;
                        }
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            // The head's own length decides, not how much
                            // the last read brought: a read may end past
                            // MAX_REQUEST with the blank line inside it.
                            let head = head_len(buf);
                            if head.is_some_and(|len| len <= MAX_REQUEST) {
                                break;
                            }
                            if head.is_some() || buf.len() > MAX_REQUEST {
                                let out = response(431, "text/plain", "request too large\n", false);
                                c.stage = Stage::Writing(out, 0);
                                c.deadline = now + WRITE_TIMEOUT;
                                if write(c) {
                                    self.conns.remove(&id);
                                }
                                return None;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            self.conns.remove(&id);
                            return None;
                        }
                    }
                }
                let Stage::Reading(buf) = std::mem::replace(&mut c.stage, Stage::Waiting) else {
                    return None;
                };
                match parse_request(&buf) {
                    Ok((route, head_only)) => {
                        c.route = Some(route);
                        c.head_only = head_only;
                        Some(id)
                    }
                    Err((status, text)) => {
                        self.answer(id, status, "text/plain", text, now);
                        None
                    }
                }
            }
        }
    }
}

/// Send what the socket takes; `true` once done (or the peer is gone).
fn write(c: &mut Conn) -> bool {
    let Stage::Writing(out, pos) = &mut c.stage else {
        return false;
    };
    while *pos < out.len() {
        match c.stream.write(&out[*pos..]) {
            Ok(0) => return true,
            Ok(n) => *pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_at_its_first_blank_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\nmore\r\n\r\n"), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\nmore"), Some(16));
    }

    #[test]
    fn readiness_says_why() {
        assert_eq!(
            readiness(Some("generation 2 (pid 9)"), false, None),
            (200, "ready: generation 2 (pid 9) serving\n".into())
        );
        assert_eq!(readiness(None, false, None).0, 503);
        assert_eq!(
            readiness(Some("g"), true, Some(Duration::from_millis(1500))),
            (
                503,
                "not ready: stopping (shutdown delay, 1.5s left)\n".into()
            )
        );
        assert_eq!(
            readiness(Some("g"), true, None),
            (503, "not ready: stopping\n".into())
        );
    }

    #[test]
    fn answers_close_and_say_their_length() {
        let r = String::from_utf8(response(503, "text/plain", "stopping\n", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("Content-Length: 9\r\n") && r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nstopping\n"));
        let h = response(200, "text/plain", "ok\n", true);
        assert!(String::from_utf8(h).unwrap().ends_with("\r\n\r\n"));
    }
}
