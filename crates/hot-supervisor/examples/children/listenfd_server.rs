//! A tokio HTTP server that takes its listener with the `listenfd` crate.
//!
//! ```sh
//! supervisor -l 127.0.0.1:8080 --ready notify -- target/debug/examples/listenfd_server
//! ```
//!
//! It answers every request with `generation <G> pid <PID>`, sends `READY=1`
//! once it accepts, and on SIGTERM stops accepting, finishes the requests in
//! flight and exits 0. Every response says `Connection: close`, so a drain
//! never has to close an idle keep-alive connection that a client may be
//! about to reuse.

use std::env;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use listenfd::ListenFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

fn main() -> io::Result<()> {
    // Before any thread exists: `from_env` removes LISTEN_FDS and LISTEN_PID
    // from the environment.
    let listener = ListenFd::from_env()
        .take_tcp_listener(0)?
        .ok_or_else(|| io::Error::other("no listener at fd 3: run me under the supervisor"))?;
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
    notify("READY=1")?;

    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(respond(stream, generation.clone()));
                }
                Err(err) => {
                    eprintln!("listenfd_server: accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
    // Closes this process's copy only (never `shutdown()` a shared socket):
    // the next generation goes on accepting from the same queue.
    drop(listener);
    notify("STOPPING=1")?;
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

/// Sends one `sd_notify` datagram to `$NOTIFY_SOCKET` (a path, or `@name` in
/// the abstract namespace); does nothing when the variable is not set.
fn notify(state: &str) -> io::Result<()> {
    let Some(path) = env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let addr = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}
