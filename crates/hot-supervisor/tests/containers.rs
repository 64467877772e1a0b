//! Containers and Kubernetes, end to end: the supervisor as PID 1 of a pid
//! namespace, a SIGKILLed supervisor, the shutdown delay, the health
//! endpoint (`/livez`, `/readyz`, `/metrics`), the start limit, `--user`,
//! `--env`/`--env-file`/`--chdir`, and drain progress lines.
//!
//! Tests that need root (a pid namespace, `--user`) are ignored with that
//! reason; `.ci/run` runs them as root (`cargo test -- --ignored`). The
//! `/metrics` test parses the exposition with the Python
//! `prometheus-client` package from the virtual environment that `.ci/run`
//! installs in `target/test-venv`: it is ignored too, and `.ci/run` runs
//! it.

use super::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const T: Duration = WAIT;

/// `kill(2)`, its result ignored (the process may be gone).
fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes no memory; every pid passed here is one of
    // this test's own processes (or a process group led by one).
    unsafe { libc::kill(pid, sig) };
}

/// On drop, SIGKILL to what a test started that the harness does not
/// know about: the children of a launcher (`Launched`, e.g. a supervisor
/// that is PID 1 of its own pid namespace, whose death ends the namespace)
/// or process groups (`Groups`, e.g. children that outlive a SIGKILLed
/// supervisor).
enum Reaper {
    Launched(i32),
    Groups(Vec<i32>),
}

impl Drop for Reaper {
    fn drop(&mut self) {
        match self {
            Reaper::Launched(launcher) => {
                for pid in children_of(*launcher) {
                    kill(pid, libc::SIGKILL);
                }
            }
            Reaper::Groups(groups) => {
                for &pgid in groups.iter() {
                    if process_exists(pgid) {
                        kill(-pgid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

/// Whether `pid` has exited (gone, or a zombie that someone else reaps).
fn dead(pid: i32) -> bool {
    process_state(pid).is_none_or(|s| s == 'Z')
}

/// `http_get`, which must succeed: the code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// Unix time now, in seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A copy of `binary` in a fresh directory that every user can enter, so
/// that a child run as another user can execute it wherever the build
/// tree lives.
fn world_executable_copy(binary: &Path, dir: &TempDir) -> PathBuf {
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = dir.path(binary.file_name().unwrap().to_str().unwrap());
    std::fs::copy(binary, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// The uid and gid of user `name`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam takes a NUL-terminated string and returns a pointer
    // to static storage or null; the fields are read at once, and this
    // test is the only caller in its thread.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// Every line the supervisor printed must be this one line (a setup error
/// says one thing and nothing else).
fn only_line(sv: &Supervisor) -> String {
    let out = sv.output();
    assert_eq!(out.lines().count(), 1, "expected one line, got:\n{out}");
    out
}

// --- 1. PID 1 of a pid namespace ---------------------------------------

#[test]
#[ignore = "needs root: a pid namespace"]
fn as_pid_1_it_reaps_orphans_forwards_signals_and_exits_with_the_child_status() {
    require_root("as_pid_1_it_reaps_orphans_forwards_signals_and_exits_with_the_child_status");
    let dir = TempDir::new("pid1");
    let file = dir.path("signals");
    // Traps first, then "traps set"; an orphaned grandchild (its parent
    // subshell exits) and a daemon (setsid, then the intermediate process
    // exits), both told apart by their arguments; then wait.
    let script = r#"
        trap 'echo usr1 >> "$0"' USR1
        trap 'echo winch >> "$0"' WINCH
        trap 'kill $s; exit 3' TERM
        (sleep 30.1 &)
        setsid sh -c 'sleep 30.2 & exit 0'
        sleep 300 & s=$!
        echo "traps set" >> "$0"
        while kill -0 $s 2>/dev/null; do wait $s; done
    "#;
    let mut sv = Supervisor::builder()
        .launcher(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .ready("delay:50ms")
        .command(["sh", "-c", script, file.to_str().unwrap()])
        .start();
    // Dropped first: SIGKILL to the supervisor ends the whole namespace
    // (the harness knows only unshare's pid and the namespace's pids).
    let _reaper = Reaper::Launched(sv.pid);
    let host_pid = wait_until(T, || children_of(sv.pid).first().copied())
        .expect("unshare never started the supervisor");
    let nspid = status_field(host_pid, "NSpid");
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "the supervisor is not PID 1 of its namespace: NSpid {nspid}"
    );
    // Read once the child has exec'd: in between, its cmdline can read
    // empty (seen under a loaded machine).
    assert!(
        wait_until(T, || cmdline(host_pid).contains("supervisor").then_some(())).is_some(),
        "{}",
        cmdline(host_pid)
    );
    let gen1 = sv.wait_active(1);
    let events = sv.events();
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        wait_until(T, || read().contains("traps set").then_some(())).is_some(),
        "the child never set its traps: {:?}",
        read()
    );

    // Both orphans are reparented to the supervisor...
    let orphans: Vec<i32> = ["sleep 30.1", "sleep 30.2"]
        .iter()
        .map(|args| {
            wait_until(T, || {
                children_of(host_pid)
                    .into_iter()
                    .find(|&p| cmdline(p) == *args)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{args:?} is not a child of the supervisor (pid {host_pid}); its children: {:?}",
                    children_of(host_pid)
                        .iter()
                        .map(|&p| (p, cmdline(p)))
                        .collect::<Vec<_>>()
                )
            })
        })
        .collect();
    // ...and once they die, reaped by it: not even a zombie remains.
    for &pid in &orphans {
        assert_eq!(status_field(pid, "PPid"), host_pid.to_string());
        kill(pid, libc::SIGKILL);
    }
    for &pid in &orphans {
        assert!(
            wait_gone(pid, T),
            "orphan {pid} ({:?}) was not reaped by the supervisor",
            process_state(pid)
        );
    }
    let zombies = || -> Vec<i32> {
        children_of(host_pid)
            .into_iter()
            .filter(|&p| process_state(p) == Some('Z'))
            .collect()
    };
    assert!(
        wait_until(T, || zombies().is_empty().then_some(())).is_some(),
        "zombies left under the supervisor: {:?}",
        zombies()
    );
    assert_eq!(
        sv.output().matches("reaped orphan pid").count(),
        2,
        "{}",
        sv.output()
    );

    // Signals for the server reach the serving generation.
    let mut want = String::from("traps set\n");
    for (sig, word) in [(libc::SIGUSR1, "usr1"), (libc::SIGWINCH, "winch")] {
        kill(host_pid, sig);
        want.push_str(word);
        want.push('\n');
        assert!(
            wait_until(T, || (read() == want).then_some(())).is_some(),
            "after {word}: the child recorded {:?}, want {want:?}",
            read()
        );
    }

    // SIGTERM to PID 1: the generation drains, and the supervisor, hence
    // unshare, exits with the generation's status.
    kill(host_pid, libc::SIGTERM);
    let status = sv.wait_exit(T);
    assert_eq!(status.code(), Some(3), "{}", sv.output());
    let all = events.until_end();
    let exited = &all[find(&all, 0, "generation 1's exit", |r| is(r, Kind::Exited, 1))];
    assert_eq!(
        (
            exited.pid,
            exited.reason.as_deref(),
            exited.status.as_deref()
        ),
        (Some(gen1), Some("drained"), Some("exited with status 3")),
        "{all:#?}"
    );
    assert_eq!(
        all.last().map(|r| (r.event, r.status.as_deref())),
        Some((Kind::Exit, Some("exit status 3"))),
        "{all:#?}"
    );
    assert!(wait_gone(host_pid, T));
}

// --- 2. The supervisor SIGKILLed ---------------------------------------

#[test]
fn a_sigkilled_supervisor_leaves_nothing_running_nor_holding_the_port() {
    let dir = TempDir::new("sigkill");
    let file = dir.path("signals");
    // gunicorn-style: the generation starts a worker (the demo server,
    // with LISTEN_PID its own) and stops it in its trap for the stop
    // signal (INT here, so that it is the stop signal that arrives, not a
    // fixed TERM); TERM would only be recorded.
    let script = r#"
        trap 'echo TERM >> "$0"' TERM
        trap 'echo INT >> "$0"; kill -TERM $w; wait $w; echo "worker exited $?" >> "$0"; exit 0' INT
        sh -c 'export LISTEN_PID=$$; exec "$0"' "$1" &
        w=$!
        wait $w
    "#;
    let sv = Supervisor::builder()
        .tcp()
        .notify()
        .args(["--stop-signal", "INT"])
        .command(["sh", "-c", script, file.to_str().unwrap(), &demo()])
        .start();
    let shell = sv.wait_active(1);
    let worker = wait_child(shell, &demo());
    let _reaper = Reaper::Groups(vec![shell, worker]);
    let addr = sv.listener_addr(0);
    let port = addr.port();
    let load = Load::start(addr, 4, Duration::from_secs(60));
    load.expect_served(1, 100, "before the SIGKILL");

    sv.signal(libc::SIGKILL);
    assert!(
        wait_until(T, || (dead(shell) && dead(worker)).then_some(())).is_some(),
        "left running after the supervisor's SIGKILL: shell {shell} {:?}, worker {worker} {:?}",
        process_state(shell),
        process_state(worker)
    );
    let served = load.finish();
    let recorded = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        recorded, "INT\nworker exited 0\n",
        "the generation got its stop signal and its worker drained"
    );
    // No socket listens on the port any more, and a plain bind (no
    // SO_REUSEPORT) takes it.
    assert!(
        wait_until(T, || socket_inode("tcp", port).is_none().then_some(())).is_some(),
        "something still listens on port {port}"
    );
    let bound = wait_until(T, || TcpListener::bind(addr).ok());
    assert!(bound.is_some(), "{addr} cannot be bound again");
    eprintln!(
        "sigkill: {} requests served before the SIGKILL; shell and worker stopped, port free",
        served.ok.load(std::sync::atomic::Ordering::Relaxed)
    );
}

// --- 3. The shutdown delay ---------------------------------------------

#[test]
fn shutdown_delay_keeps_serving_new_connections_while_readyz_says_503() {
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .args(["--shutdown-delay", "2s", "--health", "127.0.0.1:0"])
        .demo(&[])
        .start();
    let gen1 = sv.wait_active(1);
    let events = sv.events();
    let health = sv.health_addr();
    let addr = sv.listener_addr(0);
    let (code, body) = get(health, "/readyz");
    assert_eq!(code, 200, "{body}");
    let load = Load::start(addr, 4, Duration::from_secs(60));
    load.expect_served(1, 100, "before the stop");

    let t0 = Instant::now();
    sv.signal(libc::SIGTERM);
    // From the first moment: out of rotation.
    let (code, body) = get(health, "/readyz");
    assert_eq!(code, 503, "/readyz right after SIGTERM: {body}");
    assert!(body.contains("shutdown delay"), "{body}");
    // New connections are still served (well inside the 2 s).
    let (mut fresh, mut not_ready) = (0, 0);
    while t0.elapsed() < Duration::from_millis(1500) {
        match http_get(addr, "/") {
            Ok((200, body)) if body.contains("generation 1") => fresh += 1,
            other => panic!(
                "a new connection {:?} into the shutdown delay: {other:?}",
                t0.elapsed()
            ),
        }
        if fresh % 10 == 0 {
            let (code, body) = get(health, "/readyz");
            assert_eq!(code, 503, "/readyz during the delay: {body}");
            not_ready += 1;
        }
    }
    let served = load.finish_clean("load during the shutdown delay", 1);
    assert!(fresh >= 10, "only {fresh} new connections served");
    // Then the normal stop.
    let status = sv.wait_exit(T);
    let total = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{}", sv.output());
    assert!(total >= Duration::from_secs(2), "stopped after {total:?}");
    // The delay, then the stop: generation 1 drained, nothing forced.
    let all = events.until_end();
    let stops: Vec<(Option<&str>, Option<f64>)> = matching(&all, |r| r.event == Kind::Stop)
        .iter()
        .map(|r| (r.reason.as_deref(), r.duration_ms))
        .collect();
    assert_eq!(
        stops,
        [(Some("shutdown delay"), Some(2000.0)), (None, None)],
        "{all:#?}"
    );
    let exited = &all[find(&all, 0, "generation 1's exit", |r| is(r, Kind::Exited, 1))];
    assert_eq!(
        (exited.pid, exited.reason.as_deref()),
        (Some(gen1), Some("drained")),
        "{all:#?}"
    );
    assert!(!all.iter().any(|r| r.event == Kind::Killed), "{all:#?}");
    eprintln!(
        "shutdown delay: {fresh} new connections and {} keep-alive requests served after SIGTERM \
         (0 failures), {not_ready} /readyz answers all 503, exited after {total:?}",
        served.ok
    );
}

#[test]
fn a_second_stop_request_ends_the_shutdown_delay() {
    for second in ["SIGTERM", "supervisor stop"] {
        let mut sv = Supervisor::builder()
            .tcp()
            .ready("delay:50ms")
            .args(["--shutdown-delay", "10s"])
            .sleeper()
            .start();
        let pid = sv.wait_active(1);
        let events = sv.events();
        let t0 = Instant::now();
        sv.signal(libc::SIGTERM);
        let delay = events.first("the shutdown delay", |r| r.event == Kind::Stop);
        assert_eq!(
            (delay.reason.as_deref(), delay.duration_ms),
            (Some("shutdown delay"), Some(10_000.0)),
            "{delay:?}"
        );
        // The operator is told how to end it.
        sv.wait_line(
            "serving on for the 10s shutdown delay (a second stop request ends it now)",
            T,
        );
        assert!(process_exists(pid) && process_state(pid) != Some('Z'));
        if second == "SIGTERM" {
            sv.signal(libc::SIGTERM);
        } else {
            let out = sv.ctl(&["stop"]);
            assert_eq!(out.code, Some(0), "{out:?}");
        }
        let status = sv.wait_exit(T);
        let took = t0.elapsed();
        assert_eq!(status.code(), Some(0), "{second}: {}", sv.output());
        assert!(
            took < Duration::from_secs(5),
            "{second} did not end the 10s shutdown delay: stopped after {took:?}\n{}",
            sv.output()
        );
        // A normal stop (the generation drains), not a forced one.
        let all = events.until_end();
        let stops: Vec<Option<&str>> = matching(&all, |r| r.event == Kind::Stop)
            .iter()
            .map(|r| r.reason.as_deref())
            .collect();
        assert_eq!(stops, [Some("shutdown delay"), None], "{second}: {all:#?}");
        let exited = &all[find(&all, 0, "generation 1's exit", |r| is(r, Kind::Exited, 1))];
        assert_eq!(exited.reason.as_deref(), Some("drained"), "{all:#?}");
        assert!(!all.iter().any(|r| r.event == Kind::Killed), "{all:#?}");
    }
}

// --- 4. The health endpoint --------------------------------------------

/// The Python of the virtual environment `.ci/run` installs.
fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/python3")
}

/// The exposition parsed by `prometheus_client`: each family's name (as
/// the parser gives it) with its type and samples `(name, labels,
/// value)`. Fails if the parser is not installed.
type Families = BTreeMap<String, (String, Vec<(String, BTreeMap<String, String>, f64)>)>;

fn parse_metrics(text: &str) -> Families {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, [[s.name, s.labels, s.value] for s in f.samples]]
print(json.dumps(out))
"#;
    let python = venv_python();
    let usable = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        usable,
        "{} cannot import prometheus_client: .ci/run installs it (python3 -m venv target/test-venv; target/test-venv/bin/pip install prometheus-client)",
        python.display()
    );
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut families = Families::new();
    for (name, v) in json.as_object().unwrap() {
        let kind = v[0].as_str().unwrap().to_string();
        let samples = v[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (
                    s[0].as_str().unwrap().to_string(),
                    labels,
                    s[2].as_f64().unwrap(),
                )
            })
            .collect();
        families.insert(name.clone(), (kind, samples));
    }
    families
}

/// The value of sample `name` with exactly `labels`; fails if absent.
fn sample(f: &Families, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.values()
        .flat_map(|(_, s)| s)
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}{want:?} in {f:#?}"))
}

/// The type of family `name`.
fn kind<'a>(f: &'a Families, name: &str) -> &'a str {
    &f.get(name)
        .unwrap_or_else(|| panic!("no family {name}: {:?}", f.keys()))
        .0
}

#[test]
#[ignore = "needs prometheus-client in target/test-venv (.ci/run installs it)"]
fn metrics_count_what_happened() {
    let test_start = unix_now();
    // Generation 3 is a broken release; the others serve, with a grace
    // for idle keep-alive connections that keeps a drain going for 2 s.
    let script = r#"
        if [ "$SUPERVISOR_GENERATION" = 3 ]; then exec "$0" --fail-at-start; fi
        exec "$0" --idle-grace 2s
    "#;
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .args(["--health", "127.0.0.1:0"])
        .command(["sh", "-c", script, &demo()])
        .start();
    sv.wait_active(1);
    let health = sv.health_addr();
    let (code, body) = get(health, "/livez");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(health, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("generation 1 (pid "), "{body}");

    // Three reloads, the second one failing; then a crash restart.
    let answer = sv.reload_and_wait();
    assert_eq!(answer.code, Some(0), "{answer:?}");
    let answer = sv.reload_and_wait();
    assert_eq!(answer.code, Some(1), "{answer:?}");
    assert!(answer.line.contains("generation 3"), "{answer:?}");
    let before_last = unix_now();
    let answer = sv.reload_and_wait();
    let after_last = unix_now();
    assert_eq!(answer.code, Some(0), "{answer:?}");
    let gen4 = sv.wait_active(4);
    sv.wait_status("generations 1 to 3 gone", T, |st| {
        (st.generations.len() == 1).then_some(())
    });
    kill(gen4, libc::SIGKILL);
    sv.wait_active(5);
    sv.wait_status("only generation 5", T, |st| {
        (st.generations.len() == 1).then_some(())
    });
    let listener = sv.status().listeners[0].clone();

    let (code, text) = get(health, "/metrics");
    assert_eq!(code, 200, "{text}");
    let m = parse_metrics(&text);
    assert_eq!(sample(&m, "supervisor_serving_generation", &[]), 5.0);
    for (state, n) in [
        ("starting", 0.0),
        ("active", 1.0),
        ("quiescing", 0.0),
        ("draining", 0.0),
    ] {
        assert_eq!(
            sample(&m, "supervisor_generations", &[("state", state)]),
            n,
            "{state}"
        );
    }
    let reloads = |outcome| sample(&m, "supervisor_reloads_total", &[("outcome", outcome)]);
    assert_eq!((reloads("succeeded"), reloads("failed")), (2.0, 1.0));
    assert_eq!(sample(&m, "supervisor_crash_restarts_total", &[]), 1.0);
    let last = sample(&m, "supervisor_last_reload_success_timestamp_seconds", &[]);
    assert!(
        (before_last - 1.0..=after_last + 1.0).contains(&last),
        "last reload success at {last}, the reload ran from {before_last} to {after_last}"
    );
    let started = sample(&m, "supervisor_start_time_seconds", &[]);
    assert!(
        (test_start - 1.0..=before_last).contains(&started),
        "start time {started}, the test started at {test_start}"
    );
    assert_eq!(sample(&m, "supervisor_stopping", &[]), 0.0);
    let queued = sample(
        &m,
        "supervisor_listener_queued_connections",
        &[
            ("listener", &listener.name),
            ("mode", listener.mode.as_str()),
        ],
    );
    assert_eq!(queued, 0.0, "nothing connects meanwhile");
    // Two reloads took a new generation to ready; generations 1 and 2
    // drained (3 failed to start, 4 crashed).
    for (hist, n) in [
        ("supervisor_reload_duration_seconds", 2.0),
        ("supervisor_drain_duration_seconds", 2.0),
    ] {
        assert_eq!(kind(&m, hist), "histogram");
        assert_eq!(sample(&m, &format!("{hist}_count"), &[]), n, "{hist}");
        assert_eq!(sample(&m, &format!("{hist}_bucket"), &[("le", "+Inf")]), n);
        assert!(sample(&m, &format!("{hist}_sum"), &[]) > 0.0, "{hist}");
    }
    for (family, want) in [
        ("supervisor_reloads", "counter"),
        ("supervisor_crash_restarts", "counter"),
        ("supervisor_serving_generation", "gauge"),
        ("supervisor_generations", "gauge"),
        ("supervisor_stopping", "gauge"),
        ("supervisor_listener_queued_connections", "gauge"),
    ] {
        assert_eq!(kind(&m, family), want, "{family}");
    }

    // A stop: /readyz answers 503 at once and /metrics says stopping
    // while generation 5 drains (an idle keep-alive connection holds the
    // drain for its 2 s grace).
    let mut idle = Client::new(sv.listener_addr(0));
    assert!(matches!(idle.get("/"), Reply::Ok { generation: 5, .. }));
    sv.signal(libc::SIGTERM);
    let (code, body) = get(health, "/readyz");
    assert_eq!((code, body.as_str()), (503, "not ready: stopping\n"));
    let (code, text) = get(health, "/metrics");
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    assert_eq!(sample(&m, "supervisor_stopping", &[]), 1.0);
    assert_eq!(
        sample(&m, "supervisor_generations", &[("state", "draining")]),
        1.0
    );
    drop(idle);
    assert_eq!(sv.wait_exit(T).code(), Some(0), "{}", sv.output());
}

#[test]
fn the_health_port_shrugs_off_garbage_and_readyz_turns_at_a_stop() {
    // A grace for idle keep-alive connections keeps a drain going for 2 s.
    let mut sv = Supervisor::builder()
        .tcp()
        .notify()
        .args(["--health", "127.0.0.1:0"])
        .demo(&["--idle-grace", "2s"])
        .start();
    let gen1 = sv.wait_active(1);
    let health = sv.health_addr();
    // The start-up line tells the operator where it is.
    sv.wait_line(&format!("health endpoint http://{health}/ "), T);
    let (code, body) = get(health, "/livez");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(health, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("generation 1 (pid {gen1})")),
        "{body}"
    );

    garbage(&sv, health);

    // A stop: /readyz answers 503 at once, while generation 1 drains (an
    // idle keep-alive connection holds the drain for its 2 s grace).
    let mut idle = Client::new(sv.listener_addr(0));
    assert!(matches!(idle.get("/"), Reply::Ok { generation: 1, .. }));
    sv.signal(libc::SIGTERM);
    let (code, body) = get(health, "/readyz");
    assert_eq!((code, body.as_str()), (503, "not ready: stopping\n"));
    drop(idle);
    assert_eq!(sv.wait_exit(T).code(), Some(0), "{}", sv.output());
}

/// A small deterministic pseudo-random generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Read what the server sends until it closes (bounded by the stream's
/// timeout); errors (a reset) count as closed.
fn drain(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// 1,000 garbage connections to the health port (random bytes, heads
/// half-sent and then the write side shut, oversized heads, connections
/// closed at once, and 100 that stay silent): the supervisor's fds and
/// memory stay flat, silent connections are closed by its deadline, and
/// /livez still answers.
fn garbage(sv: &Supervisor, health: SocketAddr) {
    const FAST: usize = 900;
    const SILENT: usize = 100;
    const THREADS: usize = 4;
    // Margin for the allocator keeping freed buffers (64 connections of
    // at most 8 KiB + a read chunk each is about 600 KiB).
    const RSS_MARGIN_KIB: u64 = 1024;
    let storm = move |n: usize, seed: u64| {
        let mut answers = BTreeMap::<String, u64>::new();
        let mut rng = Rng(seed);
        for i in 0..n {
            let Ok(mut s) = TcpStream::connect_timeout(&health, Duration::from_secs(5)) else {
                *answers.entry("connect failed".into()).or_default() += 1;
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let len = 1 + (rng.next() % 4096) as usize;
            let _ = match i % 5 {
                // Random bytes, then gone.
                0 => s.write_all(&rng.bytes(len)),
                // Random bytes ending a head: an error answer.
                1 => {
                    let mut b = rng.bytes(len);
                    b.extend_from_slice(b"\r\n\r\n");
                    s.write_all(&b)
                }
                // Half a head, then the write side shut (half-open).
                2 => s
                    .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
                    .and_then(|()| s.shutdown(Shutdown::Write)),
                // A head over 8 KiB.
                3 => {
                    let mut b = b"GET /livez HTTP/1.1\r\nX-Big: ".to_vec();
                    b.extend(std::iter::repeat_n(b'a', 9000 + len));
                    b.extend_from_slice(b"\r\n\r\n");
                    s.write_all(&b)
                }
                // Connected and closed without a byte.
                _ => Ok(()),
            };
            if i % 5 == 0 || i % 5 == 4 {
                continue;
            }
            let reply = drain(&mut s);
            let first = String::from_utf8_lossy(&reply)
                .lines()
                .next()
                .unwrap_or("(closed)")
                .to_string();
            *answers.entry(first).or_default() += 1;
        }
        answers
    };
    // Warm up (the allocator's arenas, the kernel's socket caches), then
    // the baseline, with nothing connected.
    storm(50, 7);
    let count = || fds(sv.pid).len();
    let settled = |n: usize| wait_until(T, || (count() <= n).then_some(())).is_some();
    let fds_before = wait_until(T, || {
        let n = count();
        std::thread::sleep(Duration::from_millis(50));
        (count() == n).then_some(n)
    })
    .unwrap();
    let rss_before = rss_kib(sv.pid);

    let threads: Vec<_> = (0..THREADS as u64)
        .map(|t| std::thread::spawn(move || storm(FAST / THREADS, 0x9e37_79b9_7f4a_7c15 ^ t)))
        .collect();
    let mut answers = BTreeMap::<String, u64>::new();
    for t in threads {
        for (k, v) in t.join().unwrap() {
            *answers.entry(k).or_default() += v;
        }
    }
    assert!(
        answers
            .get("HTTP/1.1 431 Request Header Fields Too Large")
            .is_some_and(|&n| n > 0),
        "no oversized head got 431: {answers:?}"
    );
    assert!(
        answers.keys().any(|k| k.starts_with("HTTP/1.1 400")),
        "no garbage head got 400: {answers:?}"
    );

    // Silent connections: half a head, then nothing. More than the 64
    // the endpoint holds, so the rest are closed at once; the held ones
    // are closed at the 5 s deadline.
    let t0 = Instant::now();
    let silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&health, Duration::from_secs(5)).unwrap();
            s.write_all(b"GET /livez HTTP/1.1\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    // When the server closed each (EOF or a reset), polled together.
    let mut open: Vec<TcpStream> = silent;
    let mut closed_at = Vec::new();
    for s in &open {
        s.set_nonblocking(true).unwrap();
    }
    let all_closed = wait_until(Duration::from_secs(10), || {
        open.retain_mut(|s| match s.read(&mut [0u8; 512]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Ok(n) if n > 0 => true,
            _ => {
                closed_at.push(t0.elapsed());
                false
            }
        });
        open.is_empty().then_some(())
    });
    assert!(
        all_closed.is_some(),
        "{} silent connections still open after 10 s",
        open.len()
    );
    let closed_late = closed_at
        .iter()
        .filter(|&&t| t >= Duration::from_secs(4))
        .count();
    let silent_took = t0.elapsed();
    assert!(
        silent_took < Duration::from_secs(9),
        "silent connections held for {silent_took:?} (deadline 5 s)"
    );
    assert!(
        (1..=64).contains(&closed_late),
        "{closed_late} silent connections were held to the deadline (at most 64 at once)"
    );

    assert!(
        settled(fds_before),
        "fds: {fds_before} before, {} after: {:?}",
        count(),
        fds(sv.pid)
    );
    let rss_after = rss_kib(sv.pid);
    assert!(
        rss_after <= rss_before + RSS_MARGIN_KIB,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB (margin {RSS_MARGIN_KIB} KiB)"
    );
    let (code, body) = get(health, "/livez");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    eprintln!(
        "health garbage: {} connections; fds {fds_before} -> {}; VmRSS {rss_before} -> {rss_after} KiB; \
         {closed_late} silent ones closed at the deadline after {silent_took:?}; answers {answers:?}",
        FAST + SILENT,
        count()
    );
}

/// The answer to a request head of exactly `len` bytes (a `GET /livez`
/// padded with a header), sent at once: its status line.
fn head_of_length(health: SocketAddr, len: usize) -> String {
    let start = b"GET /livez HTTP/1.1\r\nX-Pad: ";
    let end = b"\r\n\r\n";
    let mut req = start.to_vec();
    req.extend(std::iter::repeat_n(b'a', len - start.len() - end.len()));
    req.extend_from_slice(end);
    assert_eq!(req.len(), len);
    let mut s = TcpStream::connect_timeout(&health, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&req).unwrap();
    let reply = drain(&mut s);
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("(closed)")
        .to_string()
}

#[test]
fn health_request_heads_over_8_kib_are_refused() {
    let sv = Supervisor::builder()
        .ready("delay:10ms")
        .args(["--health", "127.0.0.1:0"])
        .sleeper()
        .start();
    let health = sv.health_addr();
    assert_eq!(head_of_length(health, 8192), "HTTP/1.1 200 OK");
    for len in [8193, 8500, 9216, 9217, 20_000] {
        assert_eq!(
            head_of_length(health, len),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "a {len}-byte request head"
        );
    }
}

// --- 5. The start limit ------------------------------------------------

/// The generations a supervisor started, from its JSON log: (generation,
/// pid), in order.
fn spawned(sv: &Supervisor) -> Vec<(u64, i32)> {
    sv.logged_records()
        .iter()
        .filter(|r| r.event == Kind::Spawned)
        .map(|r| (r.generation.unwrap(), r.pid.unwrap()))
        .collect()
}

/// The stops a supervisor's JSON log records (the start limit hit, then
/// the stop itself): their reasons and statuses.
fn logged_stops(sv: &Supervisor) -> Vec<(Option<String>, Option<String>)> {
    sv.logged_records()
        .into_iter()
        .filter(|r| r.event == Kind::Stop)
        .map(|r| (r.reason, r.status))
        .collect()
}

#[test]
fn a_crash_loop_hits_the_start_limit_and_exits_with_the_child_status() {
    let t0 = Instant::now();
    // It ends before anyone could subscribe: its log is JSON.
    let mut sv = Supervisor::builder().json_log().command(["false"]).start();
    let status = sv.wait_exit(T);
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(1), "{}", sv.output());
    // Five starts, 100 + 200 + 400 + 800 ms apart.
    assert!(
        (Duration::from_millis(1400)..Duration::from_secs(10)).contains(&took),
        "gave up after {took:?}\n{}",
        sv.output()
    );
    let started = spawned(&sv);
    assert_eq!(
        started.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "{}",
        sv.output()
    );
    assert_eq!(
        logged_stops(&sv),
        [
            (
                Some("start limit hit".to_string()),
                Some("exited with status 1".to_string())
            ),
            (None, None)
        ],
        "{}",
        sv.output()
    );
    // The operator is told why it gave up.
    assert!(
        sv.has_line("5 starts within 10s: giving up"),
        "{}",
        sv.output()
    );
}

#[test]
fn a_first_generation_never_ready_hits_the_start_limit_with_a_hint() {
    let mut sv = Supervisor::builder()
        .notify()
        .ready_timeout("200ms")
        .json_log()
        .sleeper()
        .start();
    let status = sv.wait_exit(T);
    assert_eq!(status.code(), Some(1), "{}", sv.output());
    let started = spawned(&sv);
    assert_eq!(
        started.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "{}",
        sv.output()
    );
    // Each one not ready in time; then the start limit.
    let failed: Vec<(Option<u64>, Option<String>)> = sv
        .logged_records()
        .into_iter()
        .filter(|r| r.event == Kind::StartFailed)
        .map(|r| (r.generation, r.reason))
        .collect();
    assert_eq!(
        failed,
        (1..=5)
            .map(|g| (Some(g), Some("was not ready within 200ms".to_string())))
            .collect::<Vec<_>>(),
        "{}",
        sv.output()
    );
    assert_eq!(
        logged_stops(&sv)
            .into_iter()
            .map(|(reason, _)| reason)
            .collect::<Vec<_>>(),
        [Some("start limit hit".to_string()), None],
        "{}",
        sv.output()
    );
    // The hint the operator reads.
    assert!(
        sv.has_line("no READY=1 received: does the server send it? otherwise use --ready delay:DUR, tcp or http:PATH"),
        "{}",
        sv.output()
    );
    // Each was stopped and reaped.
    for (g, pid) in started {
        assert!(wait_gone(pid, T), "generation {g} (pid {pid}) left behind");
    }
}

// --- 6. --user ---------------------------------------------------------

/// Run a supervisor with `--user nobody` whose runtime directory is
/// `runtime`: the child runs as nobody on a privileged port and is ready
/// by its own READY=1; the control socket stays root's.
fn serve_as_nobody(runtime: &TempDir) {
    let (_port_held, port) = privileged_port();
    let (uid, gid) = user_ids("nobody").expect("no user nobody");
    let bin = TempDir::new("bin");
    let demo = world_executable_copy(&PathBuf::from(demo()), &bin);
    let supervisor = world_executable_copy(Path::new(supervisor_bin()), &bin);
    let sv = Supervisor::builder()
        .listen(&format!("127.0.0.1:{port}"))
        .notify()
        .ready_timeout("5s")
        .args(["--user", "nobody"])
        .env("RUNTIME_DIRECTORY", &runtime.0)
        .command([demo.to_str().unwrap()])
        .start();
    let pid = sv.wait_active(1);
    let ids = |field| status_field(pid, field);
    assert_eq!(ids("Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(ids("Gid"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
    assert!(
        !ids("Groups").split_whitespace().any(|g| g == "0"),
        "the child kept root's group: {}",
        ids("Groups")
    );
    assert!(status_field(sv.pid, "Uid").starts_with("0\t"));
    let (code, body) = get(SocketAddr::from(([127, 0, 0, 1], port)), "/");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("generation 1 pid {pid}")), "{body}");
    // The control socket: root's, 0600, and nobody cannot use it.
    let meta = std::fs::metadata(&sv.control).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let out = Command::new(&supervisor)
        .args(["status", "--control"])
        .arg(&sv.control)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "nobody used the control socket: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs root: --user"]
fn user_runs_the_child_as_that_user_on_a_privileged_port() {
    require_root("user_runs_the_child_as_that_user_on_a_privileged_port");
    let runtime = TempDir::new("run-user");
    std::fs::set_permissions(&runtime.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    serve_as_nobody(&runtime);
}

#[test]
#[ignore = "needs root: --user"]
fn user_readiness_works_from_a_private_runtime_directory() {
    // $XDG_RUNTIME_DIR must be 0700 (XDG Base Directory Specification),
    // and so may be a RuntimeDirectory= with RuntimeDirectoryMode=0700:
    // the child's user must still reach its NOTIFY_SOCKET.
    require_root("user_readiness_works_from_a_private_runtime_directory");
    let runtime = TempDir::new("run-private");
    std::fs::set_permissions(&runtime.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    serve_as_nobody(&runtime);
}

#[test]
#[ignore = "needs root: --user"]
fn a_child_run_as_nobody_fetches_its_own_sockets_over_its_channel() {
    require_root("a_child_run_as_nobody_fetches_its_own_sockets_over_its_channel");
    // The child library's fetch client, run as nobody, which cannot open
    // the control socket (root's, 0600): it must take its channel.
    let bin = TempDir::new("bin-channel");
    let child = world_executable_copy(&example("fetch_own"), &bin);
    let out = TempDir::new("out-channel");
    std::fs::set_permissions(&out.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let result = |g: u64| out.path(&format!("gen{g}.json"));
    let sv = Supervisor::builder()
        .tcp()
        .listen("admin=127.0.0.1:0")
        .notify()
        .ready_timeout("10s")
        .args(["--user", "nobody"])
        .command([
            "sh".to_string(),
            "-c".into(),
            r#"exec "$0" "$1/gen$SUPERVISOR_GENERATION.json""#.into(),
            child.to_str().unwrap().into(),
            out.0.to_str().unwrap().into(),
        ])
        .start();
    let (uid, _) = user_ids("nobody").expect("no user nobody");
    sv.wait_active(1);
    // A second generation: its channel gives its own sockets, not the
    // routed ones of generation 1 (steer mode: each has its own).
    assert_eq!(sv.reload_and_wait().code, Some(0));
    for g in [1, 2] {
        let text = std::fs::read_to_string(result(g)).unwrap();
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r["uid"], uid, "{text}");
        assert_eq!(
            r["error"],
            serde_json::Value::Null,
            "generation {g}: {text}"
        );
        assert_eq!(r["fetched"], 2, "{text}");
        assert_eq!(
            r["same"],
            serde_json::json!([true, true]),
            "generation {g}: {text}"
        );
        for request in ["reload", "stop"] {
            let refused = r[request].as_str().unwrap_or_default();
            assert!(refused.starts_with("error "), "generation {g}: {text}");
        }
    }
    // Nothing was reloaded through the channel: generation 2 serves, and
    // only the one reload asked for on the control socket happened.
    let st = sv.status();
    assert_eq!(st.in_state("active").unwrap().generation, 2);
    assert_eq!(st.reloads.succeeded, 1, "{st:?}");
}

#[test]
fn an_unknown_user_fails_before_anything_is_bound() {
    let dir = TempDir::new("nouser");
    let control = dir.path("control.sock");
    let mut sv = Supervisor::builder()
        .tcp()
        .control(&control)
        .args(["--user", "no-such-user-xyz"])
        .sleeper()
        .start();
    assert_eq!(sv.wait_exit(T).code(), Some(1), "{}", sv.output());
    let line = only_line(&sv);
    let want = if is_root() {
        "supervisor: error: --user no-such-user-xyz: no such user"
    } else {
        "--user and --group need the supervisor to run as root"
    };
    assert!(line.contains(want), "{line}");
    assert!(!control.exists(), "the control socket was bound");
}

// --- 7. --env, --env-file, --chdir --------------------------------------

#[test]
fn env_env_file_and_chdir_reach_the_child() {
    let dir = TempDir::new("env");
    let first = dir.path("first.env");
    std::fs::write(
        &first,
        "# a comment\n; another\n\nX=from-first\nY=\"two words \\\"quoted\\\"\"\nZ='single $literal'\nKEEP=file\nLISTEN_FDS=42\n",
    )
    .unwrap();
    let second = dir.path("second.env");
    std::fs::write(&second, "X = from-second\nNOTIFY_SOCKET=/nowhere\n").unwrap();
    let work = dir.path("work dir");
    std::fs::create_dir(&work).unwrap();
    let sv = Supervisor::builder()
        .tcp()
        .ready("delay:50ms")
        .arg("--env-file")
        .arg(&first)
        .arg("--env-file")
        .arg(&second)
        .args([
            "--env",
            "KEEP=cli",
            "--env",
            "DUP=1",
            "--env",
            "DUP=2",
            "--env",
            "INHERITED=child",
            "--env",
            "LISTEN_FDS=99",
            "--env",
            "LISTEN_PID=1",
            "--env",
            "SUPERVISOR_GENERATION=7",
        ])
        .arg("--chdir")
        .arg(&work)
        .env("INHERITED", "parent")
        .env("FROM_PARENT", "yes")
        .sleeper()
        .start();
    let pid = sv.wait_active(1);
    let env = environ(pid);
    let var = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(var("X"), Some("from-second"), "a later file wins");
    assert_eq!(var("Y"), Some("two words \"quoted\""));
    assert_eq!(var("Z"), Some("single $literal"));
    assert_eq!(var("KEEP"), Some("cli"), "--env wins over the files");
    assert_eq!(var("DUP"), Some("2"), "a later --env wins");
    assert_eq!(
        var("INHERITED"),
        Some("child"),
        "--env wins over the environment"
    );
    assert_eq!(var("FROM_PARENT"), Some("yes"));
    // The protocol's variables are the supervisor's.
    assert_eq!(var("LISTEN_FDS"), Some("1"));
    assert_eq!(var("LISTEN_PID"), Some(pid.to_string().as_str()));
    assert_eq!(var("SUPERVISOR_GENERATION"), Some("1"));
    assert_ne!(var("NOTIFY_SOCKET"), Some("/nowhere"));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, work);
}

#[test]
fn a_bad_env_file_or_chdir_fails_at_start_with_one_line() {
    let dir = TempDir::new("badenv");
    let bad = dir.path("bad.env");
    std::fs::write(&bad, "A=1\n# fine\nnot an assignment\nB=2\n").unwrap();
    let missing = dir.path("missing.env");
    let nodir = dir.path("no-such-dir");
    let cases: [(&str, &Path, Vec<String>); 3] = [
        ("--env-file", &bad, vec![format!("{}:3: ", bad.display())]),
        ("--env-file", &missing, vec![missing.display().to_string()]),
        ("--chdir", &nodir, vec![nodir.display().to_string()]),
    ];
    for (option, path, words) in cases {
        let control = dir.path("control.sock");
        let mut sv = Supervisor::builder()
            .tcp()
            .control(&control)
            .arg(option)
            .arg(path)
            .sleeper()
            .start();
        assert_eq!(sv.wait_exit(T).code(), Some(1), "{}", sv.output());
        let line = only_line(&sv);
        assert!(line.starts_with("supervisor: error: "), "{line}");
        for w in words {
            assert!(line.contains(&w), "{option}: {line:?} lacks {w:?}");
        }
        assert!(!control.exists(), "{option}: the control socket was bound");
    }
}

// --- 8. Drain progress -------------------------------------------------

#[test]
fn a_slow_drain_is_reported_every_5_seconds() {
    let mut sv = Supervisor::builder()
        .ready("delay:50ms")
        .drain_timeout("20s")
        .sh("trap 'sleep 6; exit 0' TERM; sleep 300 & wait")
        .start();
    let pid = sv.wait_active(1);
    let events = sv.events();
    let from = sv.cursor();
    let t0 = Instant::now();
    sv.signal(libc::SIGTERM);
    let line = sv.wait_line_from(from, "still draining:", Duration::from_secs(8));
    let after = t0.elapsed();
    assert!(
        (Duration::from_millis(4900)..Duration::from_millis(7500)).contains(&after),
        "progress line after {after:?}: {line}"
    );
    assert!(
        line.contains(&format!("generation 1 (pid {pid})")) && line.contains("until SIGKILL"),
        "{line}"
    );
    assert_eq!(sv.wait_exit(T).code(), Some(0), "{}", sv.output());
    assert_eq!(sv.output().matches("still draining:").count(), 1);
    // Then it drained, after its 6 s.
    let all = events.until_end();
    let exited = &all[find(&all, 0, "generation 1's exit", |r| is(r, Kind::Exited, 1))];
    assert_eq!(
        (
            exited.pid,
            exited.reason.as_deref(),
            exited.status.as_deref()
        ),
        (Some(pid), Some("drained"), Some("exited with status 0")),
        "{all:#?}"
    );
}
