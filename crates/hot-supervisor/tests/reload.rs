//! Hot reloads under load: zero failed requests, traffic moves to each new
//! generation, failing new generations roll back, stubborn old ones are
//! killed after the drain timeout.

use super::common;

use std::time::Duration;

use common::*;

const T: Duration = WAIT;

#[test]
fn demo_server_reloads_ten_times_under_load_without_a_failed_request() {
    let mut sv = Supervisor::builder()
        .listen("http=127.0.0.1:0")
        .notify()
        .drain_timeout("10s")
        .demo(&[])
        .start();
    let ok = reload_under_load("demo server", &sv, 10, 24, 20, |_| {});
    assert!(ok > 1000, "only {ok} requests over 10 reloads");
    assert_eq!(
        sv.terminate(),
        Some(0),
        "the demo server drains and exits 0"
    );
}

#[test]
fn python_child_reloads_ten_times_under_load_without_a_failed_request() {
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        panic!("python3 is required for this test (install it: apt-get install python3)");
    }
    // Python's standard library only; it checks LISTEN_PID and sends
    // READY=1 itself.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/children/python/server.py");
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .drain_timeout("10s")
        .command(["python3", script.to_str().unwrap()])
        .start();
    reload_under_load("python", &sv, 10, 16, 20, |_| {});
    assert_eq!(sv.terminate(), Some(0));
}

/// A launcher script whose behaviour a test switches through a file, as a
/// deploy switches releases: `ok`, `exit` (fails at start) or `never`
/// (serves but never reports ready).
fn switchable(dir: &TempDir) -> std::path::PathBuf {
    let demo = example("demo_server");
    let script = dir.path("release.sh");
    let mode = dir.path("mode");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$(cat {mode})\" in\n  exit) echo 'broken release' >&2; exit 1;;\n  never) exec {demo} --never-ready;;\nesac\nexec {demo}\n",
            mode = mode.display(),
            demo = demo.display()
        ),
    )
    .unwrap();
    std::fs::write(&mode, "ok").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn failing_new_generations_roll_back_while_the_old_one_keeps_serving() {
    let dir = TempDir::new("rollback");
    let script = switchable(&dir);
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .ready_timeout("1s")
        .drain_timeout("5s")
        .command([&script])
        .start();
    let gen1 = sv.wait_active(1);
    let events = sv.events();
    let load = Load::start(sv.listener_addr(0), 16, Duration::from_secs(120));
    load.expect_served(1, 50, "before the reloads");

    // A release that exits at start. (It is gone before the status could
    // show it: its pid is in its spawned event.)
    std::fs::write(dir.path("mode"), "exit").unwrap();
    sv.signal(libc::SIGHUP);
    let failed = events.first_of(Kind::ReloadFailed, 2);
    assert_eq!(
        failed.reason.as_deref(),
        Some("exited with status 1 before it was ready"),
        "{failed:?}"
    );
    let gen2 = events.first_of(Kind::Spawned, 2).pid.expect("a pid");
    assert!(wait_gone(gen2, T), "failed generation 2 was not reaped");
    // Generation 1 still serves.
    assert_eq!(sv.active_pid(), gen1);
    load.expect_served(1, 50, "generation 1 after the first failed reload");

    // A release that never becomes ready.
    std::fs::write(dir.path("mode"), "never").unwrap();
    sv.signal(libc::SIGHUP);
    let gen3 = sv.pid_of(3);
    let failed = events.first_of(Kind::ReloadFailed, 3);
    assert_eq!(
        failed.reason.as_deref(),
        Some("was not ready within 1s"),
        "{failed:?}"
    );
    assert_eq!(sv.active_pid(), gen1);
    let exited = events.first_of(Kind::Exited, 3);
    assert_eq!(
        (exited.pid, exited.reason.as_deref()),
        (Some(gen3), Some("drained")),
        "{exited:?}"
    );
    assert!(wait_gone(gen3, T), "failed generation 3 was not reaped");
    load.expect_served(1, 50, "generation 1 after the second failed reload");
    assert!(process_exists(gen1));
    let st = sv.wait_generations(&[(1, gen1, "active")]);
    assert_eq!((st.reloads.failed, st.reloads.succeeded), (2, 0), "{st:#?}");

    // And a good release after that takes over.
    std::fs::write(dir.path("mode"), "ok").unwrap();
    sv.signal(libc::SIGHUP);
    sv.wait_active(4);
    load.expect_served(4, 20, "the good release");
    let served = load.finish_clean("rollback", 1);
    assert!(
        !served.by_generation.contains_key(&2) && !served.by_generation.contains_key(&3),
        "{served:?}"
    );
    assert_eq!(sv.terminate(), Some(0));
    // Generation 1 was never asked to go before the good release's
    // reload: its first step out (quiescing) comes after that request.
    let all = events.until_end();
    let requests: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].event == Kind::ReloadRequested)
        .collect();
    assert_eq!(requests.len(), 3, "{all:#?}");
    let going = find(&all, 0, "generation 1 leaving", |r| {
        r.generation == Some(1) && matches!(r.event, Kind::Quiescing | Kind::Stopping)
    });
    assert!(
        going > requests[2],
        "generation 1 was asked to go before the good release: {all:#?}"
    );
}

#[test]
fn old_generation_ignoring_its_stop_signal_is_killed_with_its_process_group() {
    // The child ignores SIGTERM (and so does the grandchild it starts).
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:100ms")
        .drain_timeout("1s")
        .sh("trap '' TERM; sleep 300 & wait $!")
        .start();
    let gen1 = sv.wait_active(1);
    let grandchild = wait_child(gen1, "sleep 300");
    assert!(process_exists(grandchild));
    let events = sv.events();
    sv.signal(libc::SIGHUP);
    let gen2 = sv.wait_active(2);
    // Sent its stop signal, it outlives the drain timeout: killed, process
    // group and all, at the timeout.
    let stopping = events.first_of(Kind::Stopping, 1);
    assert_eq!(stopping.pid, Some(gen1), "{stopping:?}");
    // The operator's warning names it and the timeout.
    sv.wait_line(
        &format!("generation 1 (pid {gen1}) still running after the 1s drain timeout"),
        T,
    );
    let killed = events.first_of(Kind::Killed, 1);
    assert_eq!(
        (killed.pid, killed.reason.as_deref()),
        (Some(gen1), Some("drain timeout")),
        "{killed:?}"
    );
    let exited = events.first_of(Kind::Exited, 1);
    assert_eq!(
        exited.status.as_deref(),
        Some("killed by signal 9 (SIGKILL)"),
        "{exited:?}"
    );
    // From its stop signal to its exit: the drain timeout at least.
    let took = exited.duration_ms.expect("how long it drained");
    assert!(
        took >= 1000.0,
        "killed {took} ms after its stop signal, before the drain timeout"
    );
    assert!(wait_gone(gen1, T));
    assert!(
        wait_gone(grandchild, T),
        "the grandchild outlived its parent"
    );
    // Generation 2 is untouched by all this.
    assert_eq!(process_state(gen2).map(|s| s != 'Z'), Some(true));
    sv.wait_generations(&[(2, gen2, "active")]);
    sv.signal(libc::SIGTERM);
    sv.signal(libc::SIGTERM);
    assert_eq!(sv.wait_exit(T).code(), Some(137));
}

#[test]
fn crashed_child_is_restarted_and_queued_clients_are_served() {
    let mut sv = Supervisor::builder().tcp().notify().demo(&[]).start();
    let gen1 = sv.wait_active(1);
    let addr = sv.listener_addr(0);
    let events = sv.events();
    // SAFETY: kill(2) on the supervisor's child, which the status named.
    assert_eq!(unsafe { libc::kill(gen1, libc::SIGKILL) }, 0);
    assert!(wait_gone(gen1, T));
    // Nobody accepts now, but the socket is open: the connection waits in
    // the accept queue and generation 2 answers it.
    let mut c = Client::new(addr);
    match c.get("/") {
        Reply::Ok { generation, .. } => assert_eq!(generation, 2),
        Reply::Failed(why) => panic!("request during the restart failed: {why}"),
    }
    let exited = events.first_of(Kind::Exited, 1);
    assert_eq!(
        (
            exited.pid,
            exited.reason.as_deref(),
            exited.status.as_deref()
        ),
        (
            Some(gen1),
            Some("crashed"),
            Some("killed by signal 9 (SIGKILL)")
        ),
        "{exited:?}"
    );
    let restart = events.first("a restart", |r| r.event == Kind::Restart);
    assert_eq!(
        (restart.replaced, restart.duration_ms),
        (Some(1), Some(100.0)),
        "{restart:?}"
    );
    sv.wait_active(2);
    assert_eq!(sv.status().restarts, 1);
    assert_eq!(sv.terminate(), Some(0));
}

#[test]
fn reload_requested_during_a_start_is_queued_and_runs_after_it() {
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:2s")
        // Without READY=1 each generation starts for exactly the 2 s delay:
        // a window the reloads below surely fall into.
        .demo(&["--never-ready"])
        .start();
    sv.wait_active(1);
    let events = sv.events();
    sv.signal(libc::SIGHUP);
    sv.wait_state(2, "starting", T);
    // Three more requests while generation 2 starts: one queued reload.
    sv.signal(libc::SIGHUP);
    sv.signal(libc::SIGHUP);
    sv.signal(libc::SIGHUP);
    events.first_of(Kind::ReloadQueued, 2);
    sv.wait_active(2);
    sv.wait_active(3);
    assert_eq!(sv.terminate(), Some(0));
    // Signals may merge, but never more than one reload is queued: a
    // second queued reload would have started generation 4 the moment
    // generation 3 was ready, before the stop.
    let all = events.until_end();
    let spawned: Vec<Option<u64>> = matching(&all, |r| r.event == Kind::Spawned)
        .iter()
        .map(|r| r.generation)
        .collect();
    assert_eq!(spawned, [Some(2), Some(3)], "{all:#?}");
}
