//! Readiness probes for servers that do not speak sd_notify (`--ready tcp`
//! and `--ready http:PATH`), made possible by steering.
//!
//! The probe connects from a loopback port of its own; the group's program
//! routes that one source port to the probed generation's socket. `tcp`: a
//! worker is ready once it has accepted the probe connection. `http:PATH`:
//! once it has accepted it and answered `GET PATH` with a 2xx or 3xx
//! status.
//!
//! A generation of one worker shares its socket with nobody, so any accept
//! on it is that worker's: the probe connection is accepted once the
//! kernel gives its server side an inode (the accept queue emptying again
//! would mislead where clients queue too, as on a first generation). With
//! several workers on one socket (`--workers N`), an answer proves only
//! that *some* worker is up, so each answer is traced to the worker that
//! accepted it: the kernel names the server side of the probe connection
//! (sock_diag, or `/proc/net/tcp`), and `/proc/PID/fd` says which worker
//! (or which of its own child processes) holds it. The prober probes again
//! until every worker it waits for has answered one; an answer from a
//! worker already verified just starts the next attempt.
//!
//! Failed attempts are retried until the machine's ready timeout ends the
//! start: a timeout is never readiness. Everything is non-blocking, driven
//! by the loop; it owns its connections and timers and reports only
//! "worker W of generation G is ready". It must never decide what a
//! failure means: that is the machine's.

use std::collections::{BTreeMap, VecDeque};
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
use hot_supervisor::sockinfo::{accepted_inode, holds_socket, process_tree, queue_length};

use crate::steer::Steering;
pub use hot_supervisor::parse::http::status_code;

/// Time between attempts.
const RETRY: Duration = Duration::from_millis(50);
/// How often the queue is measured while waiting for an accept, at most
/// (see [`look_after`]); and how far apart the looks for the worker that
/// holds an accepted probe connection are.
const MEASURE: Duration = Duration::from_millis(10);
/// The first looks for an accept come this soon: a server that starts in a
/// few milliseconds is seen ready then, not up to MEASURE later.
const FIRST_LOOK: Duration = Duration::from_micros(500);
/// How long one attempt may take before it is retried.
const ATTEMPT: Duration = Duration::from_secs(5);
/// The most of an answer read before its status line must have come.
const MAX_HEAD: usize = 8192;
/// How many looks, MEASURE apart, for the worker that holds an accepted
/// probe connection before the attempt counts as answered by another.
const LOOKS: u32 = 3;

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
    /// `tcp`, one worker: connected; waiting for the generation to accept
    /// the probe connection.
    Accepting {
        conn: TcpStream,
        at: Instant,
        until: Instant,
    },
    /// Several workers: connected; waiting for one to accept, then finding
    /// which one did.
    Identifying {
        conn: TcpStream,
        at: Instant,
        until: Instant,
        /// Looks since the connection was accepted.
        looks: u32,
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

/// What one step of an attempt came to.
enum Step {
    /// Go on with this phase.
    Next(Phase),
    /// This worker answered: it is ready.
    Ready(u32),
}

struct Probe {
    g: Generation,
    listener: usize,
    target: SocketAddr,
    phase: Phase,
    /// The last failure, for the log when the start fails.
    last: Option<String>,
    /// The workers still to verify, with their pids.
    pending: BTreeMap<u32, i32>,
    /// Whether each answer must be traced to its worker: the generation
    /// has several workers on one socket.
    identify: bool,
    /// `http`: the worker that accepted the connection in hand.
    answering: Option<u32>,
}

/// The prober. See the module documentation.
pub struct Prober {
    check: Check,
    /// One probe per generation with workers to verify; the first one's
    /// attempts are under way, the others wait their turn (the program
    /// routes one probe port per listener).
    probes: VecDeque<Probe>,
}

impl Prober {
    /// Probe with `check`.
    pub fn new(check: Check) -> Prober {
        Prober {
            check,
            probes: VecDeque::new(),
        }
    }

    /// Probe `workers` (index, pid) of generation `g`, which just spawned;
    /// `identify` when the generation has more than one worker. Workers of
    /// a generation already being probed join its probe.
    ///
    /// # Errors
    /// `g` has no steered TCP socket to probe.
    pub fn start(
        &mut self,
        g: Generation,
        workers: &[(u32, i32)],
        identify: bool,
        steering: &Steering,
        now: Instant,
    ) -> Result<()> {
        if let Some(p) = self.probes.iter_mut().find(|p| p.g == g) {
            p.pending.extend(workers.iter().copied());
            p.identify |= identify;
            return Ok(());
        }
        let (listener, target) = steering
            .probe_target(g)
            .context("no TCP listener in steer mode to probe")?;
        self.probes.push_back(Probe {
            g,
            listener,
            target,
            phase: Phase::Idle { at: now },
            last: None,
            pending: workers.iter().copied().collect(),
            identify,
            answering: None,
        });
        Ok(())
    }

    /// Stop probing `g` (ready, failed, or gone).
    pub fn cancel(&mut self, g: Generation, steering: &mut Steering) {
        let front = self.probes.front().is_some_and(|p| p.g == g);
        if let Some(i) = self.probes.iter().position(|p| p.g == g)
            && let Some(p) = self.probes.remove(i)
            && front
        {
            let _ = steering.set_probe(p.listener, None);
        }
    }

    /// Stop waiting for the workers `keep` says no longer start (they
    /// exited, or were stopped); a probe left with none ends.
    pub fn retain(&mut self, steering: &mut Steering, keep: impl Fn(Generation, u32) -> bool) {
        for p in &mut self.probes {
            let g = p.g;
            p.pending.retain(|w, _| keep(g, *w));
        }
        while let Some(i) = self.probes.iter().position(|p| p.pending.is_empty()) {
            let g = self.probes[i].g;
            self.cancel(g, steering);
        }
    }

    /// The last failure of `g`'s probe, if any.
    pub fn last_failure(&self, g: Generation) -> Option<&str> {
        self.probes
            .iter()
            .find(|p| p.g == g)
            .and_then(|p| p.last.as_deref())
    }

    /// The fd to poll, with whether it waits for input.
    pub fn interest(&self) -> Option<(BorrowedFd<'_>, bool)> {
        match &self.probes.front()?.phase {
            Phase::Connecting { conn, .. } | Phase::Sending { conn, .. } => {
                Some((conn.as_fd(), false))
            }
            Phase::Reading { conn, .. } => Some((conn.as_fd(), true)),
            Phase::Idle { .. } | Phase::Accepting { .. } | Phase::Identifying { .. } => None,
        }
    }

    /// The next timer.
    pub fn deadline(&self) -> Option<Instant> {
        Some(match &self.probes.front()?.phase {
            Phase::Idle { at } => *at,
            Phase::Accepting { at, until, .. } | Phase::Identifying { at, until, .. } => {
                (*at).min(*until)
            }
            Phase::Connecting { until, .. }
            | Phase::Sending { until, .. }
            | Phase::Reading { until, .. } => *until,
        })
    }

    /// Timers or the connection: advance; the workers verified ready.
    pub fn advance(&mut self, steering: &mut Steering, now: Instant) -> Vec<(Generation, u32)> {
        let mut ready = Vec::new();
        let Some(mut p) = self.probes.pop_front() else {
            return ready;
        };
        let phase = std::mem::replace(&mut p.phase, Phase::Idle { at: now + RETRY });
        match self.step(&mut p, phase, steering, now) {
            Ok(Step::Next(next)) => p.phase = next,
            Ok(Step::Ready(w)) => {
                p.pending.remove(&w);
                p.answering = None;
                ready.push((p.g, w));
                // The next worker's attempt starts at once.
                p.phase = Phase::Idle { at: now };
            }
            Err(why) => {
                if p.last.as_deref() != Some(why.as_str()) {
                    log::debug!("{} probe ({}): {why}", p.g, self.check.describe());
                }
                p.last = Some(why);
                p.answering = None;
                p.phase = Phase::Idle { at: now + RETRY };
            }
        }
        if p.pending.is_empty() {
            let _ = steering.set_probe(p.listener, None);
            // The next generation's probe, if any, starts now.
            if let Some(next) = self.probes.front_mut() {
                next.phase = Phase::Idle { at: now };
            }
        } else {
            self.probes.push_front(p);
        }
        ready
    }

    /// One step of the front probe's attempt.
    fn step(
        &self,
        p: &mut Probe,
        phase: Phase,
        steering: &mut Steering,
        now: Instant,
    ) -> Result<Step, String> {
        // The worker an answer belongs to when there is only one to ask.
        let only = p.pending.keys().next().copied().unwrap_or(0);
        match phase {
            Phase::Idle { at } if at > now => Ok(Step::Next(Phase::Idle { at })),
            Phase::Idle { .. } => {
                let (conn, port) = connect_from_loopback(p.target).map_err(|e| format!("{e:#}"))?;
                steering
                    .set_probe(p.listener, Some((port, p.g)))
                    .map_err(|e| format!("route the probe: {e:#}"))?;
                // The route is in place only now: connect after it.
                start_connect(&conn, p.target).map_err(|e| format!("connect: {e}"))?;
                Ok(Step::Next(Phase::Connecting {
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
                        Ok(Step::Next(Phase::Connecting { conn, until }))
                    };
                }
                Ok(Step::Next(if p.identify {
                    Phase::Identifying {
                        conn,
                        at: now,
                        until,
                        looks: 0,
                    }
                } else {
                    match &self.check {
                        Check::Tcp => Phase::Accepting {
                            conn,
                            at: now + look_after(now, until),
                            until,
                        },
                        Check::Http(path) => Phase::Sending {
                            conn,
                            out: request(path, p.target),
                            pos: 0,
                            until,
                        },
                    }
                }))
            }
            Phase::Accepting { conn, at, until } => {
                if at > now {
                    return Ok(Step::Next(Phase::Accepting { conn, at, until }));
                }
                // Accepted: the kernel gives the server's side of the probe
                // connection an inode. (Where it cannot be asked, the
                // socket's queue emptying again is the sign; that is wrong
                // only for a first generation that clients already queue
                // on.)
                let accepted = match (conn.peer_addr(), conn.local_addr()) {
                    (Ok(local), Ok(remote)) => {
                        accepted_inode(local, remote).ok().map(|i| i.is_some())
                    }
                    _ => None,
                };
                let accepted = accepted.unwrap_or_else(|| {
                    steering
                        .socket_of(p.listener, p.g)
                        .is_some_and(|fd| queue_length(fd, true) == 0)
                });
                if accepted {
                    return Ok(Step::Ready(only));
                }
                if now >= until {
                    return Err("the probe connection was not accepted".into());
                }
                Ok(Step::Next(Phase::Accepting {
                    conn,
                    at: now + look_after(now, until),
                    until,
                }))
            }
            Phase::Identifying {
                conn,
                at,
                until,
                looks,
            } => {
                if at > now {
                    return Ok(Step::Next(Phase::Identifying {
                        conn,
                        at,
                        until,
                        looks,
                    }));
                }
                let (Ok(local), Ok(remote)) = (conn.peer_addr(), conn.local_addr()) else {
                    return Err("the probe connection closed before it was accepted".into());
                };
                let inode = accepted_inode(local, remote)
                    .map_err(|e| format!("which worker accepted the probe: {e}"))?;
                let Some(inode) = inode else {
                    if now >= until {
                        return Err("the probe connection was not accepted".into());
                    }
                    return Ok(Step::Next(Phase::Identifying {
                        conn,
                        at: now + look_after(now, until),
                        until,
                        looks,
                    }));
                };
                let found = p.pending.iter().find_map(|(&w, &pid)| {
                    process_tree(pid)
                        .into_iter()
                        .any(|q| holds_socket(q, inode))
                        .then_some(w)
                });
                match (found, &self.check) {
                    (Some(w), Check::Tcp) => Ok(Step::Ready(w)),
                    (Some(w), Check::Http(path)) => {
                        p.answering = Some(w);
                        Ok(Step::Next(Phase::Sending {
                            conn,
                            out: request(path, p.target),
                            pos: 0,
                            until,
                        }))
                    }
                    // Accepted by a worker already verified (or the fd
                    // is not installed yet: look again a little later).
                    (None, _) if looks + 1 < LOOKS => Ok(Step::Next(Phase::Identifying {
                        conn,
                        at: now + MEASURE,
                        until,
                        looks: looks + 1,
                    })),
                    // Not one we wait for: a new attempt at once.
                    (None, _) => Ok(Step::Next(Phase::Idle { at: now })),
                }
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
                                Ok(Step::Next(Phase::Sending {
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
                Ok(Step::Next(Phase::Reading {
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
                let who = p.answering.unwrap_or(only);
                let mut buf = [0u8; 2048];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => {
                            return match status_code(&got) {
                                Some(code) => judge(code).map(|()| Step::Ready(who)),
                                None => Err("the connection closed without an answer".into()),
                            };
                        }
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            if let Some(code) = status_code(&got) {
                                return judge(code).map(|()| Step::Ready(who));
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
                                Ok(Step::Next(Phase::Reading { conn, got, until }))
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

fn judge(code: u16) -> Result<(), String> {
    if (200..400).contains(&code) {
        Ok(())
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

/// How long to wait before the next look for the accept of an attempt that
/// must end by `until`: an eighth of the time the attempt has waited so
/// far, between FIRST_LOOK and MEASURE. A server that accepts after 4 ms is
/// seen within about 0.5 ms (a fixed MEASURE saw it after 10), one that
/// takes seconds is looked at every MEASURE as before, and the looks of one
/// start stay few (under 30 in its first 40 ms, each one sock_diag query).
fn look_after(now: Instant, until: Instant) -> Duration {
    let waited = ATTEMPT.saturating_sub(until.saturating_duration_since(now));
    (waited / 8).clamp(FIRST_LOOK, MEASURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_for_an_accept_soon_then_every_measure() {
        let start = Instant::now();
        let until = start + ATTEMPT;
        let at = |ms: u64| look_after(start + Duration::from_millis(ms), until);
        assert_eq!(at(0), FIRST_LOOK);
        assert_eq!(at(3), FIRST_LOOK);
        assert_eq!(at(8), Duration::from_millis(1));
        assert_eq!(at(40), Duration::from_millis(5));
        assert_eq!(at(80), MEASURE);
        assert_eq!(at(4_000), MEASURE);
        // Past the attempt's end (the caller fails it), never zero.
        assert_eq!(look_after(until + MEASURE, until), MEASURE);
        // The looks of the first 40 ms stay few.
        let mut t = start;
        let mut looks = 0;
        while t < start + Duration::from_millis(40) {
            t += look_after(t, until);
            looks += 1;
        }
        assert!(
            (20..30).contains(&looks),
            "{looks} looks in the first 40 ms"
        );
    }

    #[test]
    fn status_lines() {
        assert!(judge(204).is_ok());
        assert!(judge(500).is_err());
        assert!(judge(0).is_err());
    }
}
