//! The integration tests: one binary, a module per file of `tests/`
//! (`autotests = false` in Cargo.toml), so that a change to the library or
//! to the harness (`common/`) compiles and links one test crate instead of
//! one per file.
//!
//! Run one area with a filter: `cargo test --test integration reload::`;
//! the tests ignored for needing a tool or root with `-- --ignored` and the
//! area's filter (`.ci/run` does).

mod common;

mod child_env;
mod children;
mod cli;
mod containers;
mod control;
mod docs;
mod drain_kit;
mod events;
mod faults;
mod fetch;
mod reload;
mod scratch;
mod steer;
mod stop;
mod systemd;
mod systemd_units;
mod takeover;
mod upgrade;
mod watch;
mod workers;

/// Every file of `tests/` is a module here: with `autotests = false`, one
/// that is not would never be built, nor its tests run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = std::fs::read_to_string(dir.join("integration.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let (Some(stem), Some("rs")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|e| e.to_str()),
        ) else {
            continue;
        };
        if stem != "integration" && !this.lines().any(|l| l == format!("mod {stem};")) {
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "not modules of tests/integration.rs, so never run: {missing:?}"
    );
}
