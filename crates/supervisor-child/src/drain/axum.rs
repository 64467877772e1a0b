//! The drain kit for axum servers (feature `axum`): keep-alive done right
//! under `axum::serve(...).with_graceful_shutdown(...)`.
//!
//! # Why axum needs more than a shutdown future
//!
//! When the future given to `with_graceful_shutdown` resolves, axum stops
//! accepting and calls hyper's `graceful_shutdown` on every connection at
//! once. For an HTTP/1 connection that is idle between two requests, hyper
//! (1.x, `disable_keep_alive`) closes it on the spot. A client that was
//! already sending its next request on it gets an EOF or a reset instead of
//! an answer: under continuous keep-alive load that is a few failed
//! requests on every reload.
//!
//! So the kit splits what axum does in one step:
//!
//! - [`Listener`] stops accepting (and closes this process's copy of the
//!   listener) at the first stop signal, and counts open connections;
//! - [`layer`] adds `Connection: close` to every HTTP/1 response from then
//!   on, so that hyper closes each busy or newly active connection right
//!   after its next response, and counts requests in flight;
//! - [`Drain::shutdown_signal`] resolves only once the idle grace period
//!   has passed (or every connection has closed): the connections that are
//!   still idle then are the ones hyper closes at once.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use supervisor_child::{Listeners, drain::{self, Drain}};
//!
//! # async fn run() -> std::io::Result<()> {
//! let std_listener = Listeners::from_env()?.take_tcp_listener("http")?.expect("under the supervisor");
//! let drain = Drain::install()?;
//! let listener = drain::axum::Listener::from_std(std_listener, &drain)?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello\n" }))
//!     .route("/healthz", drain::axum::health(&drain))
//!     .layer(drain::axum::layer(&drain));
//! drain.ready()?;
//! let server = axum::serve(listener, app).with_graceful_shutdown(drain.shutdown_signal());
//! if let Err(outcome) = drain.bounded(server).await {
//!     eprintln!("{outcome}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Servers on hyper (or hyper-util) without axum use the same pieces: wrap
//! each accepted stream in [`Io`], [`layer`] the service, stop accepting on
//! [`Drain::draining`], and call `graceful_shutdown` on each connection
//! only once [`Drain::shutdown_signal`] resolves.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Connection, Drain, RequestGuard};

/// An axum listener that stops accepting when the drain begins and tracks
/// every connection it accepted (see the [module documentation](self)).
pub struct Listener<L> {
    /// `None` once draining: this process's copy is closed.
    inner: Option<L>,
    drain: Drain,
}

impl<L> fmt::Debug for Listener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("accepting", &self.inner.is_some())
            .finish()
    }
}

impl<L: axum::serve::Listener> Listener<L> {
    /// Wraps any axum listener (`tokio::net::TcpListener`,
    /// `tokio::net::UnixListener`, ...).
    pub fn new(listener: L, drain: &Drain) -> Self {
        Listener {
            inner: Some(listener),
            drain: drain.clone(),
        }
    }
}

impl Listener<tokio::net::TcpListener> {
    /// Wraps an inherited std listener: makes it non-blocking (shared with
    /// the supervisor and the other generations, which all poll before
    /// they accept) and registers it with the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails outside a tokio runtime, or when the socket cannot be made
    /// non-blocking.
    pub fn from_std(listener: std::net::TcpListener, drain: &Drain) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self::new(
            tokio::net::TcpListener::from_std(listener)?,
            drain,
        ))
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for Listener<L> {
    type Io = Io<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if let Some(listener) = self.inner.as_mut() {
            let accepted = {
                let mut accept = pin!(listener.accept());
                let mut draining = self.drain.draining();
                poll_fn(|cx| {
                    if Pin::new(&mut draining).poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    accept.as_mut().poll(cx).map(Some)
                })
                .await
            };
            if let Some((io, addr)) = accepted {
                return (Io::new(io, &self.drain), addr);
            }
            // Closes this process's copy only (never shutdown(2) a shared
            // listener): the supervisor's copy keeps its queue.
            self.inner = None;
        }
        // Draining: axum stops calling once the shutdown signal resolves.
        std::future::pending().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.inner {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::other("the listener is closed: draining")),
        }
    }
}

/// An accepted connection, counted as open until it drops.
pub struct Io<T> {
    io: T,
    _connection: Connection,
}

impl<T> Io<T> {
    /// Tracks `io` as one open connection of `drain`.
    pub fn new(io: T, drain: &Drain) -> Self {
        Io {
            io,
            _connection: drain.connection(),
        }
    }

    /// The connection itself.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T> fmt::Debug for Io<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Io")
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The tower layer that counts requests in flight (until their response
/// head is ready: a streamed body is the connection's, which [`Io`]
/// counts) and, once the drain has begun, adds `Connection: close` to
/// HTTP/1 responses: `Router::layer(drain::axum::layer(&drain))`.
pub fn layer(drain: &Drain) -> Layer {
    Layer {
        drain: drain.clone(),
    }
}

/// See [`layer`].
#[derive(Clone, Debug)]
pub struct Layer {
    drain: Drain,
}

impl<S> tower_layer::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service {
            inner,
            drain: self.drain.clone(),
        }
    }
}

/// The service of [`layer`].
#[derive(Clone, Debug)]
pub struct Service<S> {
    inner: S,
    drain: Drain,
}

impl<S, B, R> tower_service::Service<Request<B>> for Service<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // `Connection` is an HTTP/1 header (HTTP/2 forbids it).
        let http1 = matches!(request.version(), Version::HTTP_10 | Version::HTTP_11);
        let guard = self.drain.request();
        ResponseFuture {
            inner: Box::pin(self.inner.call(request)),
            drain: self.drain.clone(),
            http1,
            _guard: guard,
        }
    }
}

/// The response future of [`Service`].
pub struct ResponseFuture<F> {
    inner: Pin<Box<F>>,
    drain: Drain,
    http1: bool,
    _guard: RequestGuard,
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = std::task::ready!(self.inner.as_mut().poll(cx))?;
        // Decided when the response is ready, so that a request in flight
        // when the drain begins is answered with the close announced.
        if self.http1 && self.drain.is_draining() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}

/// A health endpoint: 200 `ready` between [`Drain::ready`] and the first
/// stop signal, 503 `starting` or `draining` otherwise.
pub fn health<S: Clone + Send + Sync + 'static>(drain: &Drain) -> axum::routing::MethodRouter<S> {
    let drain = drain.clone();
    axum::routing::get(move || {
        let health = drain.health();
        async move {
            let status = StatusCode::from_u16(health.http_status())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (status, format!("{health}\n"))
        }
    })
}
