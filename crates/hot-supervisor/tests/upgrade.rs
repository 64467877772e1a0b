//! In-place upgrades of the supervisor (`supervisor upgrade`, SIGUSR2): the
//! same process re-executes the binary at the path it was started from,
//! keeping its pid, children, sockets and generations in flight; a binary
//! that cannot take over leaves the old image running.
//!
//! Each test runs its own copy of the supervisor binary, so that it can put
//! a new (or broken) one in its place as a deploy would: by renaming a file
//! over it.

use super::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Write `content` to `path` from a child process: a file this process
/// opened for writing would be inherited, still open, by children that
/// other test threads fork meanwhile, and executing it would then fail with
/// ETXTBSY until they exec.
fn write_outside(path: &Path, content: &[u8]) {
    let mut tee = Command::new("tee")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run tee");
    std::io::Write::write_all(tee.stdin.as_mut().unwrap(), content).unwrap();
    drop(tee.stdin.take());
    assert!(tee.wait().unwrap().success(), "tee {}", path.display());
}

/// Copy `from` to `to` from a child process (see [`write_outside`]).
fn copy_outside(from: &Path, to: &Path) {
    let ok = Command::new("cp").arg(from).arg(to).status().unwrap();
    assert!(ok.success(), "cp {} {}", from.display(), to.display());
}

/// A copy of the supervisor binary in a directory of the test's own.
struct Binary {
    dir: TempDir,
    path: PathBuf,
}

impl Binary {
    fn new(tag: &str) -> Binary {
        let dir = TempDir::new(tag);
        let path = dir.path("supervisor");
        copy_outside(Path::new(supervisor_bin()), &path);
        Binary { dir, path }
    }

    /// Put `content` at the binary's path (mode `mode`), by rename.
    fn replace_with(&self, content: &[u8], mode: u32) {
        let tmp = self.dir.path("supervisor.new");
        write_outside(&tmp, content);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    /// Put a fresh copy of the real binary back.
    fn restore(&self) {
        let tmp = self.dir.path("supervisor.new");
        copy_outside(Path::new(supervisor_bin()), &tmp);
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    /// Start it around the demo server.
    fn start(&self, options: &[&str], demo_args: &[&str]) -> Supervisor {
        let mut cmd = Command::new(&self.path);
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(options)
            .arg("--")
            .arg(demo())
            .args(demo_args);
        let sv = Supervisor::start_with(&mut cmd);
        sv.wait_active(1);
        sv
    }
}

/// `supervisor upgrade` against `sv`: exit code and the one line it printed.
fn upgrade(sv: &Supervisor, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["upgrade"];
    args.extend(extra);
    let out = sv.ctl(&args);
    let text = if out.code == Some(0) {
        out.stdout.clone()
    } else {
        out.stderr.clone()
    };
    (out.code, text.trim_end().to_string())
}

/// Open fds of the supervisor, less the spare sockets that come and go
/// with reloads.
fn fd_count(sv: &Supervisor) -> usize {
    sv.fds_without_control_connections().len() - sv.spares()
}

#[test]
fn an_upgrade_under_load_keeps_pid_children_sockets_and_a_draining_generation() {
    let bin = Binary::new("upgrade-load");
    // Every generation ignores SIGTERM: a replaced one drains until the
    // drain timeout's SIGKILL, so one is still draining at the upgrade.
    // (The log is JSON: its lifecycle records span the upgrade, which ends
    // every event stream.)
    let sv = bin.start(
        &["--drain-timeout", "3s", "--log-format", "json"],
        &["--ignore-sigterm"],
    );
    let addr = sv.listener_addr(0);
    let fds_before = fd_count(&sv);
    let g1 = sv.pid_of(1);
    let load = Load::start_closing(addr, 4, Duration::from_secs(60));
    load.expect_served(1, 50, "before the reload");
    let reload = sv.reload_and_wait();
    assert_eq!(reload.code, Some(0), "{reload:?}");
    sv.wait_state(1, "draining", WAIT);
    // When it began to drain, bracketed by the status request's own time
    // (a loaded machine takes a while to run the client).
    let before = Instant::now();
    let st = sv.status();
    let after = Instant::now();
    let state_ms = st
        .generations
        .iter()
        .find(|g| g.generation == 1)
        .map(|g| Duration::from_millis(g.state_ms))
        .expect("generation 1 still draining");
    let (earliest, latest) = (before - state_ms, after - state_ms);

    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(0), "{text}\n{}", sv.output());
    assert!(
        text.starts_with("upgraded in place from supervisor"),
        "{text}"
    );
    let status = sv.status();
    assert_eq!(status.supervisor.pid, sv.pid as u32, "the pid changed");
    assert_eq!(status.supervisor.upgrades, 1);
    assert!(status.supervisor.upgraded_ms_ago.is_some());
    // The children are the same processes, still children of the same pid.
    assert_eq!(sv.pid_of(1), g1);
    assert_eq!(
        status_field(g1, "PPid"),
        sv.pid.to_string(),
        "generation 1's parent"
    );
    assert_eq!(
        status
            .generations
            .iter()
            .map(|g| g.state.as_str())
            .collect::<Vec<_>>(),
        ["draining", "active"],
        "{status:?}"
    );
    load.expect_served(2, 50, "after the upgrade");

    // The draining generation is killed at its drain deadline, set before
    // the upgrade, and reaped by the new image.
    assert!(
        wait_gone(g1, Duration::from_secs(10)),
        "generation 1 (pid {g1}) was never reaped\n{}",
        sv.output()
    );
    let (most, least) = (earliest.elapsed(), latest.elapsed());
    assert!(
        least < Duration::from_millis(3000 + 1500),
        "generation 1 was reaped {least:?} after it began to drain (drain timeout 3s)"
    );
    assert!(
        most >= Duration::from_millis(2900),
        "generation 1 went after {most:?}, before its drain timeout (3s)"
    );
    sv.wait_generations(&[(2, sv.pid_of(2), "active")]);
    // Killed at the drain timeout (by the new image: the pid is the same).
    let records = sv.logged_records();
    let about_1: Vec<(Kind, Option<&str>, Option<&str>)> = records
        .iter()
        .filter(|r| r.generation == Some(1) && matches!(r.event, Kind::Killed | Kind::Exited))
        .map(|r| (r.event, r.reason.as_deref(), r.status.as_deref()))
        .collect();
    assert_eq!(
        about_1,
        [
            (Kind::Killed, Some("drain timeout"), None),
            (
                Kind::Exited,
                Some("drained"),
                Some("killed by signal 9 (SIGKILL)")
            )
        ],
        "{}",
        sv.output()
    );
    load.expect_served(2, 50, "after generation 1 is gone");
    load.finish_clean("an upgrade with a draining generation", 200);
    assert_eq!(
        fd_count(&sv),
        fds_before,
        "the supervisor's fd count changed"
    );
    // No zombie left under the supervisor.
    assert!(process_state(g1).is_none());
}

#[test]
fn twenty_upgrades_in_a_row_then_reloads_still_work() {
    let bin = Binary::new("upgrade-20");
    let sv = bin.start(&[], &[]);
    let addr = sv.listener_addr(0);
    let fds_before = fd_count(&sv);
    let load = Load::start(addr, 2, Duration::from_secs(60));
    for i in 1..=20 {
        let (code, text) = upgrade(&sv, &["--timeout", "10s"]);
        assert_eq!(code, Some(0), "upgrade {i}: {text}\n{}", sv.output());
        assert_eq!(sv.status().supervisor.upgrades, i);
    }
    load.expect_served(1, 20, "after 20 upgrades");
    assert_eq!(sv.status().supervisor.pid, sv.pid as u32);
    assert_eq!(fd_count(&sv), fds_before, "fds after 20 upgrades");
    // The new image reloads as the old one did.
    let reload = sv.reload_and_wait();
    assert_eq!(reload.code, Some(0), "{reload:?}");
    load.expect_served(2, 20, "after a reload");
    load.finish_clean("20 upgrades and a reload", 40);
}

#[test]
fn sigusr2_upgrades_in_place() {
    let bin = Binary::new("upgrade-usr2");
    let sv = bin.start(&[], &[]);
    let child = sv.pid_of(1);
    sv.signal(libc::SIGUSR2);
    sv.wait_status("an upgrade after SIGUSR2", WAIT, |s| {
        (s.supervisor.upgrades == 1).then_some(())
    });
    assert_eq!(sv.pid_of(1), child, "the child changed");
    // SIGUSR2 is the supervisor's now: the child never saw it.
    assert_eq!(process_state(child).map(|s| s != 'Z'), Some(true));
}

#[test]
fn a_binary_that_cannot_take_over_leaves_the_old_image_running() {
    let bin = Binary::new("upgrade-broken");
    let sv = bin.start(&[], &[]);
    let addr = sv.listener_addr(0);
    let child = sv.pid_of(1);
    let fds_before = fd_count(&sv);
    let load = Load::start(addr, 2, Duration::from_secs(60));
    /// What the binary is, its content and mode, the upgrade's extra
    /// arguments, and what the refusal must say.
    type Case<'a> = (&'a str, &'a [u8], u32, &'a [&'a str], &'a str);
    let cases: [Case; 6] = [
        (
            "not executable",
            b"#!/bin/sh\nexit 0\n",
            0o644,
            &[],
            "Permission denied",
        ),
        (
            "exits at once",
            b"#!/bin/sh\nexit 3\n",
            0o755,
            &[],
            "ended without confirming",
        ),
        (
            "refuses the state",
            b"#!/bin/sh\necho 'error the state is version 1; this binary reads version 2 only'\nexit 1\n",
            0o755,
            &[],
            "refused: the state is version 1",
        ),
        (
            "never answers",
            b"#!/bin/sh\nexec sleep 30\n",
            0o755,
            &["--timeout", "300ms"],
            "did not confirm within 300ms",
        ),
        (
            "not a program",
            b"\x7fELF garbage",
            0o755,
            &[],
            "",
        ),
        (
            "a text without #!",
            b"echo hello\n",
            0o755,
            &[],
            "is not a program (neither an ELF binary nor a #! script)",
        ),
    ];
    for (what, content, mode, extra, reason) in cases {
        bin.replace_with(content, mode);
        let (code, text) = upgrade(&sv, extra);
        assert_eq!(code, Some(1), "{what}: {text}");
        assert!(
            text.starts_with("supervisor: upgrade failed: ") && text.contains(reason),
            "{what}: {text:?} does not say {reason:?}"
        );
        assert!(text.ends_with("carries on"), "{what}: {text}");
        let status = sv.status();
        assert_eq!(status.supervisor.pid, sv.pid as u32, "{what}");
        assert_eq!(status.supervisor.upgrades, 0, "{what}");
        assert_eq!(sv.pid_of(1), child, "{what}");
        load.expect_served(1, 10, what);
    }
    // The check of the one that never answered was killed with its group.
    assert!(
        wait_until(WAIT, || {
            let sleeping = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .any(|pid| {
                    // Processes come and go during the scan: read, never
                    // insist.
                    let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| {
                            s.rsplit(')')
                                .next()?
                                .split_whitespace()
                                .nth(1)?
                                .parse::<i32>()
                                .ok()
                        });
                    parent == Some(sv.pid)
                        && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                            .is_ok_and(|c| c.starts_with("sleep"))
                });
            (!sleeping).then_some(())
        })
        .is_some(),
        "the silent check's process is still there"
    );
    assert_eq!(fd_count(&sv), fds_before, "fds after failed upgrades");
    // A good binary at the path upgrades as usual.
    bin.restore();
    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(0), "{text}");
    load.finish_clean("failed upgrades", 50);
}

#[test]
fn a_missing_binary_is_named() {
    let bin = Binary::new("upgrade-missing");
    let sv = bin.start(&[], &[]);
    std::fs::remove_file(&bin.path).unwrap();
    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&bin.path.display().to_string()) && text.contains("No such file"),
        "{text}"
    );
    assert!(Path::new(&sv.control).exists());
    assert_eq!(sv.status().supervisor.upgrades, 0);
}

#[test]
fn a_starting_generation_and_its_waiting_reload_request_cross_the_upgrade() {
    let bin = Binary::new("upgrade-starting");
    // Ready 2s after the spawn (the server never says READY=1).
    let sv = bin.start(&["--ready", "delay:2s"], &["--never-ready"]);
    let control = sv.control.to_string_lossy().into_owned();
    // A reload request that waits for its outcome across the upgrade.
    let waiting = std::thread::spawn(move || ctl(&["reload", "--control", &control]));
    let starting = sv.wait_state(2, "starting", WAIT);
    let spawned = Instant::now() - Duration::from_millis(starting.state_ms);
    let g2 = starting.pid.expect("a starting generation has a pid");
    // Upgrade a second into its start.
    sv.wait_status("generation 2 starting for 1s", WAIT, |s| {
        s.generation(2)
            .filter(|g| g.state == "starting" && g.state_ms >= 1000)
            .map(|_| ())
    });
    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(0), "{text}");
    let active = sv.wait_state(2, "active", WAIT);
    assert_eq!(active.pid, Some(g2));
    let took = spawned.elapsed() - Duration::from_millis(active.state_ms);
    assert!(
        took < Duration::from_millis(2600),
        "generation 2 was ready {took:?} after its spawn: its ready delay (2s) did not carry over"
    );
    let answer = waiting.join().unwrap();
    assert_eq!(answer.code, Some(0), "the waiting reload: {answer:?}");
    assert!(
        answer.stdout.starts_with("generation 2 "),
        "the waiting reload: {answer:?}"
    );
}

/// A release that passes the check, then cannot be executed: the exec in
/// place fails after the state was written and its fds made inheritable.
const UNEXECUTABLE_RELEASE: &str = "#!/bin/sh\nchmod 644 '@BIN@'\necho 'ok 9.9.9'\n";

/// The fds of `pid` above 2 whose close-on-exec flag is clear, with what
/// they are.
fn inheritable_fds(pid: i32) -> Vec<(i32, String)> {
    fds(pid)
        .into_iter()
        .filter(|(fd, _)| *fd > 2)
        .filter(|(fd, _)| {
            // Gone meanwhile (a control connection closing): not ours.
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).is_ok_and(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())
                    .is_some_and(|flags| flags & i64::from(libc::O_CLOEXEC) == 0)
            })
        })
        .collect()
}

#[test]
fn an_exec_that_fails_after_the_check_leaves_every_fd_close_on_exec() {
    let bin = Binary::new("upgrade-noexec");
    let sv = bin.start(&[], &[]);
    let child = sv.pid_of(1);
    let fds_before = fd_count(&sv);
    // (What it inherited from the test, if anything, stays as it came.)
    let inherited = inheritable_fds(sv.pid);
    bin.replace_with(
        UNEXECUTABLE_RELEASE
            .replace("@BIN@", bin.path.to_str().unwrap())
            .as_bytes(),
        0o755,
    );
    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(1), "{text}\n{}", sv.output());
    assert!(
        text.contains("execve") && text.contains("EACCES") && text.ends_with("carries on"),
        "{text}"
    );
    // Every fd the state named has its close-on-exec flag back: none would
    // leak into a process the supervisor starts.
    assert_eq!(fd_count(&sv), fds_before);
    assert_eq!(inheritable_fds(sv.pid), inherited, "after the failed exec");
    assert_eq!(sv.status().supervisor.upgrades, 0);
    assert_eq!(sv.pid_of(1), child);
    bin.restore();
    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(0), "{text}");
}

/// A stand-in for a new release that passes the check but refuses the
/// state once executed in place: it hands the real binary a copy of the
/// state marked with a version from the future, and in place of the old
/// binary's fd, a script that puts the true state back before it runs the
/// real binary (as the old image, which must then carry on).
const REFUSING_RELEASE: &str = r#"#!/usr/bin/env python3
import json, os, sys
REAL = "@REAL@"
if os.environ.get("SUPERVISOR_UPGRADE_CHECK"):
    os.execv(REAL, sys.argv)
state = int(os.environ["SUPERVISOR_UPGRADE_STATE"])
text = os.pread(state, 1 << 26, 0)
doc = json.loads(text)
doc["version"] = 99
future = os.memfd_create("future", 0)
os.write(future, json.dumps(doc).encode())
os.close(int(os.environ["SUPERVISOR_UPGRADE_OLD_EXE"]))
fixer = os.open("@FIXER@", os.O_RDONLY)
os.set_inheritable(fixer, True)
env = dict(os.environ)
env["SUPERVISOR_UPGRADE_STATE"] = str(future)
env["SUPERVISOR_UPGRADE_OLD_EXE"] = str(fixer)
env["SUPERVISOR_TRUE_STATE"] = str(state)
os.execve(REAL, sys.argv, env)
"#;

const FIXER: &str = r#"#!/usr/bin/env python3
import os, sys
os.close(int(os.environ["SUPERVISOR_UPGRADE_STATE"]))
env = dict(os.environ)
env["SUPERVISOR_UPGRADE_STATE"] = env.pop("SUPERVISOR_TRUE_STATE")
os.execve("@REAL@", ["@BIN@"] + sys.argv[1:], env)
"#;

#[test]
fn a_new_image_that_refuses_the_state_goes_back_to_the_old_one() {
    let bin = Binary::new("upgrade-refuse");
    let sv = bin.start(&[], &[]);
    let addr = sv.listener_addr(0);
    let child = sv.pid_of(1);
    let fds_before = fd_count(&sv);
    let load = Load::start(addr, 2, Duration::from_secs(60));
    let real = bin.dir.path("real-supervisor");
    copy_outside(Path::new(supervisor_bin()), &real);
    let fixer = bin.dir.path("fixer");
    let fill = |t: &str| {
        t.replace("@REAL@", real.to_str().unwrap())
            .replace("@FIXER@", fixer.to_str().unwrap())
            .replace("@BIN@", bin.path.to_str().unwrap())
    };
    write_outside(&fixer, fill(FIXER).as_bytes());
    std::fs::set_permissions(&fixer, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin.replace_with(fill(REFUSING_RELEASE).as_bytes(), 0o755);

    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(1), "{text}\n{}", sv.output());
    assert!(
        text.contains("the new image refused the state")
            && text.contains("version 99")
            && text.ends_with("carries on"),
        "{text}"
    );
    let status = sv.status();
    assert_eq!(status.supervisor.pid, sv.pid as u32);
    assert_eq!(status.supervisor.upgrades, 0);
    assert_eq!(sv.pid_of(1), child);
    load.expect_served(1, 20, "after the refused upgrade");
    assert_eq!(fd_count(&sv), fds_before, "fds after the refused upgrade");
    // Everything it carried back still works: a reload, then an upgrade.
    let reload = sv.reload_and_wait();
    assert_eq!(reload.code, Some(0), "{reload:?}");
    bin.restore();
    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(0), "{text}");
    load.expect_served(2, 20, "after the upgrade");
    load.finish_clean("a refused upgrade", 40);
}

#[test]
fn workers_their_restarts_and_a_canary_cross_the_upgrade() {
    let bin = Binary::new("upgrade-workers");
    let sv = bin.start(&["--workers", "2", "--ready", "notify"], &[]);
    let addr = sv.listener_addr(0);
    let load = Load::start_closing(addr, 4, Duration::from_secs(60));
    load.expect_served(1, 50, "before the canary");
    let out = sv.ctl(&["reload", "--canary", "30", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    load.expect_served(2, 20, "the canary");
    let workers = |s: &Status, g: u64| -> Vec<(u32, Option<i32>, String)> {
        s.generations
            .iter()
            .find(|e| e.generation == g)
            .map(|e| {
                e.workers
                    .iter()
                    .map(|w| (w.index, w.pid, w.state.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = sv.status();
    assert_eq!(workers(&before, 1).len(), 2);
    assert_eq!(workers(&before, 2).len(), 2);

    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(0), "{text}\n{}", sv.output());
    let after = sv.status();
    assert_eq!(after.supervisor.upgrades, 1);
    // The same worker processes, in the same states; the canary keeps its
    // share.
    for g in [1, 2] {
        assert_eq!(workers(&after, g), workers(&before, g), "generation {g}");
    }
    let canary = after
        .generations
        .iter()
        .find(|e| e.generation == 2)
        .unwrap();
    assert_eq!((canary.state.as_str(), canary.share), ("canary", Some(30)));
    load.expect_served(2, 20, "the canary after the upgrade");
    load.expect_served(1, 20, "the old generation after the upgrade");

    // The new image restarts a crashed worker alone, and promotes.
    let victim = workers(&after, 1)[1].1.unwrap();
    // SAFETY: kill(2) on a worker of our supervisor.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    sv.wait_status("worker 1 of generation 1 restarted", WAIT, |s| {
        let w = s.generations.first()?.workers.get(1)?.clone();
        (w.restarts == 1 && w.state == "ready").then_some(())
    });
    let out = sv.ctl(&["promote", "--timeout", "20s"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    sv.wait_status("generation 1 gone", WAIT, |s| {
        (s.generations.len() == 1).then_some(())
    });
    load.expect_served(2, 50, "after the promotion");
    // The killed worker may have held connections.
    let stats = load.finish();
    let failures = stats.failures.lock().unwrap().clone();
    assert!(failures.len() <= 4, "{failures:?}");
}

/// A child's channel crosses an in-place upgrade: the child, told by a
/// forwarded SIGUSR1, fetches its sockets over it before and after.
#[test]
fn a_childs_channel_crosses_the_upgrade() {
    let bin = Binary::new("upgrade-channel");
    let out = bin.dir.path("fetched.json");
    let child = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/children/channel_fetch.py");
    let mut cmd = Command::new(&bin.path);
    cmd.args(["--listen", "127.0.0.1:0", "--ready", "notify", "--"])
        .arg(python3())
        .arg(&child)
        .arg(&out);
    let sv = Supervisor::start_with(&mut cmd);
    sv.wait_active(1);
    let fetched = |n: u64| {
        wait_until(WAIT, || {
            let text = std::fs::read_to_string(&out).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["n"] == n).then_some(v)
        })
        .unwrap_or_else(|| panic!("no fetch number {n}\n{}", sv.output()))
    };
    sv.signal(libc::SIGUSR1);
    let before = fetched(1);
    assert_eq!(before["answer"], "ok 1", "{before}");
    assert_eq!(before["same"], true, "{before}");
    let (code, text) = upgrade(&sv, &[]);
    assert_eq!(code, Some(0), "{text}");
    sv.signal(libc::SIGUSR1);
    let after = fetched(2);
    assert_eq!(after["answer"], "ok 1", "{after}");
    assert_eq!(after["same"], true, "{after}");
}
