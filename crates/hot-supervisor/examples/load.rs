//! Small HTTP/1.1 load generator for the README demo and benchmarks.
//!
//! Each connection is a thread sending keep-alive `GET` requests back to
//! back; it reconnects when a response says `Connection: close` or the server
//! closed the idle connection after a complete response. A request that was
//! sent and got no complete response is a failure: that is exactly what a
//! lossless reload must never cause. The report counts requests by outcome,
//! latency percentiles, and the `generation <G>` values seen in response
//! bodies (as served by `demo_server`). A request's latency runs from its
//! write, or from the connect when it needs a new connection, to the end of
//! its response.
//!
//! It always ends: at `--duration`, after `--max-requests`, or on SIGINT /
//! SIGTERM (which abandon the requests in flight and report the rest).
//!
//! With `--samples FILE` it also writes every completed request (answered or
//! failed, not abandoned) as a line `start_offset_us latency_us ok`, where
//! the offset runs from the start of the run on the monotonic clock and `ok`
//! is 1 for a 2xx response, 0 otherwise. The file's first line, `# start
//! monotonic_ns=<N> realtime_ns=<N>`, gives that start on both clocks, so
//! the samples can be lined up with timestamps from other processes (the
//! benchmark uses it to cut latency into reload windows).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use serde::{Serialize, Serializer};

use hot_supervisor::duration;

use common::{Stream, fired, head_end, poll_timeout};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes kept per response, enough for `generation <G> pid <PID>`.
const BODY_KEEP: usize = 256;
/// Pause after a failure, so a down server is not hammered in a tight loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);

/// HTTP/1.1 keep-alive load generator.
#[derive(Parser, Debug)]
#[command(
    name = "load",
    after_help = "Output: a report on stdout (one JSON object with --json); progress on stderr.\n\
                  Exit status: 0 if every request got a 2xx response, 1 if any failed or got \
                  another status, 2 on a usage error.\n\
                  Signals: SIGINT or SIGTERM stop the run and print the report so far; \
                  a second one exits at once."
)]
struct Args {
    /// Server address: HOST:PORT, or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,

    /// Concurrent keep-alive connections (one thread each).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,

    /// How long to send requests (e.g. 500ms, 20s, 2m).
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "20s")]
    duration: Duration,

    /// Stop after this many requests in total.
    #[arg(long, value_name = "N")]
    max_requests: Option<u64>,

    /// Request path (may include a query, e.g. /?delay=5).
    #[arg(long, default_value = "/")]
    path: String,

    /// Longest wait for a connect, a write or each read of a response.
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "10s")]
    timeout: Duration,

    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,

    /// Print a progress line to stderr every second.
    #[arg(long)]
    progress: bool,

    /// Write one line per completed request to FILE: `start_offset_us
    /// latency_us ok` (offset from the run's start on the monotonic clock; ok
    /// is 1 for a 2xx response, else 0), after a `# start monotonic_ns=<N>
    /// realtime_ns=<N>` line.
    #[arg(long, value_name = "FILE")]
    samples: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{report}");
            }
            if report.stats.failed() == 0 && report.stats.non_2xx == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("load: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Report, String> {
    let target = Target::parse(&args.addr)?;
    if !args.path.starts_with('/') || args.path.contains(|c: char| c.is_whitespace()) {
        return Err(format!(
            "--path {:?} must start with / and hold no spaces",
            args.path
        ));
    }
    // Before any thread exists, so that only the signal thread takes them.
    let stop_signals = {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set
    };
    stop_signals
        .thread_block()
        .map_err(|err| format!("block signals: {err}"))?;

    // Created before the run, so that a bad path fails before any load.
    let mut samples_out = match &args.samples {
        Some(path) => Some(BufWriter::new(File::create(path).map_err(|err| {
            format!("create --samples file {}: {err}", path.display())
        })?)),
        None => None,
    };

    let (abort_wake, abort_trigger) =
        UnixStream::pair().map_err(|err| format!("create abort socket pair: {err}"))?;
    let shared = Arc::new(Shared {
        target,
        request: format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: supervisor-load\r\n\r\n",
            args.path,
            args.addr
                .strip_prefix("unix:")
                .map_or(args.addr.as_str(), |_| "localhost"),
        )
        .into_bytes(),
        timeout: args.timeout,
        max_requests: args.max_requests,
        stop: AtomicBool::new(false),
        abort_wake,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        keep_samples: samples_out.is_some(),
    });

    let (events, inbox) = mpsc::channel();
    {
        let events = events.clone();
        thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                let mut trigger = Some(abort_trigger);
                loop {
                    if let Ok(sig) = stop_signals.wait() {
                        if trigger.is_none() {
                            eprintln!("load: {sig} again: exiting");
                            std::process::exit(130);
                        }
                        eprintln!("load: {sig}: stopping");
                        // Queued before the workers can report back, so the
                        // main loop sees the interrupt first.
                        let _ = events.send(Event::Interrupted);
                        // Wakes every worker blocked on a response.
                        drop(trigger.take());
                    }
                }
            })
            .map_err(|err| format!("spawn signal thread: {err}"))?;
    }

    let start = Instant::now();
    let start_clocks = (
        clock_ns(libc::CLOCK_MONOTONIC),
        clock_ns(libc::CLOCK_REALTIME),
    );
    let mut workers = Vec::new();
    for index in 0..args.connections {
        let worker_shared = Arc::clone(&shared);
        let events = events.clone();
        let worker = thread::Builder::new()
            .name(format!("connection-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let stats = work(&worker_shared, start);
                let _ = events.send(Event::WorkerDone);
                stats
            });
        match worker {
            Ok(worker) => workers.push(worker),
            Err(err) => {
                shared.stop.store(true, Ordering::SeqCst);
                return Err(format!("spawn connection thread {index}: {err}"));
            }
        }
    }

    let deadline = start + args.duration;
    let mut next_tick = start + Duration::from_secs(1);
    let mut last_done = 0;
    let mut finished = 0;
    let mut interrupted = false;
    while finished < workers.len() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wake = if args.progress {
            deadline.min(next_tick)
        } else {
            deadline
        };
        match inbox.recv_timeout(wake - now) {
            Ok(Event::WorkerDone) => finished += 1,
            Ok(Event::Interrupted) => {
                interrupted = true;
                break;
            }
            Err(_) => {}
        }
        if args.progress && Instant::now() >= next_tick {
            let done = shared.done.load(Ordering::Relaxed);
            eprintln!(
                "[{:>4.0}s] {done} requests ({}/s), {} failed",
                start.elapsed().as_secs_f64(),
                done - last_done,
                shared.failed.load(Ordering::Relaxed)
            );
            last_done = done;
            next_tick += Duration::from_secs(1);
        }
    }
    // Requests already sent may finish (within --timeout) unless interrupted.
    shared.stop.store(true, Ordering::SeqCst);
    let mut stats = Stats::default();
    for worker in workers {
        let worker_stats = worker
            .join()
            .map_err(|_| "a connection thread panicked".to_owned())?;
        stats.merge(worker_stats);
    }
    if let (Some(out), Some(path)) = (samples_out.as_mut(), &args.samples) {
        write_samples(out, start_clocks, &mut stats.samples)
            .map_err(|err| format!("write --samples file {}: {err}", path.display()))?;
    }
    Ok(Report {
        stats,
        elapsed: start.elapsed(),
        connections: args.connections,
        interrupted,
    })
}

enum Event {
    WorkerDone,
    Interrupted,
}

/// Where to connect.
enum Target {
    Tcp(Vec<SocketAddr>),
    Unix(PathBuf),
}

impl Target {
    fn parse(addr: &str) -> Result<Target, String> {
        if let Some(path) = addr.strip_prefix("unix:") {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|err| format!("resolve --addr {addr}: {err}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("resolve --addr {addr}: no addresses"));
        }
        Ok(Target::Tcp(addrs))
    }

    fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        match self {
            Target::Tcp(addrs) => {
                let mut last = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(addr, timeout) {
                        Ok(stream) => {
                            stream.set_nodelay(true)?;
                            stream.set_write_timeout(Some(timeout))?;
                            return Ok(Stream::Tcp(stream));
                        }
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or_else(|| io::ErrorKind::AddrNotAvailable.into()))
            }
            Target::Unix(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_write_timeout(Some(timeout))?;
                Ok(Stream::Unix(stream))
            }
        }
    }
}

/// State shared by the workers and the main thread.
struct Shared {
    target: Target,
    request: Vec<u8>,
    timeout: Duration,
    max_requests: Option<u64>,
    /// No new requests once set.
    stop: AtomicBool,
    /// Readable (EOF) once the run is interrupted: abandons the requests in
    /// flight.
    abort_wake: UnixStream,
    /// Requests started, for `--max-requests`.
    issued: AtomicU64,
    /// Requests finished and failed so far, for `--progress`.
    done: AtomicU64,
    failed: AtomicU64,
    /// Record every completed request, for `--samples`.
    keep_samples: bool,
}

/// One connection's loop; returns its counts. `run_start` is the origin of
/// the sample offsets.
fn work(shared: &Shared, run_start: Instant) -> Stats {
    let mut stats = Stats::default();
    let mut stream: Option<Stream> = None;
    let mut buf = Vec::with_capacity(4096);
    while !shared.stop.load(Ordering::SeqCst) {
        if let Some(max) = shared.max_requests
            && shared.issued.fetch_add(1, Ordering::SeqCst) >= max
        {
            break;
        }
        // A server may close an idle keep-alive connection after a complete
        // response; that is no failure, but only if noticed before reusing
        // the connection.
        if stream
            .as_ref()
            .is_some_and(|stream| peer_closed(stream.as_fd()))
        {
            stream = None;
        }
        let start = Instant::now();
        let result = request_once(shared, &mut stream, &mut buf, &mut stats);
        match result {
            Ok(response) => {
                let latency = start.elapsed();
                stats.record(&response, latency);
                if shared.keep_samples {
                    let ok = (200..300).contains(&response.status);
                    stats.sample(start - run_start, latency, ok);
                }
                if response.close {
                    stream = None;
                }
            }
            Err(Failure::Aborted) => {
                stats.aborted += 1;
                break;
            }
            Err(Failure::Failed(kind, message)) => {
                if shared.keep_samples {
                    stats.sample(start - run_start, start.elapsed(), false);
                }
                stats.fail(kind, message);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                stream = None;
                thread::sleep(FAILURE_PAUSE);
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

fn request_once(
    shared: &Shared,
    stream: &mut Option<Stream>,
    buf: &mut Vec<u8>,
    stats: &mut Stats,
) -> Result<Response, Failure> {
    let stream = match stream {
        Some(stream) => stream,
        None => {
            let connected = shared.target.connect(shared.timeout).map_err(|err| {
                let kind = if err.kind() == io::ErrorKind::TimedOut {
                    FailureKind::Timeout
                } else {
                    FailureKind::Connect
                };
                Failure::Failed(kind, format!("connect: {err}"))
            })?;
            stats.connects += 1;
            buf.clear();
            stream.insert(connected)
        }
    };
    stream.write_all(&shared.request).map_err(|err| {
        let kind = if matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            FailureKind::Timeout
        } else {
            FailureKind::Write
        };
        Failure::Failed(kind, format!("write: {err}"))
    })?;
    read_response(stream, buf, shared)
}

struct Response {
    status: u16,
    /// The connection cannot carry another request.
    close: bool,
    /// The start of the body.
    body: Vec<u8>,
}

enum Failure {
    /// The run was interrupted while this request was in flight.
    Aborted,
    Failed(FailureKind, String),
}

#[derive(Clone, Copy, Debug)]
enum FailureKind {
    Connect,
    Write,
    Read,
    Timeout,
    Protocol,
}

impl FailureKind {
    const ALL: [FailureKind; 5] = [
        FailureKind::Connect,
        FailureKind::Write,
        FailureKind::Read,
        FailureKind::Timeout,
        FailureKind::Protocol,
    ];

    fn name(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Write => "write",
            FailureKind::Read => "read",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
        }
    }
}

fn protocol(message: &str) -> Failure {
    Failure::Failed(FailureKind::Protocol, message.to_owned())
}

/// Reads one response; leaves any bytes after it in `buf`.
fn read_response(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    shared: &Shared,
) -> Result<Response, Failure> {
    let head_len = loop {
        if let Some(end) = head_end(buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(protocol("response head too large"));
        }
        if read_more(stream, buf, shared)? == 0 {
            let message = if buf.is_empty() {
                "EOF before a response"
            } else {
                "EOF inside the response head"
            };
            return Err(Failure::Failed(FailureKind::Read, message.to_owned()));
        }
    };
    let head = parse_response_head(&buf[..head_len])?;
    let mut close = head.close;
    let (body, consumed) = if head.chunked {
        read_chunked(stream, buf, head_len, shared)?
    } else if let Some(length) = head.content_length {
        let end = head_len
            .checked_add(usize::try_from(length).map_err(|_| protocol("huge Content-Length"))?)
            .ok_or_else(|| protocol("huge Content-Length"))?;
        while buf.len() < end {
            if read_more(stream, buf, shared)? == 0 {
                return Err(Failure::Failed(
                    FailureKind::Read,
                    "EOF inside the body".to_owned(),
                ));
            }
        }
        (buf[head_len..end.min(head_len + BODY_KEEP)].to_vec(), end)
    } else {
        // No length: the body runs to EOF, and the connection ends with it.
        close = true;
        while read_more(stream, buf, shared)? > 0 {}
        (
            buf[head_len..buf.len().min(head_len + BODY_KEEP)].to_vec(),
            buf.len(),
        )
    };
    buf.drain(..consumed);
    Ok(Response {
        status: head.status,
        close,
        body,
    })
}

/// Returns the kept start of the body and the index just past the chunked
/// body (trailers included).
fn read_chunked(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    mut pos: usize,
    shared: &Shared,
) -> Result<(Vec<u8>, usize), Failure> {
    let mut body = Vec::new();
    loop {
        let size_end = line_end(stream, buf, pos, shared)?;
        let line =
            std::str::from_utf8(&buf[pos..size_end]).map_err(|_| protocol("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| protocol("bad chunk size"))?;
        pos = skip_newline(buf, size_end);
        if size == 0 {
            // Trailer lines until an empty one.
            loop {
                let end = line_end(stream, buf, pos, shared)?;
                let empty = end == pos;
                pos = skip_newline(buf, end);
                if empty {
                    return Ok((body, pos));
                }
            }
        }
        let data_end = pos
            .checked_add(size)
            .ok_or_else(|| protocol("bad chunk size"))?;
        while buf.len() < data_end + 2 {
            if read_more(stream, buf, shared)? == 0 {
                return Err(Failure::Failed(
                    FailureKind::Read,
                    "EOF inside the body".to_owned(),
                ));
            }
        }
        let keep = BODY_KEEP.saturating_sub(body.len()).min(size);
        body.extend_from_slice(&buf[pos..pos + keep]);
        pos = skip_newline(buf, data_end);
    }
}

/// Index of the `\r\n` (or `\n`) ending the line that starts at `pos`,
/// reading more as needed.
fn line_end(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    pos: usize,
    shared: &Shared,
) -> Result<usize, Failure> {
    loop {
        if let Some(offset) = buf[pos..].iter().position(|&b| b == b'\n') {
            let end = pos + offset;
            return Ok(if end > pos && buf[end - 1] == b'\r' {
                end - 1
            } else {
                end
            });
        }
        if buf.len() - pos > MAX_HEAD {
            return Err(protocol("chunk line too long"));
        }
        if read_more(stream, buf, shared)? == 0 {
            return Err(Failure::Failed(
                FailureKind::Read,
                "EOF inside the body".to_owned(),
            ));
        }
    }
}

fn skip_newline(buf: &[u8], at: usize) -> usize {
    if buf.get(at) == Some(&b'\r') {
        at + 2
    } else {
        at + 1
    }
}

/// Waits (up to the timeout) and reads once; `Ok(0)` is EOF.
fn read_more(stream: &mut Stream, buf: &mut Vec<u8>, shared: &Shared) -> Result<usize, Failure> {
    let deadline = Instant::now() + shared.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.abort_wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, poll_timeout(left)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(Failure::Failed(FailureKind::Read, format!("poll: {err}"))),
        }
        if fired(&fds[1]) {
            return Err(Failure::Aborted);
        }
        if !fired(&fds[0]) {
            if Instant::now() >= deadline {
                return Err(Failure::Failed(
                    FailureKind::Timeout,
                    format!("no response data for {:?}", shared.timeout),
                ));
            }
            continue;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Failure::Failed(FailureKind::Read, format!("read: {err}"))),
        }
    }
}

struct ResponseHead {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

fn parse_response_head(head: &[u8]) -> Result<ResponseHead, Failure> {
    let head = std::str::from_utf8(head).map_err(|_| protocol("response head is not UTF-8"))?;
    let mut lines = head
        .lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or_else(|| protocol("malformed status line"))?;
    let (mut close, keep_alive_default) = match version {
        "HTTP/1.1" => (false, true),
        "HTTP/1.0" => (true, false),
        _ => return Err(protocol("malformed status line")),
    };
    let mut content_length = None;
    let mut chunked = false;
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(protocol("malformed header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| protocol("malformed Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .to_ascii_lowercase()
                .split(',')
                .any(|coding| coding.trim() == "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    close = true;
                } else if option.eq_ignore_ascii_case("keep-alive") && !keep_alive_default {
                    close = false;
                }
            }
        }
    }
    Ok(ResponseHead {
        status,
        content_length,
        chunked,
        close,
    })
}

/// Whether an idle connection was closed by the server (or has unexpected
/// bytes pending): either way it must not carry another request.
fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fired(&fds[0]),
        Err(_) => true,
    }
}

/// The generation from a `generation <G> pid <PID>` body.
fn generation_of(body: &[u8]) -> Option<String> {
    let rest = body.strip_prefix(b"generation ")?;
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    (end > 0).then(|| String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Counts of one connection, merged at the end.
#[derive(Default)]
struct Stats {
    ok: u64,
    non_2xx: u64,
    statuses: BTreeMap<u16, u64>,
    failures: [u64; 5],
    first_errors: [Option<String>; 5],
    /// Requests abandoned in flight by an interrupt: not failures.
    aborted: u64,
    connects: u64,
    latency: Histogram,
    generations: BTreeMap<String, u64>,
    /// Every completed request, only with `--samples`.
    samples: Vec<Sample>,
}

/// One completed request, for `--samples`.
struct Sample {
    start_offset_us: u64,
    latency_us: u64,
    ok: bool,
}

impl Stats {
    fn record(&mut self, response: &Response, latency: Duration) {
        *self.statuses.entry(response.status).or_default() += 1;
        if (200..300).contains(&response.status) {
            self.ok += 1;
            self.latency.record(latency);
        } else {
            self.non_2xx += 1;
        }
        if let Some(generation) = generation_of(&response.body) {
            *self.generations.entry(generation).or_default() += 1;
        }
    }

    fn sample(&mut self, start_offset: Duration, latency: Duration, ok: bool) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.samples.push(Sample {
            start_offset_us: micros(start_offset),
            latency_us: micros(latency),
            ok,
        });
    }

    fn fail(&mut self, kind: FailureKind, message: String) {
        self.failures[kind as usize] += 1;
        self.first_errors[kind as usize].get_or_insert(message);
    }

    fn failed(&self) -> u64 {
        self.failures.iter().sum()
    }

    fn requests(&self) -> u64 {
        self.ok + self.non_2xx + self.failed()
    }

    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        for (index, count) in other.failures.into_iter().enumerate() {
            self.failures[index] += count;
        }
        for (mine, theirs) in self.first_errors.iter_mut().zip(other.first_errors) {
            if mine.is_none() {
                *mine = theirs;
            }
        }
        self.aborted += other.aborted;
        self.connects += other.connects;
        self.latency.merge(&other.latency);
        for (generation, count) in other.generations {
            *self.generations.entry(generation).or_default() += count;
        }
        self.samples.extend(other.samples);
    }
}

/// Writes the `--samples` file: the start line, then the samples in order of
/// their start.
fn write_samples(
    out: &mut BufWriter<File>,
    (monotonic_ns, realtime_ns): (u128, u128),
    samples: &mut [Sample],
) -> io::Result<()> {
    samples.sort_unstable_by_key(|sample| sample.start_offset_us);
    writeln!(
        out,
        "# start monotonic_ns={monotonic_ns} realtime_ns={realtime_ns}"
    )?;
    for sample in samples.iter() {
        writeln!(
            out,
            "{} {} {}",
            sample.start_offset_us,
            sample.latency_us,
            u8::from(sample.ok)
        )?;
    }
    out.flush()
}

/// The current time on `clock` in nanoseconds (0 if it cannot be read).
/// `Instant` is CLOCK_MONOTONIC on Linux, so sample offsets plus the
/// monotonic start give that clock's readings.
fn clock_ns(clock: libc::clockid_t) -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return 0;
    }
    u128::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
        + u128::try_from(now.tv_nsec).unwrap_or(0)
}

/// Latency histogram in microseconds: exact below 128µs, then 128 buckets
/// per power of two (under 1% error), so memory does not grow with the run.
#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    const SUB: u64 = 128;

    fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = Self::bucket(micros);
        if self.counts.len() <= bucket {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    fn bucket(micros: u64) -> usize {
        if micros < Self::SUB {
            return micros as usize;
        }
        let shift = 63 - micros.leading_zeros() - 7;
        (((u64::from(shift) + 1) * Self::SUB) + ((micros >> shift) & (Self::SUB - 1))) as usize
    }

    /// The largest value that falls in `bucket`.
    fn upper(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < Self::SUB {
            return bucket;
        }
        let shift = bucket / Self::SUB - 1;
        let lower = (Self::SUB + bucket % Self::SUB) << shift;
        lower + (1 << shift) - 1
    }

    fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile (0..=1) in microseconds, 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::upper(bucket).min(self.max);
            }
        }
        self.max
    }
}

struct Report {
    stats: Stats,
    elapsed: Duration,
    connections: u32,
    interrupted: bool,
}

impl Report {
    fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.stats.requests() as f64 / seconds
        } else {
            0.0
        }
    }

    fn latency_ms(&self) -> [(&'static str, f64); 4] {
        let latency = &self.stats.latency;
        let ms = |micros: u64| micros as f64 / 1000.0;
        [
            ("p50", ms(latency.quantile(0.50))),
            ("p90", ms(latency.quantile(0.90))),
            ("p99", ms(latency.quantile(0.99))),
            ("max", ms(latency.max)),
        ]
    }

    fn json(&self) -> String {
        let stats = &self.stats;
        let report = JsonReport {
            requests: stats.requests(),
            ok: stats.ok,
            non_2xx: stats.non_2xx,
            failed: stats.failed(),
            failures: Object(
                FailureKind::ALL
                    .iter()
                    .map(|kind| (kind.name(), stats.failures[*kind as usize]))
                    .collect(),
            ),
            aborted: stats.aborted,
            statuses: &stats.statuses,
            connections: self.connections,
            connects: stats.connects,
            elapsed_s: round(self.elapsed.as_secs_f64(), 3),
            requests_per_s: round(self.rate(), 1),
            latency_ms: Object(
                self.latency_ms()
                    .into_iter()
                    .map(|(name, value)| (name, round(value, 3)))
                    .collect(),
            ),
            generations: &stats.generations,
            interrupted: self.interrupted,
        };
        serde_json::to_string(&report).expect("the report has only string and integer keys")
    }
}

/// The report as `--json` prints it, keys in this order.
#[derive(Serialize)]
struct JsonReport<'a> {
    requests: u64,
    ok: u64,
    non_2xx: u64,
    failed: u64,
    failures: Object<u64>,
    aborted: u64,
    /// Keyed by the status code as a string (`"200"`), ascending.
    statuses: &'a BTreeMap<u16, u64>,
    connections: u32,
    connects: u64,
    elapsed_s: f64,
    requests_per_s: f64,
    latency_ms: Object<f64>,
    generations: &'a BTreeMap<String, u64>,
    interrupted: bool,
}

/// Named values serialized as one JSON object, in their order (a map would
/// sort the names).
struct Object<V>(Vec<(&'static str, V)>);

impl<V: Serialize> Serialize for Object<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}

/// `value` rounded to `decimals` places, as the text report prints it.
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = &self.stats;
        writeln!(
            f,
            "requests     {} in {:.2}s ({:.1} req/s), {} connections, {} connects{}",
            stats.requests(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.connections,
            stats.connects,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        )?;
        writeln!(f, "ok (2xx)     {}", stats.ok)?;
        let mut other = String::new();
        for (status, count) in stats
            .statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
        {
            let _ = write!(other, " {status}: {count}");
        }
        writeln!(
            f,
            "non-2xx      {}{}",
            stats.non_2xx,
            if other.is_empty() {
                String::new()
            } else {
                format!(" ({})", other.trim_start())
            }
        )?;
        let kinds: Vec<String> = FailureKind::ALL
            .iter()
            .map(|kind| format!("{} {}", kind.name(), stats.failures[*kind as usize]))
            .collect();
        writeln!(f, "failures     {} ({})", stats.failed(), kinds.join(", "))?;
        for kind in FailureKind::ALL {
            if let Some(message) = &stats.first_errors[kind as usize] {
                writeln!(f, "  first {} failure: {message}", kind.name())?;
            }
        }
        if stats.aborted > 0 {
            writeln!(
                f,
                "aborted      {} (in flight at the interrupt)",
                stats.aborted
            )?;
        }
        let latency: Vec<String> = self
            .latency_ms()
            .iter()
            .map(|(name, value)| format!("{name} {value:.3}ms"))
            .collect();
        writeln!(f, "latency      {}", latency.join("  "))?;
        let generations: Vec<String> = stats
            .generations
            .iter()
            .map(|(generation, count)| format!("{generation}: {count}"))
            .collect();
        writeln!(
            f,
            "generations  {}",
            if generations.is_empty() {
                "none seen".to_owned()
            } else {
                generations.join("  ")
            }
        )
    }
}
