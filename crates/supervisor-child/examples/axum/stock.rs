//! The server of `examples/axum/kit.rs` with axum's stock graceful shutdown
//! instead of the drain kit: the comparison the kit is measured against.
//!
//! ```sh
//! supervisor -l http=127.0.0.1:8080 --ready notify -- target/debug/examples/axum_stock
//! ```
//!
//! On SIGTERM, `with_graceful_shutdown` stops accepting and asks every
//! connection to shut down gracefully. hyper closes a connection that is
//! idle between two requests at once, so a client that is sending its next
//! request on it at that moment gets an EOF or a reset: under keep-alive
//! load, a few failed requests per reload (`tests/drain_kit.rs` counts
//! them).

use std::io;
use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use supervisor_child::{self as child, Listeners};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("axum_stock: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let listener = Listeners::from_env()?
        .take_tcp_listener("http")?
        .ok_or_else(|| {
            io::Error::other("no listener named \"http\": run me under the supervisor")
        })?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listener))
}

async fn serve(listener: std::net::TcpListener) -> io::Result<()> {
    let generation = child::generation().unwrap_or(0);
    // Shared with the other generations, which all poll before they accept.
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let body = format!("generation {generation} pid {}\n", std::process::id());
    let app = Router::new().route("/", get(move || async move { body }));
    child::ready()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            sigterm.recv().await;
        })
        .await?;
    eprintln!("axum_stock: drained");
    Ok(())
}
