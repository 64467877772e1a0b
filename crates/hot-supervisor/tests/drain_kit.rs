//! The drain kit (`supervisor_child::drain`) in real servers under the real
//! supervisor: the demo server (std) and the axum examples.
//!
//! - keep-alive load over ten reloads: the axum server on the kit loses no
//!   request; the same server with axum's stock graceful shutdown is
//!   measured beside it (its losses printed, not asserted);
//! - a second stop signal forces the exit at once;
//! - the drain deadline comes from `SUPERVISOR_DRAIN_TIMEOUT_MS`;
//! - `STOPPING=1` and `STATUS=` progress reach the supervisor;
//! - the health state turns to 503 `draining` at the first signal.
//!
//! The axum server on the kit needs the child library's `axum` feature: its
//! tests are ignored, and `.ci/run` builds the example (`cargo build -p
//! supervisor-child --features axum --examples`) and runs them with
//! `--ignored`.

use super::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Builder, Events, Kind, Load, Supervisor, WAIT, example, wait_gone};
use supervisor_child::protocol::SUPERVISOR_DRAIN_TIMEOUT_MS;

/// Reloads under keep-alive load.
const RELOADS: u64 = 10;
/// Concurrent keep-alive clients.
const CLIENTS: usize = 8;

/// The axum example on the kit. It needs the child library's `axum`
/// feature, so a plain `cargo test` does not build it: the tests that run
/// it are ignored, and `.ci/run` builds it and runs them.
fn axum_kit() -> PathBuf {
    example("axum_kit")
}

/// What ten reloads under keep-alive load cost one server.
struct Measured {
    ok: u64,
    failures: Vec<String>,
}

/// `RELOADS` reloads (SIGHUP) of `server` under keep-alive load from
/// `CLIENTS` persistent connections, each sending its next request as soon
/// as the previous answer arrives. After each reload: the new generation
/// serves, and the old one exits and is reaped.
fn reload_under_keep_alive(name: &str, server: &PathBuf) -> Measured {
    let sv = Supervisor::builder()
        .listen("http=127.0.0.1:0")
        .notify()
        .drain_timeout("10s")
        .command([server])
        .start();
    let mut old_pid = sv.wait_active(1);
    let events = sv.events();
    let load = Load::start(sv.listener_addr(0), CLIENTS, Duration::from_secs(240));
    load.expect_served(1, 50, &format!("{name}: first generation"));
    for g in 2..=RELOADS + 1 {
        sv.signal(libc::SIGHUP);
        let pid = sv.wait_active(g);
        load.expect_served(g, 50, &format!("{name}: traffic to generation {g}"));
        let exited = events.first_of(Kind::Exited, g - 1);
        assert_eq!(
            (exited.pid, exited.reason.as_deref()),
            (Some(old_pid), Some("drained")),
            "{name}: {exited:?}"
        );
        assert!(
            wait_gone(old_pid, WAIT),
            "{name}: generation {} (pid {old_pid}) was not reaped",
            g - 1
        );
        old_pid = pid;
    }
    let stats = load.finish();
    let failures = stats.failures.lock().unwrap().clone();
    let ok = stats.ok.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{name}: {RELOADS} reloads, {CLIENTS} keep-alive clients: {ok} requests answered, {} failed",
        failures.len()
    );
    Measured { ok, failures }
}

/// The kit's claim, with the stock shutdown measured beside it (one test,
/// so that the two load runs never overlap).
#[test]
#[ignore = "needs the axum_kit example: cargo build -p supervisor-child --features axum --examples"]
fn axum_on_the_kit_loses_no_keep_alive_request_over_ten_reloads() {
    let stock = reload_under_keep_alive("axum, stock graceful shutdown", &example("axum_stock"));
    // Measured, not asserted: how many requests hyper's at-once close of
    // idle connections costs.
    eprintln!(
        "benchmark: axum stock graceful shutdown lost {} of {} requests over {RELOADS} reloads{}",
        stock.failures.len(),
        stock.ok + stock.failures.len() as u64,
        stock
            .failures
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    let kit = reload_under_keep_alive("axum on the drain kit", &axum_kit());
    assert!(
        kit.failures.is_empty(),
        "the kit lost {} requests ({} ok):\n{}",
        kit.failures.len(),
        kit.ok,
        kit.failures.join("\n")
    );
    eprintln!(
        "benchmark: axum on the drain kit lost 0 of {} requests over {RELOADS} reloads",
        kit.ok
    );
}

/// One keep-alive HTTP/1.1 connection that tells the status code and the
/// close (the harness's client wants 200s only).
struct Raw {
    reader: BufReader<TcpStream>,
}

/// An HTTP answer: status code, whether it closes, the body.
#[derive(Debug)]
struct Answer {
    code: u16,
    close: bool,
    body: String,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Raw {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a request without reading the answer.
    fn send(&mut self, path: &str) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
    }

    fn read_answer(&mut self) -> Answer {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let code = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let (mut length, mut close) = (0, false);
        loop {
            let mut header = String::new();
            self.reader.read_line(&mut header).unwrap();
            let header = header.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            } else if let Some(v) = header.strip_prefix("connection:") {
                close = v.trim() == "close";
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        Answer {
            code,
            close,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn get(&mut self, path: &str) -> Answer {
        self.send(path);
        self.read_answer()
    }
}

/// Reloads, then waits until generation 1 (pid `old`) has told the
/// supervisor it is stopping: its stop signal arrived and the kit sent
/// `STOPPING=1` (which only the log tells). Subscribed to the events
/// first: they follow generation 1 to its end.
fn reload_until_stopping(sv: &Supervisor, old: i32) -> Events {
    let events = sv.events();
    sv.signal(libc::SIGHUP);
    sv.wait_active(2);
    sv.wait_line(&format!("generation 1 (pid {old}) is stopping"), WAIT);
    events
}

/// How generation 1 (pid `old`) ended: its exit event's status, once it
/// has drained.
fn drained_status(events: &Events, old: i32) -> String {
    let exited = events.first_of(Kind::Exited, 1);
    assert_eq!(
        (exited.pid, exited.reason.as_deref()),
        (Some(old), Some("drained")),
        "{exited:?}"
    );
    exited.status.expect("how it exited")
}

fn demo_builder() -> Builder {
    Supervisor::builder().listen("http=127.0.0.1:0").notify()
}

/// The health state is 200 `ready` while serving and 503 `draining` from
/// the first stop signal on, asked on a keep-alive connection kept open
/// through the idle grace period; the draining answer closes it.
fn health_flips_at_the_first_signal(sv: &Supervisor) {
    let old = sv.wait_active(1);
    let mut conn = Raw::connect(sv.listener_addr(0));
    let ready = conn.get("/healthz");
    assert_eq!((ready.code, ready.close), (200, false), "{ready:?}");
    assert_eq!(ready.body.trim(), "ready");
    let events = reload_until_stopping(sv, old);
    let draining = conn.get("/healthz");
    assert_eq!((draining.code, draining.close), (503, true), "{draining:?}");
    assert_eq!(draining.body.trim(), "draining");
    drop(conn);
    assert!(wait_gone(old, WAIT), "generation 1 did not exit");
    assert_eq!(drained_status(&events, old), "exited with status 0");
}

#[test]
fn demo_health_flips_to_draining_at_the_first_signal() {
    let sv = demo_builder()
        .drain_timeout("30s")
        .demo(&["--idle-grace", "30s"])
        .start();
    health_flips_at_the_first_signal(&sv);
}

#[test]
#[ignore = "needs the axum_kit example: cargo build -p supervisor-child --features axum --examples"]
fn axum_kit_health_flips_to_draining_at_the_first_signal() {
    let kit = axum_kit();
    // The kit's default grace period (1 s) is enough: the health request is
    // sent right after the stopping line.
    let sv = demo_builder().drain_timeout("30s").command([kit]).start();
    health_flips_at_the_first_signal(&sv);
}

/// A request that takes 20 s is in flight on generation 1 when it is
/// stopped; returns the connection carrying it, generation 1's pid and
/// the events since the reload, once generation 1 is draining.
fn slow_request_then_reload(sv: &Supervisor) -> (Raw, i32, Events) {
    let old = sv.wait_active(1);
    let mut slow = Raw::connect(sv.listener_addr(0));
    slow.send("/?delay=20000");
    let events = reload_until_stopping(sv, old);
    (slow, old, events)
}

/// STOPPING=1 and then the kit's progress reach the supervisor; a second
/// stop signal to the child makes it exit at once (128 + SIGTERM), not
/// after the 20 s request.
#[test]
fn second_stop_signal_forces_the_exit_at_once() {
    let sv = demo_builder().drain_timeout("30s").demo(&[]).start();
    let (_slow, old, events) = slow_request_then_reload(&sv);
    // Its progress (STATUS=), as the status shows it.
    sv.wait_status("generation 1's drain progress", WAIT, |st| {
        let g = st.generations.iter().find(|g| g.generation == 1)?;
        (g.pid == Some(old)
            && g.status.as_deref() == Some("draining: 1 request in flight, 1 connection open"))
        .then_some(())
    });
    let forced = Instant::now();
    // SAFETY: kill(2) on generation 1, a child of our supervisor that has
    // not been reaped (it is still draining).
    assert_eq!(unsafe { libc::kill(old, libc::SIGTERM) }, 0);
    assert!(
        wait_gone(old, Duration::from_secs(5)),
        "generation 1 still running 5 s after the second SIGTERM"
    );
    let took = forced.elapsed();
    assert_eq!(drained_status(&events, old), "exited with status 143");
    assert!(took < Duration::from_secs(2), "forced exit took {took:?}");
}

/// With the supervisor's drain timeout at 3 s, the demo server's drain
/// deadline is 2.7 s (a tenth kept as a margin): a request still in flight
/// then ends the drain with exit status 1, before the supervisor's SIGKILL.
#[test]
fn drain_deadline_comes_from_the_supervisor_variable() {
    // Passed through the supervisor's environment here; a supervisor that
    // sets it itself from --drain-timeout gives the same value.
    let sv = demo_builder()
        .drain_timeout("3s")
        .env(SUPERVISOR_DRAIN_TIMEOUT_MS, "3000")
        .demo(&[])
        .start();
    // The demo server logs the deadline it took at its start.
    sv.wait_line("drain deadline 2700ms", WAIT);
    let (_slow, old, events) = slow_request_then_reload(&sv);
    let stopping = Instant::now();
    sv.wait_line(
        &format!(
            "demo_server[{old}]: drain deadline passed with 1 request in flight and 1 connection open"
        ),
        WAIT,
    );
    let took = stopping.elapsed();
    assert_eq!(drained_status(&events, old), "exited with status 1");
    assert!(
        took < Duration::from_millis(2900),
        "the drain outlived its deadline: {took:?}"
    );
}
