//! The example children of `examples/children/` under the supervisor, one
//! test each: under continuous load, several reloads with zero failed
//! requests, traffic on every new generation, and every old generation
//! drained (exit status 0) and reaped. nginx also proves that a reload reads
//! a changed configuration file.
//!
//! The tests of third-party tools (gunicorn, go, node, nginx) are
//! `#[ignore]`d, with the tool named in the reason, so that a plain
//! `cargo test` on a machine without them says so in its summary ("4
//! ignored") instead of passing them unseen. Run them with
//! `cargo test --test integration -- --ignored children::` (`.ci/run` does, after
//! installing the tools): there a missing tool is a failure that names the
//! package to install.

use super::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = WAIT;
/// Reloads per child.
const RELOADS: u64 = 5;
/// Concurrent client connections.
const CLIENTS: usize = 8;
/// Requests each new generation must answer before the next reload.
const SERVED: u64 = 50;

fn children_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/children")
}

/// The path of `tool` if it is installed (in `PATH`, or in the sbin
/// directories that a non-root `PATH` may lack).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `find_tool`, or a failure naming the package to install (these tests
/// run only when asked for, with `--ignored`).
fn tool_or_fail(test: &str, tool: &str, package: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| {
        panic!("{test}: `{tool}` is not installed: apt-get install {package} (or run without --ignored)")
    })
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Reloads `RELOADS` times under load; see `common::reload_under_load`.
fn reload_under_load(name: &str, sv: &Supervisor, before_reload: impl FnMut(u64)) {
    common::reload_under_load(name, sv, RELOADS, CLIENTS, SERVED, before_reload);
}

/// Stops the supervisor: the serving generation drains and exits 0.
fn stop(name: &str, mut sv: Supervisor) {
    assert_eq!(
        sv.terminate(),
        Some(0),
        "{name}: the last generation drains and exits 0"
    );
}

/// `-l 127.0.0.1:0 --ready MODE --drain-timeout 10s -- COMMAND`.
fn child(ready: &str, command: &[&str]) -> Supervisor {
    Supervisor::builder()
        .tcp()
        .ready(ready)
        .drain_timeout("10s")
        .command(command)
        .start()
}

/// A Rust example child, with `-l http=127.0.0.1:0 --ready notify`.
fn rust_child(name: &str) -> Supervisor {
    Supervisor::builder()
        .listen("http=127.0.0.1:0")
        .notify()
        .drain_timeout("10s")
        .command([example(name)])
        .start()
}

/// The serving generation's last `STATUS=` (from the status) becomes
/// `want`.
fn wait_child_status(sv: &Supervisor, want: &str) {
    sv.wait_status(&format!("STATUS={want}"), T, |st| {
        (st.in_state("active")?.status.as_deref() == Some(want)).then_some(())
    });
}

#[test]
fn rust_listenfd_child_reloads_under_load() {
    let sv = rust_child("listenfd_server");
    reload_under_load("listenfd", &sv, |_| {});
    stop("listenfd", sv);
}

#[test]
fn rust_sd_notify_child_reloads_under_load() {
    let sv = rust_child("sd_notify_server");
    reload_under_load("sd-notify", &sv, |_| {});
    // READY=1 and STATUS= came through the sd-notify crate.
    wait_child_status(&sv, &format!("serving generation {}", RELOADS + 1));
    stop("sd-notify", sv);
}

#[test]
fn rust_tokio_child_on_supervisor_child_module_reloads_under_load() {
    let sv = rust_child("tokio_server");
    reload_under_load("tokio", &sv, |_| {});
    wait_child_status(&sv, &format!("serving generation {}", RELOADS + 1));
    stop("tokio", sv);
}

/// The child library's front-page server (its README shows this very
/// file's code): three reloads under `Connection: close` load, every
/// request answered, each generation drained with status 0.
#[test]
fn child_library_front_page_server_reloads_under_load() {
    let sv = rust_child("hello");
    let mut old_pid = sv.wait_active(1);
    let load = Load::start_closing(sv.listener_addr(0), CLIENTS, Duration::from_secs(120));
    load.expect_served(1, SERVED, "hello: first generation");
    for g in 2..=4 {
        sv.signal(libc::SIGHUP);
        let pid = sv.wait_active(g);
        load.expect_served(g, SERVED, "hello: the new generation");
        assert!(wait_gone(old_pid, T), "generation {} was not reaped", g - 1);
        old_pid = pid;
    }
    load.finish_clean("hello", 4 * SERVED);
    stop("hello", sv);
}

#[test]
fn child_library_readme_shows_the_front_page_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../supervisor-child");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let code = std::fs::read_to_string(root.join("examples/hello.rs")).unwrap();
    let body = &code[code.find("use std::io").expect("hello.rs has its imports")..];
    assert!(
        readme.contains(&format!("```rust,no_run\n{body}```")),
        "crates/supervisor-child/README.md must show examples/hello.rs from its first `use` on"
    );
}

// The Python example child (examples/children/python/server.py) is the
// non-Rust child of tests/reload.rs, which reloads it ten times under load.

#[test]
#[ignore = "needs gunicorn (apt-get install gunicorn): cargo test --test integration -- --ignored children::"]
fn gunicorn_unmodified_reloads_under_load() {
    // A well-known server nobody here wrote: gunicorn reads LISTEN_FDS,
    // checks LISTEN_PID and sends READY=1 by itself.
    let gunicorn = tool_or_fail("gunicorn", "gunicorn", "gunicorn");
    let app = children_dir().join("gunicorn");
    let sv = child(
        "notify",
        &[
            s(&gunicorn),
            "--chdir",
            s(&app),
            "--workers",
            "2",
            "--graceful-timeout",
            "10",
            "app:app",
        ],
    );
    reload_under_load("gunicorn", &sv, |_| {});
    // Its own STATUS=, as the status shows it for the serving generation.
    sv.wait_status("gunicorn's STATUS=", T, |st| {
        (st.in_state("active")?.status.as_deref() == Some("Gunicorn arbiter booted")).then_some(())
    });
    stop("gunicorn", sv);
}

#[test]
#[ignore = "needs go (apt-get install golang-go): cargo test --test integration -- --ignored children::"]
fn go_child_reloads_under_load() {
    let go = tool_or_fail("go", "go", "golang-go");
    let dir = TempDir::new("go");
    let bin = dir.path("go-child");
    // The build cache outlives the test, so only the first run compiles.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let out = Command::new(&go)
        .args(["build", "-o", s(&bin), "."])
        .current_dir(children_dir().join("go"))
        .env("GOCACHE", &cache)
        .env("GOPROXY", "off")
        .stdin(Stdio::null())
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let sv = child("notify", &[s(&bin)]);
    reload_under_load("go", &sv, |_| {});
    stop("go", sv);
}

#[test]
#[ignore = "needs nodejs (apt-get install nodejs): cargo test --test integration -- --ignored children::"]
fn node_child_reloads_under_load() {
    let node = tool_or_fail("node", "node", "nodejs");
    let script = children_dir().join("node/server.js");
    // Node cannot send READY=1 (no Unix datagram sockets).
    let sv = child("delay:300ms", &[s(&node), s(&script)]);
    reload_under_load("node", &sv, |_| {});
    stop("node", sv);
}

/// The nginx example configuration with its placeholders filled in.
fn write_nginx_conf(dir: &TempDir, listen: &str, generation: u64) {
    let template = std::fs::read_to_string(children_dir().join("nginx/nginx.conf")).unwrap();
    assert!(template.contains("@LISTEN@") && template.contains("@BODY@"));
    let conf = template
        .replace("@LISTEN@", listen)
        .replace("@BODY@", &format!("generation {generation}"));
    // Written whole and renamed, so a starting nginx never reads half a file.
    let tmp = dir.path("nginx.conf.new");
    std::fs::write(&tmp, conf).unwrap();
    std::fs::rename(&tmp, dir.path("nginx.conf")).unwrap();
}

#[test]
#[ignore = "needs nginx (apt-get install nginx): cargo test --test integration -- --ignored children::"]
fn nginx_reloads_a_changed_configuration_under_load() {
    let nginx = tool_or_fail("nginx", "nginx", "nginx");
    let dir = TempDir::new("nginx");
    let prefix = format!("{}/", s(&dir.0));
    // nginx takes an inherited socket only for a `listen` of the same
    // address and port, so the configuration needs the port before the
    // supervisor binds it: take a free one, and try again in the unlikely
    // case that someone else takes it in between.
    let mut started = None;
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        write_nginx_conf(&dir, &listen, 1);
        let mut sv = Supervisor::builder()
            .listen(&listen)
            .args(["--compat", "nginx", "--stop-signal", "QUIT"])
            // nginx does not speak sd_notify.
            .ready("delay:500ms")
            .drain_timeout("10s")
            .command([s(&nginx), "-e", "stderr", "-p", &prefix, "-c", "nginx.conf"])
            .start();
        if sv.wait_up() {
            started = Some((sv, listen));
            break;
        }
        // It exited: a failed bind says why in its one error line.
        sv.wait_exit(T);
        assert!(
            sv.has_line("Address already in use"),
            "the supervisor neither bound {listen} nor failed to: {}",
            sv.output()
        );
    }
    let (sv, listen) = started.expect("no free port in three tries");
    // Each reload starts a new nginx on a new file: its body names the
    // generation, so traffic on generation g is traffic on file g.
    reload_under_load("nginx", &sv, |g| write_nginx_conf(&dir, &listen, g));
    stop("nginx", sv);
}
