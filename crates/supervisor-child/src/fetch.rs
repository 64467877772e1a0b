//! Listening sockets from a running supervisor, over its control socket
//! (`SCM_RIGHTS`): for processes the supervisor did not start (a debugging
//! session, a sidecar: what `supervisor fds` does), and for a server that
//! needs a listener it did not have at start ([`open_listener`]).
//!
//! # The wire format
//!
//! One request per connection to the control socket, one line:
//! `fds` (every listener), `fds NAME [NAME...]` (those, in that order) or
//! `listen NAME ADDR` (open a listener, or find the one of that name). The
//! answer is either `error TEXT\n` with no file descriptor, or the bytes
//! `ok N\n` followed by N lines `NAME KIND ADDRESS\n` (KIND `tcp`, `udp` or
//! `unix`; ADDRESS the rest of the line, such that `KIND:ADDRESS` is a
//! `--listen` address), with N file descriptors attached as `SCM_RIGHTS`
//! in the same order: fd k belongs to line k. They come in batches of at
//! most 253 (`SCM_MAX_FD`), each batch's lines as the data of the message
//! that carries its fds; a reader must not rely on that grouping, only on
//! the order. Read with `recvmsg` (room for 253 fds of ancillary data
//! every time, `MSG_CMSG_CLOEXEC`) until N lines and N fds are in; the
//! supervisor then closes the connection. A connection that closes before,
//! or a message whose ancillary data was truncated (`MSG_CTRUNC`: the
//! kernel has closed the fds that did not fit), is a failure.
//!
//! Only root, the supervisor's own user and the user its children run as
//! (`--user`) are served; the children's user only `fds` and `listen`.
//!
//! # The child's channel
//!
//! A process the supervisor started has a channel of its own
//! ([`SUPERVISOR_CHANNEL_FD`]): an inherited socket, already connected,
//! on which the same `fds` request is answered with its own generation's
//! sockets (the ones it inherited at fds 3, 4, ...), whatever user it runs
//! as, and every other request is refused. [`fetch_listeners`] uses it when
//! asked for the supervisor that started this process (the path in
//! `SUPERVISOR_CONTROL`), one request at a time in the process.

use std::ffi::c_int;
use std::io::{self, Write};
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::fetch::{Answer, SCM_MAX_FD, parse_fd_line, parse_fds_header};
use crate::protocol::{SUPERVISOR_CHANNEL_FD, SUPERVISOR_CONTROL};

/// How long a request waits for each part of its answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest answer read (1,000 listeners with long names fit easily).
const MAX_ANSWER: usize = 64 << 20;

/// A listening socket received from the supervisor.
#[derive(Debug)]
pub struct Fetched {
    /// Its name (what `LISTEN_FDNAMES` says in the children).
    pub name: String,
    /// `tcp`, `udp` or `unix`.
    pub kind: String,
    /// What it is bound to: `127.0.0.1:8080`, `[::1]:8080`, `/run/x.sock`,
    /// `@abstract`; `KIND:ADDRESS` is a `--listen` address.
    pub address: String,
    /// The socket (close-on-exec).
    pub fd: OwnedFd,
}

/// The control socket named by [`SUPERVISOR_CONTROL`] in this process's
/// environment (the supervisor sets it for its children), if it is an
/// absolute path.
///
/// # Example
///
/// ```
/// match supervisor_child::control_path() {
///     Some(path) => eprintln!("supervisor at {}", path.display()),
///     None => eprintln!("not started by a supervisor"),
/// }
/// ```
pub fn control_path() -> Option<PathBuf> {
    std::env::var_os(SUPERVISOR_CONTROL)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Ask the supervisor at `control` for its listening sockets: the ones
/// named, in that order, or every one when `names` is empty. In steer mode
/// each is the socket that takes new connections now (see the README for
/// what becomes of it at the next reload).
///
/// # Errors
/// The supervisor cannot be reached, refuses (an unknown name, another
/// user), or the transfer fails midway; every fd received so far is
/// closed.
///
/// # Example
///
/// ```no_run
/// use std::net::TcpListener;
///
/// // A process the supervisor did not start (a debugging shell, a
/// // sidecar) asks for the listener named "http".
/// let control = supervisor_child::control_path().expect("SUPERVISOR_CONTROL");
/// let mut fetched = supervisor_child::fetch_listeners(&control, &["http"])?;
/// let http = fetched.remove(0);
/// assert_eq!(http.kind, "tcp");
/// let listener = TcpListener::from(http.fd);
/// # let _ = listener;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn fetch_listeners(control: &Path, names: &[&str]) -> io::Result<Vec<Fetched>> {
    let mut line = String::from("fds");
    let own = control_path().is_some_and(|p| p == control);
    for name in names {
        if name.is_empty() || name.contains([' ', '\n', '\r']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid listener name {name:?}"),
            ));
        }
        line.push(' ');
        line.push_str(name);
    }
    if own && let Some(fd) = channel() {
        return channel_request(fd, &line);
    }
    request(control, &line)
}

/// This process's channel to the supervisor that started it
/// ([`SUPERVISOR_CHANNEL_FD`]), if the variable names an open socket.
pub fn channel() -> Option<RawFd> {
    let fd: RawFd = std::env::var(SUPERVISOR_CHANNEL_FD).ok()?.parse().ok()?;
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    (fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).then_some(fd)
}

/// One process-wide request at a time on the channel: answers come in
/// order on the one socket.
static CHANNEL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Send `line` on the channel `fd`; read the listeners of the answer.
fn channel_request(fd: RawFd, line: &str) -> io::Result<Vec<Fetched>> {
    let _one = CHANNEL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: `fd` is open (checked by `channel`) and stays open for the
    // duration of this call, which only duplicates it.
    let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    let stream = UnixStream::from(dup);
    let answer = converse(stream, line, 0, "the supervisor's channel")?;
    listeners(answer, "the supervisor's channel")
}

/// Ask the supervisor at `control` to open a listener named `name` on
/// `addr` (a `--listen` address: `tcp:0.0.0.0:9090`, `udp:127.0.0.1:5353`,
/// `unix:/run/x.sock`), bound with its privileges and kept for every later
/// generation; or, if it has one of that name on that address, the same
/// socket again.
///
/// # Errors
/// As [`fetch_listeners`]; also a name bound elsewhere (the message says
/// both addresses), or an address that cannot be bound.
///
/// # Example
///
/// ```no_run
/// use std::net::TcpListener;
///
/// // A metrics port opened at run time, bound by the supervisor (which may
/// // bind port 80 when this process may not) and kept for every later
/// // generation.
/// let control = supervisor_child::control_path().expect("SUPERVISOR_CONTROL");
/// let metrics = supervisor_child::open_listener(&control, "metrics", "tcp:127.0.0.1:9090")?;
/// let listener = TcpListener::from(metrics.fd);
/// # let _ = listener;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn open_listener(control: &Path, name: &str, addr: &str) -> io::Result<Fetched> {
    if name.is_empty() || name.contains([' ', '\n', '\r']) || addr.contains(['\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid listener {name:?} or address {addr:?}"),
        ));
    }
    let mut got = request(control, &format!("listen {name} {addr}"))?;
    match (got.pop(), got.is_empty()) {
        (Some(f), true) => Ok(f),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the supervisor sent more than one listener for one listen request",
        )),
    }
}

/// Send one request line; read the listeners of the answer.
fn request(control: &Path, line: &str) -> io::Result<Vec<Fetched>> {
    let answer = exchange(control, line, 0)?;
    listeners(answer, &control.display().to_string())
}

/// The listeners of an answer from `shown`.
fn listeners(answer: Exchange, shown: &str) -> io::Result<Vec<Fetched>> {
    let text =
        String::from_utf8(answer.data).map_err(|_| invalid(format!("{shown}: not UTF-8")))?;
    text.lines()
        .zip(answer.fds)
        .map(|(l, fd)| {
            let (name, kind, address) = parse_fd_line(l).map_err(invalid)?;
            Ok(Fetched {
                name,
                kind,
                address,
                fd,
            })
        })
        .collect()
}

/// An answer that carried file descriptors.
#[derive(Debug)]
pub struct Exchange {
    /// What followed the `ok N` line: the preamble lines, then one line per
    /// fd.
    pub data: Vec<u8>,
    /// The N fds, in order.
    pub fds: Vec<OwnedFd>,
    /// The connection, still open.
    pub stream: UnixStream,
}

/// Send one request line to the control socket at `control` and read an
/// answer in the format of `fds` (`ok N`, `preamble` whole lines, then N
/// lines with the N fds attached; or `error TEXT`). Every fd received is
/// closed if anything goes wrong. The building block of [`fetch_listeners`]
/// and [`open_listener`], for requests of the same format.
///
/// # Errors
/// The connection or the transfer failed; the supervisor answered
/// `error TEXT` (the error's message is TEXT).
///
/// # Example
///
/// ```no_run
/// // What fetch_listeners does: every listener, no preamble.
/// let control = supervisor_child::control_path().expect("SUPERVISOR_CONTROL");
/// let answer = supervisor_child::exchange(&control, "fds", 0)?;
/// for (line, fd) in String::from_utf8_lossy(&answer.data).lines().zip(&answer.fds) {
///     eprintln!("{line} (fd {fd:?})");
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn exchange(control: &Path, line: &str, preamble: usize) -> io::Result<Exchange> {
    let shown = control.display();
    let stream = UnixStream::connect(control)
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {shown}: {e}")))?;
    check_peer(&stream).map_err(|e| io::Error::new(e.kind(), format!("{shown}: {e}")))?;
    converse(stream, line, preamble, &shown.to_string())
}

/// Send `line` on `stream`, read the answer (see [`exchange`]).
fn converse(
    mut stream: UnixStream,
    line: &str,
    preamble: usize,
    shown: &str,
) -> io::Result<Exchange> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut data = Vec::new();
    // Every fd received is owned here, so that any error closes them all.
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut expected: Option<usize> = None;
    // The lines in `data[..counted]` (after the header): each byte is
    // looked at once, however large the answer (a takeover's preamble is
    // hundreds of kilobytes).
    let (mut lines, mut counted) = (0, 0);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        if expected.is_none()
            && let Some(pos) = data.iter().position(|&b| b == b'\n')
        {
            let header = String::from_utf8_lossy(&data[..pos]).into_owned();
            match parse_fds_header(&header).map_err(|e| invalid(format!("{shown}: {e}")))? {
                Answer::Ok(n) => expected = Some(n),
                Answer::Error(text) => return Err(io::Error::other(text)),
            }
            data.drain(..=pos);
        }
        if let Some(n) = expected {
            lines += data[counted..].iter().filter(|&&b| b == b'\n').count();
            counted = data.len();
            if lines > n + preamble || fds.len() > n {
                return Err(invalid(format!(
                    "{shown} sent {lines} lines and {} fds for {n} sockets",
                    fds.len()
                )));
            }
            if lines == n + preamble && fds.len() == n {
                break;
            }
        }
        if data.len() > MAX_ANSWER {
            return Err(invalid(format!(
                "{shown} sent more than {MAX_ANSWER} bytes"
            )));
        }
        let got = recv_with_fds(stream.as_raw_fd(), &mut buf, &mut fds)?;
        if got == 0 {
            let what = match expected {
                Some(n) => format!("after {} of {n} sockets", fds.len()),
                None => "without answering".to_string(),
            };
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{shown} closed the connection {what}"),
            ));
        }
        data.extend_from_slice(&buf[..got]);
    }
    Ok(Exchange { data, fds, stream })
}

/// Whoever listens at the path must be root or this process's own user:
/// anyone can create a socket in a shared directory, and sockets from a
/// stranger must not be believed.
fn check_peer(stream: &UnixStream) -> io::Result<()> {
    // SAFETY: an all-zero ucred is a valid value to be overwritten.
    let mut cred: libc::ucred = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals; `len` holds the size of
    // `cred`, which the kernel fills in up to that size.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if cred.uid != 0 && cred.uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the socket belongs to uid {} (pid {}), not to root or uid {me}: not a supervisor of ours",
                cred.uid, cred.pid
            ),
        ));
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// One `recvmsg` with room for [`SCM_MAX_FD`] fds (`MSG_CMSG_CLOEXEC`):
/// the bytes read into `buf`, every fd received appended to `fds` (also
/// when the message turns out truncated, so that they are closed).
fn recv_with_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let payload = (SCM_MAX_FD * mem::size_of::<c_int>()) as u32;
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    // u64 elements: the buffer is aligned for a `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one (null pointers, zero
    // lengths); the fields used are set below.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points to `iov` (over `buf`) and `control`, all
        // live and writable for the lengths given, for the whole call.
        let r = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: `msg` was filled in by recvmsg; CMSG_FIRSTHDR reads its
    // control fields only.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !c.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies
        // within `control`, which the kernel filled in.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: as above; CMSG_DATA points just past the header.
            let data = unsafe { libc::CMSG_DATA(c) };
            let len = h.cmsg_len as usize - (data as usize - c as usize);
            for k in 0..len / mem::size_of::<c_int>() {
                // SAFETY: the k-th int of the data, within `cmsg_len`;
                // the buffer need not be aligned for c_int reads.
                let raw = unsafe { data.cast::<c_int>().add(k).read_unaligned() };
                // SAFETY: SCM_RIGHTS installed this fd in our table just
                // now; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `c` is a header of `msg`'s control buffer.
        c = unsafe { libc::CMSG_NXTHDR(&raw const msg, c) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(invalid(
            "the file descriptors did not fit (MSG_CTRUNC): some were closed by the kernel".into(),
        ));
    }
    Ok(n)
}
