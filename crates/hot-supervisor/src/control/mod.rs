//! The control socket: `supervisor reload|status|stop` talking to a running
//! supervisor.
//!
//! A Unix stream socket, mode 0600, every peer checked with SO_PEERCRED
//! (root or the supervisor's own uid; with `--user`, the children's uid
//! too, for `fds` and `listen` only). One request per connection, one line
//! each way, plain text: `reload`, `status` or `stop` in; `ok TEXT` or
//! `error TEXT` out. `reload` is answered once its outcome is known, `stop`
//! once the supervisor is about to exit, `status` at once with a JSON
//! object. `fds` and `listen` are answered with `ok N` and N listener
//! descriptions, the sockets attached with `SCM_RIGHTS` in batches of at
//! most [`SCM_MAX_FD`](hot_supervisor::parse::control::SCM_MAX_FD) ([`Transfer`]), sent without ever blocking. The
//! parsing is pure, in [`hot_supervisor::parse::control`]; the driver owns
//! the connections.
//!
//! The parts: [`paths`] (where the socket lives), [`transfer`] (sending
//! sockets with `SCM_RIGHTS`, shared with the channels and the takeover),
//! [`conn`] (one connection's exchange) and, here, the server.

mod conn;
mod paths;
mod transfer;

pub use conn::{Conn, EVENT_BUFFER, MAX_SUBSCRIBERS, ReadStep, Stage};
pub use paths::{check_private, default_path_here, fallback_dir, path_for_run};
pub use transfer::{SendStep, Transfer, send_some};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub use hot_supervisor::parse::control::{Request, RequestError, answer, parse_answer};
use hot_supervisor::parse::listen::Spec;

/// A connection must send its request within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer must be taken by the client within this time.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many connections are open at once; more are refused.
pub const MAX_CONNECTIONS: usize = 64;

/// A listener's kind and address for its description line, from what it
/// is bound to (`127.0.0.1:80`, `udp:127.0.0.1:53`, `unix:/run/x.sock`,
/// `unix:@name`): `KIND:ADDRESS` is again a `--listen` address.
pub fn kind_and_address(bound: &str) -> (&'static str, &str) {
    if let Some(a) = bound.strip_prefix("udp:") {
        ("udp", a)
    } else if let Some(a) = bound.strip_prefix("unix:") {
        ("unix", a)
    } else {
        ("tcp", bound)
    }
}

/// A control connection's id, for answering it later.
pub type ConnId = u64;

/// What the control server asks the driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// Start a reload and answer `ConnId` with its outcome
    /// ([`ControlServer::answer`]).
    Reload(ConnId, i32),
    /// A reload with its own strategy (rolling, canary), answered as
    /// [`ControlEvent::Reload`].
    ReloadWith(ConnId, i32, hot_supervisor::parse::control::ReloadKind),
    /// Promote the canary; answer with the outcome.
    Promote(ConnId, i32),
    /// Roll the canary (or rolling reload) back; answer with the outcome.
    Rollback(ConnId, i32),
    /// Stop; answer `ConnId` when about to exit
    /// ([`ControlServer::answer_stop`]).
    Stop(ConnId, i32),
    /// Answer `ConnId` at once with the status ([`ControlServer::answer`]).
    Status(ConnId),
    /// Upgrade the supervisor in place (the check bounded by the duration
    /// given, if any); answer `ConnId` with the outcome.
    Upgrade(ConnId, i32, Option<Duration>),
    /// Another supervisor (peer pid) asks to take every socket over: the
    /// driver takes the connection ([`ControlServer::take_stream`]).
    Takeover(ConnId, i32),
    /// Send `ConnId` (peer pid) these listeners, every one when empty
    /// ([`ControlServer::send_fds`], or [`ControlServer::answer`] with an
    /// error).
    Fds(ConnId, i32, Vec<String>),
    /// Open this listener (or find the one of its name) and send it to
    /// `ConnId` (peer pid), as for [`ControlEvent::Fds`].
    Listen(ConnId, i32, Spec),
}

/// Connections waiting for an outcome (reload or stop) beyond this number
/// are refused; they are counted apart from [`MAX_CONNECTIONS`], so that
/// clients waiting for a slow start never make `status` answer busy.
pub const MAX_WAITERS: usize = 1024;

/// What a poll entry of the control server watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// The listening socket.
    Accept,
    /// One connection.
    Conn(ConnId),
}

/// The control socket and its connections: accepting (with the peer
/// check), reading requests, holding waiting requesters, writing answers,
/// and every deadline of theirs. It never acts on a request: it turns them
/// into [`ControlEvent`]s for the driver.
pub struct ControlServer {
    /// The listening socket (its file is removed when dropped).
    listener: crate::listen::Listener,
    conns: std::collections::BTreeMap<ConnId, Conn>,
    next: ConnId,
    /// Accepting is paused until then (out of file descriptors: the
    /// pending connection would otherwise wake the loop at once, forever).
    accept_paused: Option<Instant>,
    /// Accepting failed and was logged; cleared by the next success.
    accept_failing: bool,
    /// Connections waiting for the supervisor to exit.
    stop_waiters: Vec<ConnId>,
    /// A uid besides root and ours that may fetch and open listeners
    /// (the children's, with `--user`), and nothing else.
    fetch_uid: Option<u32>,
    /// Another supervisor accepts on the socket now.
    handed_over: bool,
}

/// The control socket and its connections as carried across an in-place
/// upgrade (the requester of the upgrade among them, to be answered by the
/// new image).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    listener: crate::listen::Saved,
    /// (id, fd, pid, stage, deadline)
    conns: Vec<SavedConn>,
    next: ConnId,
    stop_waiters: Vec<ConnId>,
    #[serde(default)]
    fetch_uid: Option<u32>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedConn {
    id: ConnId,
    fd: i32,
    pid: i32,
    #[serde(default)]
    uid: u32,
    stage: SavedStage,
    #[serde(with = "crate::carry::mono::opt")]
    deadline: Option<Instant>,
}

/// A connection's stage as carried across an upgrade.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum SavedStage {
    Reading(Vec<u8>),
    Waiting,
    Writing(Vec<u8>, usize),
}

impl ControlServer {
    /// The state for an in-place upgrade. A connection in the middle of an
    /// fd transfer is not carried (the exec closes it: its client sees the
    /// connection end early and asks again).
    pub fn save(&self, keep: &mut crate::carry::Keep) -> Saved {
        Saved {
            listener: self.listener.save(keep),
            conns: self
                .conns
                .iter()
                .filter_map(|(id, c)| {
                    let stage = match &c.stage {
                        Stage::Reading(b) => SavedStage::Reading(b.clone()),
                        Stage::Waiting => SavedStage::Waiting,
                        Stage::Writing(b, n) => SavedStage::Writing(b.clone(), *n),
                        // Ended before the exec (an upgrade event first).
                        Stage::Sending(_) | Stage::Streaming(..) => return None,
                    };
                    Some(SavedConn {
                        id: *id,
                        fd: keep.fd(c.stream.as_fd()),
                        pid: c.pid,
                        uid: c.uid,
                        stage,
                        deadline: c.deadline,
                    })
                })
                .collect(),
            fetch_uid: self.fetch_uid,
            next: self.next,
            stop_waiters: self.stop_waiters.clone(),
        }
    }

    /// The control server an upgrade carried across.
    pub fn restore(saved: Saved, adopt: &mut crate::carry::Adopt) -> ControlServer {
        let conns = saved
            .conns
            .into_iter()
            .map(|c| {
                let stage = match c.stage {
                    SavedStage::Reading(b) => Stage::Reading(b),
                    SavedStage::Waiting => Stage::Waiting,
                    SavedStage::Writing(b, n) => Stage::Writing(b, n),
                };
                let conn = Conn {
                    stream: UnixStream::from(adopt.take(c.fd)),
                    pid: c.pid,
                    uid: c.uid,
                    stage,
                    deadline: c.deadline,
                };
                (c.id, conn)
            })
            .collect();
        ControlServer {
            listener: crate::listen::Listener::restore(saved.listener, adopt),
            conns,
            next: saved.next,
            accept_paused: None,
            accept_failing: false,
            stop_waiters: saved.stop_waiters,
            fetch_uid: saved.fetch_uid,
            handed_over: false,
        }
    }
}

impl ControlServer {
    /// Serve on a bound, non-blocking control socket.
    pub fn new(listener: crate::listen::Listener) -> ControlServer {
        ControlServer {
            listener,
            conns: std::collections::BTreeMap::new(),
            next: 0,
            accept_paused: None,
            accept_failing: false,
            stop_waiters: Vec::new(),
            fetch_uid: None,
            handed_over: false,
        }
    }

    /// Let `uid` (the children's, with `--user`) fetch and open listeners
    /// too (`fds`, `listen`), and nothing else.
    pub fn allow_fetch_by(&mut self, uid: u32) {
        self.fetch_uid = Some(uid);
    }

    /// The fds to poll, with what each waits for (`true`: input).
    pub fn interest(&self) -> Vec<(Watch, BorrowedFd<'_>, bool)> {
        let mut out = Vec::new();
        if self.accept_paused.is_none() && !self.handed_over {
            out.push((Watch::Accept, self.listener.fd(), true));
        }
        for (id, c) in &self.conns {
            if let Some((fd, input)) = c.interest() {
                out.push((Watch::Conn(*id), fd, input));
            }
        }
        out
    }

    /// The next time [`ControlServer::on_timeout`] must run.
    pub fn deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(Conn::next_time)
            .chain(self.accept_paused)
            .min()
    }

    /// A watched fd is ready.
    pub fn on_ready(&mut self, w: Watch, now: Instant) -> Vec<ControlEvent> {
        match w {
            Watch::Accept => {
                self.accept(now);
                Vec::new()
            }
            Watch::Conn(id) => self.serve(id, now).into_iter().collect(),
        }
    }

    /// Deadlines: resume accepting, close connections that sent no request
    /// or took no answer in time.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.accept_paused.is_some_and(|t| t <= now) {
            self.accept_paused = None;
        }
        // Transfers the kernel refused a moment ago try again.
        let retry: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(&c.stage, Stage::Sending(t) if t.retry_at().is_some_and(|r| r <= now)))
            .map(|(id, _)| *id)
            .collect();
        for id in retry {
            self.step_transfer(id, now);
        }
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(mut conn) = self.conns.remove(&id)
                && let Stage::Reading(_) = conn.stage
            {
                let why = format!(
                    "no request within {}",
                    hot_supervisor::duration::human(REQUEST_TIMEOUT)
                );
                log::debug!("control connection from pid {}: {why}: closed", conn.pid);
                conn.reply(answer(false, &why), now);
                let _ = conn.write();
            }
        }
    }

    /// Answer connection `id` (a status, or a reload's outcome) and close
    /// it once the answer is taken.
    pub fn answer(&mut self, id: ConnId, ok: bool, text: &str, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.reply(answer(ok, text), now);
            if conn.write() {
                self.conns.remove(&id);
            }
        }
    }

    /// Send connection `id` these listeners: `(description line, a
    /// duplicate of the socket)` pairs, in order (see [`Transfer`]); the
    /// connection closes once they are sent.
    pub fn send_fds(&mut self, id: ConnId, items: Vec<(String, OwnedFd)>, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.start_transfer(Transfer::new(items), now);
            self.step_transfer(id, now);
        }
    }

    /// Send connection `id` these listeners, each as (name, what it is
    /// bound to as the listener shows it, a duplicate of its socket); a
    /// listener that cannot be described in one line makes the answer an
    /// error instead.
    pub fn send_listeners(
        &mut self,
        id: ConnId,
        listeners: Vec<(String, String, OwnedFd)>,
        now: Instant,
    ) {
        let mut items = Vec::with_capacity(listeners.len());
        for (name, bound, fd) in listeners {
            let (kind, address) = kind_and_address(&bound);
            match hot_supervisor::parse::control::fd_line(&name, kind, address) {
                Ok(line) => items.push((line, fd)),
                Err(why) => return self.answer(id, false, &why, now),
            }
        }
        self.send_fds(id, items, now);
    }

    /// Push a transfer on; close its connection once it is done or failed.
    fn step_transfer(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.send(now) {
            SendStep::Pending => {}
            SendStep::Done => {
                self.conns.remove(&id);
            }
            SendStep::Failed(before_any, why) => {
                let pid = conn.pid;
                if before_any {
                    log::warn!("control connection from pid {pid}: {why}");
                    // The error line is being written (or was).
                    if !matches!(conn.stage, Stage::Writing(..)) || conn.write() {
                        self.conns.remove(&id);
                    }
                } else {
                    log::warn!(
                        "control connection from pid {pid}: sending listeners failed midway ({why}): closed"
                    );
                    self.conns.remove(&id);
                }
            }
        }
    }

    /// Tell the `stop` clients that the supervisor exits now. Their
    /// connections stay open until the server is dropped on the way out,
    /// after the control socket file is removed: EOF then means "gone".
    pub fn answer_stop(&mut self, code: i32, now: Instant) {
        let line = answer(true, &format!("exit status {code}"));
        for id in std::mem::take(&mut self.stop_waiters) {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.reply(line.clone(), now);
                let _ = conn.write();
            }
        }
    }

    /// Connections in their one exchange (not waiting for an outcome).
    fn busy(&self) -> usize {
        self.conns
            .values()
            .filter(|c| !matches!(c.stage, Stage::Waiting | Stage::Streaming(..)))
            .count()
    }

    /// Accept every waiting connection; refuse other users' and any beyond
    /// the limits.
    fn accept(&mut self, now: Instant) {
        use nix::sys::socket::{SockFlag, accept4, getsockopt, sockopt::PeerCredentials};
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        for _ in 0..MAX_CONNECTIONS {
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            let raw = match accept4(self.listener.fd().as_raw_fd(), flags) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ECONNABORTED) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    // EMFILE and the like: leave the queue alone for a
                    // moment rather than spin on it (and say so once).
                    if self.accept_failing {
                        log::debug!("accept on the control socket: {e}; retrying in 100ms");
                    } else {
                        log::warn!("accept on the control socket: {e}; retrying every 100ms");
                        self.accept_failing = true;
                    }
                    self.accept_paused = Some(now + Duration::from_millis(100));
                    return;
                }
            };
            if self.accept_failing {
                log::info!("accepting on the control socket again");
                self.accept_failing = false;
            }
            // SAFETY: accept4 just returned this new descriptor; nothing
            // else owns it.
            let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
            let (pid, uid) = match getsockopt(&stream, PeerCredentials) {
                Ok(c) => (c.pid(), c.uid()),
                Err(e) => {
                    log::warn!("control connection without credentials ({e}): closed");
                    continue;
                }
            };
            let me = nix::unistd::geteuid().as_raw();
            let mut conn = Conn::new(stream, pid, uid, now);
            if uid != 0 && uid != me && Some(uid) != self.fetch_uid {
                log::warn!(
                    "refused a control connection from pid {pid} (uid {uid}): only root and uid {me} may control this supervisor"
                );
                let why = format!("permission denied: uid {uid} may not control this supervisor");
                conn.reply(answer(false, &why), now);
                let _ = conn.write();
                continue;
            }
            if self.busy() >= MAX_CONNECTIONS {
                log::warn!(
                    "refused a control connection from pid {pid}: {MAX_CONNECTIONS} already open"
                );
                conn.reply(answer(false, "busy: too many control connections"), now);
                let _ = conn.write();
                continue;
            }
            self.next += 1;
            self.conns.insert(self.next, conn);
        }
    }

    /// A connection is readable or writable.
    fn serve(&mut self, id: ConnId, now: Instant) -> Option<ControlEvent> {
        let conn = self.conns.get_mut(&id)?;
        match conn.stage {
            Stage::Writing(..) => {
                if conn.write() {
                    self.conns.remove(&id);
                }
                None
            }
            Stage::Sending(_) => {
                self.step_transfer(id, now);
                None
            }
            Stage::Reading(_) => match conn.read() {
                ReadStep::Pending => None,
                ReadStep::Gone => {
                    self.conns.remove(&id);
                    None
                }
                ReadStep::Request(r) => self.request(id, r, now),
            },
            Stage::Streaming(..) => {
                let out = matches!(&conn.stage, Stage::Streaming(b, p) if *p < b.len());
                if !conn.still_there() || (out && !conn.flush_stream()) {
                    log::debug!("events subscriber pid {} left", conn.pid);
                    self.conns.remove(&id);
                }
                None
            }
            Stage::Waiting => None,
        }
    }

    /// Send `record` to every event stream; a subscriber that has fallen
    /// [`EVENT_BUFFER`] behind is dropped (it sees its stream end).
    pub fn publish(&mut self, record: &hot_supervisor::events::Record) {
        if !self
            .conns
            .values()
            .any(|c| matches!(c.stage, Stage::Streaming(..)))
        {
            return;
        }
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let mut gone = Vec::new();
        for (id, c) in &mut self.conns {
            let Stage::Streaming(out, pos) = &mut c.stage else {
                continue;
            };
            if out.len() - *pos + line.len() > EVENT_BUFFER {
                log::warn!(
                    "events subscriber pid {} dropped: {} bytes of events unread",
                    c.pid,
                    out.len() - *pos
                );
                gone.push(*id);
                continue;
            }
            if *pos > 0 {
                out.drain(..*pos);
                *pos = 0;
            }
            out.extend_from_slice(&line);
            if !c.flush_stream() {
                gone.push(*id);
            }
        }
        for id in gone {
            self.conns.remove(&id);
        }
    }

    /// End every event stream: what is queued goes out if the socket takes
    /// it now, then the connection closes (after an upgrade or takeover
    /// event: subscribers reconnect).
    pub fn end_streams(&mut self) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.stage, Stage::Streaming(..)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(mut c) = self.conns.remove(&id) {
                let _ = c.flush_stream();
            }
        }
    }

    fn request(
        &mut self,
        id: ConnId,
        request: Result<Request, RequestError>,
        now: Instant,
    ) -> Option<ControlEvent> {
        let waiting = self.conns.len() - self.busy();
        let conn = self.conns.get_mut(&id)?;
        let pid = conn.pid;
        let uid = conn.uid;
        let me = nix::unistd::geteuid().as_raw();
        match request {
            Err(why) => {
                log::warn!("control connection from pid {pid}: {why}");
                self.answer(id, false, &why.to_string(), now);
                None
            }
            Ok(r) if uid != 0 && uid != me && !r.sends_fds() => {
                log::warn!(
                    "refused a {} request from pid {pid} (uid {uid}): the children's user may only fetch and open listeners",
                    r.as_str()
                );
                let why = format!(
                    "permission denied: uid {uid} may only fetch and open listeners (fds, listen)"
                );
                self.answer(id, false, &why, now);
                None
            }
            Ok(Request::Fds(names)) => Some(ControlEvent::Fds(id, pid, names)),
            Ok(Request::Listen(spec)) => Some(ControlEvent::Listen(id, pid, spec)),
            Ok(Request::Status) => Some(ControlEvent::Status(id)),
            Ok(
                Request::Reload
                | Request::ReloadWith(_)
                | Request::Promote
                | Request::Rollback
                | Request::Stop
                | Request::Upgrade(_),
            ) if waiting >= MAX_WAITERS => {
                let why = format!("busy: {MAX_WAITERS} requests already wait for an outcome");
                log::warn!("control connection from pid {pid}: {why}");
                self.answer(id, false, &why, now);
                None
            }
            Ok(Request::Reload) => {
                conn.wait();
                Some(ControlEvent::Reload(id, pid))
            }
            Ok(Request::ReloadWith(kind)) => {
                conn.wait();
                Some(ControlEvent::ReloadWith(id, pid, kind))
            }
            Ok(Request::Promote) => {
                conn.wait();
                Some(ControlEvent::Promote(id, pid))
            }
            Ok(Request::Rollback) => {
                conn.wait();
                Some(ControlEvent::Rollback(id, pid))
            }
            Ok(Request::Upgrade(timeout)) => {
                conn.wait();
                Some(ControlEvent::Upgrade(id, pid, timeout))
            }
            Ok(Request::Stop) => {
                conn.wait();
                self.stop_waiters.push(id);
                Some(ControlEvent::Stop(id, pid))
            }
            Ok(Request::Takeover) => {
                conn.wait();
                Some(ControlEvent::Takeover(id, pid))
            }
            Ok(Request::Events) => {
                let streams = self
                    .conns
                    .values()
                    .filter(|c| matches!(c.stage, Stage::Streaming(..)))
                    .count();
                if streams >= MAX_SUBSCRIBERS {
                    let why = format!("busy: {MAX_SUBSCRIBERS} event streams already open");
                    log::warn!("control connection from pid {pid}: {why}");
                    self.answer(id, false, &why, now);
                    return None;
                }
                let conn = self.conns.get_mut(&id)?;
                log::debug!("events subscriber pid {pid}");
                conn.stage = Stage::Streaming(answer(true, "events").into_bytes(), 0);
                conn.deadline = None;
                if !conn.flush_stream() {
                    self.conns.remove(&id);
                }
                None
            }
        }
    }

    /// Hand connection `id` over (a takeover's: it outlives the one
    /// exchange of this server's connections).
    pub fn take_stream(&mut self, id: ConnId) -> Option<UnixStream> {
        self.stop_waiters.retain(|w| *w != id);
        self.conns.remove(&id).map(|c| c.stream)
    }

    /// Stop (or resume) accepting: while another supervisor takes over,
    /// new connections are its to accept. Resuming listens again, so that
    /// clients see this process behind the socket again (`SO_PEERCRED` names
    /// whoever called `listen()` last).
    pub fn set_accepting(&mut self, on: bool) {
        self.handed_over = !on;
        if on
            && let Err(e) = nix::sys::socket::listen(
                &self.listener.fd(),
                nix::sys::socket::Backlog::MAXALLOWABLE,
            )
        {
            log::warn!("listen on the control socket again: {e}");
        }
    }

    /// The listening socket, for a takeover.
    pub fn save_listener(&self, keep: &mut crate::carry::Keep) -> crate::listen::Saved {
        self.listener.save(keep)
    }

    /// The socket's file is another supervisor's (`false`: this one's
    /// again): left at exit.
    pub fn disown_file(&mut self, disown: bool) {
        if disown {
            self.listener.disown_file();
        } else {
            self.listener.own_file();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::paths::{FILE_NAME, default_path, private_dir};
    use super::*;
    use hot_supervisor::parse::control::SCM_MAX_FD;
    use std::ffi::OsStr;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, RawFd};
    use std::path::{Path, PathBuf};

    #[test]
    fn the_private_directory_must_be_ours_and_closed() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("sv-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let fresh = base.join("fresh");
        private_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Again: an existing private directory is fine.
        private_dir(&fresh).unwrap();
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            private_dir(&open)
                .unwrap_err()
                .to_string()
                .contains("not a private directory")
        );
        let link = base.join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(private_dir(&link).is_err());
        let file = base.join("file");
        std::fs::write(&file, "").unwrap();
        assert!(private_dir(&file).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn default_paths() {
        let p = |rd: Option<&str>, xdg: Option<&str>| {
            default_path(rd.map(OsStr::new), xdg.map(OsStr::new), 1000)
        };
        assert_eq!(
            p(Some("/run/app"), Some("/run/user/1000")),
            PathBuf::from("/run/app/supervisor.sock")
        );
        assert_eq!(
            p(Some("/run/a:/run/b"), None),
            PathBuf::from("/run/a/supervisor.sock")
        );
        assert_eq!(
            p(None, Some("/run/user/1000")),
            PathBuf::from("/run/user/1000/supervisor.sock")
        );
        assert_eq!(
            p(Some("relative"), Some("")),
            PathBuf::from("/tmp/supervisor-1000/supervisor.sock")
        );
    }
    /// Hand every watched fd to the server once (as if poll said ready;
    /// the sockets are non-blocking, so an idle one just yields nothing).
    fn pump(server: &mut ControlServer, now: Instant) -> Vec<ControlEvent> {
        let watches: Vec<Watch> = server.interest().into_iter().map(|(w, _, _)| w).collect();
        watches
            .into_iter()
            .flat_map(|w| server.on_ready(w, now))
            .collect()
    }

    fn server(tag: &str) -> (ControlServer, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sv-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let listener = crate::listen::bind_control(&path).unwrap();
        (ControlServer::new(listener), path)
    }

    fn ask(path: &Path, line: &str) -> UnixStream {
        let mut c = UnixStream::connect(path).unwrap();
        c.write_all(line.as_bytes()).unwrap();
        c
    }

    fn answer_of(c: &mut UnixStream) -> String {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn a_status_request_is_an_event_and_its_answer_is_sent() {
        let (mut srv, path) = server("status");
        let now = Instant::now();
        let mut c = ask(&path, "status\n");
        let mut events = pump(&mut srv, now);
        events.extend(pump(&mut srv, now));
        let [ControlEvent::Status(id)] = events[..] else {
            panic!("{events:?}");
        };
        srv.answer(id, true, "{}", now);
        assert_eq!(answer_of(&mut c), "ok {}\n");
        assert!(srv.interest().iter().all(|(w, _, _)| *w == Watch::Accept));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn waiting_requesters_do_not_make_status_busy() {
        let (mut srv, path) = server("waiters");
        let now = Instant::now();
        let mut waiting = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 6 {
            waiting.push(ask(&path, "reload\n"));
            for _ in 0..2 {
                for e in pump(&mut srv, now) {
                    match e {
                        ControlEvent::Reload(id, _) => ids.push(id),
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
        assert_eq!(ids.len(), MAX_CONNECTIONS + 6, "every reload waits");
        // Waiting connections are not polled: a half-closed client cannot
        // wake the loop.
        assert_eq!(srv.interest().len(), 1);
        let mut c = ask(&path, "status\n");
        let mut events = pump(&mut srv, now);
        events.extend(pump(&mut srv, now));
        let [ControlEvent::Status(id)] = events[..] else {
            panic!("status is not served: {events:?}");
        };
        srv.answer(id, true, "fine", now);
        assert_eq!(answer_of(&mut c), "ok fine\n");
        // Each waiter gets its own answer.
        srv.answer(ids[3], false, "failed", now);
        assert_eq!(answer_of(&mut waiting[3]), "error failed\n");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn silent_and_bad_requests_are_answered_and_closed() {
        let (mut srv, path) = server("silent");
        let now = Instant::now();
        let mut silent = UnixStream::connect(&path).unwrap();
        let mut bad = ask(&path, "reboot\n");
        let events: Vec<_> = (0..3).flat_map(|_| pump(&mut srv, now)).collect();
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(
            answer_of(&mut bad),
            "error unknown request \"reboot\" (expected reload [rolling K|canary PCT [DUR]], promote, rollback, status, events, stop, upgrade [DUR], fds [NAME...] or listen NAME ADDR)\n"
        );
        assert_eq!(srv.deadline(), Some(now + REQUEST_TIMEOUT));
        srv.on_timeout(now + REQUEST_TIMEOUT);
        assert_eq!(answer_of(&mut silent), "error no request within 10s\n");
        assert_eq!(srv.deadline(), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn transfers_go_in_batches_of_scm_max_fd_with_their_lines() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let items: Vec<(String, OwnedFd)> = (0..600)
            .map(|i| {
                (
                    format!("l{i} tcp 127.0.0.1:{i}\n"),
                    b.as_fd().try_clone_to_owned().unwrap(),
                )
            })
            .collect();
        let mut t = Transfer::new(items);
        let sizes: Vec<usize> = t.batches.iter().map(|b| b.fds.len()).collect();
        assert_eq!(sizes, [253, 253, 94]);
        assert!(t.batches[0].data.starts_with(b"ok 600\nl0 tcp"));
        assert!(t.batches[1].data.starts_with(b"l253 tcp"));
        assert_eq!(send_some(&a, &mut t, Instant::now()), SendStep::Done);
        // Read back: each recvmsg brings one batch, its fds with its lines.
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let (mut data, mut fds) = (Vec::new(), 0);
        while fds < 600 {
            let mut buf = vec![0u8; 65536];
            let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                b.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .unwrap();
            assert!(!msg.flags.contains(MsgFlags::MSG_CTRUNC));
            let n = msg.bytes;
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    fds += raw.len();
                    for r in raw {
                        // SAFETY: SCM_RIGHTS just installed it; ours alone.
                        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r) });
                    }
                }
            }
            data.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(data).unwrap();
        assert_eq!(text.lines().count(), 601);
        assert_eq!(text.lines().last(), Some("l599 tcp 127.0.0.1:599"));
    }

    #[test]
    fn stop_requesters_hear_the_exit_status() {
        let (mut srv, path) = server("stop");
        let now = Instant::now();
        let mut c = ask(&path, "stop\n");
        let events: Vec<_> = (0..2).flat_map(|_| pump(&mut srv, now)).collect();
        assert!(matches!(events[..], [ControlEvent::Stop(..)]), "{events:?}");
        srv.answer_stop(143, now);
        drop(srv);
        assert_eq!(answer_of(&mut c), "ok exit status 143\n");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
