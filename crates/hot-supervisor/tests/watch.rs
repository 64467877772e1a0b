//! `--watch PATH`: a reload when a watched path changes, in the ways files
//! really change, one reload per burst, under `Connection: close` load
//! with zero failed requests. How many reloads a burst gave is read from
//! the generation numbers: after a burst, one more distinct change must
//! give the generation exactly one higher.

use super::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The Python example server (READY=1 once it serves; answers `generation
/// G`), started through `sh` so that a configuration file saying `bad`
/// makes a generation fail at start.
fn start(config: &Path, watch: &[&Path], extra: &[&str]) -> Supervisor {
    let mut b = Supervisor::builder().tcp().drain_timeout("10s").args(extra);
    if !extra.contains(&"--ready") {
        b = b.notify();
    }
    if !extra.contains(&"--watch-debounce") {
        b = b.args(["--watch-debounce", "200ms"]);
    }
    for p in watch {
        b = b.arg("--watch").arg(p);
    }
    b.command(python_server_unless_bad(config)).start()
}

/// Wait until generation `g` serves, and check no later one was started.
fn expect_serving(sv: &Supervisor, g: u64, what: &str) {
    let st = sv.wait_status(what, WAIT, |st: &Status| {
        let active = st.in_state("active")?;
        (active.generation >= g && st.generations.len() == 1).then(|| st.clone())
    });
    let active = st.in_state("active").unwrap().generation;
    assert_eq!(
        active, g,
        "{what}: generation {active} serves, expected {g}: {st:?}"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A file replaced the way editors save: written beside, renamed over.
fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    write(&tmp, text);
    std::fs::rename(&tmp, path).unwrap();
}

/// A Kubernetes ConfigMap volume: `NAME -> ..data/NAME`, `..data ->
/// ..VERSION`, updated by writing a new `..VERSION` directory, pointing
/// `..data_tmp` at it, renaming that over `..data`, and removing the old
/// directory.
fn configmap_swap(dir: &Path, version: u32, text: &str) {
    let new = dir.join(format!("..v{version}"));
    std::fs::create_dir(&new).unwrap();
    write(&new.join("app.conf"), text);
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if version > 1 {
        std::fs::remove_dir_all(dir.join(format!("..v{}", version - 1))).unwrap();
    } else {
        std::os::unix::fs::symlink("..data/app.conf", dir.join("app.conf")).unwrap();
    }
}

#[test]
fn a_configmap_swap_gives_one_reload_whether_the_directory_or_the_file_is_watched() {
    let dir = TempDir::new("watch-cm");
    let mount = dir.path("config");
    std::fs::create_dir(&mount).unwrap();
    configmap_swap(&mount, 1, "v1\n");
    let file: PathBuf = mount.join("app.conf");
    let sv = start(&file, &[&mount, &file], &[]);
    sv.wait_active(1);
    let load = Load::start_closing(sv.listener_addr(0), 8, Duration::from_secs(120));
    load.expect_served(1, 50, "generation 1");
    configmap_swap(&mount, 2, "v2\n");
    expect_serving(&sv, 2, "after the first swap");
    load.expect_served(2, 50, "generation 2");
    configmap_swap(&mount, 3, "v3\n");
    expect_serving(&sv, 3, "after the second swap: one reload each");
    let st = sv.status();
    let trigger = st
        .last_watch_trigger
        .clone()
        .expect("status names the trigger");
    assert!(trigger.path.contains("config"), "{trigger:?}");
    assert_eq!(st.watch.len(), 2, "{st:?}");
    load.finish_clean("ConfigMap swaps", 100);
}

#[test]
fn fifty_writes_in_a_second_give_one_reload() {
    let dir = TempDir::new("watch-burst");
    let file = dir.path("app.conf");
    write(&file, "v0\n");
    let sv = start(&file, &[&file], &["--watch-debounce", "300ms"]);
    sv.wait_active(1);
    let load = Load::start_closing(sv.listener_addr(0), 8, Duration::from_secs(120));
    load.expect_served(1, 50, "generation 1");
    // 50 writes 20 ms apart (a pause shorter than the quiet period, so the
    // burst is one change); the pause is the scenario, not a wait.
    for i in 0..50 {
        write(&file, &format!("v{i}\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
    expect_serving(&sv, 2, "after the burst");
    write(&file, "after\n");
    expect_serving(&sv, 3, "one more change: exactly one more reload");
    load.finish_clean("a burst of writes", 100);
}

#[test]
fn an_editor_save_by_rename_gives_one_reload() {
    let dir = TempDir::new("watch-rename");
    let file = dir.path("app.conf");
    write(&file, "v1\n");
    let sv = start(&file, &[&file], &[]);
    sv.wait_active(1);
    let load = Load::start_closing(sv.listener_addr(0), 8, Duration::from_secs(120));
    load.expect_served(1, 50, "generation 1");
    rename_over(&file, "v2\n");
    expect_serving(&sv, 2, "after the rename");
    // The watch follows the new inode: a change in place counts too.
    write(&file, "v3\n");
    expect_serving(&sv, 3, "a change of the renamed-in file");
    load.finish_clean("editor saves", 100);
}

#[test]
fn a_change_during_a_slow_reload_gives_exactly_one_more() {
    let dir = TempDir::new("watch-slow");
    let file = dir.path("app.conf");
    write(&file, "v1\n");
    // Ready by a timer of 1.5 s: each reload is slow.
    let sv = start(&file, &[&file], &["--ready", "delay:1500ms"]);
    sv.wait_active(1);
    let load = Load::start_closing(sv.listener_addr(0), 8, Duration::from_secs(120));
    load.expect_served(1, 50, "generation 1");
    write(&file, "v2\n");
    sv.wait_state(2, "starting", WAIT);
    write(&file, "v3\n");
    rename_over(&file, "v4\n");
    expect_serving(&sv, 3, "one more reload after the slow one");
    write(&file, "v5\n");
    expect_serving(&sv, 4, "and nothing more queued");
    load.finish_clean("a change during a slow reload", 100);
}

#[test]
fn a_failing_new_configuration_keeps_the_old_generation_and_is_not_retried() {
    let dir = TempDir::new("watch-bad");
    let file = dir.path("app.conf");
    write(&file, "good\n");
    let sv = start(&file, &[&file], &[]);
    sv.wait_active(1);
    let load = Load::start_closing(sv.listener_addr(0), 8, Duration::from_secs(120));
    load.expect_served(1, 50, "generation 1");
    write(&file, "bad\n");
    let st = sv.wait_status("the failed reload", WAIT, |st: &Status| {
        (st.reloads.failed == 1 && st.generations.len() == 1).then(|| st.clone())
    });
    assert_eq!(st.in_state("active").unwrap().generation, 1, "{st:?}");
    load.expect_served(1, 50, "generation 1 after the failed reload");
    // Fixed: the next reload is generation 3, so generation 2 (bad) was
    // not tried again meanwhile.
    write(&file, "good again\n");
    expect_serving(&sv, 3, "the fixed configuration");
    assert_eq!(sv.status().reloads.failed, 1);
    load.finish_clean("a failing configuration", 100);
}
