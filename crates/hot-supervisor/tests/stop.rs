//! Stopping: exit status propagation, forced stop, no zombies, nothing
//! left behind.

use super::common;

use std::time::{Duration, Instant};

use common::*;

const T: Duration = WAIT;

/// A supervisor with `--restart never --ready READY` around `sh -c
/// SCRIPT`, run until it exits by itself: its exit code. Its log is JSON,
/// so that its lifecycle is known although it may end before anyone could
/// subscribe to its events.
fn never_restarted(ready: &str, script: &str) -> (i32, Supervisor) {
    let mut sv = Supervisor::builder()
        .restart("never")
        .ready(ready)
        .json_log()
        .sh(script)
        .start();
    let status = sv.wait_exit(T);
    (status.code().expect("supervisor exited by itself"), sv)
}

#[test]
fn restart_never_exits_with_the_child_status() {
    let (code, sv) = never_restarted("delay:10ms", "exit 7");
    assert_eq!(code, 7, "{}", sv.output());
    let (code, sv) = never_restarted("delay:10ms", "kill -USR1 $$");
    assert_eq!(code, 128 + libc::SIGUSR1, "{}", sv.output());
    // Exits after it was ready, too.
    let (code, sv) = never_restarted(
        "notify",
        "python3 -c 'import os,socket; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])'; exit 4",
    );
    assert_eq!(code, 4, "{}", sv.output());
    // One child was started, and not started again.
    let spawned: Vec<Option<u64>> = sv
        .logged_records()
        .iter()
        .filter(|r| r.event == Kind::Spawned)
        .map(|r| r.generation)
        .collect();
    assert_eq!(spawned, [Some(1)], "{}", sv.output());
}

#[test]
fn clean_exit_under_on_failure_is_not_restarted() {
    let mut sv = Supervisor::builder()
        .ready("delay:10ms")
        .json_log()
        .sh("exit 0")
        .start();
    assert_eq!(sv.wait_exit(T).code(), Some(0), "{}", sv.output());
    let records = sv.logged_records();
    let spawned: Vec<Option<u64>> = records
        .iter()
        .filter(|r| r.event == Kind::Spawned)
        .map(|r| r.generation)
        .collect();
    assert_eq!(spawned, [Some(1)], "{}", sv.output());
    assert!(
        !records.iter().any(|r| r.generation == Some(2)),
        "{}",
        sv.output()
    );
}

#[test]
fn sigterm_stops_and_propagates_the_child_status() {
    // Default disposition: the child dies of the SIGTERM it was sent, which
    // is a clean stop (as systemd treats its KillSignal=): status 0. A
    // death by any other signal is a failure: 128+N.
    let mut sv = Supervisor::builder().ready("delay:50ms").sleeper().start();
    let pid = sv.wait_active(1);
    assert_eq!(sv.terminate(), Some(0));
    assert!(wait_gone(pid, T));

    // A child that handles it and exits 5; SIGINT works the same way.
    let mut sv = Supervisor::builder()
        .ready("delay:50ms")
        .sh("trap 'exit 5' TERM; sleep 300 & wait")
        .start();
    sv.wait_active(1);
    sv.signal(libc::SIGINT);
    assert_eq!(sv.wait_exit(T).code(), Some(5));

    // A child that drains, then re-raises the SIGTERM it was sent (as
    // uvicorn and Puma do): a clean stop, status 0 after `supervisor stop`.
    let mut sv = Supervisor::builder()
        .ready("delay:50ms")
        .sh("trap 'trap - TERM; kill -TERM $$' TERM; sleep 300 & wait")
        .start();
    let pid = sv.wait_active(1);
    let events = sv.events();
    let out = sv.ctl(&["stop"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(sv.wait_exit(T).code(), Some(0), "{}", sv.output());
    // It drained, and ended on its stop signal (SIGTERM).
    let all = events.until_end();
    let exited = &all[find(&all, 0, "generation 1's exit", |r| is(r, Kind::Exited, 1))];
    assert_eq!(
        (
            exited.pid,
            exited.reason.as_deref(),
            exited.status.as_deref()
        ),
        (
            Some(pid),
            Some("drained"),
            Some("killed by signal 15 (SIGTERM)")
        ),
        "{all:#?}"
    );

    // One that dies of another signal when asked to stop: a failure.
    let mut sv = Supervisor::builder()
        .ready("delay:50ms")
        .sh("trap 'trap - ABRT; kill -ABRT $$' TERM; sleep 300 & wait")
        .start();
    sv.wait_active(1);
    assert_eq!(sv.terminate(), Some(134), "{}", sv.output());
}

#[test]
fn second_stop_signal_kills_everything_at_once() {
    let mut sv = Supervisor::builder()
        .ready("delay:50ms")
        .drain_timeout("60s")
        .sh("trap '' TERM INT; sleep 300 & wait $!")
        .start();
    let pid = sv.wait_active(1);
    let grandchild = wait_child(pid, "sleep 300");
    let events = sv.events();
    sv.signal(libc::SIGINT);
    sv.wait_status("stopping, generation 1 draining", T, |st| {
        (st.supervisor.stopping && st.generation(1)?.state == "draining").then_some(())
    });
    let start = Instant::now();
    sv.signal(libc::SIGTERM);
    assert_eq!(sv.wait_exit(T).code(), Some(137));
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "waited for the drain timeout"
    );
    // The second request forced the stop, and generation 1 was killed.
    let all = events.until_end();
    let stops: Vec<Option<&str>> = matching(&all, |r| r.event == Kind::Stop)
        .iter()
        .map(|r| r.reason.as_deref())
        .collect();
    assert_eq!(stops, [None, Some("forced")], "{all:#?}");
    let exited = &all[find(&all, 0, "generation 1's exit", |r| is(r, Kind::Exited, 1))];
    assert_eq!(
        exited.status.as_deref(),
        Some("killed by signal 9 (SIGKILL)"),
        "{all:#?}"
    );
    assert!(wait_gone(pid, T));
    assert!(wait_gone(grandchild, T), "grandchild left behind");
}

#[test]
fn stop_during_a_reload_stops_both_generations() {
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:60s")
        .ready_timeout("60s")
        .sleeper()
        .start();
    // Generation 1 never gets ready within the test: stop it while it starts.
    let pid = sv.wait_state(1, "starting", T).pid.expect("a pid");
    let events = sv.events();
    sv.signal(libc::SIGHUP);
    sv.wait_status("the reload pending", T, |st| {
        (st.reloads.pending == 1).then_some(())
    });
    sv.signal(libc::SIGTERM);
    let code = sv.wait_exit(T).code();
    // It was never active: the supervisor exits with the starting
    // generation's status (sleep killed by the SIGTERM it was sent: clean),
    // and nothing is left.
    assert_eq!(code, Some(0), "{}", sv.output());
    assert!(wait_gone(pid, T));
    let all = events.until_end();
    assert!(
        !all.iter().any(|r| r.event == Kind::Spawned),
        "a generation was started: {all:#?}"
    );
}

#[test]
fn no_zombies_while_running_and_nothing_left_after_exit() {
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:50ms")
        .drain_timeout("5s")
        .sh("sleep 300 & sleep 300 & wait")
        .start();
    let mut pids = Vec::new();
    for g in 1..=5u64 {
        pids.push(sv.wait_active(g));
        sv.signal(libc::SIGHUP);
    }
    pids.push(sv.wait_active(6));
    assert_eq!(pids.len(), 6);
    for &pid in &pids[..5] {
        assert!(
            wait_gone(pid, T),
            "old generation {pid} not reaped (state {:?})",
            process_state(pid)
        );
    }
    // No zombie child of the supervisor persists. (Orphaned grandchildren
    // reparented to it are zombies for the moment between their death and
    // its SIGCHLD; each must be reaped within the deadline.)
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", sv.pid)).unwrap();
    for c in children.split_whitespace() {
        let c: i32 = c.parse().unwrap();
        let reaped = wait_until(T, || (process_state(c) != Some('Z')).then_some(()));
        assert!(reaped.is_some(), "zombie {c} never reaped");
    }
    let last = pids[5];
    // sh dies of the SIGTERM it was sent (clean); its sleeps die with its
    // process group.
    assert_eq!(sv.terminate(), Some(0));
    assert!(wait_gone(last, T));
    assert!(
        children
            .split_whitespace()
            .all(|c| wait_gone(c.parse().unwrap(), T))
    );
}

/// The supervisor's blocking call, from /proc/PID/syscall: (number, args).
fn blocked_in(pid: i32) -> Option<(i64, Vec<u64>)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let mut it = s.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    let args = it
        .take(6)
        .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect();
    Some((nr, args))
}

#[test]
fn idle_supervisor_sleeps_in_poll_with_no_timeout() {
    // Invariant: when nothing is due, one poll with no timeout at all (no
    // periodic wake-ups). The kernel shows the call the process sleeps in.
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:10ms")
        .sleeper()
        .start();
    sv.wait_active(1);
    let infinite = |(nr, args): &(i64, Vec<u64>)| match std::env::consts::ARCH {
        // poll(fds, nfds, -1), or ppoll(fds, nfds, NULL, ...)
        "x86_64" => (*nr == 7 && args[2] as u32 == u32::MAX) || (*nr == 271 && args[2] == 0),
        "aarch64" => *nr == 73 && args[2] == 0,
        _ => true,
    };
    let seen = wait_until(T, || blocked_in(sv.pid).filter(|c| infinite(c)));
    assert!(
        seen.is_some(),
        "supervisor not blocked in an untimed poll: {:?}",
        blocked_in(sv.pid)
    );
    assert_eq!(sv.terminate(), Some(0));
}

#[test]
fn supervisor_fds_do_not_grow_across_reloads() {
    let mut sv = Supervisor::builder()
        .tcp()
        .listen("udp:127.0.0.1:0")
        .ready("delay:10ms")
        .drain_timeout("5s")
        .sleeper()
        .start();
    let p1 = sv.wait_active(1);
    sv.signal(libc::SIGHUP);
    let mut old = sv.wait_active(2);
    assert!(wait_gone(p1, T));
    // A status answer comes after the supervisor has finished with the
    // reaped generation (its sockets and notify socket closed): a pid gone
    // from /proc is not yet proof of that.
    let only = |g: u64| {
        move |st: &Status| {
            (st.generations.len() == 1 && st.generations[0].generation == g).then_some(())
        }
    };
    sv.wait_status("generation 1 forgotten", T, only(2));
    // Counted without the control connections of the test's own status
    // queries (closed a moment after their answers).
    let after_one = sv.fds_without_control_connections();
    let spares_one = sv.spares();
    for g in 3..=22u64 {
        sv.signal(libc::SIGHUP);
        let pid = sv.wait_active(g);
        assert!(wait_gone(old, T));
        old = pid;
    }
    sv.wait_status("generation 21 forgotten", T, only(22));
    let now = sv.fds_without_control_connections();
    // Less the spare sockets of the reuseport groups (closed at the next
    // reload).
    let spares_now = sv.spares();
    assert!(spares_one <= 8 && spares_now <= 8);
    assert_eq!(
        now.len() - spares_now,
        after_one.len() - spares_one,
        "{after_one:?}\n{now:?}"
    );
    assert_eq!(sv.terminate(), Some(0));
}

#[test]
fn processes_that_left_the_process_group_do_not_outlive_the_supervisor() {
    // The escapee starts its own session, so the process-group kill misses
    // it; it is reparented to the supervisor (a subreaper), which must kill
    // it before exiting, or it would keep the listening socket.
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:50ms")
        .sh("setsid sh -c 'exec sleep 300' & exec sleep 300")
        .start();
    let pid = sv.wait_active(1);
    let escapee = wait_child(pid, "sleep 300");
    assert!(process_exists(escapee));
    assert_eq!(sv.terminate(), Some(0));
    assert!(
        wait_gone(escapee, T),
        "escapee {escapee} outlived the supervisor"
    );
    assert!(sv.has_line(&format!("killing pid {escapee}")));
}

#[test]
fn reload_and_stop_together_never_spawn_after_the_stop() {
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:50ms")
        .sleeper()
        .start();
    sv.wait_active(1);
    let events = sv.events();
    sv.signal(libc::SIGHUP);
    sv.signal(libc::SIGTERM);
    sv.wait_exit(T);
    // The order of events after the fact: the stream is the record.
    let all = events.until_end();
    let stop = find(&all, 0, "the stop", |r| r.event == Kind::Stop);
    assert!(
        !all[stop..].iter().any(|r| r.event == Kind::Spawned),
        "a generation started after the stop: {all:#?}"
    );
}
