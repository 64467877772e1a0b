//! What a child sees: exactly fds 0-2, the listeners and its channel
//! right after them, an empty signal
//! mask, default dispositions, its own process group, LISTEN_PID equal to
//! its pid, and none of the supervisor's own protocol variables.

use super::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const T: Duration = WAIT;

fn unix_inode(path: &str) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(7) == Some(&path)).then(|| cols[6].to_string())
    })
}

#[test]
fn child_sees_exactly_its_listeners_and_a_clean_process_state() {
    let dir = TempDir::new("env");
    let sock = dir.path("app.sock");
    let sock = sock.to_str().unwrap();
    // The supervisor itself inherits fd 9 without CLOEXEC and a launcher's
    // protocol variables; none of it may reach the child.
    let mut sv = Supervisor::builder()
        .launcher(["sh", "-c", "exec 9</dev/null; exec \"$0\" \"$@\""])
        .listen("web=127.0.0.1:0")
        .listen(&format!("unix:{sock}"))
        .listen("dns=udp:127.0.0.1:0")
        .ready("delay:50ms")
        .env("LISTEN_FDS", "7")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDNAMES", "bogus")
        .env("NOTIFY_SOCKET", "/nonexistent/notify")
        .env("WATCHDOG_USEC", "1000000")
        .env("SUPERVISOR_GENERATION", "99")
        .sleeper()
        .start();
    let pid = sv.wait_active(1);
    let udp = sv.listener_address(2);
    let udp_port: u16 = udp
        .strip_prefix("udp:127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{udp}"));
    assert_eq!(sv.listener_address(1), format!("unix:{sock}"));

    assert!(
        fds(sv.pid).contains_key(&9),
        "the harness did not give the supervisor fd 9"
    );
    let child_fds = fds(pid);
    assert_eq!(
        child_fds.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1, 2, 3, 4, 5, 6]),
        "{child_fds:?}"
    );
    // Its channel, right after the listeners, named in the environment.
    assert!(child_fds[&6].starts_with("socket:["), "{child_fds:?}");
    assert_eq!(environ(pid)["SUPERVISOR_CHANNEL_FD"], "6");
    // Steered listeners: the port may also have the socket the supervisor
    // made ahead of time for the next generation.
    let tcp = listening_sockets("tcp", sv.listener_addr(0));
    let udp = listening_sockets(
        "udp",
        std::net::SocketAddr::from(([127, 0, 0, 1], udp_port)),
    );
    let unix = unix_inode(sock).expect("unix socket in /proc/net/unix");
    assert!(tcp.contains(&child_fds[&3]), "{child_fds:?}: {tcp:?}");
    assert_eq!(child_fds[&4], format!("socket:[{unix}]"));
    assert!(udp.contains(&child_fds[&5]), "{child_fds:?}: {udp:?}");

    assert_eq!(status_field(pid, "SigBlk"), "0000000000000000");
    assert_eq!(status_field(pid, "SigIgn"), "0000000000000000");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let pgrp: i32 = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, pid, "child is not its own process group leader");

    let env = environ(pid);
    assert_eq!(env["LISTEN_PID"], pid.to_string());
    assert_eq!(env["LISTEN_FDS"], "3");
    assert_eq!(env["LISTEN_FDNAMES"], format!("web:unix_{sock}:dns"));
    assert_eq!(env["SUPERVISOR_GENERATION"], "1");
    assert!(!env.contains_key("WATCHDOG_USEC"));
    let notify = &env["NOTIFY_SOCKET"];
    assert_ne!(notify, "/nonexistent/notify");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(std::fs::metadata(notify).unwrap().file_type().is_socket());
    // Only the supervisor's user can reach the notify socket at all.
    let dir = std::path::Path::new(notify).parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    assert_eq!(sv.terminate(), Some(0));
    assert!(
        !std::path::Path::new(sock).exists(),
        "unix socket file left behind"
    );
    assert!(
        !std::path::Path::new(notify).exists(),
        "notify socket left behind"
    );
}

#[test]
fn second_generation_gets_its_own_pid_and_the_same_sockets() {
    // Shared mode: every generation gets the very same socket (steer mode,
    // a socket per generation, is tested in tests/steer.rs).
    let mut sv = Supervisor::builder()
        .args(["--handoff", "shared"])
        .listen("[::1]:0")
        .ready("delay:50ms")
        .sleeper()
        .start();
    // It exits at once if it cannot bind [::1]: the test needs IPv6 on
    // the loopback interface (Linux's default).
    if !sv.wait_up() {
        sv.wait_exit(T);
        panic!(
            "this test needs IPv6 on the loopback interface (::1; sysctl net.ipv6.conf.lo.disable_ipv6=0): {}",
            sv.output()
        );
    }
    let p1 = sv.wait_active(1);
    let addr = sv.listener_addr(0);
    assert!(addr.is_ipv6());
    let inode = socket_inode("tcp", addr.port()).unwrap();
    assert_eq!(fds(p1)[&3], format!("socket:[{inode}]"));
    sv.signal(libc::SIGHUP);
    let p2 = sv.wait_active(2);
    assert_eq!(environ(p2)["LISTEN_PID"], p2.to_string());
    assert_eq!(environ(p2)["SUPERVISOR_GENERATION"], "2");
    assert_eq!(fds(p2)[&3], format!("socket:[{inode}]"));
    // The accept queue is the same: a connection made now is accepted by
    // whoever holds the socket.
    std::net::TcpStream::connect(addr).expect("connect to [::1] listener");
    assert_eq!(sv.terminate(), Some(0));
}

#[test]
fn notify_readiness_from_a_helper_process_of_the_child_counts() {
    // The READY=1 comes from a grandchild (python) that exits at once, as
    // `systemd-notify --ready` in a shell script would.
    let script = "python3 -c 'import os,socket; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b\"READY=1\\nSTATUS=warmed up\", os.environ[\"NOTIFY_SOCKET\"])'; exec sleep 300";
    let mut sv = Supervisor::builder()
        .notify()
        .ready_timeout("15s")
        .sh(script)
        .start();
    // The status shows the STATUS= that came with READY=1.
    let e = sv.wait_state(1, "active", T);
    assert_eq!(e.status.as_deref(), Some("warmed up"), "{e:?}");
    assert_eq!(sv.terminate(), Some(0));
}

#[test]
fn compat_variables_are_written_as_each_launcher_writes_them() {
    let dir = TempDir::new("compat");
    let sock = dir.path("app.sock");
    let sock = sock.to_str().unwrap();
    // The supervisor's own launcher variables must not leak through.
    let mut sv = Supervisor::builder()
        .tcp()
        .listen(&format!("unix:{sock}"))
        .listen("udp:127.0.0.1:0")
        .args(["--compat", "einhorn,server-starter", "--compat", "nginx"])
        .ready("delay:10ms")
        .env("EINHORN_FD_COUNT", "9")
        .env("EINHORN_FD_5", "42")
        .env("SERVER_STARTER_PORT", "80=9")
        .env("NGINX", "9;")
        .sleeper()
        .start();
    let pid = sv.wait_active(1);
    let tcp = sv.listener_addr(0);
    let udp = sv.listener_address(2);
    let udp = udp
        .strip_prefix("udp:")
        .unwrap_or_else(|| panic!("{udp}"))
        .to_string();
    let env = environ(pid);
    assert_eq!(env["EINHORN_FD_COUNT"], "3");
    assert_eq!(env["EINHORN_FD_0"], "3");
    assert_eq!(env["EINHORN_FD_1"], "4");
    assert_eq!(env["EINHORN_FD_2"], "5");
    assert!(!env.contains_key("EINHORN_FD_5"));
    assert_eq!(env["EINHORN_FDS"], "3 4 5");
    assert_eq!(env["EINHORN_MASTER_PID"], sv.pid.to_string());
    assert_eq!(
        env["SERVER_STARTER_PORT"],
        format!("{tcp}=3;{sock}=4;{udp}=5"),
        "port 0 is given as the port the kernel chose"
    );
    assert_eq!(env["SERVER_STARTER_GENERATION"], "1");
    assert_eq!(env["NGINX"], "3;4;5;");
    // The fds those variables name are the listeners.
    let child_fds = fds(pid);
    for fd in 3..=5 {
        assert!(child_fds[&fd].starts_with("socket:"), "{child_fds:?}");
    }
    sv.signal(libc::SIGHUP);
    let p2 = sv.wait_active(2);
    assert_eq!(environ(p2)["SERVER_STARTER_GENERATION"], "2");
    assert_eq!(sv.terminate(), Some(0));
}

#[test]
fn without_compat_no_launcher_variables_reach_the_child() {
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:10ms")
        .env("EINHORN_FD_COUNT", "9")
        .env("SERVER_STARTER_PORT", "80=9")
        .env("NGINX", "9;")
        .sleeper()
        .start();
    let env = environ(sv.wait_active(1));
    for k in ["EINHORN_FD_COUNT", "SERVER_STARTER_PORT", "NGINX"] {
        assert!(!env.contains_key(k), "{k} leaked: {env:?}");
    }
    assert_eq!(sv.terminate(), Some(0));
}

/// Every run option can come from a `SUPERVISOR_OPT_*` variable (a
/// container entrypoint's usual configuration); a repeatable one takes a
/// value per line; the command line wins over the variable; and the
/// children never see these variables (a child that runs a supervisor of
/// its own must not inherit its parent's settings).
#[test]
fn run_options_from_the_environment_and_never_in_the_children() {
    let sv = Supervisor::builder()
        .env(
            "SUPERVISOR_OPT_LISTEN",
            "web=127.0.0.1:0\nadmin=127.0.0.1:0",
        )
        .env("SUPERVISOR_OPT_READY", "delay:20ms")
        .env("SUPERVISOR_OPT_DRAIN_TIMEOUT", "7s")
        .env("SUPERVISOR_OPT_STOP_SIGNAL", "INT")
        .env(
            "SUPERVISOR_OPT_ENV",
            "APP_MODE=prod\nGREETING=two words, one comma",
        )
        .args(["--stop-signal", "QUIT"])
        .sleeper()
        .start();
    let pid = sv.wait_active(1);
    let st = sv.status();
    let names: Vec<&str> = st.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["web", "admin"], "{st:?}");
    assert_eq!(st.drain_timeout_ms, 7000);
    assert_eq!(st.ready, "delay:20ms");
    assert_eq!(
        st.stop_signal, "SIGQUIT",
        "the command line wins over the variable"
    );
    let env = environ(pid);
    assert_eq!(env.get("APP_MODE").map(String::as_str), Some("prod"));
    assert_eq!(
        env.get("GREETING").map(String::as_str),
        Some("two words, one comma")
    );
    let leaked: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with("SUPERVISOR_OPT_"))
        .collect();
    assert!(leaked.is_empty(), "passed to the child: {leaked:?}");
    // The supervisor's own environment keeps them (an in-place upgrade
    // re-reads its options from there).
    assert!(environ(sv.pid).contains_key("SUPERVISOR_OPT_DRAIN_TIMEOUT"));
}

/// A bad value from a variable is refused like one from the command line,
/// and the message names the variable.
#[test]
fn a_bad_option_variable_is_named() {
    let out = std::process::Command::new(supervisor_bin())
        .env("SUPERVISOR_OPT_DRAIN_TIMEOUT", "soon")
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'soon'") && err.contains("SUPERVISOR_OPT_DRAIN_TIMEOUT"),
        "{err}"
    );
    // `--generate` still works with options set in the environment.
    let out = std::process::Command::new(supervisor_bin())
        .env("SUPERVISOR_OPT_DRAIN_TIMEOUT", "5s")
        .args(["--generate", "complete-fish"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

// --- --env-file is read again at each generation's start -----------------

/// The value of `KEY` in process `pid`'s environment.
fn env_of(pid: i32, key: &str) -> Option<String> {
    environ(pid).get(key).cloned()
}

/// A reload picks up what changed in an `--env-file`; a broken file fails
/// the reload with `FILE:LINE: what is wrong` while the old generation
/// serves on, and no request fails; fixing the file makes the next reload
/// succeed. `status` says when the file was last read.
#[test]
fn a_reload_reads_the_env_file_again_and_a_broken_one_fails_it() {
    let dir = TempDir::new("envfile");
    let file = dir.path("app.env");
    std::fs::write(&file, "MODE=blue\n").unwrap();
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .arg("--env-file")
        .arg(&file)
        .drain_timeout("10s")
        .demo(&[])
        .start();
    let pid1 = sv.wait_active(1);
    assert_eq!(env_of(pid1, "MODE").as_deref(), Some("blue"));
    let load = Load::start_closing(sv.listener_addr(0), 8, Duration::from_secs(120));
    load.expect_served(1, 50, "generation 1");

    std::fs::write(&file, "MODE=green\n").unwrap();
    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(0), "{a:?}");
    let pid2 = sv.wait_active(2);
    assert_eq!(env_of(pid2, "MODE").as_deref(), Some("green"));
    load.expect_served(2, 50, "generation 2");

    std::fs::write(&file, "MODE=red\nthis line is no assignment\n").unwrap();
    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(1), "{a:?}");
    let want = format!("{}:2: ", file.display());
    assert!(a.line.contains(&want), "the answer names FILE:LINE: {a:?}");
    assert!(
        a.line.contains("generation 2"),
        "the old one serves on: {a:?}"
    );
    let st = sv.status();
    assert_eq!(
        st.in_state("active").and_then(|g| g.pid),
        Some(pid2),
        "{st:?}"
    );
    load.expect_served(2, 50, "generation 2, after the failed reload");

    std::fs::remove_file(&file).unwrap();
    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(1), "{a:?}");
    assert!(a.line.contains("app.env"), "a missing file is named: {a:?}");

    std::fs::write(&file, "MODE=yellow\n").unwrap();
    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(0), "{a:?}");
    let g = sv.status().in_state("active").unwrap().generation;
    let pid = sv.wait_active(g);
    assert_eq!(env_of(pid, "MODE").as_deref(), Some("yellow"));
    load.finish_clean("env-file reloads", 150);

    let st = sv.status();
    assert_eq!(st.env_files.len(), 1, "{st:?}");
    assert!(st.env_files[0].path.ends_with("app.env"));
    assert!(
        st.env_files[0].read_ms_ago.is_some_and(|ms| ms < 60_000),
        "{st:?}"
    );
}

/// A worker restarted alone gets its generation's environment as read
/// when the generation started, not what the file says now.
#[test]
fn a_worker_restarted_alone_keeps_its_generations_env_file() {
    let dir = TempDir::new("envfile-worker");
    let file = dir.path("app.env");
    std::fs::write(&file, "MODE=blue\n").unwrap();
    let sv = Supervisor::builder()
        .tcp()
        .ready("delay:20ms")
        .arg("--env-file")
        .arg(&file)
        .args(["--workers", "2"])
        .sleeper()
        .start();
    sv.wait_active(1);
    let w1 = sv.status().generation(1).unwrap().workers[1].pid.unwrap();
    std::fs::write(&file, "MODE=green\n").unwrap();
    // SAFETY: kill(2) on a worker of the supervisor this test started.
    unsafe { libc::kill(w1, libc::SIGKILL) };
    let pid = sv.wait_status("worker 1 restarted", WAIT, |st: &Status| {
        let w = &st.generation(1)?.workers[1];
        w.pid.filter(|p| *p != w1 && w.state == "ready")
    });
    assert_eq!(env_of(pid, "MODE").as_deref(), Some("blue"));
}

/// A crash restart that finds the file broken is a failed start: backoff,
/// then the start limit ends the supervisor with the reason in its log.
#[test]
fn a_crash_restart_with_a_broken_env_file_is_a_failed_start() {
    let dir = TempDir::new("envfile-crash");
    let file = dir.path("app.env");
    std::fs::write(&file, "MODE=blue\n").unwrap();
    let mut sv = Supervisor::builder()
        .tcp()
        .ready("delay:20ms")
        .arg("--env-file")
        .arg(&file)
        .args(["--start-limit-burst", "3", "--start-limit-interval", "60s"])
        .sleeper()
        .start();
    let pid = sv.wait_active(1);
    std::fs::write(&file, "MODE='unterminated\n").unwrap();
    // SAFETY: kill(2) on the child of the supervisor this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = sv.wait_exit(WAIT);
    assert_ne!(status.code(), Some(0), "gave up after failed starts");
    let want = format!("{}:1: ", file.display());
    assert!(sv.has_line(&want), "the log names FILE:LINE");
}

/// The soft and hard open-files limits of `pid`, from /proc/PID/limits.
fn open_files_limits(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let mut n = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (n.next().unwrap(), n.next().unwrap())
}

#[test]
fn the_supervisor_raises_its_open_files_limit_and_the_child_gets_the_old_one_back() {
    // As under systemd's default LimitNOFILE= (soft 1,024), when the hard
    // limit is higher: the supervisor needs up to three fds per listener.
    let hard = open_files_limits(std::process::id() as i32).1;
    assert!(
        hard > 1024,
        "needs a hard open-files limit above 1,024 (it is {hard})"
    );
    let mut sv = Supervisor::builder()
        .launcher(["sh", "-c", "ulimit -S -n 1024 && exec \"$0\" \"$@\""])
        .tcp()
        .ready("delay:10ms")
        .sleeper()
        .start();
    let pid = sv.wait_active(1);
    assert_eq!(open_files_limits(sv.pid), (hard, hard));
    assert_eq!(open_files_limits(pid), (1024, hard));
    assert_eq!(sv.terminate(), Some(0));
}
