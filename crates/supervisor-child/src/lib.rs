//! Child side of the socket-inheritance protocol, and the server's half of
//! a graceful drain ([`drain`]).
//!
//! The supervisor binds the listening sockets once and starts every
//! generation of the server with them, speaking the systemd protocols, so a
//! server that already supports socket activation needs nothing from this
//! module. It exists for Rust servers that want named listeners and readiness
//! in one small place, with no dependency beyond `std` and `libc`.
//!
//! # The protocol
//!
//! A child is started with:
//!
//! - its listeners as fds 3, 4, … ([`LISTEN_FDS_START`]), not close-on-exec;
//! - `LISTEN_FDS=<n>`, the number of listeners;
//! - `LISTEN_PID=<pid>`, its own pid: a process that inherited the variables
//!   from a parent sees another pid and must ignore them;
//! - `LISTEN_FDNAMES=<name>:<name>:…`, one name per fd (every name is
//!   `unknown` when absent);
//! - `NOTIFY_SOCKET=<path or @abstract>`, a unix datagram socket for
//!   `sd_notify`-style state messages;
//! - `SUPERVISOR_GENERATION=<n>`, 1 for the first child;
//! - `SUPERVISOR_WORKER=<i>` and `SUPERVISOR_WORKERS=<n>`
//!   ([`SUPERVISOR_WORKER`](protocol::SUPERVISOR_WORKER)): with `--workers N`, each generation is N
//!   processes on the same sockets; this one's index (0 to N-1) and N;
//! - `SUPERVISOR_DRAIN_TIMEOUT_MS=<ms>` ([`SUPERVISOR_DRAIN_TIMEOUT_MS`]),
//!   the supervisor's `--drain-timeout`: how long the child has, from its
//!   stop signal, before the supervisor sends SIGKILL;
//! - `SUPERVISOR_CONTROL=<path>` ([`SUPERVISOR_CONTROL`](protocol::SUPERVISOR_CONTROL)), the
//!   supervisor's control socket, where [`open_listener`] asks for a
//!   listener it did not have at start ([`fetch`]).
//!
//! The child takes its listeners ([`Listeners`]), starts serving, and sends
//! [`READY`] ([`ready`]). Only then does the supervisor stop the previous
//! generation, by sending it SIGTERM: that process stops accepting, sends
//! [`STOPPING`] ([`stopping`]), finishes its requests and exits.
//!
//! The [`drain`] module is that last part as a kit: the stop signal (a
//! second one forces), the accept loop's check, requests in flight, a
//! bounded wait, `STOPPING=1` and `STATUS=` progress, a health state, and
//! keep-alive connections closed without losing the request a client was
//! already sending (std servers, and axum behind the `axum` feature).
//!
//! The listeners are shared with the supervisor and every other generation
//! (duplicates of one open file description, one accept queue), which is what
//! makes the hand-over lossless. Two consequences:
//!
//! - never call `shutdown(2)` on a listener: it would stop it for every
//!   process; closing (dropping) your copy is enough to stop accepting;
//! - `O_NONBLOCK` and socket options set on a listener are seen by every
//!   holder.
//!
//! Nothing here mutates the environment: reading it is thread-safe, and the
//! pid check keeps the variables from applying to processes the server
//! spawns.
//!
//! # Example
//!
//! ```
//! use std::io;
//! use std::net::TcpListener;
//!
//! use supervisor_child::{self as child, Listeners};
//!
//! fn main() -> io::Result<()> {
//!     let mut listeners = Listeners::from_env()?;
//!     // Under the supervisor: the inherited socket named "http". Started by
//!     // hand (as this example is): a socket of our own.
//!     let (listener, inherited) = match listeners.take_tcp_listener("http")? {
//!         Some(listener) => (listener, true),
//!         None => (TcpListener::bind("127.0.0.1:0")?, false),
//!     };
//!     let generation = child::generation().unwrap_or(0);
//!     eprintln!("generation {generation} on {}", listener.local_addr()?);
//!     if inherited {
//!         // Returns Ok(false) when NOTIFY_SOCKET is not set.
//!         child::ready()?;
//!         child::status(&format!("serving generation {generation}"))?;
//!     }
//!     // Accept and serve until SIGTERM; then drop the listener, call
//!     // child::stopping(), finish the requests in flight and exit (the
//!     // `drain` module does all of that).
//!     Ok(())
//! }
//! ```

use std::collections::BTreeSet;
use std::env;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

pub mod drain;
pub mod fetch;
pub mod protocol;
#[doc(hidden)]
pub mod test_rng;

pub use fetch::{
    Exchange, Fetched, channel, control_path, exchange, fetch_listeners, open_listener,
};

use crate::protocol::activation::listen_env;
use crate::protocol::notify::{socket_addr, status_message};
use crate::protocol::{
    LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_START, LISTEN_PID, NOTIFY_SOCKET, READY, STOPPING,
    SUPERVISOR_DRAIN_TIMEOUT_MS, SUPERVISOR_GENERATION,
};

/// Name given to every listener when `LISTEN_FDNAMES` is absent.
const UNKNOWN_NAME: &str = "unknown";

/// Inherited fds already turned into owned sockets, by any [`Listeners`] from
/// [`Listeners::from_env`]. A set per value would let two values built from
/// the same environment each take the same fd, giving it two owners that
/// would both close it.
static CLAIMED: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// Selects an inherited listener: by name (the first one with that name not
/// yet taken) or by 0-based position.
///
/// Built implicitly from `&str` and `usize`, so both
/// `take_tcp_listener("http")` and `take_tcp_listener(0)` work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Key<'a> {
    /// The first not-yet-taken listener with this `LISTEN_FDNAMES` name.
    Name(&'a str),
    /// The listener at this position (fd `3 + index`).
    Index(usize),
}

impl<'a> From<&'a str> for Key<'a> {
    fn from(name: &'a str) -> Self {
        Key::Name(name)
    }
}

impl From<usize> for Key<'_> {
    fn from(index: usize) -> Self {
        Key::Index(index)
    }
}

/// The listeners this process inherited, each of which can be taken once.
///
/// Fds that are never taken stay open (and inheritable) for the life of the
/// process, as with `sd_listen_fds`.
#[derive(Debug)]
pub struct Listeners {
    slots: Vec<Slot>,
    /// Whether the fds came from the environment and so are claimed in the
    /// process-wide [`CLAIMED`] set.
    inherited: bool,
}

#[derive(Debug)]
struct Slot {
    fd: RawFd,
    name: String,
    taken: bool,
}

/// What a `take_*` accessor wants an fd to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    TcpListener,
    UnixListener,
    UdpSocket,
}

impl Want {
    fn describe(self) -> &'static str {
        match self {
            Want::TcpListener => "a TCP listener",
            Want::UnixListener => "a unix stream listener",
            Want::UdpSocket => "a UDP socket",
        }
    }
}

impl Listeners {
    /// Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` with the
    /// semantics of `sd_listen_fds_with_names`, without modifying the
    /// environment.
    ///
    /// The set is empty when `LISTEN_PID` or `LISTEN_FDS` is unset, or when
    /// `LISTEN_PID` is not this process's pid (the variables were inherited
    /// from a parent that was socket-activated itself). The optional
    /// `LISTEN_PIDFDID` check is not made: the pid check suffices for
    /// children of the supervisor, which never sets it.
    ///
    /// # Errors
    ///
    /// Fails, naming the variable and its value, when `LISTEN_PID` is not a
    /// pid, `LISTEN_FDS` is not a positive count, `LISTEN_FDNAMES` does not
    /// hold one name per fd, a variable is not valid UTF-8, or one of the
    /// announced fds is not open.
    ///
    /// # Example
    ///
    /// ```
    /// use supervisor_child::Listeners;
    ///
    /// let listeners = Listeners::from_env()?;
    /// for (index, fd, name) in listeners.names() {
    ///     eprintln!("listener {index}: fd {fd} named {name}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_env() -> io::Result<Listeners> {
        let pid = env_str(LISTEN_PID)?;
        let fds = env_str(LISTEN_FDS)?;
        let names = env_str(LISTEN_FDNAMES)?;
        let Some(parsed) = listen_env(
            pid.as_deref(),
            fds.as_deref(),
            names.as_deref(),
            std::process::id(),
        )?
        else {
            return Ok(Listeners {
                slots: Vec::new(),
                inherited: true,
            });
        };
        // sd_listen_fds fails when it cannot set FD_CLOEXEC on one of the
        // fds; checking that each is open gives the same verdict without
        // changing them.
        for index in 0..parsed.count {
            let fd = fd_at(index)?;
            if let Err(err) = fd_flags(fd) {
                return Err(io::Error::new(
                    err.kind(),
                    format!("{LISTEN_FDS}={}: fd {fd} is not open: {err}", parsed.count),
                ));
            }
        }
        let names = parsed
            .names
            .unwrap_or_else(|| vec![UNKNOWN_NAME.to_owned(); parsed.count]);
        let slots = names
            .into_iter()
            .enumerate()
            .map(|(index, name)| {
                Ok(Slot {
                    fd: fd_at(index)?,
                    name,
                    taken: false,
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Listeners {
            slots,
            inherited: true,
        })
    }

    /// A set over explicit fds instead of fds 3…, for tests: the caller hands
    /// over ownership of every fd, which a successful take wraps.
    #[cfg(test)]
    fn from_parts(parts: Vec<(RawFd, &str)>) -> Listeners {
        let slots = parts
            .into_iter()
            .map(|(fd, name)| Slot {
                fd,
                name: name.to_owned(),
                taken: false,
            })
            .collect();
        Listeners {
            slots,
            inherited: false,
        }
    }

    /// Number of inherited listeners, taken or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no listener was inherited.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every inherited listener as `(index, fd, name)`, in fd order, taken or
    /// not.
    pub fn names(&self) -> impl Iterator<Item = (usize, RawFd, &str)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .map(|(index, slot)| (index, slot.fd, slot.name.as_str()))
    }

    /// Takes the listener selected by `key` as a [`TcpListener`] (IPv4 or
    /// IPv6), and sets `FD_CLOEXEC` on it.
    ///
    /// Returns `Ok(None)` when there is no such listener or it was already
    /// taken.
    ///
    /// # Errors
    ///
    /// Fails, naming the fd, when it is not a listening `AF_INET`/`AF_INET6`
    /// stream socket (`fd 4 is not a TCP listener (it is a UDP socket)`) or
    /// a syscall inspecting it fails. The listener is then left untaken.
    pub fn take_tcp_listener<'k>(
        &mut self,
        key: impl Into<Key<'k>>,
    ) -> io::Result<Option<TcpListener>> {
        Ok(self
            .take(key.into(), Want::TcpListener)?
            .map(TcpListener::from))
    }

    /// Takes the listener selected by `key` as a [`UnixListener`], and sets
    /// `FD_CLOEXEC` on it.
    ///
    /// Returns `Ok(None)` when there is no such listener or it was already
    /// taken.
    ///
    /// # Errors
    ///
    /// Fails, naming the fd, when it is not a listening `AF_UNIX` stream
    /// socket or a syscall inspecting it fails. The listener is then left
    /// untaken.
    pub fn take_unix_listener<'k>(
        &mut self,
        key: impl Into<Key<'k>>,
    ) -> io::Result<Option<UnixListener>> {
        Ok(self
            .take(key.into(), Want::UnixListener)?
            .map(UnixListener::from))
    }

    /// Takes the socket selected by `key` as a [`UdpSocket`] (IPv4 or IPv6),
    /// and sets `FD_CLOEXEC` on it.
    ///
    /// Returns `Ok(None)` when there is no such socket or it was already
    /// taken.
    ///
    /// # Errors
    ///
    /// Fails, naming the fd, when it is not an `AF_INET`/`AF_INET6` datagram
    /// socket or a syscall inspecting it fails. The socket is then left
    /// untaken.
    pub fn take_udp_socket<'k>(
        &mut self,
        key: impl Into<Key<'k>>,
    ) -> io::Result<Option<UdpSocket>> {
        Ok(self.take(key.into(), Want::UdpSocket)?.map(UdpSocket::from))
    }

    fn take(&mut self, key: Key<'_>, want: Want) -> io::Result<Option<OwnedFd>> {
        // Held until the fd is owned, so that two sets from the environment
        // racing for one fd cannot both take it.
        let mut claimed = self
            .inherited
            .then(|| CLAIMED.lock().unwrap_or_else(PoisonError::into_inner));
        let is_free =
            |slot: &Slot| !slot.taken && claimed.as_ref().is_none_or(|set| !set.contains(&slot.fd));
        let index = match key {
            Key::Name(name) => self
                .slots
                .iter()
                .position(|slot| slot.name == name && is_free(slot)),
            Key::Index(index) => self
                .slots
                .get(index)
                .filter(|slot| is_free(slot))
                .map(|_| index),
        };
        let Some(index) = index else {
            return Ok(None);
        };
        let slot = &mut self.slots[index];
        check_socket(slot.fd, want)?;
        set_cloexec(slot.fd)?;
        slot.taken = true;
        if let Some(set) = claimed.as_mut() {
            set.insert(slot.fd);
        }
        // SAFETY: the fd is open (fstat just succeeded) and owned by nobody
        // else in this process: the LISTEN_FDS protocol hands fds 3… to the
        // process named by LISTEN_PID, which is us, and it is marked taken
        // (locally and, for inherited fds, process-wide under the lock held
        // since the is_free check) so no other call wraps it again. For
        // `from_parts`, the caller handed over ownership.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(slot.fd) }))
    }
}

/// Sends one notify datagram holding `state` (for example [`READY`], or
/// several `KEY=VALUE` lines) to the socket named by `$NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when `NOTIFY_SOCKET` is unset (not running under a
/// supervisor or service manager), `Ok(true)` once the datagram is sent.
///
/// # Errors
///
/// Fails when `NOTIFY_SOCKET` is neither an absolute path nor `@` followed
/// by an abstract socket name (the `vsock:` forms are not supported), or
/// when the datagram cannot be sent whole.
///
/// # Example
///
/// ```
/// // Several fields in one datagram. Without a supervisor (as here),
/// // NOTIFY_SOCKET is unset and nothing is sent.
/// let sent = supervisor_child::notify("READY=1\nSTATUS=warming caches")?;
/// assert!(!sent || std::env::var_os("NOTIFY_SOCKET").is_some());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    send_notify(&target, state)?;
    Ok(true)
}

fn send_notify(target: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(target)?;
    let socket = UnixDatagram::unbound()?;
    let sent = socket
        .send_to_addr(state.as_bytes(), &addr)
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "send to {NOTIFY_SOCKET}={}: {err}",
                    target.to_string_lossy()
                ),
            )
        })?;
    // Datagrams are sent whole or not at all; a short count would mean a
    // truncated message that the receiver would misread.
    if sent != state.len() {
        return Err(io::Error::other(format!(
            "send to {NOTIFY_SOCKET}={}: short datagram ({sent} of {} bytes)",
            target.to_string_lossy(),
            state.len(),
        )));
    }
    Ok(())
}

/// Sends [`READY`]: the server is accepting and serving.
///
/// # Errors
///
/// As [`notify`].
///
/// # Example
///
/// ```
/// // Once the listeners are taken and the server can answer:
/// if !supervisor_child::ready()? {
///     eprintln!("not under a supervisor: nobody to tell");
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn ready() -> io::Result<bool> {
    notify(READY)
}

/// Sends [`STOPPING`]: the server has stopped accepting and is draining.
///
/// # Errors
///
/// As [`notify`].
///
/// # Example
///
/// ```
/// // On the stop signal, after the listener is dropped:
/// supervisor_child::stopping()?;
/// supervisor_child::status("draining 3 connections")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stopping() -> io::Result<bool> {
    notify(STOPPING)
}

/// Sends `STATUS=<text>`, a human-readable status. The field is one line, so
/// line breaks (and NULs, which would make the receiver drop the datagram)
/// in `text` become spaces.
///
/// # Errors
///
/// As [`notify`].
///
/// # Example
///
/// ```
/// // Shown by `supervisor status` beside this process.
/// supervisor_child::status("serving, 12 connections")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn status(text: &str) -> io::Result<bool> {
    notify(&status_message(text))
}

/// This child's generation from `SUPERVISOR_GENERATION` (1 for the first),
/// or `None` when it is unset or not a number.
///
/// # Example
///
/// ```
/// let generation = supervisor_child::generation().unwrap_or(0);
/// eprintln!("generation {generation} starting");
/// ```
pub fn generation() -> Option<u64> {
    env::var(SUPERVISOR_GENERATION).ok()?.parse().ok()
}

/// The supervisor's drain timeout from [`SUPERVISOR_DRAIN_TIMEOUT_MS`]:
/// `None` when it is unset (an older supervisor, or started by hand).
///
/// # Errors
///
/// Fails, naming the variable and its value, when it is set but is not a
/// whole number of milliseconds.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// // Finish in-flight work a little before the supervisor's SIGKILL.
/// let budget = supervisor_child::drain_timeout()?
///     .unwrap_or(Duration::from_secs(30))
///     .saturating_sub(Duration::from_millis(500));
/// # let _ = budget;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn drain_timeout() -> io::Result<Option<Duration>> {
    env_str(SUPERVISOR_DRAIN_TIMEOUT_MS)?
        .map(|value| parse_drain_timeout(&value))
        .transpose()
}

fn parse_drain_timeout(value: &str) -> io::Result<Duration> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| {
            invalid(format!(
                "{SUPERVISOR_DRAIN_TIMEOUT_MS}={value:?} is not a number of milliseconds"
            ))
        })
}

/// Reads a variable that must be UTF-8 if set.
fn env_str(key: &str) -> io::Result<Option<String>> {
    match env::var(key) {
        Ok(value) => Ok(Some(value)),
        Err(env::VarError::NotPresent) => Ok(None),
        Err(env::VarError::NotUnicode(value)) => Err(invalid(format!(
            "{key}={} is not valid UTF-8",
            value.to_string_lossy()
        ))),
    }
}

fn fd_at(index: usize) -> io::Result<RawFd> {
    i32::try_from(index)
        .ok()
        .and_then(|index| LISTEN_FDS_START.checked_add(index))
        .ok_or_else(|| invalid(format!("listener #{index} has no fd number")))
}

/// Checks that `fd` is the kind of socket `want` asks for, before anything
/// wraps it: handing an arbitrary fd to `TcpListener` would "work" until the
/// first accept.
fn check_socket(fd: RawFd, want: Want) -> io::Result<()> {
    let actual = inspect(fd).map_err(|err| {
        if err.raw_os_error() == Some(libc::EBADF) {
            mismatch(fd, want, "it is not open")
        } else {
            io::Error::new(err.kind(), format!("inspect fd {fd}: {err}"))
        }
    })?;
    let matches = match (want, &actual) {
        (
            Want::TcpListener,
            FdKind::Socket {
                domain,
                ty,
                listening,
            },
        ) => is_inet(*domain) && *ty == libc::SOCK_STREAM && *listening,
        (
            Want::UnixListener,
            FdKind::Socket {
                domain,
                ty,
                listening,
            },
        ) => *domain == libc::AF_UNIX && *ty == libc::SOCK_STREAM && *listening,
        (Want::UdpSocket, FdKind::Socket { domain, ty, .. }) => {
            is_inet(*domain) && *ty == libc::SOCK_DGRAM
        }
        (_, FdKind::NotSocket(_)) => false,
    };
    if matches {
        Ok(())
    } else {
        Err(mismatch(fd, want, &format!("it is {actual}")))
    }
}

/// What an fd turned out to be, for checks and error messages.
#[derive(Debug)]
enum FdKind {
    NotSocket(&'static str),
    Socket {
        domain: libc::c_int,
        ty: libc::c_int,
        listening: bool,
    },
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (domain, ty, listening) = match *self {
            FdKind::NotSocket(what) => return f.write_str(what),
            FdKind::Socket {
                domain,
                ty,
                listening,
            } => (domain, ty, listening),
        };
        let family = if is_inet(domain) {
            match ty {
                libc::SOCK_STREAM => Some("TCP"),
                libc::SOCK_DGRAM => Some("UDP"),
                _ => None,
            }
        } else if domain == libc::AF_UNIX {
            match ty {
                libc::SOCK_STREAM => Some("unix stream"),
                libc::SOCK_DGRAM => Some("unix datagram"),
                libc::SOCK_SEQPACKET => Some("unix seqpacket"),
                _ => None,
            }
        } else {
            None
        };
        match family {
            None => write!(f, "a socket of domain {domain} and type {ty}"),
            Some(family) if ty == libc::SOCK_DGRAM => write!(f, "a {family} socket"),
            Some(family) if listening => write!(f, "a {family} listener"),
            Some(family) => write!(f, "a {family} socket that is not listening"),
        }
    }
}

fn inspect(fd: RawFd) -> io::Result<FdKind> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` to a valid, writable pointer to
    // one; an fd that is not open is reported as EBADF, not undefined
    // behaviour.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled in the whole struct.
    let mode = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT;
    let file_type = match mode {
        libc::S_IFSOCK => None,
        libc::S_IFREG => Some("a regular file"),
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFIFO => Some("a pipe"),
        libc::S_IFCHR => Some("a character device"),
        libc::S_IFBLK => Some("a block device"),
        libc::S_IFLNK => Some("a symbolic link"),
        _ => Some("not a socket"),
    };
    if let Some(file_type) = file_type {
        return Ok(FdKind::NotSocket(file_type));
    }
    Ok(FdKind::Socket {
        domain: socket_option(fd, libc::SO_DOMAIN)?,
        ty: socket_option(fd, libc::SO_TYPE)?,
        listening: socket_option(fd, libc::SO_ACCEPTCONN)? != 0,
    })
}

fn socket_option(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the size of
    // `value`, so the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn fd_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFD takes no argument and touches no memory; a closed fd
    // is reported as EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags)
}

/// Sets `FD_CLOEXEC`, which the launcher had to clear so the fd survived its
/// `execve`, so that processes this server spawns do not inherit the
/// listener.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    let flags = fd_flags(fd)?;
    if flags & libc::FD_CLOEXEC != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFD takes an int flag set and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == -1 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("set FD_CLOEXEC on fd {fd}: {err}"),
        ));
    }
    Ok(())
}

fn is_inet(domain: libc::c_int) -> bool {
    domain == libc::AF_INET || domain == libc::AF_INET6
}

fn mismatch(fd: RawFd, want: Want, actual: &str) -> io::Error {
    invalid(format!("fd {fd} is not {} ({actual})", want.describe()))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::net::{TcpStream, UdpSocket};
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    use std::path::PathBuf;

    use super::*;

    fn tcp_listener_fd() -> RawFd {
        TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd()
    }

    fn udp_fd() -> RawFd {
        UdpSocket::bind("127.0.0.1:0").unwrap().into_raw_fd()
    }

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let path = env::temp_dir().join(format!(
                "supervisor-child-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn error_text(result: io::Result<impl fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn drain_timeout_is_whole_milliseconds() {
        assert_eq!(
            parse_drain_timeout("30000").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(parse_drain_timeout("0").unwrap(), Duration::ZERO);
        for bad in ["", "30s", "-1", "1.5"] {
            let text = error_text(parse_drain_timeout(bad));
            assert_eq!(
                text,
                format!("SUPERVISOR_DRAIN_TIMEOUT_MS={bad:?} is not a number of milliseconds")
            );
        }
    }

    #[test]
    fn key_conversions() {
        assert_eq!(Key::from("http"), Key::Name("http"));
        assert_eq!(Key::from(2usize), Key::Index(2));
    }

    #[test]
    fn takes_tcp_listener_by_name_once() {
        let fd = tcp_listener_fd();
        let mut listeners = Listeners::from_parts(vec![(fd, "http")]);
        let listener = listeners.take_tcp_listener("http").unwrap().unwrap();
        assert_eq!(listener.as_raw_fd(), fd);
        assert_ne!(fd_flags(fd).unwrap() & libc::FD_CLOEXEC, 0);
        assert!(listeners.take_tcp_listener("http").unwrap().is_none());
        assert!(listeners.take_tcp_listener(0).unwrap().is_none());
        // Still a working listener.
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn sets_cloexec_on_an_inheritable_fd() {
        let fd = tcp_listener_fd();
        // SAFETY: fd is a live listener owned by this test; F_SETFD touches no
        // memory.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
        let mut listeners = Listeners::from_parts(vec![(fd, "http")]);
        let _listener = listeners.take_tcp_listener(0).unwrap().unwrap();
        assert_ne!(fd_flags(fd).unwrap() & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn name_selects_the_first_untaken_fd_with_that_name() {
        let (a, b, c) = (tcp_listener_fd(), tcp_listener_fd(), tcp_listener_fd());
        let mut listeners = Listeners::from_parts(vec![(a, "web"), (b, "admin"), (c, "web")]);
        assert_eq!(listeners.len(), 3);
        assert!(!listeners.is_empty());
        let names: Vec<_> = listeners.names().collect();
        assert_eq!(names, [(0, a, "web"), (1, b, "admin"), (2, c, "web")]);
        let first = listeners.take_tcp_listener("web").unwrap().unwrap();
        let second = listeners.take_tcp_listener("web").unwrap().unwrap();
        assert_eq!((first.as_raw_fd(), second.as_raw_fd()), (a, c));
        assert!(listeners.take_tcp_listener("web").unwrap().is_none());
        assert!(listeners.take_tcp_listener("nope").unwrap().is_none());
        assert!(listeners.take_tcp_listener(3).unwrap().is_none());
        let admin = listeners.take_tcp_listener(1).unwrap().unwrap();
        assert_eq!(admin.as_raw_fd(), b);
        // Taken listeners are still listed.
        assert_eq!(listeners.names().count(), 3);
    }

    #[test]
    fn udp_fd_is_not_a_tcp_listener_and_stays_untaken() {
        let fd = udp_fd();
        let mut listeners = Listeners::from_parts(vec![(fd, "dns")]);
        let text = error_text(listeners.take_tcp_listener("dns"));
        assert_eq!(
            text,
            format!("fd {fd} is not a TCP listener (it is a UDP socket)")
        );
        let text = error_text(listeners.take_unix_listener(0));
        assert_eq!(
            text,
            format!("fd {fd} is not a unix stream listener (it is a UDP socket)")
        );
        let socket = listeners.take_udp_socket("dns").unwrap().unwrap();
        assert_eq!(socket.as_raw_fd(), fd);
        assert!(listeners.take_udp_socket("dns").unwrap().is_none());
    }

    #[test]
    fn tcp_listener_is_not_a_udp_socket() {
        let fd = tcp_listener_fd();
        let mut listeners = Listeners::from_parts(vec![(fd, "http")]);
        let text = error_text(listeners.take_udp_socket(0));
        assert_eq!(
            text,
            format!("fd {fd} is not a UDP socket (it is a TCP listener)")
        );
        let text = error_text(listeners.take_unix_listener(0));
        assert_eq!(
            text,
            format!("fd {fd} is not a unix stream listener (it is a TCP listener)")
        );
        assert!(listeners.take_tcp_listener(0).unwrap().is_some());
    }

    #[test]
    fn connected_tcp_socket_is_not_a_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = TcpStream::connect(listener.local_addr().unwrap())
            .unwrap()
            .into_raw_fd();
        let mut listeners = Listeners::from_parts(vec![(fd, "http")]);
        let text = error_text(listeners.take_tcp_listener(0));
        assert_eq!(
            text,
            format!("fd {fd} is not a TCP listener (it is a TCP socket that is not listening)")
        );
        // Hand the fd back to an owner so the test does not leak it.
        // SAFETY: the take failed, so the fd is still ours and unowned.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }

    #[test]
    fn takes_unix_listener() {
        let dir = TempDir::new("unix");
        let path = dir.0.join("listener.sock");
        let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
        let mut listeners = Listeners::from_parts(vec![(fd, "local")]);
        let text = error_text(listeners.take_tcp_listener("local"));
        assert_eq!(
            text,
            format!("fd {fd} is not a TCP listener (it is a unix stream listener)")
        );
        let listener = listeners.take_unix_listener("local").unwrap().unwrap();
        assert_eq!(listener.as_raw_fd(), fd);
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn unix_datagram_socket_is_not_a_listener() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let fd = a.as_raw_fd();
        let mut listeners = Listeners::from_parts(vec![(fd, "x")]);
        let text = error_text(listeners.take_unix_listener(0));
        assert_eq!(
            text,
            format!("fd {fd} is not a unix stream listener (it is a unix datagram socket)")
        );
        drop((a, b));
    }

    #[test]
    fn regular_file_is_not_a_socket() {
        let file = File::open("/proc/self/status").unwrap();
        let fd = file.as_raw_fd();
        let mut listeners = Listeners::from_parts(vec![(fd, "x")]);
        let text = error_text(listeners.take_tcp_listener(0));
        assert_eq!(
            text,
            format!("fd {fd} is not a TCP listener (it is a regular file)")
        );
        drop(file);
    }

    #[test]
    fn closed_fd_is_reported_as_not_open() {
        // An fd number far above anything the test process opens.
        let fd = 1_000_000;
        let mut listeners = Listeners::from_parts(vec![(fd, "x")]);
        let text = error_text(listeners.take_tcp_listener(0));
        assert_eq!(
            text,
            format!("fd {fd} is not a TCP listener (it is not open)")
        );
    }

    #[test]
    fn notify_addresses() {
        let path = socket_addr(OsStr::new("/run/notify")).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/notify"))
        );
        let abstract_addr = socket_addr(OsStr::new("@supervisor/7")).unwrap();
        assert_eq!(abstract_addr.as_abstract_name(), Some(&b"supervisor/7"[..]));
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            let text = error_text(socket_addr(OsStr::new(bad)));
            assert!(text.contains("unsupported address"), "{text}");
        }
    }

    // notify() itself reads the process environment, which tests must not
    // change while other test threads read it; send_notify is everything
    // after the lookup.
    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let dir = TempDir::new("notify");
        let path = dir.0.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send_notify(path.as_os_str(), &status_message("two\nlines\r")).unwrap();
        send_notify(path.as_os_str(), READY).unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=two lines ");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("supervisor-child-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send_notify(OsStr::new(&format!("@{name}")), STOPPING).unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn sending_to_a_missing_socket_names_it() {
        let text = error_text(send_notify(OsStr::new("/nonexistent/notify.sock"), READY));
        assert!(
            text.starts_with("send to NOTIFY_SOCKET=/nonexistent/notify.sock: "),
            "{text}"
        );
    }
}
