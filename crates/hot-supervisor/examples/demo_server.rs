//! Demo HTTP/1.1 server built on `supervisor_child` and its drain kit
//! (`supervisor_child::drain`): the fixture of the integration tests and
//! the server of the README demo.
//!
//! It serves on the listener it inherits (TCP or unix), answers every request
//! with `generation <G> pid <PID>` (and `/healthz` with 200 `ready` or 503
//! `draining`), and on SIGTERM or SIGINT drains without losing a request,
//! all of it the kit's doing:
//!
//! 1. the accept loop stops and closes its copy of the listener (never
//!    `shutdown(2)`: the socket is shared with the supervisor and the next
//!    generation, which keeps accepting from the same queue);
//! 2. `STOPPING=1` goes to the notify socket, then `STATUS=` progress;
//! 3. a request in flight is answered with `Connection: close`;
//! 4. an idle keep-alive connection gets `--idle-grace` to send one more
//!    request (answered with `Connection: close`), else it is closed;
//! 5. every close is a lingering close, so a late client byte cannot turn it
//!    into a reset;
//! 6. the process exits 0 once every connection is closed, or 1 when the
//!    drain deadline (the supervisor's drain timeout less a margin) passes
//!    first. A second stop signal exits at once (status 128 + signal).
//!
//! It must not be started by hand: without inherited listeners it exits 1.

#[path = "common/mod.rs"]
mod common;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::{SigHandler, Signal, signal};

use hot_supervisor::duration;
use supervisor_child::drain::{self, Connection, Drain, Health};
use supervisor_child::{self as child, Listeners};

use common::{Stream, fired, head_end, poll_timeout};

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long a started request may stall between reads, and how long a
/// response write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = drain::DEFAULT_LINGER;
/// Connection threads need little stack: buffers live on the heap.
const CONNECTION_STACK: usize = 256 * 1024;

/// Demo HTTP server for the supervisor: serves `generation <G> pid <PID>` on
/// the inherited listener and drains gracefully on SIGTERM/SIGINT.
#[derive(Parser, Debug)]
#[command(
    name = "demo_server",
    after_help = "Exit status: 0 after a graceful drain, 1 on a setup error (no inherited \
                  listener, --fail-at-start) or when the drain deadline passed, 2 on a usage \
                  error, 128+N when a second signal N forced the exit.\n\
                  Signals: SIGTERM or SIGINT start the drain; a second one exits at once.\n\
                  Environment: SUPERVISOR_DRAIN_TIMEOUT_MS (the supervisor's drain timeout) \
                  bounds the drain, less a margin."
)]
struct Args {
    /// Processing delay added to every request (e.g. 50ms, 1s); a request's
    /// `?delay=MS` overrides it.
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "0")]
    delay: Duration,

    /// Serve the inherited listener with this LISTEN_FDNAMES name [default:
    /// the first one].
    #[arg(long, value_name = "NAME")]
    listener: Option<String>,

    /// While draining, how long an idle keep-alive connection may take to
    /// send one more request before it is closed.
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "1s")]
    idle_grace: Duration,

    /// Print an error and exit 1 at once, before ready (a broken release).
    #[arg(long)]
    fail_at_start: bool,

    /// Serve, but never send READY=1.
    #[arg(long)]
    never_ready: bool,

    /// Ignore SIGTERM and SIGINT entirely (only SIGKILL stops the server).
    #[arg(long)]
    ignore_sigterm: bool,

    /// Extra line appended to every response body.
    #[arg(long, value_name = "TEXT")]
    body: Option<String>,
}

/// One line on stderr, in one write(2), so that it never interleaves with
/// the supervisor's lines on a shared pipe.
macro_rules! log {
    ($($arg:tt)*) => {{
        let line = format!("demo_server[{}]: {}\n", std::process::id(), format_args!($($arg)*));
        let _ = io::stderr().write_all(line.as_bytes());
    }};
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.fail_at_start {
        log!("error: --fail-at-start: exiting before ready");
        return ExitCode::FAILURE;
    }
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            log!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The drain: the kit's, with its stop signals unless they are ignored.
fn install_drain(args: &Args) -> Result<Drain, String> {
    let builder = Drain::builder().idle_grace(args.idle_grace);
    if !args.ignore_sigterm {
        return builder
            .install()
            .map_err(|err| format!("install the drain: {err}"));
    }
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: SIG_IGN installs no handler code, so nothing can run in
        // signal context.
        unsafe { signal(sig, SigHandler::SigIgn) }.map_err(|err| format!("ignore {sig}: {err}"))?;
    }
    builder
        .signals(&[])
        .install()
        .map_err(|err| format!("install the drain: {err}"))
}

fn run(args: Args) -> Result<ExitCode, String> {
    let mut listeners = Listeners::from_env().map_err(|err| err.to_string())?;
    if listeners.is_empty() {
        return Err(
            "no inherited listener (LISTEN_FDS/LISTEN_PID not set for this process): \
                    run me under the supervisor"
                .to_owned(),
        );
    }
    let (index, fd, name) = match &args.listener {
        None => listeners.names().next(),
        Some(wanted) => listeners.names().find(|(_, _, name)| name == wanted),
    }
    .map(|(index, fd, name)| (index, fd, name.to_owned()))
    .ok_or_else(|| {
        let names: Vec<String> = listeners
            .names()
            .map(|(_, _, name)| format!("{name:?}"))
            .collect();
        format!(
            "no inherited listener named {:?} (have {})",
            args.listener.as_deref().unwrap_or_default(),
            names.join(", ")
        )
    })?;
    let listener = take_listener(&mut listeners, index)?;
    // O_NONBLOCK lives on the open file description, so this changes the
    // socket for every process holding it. That is fine for the processes
    // that accept from it (each generation of this server polls first and
    // treats EAGAIN as "another process won the race"); the supervisor only
    // holds it.
    listener
        .set_nonblocking(true)
        .map_err(|err| format!("make fd {fd} nonblocking: {err}"))?;

    let drain = install_drain(&args)?;
    let generation = child::generation().unwrap_or(0);
    log!(
        "generation {generation} serving on fd {fd} {name:?} ({listener}); drain deadline {}ms",
        drain.deadline().as_millis()
    );
    let shared = Shared {
        generation,
        delay: args.delay,
        extra_body: args.body,
        drain,
    };
    if !args.never_ready {
        if let Err(err) = shared.drain.ready() {
            log!("warning: send READY=1: {err}");
        }
        if let Err(err) = child::status(&format!("serving generation {generation}")) {
            log!("warning: send STATUS: {err}");
        }
    }
    let shared = Arc::new(shared);
    loop {
        match shared.drain.wait_acceptable(&listener) {
            Ok(true) => accept_ready(&listener, &shared),
            Ok(false) => break,
            Err(err) => {
                log!("warning: poll listener: {err}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // Dropping closes only this process's copy; the supervisor's copy keeps
    // the socket and its queue alive for the next generation.
    drop(listener);
    let (requests, connections) = shared.drain.in_flight();
    log!(
        "signal {}: stopped accepting; {requests} request(s) in flight, {connections} connection(s) open",
        shared.drain.signal().unwrap_or(0)
    );
    let outcome = shared.drain.wait();
    log!("{outcome}");
    Ok(if outcome.is_drained() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn take_listener(listeners: &mut Listeners, index: usize) -> Result<Listener, String> {
    match listeners.take_tcp_listener(index) {
        Ok(Some(listener)) => Ok(Listener::Tcp(listener)),
        Ok(None) => Err(format!("listener #{index} is already taken")),
        Err(tcp_err) => match listeners.take_unix_listener(index) {
            Ok(Some(listener)) => Ok(Listener::Unix(listener)),
            Ok(None) => Err(format!("listener #{index} is already taken")),
            // Both failed for the same reason; the TCP message says what
            // the fd really is.
            Err(_) => Err(tcp_err.to_string()),
        },
    }
}

/// State shared by the acceptor and connection threads.
struct Shared {
    generation: u64,
    delay: Duration,
    extra_body: Option<String>,
    drain: Drain,
}

/// Accepts until the queue is empty (or another process emptied it first).
fn accept_ready(listener: &Listener, shared: &Arc<Shared>) {
    while shared.drain.accepting() {
        match listener.accept() {
            Ok(conn) => spawn_connection(conn, shared),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(err) => {
                // EMFILE and friends: back off instead of spinning on a
                // readable listener.
                log!("warning: accept: {err}");
                thread::sleep(Duration::from_millis(100));
                return;
            }
        }
    }
}

fn spawn_connection(conn: Stream, shared: &Arc<Shared>) {
    // Linux does not pass O_NONBLOCK from the listener to accepted sockets,
    // but other systems do; connections use blocking I/O after poll.
    if let Err(err) = conn.configure() {
        log!("warning: configure connection: {err}");
        return;
    }
    // Counted from here, so the drain waits for it.
    let connection = shared.drain.connection();
    let thread_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("connection".to_owned())
        .stack_size(CONNECTION_STACK)
        .spawn(move || serve(conn, connection, &thread_shared));
    if let Err(err) = spawned {
        log!("warning: spawn connection thread: {err}");
    }
}

/// Serves one connection until it is closed, by either side.
fn serve(mut conn: Stream, mut connection: Connection, shared: &Shared) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let request = match read_request(&mut conn, &mut buf, &mut connection) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(RequestError::Malformed(reason)) => {
                let _ = write_bad_request(&mut conn, reason);
                break;
            }
            Err(RequestError::Io) => return,
        };
        let _in_flight = connection.request();
        if skip_body(&mut conn, &mut buf, request.content_length).is_err() {
            return;
        }
        thread::sleep(request.delay.unwrap_or(shared.delay));
        // Checked after the processing delay, so a request in flight when
        // the drain starts is still answered, with the close announced.
        let close = !request.keep_alive || connection.close_after_response();
        let health = request.health.then(|| shared.drain.health());
        if write_response(&mut conn, shared, &request, health, close).is_err() {
            return;
        }
        if close {
            break;
        }
    }
    drain::lingering_close(conn, LINGER);
}

struct Request {
    head_only: bool,
    /// `GET /healthz`: the drain's health state.
    health: bool,
    keep_alive: bool,
    content_length: u64,
    delay: Option<Duration>,
}

enum RequestError {
    /// Answer 400 with this reason, then close.
    Malformed(&'static str),
    /// The connection failed or stalled: close it without a response.
    Io,
}

/// Reads the next request head into `buf` (which may already hold it, when
/// the client pipelines) and removes it from there.
///
/// `Ok(None)` means close without a response: the client closed between
/// requests, or stayed idle past the drain's grace period.
fn read_request(
    conn: &mut Stream,
    buf: &mut Vec<u8>,
    connection: &mut Connection,
) -> Result<Option<Request>, RequestError> {
    loop {
        if let Some(end) = head_end(buf) {
            if end > MAX_HEAD {
                return Err(RequestError::Malformed("request head too large"));
            }
            let request = parse_head(&buf[..end]).map_err(RequestError::Malformed)?;
            buf.drain(..end);
            return Ok(Some(request));
        }
        if buf.len() > MAX_HEAD {
            return Err(RequestError::Malformed("request head too large"));
        }
        if buf.is_empty() {
            // Between requests: the kit decides how long to wait.
            if !connection
                .wait_for_request(&*conn)
                .map_err(|_| RequestError::Io)?
            {
                return Ok(None);
            }
        } else if !wait_readable(conn.as_fd(), IO_TIMEOUT) {
            return Err(RequestError::Io);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(RequestError::Io),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if is_transient(&err) => {}
            Err(_) => return Err(RequestError::Io),
        }
    }
}

/// Waits up to `timeout` for `fd` to become readable (data, EOF or error:
/// the read that follows tells which).
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(left)) {
            Ok(0) if left.is_zero() => return false,
            Ok(_) if fired(&fds[0]) => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}

fn skip_body(conn: &mut Stream, buf: &mut Vec<u8>, length: u64) -> io::Result<()> {
    let buffered = usize::try_from(length).unwrap_or(usize::MAX).min(buf.len());
    buf.drain(..buffered);
    let mut left = length - buffered as u64;
    let mut chunk = [0u8; 8192];
    while left > 0 {
        if !wait_readable(conn.as_fd(), IO_TIMEOUT) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let want = usize::try_from(left)
            .unwrap_or(chunk.len())
            .min(chunk.len());
        match conn.read(&mut chunk[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => left -= n as u64,
            Err(err) if is_transient(&err) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn parse_head(head: &[u8]) -> Result<Request, &'static str> {
    let head = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    let mut lines = head
        .lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().ok_or("empty request")?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || target.is_empty() {
        return Err("malformed request line");
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("unsupported HTTP version"),
    };
    let http11 = keep_alive;
    let mut content_length = None;
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("malformed header line")?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err("malformed header name");
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<u64>()
                .map_err(|_| "malformed Content-Length")?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err("conflicting Content-Length headers");
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("Transfer-Encoding is not supported");
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                }
            }
        }
    }
    // HTTP/1.0 keep-alive is an opt-in this server does not offer.
    keep_alive &= http11;
    Ok(Request {
        head_only: method == "HEAD",
        health: target == "/healthz",
        keep_alive,
        content_length: content_length.unwrap_or(0),
        delay: query_delay(target)?,
    })
}

/// The `delay=MS` query parameter of a request target, if any.
fn query_delay(target: &str) -> Result<Option<Duration>, &'static str> {
    let Some((_, query)) = target.split_once('?') else {
        return Ok(None);
    };
    let mut delay = None;
    for pair in query.split('&') {
        if let Some(ms) = pair.strip_prefix("delay=") {
            let ms = ms
                .parse::<u64>()
                .map_err(|_| "malformed delay parameter (want ms)")?;
            delay = Some(Duration::from_millis(ms));
        }
    }
    Ok(delay)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn write_response(
    conn: &mut Stream,
    shared: &Shared,
    request: &Request,
    health: Option<Health>,
    close: bool,
) -> io::Result<()> {
    let (status, body) = match health {
        Some(health) if health.http_status() == 200 => ("200 OK", format!("{health}\n")),
        Some(health) => ("503 Service Unavailable", format!("{health}\n")),
        None => {
            let mut body = format!(
                "generation {} pid {}\n",
                shared.generation,
                std::process::id()
            );
            if let Some(extra) = &shared.extra_body {
                body.push_str(extra);
                body.push('\n');
            }
            ("200 OK", body)
        }
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    if !request.head_only {
        response.push_str(&body);
    }
    conn.write_all(response.as_bytes())
}

fn write_bad_request(conn: &mut Stream, reason: &str) -> io::Result<()> {
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes())
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}

/// The inherited listener, TCP or unix.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(listener) => listener.set_nonblocking(nonblocking),
            Listener::Unix(listener) => listener.set_nonblocking(nonblocking),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(listener) => listener.accept().map(|(stream, _)| Stream::Tcp(stream)),
            Listener::Unix(listener) => listener.accept().map(|(stream, _)| Stream::Unix(stream)),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(listener) => listener.as_fd(),
            Listener::Unix(listener) => listener.as_fd(),
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(addr) => write!(f, "{addr}"),
                Err(_) => f.write_str("TCP"),
            },
            Listener::Unix(listener) => {
                match listener
                    .local_addr()
                    .ok()
                    .as_ref()
                    .and_then(|addr| addr.as_pathname())
                {
                    Some(path) => write!(f, "unix:{}", path.to_string_lossy()),
                    None => f.write_str("unix"),
                }
            }
        }
    }
}

/// Setup of an accepted connection.
impl Stream {
    fn configure(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => {
                stream.set_nonblocking(false)?;
                // Responses are small and written whole: send them at once.
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(IO_TIMEOUT))
            }
            Stream::Unix(stream) => {
                stream.set_nonblocking(false)?;
                stream.set_write_timeout(Some(IO_TIMEOUT))
            }
        }
    }
}
