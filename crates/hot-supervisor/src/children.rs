//! The generations' processes: spawning them, awaiting their exec status,
//! signalling them, reaping them, and reading their notify sockets.
//!
//! Owns each worker's pid (until it is reaped), its exec-status pipe
//! (until the status is known), its notify socket and its last `STATUS=`
//! (a generation is one worker, or N with `--workers`). A worker is named
//! by its generation and index. It signals only pids it has not yet
//! reaped, so a pid is never reused under it. It never decides anything:
//! the driver tells it what to do and feeds what it reports to the
//! machine.
//!
//! A spawn returns once the worker is forked; its exec status is polled
//! with the rest ([`Children::exec_interest`]). The machine hears of a
//! worker that could not exec as it did when each spawn waited for its
//! status: the failures of a generation's workers in their order, each
//! once every worker spawned before it has exec'd
//! ([`Children::next_failure`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use crate::compat::Compat;
use crate::environ;
use crate::machine::{ExitStatus, Generation};
use crate::notify::{Message, NotifyDir, NotifySocket};
use crate::spawn::{self, Plan};

/// At most this many notify datagrams are read per socket per wake-up, so
/// that a flooding child cannot starve signals and deadlines.
const NOTIFY_BATCH: usize = 64;

/// How many workers' process groups are remembered.
const GROUPS_KEPT: usize = 1024;

/// How long the supervisor waits, on its way out, for a leftover process
/// it SIGKILLed (one in uninterruptible sleep may never go).
const ORPHAN_WAIT: Duration = Duration::from_secs(2);

/// A worker's process, until it is reaped.
struct Child {
    pid: Pid,
    /// Sent its stop signal alone (a rolling reload): a stop of its whole
    /// generation does not send it again.
    stopped: bool,
    /// When it was spawned.
    started: Instant,
    notify: NotifySocket,
    /// Set once waitpid has collected it: never signal it again.
    reaped: bool,
    /// The last `STATUS=` text.
    status: Option<String>,
    /// Its exec status, while it is awaited or not yet told.
    exec: Exec,
}

/// Where a worker's exec status stands.
#[derive(Debug)]
enum Exec {
    /// Known and told (or carried across an upgrade: known then).
    Done,
    /// Awaited on its pipe.
    Pending(spawn::Pending),
    /// It could not exec (it is reaped): told once every worker of its
    /// generation spawned before it has exec'd.
    Failed(spawn::SpawnError),
}

/// Where an exec status stands, without what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stands {
    Done,
    Pending,
    Failed,
}

impl Exec {
    fn stands(&self) -> Stands {
        match self {
            Exec::Done => Stands::Done,
            Exec::Pending(_) => Stands::Pending,
            Exec::Failed(_) => Stands::Failed,
        }
    }
}

/// Of `workers` (in order), the first failed one with no worker of its
/// generation below it still pending.
fn first_failure(
    workers: impl Iterator<Item = ((Generation, u32), Stands)>,
) -> Option<(Generation, u32)> {
    let mut pending_in = None;
    for ((g, w), stands) in workers {
        match stands {
            _ if pending_in == Some(g) => {}
            Stands::Pending => pending_in = Some(g),
            Stands::Failed => return Some((g, w)),
            Stands::Done => {}
        }
    }
    None
}

/// A worker whose exec status came back: it exec'd (or counts as started).
#[derive(Debug)]
pub struct Started {
    /// Its generation and index.
    pub worker: (Generation, u32),
}

/// What [`Children::reap`] found, in order.
#[derive(Debug)]
pub enum Reaping {
    /// A worker reaped before its exec status was read: it had exec'd
    /// (its exit follows). One that had not, and failed, is told by
    /// [`Children::next_failure`], never as an exit.
    Started(Started),
    /// A process reaped.
    Exited(Reaped),
}

/// The processes as carried across an in-place upgrade.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    /// What was read at start (`--env-file`, `--env`, `--user`): an upgrade
    /// keeps it, as reloads do, even if the files have changed or gone.
    pub env: Vec<(String, String)>,
    /// As resolved at start.
    pub credentials: Option<spawn::Credentials>,
    notify_dir: std::path::PathBuf,
    children: Vec<(Generation, SavedChild)>,
    groups: Vec<i32>,
    /// Each generation's environment as read at its start (absent in
    /// states written before it was kept: those generations' workers
    /// restarted alone read the files again).
    #[serde(default)]
    gen_env: Vec<(Generation, Vec<(String, String)>)>,
    /// The soft open-files limit the children get back.
    #[serde(default)]
    nofile: Option<u64>,
}

/// One process as carried across an in-place upgrade.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedChild {
    /// Its index in its generation (0 in states saved before workers).
    #[serde(default)]
    worker: u32,
    #[serde(default)]
    stopped: bool,
    pid: i32,
    #[serde(with = "crate::carry::mono")]
    started: Instant,
    notify: crate::notify::Saved,
    reaped: bool,
    status: Option<String>,
}

/// What the command is and how it is run.
pub struct Command {
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// The generations' stop signal.
    pub stop_signal: Signal,
    /// Variables for servers written for other launchers.
    pub compat: Compat,
    /// `--env-file` and `--env` assignments as read at start (what an
    /// in-place upgrade carries; each generation reads the files again).
    pub env: Vec<(String, String)>,
    /// The `--env-file` files, read again at each generation's start.
    pub env_files: Vec<std::path::PathBuf>,
    /// The `--env` assignments (after the files' ones: they win).
    pub env_args: Vec<(String, String)>,
    /// The drain timeout (passed to the children).
    pub drain_timeout: Duration,
    /// Run as this user.
    pub credentials: Option<spawn::Credentials>,
    /// Run in this directory.
    pub chdir: Option<std::path::PathBuf>,
    /// The control socket (passed to the children as `SUPERVISOR_CONTROL`).
    pub control: std::path::PathBuf,
    /// Processes per generation.
    pub workers: u32,
}

/// One reaped process.
#[derive(Debug)]
pub struct Reaped {
    /// Its generation and worker index, if it was a worker's main process.
    pub worker: Option<(Generation, u32)>,
    /// Its pid.
    pub pid: Pid,
    /// How it ended.
    pub status: ExitStatus,
}

/// Every generation's process. See the module documentation.
pub struct Children {
    command: Command,
    notify_dir: NotifyDir,
    map: BTreeMap<(Generation, u32), Child>,
    /// The process groups of the last [`GROUPS_KEPT`] generations spawned
    /// (each leads its own): a leftover in one of them was no escapee. (An
    /// older group was SIGKILLed whole when its leader was reaped.)
    groups: std::collections::VecDeque<i32>,
    /// Each generation's `--env-file` and `--env` assignments, as read when
    /// its first process started: a worker restarted alone gets the same.
    gen_env: BTreeMap<Generation, Vec<(String, String)>>,
    /// When each `--env-file` was last read whole.
    files_read: BTreeMap<std::path::PathBuf, Instant>,
    /// The soft open-files limit the supervisor started with, which the
    /// children get back (it raised its own to the hard limit).
    nofile: Option<u64>,
}

/// Read every `--env-file` of `files` (in order), then the `--env`
/// assignments: the assignments a generation starts with.
///
/// # Errors
/// A file that cannot be read (`--env-file PATH: why`) or holds a line
/// that is no assignment (`PATH:LINE: what is wrong`).
pub fn read_env(
    files: &[std::path::PathBuf],
    args: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--env-file {}: {e}", path.display()))?;
        let parsed = hot_supervisor::envfile::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}:{}: {}", path.display(), e.line, e.what))?;
        env.extend(parsed);
    }
    env.extend(args.iter().cloned());
    Ok(env)
}

impl Children {
    /// No children yet; notify sockets go in a new private directory.
    ///
    /// # Errors
    /// The notify directory cannot be created.
    pub fn new(command: Command) -> Result<Children> {
        let notify_dir = if command.credentials.is_some() {
            NotifyDir::create_for_others()?
        } else {
            NotifyDir::create()?
        };
        Ok(Children {
            command,
            notify_dir,
            map: BTreeMap::new(),
            groups: std::collections::VecDeque::new(),
            gen_env: BTreeMap::new(),
            files_read: BTreeMap::new(),
            nofile: None,
        })
    }

    /// Their state for an in-place upgrade.
    pub fn save(&self, keep: &mut crate::carry::Keep) -> Saved {
        Saved {
            env: self.command.env.clone(),
            credentials: self.command.credentials.clone(),
            notify_dir: self.notify_dir.save(),
            children: self
                .map
                .iter()
                .map(|((g, w), c)| {
                    let saved = SavedChild {
                        worker: *w,
                        stopped: c.stopped,
                        pid: c.pid.as_raw(),
                        started: c.started,
                        notify: c.notify.save(keep),
                        reaped: c.reaped,
                        status: c.status.clone(),
                    };
                    (*g, saved)
                })
                .collect(),
            groups: self.groups.iter().copied().collect(),
            gen_env: self.gen_env.clone().into_iter().collect(),
            nofile: self.nofile,
        }
    }

    /// The processes an upgrade carried across (they are this process's
    /// children still: exec changes no parent).
    pub fn restore(command: Command, saved: Saved, adopt: &mut crate::carry::Adopt) -> Children {
        let map = saved
            .children
            .into_iter()
            .map(|(g, c)| {
                let child = Child {
                    stopped: c.stopped,
                    pid: Pid::from_raw(c.pid),
                    started: c.started,
                    notify: crate::notify::NotifySocket::restore(c.notify, adopt),
                    reaped: c.reaped,
                    status: c.status,
                    exec: Exec::Done,
                };
                ((g, c.worker), child)
            })
            .collect();
        Children {
            command,
            notify_dir: NotifyDir::restore(saved.notify_dir),
            map,
            groups: saved.groups.into_iter().collect(),
            gen_env: saved.gen_env.into_iter().collect(),
            files_read: BTreeMap::new(),
            nofile: saved.nofile,
        }
    }

    /// Give the children `soft` back as their soft open-files limit (the
    /// supervisor's own, before it raised it).
    pub fn give_back_nofile(&mut self, soft: Option<u64>) {
        self.nofile = soft;
    }

    /// The command being run.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// Fork worker `w` of generation `g` with `fds` at 3, 4, ... and their
    /// `names` and Server::Starter keys. Its exec status comes later: see
    /// [`Children::on_exec_status`].
    ///
    /// # Errors
    /// The environment, the notify socket or the fork failed (the message
    /// says which): no process exists.
    pub fn spawn(
        &mut self,
        (g, w): (Generation, u32),
        fds: &[BorrowedFd<'_>],
        names: &[&str],
        starter_keys: &[String],
        channel: Option<BorrowedFd<'_>>,
    ) -> Result<Pid> {
        // A restarted worker's predecessor (reaped) gives its socket's
        // path back first.
        if self.map.get(&(g, w)).is_some_and(|c| c.reaped) {
            self.map.remove(&(g, w));
        }
        // The generation's environment: read now for its first process.
        let extra = match self.gen_env.get(&g) {
            Some(env) => env.clone(),
            None => {
                let env = read_env(&self.command.env_files, &self.command.env_args)?;
                let now = Instant::now();
                for f in &self.command.env_files {
                    self.files_read.insert(f.clone(), now);
                }
                self.gen_env.insert(g, env.clone());
                env
            }
        };
        let mut notify = self.notify_dir.socket(g.0, w)?;
        if let Some(c) = &self.command.credentials {
            // The child must be able to send READY=1 as its own user.
            notify.allow(c.uid, c.gid)?;
        }
        let env = environ::build(&environ::Inputs {
            inherited: std::env::vars_os().collect(),
            extra: &extra,
            names,
            starter_keys,
            notify: notify.path().as_os_str(),
            generation: g.0,
            worker: (w, self.command.workers.max(1)),
            drain_timeout: self.command.drain_timeout,
            compat: &self.command.compat,
            supervisor_pid: std::process::id(),
            control: self.command.control.as_os_str(),
            // Right after the listeners.
            channel_fd: channel
                .is_some()
                .then_some(supervisor_child::protocol::LISTEN_FDS_START + fds.len() as i32),
        });
        let mut plan = Plan::new(
            &self.command.argv,
            env,
            !fds.is_empty(),
            self.command.stop_signal as i32,
        )?
        .with_nofile(self.nofile)
        .with_credentials(self.command.credentials.clone())
        .with_chdir(self.command.chdir.as_deref())?;
        let mut placed = fds.to_vec();
        placed.extend(channel);
        let pending = spawn::spawn(&mut plan, &placed)?;
        let pid = pending.pid();
        if self.groups.len() >= GROUPS_KEPT {
            self.groups.pop_front();
        }
        self.groups.push_back(pid.as_raw());
        self.map.insert(
            (g, w),
            Child {
                pid,
                stopped: false,
                started: Instant::now(),
                notify,
                reaped: false,
                status: None,
                exec: Exec::Pending(pending),
            },
        );
        Ok(pid)
    }

    /// The exec-status pipes to poll.
    pub fn exec_interest(&self) -> Vec<((Generation, u32), BorrowedFd<'_>)> {
        self.map
            .iter()
            .filter_map(|(k, c)| match &c.exec {
                Exec::Pending(p) => Some((*k, p.fd())),
                _ => None,
            })
            .collect()
    }

    /// When the first exec status awaited is given up on.
    pub fn exec_deadline(&self) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|c| match &c.exec {
                Exec::Pending(p) => Some(p.deadline()),
                _ => None,
            })
            .min()
    }

    /// Whether any worker's exec status is awaited or not yet told.
    pub fn exec_pending(&self) -> bool {
        self.map.values().any(|c| !matches!(c.exec, Exec::Done))
    }

    /// Worker `w` of `g`'s exec-status pipe is readable: whether it
    /// started. A failure is kept for [`Children::next_failure`] (the
    /// process is reaped).
    pub fn on_exec_status(&mut self, g: Generation, w: u32) -> Option<Started> {
        let c = self.map.get_mut(&(g, w))?;
        let Exec::Pending(p) = &mut c.exec else {
            return None;
        };
        let outcome = p.on_readable()?;
        Self::settle(c, (g, w), outcome, true)
    }

    /// The workers whose exec status is given up on by `now`: they count
    /// as started.
    pub fn on_exec_timeout(&mut self, now: Instant) -> Vec<Started> {
        let mut out = Vec::new();
        for (k, c) in &mut self.map {
            if let Exec::Pending(p) = &mut c.exec
                && let Some(outcome) = p.on_timeout(now)
            {
                out.extend(Self::settle(c, *k, outcome, true));
            }
        }
        out
    }

    /// Record `c`'s exec status: started, or failed (reaped, when
    /// `reaped`: by reading its report; otherwise its reaper will).
    fn settle(
        c: &mut Child,
        worker: (Generation, u32),
        outcome: Result<(), spawn::SpawnError>,
        reaped: bool,
    ) -> Option<Started> {
        match outcome {
            Ok(()) => {
                c.exec = Exec::Done;
                Some(Started { worker })
            }
            Err(e) => {
                c.exec = Exec::Failed(e);
                c.reaped |= reaped;
                None
            }
        }
    }

    /// The next worker that could not exec, to tell the machine: the
    /// lowest of a generation's failed workers, once no worker below it
    /// still awaits its status (as when each spawn waited for its own). It
    /// is forgotten here (it never was a process of the generation's), and
    /// the error says why.
    pub fn next_failure(&mut self) -> Option<((Generation, u32), spawn::SpawnError)> {
        let key = first_failure(self.map.iter().map(|(k, c)| (*k, c.exec.stands())))?;
        let c = self.map.remove(&key)?;
        self.groups.retain(|&p| p != c.pid.as_raw());
        match c.exec {
            Exec::Failed(e) => Some((key, e)),
            _ => None,
        }
    }

    /// Worker `w` of `g` never was, says the machine (a worker spawned
    /// before it could not exec, and the machine counts those after it as
    /// never spawned, as they were when each spawn waited for its own
    /// status): SIGKILL its process group if it is not reaped, and forget
    /// it, so that its exit is an orphan's.
    pub fn abandon(&mut self, g: Generation, w: u32) {
        let Some(c) = self.map.remove(&(g, w)) else {
            return;
        };
        if !c.reaped {
            log::debug!(
                "pid {}: killed, its generation's start failed before it",
                c.pid
            );
            let _ = killpg(c.pid, Signal::SIGKILL);
            let _ = kill(c.pid, Signal::SIGKILL);
        }
    }

    /// The notify sockets to poll.
    pub fn interest(&self) -> Vec<((Generation, u32), BorrowedFd<'_>)> {
        self.map.iter().map(|(k, c)| (*k, c.notify.fd())).collect()
    }

    /// Generation `g`'s workers' processes, in index order.
    fn of(&self, g: Generation) -> impl Iterator<Item = (u32, &Child)> {
        self.map
            .range((g, 0)..=(g, u32::MAX))
            .map(|((_, w), c)| (*w, c))
    }

    /// `g`'s pid (its lowest worker's, preferring one not reaped), while
    /// it is not forgotten.
    pub fn pid(&self, g: Generation) -> Option<Pid> {
        self.of(g)
            .find(|(_, c)| !c.reaped)
            .or_else(|| self.of(g).next())
            .map(|(_, c)| c.pid)
    }

    /// The pids of `g`'s processes not yet reaped.
    pub fn live_pids(&self, g: Generation) -> Vec<i32> {
        self.of(g)
            .filter(|(_, c)| !c.reaped)
            .map(|(_, c)| c.pid.as_raw())
            .collect()
    }

    /// Worker `w` of `g`: its pid, while it is not forgotten.
    pub fn worker_pid(&self, g: Generation, w: u32) -> Option<Pid> {
        self.map.get(&(g, w)).map(|c| c.pid)
    }

    /// When `g` was spawned (its first worker still known).
    pub fn started(&self, g: Generation) -> Option<Instant> {
        self.of(g).map(|(_, c)| c.started).min()
    }

    /// When worker `w` of `g` was spawned.
    pub fn worker_started(&self, g: Generation, w: u32) -> Option<Instant> {
        self.map.get(&(g, w)).map(|c| c.started)
    }

    /// `g`'s last `STATUS=` (its lowest worker's that sent one).
    pub fn status_text(&self, g: Generation) -> Option<&str> {
        self.of(g).find_map(|(_, c)| c.status.as_deref())
    }

    /// `generation 3 (pid 4211)`, `generation 3 (pids 4211, 4212)`, or
    /// without a pid if it never had one.
    pub fn who(&self, g: Generation) -> String {
        let pids: Vec<String> = self.of(g).map(|(_, c)| c.pid.to_string()).collect();
        match pids.len() {
            0 => g.to_string(),
            1 => format!("{g} (pid {})", pids[0]),
            _ => format!("{g} (pids {})", pids.join(", ")),
        }
    }

    /// `generation 3 worker 1 (pid 4212)`; with one worker per
    /// generation, as [`Children::who`] says it.
    pub fn who_worker(&self, g: Generation, w: u32) -> String {
        if self.command.workers <= 1 {
            return self.who(g);
        }
        match self.worker_pid(g, w) {
            Some(pid) => format!("{g} worker {w} (pid {pid})"),
            None => format!("{g} worker {w}"),
        }
    }

    /// Send `g`'s workers their stop signal (and SIGCONT: a stopped child
    /// could not act on it otherwise), but not those already sent it alone.
    pub fn stop(&self, g: Generation) {
        for (w, c) in self.of(g).filter(|(_, c)| !c.reaped && !c.stopped) {
            self.signal_stop(g, w, c);
        }
    }

    /// Send worker `w` of `g` its stop signal.
    pub fn stop_worker(&mut self, g: Generation, w: u32) {
        if let Some(c) = self.map.get(&(g, w)).filter(|c| !c.reaped) {
            self.signal_stop(g, w, c);
        }
        if let Some(c) = self.map.get_mut(&(g, w)) {
            c.stopped = true;
        }
    }

    fn signal_stop(&self, g: Generation, w: u32, c: &Child) {
        let s = self.command.stop_signal;
        let who = self.who_worker(g, w);
        log::debug!("{who}: sending {s}");
        if let Err(e) = kill(c.pid, s) {
            log::warn!("{who}: send {s}: {e}");
        }
        let _ = kill(c.pid, Signal::SIGCONT);
    }

    /// Pass signal `sig` on to `g`'s workers (a signal the supervisor does
    /// not handle itself).
    pub fn forward(&self, g: Generation, sig: Signal) {
        for (w, c) in self.of(g).filter(|(_, c)| !c.reaped) {
            if let Err(e) = kill(c.pid, sig) {
                log::warn!("{}: forward {sig}: {e}", self.who_worker(g, w));
            }
        }
    }

    /// SIGKILL the process group of each of `g`'s workers.
    pub fn kill(&self, g: Generation) {
        let workers: Vec<u32> = self.of(g).map(|(w, _)| w).collect();
        for w in workers {
            self.kill_worker(g, w);
        }
    }

    /// SIGKILL worker `w` of `g`'s process group.
    pub fn kill_worker(&self, g: Generation, w: u32) {
        let Some(c) = self.map.get(&(g, w)).filter(|c| !c.reaped) else {
            return;
        };
        log::debug!(
            "{}: sending SIGKILL to its process group",
            self.who_worker(g, w)
        );
        let _ = killpg(c.pid, Signal::SIGKILL);
        let _ = kill(c.pid, Signal::SIGKILL);
    }

    /// Collect every exited child. A generation is killed as a whole
    /// process group first, while the exited leader's zombie still holds
    /// the group id, so no helper it left behind outlives it and no pid is
    /// signalled after it could have been reused. A worker whose exec
    /// status was still awaited has it read first, from the pipe its exit
    /// closed: one that exec'd is [`Reaping::Started`] before its exit,
    /// one that failed is reaped and kept for [`Children::next_failure`].
    pub fn reap(&mut self) -> Vec<Reaping> {
        let mut out = Vec::new();
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            let pid = match waitid(Id::All, flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return out,
                Ok(s) => match s.pid() {
                    Some(p) => p,
                    None => return out,
                },
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitid: {e}");
                    return out;
                }
            };
            let worker = self
                .map
                .iter()
                .find(|(_, c)| c.pid == pid && !c.reaped)
                .map(|(k, _)| *k);
            if let Some(k) = worker
                && let Some(c) = self.map.get_mut(&k)
                && let Exec::Pending(p) = std::mem::replace(&mut c.exec, Exec::Done)
            {
                match Self::settle(c, k, p.on_exit(), false) {
                    Some(started) => out.push(Reaping::Started(started)),
                    None => {
                        // It never exec'd: reaped, and told as a failure.
                        c.reaped = true;
                        let _ = waitpid(pid, None);
                        continue;
                    }
                }
            }
            if worker.is_some() {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let status = match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signal(sig as i32),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waitpid {pid}: {e}");
                    return out;
                }
            };
            if let Some(k) = worker
                && let Some(c) = self.map.get_mut(&k)
            {
                c.reaped = true;
            }
            out.push(Reaping::Exited(Reaped {
                worker,
                pid,
                status,
            }));
        }
    }

    /// Forget reaped children whose exit has been handled (`handled`): kept
    /// until then so that the events about them can name their pids (one
    /// SIGCHLD may reap several, whose exits are handled one by one).
    pub fn forget_reaped(&mut self, handled: impl Fn(Generation, u32) -> bool) {
        self.map.retain(|(g, w), c| !(c.reaped && handled(*g, *w)));
    }

    /// Forget the environments of the generations `gone` says are gone.
    pub fn forget_envs(&mut self, gone: impl Fn(Generation) -> bool) {
        self.gen_env.retain(|g, _| !gone(*g));
    }

    /// Each `--env-file`, with when it was last read whole (never, by this
    /// image, if `None`).
    pub fn env_files(&self) -> Vec<(&std::path::Path, Option<Instant>)> {
        self.command
            .env_files
            .iter()
            .map(|f| (f.as_path(), self.files_read.get(f).copied()))
            .collect()
    }

    /// Read worker `w` of `g`'s notify socket: the messages that arrived,
    /// in order. Rejected datagrams are logged and dropped; a new
    /// `STATUS=` is remembered.
    pub fn read_notify(&mut self, g: Generation, w: u32) -> Vec<Message> {
        let mut out = Vec::new();
        for _ in 0..NOTIFY_BATCH {
            let Some(c) = self.map.get(&(g, w)) else {
                break;
            };
            let msg = match c.notify.recv() {
                Ok(None) => break,
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(why))) => {
                    log::warn!(
                        "{}: dropped a notify message that {why}",
                        self.who_worker(g, w)
                    );
                    continue;
                }
                Err(e) => {
                    log::warn!("{}: {e:#}", self.who_worker(g, w));
                    break;
                }
            };
            if let Some(text) = &msg.status {
                let who = self.who_worker(g, w);
                if let Some(c) = self.map.get_mut(&(g, w))
                    && c.status.as_deref() != Some(text.as_str())
                {
                    // Escaped: a child's text must not forge log lines.
                    log::info!("{who} status: {}", text.escape_debug());
                    c.status = Some(text.clone());
                }
            }
            out.push(msg);
        }
        out
    }

    /// Before exiting: processes that left their generation's process group
    /// (setsid) and were reparented to us would otherwise outlive the
    /// supervisor and keep its sockets. They are our unreaped children, so
    /// their pids are safe to signal. Each is waited for at most
    /// [`ORPHAN_WAIT`] in all (one in uninterruptible sleep may never go).
    pub fn kill_orphans(&mut self) {
        let me = std::process::id();
        let Ok(list) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
            return;
        };
        let pids: Vec<Pid> = list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .map(Pid::from_raw)
            .collect();
        for &pid in &pids {
            match proc_state(pid) {
                // Dead already (killed with its process group a moment
                // ago): only to be reaped.
                Some(('Z', _)) | None => {}
                Some((_, pgrp)) if self.groups.contains(&pgrp) => {
                    log::debug!("killing pid {pid}, left in a generation's process group");
                    let _ = kill(pid, Signal::SIGKILL);
                }
                Some(_) => {
                    log::warn!(
                        "killing pid {pid}, left behind outside its generation's process group"
                    );
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        }
        // Wait on pidfds (readable once the process has exited), so that a
        // process stuck in uninterruptible sleep costs at most ORPHAN_WAIT.
        let pidfds: Vec<(Pid, std::os::fd::OwnedFd)> = pids
            .iter()
            .filter_map(|&p| pidfd_open(p).map(|fd| (p, fd)))
            .collect();
        let until = Instant::now() + ORPHAN_WAIT;
        let mut left: Vec<&(Pid, std::os::fd::OwnedFd)> = pidfds.iter().collect();
        while !left.is_empty() {
            let mut fds: Vec<nix::poll::PollFd> = left
                .iter()
                .map(|(_, fd)| nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN))
                .collect();
            let ms = until.saturating_duration_since(Instant::now()).as_millis();
            let timeout = nix::poll::PollTimeout::try_from(ms.min(60_000) as i32)
                .unwrap_or(nix::poll::PollTimeout::ZERO);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => {
                    let stuck: Vec<Pid> = left.iter().map(|(p, _)| *p).collect();
                    log::warn!(
                        "pids {stuck:?} did not die within {} of SIGKILL; exiting without them",
                        hot_supervisor::duration::human(ORPHAN_WAIT)
                    );
                    break;
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("poll: {e}");
                    break;
                }
            }
            let done: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            let mut i = 0;
            left.retain(|(pid, _)| {
                let d = done[i];
                i += 1;
                if d {
                    let _ = waitpid(*pid, Some(WaitPidFlag::WNOHANG));
                }
                !d
            });
        }
    }
}

/// A process's state letter and process group, from `/proc/PID/stat`.
fn proc_state(pid: Pid) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the
    // last ')'.
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// A pidfd for `pid` (Linux 5.3), if the kernel gives one.
fn pidfd_open(pid: Pid) -> Option<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let raw = i32::try_from(r).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just returned this new descriptor; nothing else
    // owns it.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_told_once_every_worker_below_it_has_exec_d() {
        use Stands::{Done, Failed, Pending};
        let (g1, g2) = (Generation(1), Generation(2));
        let first = |list: &[((Generation, u32), Stands)]| first_failure(list.iter().copied());
        assert_eq!(first(&[((g1, 0), Pending), ((g1, 1), Failed)]), None);
        assert_eq!(
            first(&[((g1, 0), Done), ((g1, 1), Failed), ((g1, 2), Failed)]),
            Some((g1, 1))
        );
        // A worker pending in one generation holds back only its own.
        assert_eq!(
            first(&[((g1, 0), Pending), ((g1, 1), Failed), ((g2, 3), Failed)]),
            Some((g2, 3))
        );
        assert_eq!(
            first(&[((g1, 0), Failed), ((g1, 1), Pending)]),
            Some((g1, 0))
        );
        assert_eq!(first(&[((g1, 0), Done), ((g2, 0), Pending)]), None);
    }
}
