//! The protocol between the supervisor and its children, defined once: the
//! names of the variables a child is started with, the notify messages it
//! sends, and (in the hidden submodules, which the supervisor shares) the
//! text formats both sides read and write.
//!
//! The supervisor uses these very items, so it and every Rust child agree
//! by construction. The variables and messages are those of systemd's
//! socket activation (sd_listen_fds(3)) and readiness protocol
//! (sd_notify(3)), plus the supervisor's own `SUPERVISOR_*` variables.
//!
//! The submodules `activation`, `fetch` and `notify` hold the parsers and
//! formatters of those texts. They are public only so that the supervisor
//! can use them; they are not part of this crate's API and may change in
//! any release.

#[doc(hidden)]
pub mod activation;
#[doc(hidden)]
pub mod fetch;
#[doc(hidden)]
pub mod notify;

/// First inherited listener fd (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;
/// Number of inherited listeners.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// Pid the listeners are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Colon-separated listener names.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// Optional pidfd inode check (systemd 258+).
pub const LISTEN_PIDFDID: &str = "LISTEN_PIDFDID";
/// Datagram socket for sd_notify messages.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Watchdog pid (never passed on to children).
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// Watchdog interval (never passed on to children).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// Generation number of this child, 1 for the first.
pub const SUPERVISOR_GENERATION: &str = "SUPERVISOR_GENERATION";
/// This worker's index within its generation, 0 to N-1 (`--workers N`).
pub const SUPERVISOR_WORKER: &str = "SUPERVISOR_WORKER";
/// The number of workers in each generation (`--workers N`).
pub const SUPERVISOR_WORKERS: &str = "SUPERVISOR_WORKERS";
/// The supervisor's `--drain-timeout` in whole milliseconds: how long the
/// child has, from its stop signal, before the supervisor sends SIGKILL.
/// [`Drain`](crate::drain::Drain) takes its deadline from it.
pub const SUPERVISOR_DRAIN_TIMEOUT_MS: &str = "SUPERVISOR_DRAIN_TIMEOUT_MS";

/// Whether `name` is a valid `LISTEN_FDNAMES` entry: bytes 0x20..=0x7E except
/// `:`, at most 255 bytes (systemd's `fdname_is_valid`).
pub fn valid_fd_name(name: &str) -> bool {
    name.len() <= 255
        && name
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b':')
}

/// Notify message: the server is serving (startup finished).
pub const READY: &str = "READY=1";
/// Notify message: the server has begun shutting down.
pub const STOPPING: &str = "STOPPING=1";
/// Notify message: the server has begun reloading; `READY=1` must follow.
pub const RELOADING: &str = "RELOADING=1";
/// Prefix of a notify message carrying a one-line, human-readable status.
pub const STATUS_PREFIX: &str = "STATUS=";

/// Where a child finds the control socket of the supervisor that started
/// it: the variable holds its path.
pub const SUPERVISOR_CONTROL: &str = "SUPERVISOR_CONTROL";

/// The child's own channel to the supervisor: the number of an inherited,
/// connected Unix stream socket on which it may ask `fds [NAME...]` for
/// its own generation's sockets (and nothing else), one request at a time,
/// the answers as on the control socket. Works whatever user the child
/// runs as (`--user`), where the control socket (mode 0600) cannot be
/// opened.
pub const SUPERVISOR_CHANNEL_FD: &str = "SUPERVISOR_CHANNEL_FD";
