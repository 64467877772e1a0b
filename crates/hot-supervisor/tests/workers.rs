//! Worker pools (`--workers N`) and the three reload strategies: all at
//! once, rolling (`reload --rolling[=K]`) and canary (`reload --canary PCT`,
//! `promote`, `rollback`). The child is a single-threaded Python stdlib
//! HTTP server (below) that answers every request with its generation,
//! worker index and pid; clients send `Connection: close`, so that every
//! request is a new connection that the kernel (and the supervisor's BPF
//! program) places anew.

use super::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// A single-threaded server on the inherited fd 3: one connection at a
/// time, answered with `generation G worker W pid P`. It sends `READY=1`
/// once it accepts. On SIGTERM it finishes the connection in hand and
/// exits 0. `GET /crash` answers, then exits 1 (a worker that dies holding
/// no connection). `FAIL=G:W` makes worker W of generation G exit 1 at
/// start; `HANG=G:W`, or the file `HANG_FILE` existing at its start, makes
/// it hang before it accepts anything (until its stop signal);
/// `NO_NOTIFY=1` keeps it from sending `READY=1`, for the probe tests.
const SERVER: &str = r#"
import os, signal, socket, sys, time
gen = os.environ["SUPERVISOR_GENERATION"]
worker = os.environ["SUPERVISOR_WORKER"]
if os.environ.get("FAIL") == gen + ":" + worker:
    sys.exit(1)
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
hang_file = os.environ.get("HANG_FILE")
if os.environ.get("HANG") == gen + ":" + worker or (hang_file and os.path.exists(hang_file)):
    while not stopping:
        time.sleep(0.05)
    sys.exit(0)
sock = socket.socket(fileno=3)
sock.settimeout(0.05)
if not os.environ.get("NO_NOTIFY"):
    addr = os.environ["NOTIFY_SOCKET"]
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.sendto(b"READY=1", addr)
    n.close()
while not stopping:
    try:
        conn, _ = sock.accept()
    except (socket.timeout, BlockingIOError, InterruptedError):
        continue
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    body = ("generation %s worker %s pid %d\n" % (gen, worker, os.getpid())).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    conn.close()
    if data.startswith(b"GET /crash "):
        os._exit(1)
sys.exit(0)
"#;

/// Who answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Who {
    generation: u64,
    worker: u32,
    pid: i32,
}

/// One `GET PATH` with `Connection: close`.
fn get(addr: SocketAddr, path: &str) -> Result<Who, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .ok_or_else(|| format!("no body in {text:?}"))?;
    let w: Vec<&str> = body.split_whitespace().collect();
    match w.as_slice() {
        ["generation", g, "worker", k, "pid", p] => Ok(Who {
            generation: g.parse().unwrap(),
            worker: k.parse().unwrap(),
            pid: p.parse().unwrap(),
        }),
        _ => Err(format!("unexpected answer {text:?}")),
    }
}

/// `Connection: close` requests from `threads` clients until stopped
/// (bounded by a deadline and a count), counting who answered.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    seen: Arc<Mutex<BTreeMap<Who, u64>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(120);
        let threads = (0..threads)
            .map(|_| {
                let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match get(addr, "/") {
                            Ok(w) => *seen.lock().unwrap().entry(w).or_default() += 1,
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            seen,
            failures,
        }
    }

    fn ok(&self) -> u64 {
        self.seen.lock().unwrap().values().sum()
    }

    fn served_by(&self, g: u64) -> u64 {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(w, _)| w.generation == g)
            .map(|(_, n)| n)
            .sum()
    }

    /// Wait until generation `g` has answered `n` more requests.
    fn expect_served(&self, g: u64, n: u64, what: &str) {
        let base = self.served_by(g);
        let done = wait_until(WAIT, || (self.served_by(g) >= base + n).then_some(()));
        assert!(
            done.is_some(),
            "{what}: generation {g} did not serve {n} more requests; {} ok, failures {:?}",
            self.ok(),
            self.failures.lock().unwrap()
        );
    }

    /// Stop; who answered, and the failures.
    fn finish(mut self) -> (BTreeMap<Who, u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let seen = self.seen.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (seen, failures)
    }

    fn finish_clean(self, what: &str) -> BTreeMap<Who, u64> {
        let (seen, failures) = self.finish();
        assert!(
            failures.is_empty(),
            "{what}: {} failed requests ({} ok):\n{}",
            failures.len(),
            seen.values().sum::<u64>(),
            failures.join("\n")
        );
        seen
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A supervisor running `workers` copies of the server, ready by notify.
fn start(dir: &TempDir, workers: u32, extra: &[&str], env: &[(&str, &str)]) -> Supervisor {
    start_ready(dir, workers, "notify", extra, env)
}

/// The same, ready as `--ready MODE` says.
fn start_ready(
    dir: &TempDir,
    workers: u32,
    ready: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Supervisor {
    let script = dir.path("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let n = workers.to_string();
    let mut b = Supervisor::builder()
        .tcp()
        .ready(ready)
        .args(["--workers", n.as_str(), "--quiesce", "100ms"])
        .args(extra)
        .command([python3(), script.to_str().unwrap().to_string()]);
    for (k, v) in env {
        b = b.env(k, v);
    }
    let sv = b.start();
    wait_workers_ready(&sv, 1, workers);
    sv
}

/// Wait until generation `g` is active with `n` workers ready.
fn wait_workers_ready(sv: &Supervisor, g: u64, n: u32) -> Status {
    sv.wait_status("the expected state", WAIT, |s: &Status| {
        let e = s.generation(g)?;
        let ready = e.workers.iter().filter(|w| w.state == "ready").count();
        (e.state == "active" && ready == n as usize).then_some(())
    });
    sv.status()
}

/// The supervisor's child processes now (the workers of every generation).
fn children(pid: i32) -> Vec<i32> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| process_state(*p).is_some_and(|s| s != 'Z'))
        .collect()
}

/// Sample the supervisor's live children until `done`; the most seen.
fn peak_children(pid: i32, done: &AtomicBool) -> usize {
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(60);
    while !done.load(Ordering::Relaxed) && Instant::now() < until {
        peak = peak.max(children(pid).len());
        std::thread::yield_now();
    }
    peak.max(children(pid).len())
}

/// The reload command's answer: exit code and text.
fn reload(sv: &Supervisor, args: &[&str]) -> (Option<i32>, String) {
    let mut words = vec!["reload", "--timeout", "30s"];
    words.extend(args);
    let out = sv.ctl(&words);
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn four_workers_serve_and_a_crashed_worker_is_replaced_alone() {
    let dir = TempDir::new("workers");
    let sv = start(&dir, 4, &[], &[]);
    let addr = sv.listener_addr(0);
    let status = sv.status();
    let g1 = status.generation(1).unwrap();
    assert_eq!(g1.workers.len(), 4);
    let pids: BTreeSet<i32> = g1.workers.iter().map(|w| w.pid.unwrap()).collect();
    assert_eq!(pids.len(), 4, "{g1:?}");
    for w in &g1.workers {
        let env = environ(w.pid.unwrap());
        assert_eq!(env["SUPERVISOR_WORKER"], w.index.to_string());
        assert_eq!(env["SUPERVISOR_WORKERS"], "4");
    }
    assert!(
        sv.ctl(&["status"]).stdout.contains("worker 3"),
        "status shows every worker"
    );

    // All four serve: concurrent clients see four pids and four indexes.
    let load = Load::start(addr, 8);
    let seen = wait_until(WAIT, || {
        let seen = load.seen.lock().unwrap();
        (seen.keys().map(|w| w.pid).collect::<BTreeSet<_>>().len() == 4).then(|| seen.clone())
    });
    assert!(seen.is_some(), "not all four answered: {:?}", load.seen);
    let seen = seen.unwrap();
    let workers: BTreeSet<u32> = seen.keys().map(|w| w.worker).collect();
    assert_eq!(workers, BTreeSet::from([0, 1, 2, 3]));
    assert!(seen.keys().all(|w| pids.contains(&w.pid)));

    // A worker that exits on its own between connections (it holds none):
    // restarted alone, the others serve on, no request fails.
    let events = sv.events();
    let crashed = get(addr, "/crash").unwrap();
    let s = sv.wait_status("the expected state", WAIT, |s: &Status| {
        let w = &s.generation(1)?.workers[crashed.worker as usize];
        (w.restarts == 1 && w.state == "ready" && w.pid != Some(crashed.pid)).then(|| s.clone())
    });
    let after: BTreeSet<i32> = s
        .generation(1)
        .unwrap()
        .workers
        .iter()
        .map(|w| w.pid.unwrap())
        .collect();
    assert_eq!(
        pids.difference(&after).count(),
        1,
        "only the crashed worker changed"
    );
    assert_eq!(s.generation(1).unwrap().state, "active");
    let exited = events.first("the crashed worker's exit", |r| {
        is(r, Kind::Exited, 1) && r.worker == Some(crashed.worker)
    });
    assert_eq!(
        (
            exited.pid,
            exited.reason.as_deref(),
            exited.status.as_deref()
        ),
        (
            Some(crashed.pid),
            Some("crashed"),
            Some("exited with status 1")
        ),
        "{exited:?}"
    );
    load.expect_served(1, 200, "after the crash");
    let metrics_pid = s.generation(1).unwrap().workers[0].pid.unwrap();
    let seen = load.finish_clean("a worker exiting between connections");
    assert!(
        seen.keys()
            .any(|w| after.contains(&w.pid) && !pids.contains(&w.pid)),
        "the new worker serves"
    );

    // A worker killed while it may hold a connection: a single-threaded
    // worker holds at most one, so at most one request fails, and the
    // worker is replaced.
    let load = Load::start(addr, 8);
    load.expect_served(1, 100, "before the kill");
    // SAFETY: kill(2) on a worker of our supervisor.
    unsafe { libc::kill(metrics_pid, libc::SIGKILL) };
    sv.wait_status("the expected state", WAIT, |s: &Status| {
        let w = &s.generation(1)?.workers[0];
        (w.state == "ready" && w.pid != Some(metrics_pid)).then_some(())
    });
    load.expect_served(1, 200, "after the kill");
    let (_, failures) = load.finish();
    assert!(
        failures.len() <= 1,
        "more than the killed worker's one connection failed: {failures:?}"
    );
}

#[test]
fn a_reload_of_four_workers_under_load_loses_nothing() {
    let dir = TempDir::new("workers");
    let sv = start(&dir, 4, &[], &[]);
    let addr = sv.listener_addr(0);
    let load = Load::start(addr, 8);
    load.expect_served(1, 100, "before the reloads");
    for g in 2..=3 {
        let (code, text) = reload(&sv, &[]);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains(&format!("generation {g} (pids ")), "{text}");
        load.expect_served(g, 200, "after the reload");
    }
    let seen = load.finish_clean("all-at-once reloads of four workers");
    let g3: BTreeSet<i32> = seen
        .keys()
        .filter(|w| w.generation == 3)
        .map(|w| w.pid)
        .collect();
    assert!(
        g3.len() >= 2,
        "the new generation's workers share the load: {g3:?}"
    );
}

#[test]
fn rolling_reloads_keep_at_most_n_plus_k_alive_and_lose_nothing() {
    let dir = TempDir::new("workers");
    let sv = start(&dir, 4, &[], &[]);
    let addr = sv.listener_addr(0);
    let events = sv.events();
    let load = Load::start(addr, 8);
    load.expect_served(1, 100, "before the reload");
    for (g, k, flag) in [(2u64, 1usize, "--rolling"), (3, 2, "--rolling=2")] {
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (done, pid) = (done.clone(), sv.pid);
            std::thread::spawn(move || peak_children(pid, &done))
        };
        let (code, text) = reload(&sv, &[flag]);
        assert_eq!(code, Some(0), "{text}");
        // The reload is answered once every new worker is ready; the old
        // generation's last workers quiesce, then stop.
        sv.wait_status("the expected state", WAIT, |s: &Status| {
            (s.generation(g - 1).is_none()).then_some(())
        });
        done.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap();
        assert!(peak <= 4 + k, "{flag}: {peak} workers alive at once");
        assert!(
            peak > 4,
            "{flag}: the sampler never saw a new worker beside the old ones"
        );
        if k == 1 {
            let shares = format!("generation {} 75%, generation {g} 25%", g - 1);
            events.first(&format!("the split {shares}"), |r| {
                r.event == Kind::Split && r.reason.as_deref() == Some(shares.as_str())
            });
        }
        load.expect_served(g, 200, "after the rolling reload");
    }
    load.finish_clean("rolling reloads of four workers");
    let s = sv.status();
    assert_eq!(s.generation(3).unwrap().workers.len(), 4);
}

#[test]
fn a_failing_new_worker_rolls_a_rolling_reload_back() {
    let dir = TempDir::new("workers");
    // The second worker of generation 2 exits at start.
    let sv = start(&dir, 4, &["--reload", "rolling"], &[("FAIL", "2:1")]);
    let addr = sv.listener_addr(0);
    let events = sv.events();
    let load = Load::start(addr, 8);
    load.expect_served(1, 100, "before the reload");
    let (code, text) = reload(&sv, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("generation 2"), "{text}");
    assert!(
        text.contains("generation 1 (pids"),
        "the old one still serves: {text}"
    );
    let back = events.first_of(Kind::RolledBack, 2);
    assert_eq!(
        back.reason.as_deref(),
        Some("worker 1 exited with status 1"),
        "{back:?}"
    );
    // The old generation is whole again, the new one gone.
    sv.wait_status("the expected state", WAIT, |s: &Status| {
        let g1 = s.generation(1)?;
        let ready = g1.workers.iter().filter(|w| w.state == "ready").count();
        (s.generation(2).is_none() && ready == 4).then_some(())
    });
    load.expect_served(1, 200, "after the rollback");
    load.finish_clean("a rolled-back rolling reload");
}

/// Requests from `threads` clients until `total` have been answered.
fn count_by_generation(addr: SocketAddr, total: u64) -> (BTreeMap<u64, u64>, Vec<String>) {
    let load = Load::start(addr, 4);
    wait_until(Duration::from_secs(60), || {
        (load.ok() >= total).then_some(())
    });
    let (seen, failures) = load.finish();
    let mut by = BTreeMap::new();
    for (w, n) in seen {
        *by.entry(w.generation).or_default() += n;
    }
    (by, failures)
}

#[test]
fn a_canary_gets_its_share_and_promote_and_rollback_move_everything() {
    let dir = TempDir::new("workers");
    let sv = start(&dir, 2, &[], &[]);
    let addr = sv.listener_addr(0);
    let (code, text) = reload(&sv, &["--canary", "20"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("a canary with 20% of new connections"),
        "{text}"
    );
    let s = sv.status();
    assert_eq!(s.generation(2).unwrap().state, "canary");
    assert_eq!(s.generation(2).unwrap().share, Some(20));
    assert_eq!(s.generation(1).unwrap().share, Some(80));
    assert!(
        sv.ctl(&["status"])
            .stdout
            .contains("20% of new connections")
    );
    // Over 3,000 connections the canary's count is Binomial(n, 0.2):
    // standard deviation sqrt(n * 0.2 * 0.8), about 22 at n = 3,000. The
    // bound is 5 standard deviations either way (a false failure about
    // once in 1.7 million runs).
    let (by, failures) = count_by_generation(addr, 3000);
    assert!(failures.is_empty(), "{failures:?}");
    let n: u64 = by.values().sum();
    let canary = by.get(&2).copied().unwrap_or(0) as f64;
    let sd = (n as f64 * 0.2 * 0.8).sqrt();
    assert!(
        (canary - 0.2 * n as f64).abs() <= 5.0 * sd,
        "canary served {canary} of {n} ({by:?}), want 20% within {:.0}",
        5.0 * sd
    );

    // Promote under load: no request fails; everything goes to 2.
    let load = Load::start(addr, 8);
    load.expect_served(2, 50, "before the promotion");
    let out = sv.ctl(&["promote"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("generation 2 (pids"), "{out:?}");
    sv.wait_status("the expected state", WAIT, |s: &Status| {
        (s.generation(1).is_none()).then_some(())
    });
    let before = load.served_by(1);
    load.expect_served(2, 300, "after the promotion");
    assert_eq!(load.served_by(1), before, "generation 1 is gone");
    assert_eq!(sv.status().generation(2).unwrap().share, None);

    // A second canary, rolled back under load: everything back to 2.
    let (code, text) = reload(&sv, &["--canary", "20"]);
    assert_eq!(code, Some(0), "{text}");
    load.expect_served(3, 20, "the second canary");
    let out = sv.ctl(&["rollback"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("rolled back"), "{out:?}");
    sv.wait_status("the expected state", WAIT, |s: &Status| {
        (s.generation(3).is_none()).then_some(())
    });
    let before = load.served_by(3);
    load.expect_served(2, 300, "after the rollback");
    assert_eq!(
        load.served_by(3),
        before,
        "nothing reaches the rolled-back canary"
    );
    load.finish_clean("promote and rollback under load");
    // Nothing to promote now.
    let out = sv.ctl(&["promote"]);
    assert_eq!(out.code, Some(1), "{out:?}");
}

#[test]
fn a_crashing_canary_is_rolled_back_at_once() {
    let dir = TempDir::new("workers");
    let sv = start(&dir, 2, &[], &[]);
    let addr = sv.listener_addr(0);
    let events = sv.events();
    let (code, text) = reload(&sv, &["--canary", "50", "--promote-after", "10m"]);
    assert_eq!(code, Some(0), "{text}");
    let pid = sv.status().generation(2).unwrap().workers[0].pid.unwrap();
    // SAFETY: kill(2) on a worker of our supervisor.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let back = events.first_of(Kind::RolledBack, 2);
    assert_eq!(
        back.reason.as_deref(),
        Some("worker 0 killed by signal 9 (SIGKILL)"),
        "{back:?}"
    );
    sv.wait_status("the expected state", WAIT, |s: &Status| {
        (s.generation(2).is_none()).then_some(())
    });
    let s = sv.status();
    assert_eq!(s.generation(1).unwrap().state, "active");
    assert_eq!(s.generation(1).unwrap().share, None);
    let (by, failures) = count_by_generation(addr, 300);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(by.keys().copied().collect::<Vec<_>>(), vec![1], "{by:?}");
}

// --- Readiness probes that reach each worker -----------------------------

/// `reload --rolling` of 2 and 4 workers with `--ready tcp` and
/// `--ready http:/`, under `Connection: close` load: every new worker is
/// verified by a probe it answered itself, so the reload ends in far less
/// than the ready timeout (20 s; the workers start in well under a
/// second), and no request fails.
#[test]
fn rolling_reloads_with_probes_verify_each_worker_quickly() {
    for (workers, ready) in [(2u32, "tcp"), (2, "http:/"), (4, "tcp"), (4, "http:/")] {
        let dir = TempDir::new("probe-workers");
        let sv = start_ready(
            &dir,
            workers,
            ready,
            &["--ready-timeout", "20s"],
            &[("NO_NOTIFY", "1")],
        );
        let addr = sv.listener_addr(0);
        let load = common::Load::start_closing(addr, 8, Duration::from_secs(120));
        load.expect_served(
            1,
            50,
            &format!("{workers} workers, {ready}: before the reload"),
        );
        for g in 2..=3u64 {
            let began = Instant::now();
            let (code, text) = reload(&sv, &["--rolling"]);
            let took = began.elapsed();
            assert_eq!(code, Some(0), "{workers} workers, {ready}: {text}");
            assert!(
                took < Duration::from_secs(10),
                "{workers} workers, {ready}: the rolling reload took {took:?}: a worker waited out the ready timeout ({text})"
            );
            let st = wait_workers_ready(&sv, g, workers);
            let pids: BTreeSet<i32> = st
                .generation(g)
                .unwrap()
                .workers
                .iter()
                .filter_map(|w| w.pid)
                .collect();
            assert_eq!(pids.len(), workers as usize, "{st:?}");
            load.expect_served(
                g,
                50,
                &format!("{workers} workers, {ready}: generation {g}"),
            );
        }
        load.finish_clean(&format!("{workers} workers, {ready}"), 150);
    }
}

/// A new worker that hangs before it accepts anything is never counted
/// ready: the rolling reload fails when the ready timeout ends (the old
/// generation serves on, whole), and no request fails meanwhile.
#[test]
fn a_worker_hung_before_accepting_fails_a_rolling_reload() {
    for ready in ["tcp", "http:/"] {
        let dir = TempDir::new("probe-hang");
        let sv = start_ready(
            &dir,
            2,
            ready,
            &["--ready-timeout", "2s"],
            &[("NO_NOTIFY", "1"), ("HANG", "2:1")],
        );
        let addr = sv.listener_addr(0);
        let load = common::Load::start_closing(addr, 8, Duration::from_secs(120));
        load.expect_served(1, 50, "before the reload");
        let (code, text) = reload(&sv, &["--rolling"]);
        assert_eq!(
            code,
            Some(1),
            "{ready}: a hung worker made the reload succeed: {text}"
        );
        assert!(text.contains("not ready"), "{ready}: {text}");
        sv.wait_status("generation 1 whole again", WAIT, |s: &Status| {
            let g1 = s.generation(1)?;
            let ready = g1.workers.iter().filter(|w| w.state == "ready").count();
            (s.generation(2).is_none() && ready == 2).then_some(())
        });
        load.expect_served(1, 50, "after the failed reload");
        load.finish_clean(&format!("a hung new worker, {ready}"), 100);
    }
}

/// A worker restarted alone after `kill -9` that hangs before accepting
/// is never counted ready: each try ends at the ready timeout as a failed
/// start, and the worker is started again (with backoff); once it starts
/// properly it is verified and serves. No request fails meanwhile.
#[test]
fn a_worker_restarted_alone_is_verified_by_the_probe() {
    let dir = TempDir::new("probe-restart");
    let hang = dir.path("hang");
    let hang_str = hang.to_str().unwrap().to_string();
    let sv = start_ready(
        &dir,
        2,
        "tcp",
        &["--ready-timeout", "1s", "--start-limit-burst", "0"],
        &[("NO_NOTIFY", "1"), ("HANG_FILE", hang_str.as_str())],
    );
    let addr = sv.listener_addr(0);
    let victim = sv.status().generation(1).unwrap().workers[1].clone();
    std::fs::write(&hang, b"").unwrap();
    // Killed before the load starts: a worker killed under load loses the
    // connection it was serving (see the test above); what this test
    // checks is what follows.
    // SAFETY: kill(2) on a worker of the supervisor this test started.
    unsafe { libc::kill(victim.pid.unwrap(), libc::SIGKILL) };
    let load = common::Load::start_closing(addr, 8, Duration::from_secs(120));
    load.expect_served(1, 50, "the other worker serving");
    // Restarted, then failed for not being ready, then restarted again:
    // never ready in between.
    let mut seen_ready_while_hung = false;
    sv.wait_status("two restarts of the hung worker", WAIT, |s: &Status| {
        let w = &s.generation(1)?.workers[1];
        if w.pid != victim.pid && w.state == "ready" {
            seen_ready_while_hung = true;
        }
        (w.restarts >= 2).then_some(())
    });
    assert!(!seen_ready_while_hung, "a hung worker was counted ready");
    load.expect_served(1, 50, "one worker serving while the other hangs");
    std::fs::remove_file(&hang).unwrap();
    sv.wait_status("the worker ready again", WAIT, |s: &Status| {
        let w = &s.generation(1)?.workers[1];
        (w.state == "ready" && w.pid != victim.pid).then_some(())
    });
    load.finish_clean("a worker restarted alone, hung, then sound", 100);
}

/// A canary and an all-at-once reload with probes and workers: every
/// worker verified, quickly.
#[test]
fn canary_and_whole_reloads_with_probes_verify_every_worker() {
    let dir = TempDir::new("probe-canary");
    let sv = start_ready(
        &dir,
        3,
        "tcp",
        &["--ready-timeout", "20s"],
        &[("NO_NOTIFY", "1")],
    );
    let addr = sv.listener_addr(0);
    let load = common::Load::start_closing(addr, 8, Duration::from_secs(120));
    load.expect_served(1, 50, "before the reloads");
    let began = Instant::now();
    let (code, text) = reload(&sv, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(began.elapsed() < Duration::from_secs(10), "{text}");
    wait_workers_ready(&sv, 2, 3);
    let began = Instant::now();
    let (code, text) = reload(&sv, &["--canary", "50"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(began.elapsed() < Duration::from_secs(10), "{text}");
    sv.wait_status("the canary's three workers ready", WAIT, |s: &Status| {
        let c = s.generation(3)?;
        (c.workers.iter().filter(|w| w.state == "ready").count() == 3).then_some(())
    });
    load.expect_served(3, 20, "the canary");
    let out = sv.ctl(&["promote", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_workers_ready(&sv, 3, 3);
    load.finish_clean("canary and whole reloads with probes", 100);
}

/// Holds a write lease on a file: whoever opens it (an `execve` of it too)
/// blocks in the kernel until the lease is released (or the kernel's
/// lease-break time, 45 s by default, has passed), as an exec from a hung
/// network mount would.
struct Lease(std::fs::File);

impl Lease {
    fn take(path: &std::path::Path) -> Lease {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on an fd we own. Taking the lease makes this
        // process its owner, which a lease break would send SIGIO (whose
        // default action ends the test binary): F_SETOWN 0 after it.
        let (lease, owner) = unsafe {
            (
                libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK),
                libc::fcntl(fd, libc::F_SETOWN, 0),
            )
        };
        assert_eq!(
            lease,
            0,
            "take a write lease on {} (file leases needed by this test): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        assert_eq!(owner, 0, "F_SETOWN: {}", std::io::Error::last_os_error());
        Lease(file)
    }

    fn release(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on an fd we own.
        let r = unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        assert_eq!(r, 0, "release lease: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `release`.
        unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}

/// Sixteen workers whose exec stalls in the kernel (their program is under
/// a file lease): each is forked at once and its exec status awaited by
/// the loop, which answers the status and reads signals meanwhile. (When
/// each spawn waited for its own status, the first answer came after
/// 16 × 2 s.) Past the bound they count as started; once the exec can go
/// on, the generation serves.
#[test]
fn sixteen_workers_stalled_in_exec_leave_the_loop_free() {
    let dir = TempDir::new("stalled-exec");
    let script = dir.path("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let program = dir.path("server");
    std::fs::write(
        &program,
        format!("#!/bin/sh\nexec {} {}\n", python3(), script.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let lease = Lease::take(&program);
    let sv = Supervisor::builder()
        .tcp()
        .ready("notify")
        .args(["--workers", "16"])
        .command([program.to_str().unwrap()])
        .start();

    // Answered while every worker is forked and in its exec.
    let forked = sv.wait_status("16 workers forked", WAIT, |s: &Status| {
        let g = s.generation(1)?;
        (g.workers.iter().filter(|w| w.pid.is_some()).count() == 16).then(|| g.clone())
    });
    assert!(
        forked.workers.iter().all(|w| w.state == "starting"),
        "{forked:?}"
    );
    let ages: Vec<u64> = forked.workers.iter().filter_map(|w| w.age_ms).collect();
    eprintln!("status answered with 16 workers forked {ages:?} ms ago");
    // The signal, sent after that answer, is read before any exec status
    // is given up on: the loop ran while all sixteen were awaited.
    sv.signal(libc::SIGUSR1);
    let said = "received SIGUSR1: no generation serves to forward it to";
    sv.wait_line(said, WAIT);
    let out = sv.output();
    let line = |needle: &str| out.lines().position(|l| l.contains(needle));
    assert!(
        line("not confirmed").is_none_or(|n| n > line(said).unwrap()),
        "an exec status was given up on before the signal was read:\n{out}"
    );

    // Past the bound each counts as started (said once per worker); once
    // the lease goes, every one execs and the generation serves.
    sv.wait_line("not confirmed", WAIT);
    lease.release();
    let st = wait_workers_ready(&sv, 1, 16);
    let pids =
        |g: &Generation| -> BTreeSet<i32> { g.workers.iter().filter_map(|w| w.pid).collect() };
    assert_eq!(pids(st.generation(1).unwrap()), pids(&forked));
}

/// Eight workers of a command that cannot be executed: all are forked
/// before any exec status is known, but the machine hears one failure (the
/// first worker's, as when each spawn waited for its own status), and the
/// supervisor stops at once with 127.
#[test]
fn eight_workers_that_cannot_exec_fail_the_start_once() {
    let dir = TempDir::new("noexec-workers");
    let script = dir.path("no-shebang");
    std::fs::write(&script, "echo hi\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut sv = Supervisor::builder()
        .tcp()
        .args(["--workers", "8"])
        .command([&script])
        .start();
    assert_eq!(sv.wait_exit(WAIT).code(), Some(127));
    let out = sv.output();
    assert_eq!(
        out.matches("generation 1 could not be started: exec ")
            .count(),
        1,
        "{out}"
    );
    assert!(out.contains("Exec format error"), "{out}");
    assert_eq!(out.matches(") started").count(), 8, "{out}");
}
