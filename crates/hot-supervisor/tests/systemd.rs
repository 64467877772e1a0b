//! The supervisor with systemd's own tools and protocols: started by
//! `systemd-socket-activate` with a socket it passes on, a shell-script
//! child whose readiness is sent by `systemd-notify --ready`, and a fake
//! service manager (a datagram socket as the supervisor's NOTIFY_SOCKET)
//! that checks every message, in order, with MONOTONIC_USEC against the
//! clock.

use super::common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

const T: Duration = WAIT;

/// For a test ignored as needing `tool` and run anyway: fail, saying
/// why, unless it is on PATH.
fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(found, "{tool} is not installed (Debian package systemd)");
}

/// CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC counts.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we pass.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// A service manager's end of NOTIFY_SOCKET.
struct FakeManager {
    sock: UnixDatagram,
    /// The NOTIFY_SOCKET value.
    address: String,
}

impl FakeManager {
    fn at_path(dir: &TempDir) -> FakeManager {
        let path = dir.path("notify");
        let sock = UnixDatagram::bind(&path).expect("bind fake manager socket");
        sock.set_read_timeout(Some(T)).unwrap();
        FakeManager {
            sock,
            address: path.to_string_lossy().into_owned(),
        }
    }

    fn abstract_name(tag: &str) -> FakeManager {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sv-test-manager-{tag}-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract fake manager socket");
        sock.set_read_timeout(Some(T)).unwrap();
        FakeManager {
            sock,
            address: format!("@{name}"),
        }
    }

    /// The next message (waits up to T).
    fn next(&self, sv: &Supervisor) -> String {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => String::from_utf8(buf[..n].to_vec()).expect("UTF-8 message"),
            Err(e) => panic!(
                "no message for the service manager within {T:?} ({e}); output:\n{}",
                sv.output()
            ),
        }
    }

    /// Nothing more is queued (call once the supervisor has exited).
    fn assert_drained(&self) {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(n) => panic!(
                "unexpected message: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Check a `RELOADING=1` message: its lines, and MONOTONIC_USEC within
/// the window in which the reload was asked for.
fn assert_reloading(msg: &str, before: u64, after: u64, status: &str) {
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 3, "{msg:?}");
    assert_eq!(lines[0], "RELOADING=1", "{msg:?}");
    let usec: u64 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"));
    assert!(
        before <= usec && usec <= after,
        "MONOTONIC_USEC={usec} is outside the request's window [{before}, {after}]"
    );
    assert_eq!(lines[2], format!("STATUS={status}"), "{msg:?}");
}

/// A child that fails at once as generation `bad`, else runs the demo
/// server (which sends READY=1 to its own NOTIFY_SOCKET).
fn script(dir: &TempDir, bad: u64) -> String {
    let path = dir.path("server.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$SUPERVISOR_GENERATION\" = {bad} ]; then echo 'bad release' >&2; exit 1; fi\nexec {} \"$@\"\n",
            example("demo_server").display()
        ),
    )
    .unwrap();
    make_executable(&path);
    path.to_string_lossy().into_owned()
}

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_service_manager_hears_ready_reloading_status_and_stopping_in_order() {
    let dir = TempDir::new("mgr");
    let manager = FakeManager::at_path(&dir);
    let server = script(&dir, 3);
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .env("NOTIFY_SOCKET", &manager.address)
        .command([&server])
        .start();

    // Start-up: READY=1 once generation 1 is ready, not before.
    let p1 = sv.pid_of(1);
    assert_eq!(
        manager.next(&sv),
        format!("STATUS=no generation serving; generation 1 (pid {p1}) starting")
    );
    assert_eq!(
        manager.next(&sv),
        format!("READY=1\nSTATUS=generation 1 (pid {p1}) serving")
    );
    // The children never see the supervisor's own NOTIFY_SOCKET.
    let env = environ(p1);
    assert_ne!(env["NOTIFY_SOCKET"], manager.address);
    let events = sv.events();

    // A good reload through the control socket.
    let before = monotonic_usec();
    let a = sv.reload_and_wait();
    let after = monotonic_usec();
    assert_eq!(a.code, Some(0), "{a:?}");
    let p2 = sv.wait_active(2);
    assert_reloading(
        &manager.next(&sv),
        before,
        after,
        &format!("generation 1 (pid {p1}) serving; generation 2 (pid {p2}) starting"),
    );
    assert_eq!(
        manager.next(&sv),
        format!("READY=1\nSTATUS=generation 2 (pid {p2}) serving")
    );

    // A failed reload ends with READY=1 too (sd_notify cannot say
    // "failed"), and the status says what happened.
    let before = monotonic_usec();
    let a = sv.reload_and_wait();
    let after = monotonic_usec();
    assert_eq!(a.code, Some(1), "{a:?}");
    // Gone before the answer: its spawned event names its pid.
    let p3 = events.first_of(Kind::Spawned, 3).pid.expect("a pid");
    assert_reloading(
        &manager.next(&sv),
        before,
        after,
        &format!("generation 2 (pid {p2}) serving; generation 3 (pid {p3}) starting"),
    );
    assert_eq!(
        manager.next(&sv),
        format!(
            "READY=1\nSTATUS=generation 2 (pid {p2}) serving; last reload failed: generation 3 (pid {p3}) exited with status 1 before it was ready"
        )
    );

    // SIGHUP (what Type=notify-reload sends) does the same, with a fresh
    // timestamp systemd compares against the start of its reload.
    let before = monotonic_usec();
    sv.signal(libc::SIGHUP);
    let reloading = manager.next(&sv);
    let after = monotonic_usec();
    let p4 = sv.pid_of(4);
    assert_reloading(
        &reloading,
        before,
        after,
        &format!("generation 2 (pid {p2}) serving; generation 4 (pid {p4}) starting"),
    );
    assert_eq!(
        manager.next(&sv),
        format!("READY=1\nSTATUS=generation 4 (pid {p4}) serving")
    );

    // Stop: STOPPING=1, then nothing more.
    let out = sv.ctl(&["stop", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(manager.next(&sv), "STOPPING=1\nSTATUS=stopping");
    let status = sv.wait_exit(T);
    assert!(status.code().is_some(), "{status:?}");
    manager.assert_drained();
}

#[test]
fn an_abstract_notify_socket_is_spoken_to_as_well() {
    let dir = TempDir::new("mgr-abstract");
    let manager = FakeManager::abstract_name("a");
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .env("NOTIFY_SOCKET", &manager.address)
        .demo(&[])
        .start();
    let p1 = sv.pid_of(1);
    assert!(manager.next(&sv).contains("starting"));
    assert_eq!(
        manager.next(&sv),
        format!("READY=1\nSTATUS=generation 1 (pid {p1}) serving")
    );
    sv.signal(libc::SIGTERM);
    assert_eq!(manager.next(&sv), "STOPPING=1\nSTATUS=stopping");
    sv.wait_exit(T);
    manager.assert_drained();
    drop(dir);
}

#[test]
#[ignore = "needs systemd-notify (Debian package systemd)"]
fn systemd_notify_in_a_shell_script_child_proves_readiness() {
    need("systemd-notify");
    let dir = TempDir::new("sd-notify");
    let path = dir.path("server.sh");
    // The readiness sender is a helper process that has exited by the time
    // the datagram is read; generation 3 never says it is ready.
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         if [ \"$SUPERVISOR_GENERATION\" != 3 ]; then\n\
         \x20   systemd-notify --ready --status=\"warmed up as generation $SUPERVISOR_GENERATION\" || exit 9\n\
         fi\n\
         exec sleep 300\n",
    )
    .unwrap();
    make_executable(&path);
    let sv = Supervisor::builder()
        .notify()
        .ready_timeout("1s")
        .command([&path])
        .start();
    sv.wait_active(1);
    let status = sv.wait_status("STATUS from systemd-notify", T, |st| {
        st.generations.first()?.status.clone()
    });
    assert_eq!(status, "warmed up as generation 1");

    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(0), "{a:?}");
    let p2 = sv.wait_active(2);
    assert!(
        a.line
            .starts_with(&format!("generation 2 (pid {p2}) ready in ")),
        "{a:?}"
    );

    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(1), "{a:?}");
    assert!(
        a.line.contains("was not ready within 1s")
            && a.line
                .contains(&format!("generation 2 (pid {p2}) still serving")),
        "{a:?}"
    );
    let st = sv.status();
    assert!(
        st.generation(2).is_some_and(|e| e.state == "active"),
        "generation 2 must still serve: {:?}",
        st.states()
    );
    // systemd-notify (systemd 250 and later) follows READY=1 with a
    // BARRIER=1 that carries a pipe's fd: the barrier is honoured (the fd
    // closed), not reported as a hostile message.
    assert!(!sv.has_line("carries file descriptors"), "{}", sv.output());
}

/// `systemd-socket-activate` binds, waits for the first connection, then
/// execs the supervisor in place with LISTEN_FDS=1 LISTEN_PID=its pid.
#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn systemd_socket_activate_hands_the_supervisor_a_socket_it_passes_on() {
    need("systemd-socket-activate");
    // systemd-socket-activate cannot bind port 0: find a free port, and
    // try another should it be taken in between.
    let mut attempt = 0;
    let (sv, port) = loop {
        attempt += 1;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sv = Supervisor::builder()
            .launcher([
                "systemd-socket-activate",
                "-l",
                &format!("127.0.0.1:{port}"),
                "--fdname=http",
                // It passes on only the variables it is told to.
                "-E",
                "RUNTIME_DIRECTORY",
                "-E",
                "RUST_LOG",
            ])
            .notify()
            // The same name both ways is the same socket; "extra" is bound
            // by the supervisor alongside it.
            .listen(&format!("http=127.0.0.1:{port}"))
            .listen("extra=127.0.0.1:0")
            .demo(&[])
            .start();
        let line = wait_until(T, || {
            let out = sv.output();
            out.lines()
                .find(|l| l.starts_with("Listening on") || l.starts_with("Failed"))
                .map(str::to_string)
        })
        .expect("systemd-socket-activate says nothing");
        if line.starts_with("Listening on") {
            break (sv, port);
        }
        sv.wait_exit(T);
        assert!(attempt < 5, "no free port: {line}");
    };
    // The first connection is what makes it exec the supervisor; it waits
    // in the backlog and generation 1 answers it.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut first = Client::new(addr);
    match first.get("/") {
        Reply::Ok { generation, .. } => assert_eq!(generation, 1),
        Reply::Failed(e) => panic!("first request failed: {e}; output:\n{}", sv.output()),
    }
    // The status lists the handed-over socket first, then the one the
    // supervisor bound.
    let st = sv.status();
    let listeners: Vec<(&str, &str, i32, bool)> = st
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.address.as_str(), l.fd, l.inherited))
        .collect();
    let http = format!("127.0.0.1:{port}");
    assert_eq!(listeners.len(), 2, "{st:#?}");
    assert_eq!(listeners[0], ("http", http.as_str(), 3, true), "{st:#?}");
    assert_eq!(
        (listeners[1].0, listeners[1].2, listeners[1].3),
        ("extra", 4, false),
        "{st:#?}"
    );

    // The exec happened in place: the supervisor has the launcher's pid,
    // and its fd 3 and the child's fd 3 are the launcher's socket.
    let socket = fds(sv.pid)[&3].clone();
    assert!(
        listening_sockets("tcp", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .contains(&socket),
        "the supervisor's fd 3 ({socket}) does not listen on port {port}"
    );
    let p1 = sv.wait_active(1);
    assert_eq!(fds(p1)[&3], socket);
    let env = environ(p1);
    assert_eq!(env["LISTEN_FDS"], "2");
    assert_eq!(env["LISTEN_FDNAMES"], "http:extra");
    assert_eq!(env["LISTEN_PID"], p1.to_string());

    // Reloads under load on the handed-over socket lose nothing.
    let load = Load::start(addr, 8, Duration::from_secs(30));
    load.expect_served(1, 20, "the first generation on the handed-over socket");
    for g in 2..=4 {
        let a = sv.reload_and_wait();
        assert_eq!(a.code, Some(0), "{a:?}");
        load.expect_served(g, 20, "reload under load on the handed-over socket");
    }
    load.finish_clean("socket activation", 1);
    let p4 = sv.wait_active(4);
    assert_eq!(fds(p4)[&3], socket);

    let out = sv.ctl(&["stop", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn a_watchdog_asked_for_gets_keep_alives_and_the_children_do_not_see_it() {
    let dir = TempDir::new("mgr-watchdog");
    let manager = FakeManager::at_path(&dir);
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .env("NOTIFY_SOCKET", &manager.address)
        .env("WATCHDOG_USEC", "200000")
        .demo(&[])
        .start();
    // WATCHDOG=1 every 100ms: count a few, next to the other messages.
    let mut pings = 0;
    let mut ready = false;
    let deadline = std::time::Instant::now() + T;
    while pings < 3 || !ready {
        assert!(
            std::time::Instant::now() < deadline,
            "{pings} pings, ready: {ready}; output:\n{}",
            sv.output()
        );
        let m = manager.next(&sv);
        if m == "WATCHDOG=1" {
            pings += 1;
        } else if m.starts_with("READY=1") {
            ready = true;
        }
    }
    let p1 = sv.wait_active(1);
    let env = environ(p1);
    assert!(!env.contains_key("WATCHDOG_USEC"), "{env:?}");
    assert!(!env.contains_key("WATCHDOG_PID"), "{env:?}");
}

/// Coalesced reloads: every request tells the manager `RELOADING=1` (with
/// its own timestamp, as `Type=notify-reload` needs for every SIGHUP), and
/// `READY=1` comes once, when no request is left unanswered.
#[test]
fn coalesced_reloads_each_say_reloading_and_ready_comes_once_all_are_answered() {
    let dir = TempDir::new("mgr-coalesce");
    let manager = FakeManager::at_path(&dir);
    let go = dir.path("go");
    let path = dir.path("server.sh");
    // Generations after the first start only once the test says so.
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$SUPERVISOR_GENERATION\" = 1 ] || while [ ! -e {} ]; do sleep 0.01; done\nexec {} \"$@\"\n",
            go.display(),
            example("demo_server").display()
        ),
    )
    .unwrap();
    make_executable(&path);
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .env("NOTIFY_SOCKET", &manager.address)
        .command([&path])
        .start();
    let p1 = sv.pid_of(1);
    assert!(manager.next(&sv).contains("starting"));
    assert!(manager.next(&sv).starts_with("READY=1"));

    let control = sv.control.to_string_lossy().into_owned();
    let reload = move || {
        let control = control.clone();
        std::thread::spawn(move || ctl(&["reload", "--timeout", "20s", "--control", &control]))
    };
    let before = monotonic_usec();
    let first = reload();
    let p2 = sv.wait_state(2, "starting", T).pid.expect("a pid");
    let queued: Vec<_> = (0..2).map(|_| reload()).collect();
    // Two reloads queued while generation 2 starts: three requests
    // outstanding, no generation 3 yet.
    let want = vec![
        (1, Some(p1), "active".to_string()),
        (2, Some(p2), "starting".to_string()),
    ];
    sv.wait_status("two reloads queued while generation 2 starts", T, |st| {
        (st.reloads.pending == 3 && st.states() == want).then_some(())
    });
    let after = monotonic_usec();
    assert_reloading(
        &manager.next(&sv),
        before,
        after,
        &format!("generation 1 (pid {p1}) serving; generation 2 (pid {p2}) starting"),
    );
    for _ in 0..2 {
        let m = manager.next(&sv);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 2, "{m:?}");
        assert_eq!(lines[0], "RELOADING=1");
        let usec: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{m:?}"));
        assert!(
            before <= usec && usec <= after,
            "{usec} not in [{before}, {after}]"
        );
    }
    std::fs::write(&go, "").unwrap();
    let p3 = sv.pid_of(3);
    // Generation 2 serves while the queued reload starts generation 3: no
    // READY=1 yet, two requests are still waiting.
    assert_eq!(
        manager.next(&sv),
        format!("STATUS=generation 2 (pid {p2}) serving; generation 3 (pid {p3}) starting")
    );
    assert_eq!(
        manager.next(&sv),
        format!("READY=1\nSTATUS=generation 3 (pid {p3}) serving")
    );
    let out = first.join().unwrap();
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("generation 2 (pid {p2}) ready")),
        "{out:?}"
    );
    for q in queued {
        let out = q.join().unwrap();
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stdout
                .starts_with(&format!("generation 3 (pid {p3}) ready")),
            "{out:?}"
        );
    }
}

/// An in-place upgrade keeps the pid the service manager knows and what it
/// was told: no second READY=1, no RELOADING=1 or STOPPING=1, and the
/// watchdog's keep-alives go on from the new image.
#[test]
fn an_upgrade_keeps_what_the_service_manager_was_told_and_the_watchdog() {
    let dir = TempDir::new("mgr-upgrade");
    let manager = FakeManager::at_path(&dir);
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .env("NOTIFY_SOCKET", &manager.address)
        .env("WATCHDOG_USEC", "200000")
        .demo(&[])
        .start();
    let deadline = std::time::Instant::now() + T;
    loop {
        assert!(std::time::Instant::now() < deadline, "{}", sv.output());
        if manager.next(&sv).starts_with("READY=1") {
            break;
        }
    }
    sv.wait_active(1);
    let out = sv.ctl(&["upgrade"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    // What was queued until the upgrade's answer is checked, then dropped:
    // the pings counted below are the new image's.
    manager.sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = manager.sock.recv(&mut buf) {
        let m = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !m.lines().any(|l| l == "READY=1" || l == "STOPPING=1"),
            "{m:?}"
        );
    }
    manager.sock.set_nonblocking(false).unwrap();
    // Messages from now on: keep-alives (at least three, so the new image
    // sends them too), and nothing that says the service changed.
    let mut pings = 0;
    let deadline = std::time::Instant::now() + T;
    while pings < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", sv.output());
        let m = manager.next(&sv);
        if m == "WATCHDOG=1" {
            pings += 1;
            continue;
        }
        for word in ["READY=1", "RELOADING=1", "STOPPING=1"] {
            assert!(
                !m.lines().any(|l| l == word),
                "the upgrade told the manager {m:?}"
            );
        }
    }
    assert_eq!(sv.status().supervisor.upgrades, 1);
}

/// A supervisor started the way systemd starts it from a socket unit: the
/// listening socket is the service manager's (here the test's), passed as
/// fd 3 with LISTEN_FDS=1 and LISTEN_PID its own pid. `RestartSec=200ms`
/// is played by a pause before the next start.
fn start_on_socket(fd: std::os::fd::RawFd) -> Supervisor {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@""#,
        "sh",
    ])
    .arg(supervisor_bin())
    .args(["--ready", "notify", "--drain-timeout", "10s", "--"])
    .arg(demo());
    // SAFETY: dup2 and fcntl are async-signal-safe; the closure allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Supervisor::start_with(&mut cmd)
}

/// What survives a crash of the supervisor itself (`kill -9`, then a
/// restart 200 ms later, as `Restart=always` and `RestartSec=200ms` do),
/// under `Connection: close` load: with a socket unit the port never
/// closes, so not one request fails (they wait in the socket's queue);
/// with `--listen` in `ExecStart=` the port is closed until the restart,
/// and requests fail, which is why the docs recommend the socket unit.
#[test]
fn a_socket_unit_keeps_the_port_across_a_crash_of_the_supervisor() {
    use std::os::fd::AsRawFd;
    let restart_delay = Duration::from_millis(200);
    // The socket unit: the "service manager" holds the socket throughout.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut first = start_on_socket(socket.as_raw_fd());
    first.wait_active(1);
    let load = Load::start_closing(addr, 8, Duration::from_secs(120));
    load.expect_served(1, 100, "socket unit: the first supervisor");
    first.signal(libc::SIGKILL);
    first.wait_exit(T);
    // The pause is the scenario (RestartSec=), not a synchronisation.
    std::thread::sleep(restart_delay);
    let second = start_on_socket(socket.as_raw_fd());
    second.wait_active(1);
    load.expect_served(1, 100, "socket unit: the restarted supervisor");
    let served = load.finish_clean("socket unit, supervisor killed and restarted", 200);
    drop(second);
    eprintln!(
        "socket unit: {} requests, 0 failed across a kill -9 of the supervisor and a restart {restart_delay:?} later",
        served.ok
    );

    // --listen in ExecStart=: the supervisor's own socket dies with it.
    let mut first = Supervisor::builder()
        .listen("127.0.0.1:0")
        .notify()
        .drain_timeout("10s")
        .command([demo()])
        .start();
    first.wait_active(1);
    let addr = first.listener_addr(0);
    let load = Load::start_closing(addr, 8, Duration::from_secs(120));
    load.expect_served(1, 100, "--listen: the first supervisor");
    first.signal(libc::SIGKILL);
    first.wait_exit(T);
    std::thread::sleep(restart_delay);
    let second = Supervisor::builder()
        .listen(&addr.to_string())
        .notify()
        .drain_timeout("10s")
        .command([demo()])
        .start();
    second.wait_active(1);
    load.expect_served(1, 100, "--listen: the restarted supervisor");
    let stats = load.finish();
    let failed = stats.failures.lock().unwrap().len();
    let ok = stats.ok.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "--listen: {failed} of {} requests failed across the same crash",
        ok + failed as u64
    );
    assert!(
        failed > 0,
        "with --listen the port is closed between the crash and the restart: requests must fail, or the test proves nothing"
    );
}
