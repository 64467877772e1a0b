//! What the supervisor tells its own service manager (systemd) over
//! sd_notify, when `NOTIFY_SOCKET` is in the supervisor's environment.
//!
//! [`Announcer`] decides the messages, purely, from a [`View`] of the
//! supervisor: `READY=1` once the first generation serves; `RELOADING=1`
//! with `MONOTONIC_USEC` for every reload request and `READY=1` once no
//! reload is pending; `STOPPING=1` once stopping; `STATUS=` whenever its
//! text changes. [`ServiceManager`] sends them without ever blocking the
//! loop (a datagram the socket cannot take now waits for it to be
//! writable), and keeps the watchdog (`WATCHDOG=1` every half
//! `WATCHDOG_USEC`). It never decides anything about the generations.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, socket};

use supervisor_child::protocol as child;

/// At most this many messages wait for a stuck manager; older ones are
/// dropped (and that is logged): the latest state matters most.
const MAX_QUEUED: usize = 64;

/// What the announcer needs to know of the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// A generation serves.
    pub serving: bool,
    /// A stop has begun.
    pub stopping: bool,
    /// Reload requests not answered yet.
    pub pending_reloads: usize,
    /// The `STATUS=` text.
    pub status: String,
}

/// The message sequence, as a pure function of the views it is shown. See
/// the module documentation.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Announcer {
    /// `READY=1` was sent for the first generation.
    started: bool,
    /// `RELOADING=1` was sent and its `READY=1` is due.
    reloading: bool,
    /// A reload request arrived at this `CLOCK_MONOTONIC` time.
    reload_usec: Option<u64>,
    /// `STOPPING=1` was sent.
    stopping: bool,
    /// The last `STATUS=` sent.
    status: Option<String>,
}

impl Announcer {
    /// A reload was requested at `usec` (`CLOCK_MONOTONIC`).
    pub fn reload_requested(&mut self, usec: u64) {
        self.reload_usec = Some(usec);
    }

    /// The message for what changed since the last view, if anything did.
    pub fn update(&mut self, view: &View) -> Option<String> {
        let mut lines: Vec<String> = Vec::new();
        if let Some(usec) = self.reload_usec.take()
            && self.started
            && !view.stopping
        {
            lines.push(child::RELOADING.to_string());
            lines.push(format!("MONOTONIC_USEC={usec}"));
            self.reloading = true;
        }
        if !view.stopping {
            if !self.started && view.serving {
                self.started = true;
                lines.push(child::READY.to_string());
            } else if self.reloading && view.pending_reloads == 0 {
                self.reloading = false;
                lines.push(child::READY.to_string());
            }
        } else if !self.stopping {
            self.stopping = true;
            self.reloading = false;
            lines.push(child::STOPPING.to_string());
        }
        if self.status.as_deref() != Some(view.status.as_str()) {
            lines.push(format!("{}{}", child::STATUS_PREFIX, view.status));
            self.status = Some(view.status.clone());
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// The supervisor's service manager: the socket, the announcer, the
/// watchdog.
#[derive(Debug)]
pub struct ServiceManager {
    fd: OwnedFd,
    addr: UnixAddr,
    /// The address as given, for messages.
    text: String,
    announcer: Announcer,
    /// Messages the socket could not take yet.
    queue: VecDeque<String>,
    /// Whether a send has failed already (later failures log at debug).
    failed: bool,
    /// The socket is connected to the manager's: it can be polled for room.
    connected: bool,
    /// `WATCHDOG=1` keep-alive interval and when it is due.
    watchdog: Option<(Duration, Instant)>,
}

/// What the service manager has been told, as carried across an in-place
/// upgrade.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    announcer: serde_json::Value,
    queue: Vec<String>,
    #[serde(with = "crate::carry::mono::opt")]
    watchdog_due: Option<Instant>,
}

impl ServiceManager {
    /// The manager named by `NOTIFY_SOCKET`, if set: `/path` or `@abstract`
    /// (sd_notify(3)). Other forms (vsock) are not supported and are
    /// logged once. `watchdog` is the keep-alive interval, if the manager
    /// asks this process for one.
    pub fn from_env(watchdog: Option<Duration>) -> Option<ServiceManager> {
        let value = std::env::var_os(child::NOTIFY_SOCKET)?;
        let text = value.to_string_lossy().into_owned();
        let addr = if let Some(name) = text.strip_prefix('@') {
            UnixAddr::new_abstract(name.as_bytes())
        } else if text.starts_with('/') {
            UnixAddr::new(Path::new(&value))
        } else {
            log::warn!(
                "NOTIFY_SOCKET={text:?} is not a Unix socket address: not notifying the service manager"
            );
            return None;
        };
        let addr = match addr {
            Ok(a) => a,
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={text:?}: {e}: not notifying the service manager");
                return None;
            }
        };
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let fd = match socket(AddressFamily::Unix, SockType::Datagram, flags, None) {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!(
                    "create a socket for NOTIFY_SOCKET: {e}: not notifying the service manager"
                );
                return None;
            }
        };
        // Connected, so that the socket polls writable only once the
        // manager's queue has room (an unconnected datagram socket always
        // polls writable, which would spin the loop on a full queue).
        let connected = nix::sys::socket::connect(fd.as_raw_fd(), &addr).is_ok();
        log::debug!("notifying the service manager at {text}");
        if let Some(w) = watchdog {
            log::info!(
                "sending the service manager WATCHDOG=1 every {}",
                hot_supervisor::duration::human(w)
            );
        }
        Some(ServiceManager {
            fd,
            addr,
            text,
            announcer: Announcer::default(),
            queue: VecDeque::new(),
            failed: false,
            connected,
            watchdog: watchdog.map(|i| (i, Instant::now())),
        })
    }

    /// What the manager has been told, for an in-place upgrade (the
    /// socket itself is made again from `NOTIFY_SOCKET`).
    pub fn save(&self) -> Saved {
        Saved {
            announcer: serde_json::to_value(&self.announcer).unwrap_or_default(),
            queue: self.queue.iter().cloned().collect(),
            watchdog_due: self.watchdog.map(|(_, due)| due),
        }
    }

    /// Carry on from what an upgrade carried across.
    pub fn restore(&mut self, saved: Saved) {
        if let Ok(a) = serde_json::from_value(saved.announcer) {
            self.announcer = a;
        }
        self.queue = saved.queue.into_iter().collect();
        if let (Some((every, _)), Some(due)) = (self.watchdog, saved.watchdog_due) {
            self.watchdog = Some((every, due));
        }
        self.flush();
    }

    /// A reload was requested now.
    pub fn reload_requested(&mut self) {
        self.announcer.reload_requested(monotonic_usec());
    }

    /// Tell the manager what changed.
    pub fn update(&mut self, view: &View) {
        if let Some(m) = self.announcer.update(view) {
            self.send(m);
        }
    }

    /// The fd to poll for output while messages wait.
    pub fn interest(&self) -> Option<BorrowedFd<'_>> {
        (self.connected && !self.queue.is_empty()).then(|| self.fd.as_fd())
    }

    /// When the next keep-alive is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.watchdog.map(|(_, due)| due)
    }

    /// Send a due keep-alive.
    pub fn on_timeout(&mut self, now: Instant) {
        if let Some((every, due)) = self.watchdog
            && due <= now
        {
            self.watchdog = Some((every, now + every));
            self.send("WATCHDOG=1".to_string());
        }
    }

    /// The socket is writable: send what waits.
    pub fn on_writable(&mut self) {
        self.flush();
    }

    /// Queue one message (newline-separated `KEY=VALUE` lines) and send
    /// what the socket takes. A failure is logged, never fatal: the service
    /// goes on serving.
    fn send(&mut self, message: String) {
        log::debug!(
            "to the service manager: {}",
            message.replace('\n', " ").escape_debug()
        );
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
            log::warn!(
                "the service manager at {} takes no messages: dropped the oldest",
                self.text
            );
        }
        self.queue.push_back(message);
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(m) = self.queue.front() {
            let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
            let sent = if self.connected {
                nix::sys::socket::send(self.fd.as_raw_fd(), m.as_bytes(), flags)
            } else {
                nix::sys::socket::sendto(self.fd.as_raw_fd(), m.as_bytes(), &self.addr, flags)
            };
            match sent {
                Ok(_) => {
                    self.queue.pop_front();
                }
                // The manager's queue is full: wait until it has room (an
                // unconnected socket cannot tell: the message waits for the
                // next one sent).
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    if self.failed {
                        log::debug!("notify the service manager at {}: {e}", self.text);
                    } else {
                        log::warn!("notify the service manager at {}: {e}", self.text);
                        self.failed = true;
                    }
                    self.queue.pop_front();
                }
            }
        }
    }
}

/// `CLOCK_MONOTONIC` now, in microseconds (for `MONOTONIC_USEC=`).
pub fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1000,
        Err(_) => 0,
    }
}

/// Half of `WATCHDOG_USEC`, if the service manager asks this process (not
/// a parent of it: `WATCHDOG_PID`) for keep-alives.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    // At least 1ms: a tiny WATCHDOG_USEC must not turn into a busy loop.
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(serving: bool, stopping: bool, pending: usize, status: &str) -> View {
        View {
            serving,
            stopping,
            pending_reloads: pending,
            status: status.into(),
        }
    }

    #[test]
    fn ready_once_serving_then_reloading_and_ready_again() {
        let mut a = Announcer::default();
        assert_eq!(
            a.update(&view(false, false, 0, "starting")).as_deref(),
            Some("STATUS=starting")
        );
        assert_eq!(
            a.update(&view(true, false, 0, "g1")).as_deref(),
            Some("READY=1\nSTATUS=g1")
        );
        assert_eq!(a.update(&view(true, false, 0, "g1")), None);
        a.reload_requested(42);
        assert_eq!(
            a.update(&view(true, false, 1, "g1; g2 starting"))
                .as_deref(),
            Some("RELOADING=1\nMONOTONIC_USEC=42\nSTATUS=g1; g2 starting")
        );
        // A second request while the first is pending: its own RELOADING.
        a.reload_requested(43);
        assert_eq!(
            a.update(&view(true, false, 2, "g1; g2 starting"))
                .as_deref(),
            Some("RELOADING=1\nMONOTONIC_USEC=43")
        );
        assert_eq!(a.update(&view(true, false, 1, "g1; g2 starting")), None);
        assert_eq!(
            a.update(&view(true, false, 0, "g3")).as_deref(),
            Some("READY=1\nSTATUS=g3")
        );
    }

    #[test]
    fn no_reloading_before_start_and_stopping_once() {
        let mut a = Announcer::default();
        a.reload_requested(1);
        assert_eq!(
            a.update(&view(false, false, 1, "s")).as_deref(),
            Some("STATUS=s")
        );
        assert_eq!(
            a.update(&view(true, true, 0, "stopping")).as_deref(),
            Some("STOPPING=1\nSTATUS=stopping")
        );
        assert_eq!(a.update(&view(false, true, 0, "stopping")), None);
    }
}
