//! Child side of the socket-inheritance protocol (stub; being written).

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

/// Whether `name` is a valid `LISTEN_FDNAMES` entry: bytes 0x20..=0x7E except
/// `:`, at most 255 bytes (systemd's `fdname_is_valid`).
pub fn valid_fd_name(name: &str) -> bool {
    name.len() <= 255 && name.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b':')
}
