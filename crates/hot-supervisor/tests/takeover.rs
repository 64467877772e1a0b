//! Takeover (`supervisor --takeover PATH ...`): a new supervisor takes every
//! socket of the running one, starts its own generation on them, and once
//! it is ready the old one lets its generations go and exits 0; if the new
//! generation fails, the old supervisor carries on.

use super::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The old supervisor: the demo server on one TCP listener, with a control
/// socket at a path of the test's own; reloaded once, so that its serving
/// generation (2) is told apart from the new supervisor's first (1) in the
/// answers.
fn old_supervisor(dir: &TempDir, extra: &[&str]) -> Supervisor {
    let control = dir.path("c.sock");
    let sv = Supervisor::builder()
        .listen("127.0.0.1:0")
        .control(&control)
        .args(extra)
        .demo(&[])
        .start();
    sv.wait_active(1);
    let r = sv.reload_and_wait();
    assert_eq!(r.code, Some(0), "{r:?}");
    sv.wait_generations(&[(2, sv.pid_of(2), "active")]);
    sv
}

/// A plain supervisor on `control` must be refused: the control socket's
/// lock is still held (by whoever took it over, or kept it).
fn assert_control_locked(control: &std::path::Path) {
    let out = Command::new(supervisor_bin())
        .args(["--listen", "127.0.0.1:0", "--control"])
        .arg(control)
        .arg("--")
        .arg(demo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is in use by another supervisor (it holds"),
        "{err}"
    );
}

/// `supervisor --takeover PATH [extra...] -- demo_server [demo...]`.
fn new_supervisor(old: &Supervisor, extra: &[&str], demo_args: &[&str]) -> Supervisor {
    let mut cmd = Command::new(supervisor_bin());
    // The same --control as --takeover (allowed): the harness reads it.
    cmd.arg("--takeover")
        .arg(&old.control)
        .arg("--control")
        .arg(&old.control)
        .args(extra)
        .arg("--")
        .arg(demo())
        .args(demo_args);
    Supervisor::start_with(&mut cmd)
}

#[test]
fn a_takeover_under_load_loses_nothing_and_the_old_supervisor_exits_0() {
    let dir = TempDir::new("takeover");
    let mut old = old_supervisor(&dir, &[]);
    let addr = old.listener_addr(0);
    let listener = old.status().listeners[0].clone();
    let old_child = old.pid_of(2);
    let keep_alive = Load::start(addr, 4, Duration::from_secs(60));
    let closing = Load::start_closing(addr, 2, Duration::from_secs(60));
    keep_alive.expect_served(2, 50, "before the takeover");
    let old_events = old.events();

    // The same --listen as the old one's: it must agree with what is taken.
    let new = new_supervisor(&old, &["--listen", &listener.address], &[]);
    // The control socket moved: the old path answers with the new pid.
    let st = new.wait_status("the new supervisor behind the old path", WAIT, |s| {
        (s.supervisor.pid == new.pid as u32 && s.in_state("active").is_some()).then(|| s.clone())
    });
    assert_eq!(st.listeners.len(), 1);
    assert_eq!(st.listeners[0].name, listener.name);
    assert_eq!(st.listeners[0].address, listener.address);
    closing.expect_served(1, 50, "after the takeover");
    keep_alive.expect_served(1, 50, "after the takeover (keep-alive clients)");

    // The old supervisor lets its generation drain, then exits 0.
    let status = old.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "{}", old.output());
    assert!(
        wait_gone(old_child, WAIT),
        "the old generation is still there"
    );
    // It handed its sockets over to the new one: its stream ended there.
    let all = old_events.until_end();
    assert_eq!(
        all.last().map(|r| (r.event, r.pid)),
        Some((Kind::Takeover, Some(new.pid))),
        "the old supervisor never handed over: {all:#?}"
    );
    // The new one then closes the old generation's sockets: only its own
    // listen on the port (its generation's, and possibly one spare).
    let own = wait_until(WAIT, || {
        let n = listening_sockets("tcp", addr).len();
        (n <= 1 + new.spares()).then_some(n)
    });
    assert!(
        own.is_some(),
        "the old generation's sockets still listen: {:?}\n{}",
        listening_sockets("tcp", addr),
        new.output()
    );
    assert!(
        dir.path("c.sock").exists(),
        "the old supervisor removed the control socket file"
    );
    // The new supervisor reloads at the old path as the old one did.
    let r = new.reload_and_wait();
    assert_eq!(r.code, Some(0), "{r:?}");
    closing.expect_served(2, 50, "after a reload by the new supervisor");
    keep_alive.finish_clean("takeover (keep-alive)", 100);
    closing.finish_clean("takeover (Connection: close)", 100);
}

#[test]
fn a_failing_new_generation_leaves_the_old_supervisor_serving() {
    let dir = TempDir::new("takeover-fail");
    let old = old_supervisor(&dir, &[]);
    let addr = old.listener_addr(0);
    let load = Load::start_closing(addr, 2, Duration::from_secs(60));
    load.expect_served(2, 30, "before the takeover");
    let mut new = new_supervisor(&old, &[], &["--fail-at-start"]);
    let status = new.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", new.output());
    assert!(new.has_line("the takeover failed"), "{}", new.output());
    // The old supervisor serves, answers at its path under its own pid,
    // and reloads again.
    old.wait_status("the old supervisor behind its path again", WAIT, |s| {
        (s.supervisor.pid == old.pid as u32).then_some(())
    });
    load.expect_served(2, 30, "after the failed takeover");
    let r = old.reload_and_wait();
    assert_eq!(r.code, Some(0), "{r:?}\n{}", old.output());
    load.expect_served(3, 30, "after a reload of the old supervisor");
    assert!(dir.path("c.sock").exists());
    // The new supervisor's exit did not unlock the old one's path.
    assert_control_locked(&dir.path("c.sock"));
    load.finish_clean("a failed takeover", 60);
    // Nothing of the new supervisor is left listening.
    let left = wait_until(WAIT, || {
        let n = listening_sockets("tcp", addr).len();
        (n <= 1 + old.spares()).then_some(n)
    });
    assert!(left.is_some(), "{:?}", listening_sockets("tcp", addr));
}

#[test]
fn a_listen_option_that_disagrees_is_refused_and_the_old_one_carries_on() {
    let dir = TempDir::new("takeover-disagree");
    let old = old_supervisor(&dir, &[]);
    let name = old.status().listeners[0].name.clone();
    let spec = format!("{name}=127.0.0.1:1");
    let mut new = new_supervisor(&old, &["--listen", &spec], &[]);
    let status = new.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", new.output());
    let out = new.output();
    assert!(
        out.contains("is already bound to") && out.contains("127.0.0.1:1"),
        "{out}"
    );
    old.wait_status("the old supervisor behind its path again", WAIT, |s| {
        (s.supervisor.pid == old.pid as u32).then_some(())
    });
    let r = old.reload_and_wait();
    assert_eq!(r.code, Some(0), "{r:?}");
}

#[test]
fn a_shared_listener_is_taken_over_too() {
    let dir = TempDir::new("takeover-shared");
    let mut old = old_supervisor(&dir, &["--handoff", "shared"]);
    let addr = old.listener_addr(0);
    let load = Load::start(addr, 4, Duration::from_secs(60));
    load.expect_served(2, 30, "before the takeover");
    // The same options as the old one's, a port-0 listener included: it
    // is matched by address, not bound anew.
    let new = new_supervisor(
        &old,
        &["--listen", "127.0.0.1:0", "--handoff", "shared"],
        &[],
    );
    new.wait_status("the new supervisor serving", WAIT, |s| {
        (s.supervisor.pid == new.pid as u32 && s.in_state("active").is_some()).then_some(())
    });
    let st = new.status();
    assert_eq!(st.listeners.len(), 1, "{:?}", st.listeners);
    assert_eq!(st.listeners[0].mode, "shared");
    load.expect_served(1, 30, "after the takeover");
    assert_eq!(old.wait_exit(WAIT).code(), Some(0), "{}", old.output());
    load.finish_clean("a shared takeover", 60);
}

/// A supervisor's listeners, in order: each one's name and address.
fn names_and_addresses(sv: &Supervisor) -> Vec<(String, String)> {
    sv.status()
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.address.clone()))
        .collect()
}

#[test]
fn listen_options_without_a_name_are_matched_in_order_each_listener_once() {
    let dir = TempDir::new("takeover-match");
    let control = dir.path("c.sock");
    let mut old = Supervisor::builder()
        .tcp()
        .tcp()
        .tcp()
        .control(&control)
        .demo(&[])
        .start();
    old.wait_active(1);
    let before = names_and_addresses(&old);
    assert_eq!(before.len(), 3, "{before:?}");
    // Port 0 takes the first listener not yet taken; an address with its
    // port takes that one, wherever it stands; a port-0 option left over
    // once every listener is taken is bound anew.
    let third = before[2].1.clone();
    let new = new_supervisor(
        &old,
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &third,
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    new.wait_status("the new supervisor serving", WAIT, |s| {
        (s.supervisor.pid == new.pid as u32 && s.in_state("active").is_some()).then_some(())
    });
    let after = names_and_addresses(&new);
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(
        after[..3],
        before[..],
        "the taken listeners, in their order"
    );
    assert!(
        before.iter().all(|(_, a)| *a != after[3].1),
        "the fourth is a new socket: {after:?}"
    );
    assert_eq!(old.wait_exit(WAIT).code(), Some(0), "{}", old.output());
}

#[test]
fn a_takeover_from_nothing_is_a_clear_error() {
    let dir = TempDir::new("takeover-none");
    let out = Command::new(supervisor_bin())
        .arg("--takeover")
        .arg(dir.path("nobody.sock"))
        .arg("--")
        .arg(demo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("take over from the supervisor at") && err.contains("nobody.sock"),
        "{err}"
    );
}

#[test]
fn a_worker_pool_is_taken_over_by_one_of_another_size() {
    let dir = TempDir::new("takeover-workers");
    let mut old = old_supervisor(&dir, &["--workers", "2"]);
    assert_eq!(old.status().generations[0].workers.len(), 2);
    let addr = old.listener_addr(0);
    let load = Load::start_closing(addr, 2, Duration::from_secs(60));
    load.expect_served(2, 30, "before the takeover");
    let new = new_supervisor(&old, &["--workers", "3"], &[]);
    let st = new.wait_status("the new pool serving", WAIT, |s| {
        let active = s.in_state("active")?;
        (s.supervisor.pid == new.pid as u32 && active.workers.len() == 3).then(|| s.clone())
    });
    let pids: BTreeSet<Option<i32>> = st.generations[0].workers.iter().map(|w| w.pid).collect();
    assert_eq!(pids.len(), 3, "{st:?}");
    load.expect_served(1, 30, "after the takeover");
    assert_eq!(old.wait_exit(WAIT).code(), Some(0), "{}", old.output());
    load.finish_clean("a worker pool taken over", 60);
}

/// Sockets do not pile up across chained takeovers (issue 25): after five
/// takeovers in a row, each under load, the serving supervisor holds as
/// many fds as after one, and as many sockets listen on the port: the
/// serving generation's and the one made ahead of time for the next.
#[test]
fn chained_takeovers_leave_the_fd_count_where_one_leaves_it() {
    let dir = TempDir::new("takeover-chain");
    let first = old_supervisor(&dir, &[]);
    let addr = first.listener_addr(0);
    let listener = first.status().listeners[0].clone();
    let load = Load::start_closing(addr, 2, Duration::from_secs(120));
    load.expect_served(2, 20, "before the takeovers");
    let mut current = first;
    let mut after_one: Option<BTreeMap<i32, String>> = None;
    for round in 1..=5 {
        let next = new_supervisor(&current, &["--listen", &listener.address], &[]);
        next.wait_status("the new supervisor serving", WAIT, |s| {
            (s.supervisor.pid == next.pid as u32 && s.in_state("active").is_some()).then_some(())
        });
        let status = current.wait_exit(WAIT);
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {}",
            current.output()
        );
        // Settled: what listens on the port is the new supervisor's own,
        // two sockets (the old generations' are closed once the old
        // supervisor is gone), and the fds are as after the first takeover
        // (the first one: the same kinds twice in a row, so that a
        // connection of a readiness probe on its way out is not counted).
        let kinds = |m: &BTreeMap<i32, String>| -> Vec<String> {
            let mut k: Vec<String> = m
                .values()
                .map(|t| t.split(':').next().unwrap_or("").to_string())
                .collect();
            k.sort();
            k
        };
        let mut last: Option<Vec<String>> = None;
        let settled = wait_until(WAIT, || {
            let open = next.fds_without_control_connections();
            let own: BTreeSet<&String> = open.values().collect();
            let on_port = listening_sockets("tcp", addr);
            if on_port.len() != 2 || !on_port.iter().all(|s| own.contains(s)) {
                return None;
            }
            let now = kinds(&open);
            let same = match &after_one {
                Some(one) => kinds(one) == now,
                None => last.as_ref() == Some(&now),
            };
            last = Some(now);
            same.then_some(open)
        });
        let open = settled.unwrap_or_else(|| {
            panic!(
                "round {round}: never settled to two sockets on the port and the fds of the first takeover: {:?} listen; it holds {:?}; after the first takeover {:?}\n{}",
                listening_sockets("tcp", addr),
                fds(next.pid),
                after_one,
                next.output()
            )
        });
        if after_one.is_none() {
            after_one = Some(open);
        }
        load.expect_served(1, 20, &format!("after takeover {round}"));
        current = next;
    }
    load.finish_clean("five chained takeovers", 100);
}
