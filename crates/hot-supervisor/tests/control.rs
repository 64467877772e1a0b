//! The control socket: `supervisor reload|status|stop` against a running
//! supervisor, its answers and exit codes, the coalescing of concurrent
//! reloads, the socket's permissions, hostile or careless peers, and the
//! socket file's life cycle.

use super::common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = WAIT;

/// An executable `sh` script `name` in `dir`.
fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The message of a supervisor log line (`TS supervisor[PID] LEVEL: MSG`).
/// A child's unfinished line may precede it (children share its stderr).
fn message(line: &str) -> &str {
    line.split_once(" supervisor[")
        .and_then(|(_, r)| r.split_once("] "))
        .and_then(|(_, r)| r.split_once(": "))
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("not a supervisor log line: {line:?}"))
}

/// One HTTP request on a fresh connection; the generation that answered.
fn http_get(addr: std::net::SocketAddr) -> u64 {
    match Client::new(addr).get("/") {
        Reply::Ok { generation, .. } => generation,
        Reply::Failed(why) => panic!("HTTP request failed: {why}"),
    }
}

/// A raw connection to a control socket, with bounded reads and writes.
fn raw(path: &Path) -> UnixStream {
    let s =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s
}

/// Read until a newline or the end: `Ok` with what came (possibly empty).
fn read_answer(s: &mut UnixStream) -> std::io::Result<String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.contains(&b'\n') {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if got.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Send `bytes` on a fresh connection and read the answer line.
fn exchange(path: &Path, bytes: &[u8]) -> String {
    let mut s = raw(path);
    s.write_all(bytes).unwrap();
    read_answer(&mut s).unwrap()
}

/// Sanity: the supervisor runs (not a zombie), every request is answered,
/// and new connections reach generation `g` (at once, or once the one it
/// replaced has stopped accepting).
fn assert_serving(sv: &Supervisor, addr: std::net::SocketAddr, g: u64) {
    assert_eq!(
        process_state(sv.pid).map(|s| s != 'Z'),
        Some(true),
        "the supervisor is gone"
    );
    assert!(
        wait_until(T, || (http_get(addr) == g).then_some(())).is_some(),
        "generation {g} never answered"
    );
}

/// `reload` answers with the outcome: a good generation (exit 0, one
/// line on stdout), one that exits at start and one that is never ready
/// (exit 1, the reason on stderr, the old generation still serving): under
/// HTTP load, without a failed request.
#[test]
fn reload_reports_success_and_failures_under_load() {
    let dir = TempDir::new("ctl-reload");
    // Generation 2 exits at once, generation 3 never sends READY=1 (nor
    // accepts), every other one is the demo server.
    let release = script(
        &dir,
        "release.sh",
        &format!(
            "case \"$SUPERVISOR_GENERATION\" in\n  2) echo 'broken release' >&2; exit 1;;\n  3) exec sleep 300;;\nesac\nexec {}",
            demo()
        ),
    );
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .ready_timeout("1s")
        .drain_timeout("10s")
        .command([&release])
        .start();
    let gen1 = sv.wait_active(1);
    let events = sv.events();
    let load = Load::start(sv.listener_addr(0), 8, Duration::from_secs(60));
    load.expect_served(1, 50, "generation 1");

    // Generation 2 exits with status 1 before it is ready. It is gone
    // before the answer: its spawned event names its pid.
    let a = sv.reload_and_wait();
    let gen2 = events.first_of(Kind::Spawned, 2).pid.expect("a pid");
    assert_eq!(a.code, Some(1), "{a:?}");
    assert_eq!(
        a.line,
        format!(
            "supervisor: reload failed: generation 2 (pid {gen2}) exited with status 1 before it was ready; generation 1 (pid {gen1}) still serving"
        )
    );
    assert!(wait_gone(gen2, T), "failed generation 2 was not reaped");
    let st = sv.wait_generations(&[(1, gen1, "active")]);
    assert_eq!(st.reloads.failed, 1, "{st:#?}");
    assert_eq!(st.reloads.succeeded, 0, "{st:#?}");
    assert_eq!(st.reloads.pending, 0, "{st:#?}");
    let last = st.reloads.last_failure.as_deref().unwrap_or_default();
    assert!(
        last.contains(&format!("generation 2 (pid {gen2}) exited with status 1")),
        "{st:#?}"
    );
    load.expect_served(1, 50, "generation 1 after the failed reload");

    // Generation 3 never becomes ready: stopped after the ready timeout.
    // The status shows it starting meanwhile.
    let asked = Instant::now();
    let (a, gen3) = std::thread::scope(|s| {
        let reload = s.spawn(|| sv.reload_and_wait());
        let gen3 = sv.wait_state(3, "starting", T).pid.expect("a pid");
        (reload.join().unwrap(), gen3)
    });
    assert_eq!(a.code, Some(1), "{a:?}");
    assert_eq!(
        a.line,
        format!(
            "supervisor: reload failed: generation 3 (pid {gen3}) was not ready within 1s; generation 1 (pid {gen1}) still serving"
        )
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "answered before the ready timeout"
    );
    assert!(wait_gone(gen3, T), "failed generation 3 was not reaped");
    let st = sv.wait_generations(&[(1, gen1, "active")]);
    assert_eq!(st.reloads.failed, 2, "{st:#?}");
    assert_eq!(st.reloads.succeeded, 0, "{st:#?}");
    let last = st.reloads.last_failure.as_deref().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "generation 3 (pid {gen3}) was not ready within 1s"
        )),
        "{st:#?}"
    );
    load.expect_served(1, 50, "generation 1 after the second failed reload");
    assert_eq!(
        load.generations(),
        vec![1],
        "only generation 1 may have served so far"
    );

    // A good release takes over.
    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(0), "{a:?}");
    let gen4 = sv.wait_active(4);
    // Generation 1 was never asked to go, not even for a moment, before
    // this third request: the event stream has the whole history.
    let all = events.wait("generation 1 quiescing", |r| is(r, Kind::Quiescing, 1));
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
    let prefix = format!("generation 4 (pid {gen4}) ready in ");
    let suffix = format!("; generation 1 (pid {gen1}) quiescing");
    assert!(
        a.line.starts_with(&prefix) && a.line.ends_with(&suffix),
        "{a:?}"
    );
    // The answer is the log's line, word for word.
    let logged = sv.wait_line(&prefix, T);
    assert_eq!(message(&logged), a.line);
    load.expect_served(4, 50, "traffic to generation 4");
    let st = sv.wait_generations(&[(4, gen4, "active")]);
    assert_eq!(st.reloads.succeeded, 1, "{st:#?}");
    assert_eq!(st.reloads.failed, 2, "{st:#?}");
    // The last failed reload stays on record after a success.
    let last = st.reloads.last_failure.as_deref().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "generation 3 (pid {gen3}) was not ready within 1s"
        )),
        "{st:#?}"
    );
    let human = sv.ctl(&["status"]);
    assert!(
        human.stdout.contains(&format!(
            "last failed reload: generation 3 (pid {gen3}) was not ready within 1s"
        )) && human
            .stdout
            .contains("reloads:     1 succeeded, 2 failed, 0 pending"),
        "{}",
        human.stdout
    );

    let served = load.finish_clean("reloads under load", 1);
    assert_eq!(served.generations(), vec![1, 4], "{served:?}");
}

/// Concurrent `reload` clients while a slow generation starts: every
/// one succeeds, and each answer is the outcome of the generation its own
/// request started or was queued into (derived from the supervisor's event
/// stream, whose events come in the order the requests were handled).
#[test]
fn concurrent_reloads_coalesce_and_each_answer_is_truthful() {
    let dir = TempDir::new("ctl-concurrent");
    // Generations after the first take a second to become ready.
    let slow = script(
        &dir,
        "slow.sh",
        &format!(
            "[ \"$SUPERVISOR_GENERATION\" -gt 1 ] && sleep 1\nexec {}",
            demo()
        ),
    );
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .drain_timeout("10s")
        .command([&slow])
        .start();
    let gen1 = sv.wait_active(1);
    let events = sv.events();
    let control = sv.control.to_str().unwrap().to_string();
    const CLIENTS: usize = 8;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (barrier, control) = (barrier.clone(), control.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let child = Command::new(supervisor_bin())
                    .args(["reload", "--timeout", "20s", "--control", &control])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start a reload client");
                let pid = child.id() as i32;
                let out = child.wait_with_output().expect("wait for a reload client");
                (pid, out)
            })
        })
        .collect();
    let results: Vec<(i32, std::process::Output)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (pid, out) in &results {
        assert_eq!(
            out.status.code(),
            Some(0),
            "client {pid}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every event up to the last reload's outcome (the generation serving
    // now).
    let last = sv.status().in_state("active").unwrap().generation;
    let all = events.wait("the last reload's outcome", |r| {
        is(r, Kind::ReloadSucceeded, last)
    });

    // Replay the events: a request either starts a generation at once
    // (the next spawned event is its generation) or is queued into the
    // one next generation, which starts when the starting one is ready.
    let mut expected: BTreeMap<i32, u64> = BTreeMap::new();
    let mut order: Vec<i32> = Vec::new();
    let mut pending: Option<i32> = None;
    let mut queued: Vec<i32> = Vec::new();
    let mut pids: BTreeMap<u64, i32> = BTreeMap::from([(1, gen1)]);
    let mut ready: BTreeMap<u64, &Record> = BTreeMap::new();
    for r in &all {
        match r.event {
            Kind::ReloadRequested => {
                assert!(pending.is_none(), "unhandled request before {r:?}");
                let pid: i32 = r
                    .source
                    .as_deref()
                    .and_then(|s| s.strip_prefix("control pid "))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("not a client's request: {r:?}"));
                order.push(pid);
                pending = Some(pid);
            }
            Kind::ReloadQueued => queued.push(pending.take().expect("a queued request")),
            Kind::Spawned => {
                let g = r.generation.expect("a generation");
                pids.insert(g, r.pid.expect("a pid"));
                if let Some(p) = pending.take() {
                    expected.insert(p, g);
                } else {
                    for p in queued.drain(..) {
                        expected.insert(p, g);
                    }
                }
            }
            Kind::Ready => {
                ready.insert(r.generation.expect("a generation"), r);
            }
            _ => {}
        }
    }
    assert!(pending.is_none() && queued.is_empty(), "{all:#?}");
    assert_eq!(order.len(), CLIENTS, "every client's request is an event");

    let mut by_gen: BTreeMap<u64, usize> = BTreeMap::new();
    for (pid, out) in &results {
        let g = *expected
            .get(pid)
            .unwrap_or_else(|| panic!("no request from client {pid} among the events"));
        *by_gen.entry(g).or_default() += 1;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let text = one_line("reload", &stdout);
        // The outcome of generation g: it (its pid) ready, the one it
        // replaced (its pid) quiescing.
        let r = ready
            .get(&g)
            .unwrap_or_else(|| panic!("generation {g} never became ready"));
        let old = r.replaced.expect("it replaced one");
        let (prefix, suffix) = (
            format!("generation {g} (pid {}) ready in ", pids[&g]),
            format!("; generation {old} (pid {}) quiescing", pids[&old]),
        );
        assert!(
            text.starts_with(&prefix) && text.ends_with(&suffix),
            "client {pid} should have the outcome of generation {g} ({prefix}...{suffix}): {text}"
        );
    }
    // The first request started generation 2; every request that arrived
    // while 2 was starting shares generation 3.
    assert_eq!(expected[&order[0]], 2);
    let queued_into_3 = all.iter().filter(|r| is(r, Kind::ReloadQueued, 2)).count();
    // Generation 2 takes a second to start, while the other clients are
    // already connected: some of them are queued.
    assert!(queued_into_3 > 0, "no request was coalesced: {all:#?}");
    assert!(
        by_gen.get(&3).copied().unwrap_or(0) >= queued_into_3,
        "{queued_into_3} requests queued during generation 2's start: {by_gen:?}"
    );
    eprintln!("answers by generation: {by_gen:?}");
    assert_eq!(
        by_gen.keys().copied().collect::<Vec<_>>(),
        (2..2 + by_gen.len() as u64).collect::<Vec<_>>(),
        "generations answered are consecutive: {by_gen:?}"
    );
    let st = sv.status();
    let n = by_gen.len() as u64;
    assert_eq!(st.reloads.succeeded, n, "{st:#?}");
    assert_eq!(st.reloads.pending, 0, "{st:#?}");
}

/// `status` shows a draining generation (JSON and human) while it
/// drains, and forgets it once it has exited.
#[test]
fn status_shows_a_draining_generation_until_it_exits() {
    // An idle keep-alive connection keeps generation 1 draining until the
    // test sends its last request.
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .drain_timeout("30s")
        .demo(&["--idle-grace", "30s"])
        .start();
    let gen1 = sv.wait_active(1);
    let events = sv.events();
    let addr = sv.listener_addr(0);
    let mut idle = Client::new(addr);
    assert!(matches!(
        idle.get("/"),
        Reply::Ok {
            generation: 1,
            close: false
        }
    ));
    let st = sv.wait_generations(&[(1, gen1, "active")]);
    assert_eq!(st.supervisor.pid, sv.pid as u32, "{st:#?}");
    assert_eq!(
        st.supervisor.control,
        sv.control.to_str().unwrap(),
        "{st:#?}"
    );
    assert!(!st.supervisor.stopping, "{st:#?}");
    assert_eq!(st.listeners[0].address, addr.to_string(), "{st:#?}");
    assert_eq!(st.listeners[0].fd, 3, "{st:#?}");

    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(0), "{a:?}");
    let gen2 = sv.wait_active(2);
    assert!(
        a.line
            .starts_with(&format!("generation 2 (pid {gen2}) ready in ")),
        "{a:?}"
    );

    // Draining for as long as the idle connection stays.
    let st = sv.wait_generations(&[(1, gen1, "draining"), (2, gen2, "active")]);
    let g1 = st.generation(1).unwrap();
    assert!(g1.age_ms.unwrap() >= g1.state_ms, "{st:#?}");
    let human = sv.ctl(&["status"]);
    assert_eq!(human.code, Some(0), "{human:?}");
    let line = human
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1 ") && l.contains(&format!("pid {gen1}")))
        .unwrap_or_else(|| panic!("no line for generation 1:\n{}", human.stdout));
    assert!(
        line.contains("draining") && line.contains(", draining for "),
        "{line:?}"
    );
    let line = human
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("2 ") && l.contains(&format!("pid {gen2}")))
        .unwrap_or_else(|| panic!("no line for generation 2:\n{}", human.stdout));
    assert!(line.contains("active"), "{line:?}");
    assert!(
        human
            .stdout
            .contains("reloads:     1 succeeded, 0 failed, 0 pending"),
        "{}",
        human.stdout
    );

    // Still draining: the idle connection's next request is answered by
    // generation 1, with the close announced.
    assert!(process_exists(gen1));
    match idle.get("/") {
        Reply::Ok {
            generation: 1,
            close: true,
        } => {}
        other => panic!("last request on the draining generation: {other:?}"),
    }
    drop(idle);
    let exited = events.first_of(Kind::Exited, 1);
    assert_eq!(
        (
            exited.pid,
            exited.reason.as_deref(),
            exited.status.as_deref()
        ),
        (Some(gen1), Some("drained"), Some("exited with status 0")),
        "{exited:?}"
    );
    sv.wait_generations(&[(2, gen2, "active")]);
    let human = sv.ctl(&["status"]);
    assert!(!human.stdout.contains("draining"), "{}", human.stdout);
}

/// Whether `path` and every directory above it can be traversed (and the
/// file executed) by any user.
fn usable_by_others(path: &Path) -> bool {
    path.ancestors().all(|p| {
        p.as_os_str().is_empty()
            || std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

/// Run the client binary `bin` as `nobody`.
fn ctl_as_nobody(bin: &Path, args: &[&str]) -> (i32, Ctl) {
    ctl_as(65534, bin, args)
}

/// Run the client as `uid` (and the same gid); returns its pid and output.
fn ctl_as(uid: u32, bin: &Path, args: &[&str]) -> (i32, Ctl) {
    use std::os::unix::process::CommandExt;
    // Bounded: a refused client left unanswered must fail the test, not
    // hang it.
    let bound: &[&str] =
        if matches!(args.first(), Some(&"reload" | &"stop")) && !args.contains(&"--timeout") {
            &["--timeout", "10s"]
        } else {
            &[]
        };
    let child = Command::new(bin)
        .args(args)
        .args(bound)
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the client as nobody");
    let pid = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    (
        pid,
        Ctl {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
    )
}

/// The socket is 0600 and ours (another user's clients are refused:
/// `the_supervisor_refuses_other_users`).
#[test]
fn control_socket_is_private_and_ours() {
    let dir = TempDir::new("ctl-perm");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path("c.sock");
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .control(&sock)
        .demo(&[])
        .start();
    sv.wait_active(1);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()),
        "{meta:?}"
    );
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "socket mode");
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    assert_eq!(meta.uid(), me, "socket owner");
}

/// Another user is refused by the kernel (0600) and, if the socket file is
/// opened up, by the supervisor (SO_PEERCRED): it says so in its answer
/// and its log, and does nothing.
#[test]
#[ignore = "needs root: clients of another user"]
fn the_supervisor_refuses_other_users() {
    require_root("the_supervisor_refuses_other_users");
    let dir = TempDir::new("ctl-perm-root");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path("c.sock");
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .control(&sock)
        .demo(&[])
        .start();
    let gen1 = sv.wait_active(1);
    let bin = if usable_by_others(Path::new(supervisor_bin())) {
        PathBuf::from(supervisor_bin())
    } else {
        let copy = dir.path("supervisor");
        std::fs::copy(supervisor_bin(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    };
    let path = sock.to_str().unwrap();

    // The kernel refuses the connection to a 0600 socket.
    let (_, out) = ctl_as_nobody(&bin, &["reload", "--timeout", "10s", "--control", path]);
    assert_eq!(out.code, Some(3), "{out:?}");
    let err = one_line("refused by the kernel", &out.stderr);
    assert!(
        err.contains(path) && err.contains("permission denied"),
        "{err}"
    );

    // Opened up, the supervisor itself refuses every request.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    for (request, what) in [
        ("reload", "reload failed"),
        ("status", "status failed"),
        ("stop", "stop failed"),
    ] {
        let (pid, out) = ctl_as_nobody(&bin, &[request, "--control", path]);
        assert_eq!(out.code, Some(1), "{request}: {out:?}");
        assert_eq!(out.stdout, "", "{request}: {out:?}");
        assert_eq!(
            one_line(request, &out.stderr),
            format!(
                "supervisor: {what}: permission denied: uid 65534 may not control this supervisor"
            )
        );
        sv.wait_line(
            &format!("refused a control connection from pid {pid} (uid 65534)"),
            T,
        );
    }
    // Nothing happened: no reload (no generation 2, none counted or
    // pending), no stop.
    let st = sv.status();
    assert_eq!(
        st.states(),
        vec![(1, Some(gen1), "active".to_string())],
        "{st:#?}"
    );
    assert!(!st.supervisor.stopping, "{st:#?}");
    assert_eq!(st.reloads.succeeded, 0, "{st:#?}");
    assert_eq!(st.reloads.failed, 0, "{st:#?}");
    assert_eq!(st.reloads.pending, 0, "{st:#?}");
    assert_serving(&sv, sv.listener_addr(0), 1);
}

/// Garbage, oversized and half-closed requests, clients that leave, and
/// more connections than the limit: each is answered or closed, and the
/// supervisor keeps serving and reloading.
#[test]
fn hostile_and_careless_peers_do_not_disturb_the_supervisor() {
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .drain_timeout("10s")
        .demo(&[])
        .start();
    sv.wait_active(1);
    // Subscribed first: an event stream is not one of the connections
    // counted against the limit, so it follows everything below.
    let events = sv.events();
    let addr = sv.listener_addr(0);
    let path = sv.control.clone();
    let me = std::process::id();

    // Not a request.
    let a = exchange(&path, b"hello\n");
    assert_eq!(
        a,
        "error unknown request \"hello\" (expected reload [rolling K|canary PCT [DUR]], promote, rollback, status, events, stop, upgrade [DUR], fds [NAME...] or listen NAME ADDR)\n"
    );
    let a = exchange(&path, b"RELOAD\n");
    assert!(a.starts_with("error unknown request \"RELOAD\""), "{a:?}");
    // Binary garbage, NULs and all: one escaped line.
    let a = exchange(&path, b"\x00\xff\xfe\x1b[2J\x00\n");
    one_line("binary garbage", &a);
    assert!(a.starts_with("error unknown request "), "{a:?}");
    assert!(!a.contains('\0') && !a.contains('\x1b'), "{a:?}");
    // A long line with its newline, and 1 MiB without one: the supervisor
    // answers and closes after MAX_REQUEST bytes, so the write may fail.
    let mut long = vec![b'x'; 2000];
    long.push(b'\n');
    assert_eq!(
        exchange(&path, &long),
        "error request longer than 1024 bytes\n"
    );
    let mut s = raw(&path);
    match s.write_all(&vec![b'y'; 1 << 20]) {
        Ok(()) => {}
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET)),
            "writing 1 MiB: {e}"
        ),
    }
    assert_eq!(
        read_answer(&mut s).unwrap(),
        "error request longer than 1024 bytes\n"
    );
    drop(s);
    // A CR before the newline is tolerated; bytes after the line are
    // ignored (one request per connection).
    let a = exchange(&path, b"status\r\nreload\n");
    let json = a.strip_prefix("ok ").unwrap_or_else(|| panic!("{a:?}"));
    let st: Status = serde_json::from_str(one_line("status", json)).unwrap();
    assert_eq!(st.supervisor.pid, sv.pid as u32);

    // Nothing, then end of input: closed without an answer.
    let mut s = raw(&path);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_answer(&mut s).unwrap(), "");
    // A request without its newline, then end of input: still a request.
    let mut s = raw(&path);
    s.write_all(b"reload").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let a = read_answer(&mut s).unwrap();
    let gen2 = sv.wait_active(2);
    assert!(
        a.starts_with(&format!("ok generation 2 (pid {gen2}) ready in ")),
        "{a:?}"
    );
    // That was the first reload request: the one after `status` on the
    // same connection was ignored.
    let (i, all) = events.wait_from(0, "generation 2's outcome", |r| {
        is(r, Kind::ReloadSucceeded, 2)
    });
    let requests = matching(&all[..i], |r| r.event == Kind::ReloadRequested);
    assert_eq!(requests.len(), 1, "{all:#?}");
    // A client that leaves without waiting for its answer: the reload
    // still happens, and its outcome is made as for any other.
    let from = events.len();
    let mut s = raw(&path);
    s.write_all(b"reload\n").unwrap();
    drop(s);
    let source = format!("control pid {me}");
    events.wait_from(from, "the request of the client that left", |r| {
        r.event == Kind::ReloadRequested && r.source.as_deref() == Some(source.as_str())
    });
    sv.wait_active(3);
    events.wait_from(from, "generation 3's outcome", |r| {
        is(r, Kind::ReloadSucceeded, 3)
    });
    assert_serving(&sv, addr, 3);

    // 100 idle connections: the first 64 are held, the others refused.
    let from = sv.cursor();
    let mut conns: Vec<UnixStream> = (0..100).map(|_| raw(&path)).collect();
    for c in &conns {
        c.set_nonblocking(true).unwrap();
    }
    let mut answers: BTreeMap<usize, String> = BTreeMap::new();
    let all_refused = wait_until(T, || {
        for (i, c) in conns.iter_mut().enumerate() {
            if answers.contains_key(&i) {
                continue;
            }
            let mut buf = [0u8; 256];
            match c.read(&mut buf) {
                Ok(n) => {
                    answers.insert(i, String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("connection {i}: {e}"),
            }
        }
        (answers.len() >= 36).then_some(())
    });
    assert!(
        all_refused.is_some(),
        "only {} connections refused: {answers:?}",
        answers.len()
    );
    assert_eq!(answers.len(), 36, "{answers:?}");
    for a in answers.values() {
        assert_eq!(a, "error busy: too many control connections\n");
    }
    // Each refusal is logged before it is answered, but the log is read
    // by another thread of this test: wait for it (bounded).
    let refusals = |sv: &Supervisor| {
        sv.output()
            .lines()
            .skip(from)
            .filter(|l| {
                l.contains("refused a control connection from pid ")
                    && l.contains(": 64 already open")
            })
            .count()
    };
    wait_until(WAIT, || (refusals(&sv) >= 36).then_some(()));
    assert_eq!(refusals(&sv), 36);
    // While the 64 are held, one more is refused too, at once: answered
    // and closed before its request is read, so that a request written
    // after that fails (EPIPE) although the answer is there to read.
    let mut extra = refused_connection(&sv);
    let mut rest = [0u8; 16];
    assert_eq!(extra.read(&mut rest).unwrap(), 0, "closed after the answer");
    let w = extra.write_all(b"status\n");
    assert!(
        matches!(&w, Err(e) if e.raw_os_error() == Some(libc::EPIPE)),
        "write after the refusal: {w:?}"
    );
    drop(extra);
    // HTTP and SIGHUP still work. (Every control connection is taken:
    // the event stream, not the status, says when generation 4 is ready.)
    assert_serving(&sv, addr, 3);
    sv.signal(libc::SIGHUP);
    events.first_of(Kind::Ready, 4);
    assert_serving(&sv, addr, 4);
    // The refused ones are closed; the held ones still wait for a request.
    for (i, c) in conns.iter_mut().enumerate() {
        let mut buf = [0u8; 16];
        let r = c.read(&mut buf);
        if answers.contains_key(&i) {
            assert!(matches!(r, Ok(0)), "refused connection {i}: {r:?}");
        } else {
            assert!(
                matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock),
                "held connection {i}: {r:?}"
            );
        }
    }
    // Closed, they free their places.
    drop(conns);
    let ok = wait_until(T, || {
        let out = sv.ctl(&["status", "--json"]);
        (out.code == Some(0)).then_some(out)
    });
    assert!(ok.is_some(), "status never worked again");

    // And through all of it, the supervisor is fine.
    let a = sv.reload_and_wait();
    assert_eq!(a.code, Some(0), "{a:?}");
    let gen5 = sv.wait_active(5);
    assert!(
        a.line
            .starts_with(&format!("generation 5 (pid {gen5}) ready in ")),
        "{a:?}"
    );
    assert_serving(&sv, addr, 5);
    let st = sv.status();
    assert_eq!(st.reloads.succeeded, 4, "{st:#?}");
}

/// Open one more connection to a supervisor that holds the most it may,
/// and read its refusal (the read is bounded: see [`raw`]).
fn refused_connection(sv: &Supervisor) -> UnixStream {
    let mut s = raw(&sv.control);
    assert_eq!(
        read_answer(&mut s).unwrap(),
        "error busy: too many control connections\n",
        "the connection was not refused"
    );
    s
}

/// A client refused at once (busy; or another user's, see the permission
/// test) is answered and closed before the supervisor reads its request.
/// Whichever comes first, its request or the close, the client must print
/// the answer and exit 1, never fail on a broken pipe (exit 3).
#[test]
fn a_refused_client_prints_the_answer_whatever_the_race() {
    let sv = Supervisor::builder().tcp().notify().demo(&[]).start();
    sv.status();
    let held: Vec<UnixStream> = (0..64).map(|_| raw(&sv.control)).collect();
    // The accept queue is first in, first out: once a 65th connection is
    // refused, the 64 are held.
    drop(refused_connection(&sv));
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..40 {
        let out = sv.ctl(&["status"]);
        *outcomes
            .entry(format!("exit {:?}: {}", out.code, out.stderr.trim_end()))
            .or_default() += 1;
    }
    assert_eq!(
        outcomes.keys().collect::<Vec<_>>(),
        vec!["exit Some(1): supervisor: status failed: busy: too many control connections"],
        "a refused `status` client, 40 times: {outcomes:#?}"
    );
    drop(held);
    assert!(
        wait_until(T, || (sv.ctl(&["status"]).code == Some(0)).then_some(())).is_some(),
        "status never worked again"
    );
}

/// A connection that sends no complete request within 10 s is answered
/// with an error and closed, a slow partial one included.
#[test]
fn silent_connections_are_closed_after_the_request_timeout() {
    let sv = Supervisor::builder().tcp().notify().demo(&[]).start();
    sv.status();
    let start = Instant::now();
    let mut silent = raw(&sv.control);
    let mut partial = raw(&sv.control);
    partial.write_all(b"rel").unwrap();
    for s in [&mut silent, &mut partial] {
        let a = read_answer(s).unwrap();
        assert_eq!(a, "error no request within 10s\n");
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(9500),
        "closed after {waited:?}"
    );
    // The supervisor's own `status` works meanwhile and after.
    let st = sv.status();
    assert_eq!(st.supervisor.pid, sv.pid as u32);
}

/// No supervisor at the path: exit 3 and one line naming the path and
/// the reason.
#[test]
fn unreachable_control_sockets_are_reported_in_one_line() {
    let dir = TempDir::new("ctl-none");
    let check = |path: &Path, reason: &str| {
        let p = path.to_str().unwrap();
        for request in [vec!["status"], vec!["reload"], vec!["stop"]] {
            let mut args = request.clone();
            args.extend(["--control", p]);
            let out = ctl(&args);
            assert_eq!(out.code, Some(3), "{args:?}: {out:?}");
            assert_eq!(out.stdout, "", "{args:?}: {out:?}");
            let line = one_line("unreachable", &out.stderr);
            assert!(
                line.starts_with("supervisor: error: ")
                    && line.contains(p)
                    && line.contains(reason),
                "{args:?}: {line:?} should name {p} and say {reason:?}"
            );
        }
    };
    check(Path::new("/nonexistent/dir/x.sock"), "no such socket");
    // A socket file nobody listens on.
    let stale = dir.path("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    check(&stale, "nothing is listening");
    // A regular file is not a socket at all.
    let file = dir.path("file.sock");
    std::fs::write(&file, "not a socket").unwrap();
    check(&file, "not a socket");
}

/// `stop` returns once the supervisor is gone and its socket file with
/// it; a second supervisor cannot take a live socket's path, but one after
/// a crash replaces the stale file.
#[test]
fn stop_returns_after_exit_and_the_socket_path_is_guarded() {
    let dir = TempDir::new("ctl-stop");
    let sock = dir.path("c.sock");
    let path = sock.to_str().unwrap().to_string();
    let start = || {
        Supervisor::builder()
            .tcp()
            .notify()
            .control(&sock)
            .demo(&[])
            .start()
    };

    let mut first = start();
    let gen1 = first.wait_active(1);

    // A second supervisor on the same path fails at once.
    let mut second = start();
    assert_eq!(second.wait_exit(T).code(), Some(1));
    // Its one line is its error: a child started would have had a line
    // of its own (the harness runs it with RUST_LOG=debug).
    let out = second.output();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("supervisor: error: ") && out.contains(&path) && out.contains("in use"),
        "{out}"
    );
    // ... and left the first one's socket alone.
    assert!(sock.exists());
    let st = first.status();
    assert_eq!(st.supervisor.pid, first.pid as u32, "{st:#?}");

    // Stop through the socket: the client returns after the exit.
    let out = first.ctl(&["stop", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        one_line("stop", &out.stdout),
        format!("supervisor (pid {}) stopped: exit status 0", first.pid)
    );
    assert_eq!(out.stderr, "", "{out:?}");
    // Already exited: a zombie until the test reaps it.
    assert_eq!(process_state(first.pid), Some('Z'), "still running");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "socket file left behind"
    );
    assert_eq!(first.wait_exit(Duration::from_millis(100)).code(), Some(0));
    assert!(first.has_line("stop requested (control socket, pid "));
    assert!(!process_exists(gen1) || process_state(gen1) == Some('Z'));
    assert!(wait_gone(gen1, T), "generation 1 outlived the supervisor");

    // A supervisor that dies by SIGKILL leaves its socket file behind; the
    // next one on the path replaces it.
    let mut crashed = start();
    let crashed_gen1 = crashed.wait_active(1);
    crashed.signal(libc::SIGKILL);
    crashed.wait_exit(T);
    // SAFETY: killing the process group of the child it started, which
    // gets its parent-death signal anyway.
    unsafe { libc::kill(-crashed_gen1, libc::SIGKILL) };
    assert!(
        std::os::unix::fs::FileTypeExt::is_socket(
            &std::fs::symlink_metadata(&sock).unwrap().file_type()
        ),
        "a SIGKILLed supervisor cannot remove its socket file"
    );
    let mut next = start();
    next.wait_active(1);
    next.wait_line(&format!("removing stale socket file {path}"), T);
    let st = next.status();
    assert_eq!(st.supervisor.pid, next.pid as u32, "{st:#?}");
    let a = next.reload_and_wait();
    assert_eq!(a.code, Some(0), "{a:?}");
    next.wait_active(2);
    let out = next.ctl(&["stop", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(next.wait_exit(T).code(), Some(0));
    assert!(std::fs::symlink_metadata(&sock).is_err());
}

/// The client believes only a socket held by root or by its own user: a
/// stranger's socket at the path gets no say.
#[test]
#[ignore = "needs root: a server and clients of other users"]
fn the_client_trusts_only_root_or_its_own_user() {
    use std::os::unix::process::CommandExt;
    require_root("the_client_trusts_only_root_or_its_own_user");
    let dir = TempDir::new("ctl-impostor");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.path("c.sock");
    let bin = if usable_by_others(Path::new(supervisor_bin())) {
        PathBuf::from(supervisor_bin())
    } else {
        let copy = dir.path("supervisor");
        std::fs::copy(supervisor_bin(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    };
    // An impostor (uid 65534) answers every request with a happy lie.
    let script = "import os, socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(8)\n\
                  s.settimeout(30)\n\
                  while True:\n\
                  \x20   c, _ = s.accept()\n\
                  \x20   try:\n\
                  \x20       c.sendall(b'ok generation 42 (pid 1) ready in 1ms\\n')\n\
                  \x20   except OSError:\n\
                  \x20       pass\n\
                  \x20   c.close()\n";
    let mut impostor = Command::new("python3")
        .args(["-c", script, sock.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .spawn()
        .expect("start python3 as nobody");
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the pid of our own child process.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _kill = Kill(impostor.id() as i32);
    assert!(
        wait_until(T, || sock.exists().then_some(())).is_some(),
        "the impostor never listened"
    );
    let path = sock.to_str().unwrap();
    // uid 1 (daemon) is neither root nor the socket's owner: refused.
    for args in [
        &["reload", "--control", path][..],
        &["stop", "--control", path],
        &["status", "--control", path],
    ] {
        let (_, out) = ctl_as(1, &bin, args);
        assert_eq!(out.code, Some(3), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        let line = one_line("impostor", &out.stderr);
        assert!(
            line.contains("belongs to uid 65534") && line.contains(path),
            "{args:?}: {line}"
        );
    }
    // Its own user is believed (the check is about identity, not content).
    let (_, out) = ctl_as(65534, &bin, &["reload", "--control", path]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("generation 42"), "{out:?}");
    let _ = impostor.kill();
    let _ = impostor.wait();
}
