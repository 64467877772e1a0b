//! Test harness: the real `supervisor` binary around real children, on
//! loopback sockets.
//!
//! Every wait polls a condition against a deadline (no sleeps as
//! synchronisation); every process a test starts is killed on drop, also
//! when the test fails, and every failure prints the supervisor's output.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The supervisor binary under test.
pub fn supervisor_bin() -> &'static str {
    env!("CARGO_BIN_EXE_supervisor")
}

/// An example binary (built by `cargo test`, not by `cargo test --test x`).
pub fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(supervisor_bin());
    let path = bin
        .parent()
        .expect("binary has a directory")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "test fixture {} is missing: run `cargo build --examples` (plain `cargo test` builds it)",
        path.display()
    );
    path
}

/// Poll `cond` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A private temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "sv-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running supervisor with its output captured line by line.
pub struct Supervisor {
    child: std::process::Child,
    pub pid: i32,
    lines: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
    /// Its control socket.
    pub control: PathBuf,
    /// Its own `RUNTIME_DIRECTORY` (so that parallel tests never share a
    /// default control socket), unless the test gave one.
    _runtime: Option<TempDir>,
}

/// What a control command printed and how it exited.
#[derive(Debug)]
pub struct Ctl {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `supervisor ARGS` as a control client (bounded by `--timeout` where
/// the test gives one; `status` answers at once).
pub fn ctl(args: &[&str]) -> Ctl {
    let out = Command::new(supervisor_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run supervisor client");
    Ctl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Supervisor {
    /// Start `supervisor ARGS` (stdout and stderr captured).
    pub fn start(args: &[&str]) -> Supervisor {
        Self::start_with(Command::new(supervisor_bin()).args(args))
    }

    /// Start a prepared command (for extra environment).
    pub fn start_with(cmd: &mut Command) -> Supervisor {
        let given = cmd
            .get_envs()
            .find(|(k, _)| *k == "RUNTIME_DIRECTORY")
            .and_then(|(_, v)| v.map(PathBuf::from));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let explicit = args
            .iter()
            .position(|a| a == "--control")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from);
        let (runtime, dir) = match given {
            Some(d) => (None, d),
            None => {
                let t = TempDir::new("run");
                let d = t.0.clone();
                cmd.env("RUNTIME_DIRECTORY", &d);
                (Some(t), d)
            }
        };
        let control = explicit.unwrap_or_else(|| dir.join("supervisor.sock"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "debug");
        let mut child = cmd.spawn().expect("start supervisor");
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut readers = Vec::new();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (m, cv) = &*lines;
                    m.lock().unwrap().push(line);
                    cv.notify_all();
                }
            }));
        }
        let pid = child.id() as i32;
        Supervisor {
            child,
            pid,
            lines,
            readers,
            status: None,
            control,
            _runtime: runtime,
        }
    }

    /// Run a control command (`reload`, `status`, `stop`, with extra
    /// arguments) against this supervisor's control socket.
    pub fn ctl(&self, args: &[&str]) -> Ctl {
        let control = self.control.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--control", control.as_str()]);
        ctl(&all)
    }

    /// `supervisor status --json`, parsed (once the control socket is up).
    pub fn status_json(&self) -> serde_json::Value {
        self.wait_line("control socket ", Duration::from_secs(10));
        let out = self.ctl(&["status", "--json"]);
        assert_eq!(out.code, Some(0), "status failed: {out:?}");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", out.stdout))
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// The number of lines printed so far (a cursor for `wait_line_from`).
    pub fn cursor(&self) -> usize {
        self.lines.0.lock().unwrap().len()
    }

    /// Wait for a line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_line_from(0, needle, timeout)
    }

    /// Wait for a line containing `needle` at or after line `from`.
    pub fn wait_line_from(&self, from: usize, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().skip(from).find(|l| l.contains(needle)) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                drop(lines);
                panic!(
                    "no line containing {needle:?} within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Whether some line contains `needle`.
    pub fn has_line(&self, needle: &str) -> bool {
        self.lines
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The TCP address of the `n`th listener (from the "listening on" log).
    pub fn tcp_addr(&self, n: usize) -> SocketAddr {
        let needle = format!("(fd {} in children)", 3 + n);
        let line = self.wait_line(&needle, Duration::from_secs(10));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        addr.parse()
            .unwrap_or_else(|_| panic!("bad address in {line:?}"))
    }

    /// The pid of generation `g`, once it has started.
    pub fn generation_pid(&self, g: u64, timeout: Duration) -> i32 {
        let line = self.wait_line(&format!("generation {g} (pid "), timeout);
        let rest = line.split(&format!("generation {g} (pid ")).nth(1).unwrap();
        rest.split(')').next().unwrap().parse().unwrap()
    }

    /// Wait until generation `g` is ready (the log line says so).
    pub fn wait_ready(&self, g: u64, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let pid = self.generation_pid(g, timeout);
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_line(&format!("generation {g} (pid {pid}) ready in"), left)
    }

    /// Send a signal to the supervisor.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own unreaped child process.
        let r = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(r, 0, "kill supervisor");
    }

    /// Wait for the supervisor to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let got = wait_until(timeout, || self.child.try_wait().unwrap());
        match got {
            Some(s) => {
                self.status = Some(s);
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                s
            }
            None => panic!(
                "supervisor did not exit within {timeout:?}; output:\n{}",
                self.output()
            ),
        }
    }

    /// Pids of every generation the supervisor has started.
    pub fn all_generation_pids(&self) -> Vec<i32> {
        let lines = self.lines.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(") started"))
            .filter_map(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
            .collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A forced stop first (two SIGTERMs: SIGKILL to every
            // generation's group), so that the supervisor itself reaps its
            // children and removes its sockets.
            // SAFETY: kill(2) on the pid of our own unreaped child process.
            unsafe {
                libc::kill(self.pid, libc::SIGTERM);
                libc::kill(self.pid, libc::SIGTERM);
            }
            let child = &mut self.child;
            if let Some(s) = wait_until(Duration::from_secs(5), || child.try_wait().ok().flatten())
            {
                self.status = Some(s);
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
            }
        }
        if self.status.is_none() {
            // Children live in their own process groups: kill those first,
            // then the supervisor, so that nothing outlives a failed test.
            for pid in self.all_generation_pids() {
                if process_exists(pid) {
                    // SAFETY: signalling a process group we started.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- supervisor output ---\n{}\n---", self.output());
        }
    }
}

/// Whether `pid` exists (a zombie counts).
pub fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The state letter of `pid` (`Z` for a zombie), if it exists.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.chars().next()
}

/// Wait until `pid` is gone entirely (reaped, not a zombie).
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    wait_until(timeout, || (!process_exists(pid)).then_some(())).is_some()
}

/// A field of /proc/PID/status, e.g. `SigBlk`.
pub fn status_field(pid: i32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in status of {pid}"))
        .trim()
        .to_string()
}

/// The environment of `pid`.
pub fn environ(pid: i32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let s = String::from_utf8_lossy(e);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The open fds of `pid` and what each points at.
pub fn fds(pid: i32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The socket inode the kernel lists for a listening TCP/UDP port, from
/// /proc/net/{tcp,tcp6,udp,udp6}.
pub fn socket_inode(table: &str, port: u16) -> Option<String> {
    for t in [table.to_string(), format!("{table}6")] {
        let Ok(s) = std::fs::read_to_string(format!("/proc/net/{t}")) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1).and_then(|a| a.rsplit(':').next());
            let state = cols.get(3).copied();
            let listening = table != "tcp" || state == Some("0A");
            if local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port) && listening {
                return cols.get(9).map(|i| i.to_string());
            }
        }
    }
    None
}

/// Outcome of one HTTP request.
#[derive(Debug)]
pub enum Reply {
    Ok { generation: u64, close: bool },
    Failed(String),
}

/// One keep-alive HTTP/1.1 client connection.
pub struct Client {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, stream: None }
    }

    /// Send one GET and read the whole response.
    pub fn get(&mut self, path: &str) -> Reply {
        if self.stream.is_none() {
            match TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.set_nodelay(true).unwrap();
                    self.stream = Some(BufReader::new(s));
                }
                Err(e) => return Reply::Failed(format!("connect: {e}")),
            }
        }
        let reply = self.exchange(path);
        match &reply {
            Reply::Ok { close: false, .. } => {}
            _ => self.stream = None,
        }
        reply
    }

    fn exchange(&mut self, path: &str) -> Reply {
        let r = self.stream.as_mut().unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        if let Err(e) = r.get_mut().write_all(req.as_bytes()) {
            return Reply::Failed(format!("write: {e}"));
        }
        let mut status = String::new();
        match r.read_line(&mut status) {
            Ok(0) => return Reply::Failed("read: EOF before the status line".into()),
            Ok(_) => {}
            Err(e) => return Reply::Failed(format!("read: {e}")),
        }
        if !status.starts_with("HTTP/1.") || status.split(' ').nth(1) != Some("200") {
            return Reply::Failed(format!("status: {}", status.trim()));
        }
        let mut length = None;
        let mut close = status.starts_with("HTTP/1.0");
        loop {
            let mut h = String::new();
            match r.read_line(&mut h) {
                Ok(0) => return Reply::Failed("read: EOF in headers".into()),
                Ok(_) => {}
                Err(e) => return Reply::Failed(format!("read headers: {e}")),
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            } else if let Some(v) = lower.strip_prefix("connection:") {
                close = v.trim() == "close";
            }
        }
        let mut body = Vec::new();
        let res = match length {
            Some(n) => {
                body.resize(n, 0);
                r.read_exact(&mut body)
            }
            None => {
                close = true;
                r.read_to_end(&mut body).map(|_| ())
            }
        };
        if let Err(e) = res {
            return Reply::Failed(format!("read body: {e}"));
        }
        let text = String::from_utf8_lossy(&body);
        let generation = text
            .split_whitespace()
            .skip_while(|w| *w != "generation")
            .nth(1)
            .and_then(|g| g.parse().ok());
        match generation {
            Some(generation) => Reply::Ok { generation, close },
            None => Reply::Failed(format!("body without a generation: {text:?}")),
        }
    }
}

/// Continuous load from several client threads, bounded in time and count.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub stats: Arc<LoadStats>,
}

#[derive(Default)]
pub struct LoadStats {
    pub ok: AtomicU64,
    pub failures: Mutex<Vec<String>>,
    pub by_generation: Mutex<BTreeMap<u64, u64>>,
}

impl Load {
    /// `connections` clients sending back-to-back requests until `finish`,
    /// `max_time` or `max_requests` each.
    pub fn start(addr: SocketAddr, connections: usize, max_time: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let deadline = Instant::now() + max_time;
        let threads = (0..connections)
            .map(|_| {
                let (stop, stats) = (stop.clone(), stats.clone());
                std::thread::spawn(move || {
                    let mut c = Client::new(addr);
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        match c.get("/") {
                            Reply::Ok { generation, .. } => {
                                stats.ok.fetch_add(1, Ordering::Relaxed);
                                *stats
                                    .by_generation
                                    .lock()
                                    .unwrap()
                                    .entry(generation)
                                    .or_default() += 1;
                            }
                            Reply::Failed(why) => stats.failures.lock().unwrap().push(why),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            stats,
        }
    }

    /// Requests answered by generation `g` so far.
    pub fn served_by(&self, g: u64) -> u64 {
        self.stats
            .by_generation
            .lock()
            .unwrap()
            .get(&g)
            .copied()
            .unwrap_or(0)
    }

    /// Wait until generation `g` has answered at least `n` more requests
    /// than it had at the call.
    pub fn wait_served_by(&self, g: u64, n: u64, timeout: Duration) -> bool {
        let base = self.served_by(g);
        wait_until(timeout, || (self.served_by(g) >= base + n).then_some(())).is_some()
    }

    pub fn ok(&self) -> u64 {
        self.stats.ok.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> Vec<String> {
        self.stats.failures.lock().unwrap().clone()
    }

    /// Stop the clients and wait for them.
    pub fn finish(mut self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stats.clone()
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

/// Reload `reloads` times under load from `clients` connections. After
/// each reload: the new generation serves at least `served` requests, the
/// old one drains with exit status 0 and is reaped, and no request has
/// failed. `before_reload(g)` runs before the reload that starts generation
/// `g`. Returns the number of requests answered.
pub fn reload_under_load(
    name: &str,
    sv: &Supervisor,
    reloads: u64,
    clients: usize,
    served: u64,
    mut before_reload: impl FnMut(u64),
) -> u64 {
    const T: Duration = Duration::from_secs(20);
    sv.wait_ready(1, T);
    let load = Load::start(sv.tcp_addr(0), clients, Duration::from_secs(240));
    assert!(
        load.wait_served_by(1, served, T),
        "{name}: generation 1 never served; failures: {:?}",
        load.failures()
    );
    for g in 2..=reloads + 1 {
        let old_pid = sv.generation_pid(g - 1, T);
        before_reload(g);
        sv.signal(libc::SIGHUP);
        sv.wait_ready(g, T);
        assert!(
            load.wait_served_by(g, served, T),
            "{name}: traffic did not move to generation {g}; failures: {:?}",
            load.failures()
        );
        let drained = sv.wait_line(
            &format!("generation {} (pid {old_pid}) drained in", g - 1),
            T,
        );
        assert!(
            drained.contains("(exited with status 0)"),
            "{name}: generation {} did not drain cleanly: {drained}",
            g - 1
        );
        // Reaped by the supervisor, which is alive: not even a zombie.
        assert!(
            wait_gone(old_pid, T),
            "{name}: generation {} (pid {old_pid}) was not reaped",
            g - 1
        );
        let failures = load.failures();
        assert!(
            failures.is_empty(),
            "{name}: failed requests by reload {}: {failures:?}",
            g - 1
        );
    }
    let stats = load.finish();
    let failures = stats.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{name}: failed requests: {failures:?}");
    let ok = stats.ok.load(Ordering::Relaxed);
    let by_generation = stats.by_generation.lock().unwrap().clone();
    assert_eq!(
        by_generation.keys().copied().collect::<Vec<_>>(),
        (1..=reloads + 1).collect::<Vec<_>>(),
        "{name}: answers from unexpected generations"
    );
    eprintln!(
        "{name}: {reloads} reloads, {ok} requests, 0 failures; by generation: {by_generation:?}"
    );
    ok
}
