//! Test harness: the real `supervisor` binary around real children, on
//! loopback sockets.
//!
//! Every wait polls a condition against a deadline (no sleeps as
//! synchronisation); every process a test starts is killed on drop, also
//! when the test fails, and every failure prints the supervisor's output.
//!
//! Tests start a supervisor with [`Supervisor::builder`] and read what it
//! does through its own interface: pids, generations, states and addresses
//! from `supervisor status --json` (the library's [`Status`] type),
//! reload outcomes from `supervisor reload`, the lifecycle as typed
//! [`Record`]s from its event stream ([`Supervisor::events`]; from the
//! `--log-format json` log, [`Supervisor::logged_records`], where a
//! supervisor ends before a subscriber could be there), processes and
//! sockets from `/proc`. The log's text is read only where the text itself
//! is what a test checks: a message an operator reads.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use hot_supervisor::events::{Kind, Record};
pub use hot_supervisor::status::{Generation, Status};

mod events;
mod load;
pub use events::*;
pub use load::*;

/// The deadline of the harness's own waits.
pub const WAIT: Duration = Duration::from_secs(20);

/// The supervisor binary under test.
pub fn supervisor_bin() -> &'static str {
    env!("CARGO_BIN_EXE_supervisor")
}

/// An example binary (built by `cargo test`, not by `cargo test --test
/// integration`).
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

/// The answer of `supervisor reload`: its exit code and its one line
/// (stdout on success, stderr otherwise; the other stream is empty).
#[derive(Debug)]
pub struct Answer {
    pub code: Option<i32>,
    pub line: String,
}

/// The text of a one-line output, without its newline; fails on anything
/// else.
pub fn one_line<'a>(what: &str, text: &'a str) -> &'a str {
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{what}: expected exactly one line, got {text:?}"
    );
    text.trim_end_matches('\n')
}

/// The demo server (`examples/demo_server.rs`), as a command word.
pub fn demo() -> String {
    example("demo_server").to_str().unwrap().to_string()
}

/// How to start a supervisor under test: its options, environment, an
/// optional launcher that execs it, and the child command. Each one gets
/// its own `RUNTIME_DIRECTORY` (so its own control socket) unless it is
/// given one or a `--control`.
#[derive(Default)]
pub struct Builder {
    launcher: Vec<OsString>,
    options: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    command: Vec<OsString>,
}

impl Builder {
    /// `-l SPEC`.
    pub fn listen(self, spec: &str) -> Self {
        self.args(["-l", spec])
    }

    /// `-l 127.0.0.1:0`.
    pub fn tcp(self) -> Self {
        self.listen("127.0.0.1:0")
    }

    /// `--ready MODE`.
    pub fn ready(self, mode: &str) -> Self {
        self.args(["--ready", mode])
    }

    /// `--ready notify`.
    pub fn notify(self) -> Self {
        self.ready("notify")
    }

    /// `--ready-timeout DUR`.
    pub fn ready_timeout(self, dur: &str) -> Self {
        self.args(["--ready-timeout", dur])
    }

    /// `--drain-timeout DUR`.
    pub fn drain_timeout(self, dur: &str) -> Self {
        self.args(["--drain-timeout", dur])
    }

    /// `--restart POLICY`.
    pub fn restart(self, policy: &str) -> Self {
        self.args(["--restart", policy])
    }

    /// `--log-format json`: its lifecycle lines carry their event's fields
    /// ([`Supervisor::logged_records`]).
    pub fn json_log(self) -> Self {
        self.args(["--log-format", "json"])
    }

    /// `--control PATH`.
    pub fn control(self, path: impl AsRef<OsStr>) -> Self {
        self.arg("--control").arg(path)
    }

    /// Any other option word.
    pub fn arg(mut self, word: impl AsRef<OsStr>) -> Self {
        self.options.push(word.as_ref().to_owned());
        self
    }

    /// Any other option words.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, words: I) -> Self {
        self.options
            .extend(words.into_iter().map(|w| w.as_ref().to_owned()));
        self
    }

    /// An environment variable of the supervisor.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// A program (and its arguments) that runs first and execs the
    /// supervisor, whose path and arguments follow these words (`sh -c
    /// '...; exec "$0" "$@"'`, `systemd-socket-activate ...`).
    pub fn launcher<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, words: I) -> Self {
        self.launcher = words.into_iter().map(|w| w.as_ref().to_owned()).collect();
        self
    }

    /// The child command (after `--`).
    pub fn command<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, words: I) -> Self {
        self.command = words.into_iter().map(|w| w.as_ref().to_owned()).collect();
        self
    }

    /// The child `sh -c SCRIPT`.
    pub fn sh(self, script: &str) -> Self {
        self.command(["sh", "-c", script])
    }

    /// The child `sleep 300`.
    pub fn sleeper(self) -> Self {
        self.command(["sleep", "300"])
    }

    /// The demo server as the child, with `extra` arguments.
    pub fn demo(self, extra: &[&str]) -> Self {
        let mut words = vec![demo()];
        words.extend(extra.iter().map(|w| w.to_string()));
        self.command(words)
    }

    /// Start it.
    pub fn start(self) -> Supervisor {
        assert!(!self.command.is_empty(), "no child command given");
        let mut cmd = match self.launcher.split_first() {
            Some((program, words)) => {
                let mut c = Command::new(program);
                c.args(words).arg(supervisor_bin());
                c
            }
            None => Command::new(supervisor_bin()),
        };
        cmd.args(&self.options).arg("--").args(&self.command);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Supervisor::start_with(&mut cmd)
    }
}

/// Queries on a parsed status.
pub trait StatusExt {
    /// The entry of generation `g`, if listed.
    fn generation(&self, g: u64) -> Option<&Generation>;
    /// `(generation, pid, state)` of every generation listed.
    fn states(&self) -> Vec<(u64, Option<i32>, String)>;
}

impl StatusExt for Status {
    fn generation(&self, g: u64) -> Option<&Generation> {
        self.generations.iter().find(|e| e.generation == g)
    }

    fn states(&self) -> Vec<(u64, Option<i32>, String)> {
        self.generations
            .iter()
            .map(|e| (e.generation, e.pid, e.state.to_string()))
            .collect()
    }
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
    /// A supervisor to configure and start.
    pub fn builder() -> Builder {
        Builder::default()
    }

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

    /// One `supervisor status --json`: the parsed status, or what the
    /// client said if it failed.
    pub fn try_status(&self) -> Result<Status, Ctl> {
        let out = self.ctl(&["status", "--json"]);
        if out.code != Some(0) {
            return Err(out);
        }
        let json = one_line("status --json", &out.stdout);
        Ok(serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("status is not a Status ({e}): {json}")))
    }

    /// `supervisor status --json`, parsed: asked again until the control
    /// socket answers (it is bound shortly after the start).
    pub fn status(&self) -> Status {
        let mut last = None;
        let got = wait_until(WAIT, || match self.try_status() {
            Ok(s) => Some(s),
            Err(out) => {
                assert!(
                    process_state(self.pid).is_some_and(|s| s != 'Z'),
                    "status: the supervisor has exited; last answer: {out:?}"
                );
                last = Some(out);
                None
            }
        });
        got.unwrap_or_else(|| panic!("status never answered within {WAIT:?}: {last:?}"))
    }

    /// Wait until it answers on its control socket (it is up: listeners
    /// bound, control socket bound) or exits: whether it is up.
    pub fn wait_up(&self) -> bool {
        let up = wait_until(WAIT, || {
            if self.try_status().is_ok() {
                Some(true)
            } else if process_state(self.pid).is_none_or(|s| s == 'Z') {
                Some(false)
            } else {
                None
            }
        });
        up.unwrap_or_else(|| {
            panic!(
                "the supervisor neither answered nor exited within {WAIT:?}; output:\n{}",
                self.output()
            )
        })
    }

    /// Poll the status until `f` returns `Some`; fails after `timeout`,
    /// naming `what` and showing the last status.
    pub fn wait_status<R>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Status) -> Option<R>,
    ) -> R {
        let mut last = None;
        let got = wait_until(timeout, || {
            let st = self.status();
            let r = f(&st);
            last = Some(st);
            r
        });
        got.unwrap_or_else(|| panic!("status: {what} not within {timeout:?}; last: {last:#?}"))
    }

    /// Wait until generation `g` is in `state`; its entry.
    pub fn wait_state(&self, g: u64, state: &str, timeout: Duration) -> Generation {
        self.wait_status(&format!("generation {g} {state}"), timeout, |st| {
            st.generation(g).filter(|e| e.state == state).cloned()
        })
    }

    /// Wait until generation `g` is active (ready and serving); its pid.
    pub fn wait_active(&self, g: u64) -> i32 {
        let e = self.wait_state(g, "active", WAIT);
        e.pid
            .unwrap_or_else(|| panic!("active generation {g} without a pid: {e:?}"))
    }

    /// The pid of generation `g`, once the status lists it with one (in
    /// any state).
    pub fn pid_of(&self, g: u64) -> i32 {
        self.wait_status(&format!("generation {g} with a pid"), WAIT, |st| {
            st.generation(g)?.pid
        })
    }

    /// The pid of the active generation now (fails if there is none).
    pub fn active_pid(&self) -> i32 {
        let st = self.status();
        st.in_state("active")
            .and_then(|e| e.pid)
            .unwrap_or_else(|| panic!("no active generation: {st:#?}"))
    }

    /// Wait until the status lists exactly `want` (generation, pid, state).
    pub fn wait_generations(&self, want: &[(u64, i32, &str)]) -> Status {
        let want: Vec<(u64, Option<i32>, String)> = want
            .iter()
            .map(|(g, p, s)| (*g, Some(*p), s.to_string()))
            .collect();
        self.wait_status(&format!("generations {want:?}"), WAIT, |st| {
            (st.states() == want).then(|| st.clone())
        })
    }

    /// The address of the `i`th listener as the status gives it
    /// (`127.0.0.1:PORT`, `udp:127.0.0.1:PORT`, `unix:/PATH`).
    pub fn listener_address(&self, i: usize) -> String {
        let st = self.status();
        st.listeners
            .get(i)
            .unwrap_or_else(|| panic!("no listener {i}: {st:#?}"))
            .address
            .clone()
    }

    /// The TCP address of the `i`th listener, from the status.
    pub fn listener_addr(&self, i: usize) -> SocketAddr {
        let a = self.listener_address(i);
        a.parse()
            .unwrap_or_else(|_| panic!("listener {i} is not a TCP address: {a}"))
    }

    /// `supervisor reload` (bounded by `--timeout 20s`): its exit code and
    /// its one line, checked to be the only output.
    pub fn reload_and_wait(&self) -> Answer {
        let out = self.ctl(&["reload", "--timeout", "20s"]);
        let (line, other) = if out.code == Some(0) {
            (&out.stdout, &out.stderr)
        } else {
            (&out.stderr, &out.stdout)
        };
        assert_eq!(other, "", "reload: output on the other stream: {out:?}");
        Answer {
            code: out.code,
            line: one_line("reload", line).to_string(),
        }
    }

    /// SIGTERM (a graceful stop), then its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait_exit(WAIT).code()
    }

    /// The `--health` endpoint's address, from the kernel: the one TCP
    /// socket it holds listening on a port none of its listeners has.
    pub fn health_addr(&self) -> SocketAddr {
        let mut last = Vec::new();
        let found = wait_until(WAIT, || {
            let ports: BTreeSet<u16> = self
                .status()
                .listeners
                .iter()
                .filter_map(|l| l.address.parse::<SocketAddr>().ok())
                .map(|a| a.port())
                .collect();
            let held: BTreeSet<String> = fds(self.pid).into_values().collect();
            let mut other = Vec::new();
            for family in [libc::AF_INET, libc::AF_INET6] {
                let list = hot_supervisor::sockinfo::listening(family, true)
                    .unwrap_or_else(|e| panic!("sock_diag: {e}"));
                other.extend(
                    list.into_iter()
                        .filter(|(addr, _, inode)| {
                            !ports.contains(&addr.port())
                                && held.contains(&format!("socket:[{inode}]"))
                        })
                        .map(|(addr, _, _)| addr),
                );
            }
            last = other.clone();
            match other[..] {
                [addr] => Some(addr),
                _ => None,
            }
        });
        found.unwrap_or_else(|| {
            panic!(
                "no one health endpoint among the supervisor's listening sockets: {last:?}\n{}",
                self.output()
            )
        })
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

    /// Subscribe to its event stream (see [`Events`]).
    pub fn events(&self) -> Events {
        // The control socket is bound shortly after the start.
        self.status();
        Events::subscribe_at(&self.control)
    }

    /// The lifecycle records its `--log-format json` log lines carry (see
    /// [`Builder::json_log`]), in order: the whole life of a supervisor,
    /// from before anyone could subscribe to its stream. Their `time` is
    /// not kept (the log's is text).
    pub fn logged_records(&self) -> Vec<Record> {
        let lines = self.lines.0.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| {
                let serde_json::Value::Object(mut m) = serde_json::from_str(l).ok()? else {
                    return None;
                };
                m.get("event")?;
                m.insert("time".into(), 0.0.into());
                Some(
                    serde_json::from_value(serde_json::Value::Object(m))
                        .unwrap_or_else(|e| panic!("a log line with a bad event ({e}): {l}")),
                )
            })
            .collect()
    }

    /// Its open fds, once it holds no accepted control connection (the
    /// status queries of a test close theirs a moment after the answer).
    pub fn fds_without_control_connections(&self) -> BTreeMap<i32, String> {
        let control = self.control.to_string_lossy().into_owned();
        let accepted = || -> BTreeSet<String> {
            let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
            table
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    // Every socket on the path but the listener (flags
                    // __SO_ACCEPTCON): connected ones, and ones whose
                    // client has just left (no longer in state 03).
                    (cols.get(3) != Some(&"00010000") && cols.get(7) == Some(&control.as_str()))
                        .then(|| format!("socket:[{}]", cols[6]))
                })
                .collect()
        };
        let quiet = wait_until(WAIT, || {
            let open = fds(self.pid);
            let conns = accepted();
            (!open.values().any(|t| conns.contains(t))).then_some(open)
        });
        quiet.unwrap_or_else(|| panic!("control connections still open after {WAIT:?}"))
    }

    /// The spares alone: the idle sockets less the reserves made ahead of
    /// time for the next generation.
    pub fn spares_only(&self) -> usize {
        self.status()
            .listeners
            .iter()
            .map(|l| (l.spare_sockets - l.reserve_sockets) as usize)
            .sum()
    }

    /// The spare sockets the supervisor holds in its reuseport groups (see
    /// the status's `spare_sockets`): fds that are neither a generation's
    /// socket nor leaked, and come and go between reloads.
    pub fn spares(&self) -> usize {
        self.status()
            .listeners
            .iter()
            .map(|l| l.spare_sockets as usize)
            .sum()
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
            for pid in children_of(self.pid) {
                if let Some(group) = process_group(pid) {
                    // SAFETY: signalling a process group the supervisor
                    // we started made.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
                // SAFETY: signalling a child of the supervisor we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
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

/// The process group of `pid`, if it exists.
pub fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command: state, ppid, pgrp.
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Wait until a child of `parent` whose command line is `cmd` appears
/// (from /proc); its pid.
pub fn wait_child(parent: i32, cmd: &str) -> i32 {
    wait_until(WAIT, || {
        children_of(parent).into_iter().find(|&p| cmdline(p) == cmd)
    })
    .unwrap_or_else(|| {
        panic!(
            "no child {cmd:?} of pid {parent} within {WAIT:?}; its children: {:?}",
            children_of(parent)
                .iter()
                .map(|&p| (p, cmdline(p)))
                .collect::<Vec<_>>()
        )
    })
}

/// Wait until `pid` is gone entirely (reaped, not a zombie).
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    wait_until(timeout, || (!process_exists(pid)).then_some(())).is_some()
}

/// The Python example server (READY=1 once it serves; answers `generation
/// G`) as a command run through `sh`, so that a configuration file
/// `config` saying `bad` makes a generation fail at start.
pub fn python_server_unless_bad(config: &Path) -> Vec<String> {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/children/python/server.py");
    vec![
        "sh".to_string(),
        "-c".into(),
        r#"if grep -q bad "$0" 2>/dev/null; then exit 1; fi; exec "$1" "$2""#.into(),
        config.to_str().unwrap().into(),
        python3(),
        server.to_str().unwrap().into(),
    ]
}

/// The resident set size of `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("VmRSS")
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

/// The inodes of every socket listening on TCP address `at` (state
/// LISTEN), or bound to UDP `at` and unconnected (`table` is `tcp` or
/// `udp`), as `socket:[INODE]` the way /proc/PID/fd shows them. The
/// address, not only the port: 127.0.0.1 and ::1 have ports of their own,
/// and another test's listener may have the same number on the other.
///
/// Asked of the kernel with sock_diag(7), which filters by state: after a
/// few load tests /proc/net/tcp lists tens of thousands of connections in
/// TIME_WAIT and takes seconds to read.
pub fn listening_sockets(table: &str, at: SocketAddr) -> BTreeSet<String> {
    let stream = match table {
        "tcp" => true,
        "udp" => false,
        _ => panic!("listening_sockets: {table} is neither tcp nor udp"),
    };
    let mut found = BTreeSet::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let list = hot_supervisor::sockinfo::listening(family, stream)
            .unwrap_or_else(|e| panic!("sock_diag: {e}"));
        for (addr, _uid, inode) in list {
            if addr.ip() == at.ip() && addr.port() == at.port() {
                found.insert(format!("socket:[{inode}]"));
            }
        }
    }
    found
}

/// What fd `fd` of `pid` points at (`socket:[INODE]` for a socket).
pub fn fd_target(pid: i32, fd: i32) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap_or_else(|e| panic!("fd {fd} of pid {pid}: {e}"));
    link.to_string_lossy().into_owned()
}

/// Fail with an install hint unless `python3` runs.
pub fn require_python3() {
    let ok = Command::new("python3")
        .args(["-c", "pass"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 is required for this test (install it: apt-get install python3)"
    );
}

/// The Python interpreter itself (`sys.executable` of `python3`), so that a
/// child starts without a launcher in front of it (a version manager's
/// `python3` shim costs a shell and several processes per start); fails
/// with an install hint where there is no `python3`.
pub fn python3() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        require_python3();
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .stdin(Stdio::null())
            .output()
            .expect("run python3");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if path.is_empty() {
            "python3".to_string()
        } else {
            path
        }
    })
    .clone()
}

/// A `python3` that another user can run (a per-user install under a
/// private home cannot be), from `PATH`; fails, saying what to install,
/// where there is none.
pub fn python3_for_others() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("python3"))
        .filter_map(|p| p.canonicalize().ok())
        .find(|p| {
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode());
            mode(p) & 0o005 == 0o005 && p.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
        })
        .expect(
            "this test needs a python3 on PATH that another user can run (apt-get install python3)",
        )
}

/// A free TCP port below 1024 on 127.0.0.1, and a guard that keeps every
/// other test from being given one until it is dropped: a free port is
/// free only until the test it was found for binds it.
pub fn privileged_port() -> (std::sync::MutexGuard<'static, ()>, u16) {
    static ONE: Mutex<()> = Mutex::new(());
    let held = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let port = (600..1024)
        .rev()
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("no free port in 600..1024 on 127.0.0.1");
    (held, port)
}

/// Whether the tests run as root (some need it: a pid namespace, `--user`).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// For a test ignored with `needs root` and run anyway: fail, saying why,
/// rather than pass without testing anything.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (run the ignored tests as root: `cargo test -- --ignored`)"
    );
}

/// The direct children of `pid`, from /proc/PID/task/*/children.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The command line of `pid`, its words joined by spaces ("" once gone).
pub fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`),
/// bounded by a 5 s timeout: the status code and the body, or what failed.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {text:?}"))?;
    let code = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((code, body.to_string()))
}
