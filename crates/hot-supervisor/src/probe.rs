//! Readiness probes for servers that do not speak sd_notify (`--ready tcp`
//! and `--ready http:PATH`), made possible by steering.
//!
//! The probe connects from a loopback port of its own; the group's program
//! routes that one source port to the starting generation's socket, which
//! receives nothing else. `tcp`: ready once the generation has accepted the
//! probe connection (its socket's queue is empty again). `http:PATH`: ready
//! once `GET PATH` on the probe connection is answered with a 2xx or 3xx
//! status. Failed attempts are retried until the machine's ready timeout
//! ends the start. Everything is non-blocking, driven by the loop; it owns
//! its connection and timers and reports only "generation G is ready".

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, bind, connect,
    getsockname, getsockopt, socket, sockopt,
};

use crate::machine::Generation;
use hot_supervisor::sockinfo::queue_length;

use crate::steer::Steering;
pub use hot_supervisor::parse::http::status_code;

/// Time between attempts.
const RETRY: Duration = Duration::from_millis(50);
/// How often the queue is measured while waiting for an accept.
const MEASURE: Duration = Duration::from_millis(10);
/// How long one attempt may take before it is retried.
const ATTEMPT: Duration = Duration::from_secs(5);
/// The most of an answer read before its status line must have come.
const MAX_HEAD: usize = 8192;

/// What proves readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The probe connection is accepted.
    Tcp,
    /// `GET PATH` is answered with 2xx or 3xx.
    Http(String),
}

impl Check {
    /// `tcp` or `http:/health`.
    pub fn describe(&self) -> String {
        match self {
            Check::Tcp => "tcp".to_string(),
            Check::Http(p) => format!("http:{p}"),
        }
    }
}

enum Phase {
    /// Waiting until `at` before the next attempt.
    Idle { at: Instant },
    /// Connecting.
    Connecting { conn: TcpStream, until: Instant },
    /// `tcp`: connected; waiting for the generation to accept.
    Accepting {
        conn: TcpStream,
        at: Instant,
        until: Instant,
    },
    /// `http`: sending the request from this offset.
    Sending {
        conn: TcpStream,
        out: Vec<u8>,
        pos: usize,
        until: Instant,
    },
    /// `http`: reading the answer's head.
    Reading {
        conn: TcpStream,
        got: Vec<u8>,
        until: Instant,
    },
}

struct Probe {
    g: Generation,
    listener: usize,
    target: SocketAddr,
    phase: Phase,
    /// The last failure, for the log when the start fails.
    last: Option<String>,
}

/// The prober. See the module documentation.
pub struct Prober {
    check: Check,
    probe: Option<Probe>,
}

impl Prober {
    /// Probe with `check`.
    pub fn new(check: Check) -> Prober {
        Prober { check, probe: None }
    }

    /// Start probing generation `g` (it just spawned).
    ///
    /// # Errors
    /// `g` has no steered TCP socket to probe.
    pub fn start(&mut self, g: Generation, steering: &Steering, now: Instant) -> Result<()> {
        let (listener, target) = steering
            .probe_target(g)
            .context("no TCP listener in steer mode to probe")?;
        self.probe = Some(Probe {
            g,
            listener,
            target,
            phase: Phase::Idle { at: now },
            last: None,
        });
        Ok(())
    }

    /// Stop probing `g` (ready, failed, or gone).
    pub fn cancel(&mut self, g: Generation, steering: &mut Steering) {
        if let Some(p) = self.probe.take_if(|p| p.g == g) {
            let _ = steering.set_probe(p.listener, None);
        }
    }

    /// The last failure of the current probe, if any.
    pub fn last_failure(&self, g: Generation) -> Option<&str> {
        self.probe
            .as_ref()
            .filter(|p| p.g == g)
            .and_then(|p| p.last.as_deref())
    }

    /// The fd to poll, with whether it waits for input.
    pub fn interest(&self) -> Option<(BorrowedFd<'_>, bool)> {
        match &self.probe.as_ref()?.phase {
            Phase::Connecting { conn, .. } | Phase::Sending { conn, .. } => {
                Some((conn.as_fd(), false))
            }
            Phase::Reading { conn, .. } => Some((conn.as_fd(), true)),
            Phase::Idle { .. } | Phase::Accepting { .. } => None,
        }
    }

    /// The next timer.
    pub fn deadline(&self) -> Option<Instant> {
        Some(match &self.probe.as_ref()?.phase {
            Phase::Idle { at } => *at,
            Phase::Accepting { at, until, .. } => (*at).min(*until),
            Phase::Connecting { until, .. }
            | Phase::Sending { until, .. }
            | Phase::Reading { until, .. } => *until,
        })
    }

    /// Timers or the connection: advance; `Some(g)` once `g` is ready.
    pub fn advance(&mut self, steering: &mut Steering, now: Instant) -> Option<Generation> {
        let mut p = self.probe.take()?;
        let phase = std::mem::replace(&mut p.phase, Phase::Idle { at: now + RETRY });
        let step = self.step(&mut p, phase, steering, now);
        match step {
            Ok(Some(next)) => p.phase = next,
            Ok(None) => {
                let g = p.g;
                let _ = steering.set_probe(p.listener, None);
                return Some(g);
            }
            Err(why) => {
                if p.last.as_deref() != Some(why.as_str()) {
                    log::debug!("{} probe ({}): {why}", p.g, self.check.describe());
                }
                p.last = Some(why);
                p.phase = Phase::Idle { at: now + RETRY };
            }
        }
        self.probe = Some(p);
        None
    }

    /// One step: the next phase, `None` for ready, or why the attempt
    /// failed.
    fn step(
        &self,
        p: &mut Probe,
        phase: Phase,
        steering: &mut Steering,
        now: Instant,
    ) -> Result<Option<Phase>, String> {
        match phase {
            Phase::Idle { at } if at > now => Ok(Some(Phase::Idle { at })),
            Phase::Idle { .. } => {
                let (conn, port) = connect_from_loopback(p.target).map_err(|e| format!("{e:#}"))?;
                steering
                    .set_probe(p.listener, Some((port, p.g)))
                    .map_err(|e| format!("route the probe: {e:#}"))?;
                // The route is in place only now: connect after it.
                start_connect(&conn, p.target).map_err(|e| format!("connect: {e}"))?;
                Ok(Some(Phase::Connecting {
                    conn,
                    until: now + ATTEMPT,
                }))
            }
            Phase::Connecting { conn, until } => {
                match getsockopt(&conn, sockopt::SocketError) {
                    Ok(0) => {}
                    Ok(e) => return Err(format!("connect: {}", Errno::from_raw(e))),
                    Err(e) => return Err(format!("connect: {e}")),
                }
                if !connected(&conn) {
                    return if now >= until {
                        Err("connect timed out".into())
                    } else {
                        Ok(Some(Phase::Connecting { conn, until }))
                    };
                }
                Ok(Some(match &self.check {
                    Check::Tcp => Phase::Accepting {
                        conn,
                        at: now + MEASURE,
                        until,
                    },
                    Check::Http(path) => Phase::Sending {
                        conn,
                        out: request(path, p.target),
                        pos: 0,
                        until,
                    },
                }))
            }
            Phase::Accepting { conn, at, until } => {
                if at > now {
                    return Ok(Some(Phase::Accepting { conn, at, until }));
                }
                let queued = steering
                    .socket_of(p.listener, p.g)
                    .map_or(1, |fd| queue_length(fd, true));
                if queued == 0 {
                    return Ok(None);
                }
                if now >= until {
                    return Err("the probe connection was not accepted".into());
                }
                Ok(Some(Phase::Accepting {
                    conn,
                    at: now + MEASURE,
                    until,
                }))
            }
            Phase::Sending {
                mut conn,
                out,
                mut pos,
                until,
            } => {
                while pos < out.len() {
                    match conn.write(&out[pos..]) {
                        Ok(n) => pos += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            return if now >= until {
                                Err("the request could not be sent in time".into())
                            } else {
                                Ok(Some(Phase::Sending {
                                    conn,
                                    out,
                                    pos,
                                    until,
                                }))
                            };
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("send the request: {e}")),
                    }
                }
                Ok(Some(Phase::Reading {
                    conn,
                    got: Vec::new(),
                    until,
                }))
            }
            Phase::Reading {
                mut conn,
                mut got,
                until,
            } => {
                let mut buf = [0u8; 2048];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => {
                            return match status_code(&got) {
                                Some(code) => judge(code),
                                None => Err("the connection closed without an answer".into()),
                            };
                        }
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if let Some(code) = status_code(&got) {
                                return judge(code);
                            }
                            if got.len() > MAX_HEAD {
                                return Err("the answer is not HTTP".into());
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            return if now >= until {
                                Err(format!(
                                    "no answer within {}",
                                    hot_supervisor::duration::human(ATTEMPT)
                                ))
                            } else {
                                Ok(Some(Phase::Reading { conn, got, until }))
                            };
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("read the answer: {e}")),
                    }
                }
            }
        }
    }
}

fn judge(code: u16) -> Result<Option<Phase>, String> {
    if (200..400).contains(&code) {
        Ok(None)
    } else {
        Err(format!("answered {code}"))
    }
}

fn request(path: &str, target: SocketAddr) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: supervisor-probe\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A non-blocking TCP socket bound to a loopback port of its own, of the
/// target's family; returns it with its port.
fn connect_from_loopback(target: SocketAddr) -> Result<(TcpStream, u16)> {
    let (family, local) = match target.ip() {
        IpAddr::V4(_) => (AddressFamily::Inet, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(_) => (AddressFamily::Inet6, IpAddr::V6(Ipv6Addr::LOCALHOST)),
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = socket(family, SockType::Stream, flags, None).context("probe socket")?;
    let local = SocketAddr::new(
        if target.ip().is_loopback() {
            target.ip()
        } else {
            local
        },
        0,
    );
    match local {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    }
    .context("bind the probe socket")?;
    let bound: SockaddrStorage = getsockname(fd.as_raw_fd()).context("getsockname")?;
    let port = bound
        .as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| bound.as_sockaddr_in6().map(|a| a.port()))
        .context("probe socket address")?;
    Ok((TcpStream::from(fd), port))
}

fn start_connect(conn: &TcpStream, target: SocketAddr) -> Result<(), Errno> {
    let r = match target {
        SocketAddr::V4(a) => connect(conn.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(conn.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match r {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    }
}

fn connected(conn: &TcpStream) -> bool {
    conn.peer_addr().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(judge(204).unwrap().is_none());
        assert!(judge(500).is_err());
        assert!(judge(0).is_err());
    }
}
