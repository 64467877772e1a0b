//! A child that fetches its listeners from the supervisor that started it
//! with the child library (`supervisor_child::fetch_listeners`, which takes
//! the child's own channel when it has one), checks that they are the
//! sockets it inherited at fds 3, 4, ..., asks the channel for a `reload` and
//! a `stop` (which must be refused), and writes what it found to the file named by
//! its one argument as one JSON object, before it says `READY=1` and
//! sleeps until its stop signal. A fixture of the tests.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;

/// The inode of the socket at `fd`.
fn inode(fd: i32) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0)
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: fetch_own OUT.json");
    let control = supervisor_child::control_path().expect("SUPERVISOR_CONTROL");
    let (fetched, error) = match supervisor_child::fetch_listeners(&control, &[]) {
        Ok(f) => (f, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let same: Vec<bool> = fetched
        .iter()
        .enumerate()
        .map(|(i, f)| inode(f.fd.as_raw_fd()) == inode(3 + i as i32))
        .collect();
    // The channel refuses anything but fds.
    let ask = |request: &str| {
        supervisor_child::channel().map(|fd| {
            // SAFETY: dup(2) of the open channel; the copy is ours.
            let dup = unsafe { libc::dup(fd) };
            assert!(dup >= 0, "dup the channel");
            // SAFETY: `dup` is a new descriptor nothing else owns.
            let mut s = unsafe { UnixStream::from_raw_fd(dup) };
            s.write_all(format!("{request}\n").as_bytes()).unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            String::from_utf8_lossy(&line).into_owned()
        })
    };
    let (reload, stop) = (ask("reload"), ask("stop"));
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let json = serde_json::json!({
        "uid": uid,
        "fetched": fetched.len(),
        "same": same,
        "error": error,
        "reload": reload,
        "stop": stop,
    });
    std::fs::write(&out, format!("{json}\n")).expect("write the result");
    let _ = supervisor_child::ready();
    loop {
        std::thread::park();
    }
}
