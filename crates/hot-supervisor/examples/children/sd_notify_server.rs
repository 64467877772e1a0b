//! A tokio HTTP server that takes its listener by name and reports readiness
//! with the `sd-notify` crate.
//!
//! ```sh
//! supervisor -l http=127.0.0.1:8080 --ready notify -- target/debug/examples/sd_notify_server
//! ```
//!
//! It serves the inherited socket named `http` (from `LISTEN_FDNAMES`),
//! answers every request with `generation <G> pid <PID>`, sends `READY=1`
//! once it accepts, and on SIGTERM stops accepting, sends `STOPPING=1`,
//! finishes the requests in flight and exits 0. Every response says
//! `Connection: close`, so a drain never has to close an idle keep-alive
//! connection that a client may be about to reuse.

use std::env;
use std::io;
use std::os::fd::FromRawFd;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

fn main() -> io::Result<()> {
    // Checks that LISTEN_PID is this process and sets FD_CLOEXEC on the fds.
    let fd = sd_notify::listen_fds_with_names()?
        .find(|(_, name)| name == "http")
        .map(|(fd, _)| fd)
        .ok_or_else(|| {
            io::Error::other("no listener named \"http\": run me under `supervisor -l http=ADDR`")
        })?;
    // SAFETY: `fd` is a listening socket this process inherited (LISTEN_PID
    // is ours), it is open, and nothing else in the process owns it: it is
    // taken exactly once, here.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listener))
}

async fn serve(listener: std::net::TcpListener) -> io::Result<()> {
    // tokio needs a non-blocking socket. O_NONBLOCK is shared with the other
    // generations, which is fine: they all poll before they accept.
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let generation = env::var("SUPERVISOR_GENERATION").unwrap_or_default();
    // Taken over before READY=1: from then on SIGTERM means "drain".
    let mut sigterm = signal(SignalKind::terminate())?;
    let status = format!("serving generation {generation}");
    sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)])?;

    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(respond(stream, generation.clone()));
                }
                Err(err) => {
                    eprintln!("sd_notify_server: accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
    // Closes this process's copy only (never `shutdown()` a shared socket):
    // the next generation goes on accepting from the same queue.
    drop(listener);
    sd_notify::notify(&[NotifyState::Stopping])?;
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Reads one request head (this server ignores the rest) and answers it.
async fn respond(mut stream: TcpStream, generation: String) -> io::Result<()> {
    let mut head = BufReader::new((&mut stream).take(16 * 1024)).lines();
    loop {
        match head.next_line().await? {
            Some(line) if line.is_empty() => break,
            Some(_) => {}
            None => return Ok(()), // closed before a whole request
        }
    }
    let body = format!("generation {generation} pid {}\n", std::process::id());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}
