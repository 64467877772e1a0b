//! The server on the crate's front page (README.md): HTTP on the inherited
//! listener, with the drain kit. Run it with
//! `supervisor -l http=127.0.0.1:8080 --ready notify -- target/debug/examples/hello`;
//! hot-supervisor's tests/children.rs reloads it under load and checks
//! that the README shows this very code.
use std::io::{Read, Write};
use supervisor_child::{Listeners, drain::Drain, generation};

fn main() -> std::io::Result<()> {
    let listener = Listeners::from_env()?
        .take_tcp_listener("http")?
        .expect("no inherited listener");
    listener.set_nonblocking(true)?;
    let drain = Drain::install()?; // SIGTERM now begins the drain
    drain.ready()?; // READY=1: the supervisor may route connections here
    let body = format!("hello from generation {}\n", generation().unwrap_or(0));
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    while drain.wait_acceptable(&listener)? {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let _request = drain.request(); // counted until answered
        let _ = stream.read(&mut [0; 4096]);
        let _ = stream.write_all(reply.as_bytes());
    }
    drop(listener); // stop accepting: the next generation has the socket
    drain.wait(); // STOPPING=1 sent; requests in flight answered
    Ok(())
}
