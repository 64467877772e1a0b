//! The server's half of a graceful drain, as a kit: the stop signal, the
//! accept loop's check, requests and connections in flight, keep-alive done
//! right, a bounded wait, progress for the supervisor and a health state.
//!
//! std and libc only; the adapter for axum (and other hyper servers) is the
//! `axum` module beside this one, behind the `axum` cargo feature.
//!
//! # What a drain is
//!
//! The supervisor sends the stop signal (SIGTERM by default) once a newer
//! generation serves. From then on the server:
//!
//! 1. stops accepting and closes its copy of the listener
//!    ([`Drain::wait_acceptable`], or [`Drain::accepting`] in a loop of
//!    your own);
//! 2. tells the supervisor ([`STOPPING`](crate::protocol::STOPPING), then `STATUS=`
//!    lines such as `draining: 12 requests in flight, 3 connections open`),
//!    which the kit sends itself;
//! 3. reports not-ready: [`Drain::health`] turns into 503 for a load
//!    balancer's health check;
//! 4. answers each request still in flight, with `Connection: close`
//!    ([`Connection::close_after_response`]);
//! 5. gives each idle keep-alive connection a grace period
//!    ([`DEFAULT_IDLE_GRACE`], [`Builder::idle_grace`]) to send the request
//!    its client may already be writing, answers that one with
//!    `Connection: close`, and closes the connection after the grace period
//!    otherwise ([`Connection::wait_for_request`]);
//! 6. waits for all of that, bounded by the supervisor's own drain timeout
//!    (from [`SUPERVISOR_DRAIN_TIMEOUT_MS`](crate::protocol::SUPERVISOR_DRAIN_TIMEOUT_MS),
//!    less a margin so that the server exits before the supervisor's
//!    SIGKILL) ([`Drain::wait`]);
//! 7. exits. A second stop signal forces: the process exits at once with
//!    status 128 + the signal number (see [`Builder::exit_on_force`]).
//!
//! Step 5 is the subtle one. A client that got a keep-alive response may be
//! sending its next request at the very moment the drain begins. Closing
//! the idle connection then (what most servers do) loses that request: the
//! client sees an EOF or a reset, and only the server could have answered
//! it with `Connection: close` instead. No supervisor can prevent it.
//!
//! # Signals
//!
//! [`Builder::install`] installs a handler for each stop signal that only
//! writes the signal's number to a pipe (`write(2)` is async-signal-safe),
//! and starts one thread, `drain`, that reads the pipe and does everything
//! else. It works whatever threads already exist (a tokio runtime, say),
//! and syscalls interrupted in other threads are restarted (`SA_RESTART`).
//! Install it before sending `READY=1`: until then a stop signal has its
//! default action.
//!
//! # Example: a thread-per-connection server
//!
//! ```no_run
//! use std::io::{self, Read, Write};
//! use std::net::TcpStream;
//! use std::thread;
//!
//! use supervisor_child::drain::{self, Connection, Drain};
//! use supervisor_child::Listeners;
//!
//! fn main() -> io::Result<()> {
//!     let listener = Listeners::from_env()?.take_tcp_listener("http")?.expect("run me under the supervisor");
//!     listener.set_nonblocking(true)?;
//!     let drain = Drain::install()?;
//!     drain.ready()?;
//!     while drain.wait_acceptable(&listener)? {
//!         let Ok((stream, _)) = listener.accept() else { continue };
//!         let connection = drain.connection();
//!         thread::spawn(move || serve(stream, connection));
//!     }
//!     drop(listener);
//!     drain.wait();
//!     Ok(())
//! }
//!
//! fn serve(mut stream: TcpStream, mut connection: Connection) {
//!     let _ = stream.set_nonblocking(false);
//!     let mut buf = [0; 4096];
//!     // One read per request, for brevity: a real server parses requests.
//!     while let Ok(true) = connection.wait_for_request(&stream) {
//!         let Ok(1..) = stream.read(&mut buf) else { break };
//!         let _request = connection.request();
//!         let close = connection.close_after_response();
//!         let header = if close { "Connection: close\r\n" } else { "" };
//!         let response = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n{header}\r\nok\n");
//!         if stream.write_all(response.as_bytes()).is_err() || close {
//!             break;
//!         }
//!     }
//!     drain::lingering_close(stream, drain::DEFAULT_LINGER);
//! }
//! ```

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use super::drain_timeout;

#[cfg(feature = "axum")]
pub mod axum;

/// How long an idle keep-alive connection may take, once the drain has
/// begun, to send one more request (answered with `Connection: close`)
/// before it is closed: long enough for a client that was already sending
/// (a round trip, a scheduling delay), short enough not to hold the drain.
pub const DEFAULT_IDLE_GRACE: Duration = Duration::from_secs(1);

/// The drain timeout assumed when the supervisor passes none
/// ([`SUPERVISOR_DRAIN_TIMEOUT_MS`](crate::protocol::SUPERVISOR_DRAIN_TIMEOUT_MS) unset): the supervisor's own default
/// `--drain-timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The most the default margin takes from the drain timeout (see
/// [`Builder::margin`]).
pub const MAX_MARGIN: Duration = Duration::from_secs(1);

/// How long [`lingering_close`] waits, by default, for the client to close
/// its side.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);

/// How often, at most, a `STATUS=` progress line goes to the supervisor
/// while draining (only when its text changed).
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// The byte [`Drain::begin`] writes to the event pipe; signal handlers write
/// the signal's number, never 0.
const BEGIN: u8 = 0;

/// The write end of the event pipe of the installed [`Drain`], for the
/// signal handler; -1 when no handler is installed.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Whether signal handlers were installed (once per process).
static SIGNALS_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Writes the signal's number to the event pipe. Only async-signal-safe
/// calls (`write`) and atomics; errno is saved and restored, as the
/// interrupted code may be about to read it.
extern "C" fn on_stop_signal(signo: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the thread's life.
    let saved = unsafe { *libc::__errno_location() };
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // Signal numbers are below 65 on Linux, so they fit and are not 0.
        let byte = signo as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe's write end stays
        // open for the process's life once published; `byte` is a live
        // local of one byte. A full pipe (EAGAIN, non-blocking) drops the
        // byte: the watcher has dozens of unread ones then.
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// The drain of this process: cheap to clone, one per process (the stop
/// signals are process-wide).
///
/// See the [module documentation](self) for what it does and when.
#[derive(Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

struct Inner {
    idle_grace: Duration,
    deadline: Duration,
    exit_on_force: bool,
    state: Mutex<State>,
    changed: Condvar,
    wakers: Mutex<Vec<Waker>>,
    /// Fast reads of `state` for hot paths.
    draining: AtomicBool,
    /// Readable (EOF, for good) from the start of the drain on.
    drain_wake: OwnedFd,
    /// The event pipe's write end (signals and [`Drain::begin`]).
    events: OwnedFd,
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    started: Option<Instant>,
    /// The signal that started the drain (`None`: [`Drain::begin`]).
    signal: Option<i32>,
    grace_over: bool,
    deadline_passed: bool,
    forced: bool,
    requests: usize,
    connections: usize,
    /// Connections ever tracked: [`Drain::shutdown_signal`] waits for the
    /// grace period only where connections are tracked.
    tracked: bool,
}

impl State {
    fn draining(&self) -> bool {
        self.started.is_some()
    }

    fn idle(&self) -> bool {
        self.requests == 0 && self.connections == 0
    }

    fn progress(&self) -> String {
        if self.forced {
            return "drain forced by a second stop signal".to_owned();
        }
        let mut text = format!(
            "draining: {} in flight, {} open",
            count(self.requests, "request", "requests"),
            count(self.connections, "connection", "connections"),
        );
        if self.deadline_passed {
            text.push_str(" (drain deadline passed)");
        }
        text
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How to set up the drain: [`Drain::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    idle_grace: Duration,
    deadline: Option<Duration>,
    margin: Option<Duration>,
    signals: Vec<libc::c_int>,
    exit_on_force: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            idle_grace: DEFAULT_IDLE_GRACE,
            deadline: None,
            margin: None,
            signals: vec![libc::SIGTERM, libc::SIGINT],
            exit_on_force: true,
        }
    }
}

impl Builder {
    /// The idle keep-alive grace period ([`DEFAULT_IDLE_GRACE`] by default).
    pub fn idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }

    /// How long the drain may last after it begins, instead of the
    /// supervisor's drain timeout less the margin.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// What is kept from the supervisor's drain timeout so that the server
    /// has exited before the supervisor's SIGKILL. By default a tenth of
    /// the timeout, at most [`MAX_MARGIN`].
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The stop signals (SIGTERM and SIGINT by default; add the one given
    /// to `--stop-signal`, if another). The first one received starts the
    /// drain, the next forces. An empty list installs no handler: the drain
    /// then starts only with [`Drain::begin`].
    pub fn signals(mut self, signals: &[libc::c_int]) -> Self {
        self.signals = signals.to_vec();
        self
    }

    /// Whether a second stop signal exits the process at once, with status
    /// 128 + the signal number (the default). Without it the kit only
    /// reports [`Outcome::Forced`] (and wakes every wait), and the server
    /// must exit by itself.
    pub fn exit_on_force(mut self, exit: bool) -> Self {
        self.exit_on_force = exit;
        self
    }

    /// Reads the drain timeout the supervisor passes, installs the signal
    /// handlers and starts the `drain` thread.
    ///
    /// # Errors
    ///
    /// Fails when [`SUPERVISOR_DRAIN_TIMEOUT_MS`](crate::protocol::SUPERVISOR_DRAIN_TIMEOUT_MS) is set but is not a
    /// number of milliseconds, when signal handlers were installed already
    /// (by an earlier drain: there is one per process), when a signal
    /// number is invalid, or when the pipes or the thread cannot be
    /// created.
    pub fn install(self) -> io::Result<Drain> {
        let deadline = match self.deadline {
            Some(deadline) => deadline,
            None => {
                let timeout = drain_timeout()?.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
                let margin = self.margin.unwrap_or((timeout / 10).min(MAX_MARGIN));
                timeout.saturating_sub(margin)
            }
        };
        let (events_rx, events_tx) = pipe()?;
        let (drain_wake, drain_trigger) = pipe()?;
        let inner = Arc::new(Inner {
            idle_grace: self.idle_grace,
            deadline,
            exit_on_force: self.exit_on_force,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            drain_wake,
            events: events_tx,
        });
        if !self.signals.is_empty() {
            install_handlers(&self.signals, inner.events.as_raw_fd())?;
        }
        let watched = Arc::clone(&inner);
        thread::Builder::new()
            .name("drain".to_owned())
            .spawn(move || watch(&watched, events_rx, drain_trigger))?;
        Ok(Drain { inner })
    }
}

fn install_handlers(signals: &[libc::c_int], events: RawFd) -> io::Result<()> {
    if SIGNALS_INSTALLED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the drain's signal handlers are installed already (one drain per process)",
        ));
    }
    // Published before any handler can run.
    SIGNAL_PIPE.store(events, Ordering::SeqCst);
    for &signo in signals {
        // SAFETY: an all-zero sigaction is a valid value (empty mask, no
        // flags) that is filled in below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is a valid sigaction whose handler only makes
        // async-signal-safe calls; the old action is not asked for.
        if unsafe { libc::sigaction(signo, &action, std::ptr::null_mut()) } == -1 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!("install a handler for signal {signo}: {err}"),
            ));
        }
    }
    Ok(())
}

/// A pipe, both ends close-on-exec and non-blocking (the handler must never
/// block; readers poll first).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a live array of two ints, which pipe2 fills in.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The `drain` thread: turns signals into the drain, fires its timers and
/// sends its progress.
fn watch(inner: &Inner, events: OwnedFd, drain_trigger: OwnedFd) {
    let mut drain_trigger = Some(drain_trigger);
    let mut last_status = String::new();
    let mut next_status: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let timeout = {
            let state = inner.lock();
            state.started.map(|started| {
                let mut next = next_status.unwrap_or(now + STATUS_INTERVAL);
                if !state.grace_over {
                    next = next.min(started + inner.idle_grace);
                }
                if !state.deadline_passed {
                    next = next.min(started + inner.deadline);
                }
                next.saturating_duration_since(now)
            })
        };
        let readable = poll_one(events.as_fd(), timeout);
        if readable {
            let mut bytes = [0u8; 64];
            // SAFETY: `bytes` is a live buffer of its length; the fd is the
            // non-blocking read end of our pipe.
            let n =
                unsafe { libc::read(events.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
            let n = usize::try_from(n).unwrap_or(0);
            for &byte in &bytes[..n] {
                let signal = (byte != BEGIN).then_some(i32::from(byte));
                if let Some(trigger) = drain_trigger.take() {
                    // The state (and so the health) first; then STOPPING=1,
                    // so that it reaches the supervisor before the progress
                    // the server sends once it is woken; then the wake-up.
                    inner.start(signal);
                    let _ = super::stopping();
                    inner.notify();
                    // Closing the write end is the broadcast: the read end
                    // polls readable (EOF) for everyone from now on.
                    drop(trigger);
                    next_status = Some(Instant::now());
                } else if let Some(signo) = signal {
                    // Marked forced, but the waiters are woken only when
                    // the process does not exit here: a woken server could
                    // otherwise end the process first, with a status of its
                    // own, before the _exit below.
                    inner.lock().forced = true;
                    let _ = super::status(&inner.lock().progress());
                    if inner.exit_on_force {
                        // SAFETY: _exit ends the process at once; nothing of
                        // ours needs to run first (a forced stop is meant
                        // to skip the rest of the drain).
                        unsafe { libc::_exit(128 + signo) };
                    }
                    inner.notify();
                }
            }
        }
        let now = Instant::now();
        let mut state = inner.lock();
        let Some(started) = state.started else {
            continue;
        };
        let mut fired = false;
        if !state.grace_over && now >= started + inner.idle_grace {
            state.grace_over = true;
            fired = true;
        }
        if !state.deadline_passed && now >= started + inner.deadline {
            state.deadline_passed = true;
            fired = true;
        }
        let text = state.progress();
        drop(state);
        if fired {
            inner.notify();
        }
        if next_status.is_some_and(|at| now >= at) {
            if text != last_status {
                let _ = super::status(&text);
                last_status = text;
            }
            next_status = Some(now + STATUS_INTERVAL);
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the drain begun; the caller wakes the waiters.
    fn start(&self, signal: Option<i32>) {
        let mut state = self.lock();
        state.started = Some(Instant::now());
        state.signal = signal;
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Wakes every waiter after a change of state that one may wait for.
    /// Called with the state unlocked: a future registers its waker while
    /// holding the state, so it either saw the change or is woken here.
    fn notify(&self) {
        self.changed.notify_all();
        let wakers =
            std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in wakers {
            waker.wake();
        }
    }

    /// Updates a count; wakes waiters only while draining (nobody waits on
    /// counts before).
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        change(&mut state);
        let draining = state.draining();
        drop(state);
        if draining {
            self.notify();
        }
    }
}

/// What [`Drain::health`] reports: what a health endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Not yet ready ([`Drain::ready`] not called): 503.
    Starting,
    /// Serving: 200.
    Ready,
    /// Draining (the stop signal arrived): 503, so that a load balancer
    /// stops sending new work.
    Draining,
}

impl Health {
    /// The HTTP status a health endpoint answers: 200 when ready, 503
    /// otherwise.
    pub fn http_status(self) -> u16 {
        match self {
            Health::Ready => 200,
            Health::Starting | Health::Draining => 503,
        }
    }

    /// `starting`, `ready` or `draining`: a health endpoint's body.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Ready => "ready",
            Health::Draining => "draining",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a drain ended ([`Drain::wait`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every request answered and every tracked connection closed.
    Drained {
        /// Time since the drain began.
        elapsed: Duration,
    },
    /// The deadline passed first, with this much still open.
    DeadlineExceeded {
        /// Requests still in flight.
        requests: usize,
        /// Connections still open.
        connections: usize,
    },
    /// A second stop signal arrived (with [`Builder::exit_on_force`]
    /// off).
    Forced,
}

impl Outcome {
    /// Whether everything finished in time.
    pub fn is_drained(self) -> bool {
        matches!(self, Outcome::Drained { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Outcome::Drained { elapsed } => write!(f, "drained in {}ms", elapsed.as_millis()),
            Outcome::DeadlineExceeded {
                requests,
                connections,
            } => write!(
                f,
                "drain deadline passed with {} in flight and {} open",
                count(requests, "request", "requests"),
                count(connections, "connection", "connections")
            ),
            Outcome::Forced => f.write_str("drain forced by a second stop signal"),
        }
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("idle_grace", &self.inner.idle_grace)
            .field("deadline", &self.inner.deadline)
            .field("state", &*self.inner.lock())
            .finish()
    }
}

impl Drain {
    /// A drain to configure, then [`Builder::install`].
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// [`Drain::builder`]`().install()`: the defaults (SIGTERM and SIGINT,
    /// [`DEFAULT_IDLE_GRACE`], the supervisor's drain timeout less a
    /// margin).
    ///
    /// # Errors
    ///
    /// As [`Builder::install`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// use supervisor_child::drain::Drain;
    ///
    /// // Before the accept loop: the stop signals now begin the drain.
    /// let drain = Drain::install()?;
    /// drain.ready()?;
    /// // ... accept while drain.accepting(), then:
    /// let outcome = drain.wait();
    /// std::process::exit(if outcome.is_drained() { 0 } else { 1 });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn install() -> io::Result<Drain> {
        Builder::default().install()
    }

    /// Marks the server ready ([`Health::Ready`]) and sends `READY=1`.
    /// Returns what [`notify`](super::notify) returns.
    ///
    /// # Errors
    ///
    /// As [`notify`](super::notify).
    pub fn ready(&self) -> io::Result<bool> {
        self.inner.lock().ready = true;
        super::ready()
    }

    /// Starts the drain without a signal (an admin endpoint, a test). Like
    /// the first stop signal; it never forces.
    pub fn begin(&self) {
        let byte = BEGIN;
        // SAFETY: a one-byte write from a live local to our pipe's write
        // end, which lives as long as `self`.
        unsafe { libc::write(self.inner.events.as_raw_fd(), (&raw const byte).cast(), 1) };
    }

    /// The health state: 200 ([`Health::Ready`]) only between
    /// [`Drain::ready`] and the first stop signal.
    pub fn health(&self) -> Health {
        let state = self.inner.lock();
        if state.draining() {
            Health::Draining
        } else if state.ready {
            Health::Ready
        } else {
            Health::Starting
        }
    }

    /// Whether the drain has begun (the first stop signal arrived).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// The accept loop's check: whether to go on accepting.
    pub fn accepting(&self) -> bool {
        !self.is_draining()
    }

    /// Whether a second stop signal arrived.
    pub fn is_forced(&self) -> bool {
        self.inner.lock().forced
    }

    /// How long the drain may last once it begins.
    pub fn deadline(&self) -> Duration {
        self.inner.deadline
    }

    /// The idle keep-alive grace period.
    pub fn idle_grace(&self) -> Duration {
        self.inner.idle_grace
    }

    /// The signal that started the drain, once it has begun (`None` before,
    /// and for [`Drain::begin`]).
    pub fn signal(&self) -> Option<i32> {
        self.inner.lock().signal
    }

    /// An fd that polls readable (EOF) from the start of the drain on: put
    /// it beside your own fds in a `poll(2)` loop.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.inner.drain_wake.as_fd()
    }

    /// The accept loop's wait: blocks until `listener` is readable
    /// (`true`: accept, expecting `WouldBlock` when another process took the
    /// connection, so make the listener non-blocking) or the drain begins
    /// (`false`: stop accepting and drop the listener).
    ///
    /// # Errors
    ///
    /// Fails when `poll(2)` does (not on `EINTR`).
    pub fn wait_acceptable(&self, listener: impl AsFd) -> io::Result<bool> {
        loop {
            if self.is_draining() {
                return Ok(false);
            }
            let (ready, _) = poll_two(listener.as_fd(), self.wake_fd(), None)?;
            if ready && !self.is_draining() {
                return Ok(true);
            }
        }
    }

    /// Counts one request in flight until the guard drops.
    pub fn request(&self) -> RequestGuard {
        self.inner.update(|state| state.requests += 1);
        RequestGuard {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Tracks one accepted connection until it drops: its keep-alive
    /// decisions, and the count [`Drain::wait`] waits for.
    pub fn connection(&self) -> Connection {
        self.inner.update(|state| {
            state.connections += 1;
            state.tracked = true;
        });
        Connection {
            drain: self.clone(),
            idle_since: Instant::now(),
        }
    }

    /// Requests in flight and connections open now.
    pub fn in_flight(&self) -> (usize, usize) {
        let state = self.inner.lock();
        (state.requests, state.connections)
    }

    /// Blocks until the drain has begun and then ended: every request
    /// answered and every tracked connection closed, the deadline passed,
    /// or a second stop signal. Sends the final `STATUS=`.
    pub fn wait(&self) -> Outcome {
        let mut state = self.inner.lock();
        let outcome = loop {
            if state.forced {
                break Outcome::Forced;
            }
            let Some(started) = state.started else {
                state = self
                    .inner
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            if state.idle() {
                break Outcome::Drained {
                    elapsed: started.elapsed(),
                };
            }
            let left = (started + self.inner.deadline).saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Outcome::DeadlineExceeded {
                    requests: state.requests,
                    connections: state.connections,
                };
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(state);
        let _ = super::status(&outcome.to_string());
        outcome
    }

    /// A future that resolves when the drain begins.
    pub fn draining(&self) -> Until {
        self.until(Moment::Draining)
    }

    /// A future for `with_graceful_shutdown`-style APIs that close idle
    /// connections at once: it resolves only once the drain has begun
    /// *and* the idle grace period has passed (or every tracked connection
    /// has closed, or the drain is forced). Until then idle keep-alive
    /// connections stay open, so that a request already on its way is
    /// answered (with `Connection: close`) instead of cut off. Where no
    /// connection was ever tracked, it resolves when the drain begins.
    pub fn shutdown_signal(&self) -> Until {
        self.until(Moment::GraceOver)
    }

    /// A future that resolves when the drain's deadline has passed or it is
    /// forced: race the server's own shutdown against it.
    pub fn expired(&self) -> Until {
        self.until(Moment::Expired)
    }

    /// Runs `future` (a server's own graceful shutdown, say) until it
    /// completes, or until the drain's deadline passes or it is forced:
    /// `Err` then says what was still open.
    ///
    /// # Errors
    ///
    /// [`Outcome::DeadlineExceeded`] or [`Outcome::Forced`] when `future`
    /// did not complete in time.
    pub async fn bounded<F: IntoFuture>(&self, future: F) -> Result<F::Output, Outcome> {
        let mut future = std::pin::pin!(future.into_future());
        let mut expired = self.expired();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(output));
            }
            if Pin::new(&mut expired).poll(cx).is_ready() {
                let state = self.inner.lock();
                return Poll::Ready(Err(if state.forced {
                    Outcome::Forced
                } else {
                    Outcome::DeadlineExceeded {
                        requests: state.requests,
                        connections: state.connections,
                    }
                }));
            }
            Poll::Pending
        })
        .await
    }

    fn until(&self, moment: Moment) -> Until {
        Until {
            inner: Arc::clone(&self.inner),
            moment,
        }
    }
}

/// A request in flight ([`Drain::request`]).
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct RequestGuard {
    inner: Arc<Inner>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.inner.update(|state| state.requests -= 1);
    }
}

impl fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestGuard")
    }
}

/// One open connection ([`Drain::connection`]): counted until it drops, and
/// the keep-alive decisions of a drain.
#[must_use = "the connection counts as open only while it lives"]
#[derive(Debug)]
pub struct Connection {
    drain: Drain,
    idle_since: Instant,
}

impl Connection {
    /// Whether the response being written must be the last on this
    /// connection: it then carries `Connection: close`, and the connection
    /// closes after it. True from the start of the drain on.
    pub fn close_after_response(&self) -> bool {
        self.drain.is_draining()
    }

    /// Counts one request in flight ([`Drain::request`]).
    pub fn request(&self) -> RequestGuard {
        self.drain.request()
    }

    /// Waits, between two requests, for the next one: `true` when `stream`
    /// is readable (a request, or EOF or an error, which the read tells),
    /// `false` when the connection must close instead because the drain's
    /// idle grace period passed with no request. Before the drain it waits
    /// as long as the client idles; once the drain begins, until the later
    /// of its start and the moment this connection went idle, plus the
    /// grace period.
    ///
    /// # Errors
    ///
    /// Fails when `poll(2)` does (not on `EINTR`).
    pub fn wait_for_request(&mut self, stream: impl AsFd) -> io::Result<bool> {
        self.idle_since = Instant::now();
        let grace = self.drain.inner.idle_grace;
        loop {
            let started = self.drain.inner.lock().started;
            if let Some(started) = started {
                let deadline = started.max(self.idle_since) + grace;
                let left = deadline.saturating_duration_since(Instant::now());
                return Ok(poll_one(stream.as_fd(), Some(left)));
            }
            let (readable, _) = poll_two(stream.as_fd(), self.drain.wake_fd(), None)?;
            if readable {
                return Ok(true);
            }
        }
    }

    /// The drain this connection belongs to.
    pub fn drain(&self) -> &Drain {
        &self.drain
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.drain.inner.update(|state| state.connections -= 1);
    }
}

/// What an [`Until`] waits for.
#[derive(Clone, Copy, Debug)]
enum Moment {
    Draining,
    GraceOver,
    Expired,
}

/// A future for a moment of the drain: [`Drain::draining`],
/// [`Drain::shutdown_signal`], [`Drain::expired`]. Runtime-independent
/// (the `drain` thread wakes it), `Send` and `Unpin`.
#[must_use = "futures do nothing unless polled"]
pub struct Until {
    inner: Arc<Inner>,
    moment: Moment,
}

impl fmt::Debug for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Until")
            .field("moment", &self.moment)
            .finish()
    }
}

impl Future for Until {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let state = self.inner.lock();
        let reached = match self.moment {
            Moment::Draining => state.draining(),
            Moment::GraceOver => {
                state.draining()
                    && (state.grace_over
                        || state.forced
                        || !state.tracked
                        || state.connections == 0)
            }
            Moment::Expired => state.deadline_passed || state.forced,
        };
        if reached {
            return Poll::Ready(());
        }
        // Registered while the state is locked: a change made after the
        // check above notifies after this push.
        let mut wakers = self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Closes a connection without letting a late client byte turn the close
/// into a reset: half-closes it (`shutdown(SHUT_WR)`, which sends FIN after
/// the response), then reads and discards until the client closes its side
/// or `linger` passes. Closing with unread data in the receive buffer makes
/// the kernel send RST, which can destroy the response the client has not
/// read yet.
pub fn lingering_close(mut stream: impl Read + AsFd, linger: Duration) {
    // SAFETY: shutdown(2) on a connection's fd we borrow; it touches no
    // memory. This is the connection, never the (shared) listener.
    if unsafe { libc::shutdown(stream.as_fd().as_raw_fd(), libc::SHUT_WR) } == -1 {
        return;
    }
    let deadline = Instant::now() + linger;
    let mut scratch = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !poll_one(stream.as_fd(), Some(left)) {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => return,
        }
    }
}

/// Waits up to `timeout` (`None`: for ever) for `fd` to poll readable
/// (data, EOF or an error: the read that follows tells which). A failing
/// poll counts as readable, so that the caller's read reports the error.
fn poll_one(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    loop {
        let mut fds = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = poll_ms(deadline);
        // SAFETY: `fds` is a live array of one pollfd, its length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        match n {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            -1 => return true,
            0 if deadline.is_some_and(|at| Instant::now() >= at) => return false,
            _ if fds[0].revents != 0 => return true,
            _ => {}
        }
    }
}

/// Waits for either fd to poll readable; which ones did.
fn poll_two(
    first: BorrowedFd<'_>,
    second: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    loop {
        let mut fds = [first, second].map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `fds` is a live array of two pollfds, its length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, poll_ms(deadline)) };
        if n == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let fired = (fds[0].revents != 0, fds[1].revents != 0);
        if fired.0 || fired.1 || deadline.is_some_and(|at| Instant::now() >= at) {
            return Ok(fired);
        }
    }
}

/// Milliseconds until `deadline` for poll(2), rounded up so that a
/// sub-millisecond wait does not become a busy poll; -1 for none.
fn poll_ms(deadline: Option<Instant>) -> libc::c_int {
    match deadline {
        None => -1,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::task::Wake;

    use super::*;

    /// A drain without signal handlers (tests share one process).
    fn drain(grace: Duration, deadline: Duration) -> Drain {
        Drain::builder()
            .signals(&[])
            .idle_grace(grace)
            .deadline(deadline)
            .install()
            .unwrap()
    }

    fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn poll_once(future: &mut Until, flag: &Arc<Flag>) -> bool {
        let waker = Waker::from(Arc::clone(flag));
        Pin::new(future)
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    }

    #[test]
    fn health_follows_ready_and_the_drain() {
        let drain = drain(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(drain.health(), Health::Starting);
        assert_eq!(drain.health().http_status(), 503);
        // NOTIFY_SOCKET is unset in tests: Ok(false).
        drain.ready().unwrap();
        assert_eq!(drain.health(), Health::Ready);
        assert_eq!(drain.health().http_status(), 200);
        assert!(drain.accepting());
        drain.begin();
        assert!(wait_for(Duration::from_secs(5), || drain.is_draining()));
        assert_eq!(drain.health(), Health::Draining);
        assert_eq!(drain.health().http_status(), 503);
        assert_eq!(drain.signal(), None);
        assert!(!drain.accepting());
    }

    #[test]
    fn wait_returns_once_requests_and_connections_are_done() {
        let drain = drain(Duration::from_secs(1), Duration::from_secs(20));
        let request = drain.request();
        let connection = drain.connection();
        assert_eq!(drain.in_flight(), (1, 1));
        let (tx, rx) = mpsc::channel();
        let waiter = drain.clone();
        thread::spawn(move || tx.send(waiter.wait()).unwrap());
        drain.begin();
        assert!(wait_for(Duration::from_secs(5), || drain.is_draining()));
        assert!(rx.try_recv().is_err());
        assert!(connection.close_after_response());
        drop(request);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(connection);
        let outcome = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(outcome.is_drained(), "{outcome:?}");
    }

    #[test]
    fn wait_is_bounded_by_the_deadline() {
        let drain = drain(Duration::from_millis(10), Duration::from_millis(100));
        let _request = drain.request();
        let started = Instant::now();
        drain.begin();
        let outcome = drain.wait();
        assert_eq!(
            outcome,
            Outcome::DeadlineExceeded {
                requests: 1,
                connections: 0
            }
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(
            outcome.to_string(),
            "drain deadline passed with 1 request in flight and 0 connections open"
        );
    }

    #[test]
    fn idle_connection_gets_the_grace_period_and_no_more() {
        let grace = Duration::from_millis(200);
        let drain = drain(grace, Duration::from_secs(20));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut connection = drain.connection();
        drain.begin();
        assert!(wait_for(Duration::from_secs(5), || drain.is_draining()));
        let started = Instant::now();
        assert!(!connection.wait_for_request(&server).unwrap());
        let waited = started.elapsed();
        assert!(waited >= grace - Duration::from_millis(20), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn a_request_during_the_grace_period_is_taken() {
        let drain = drain(Duration::from_secs(10), Duration::from_secs(20));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut connection = drain.connection();
        let (tx, rx) = mpsc::channel();
        let waiter = thread::spawn(move || {
            let readable = connection.wait_for_request(&server).unwrap();
            tx.send(readable).unwrap();
            connection.close_after_response()
        });
        drain.begin();
        assert!(wait_for(Duration::from_secs(5), || drain.is_draining()));
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        assert!(waiter.join().unwrap(), "the answer must close");
    }

    #[test]
    fn wait_acceptable_returns_false_once_draining() {
        let drain = drain(Duration::from_secs(1), Duration::from_secs(5));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(drain.wait_acceptable(&listener).unwrap());
        let (tx, rx) = mpsc::channel();
        let waiter = drain.clone();
        let idle = TcpListener::bind("127.0.0.1:0").unwrap();
        thread::spawn(move || tx.send(waiter.wait_acceptable(&idle).unwrap()).unwrap());
        drain.begin();
        assert!(!rx.recv_timeout(Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn shutdown_signal_waits_for_the_grace_period_or_the_last_connection() {
        let drain = drain(Duration::from_secs(30), Duration::from_secs(60));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut draining = drain.draining();
        let mut signal = drain.shutdown_signal();
        let mut expired = drain.expired();
        let connection = drain.connection();
        assert!(!poll_once(&mut draining, &flag));
        assert!(!poll_once(&mut signal, &flag));
        drain.begin();
        assert!(wait_for(Duration::from_secs(5), || flag
            .0
            .load(Ordering::SeqCst)));
        assert!(poll_once(&mut draining, &flag));
        // The grace period is 30 s: only the last connection's close ends it.
        flag.0.store(false, Ordering::SeqCst);
        assert!(!poll_once(&mut signal, &flag));
        drop(connection);
        assert!(
            flag.0.load(Ordering::SeqCst),
            "closing the last connection wakes"
        );
        assert!(poll_once(&mut signal, &flag));
        assert!(!poll_once(&mut expired, &flag));
    }

    #[test]
    fn expired_fires_at_the_deadline() {
        let drain = drain(Duration::from_millis(10), Duration::from_millis(50));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut expired = drain.expired();
        assert!(!poll_once(&mut expired, &flag));
        drain.begin();
        assert!(wait_for(Duration::from_secs(5), || flag
            .0
            .load(Ordering::SeqCst)
            && poll_once(&mut expired, &flag)));
    }

    #[test]
    fn progress_text() {
        let state = State {
            started: Some(Instant::now()),
            requests: 12,
            connections: 1,
            ..State::default()
        };
        assert_eq!(
            state.progress(),
            "draining: 12 requests in flight, 1 connection open"
        );
    }
}
