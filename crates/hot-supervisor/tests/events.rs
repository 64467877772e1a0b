//! `supervisor events`, `--log-format json` and `--max-generations`: the
//! lifecycle as typed events, in order, over the control socket; a client
//! that never reads slows nothing; the generation cap cuts the oldest
//! draining generation and says what it held.

use super::common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::*;

/// The Python example server through `sh`: a configuration file saying
/// `bad` makes a generation fail at start.
fn start(config: &Path, extra: &[&str]) -> Supervisor {
    Supervisor::builder()
        .tcp()
        .notify()
        .drain_timeout("10s")
        .args(extra)
        .command(python_server_unless_bad(config))
        .start()
}

#[test]
fn every_event_of_a_successful_and_a_failed_reload_arrives_in_order() {
    let dir = TempDir::new("events-order");
    let config = dir.path("app.conf");
    std::fs::write(&config, "good\n").unwrap();
    let mut sv = start(&config, &[]);
    sv.wait_active(1);
    let ev = sv.events();
    let load = Load::start_closing(sv.listener_addr(0), 4, Duration::from_secs(120));
    load.expect_served(1, 20, "generation 1");

    // A reload that succeeds.
    assert_eq!(sv.reload_and_wait().code, Some(0));
    let all = ev.wait("generation 1 exited", |r| is(r, Kind::Exited, 1));
    let pid2 = sv.pid_of(2);
    let req = find(&all, 0, "reload_requested", |r| {
        r.event == Kind::ReloadRequested
            && r.source
                .as_deref()
                .is_some_and(|s| s.starts_with("control pid"))
    });
    let spawned = find(&all, req, "spawned 2", |r| is(r, Kind::Spawned, 2));
    assert_eq!(all[spawned].pid, Some(pid2));
    // New connections go to it as it is found ready: the switch, then
    // the ready event that tells it.
    let switched = find(&all, spawned, "switched 2", |r| is(r, Kind::Switched, 2));
    let ready = find(&all, switched, "ready 2", |r| is(r, Kind::Ready, 2));
    assert_eq!(all[ready].replaced, Some(1));
    assert!(all[ready].duration_ms.is_some_and(|d| d > 0.0));
    let quiescing = find(&all, ready, "quiescing 1", |r| is(r, Kind::Quiescing, 1));
    let stopping = find(&all, quiescing, "stopping 1", |r| is(r, Kind::Stopping, 1));
    let exited = find(&all, stopping, "exited 1", |r| is(r, Kind::Exited, 1));
    assert_eq!(all[exited].reason.as_deref(), Some("drained"));
    find(&all, ready, "reload_succeeded 2", |r| {
        is(r, Kind::ReloadSucceeded, 2)
    });
    for k in [
        Kind::Spawned,
        Kind::Switched,
        Kind::Ready,
        Kind::ReloadSucceeded,
    ] {
        let n = all.iter().filter(|r| r.event == k).count();
        assert_eq!(n, 1, "one {k:?} per reload: {all:#?}");
    }
    assert!(
        !all.iter().any(|r| r.event == Kind::ReloadFailed),
        "{all:#?}"
    );
    let seen = all.len();

    // A reload that fails: generation 3 exits at start, 2 still serves.
    std::fs::write(&config, "bad\n").unwrap();
    assert_eq!(sv.reload_and_wait().code, Some(1));
    let all = ev.wait("reload_failed", |r| r.event == Kind::ReloadFailed);
    let req = find(&all, seen, "reload_requested", |r| {
        r.event == Kind::ReloadRequested
    });
    let spawned = find(&all, req, "spawned 3", |r| is(r, Kind::Spawned, 3));
    let failed = find(&all, spawned, "start_failed 3", |r| {
        is(r, Kind::StartFailed, 3)
    });
    assert!(
        all[failed]
            .reason
            .as_deref()
            .is_some_and(|w| w.contains("exited")),
        "{:?}",
        all[failed]
    );
    let answer = find(&all, spawned, "reload_failed 3", |r| {
        is(r, Kind::ReloadFailed, 3)
    });
    assert!(all[answer].reason.is_some());
    assert!(
        !all[seen..].iter().any(|r| r.event == Kind::Switched),
        "nothing switched: {all:#?}"
    );
    assert_eq!(sv.status().in_state("active").unwrap().generation, 2);
    load.expect_served(2, 20, "generation 2 after the failed reload");
    load.finish_clean("events of two reloads", 40);

    // The stream ends with the supervisor, after an exit event.
    assert_eq!(sv.terminate(), Some(0));
    wait_until(WAIT, || ev.ended().then_some(())).expect("the stream ends at exit");
    assert_eq!(ev.all().last().map(|r| r.event), Some(Kind::Exit));
}

#[test]
fn the_events_command_prints_json_lines_until_the_supervisor_exits() {
    let mut sv = Supervisor::builder().tcp().notify().demo(&[]).start();
    sv.wait_active(1);
    let mut client = std::process::Command::new(supervisor_bin())
        .args(["events", "--json", "--control"])
        .arg(&sv.control)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(client.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    let out = BufReader::new(client.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in out.lines() {
            let r: Record = serde_json::from_str(&line.unwrap()).unwrap();
            if tx.send(r).is_err() {
                break;
            }
        }
    });
    // The client subscribes when it gets to it: reload until a reload's
    // events come.
    let mut got = Vec::new();
    for _ in 0..20 {
        assert_eq!(sv.reload_and_wait().code, Some(0));
        while let Ok(r) = rx.recv_timeout(Duration::from_millis(500)) {
            got.push(r.event);
            if r.event == Kind::ReloadSucceeded {
                break;
            }
        }
        if got.contains(&Kind::ReloadSucceeded) {
            break;
        }
    }
    assert!(got.contains(&Kind::Ready), "{got:?}");
    assert_eq!(sv.terminate(), Some(0));
    // The rest, until the client's end of stream.
    let rest: Vec<Kind> = rx.iter().map(|r| r.event).collect();
    assert_eq!(rest.last(), Some(&Kind::Exit), "{rest:?}");
    assert_eq!(client.wait().unwrap().code(), Some(0));
    reader.join().unwrap();
    drop(guard);
}

/// Kills a process by pid when dropped (a test that fails midway leaves
/// nothing running).
struct ChildGuard(i32);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn a_subscriber_that_never_reads_slows_no_reload_and_is_dropped() {
    // A child ready at once (`--ready delay:1ms`): many reloads quickly.
    let sv = Supervisor::builder()
        .tcp()
        .ready("delay:1ms")
        .drain_timeout("5s")
        .args(["--quiesce", "0ms"])
        .sleeper()
        .start();
    sv.wait_active(1);
    // Subscribed, then never read: the kernel's buffer fills, then the
    // supervisor's bound.
    let mut idle = UnixStream::connect(&sv.control).unwrap();
    idle.write_all(b"events\n").unwrap();
    let reader = sv.events();
    // Each reload is answered (the loop never waits for the idle
    // subscriber). A reload makes about 800 bytes of events: 400 of them
    // are more than the socket's buffer and the supervisor's bound
    // (64 KiB) together.
    let reloads = 400;
    for i in 0..reloads {
        let a = sv.reload_and_wait();
        assert_eq!(a.code, Some(0), "reload {i}: {a:?}");
    }
    // Everything reached the reading subscriber, in full.
    let all = reader.wait("the last reload's answer", |r| {
        r.event == Kind::ReloadSucceeded && r.generation == Some(reloads as u64 + 1)
    });
    assert_eq!(
        all.iter()
            .filter(|r| r.event == Kind::ReloadSucceeded)
            .count(),
        reloads
    );
    // The idle one was dropped: after what the buffers held, its stream
    // has ended (read now, without waiting), while the reader's has not.
    idle.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0;
    let ended = loop {
        match std::io::Read::read(&mut idle, &mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(_) => break false,
        }
    };
    assert!(
        ended,
        "the idle subscriber is still subscribed after {got} bytes"
    );
    assert!(got > 0 && got < 400 * 800, "{got} bytes");
    // Not dropped at once: it got what the socket's buffer held (about
    // 26 kB of events here), not one event.
    assert!(got >= 8 * 1024, "dropped early: {got} bytes");
    assert!(!reader.ended());
}

#[test]
fn json_logs_are_one_object_per_line_with_the_events_fields() {
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .args(["--log-format", "json"])
        .demo(&[])
        .start();
    sv.wait_active(1);
    assert_eq!(sv.reload_and_wait().code, Some(0));
    let pid2 = sv.pid_of(2);
    assert_eq!(sv.terminate(), Some(0));
    // The supervisor's lines (the demo server writes its own, as text).
    let lines: Vec<serde_json::Value> = sv
        .output()
        .lines()
        .filter(|l| !l.starts_with("demo_server["))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert!(lines.len() > 5);
    for l in &lines {
        for key in ["time", "level", "message"] {
            assert!(l[key].is_string(), "{key} in {l}");
        }
    }
    let ready = lines
        .iter()
        .find(|l| l["event"] == "ready" && l["generation"] == 2)
        .unwrap_or_else(|| panic!("no ready line for generation 2: {lines:#?}"));
    assert_eq!(ready["pid"], pid2);
    assert_eq!(ready["replaced"], 1);
    assert!(ready["duration_ms"].as_f64().is_some_and(|d| d > 0.0));
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "spawned" && l["generation"] == 2 && l["pid"] == pid2)
    );
    assert!(lines.iter().any(|l| {
        l["event"] == "reload_requested"
            && l["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("control pid"))
    }));
}

#[test]
fn the_generation_cap_cuts_the_oldest_draining_generation_and_says_what_it_held() {
    // Idle keep-alive connections are kept for 120 s while draining (long
    // polls, streams): without a cap every replaced generation would stay.
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .drain_timeout("120s")
        .args(["--max-generations", "2", "--health", "127.0.0.1:0"])
        .demo(&["--idle-grace", "120s"])
        .start();
    sv.wait_active(1);
    let ev = sv.events();
    let addr = sv.listener_addr(0);
    let load = Load::start_closing(addr, 4, Duration::from_secs(120));
    let mut held = Vec::new();
    for g in 1..=5u64 {
        // Three long-lived connections on the serving generation.
        for _ in 0..3 {
            let mut c = Client::new(addr);
            match c.get("/") {
                Reply::Ok { generation, .. } => assert_eq!(generation, g),
                Reply::Failed(e) => panic!("generation {g}: {e}"),
            }
            held.push(c);
        }
        assert_eq!(sv.reload_and_wait().code, Some(0), "reload {g}");
        let st = sv.status();
        assert!(st.generations.len() <= 2, "after reload {g}: {st:?}");
        // The replaced one keeps its connections, and status counts them.
        let old = sv.wait_status(
            "the replaced generation's connections",
            WAIT,
            |st: &Status| {
                st.generations
                    .iter()
                    .find(|x| x.generation == g && x.connections == Some(3))
                    .cloned()
            },
        );
        assert!(
            matches!(old.state.as_str(), "quiescing" | "draining"),
            "{old:?}"
        );
    }
    // Reloads 2 to 5 each cut the generation before the one they replaced,
    // which still held its three connections.
    let all = ev.wait("the fourth cut", |r| is(r, Kind::GenerationCap, 4));
    let cuts: Vec<&Record> = all
        .iter()
        .filter(|r| r.event == Kind::GenerationCap)
        .collect();
    assert_eq!(
        cuts.iter()
            .map(|r| r.generation.unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for c in &cuts {
        assert!(c.connections.is_some_and(|n| n >= 3), "{c:?}");
        assert!(c.pid.is_some());
    }
    for g in 1..=4 {
        let k = find(&all, 0, "killed", |r| is(r, Kind::GenerationCap, g));
        find(&all, k, "its exit", |r| is(r, Kind::Exited, g));
    }
    assert_eq!(sv.status().generations.len(), 2);
    // Counted in /metrics.
    let health = sv.health_addr();
    let (code, text) = http_get(health, "/metrics").unwrap();
    assert_eq!(code, 200);
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert_eq!(sample("supervisor_generations_cut_total "), 4.0);
    assert!(sample("supervisor_connections_cut_total ") >= 12.0);
    drop(held);
    load.finish_clean("five reloads with a cap of 2", 40);
}

#[test]
fn an_upgrade_in_place_ends_the_stream_after_its_event_and_a_new_one_follows_on() {
    let sv = Supervisor::builder().tcp().notify().demo(&[]).start();
    sv.wait_active(1);
    let ev = sv.events();
    let out = sv.ctl(&["upgrade", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_until(WAIT, || ev.ended().then_some(())).expect("the stream ends at the upgrade");
    let all = ev.all();
    assert_eq!(all.last().map(|r| r.event), Some(Kind::Upgrade), "{all:#?}");
    assert_eq!(all.last().unwrap().pid, Some(sv.pid));
    // The new image streams to a new subscriber.
    let again = sv.events();
    assert_eq!(sv.reload_and_wait().code, Some(0));
    again.wait("the reload after the upgrade", |r| {
        is(r, Kind::ReloadSucceeded, 2)
    });
}

#[test]
fn a_takeover_ends_the_stream_after_its_event_naming_the_new_supervisor() {
    let dir = TempDir::new("events-takeover");
    let mut old = Supervisor::builder()
        .listen("127.0.0.1:0")
        .control(dir.path("c.sock"))
        .notify()
        .demo(&[])
        .start();
    old.wait_active(1);
    let ev = old.events();
    let mut cmd = std::process::Command::new(supervisor_bin());
    cmd.arg("--takeover")
        .arg(&old.control)
        .arg("--control")
        .arg(&old.control)
        .arg("--")
        .arg(demo());
    let mut new = Supervisor::start_with(&mut cmd);
    wait_until(WAIT, || ev.ended().then_some(())).expect("the stream ends at the takeover");
    let all = ev.all();
    let last = all.last().expect("events");
    assert_eq!(last.event, Kind::Takeover, "{all:#?}");
    assert_eq!(last.pid, Some(new.pid));
    // The old supervisor goes once the new one serves; the new one streams.
    assert_eq!(old.wait_exit(WAIT).code(), Some(0), "{}", old.output());
    let again = new.events();
    assert_eq!(new.reload_and_wait().code, Some(0));
    again.wait("a reload by the new supervisor", |r| {
        is(r, Kind::ReloadSucceeded, 2)
    });
    assert_eq!(new.terminate(), Some(0));
}
