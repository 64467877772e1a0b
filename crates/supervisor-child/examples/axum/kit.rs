//! An axum server on the drain kit (`supervisor_child::drain`, feature
//! `axum`): keep-alive connections survive every reload without a failed
//! request.
//!
//! ```sh
//! cargo build --example axum_kit --features axum
//! supervisor -l http=127.0.0.1:8080 --ready notify -- target/debug/examples/axum_kit
//! ```
//!
//! `GET /` answers `generation <G> pid <PID>` (after `?delay=MS`, for tests
//! of requests in flight); `GET /healthz` answers 200 `ready`, or 503
//! `draining` from the first stop signal on. On SIGTERM it stops accepting,
//! answers the next request on each keep-alive connection with
//! `Connection: close`, gives idle connections the kit's grace period, and
//! exits 0 once they are closed (1 past the drain deadline; a second
//! SIGTERM exits at once). `examples/axum/stock.rs` is the same server with
//! axum's stock graceful shutdown.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use supervisor_child::drain::{self, Drain};
use supervisor_child::{self as child, Listeners};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("axum_kit: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<ExitCode> {
    let listener = Listeners::from_env()?
        .take_tcp_listener("http")?
        .ok_or_else(|| {
            io::Error::other("no listener named \"http\": run me under the supervisor")
        })?;
    let drain = Drain::install()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listener, drain))
}

async fn serve(listener: std::net::TcpListener, drain: Drain) -> io::Result<ExitCode> {
    let generation = child::generation().unwrap_or(0);
    let listener = drain::axum::Listener::from_std(listener, &drain)?;
    let app = Router::new()
        .route("/", get(move |query| hello(generation, query)))
        .route("/healthz", drain::axum::health(&drain))
        .layer(drain::axum::layer(&drain));
    drain.ready()?;
    let server = axum::serve(listener, app).with_graceful_shutdown(drain.shutdown_signal());
    match drain.bounded(server).await {
        Ok(result) => {
            result?;
            eprintln!("axum_kit: drained");
            Ok(ExitCode::SUCCESS)
        }
        Err(outcome) => {
            eprintln!("axum_kit: {outcome}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn hello(generation: u64, uri: Uri) -> String {
    let delay = uri.query().into_iter().flat_map(|q| q.split('&'));
    if let Some(ms) = delay
        .filter_map(|p| p.strip_prefix("delay=")?.parse().ok())
        .next()
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    format!("generation {generation} pid {}\n", std::process::id())
}
