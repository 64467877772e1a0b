//! The static binary (`scripts/dist.sh`) in an empty root: what a container
//! runtime gives a `FROM scratch` image, and nothing more. The root holds
//! the binary, a statically linked test server, `/proc` (mounted in a new
//! pid namespace, where the supervisor is PID 1), `/dev/null` and an empty
//! writable `/tmp`: no `/etc`, no C library, no environment. There the
//! supervisor must serve, reload under load with zero failed requests,
//! answer `status`, run the server as a numeric user and group with no
//! `/etc/passwd`, and stop with status 0.
//!
//! It needs root (mounts, chroot, a new pid namespace) and the static
//! binary, so a plain `cargo test` ignores it; `.ci/run` builds the binary
//! and runs it.

use super::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The static binary: `$SUPERVISOR_STATIC_BIN`, else the one
/// `scripts/dist.sh` wrote.
fn static_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SUPERVISOR_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dist");
    std::fs::read_dir(&dist)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("-linux-static"))
        .unwrap_or_else(|| {
            panic!(
                "no static binary in {}: run scripts/dist.sh",
                dist.display()
            )
        })
}

/// The process around the empty root (`unshare`, whose child is the
/// supervisor as PID 1 of a new pid namespace), killed on drop: its death
/// kills the namespace's init, and with it every process inside.
struct Jail {
    child: Child,
    root: PathBuf,
    log: PathBuf,
}

impl Jail {
    fn control(&self) -> String {
        // The default control socket of a supervisor run as root with no
        // RUNTIME_DIRECTORY or XDG_RUNTIME_DIR: /tmp/supervisor-0.
        self.root
            .join("tmp/supervisor-0/supervisor.sock")
            .to_string_lossy()
            .into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Option<Status> {
        let out = ctl(&["status", "--json", "--control", &self.control()]);
        (out.code == Some(0)).then(|| serde_json::from_str(out.stdout.trim()).unwrap())
    }

    fn wait_status<T>(&self, what: &str, mut f: impl FnMut(&Status) -> Option<T>) -> T {
        wait_until(WAIT, || self.status().as_ref().and_then(&mut f))
            .unwrap_or_else(|| panic!("{what}: not seen within {WAIT:?}; log:\n{}", self.log()))
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root and the static binary (scripts/dist.sh): .ci/run runs it"]
fn the_static_binary_serves_reloads_and_stops_in_an_empty_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let bin = static_bin();
    let dir = TempDir::new("scratch");
    let root = dir.path("root");
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("dev/null"), b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(&bin, root.join("supervisor")).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/children/static_server.c");
    let cc = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(root.join("server"))
        .arg(&source)
        .output()
        .expect("run cc");
    assert!(cc.status.success(), "cc -static: {cc:?}");
    // Only what a FROM scratch image has.
    let mut entries: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["dev", "proc", "server", "supervisor", "tmp"]);

    let log = dir.path("log");
    let script = r#"set -e
mount -t proc proc "$1/proc"
mount --bind /dev/null "$1/dev/null"
exec env -i "$(command -v chroot)" "$1" /supervisor --listen http=127.0.0.1:0 --ready notify \
    --user 65534 --group 65534 --drain-timeout 10s -- /server"#;
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", script, "sh"])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run unshare");
    let mut jail = Jail {
        child,
        root: root.clone(),
        log,
    };

    let first = jail.wait_status("generation 1 active", |st| {
        st.in_state("active").filter(|g| g.generation == 1).cloned()
    });
    let st = jail.status().unwrap();
    assert_eq!(st.supervisor.pid, 1, "PID 1 of its namespace");
    let addr: std::net::SocketAddr = st.listeners[0].address.parse().unwrap();
    // The server runs as 65534:65534, from numbers alone (no /etc here).
    let host_pid = host_pid_of_uid(65534).expect("the server as uid 65534");
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Gid:") && l.contains("65534")),
        "{status}"
    );
    assert!(first.pid.is_some());

    let load = Load::start_closing(addr, 8, Duration::from_secs(120));
    load.expect_served(1, 50, "the first generation");
    for g in 2..=4u64 {
        let out = ctl(&["reload", "--timeout", "20s", "--control", &jail.control()]);
        assert_eq!(
            out.code,
            Some(0),
            "reload {g}: {out:?}\nlog:\n{}",
            jail.log()
        );
        load.expect_served(g, 50, "the new generation");
        jail.wait_status("one generation left", |st| {
            (st.generations.len() == 1 && st.generations[0].generation == g).then_some(())
        });
    }
    let served = load.finish_clean("empty root", 200);
    eprintln!(
        "empty root: {} requests, 0 failed, over 3 reloads",
        served.ok
    );

    let out = ctl(&["stop", "--timeout", "20s", "--control", &jail.control()]);
    assert_eq!(out.code, Some(0), "stop: {out:?}");
    let exit = wait_until(WAIT, || jail.child.try_wait().ok().flatten())
        .unwrap_or_else(|| panic!("the supervisor did not exit; log:\n{}", jail.log()));
    assert_eq!(exit.code(), Some(0), "log:\n{}", jail.log());
}

/// A process of this machine running as `uid` whose executable is a file
/// named `server`.
fn host_pid_of_uid(uid: u32) -> Option<i32> {
    wait_until(WAIT, || {
        std::fs::read_dir("/proc").ok()?.find_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let name = status
                .lines()
                .next()?
                .strip_prefix("Name:")?
                .trim()
                .to_string();
            let uid_line = status.lines().find(|l| l.starts_with("Uid:"))?;
            let real: u32 = uid_line.split_whitespace().nth(1)?.parse().ok()?;
            (name == "server" && real == uid).then_some(pid)
        })
    })
}
