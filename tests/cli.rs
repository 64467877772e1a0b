//! Bad input: a one-line error on stderr naming the problem, a non-zero
//! exit, nothing left running or bound.

mod common;

use std::process::{Command, Output};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(supervisor_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run supervisor")
}

/// Exit code and the single stderr line.
fn fails(args: &[&str]) -> (i32, String) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "want one stderr line for {args:?}, got:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout for {args:?}: {:?}",
        out.stdout
    );
    (out.status.code().expect("exit code"), lines[0].to_string())
}

#[test]
fn unparsable_listen_address() {
    let (code, line) = fails(&["-l", "nonsense", "--", "true"]);
    assert_eq!(code, 2);
    assert!(line.starts_with("supervisor: error: "), "{line}");
    assert!(line.contains("invalid address 'nonsense'"), "{line}");
    let (code, line) = fails(&["-l", "127.0.0.1:99999", "--", "true"]);
    assert_eq!(code, 2);
    assert!(line.contains("port '99999'"), "{line}");
}

#[test]
fn bad_durations_signals_and_modes() {
    for (args, want) in [
        (vec!["--drain-timeout", "30", "--", "true"], "no unit"),
        (
            vec!["--stop-signal", "FOO", "--", "true"],
            "'FOO' is not a signal name",
        ),
        (
            vec!["--ready", "soon", "--", "true"],
            "'soon' is not a ready mode",
        ),
        (vec!["--restart", "sometimes", "--", "true"], "sometimes"),
        (vec!["--bogus-flag", "--", "true"], "--bogus-flag"),
    ] {
        let (code, line) = fails(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(line.contains(want), "{args:?}: {line}");
    }
}

#[test]
fn port_in_use_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("inuse");
    let sock = dir.path("first.sock");
    let sock_arg = format!("unix:{}", sock.display());
    let (code, line) = fails(&["-l", &sock_arg, "-l", &addr, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(
        line.contains(&format!("bind {addr}")) && line.contains("Address already in use"),
        "{line}"
    );
    // The listener bound before the failure was closed and its file removed.
    assert!(
        !sock.exists(),
        "socket file left behind after a failed start"
    );
}

#[test]
fn missing_command() {
    let (code, line) = fails(&["-l", "127.0.0.1:0", "--", "/nonexistent/server"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("command not found: /nonexistent/server"),
        "{line}"
    );
    let (code, line) = fails(&["--", "no-such-server-binary"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("command not found: no-such-server-binary"),
        "{line}"
    );
}

#[test]
fn no_command() {
    let (code, line) = fails(&["-l", "127.0.0.1:0"]);
    assert_eq!(code, 2);
    assert!(line.contains("no command given"), "{line}");
}

#[test]
fn unix_socket_of_a_live_process_is_refused_a_stale_one_replaced() {
    let dir = TempDir::new("unix");
    let path = dir.path("live.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let arg = format!("unix:{}", path.display());
    let (code, line) = fails(&["-l", &arg, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(line.contains("is in use by a running process"), "{line}");
    assert!(path.exists(), "the live socket's file was removed");
    drop(live); // Now the file is stale: nobody accepts on it.
    let mut sv = Supervisor::start(&["-l", &arg, "--ready", "delay:10ms", "--", "sleep", "300"]);
    sv.wait_ready(1, std::time::Duration::from_secs(20));
    assert!(sv.has_line("removing stale socket file"));
    std::os::unix::net::UnixStream::connect(&path).expect("connect to the new socket");
    sv.signal(libc::SIGTERM);
    assert_eq!(
        sv.wait_exit(std::time::Duration::from_secs(20)).code(),
        Some(143)
    );
    assert!(!path.exists());

    let plain = dir.path("plain");
    std::fs::write(&plain, "x").unwrap();
    let (code, line) = fails(&["-l", &format!("unix:{}", plain.display()), "--", "true"]);
    assert_eq!(code, 1);
    assert!(line.contains("exists and is not a socket"), "{line}");
}
