//! The shipped systemd units (systemd/myapp.service, systemd/myapp.socket):
//! `systemd-analyze verify` accepts them without a warning, and the service
//! keeps the directives and timeout relations the supervisor relies on.

use super::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TempDir, supervisor_bin};
use hot_supervisor::duration;

/// Where the units install the supervisor; the only text the verify test
/// changes in them.
const INSTALLED_SUPERVISOR: &str = "/usr/local/bin/supervisor";
const UNITS: [&str; 2] = ["myapp.service", "myapp.socket"];

fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd)"]
fn shipped_units_pass_systemd_analyze_verify() {
    if let Err(e) = Command::new("systemd-analyze").arg("--version").output() {
        panic!("systemd-analyze cannot be run ({e}); install systemd to check the units");
    }
    // verify insists that ExecStart= and ExecReload= name an executable, and
    // the supervisor is not installed here: point the units at the binary
    // under test, through a symlink so that its path cannot hold characters
    // that systemd would read as specifiers or separators.
    let dir = TempDir::new("units");
    let link = dir.path("supervisor");
    std::os::unix::fs::symlink(supervisor_bin(), &link).expect("symlink the supervisor binary");
    let link = link.to_str().expect("temporary path is UTF-8");
    assert!(
        link.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
        "the temporary directory {link} holds characters a unit file would misread; set TMPDIR"
    );
    let mut paths = Vec::new();
    for name in UNITS {
        let text = shipped(name);
        let rewritten = text.replace(INSTALLED_SUPERVISOR, link);
        if name.ends_with(".service") {
            assert!(
                text.matches(INSTALLED_SUPERVISOR).count() >= 2,
                "{name} no longer runs {INSTALLED_SUPERVISOR} in ExecStart= and ExecReload=; update this test"
            );
        }
        let path = dir.path(name);
        std::fs::write(&path, rewritten).unwrap();
        paths.push(path);
    }

    // With --recursive-errors=no the status covers the given units only (a
    // broken unrelated unit on the host cannot fail the test), and systemd
    // 252 then also fails on warnings such as an unknown key, which the
    // default mode lets pass with status 0. The output is checked too.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no"])
        .args(&paths)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_ours: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains(dir.0.to_str().unwrap()) || UNITS.iter().any(|u| l.contains(u)))
        .collect();
    let report = format!(
        "systemd-analyze verify --recursive-errors=no {}\nstatus: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        out.status
    );
    assert!(
        out.status.success() && about_ours.is_empty(),
        "the units do not verify cleanly:\n{report}"
    );
    if !stdout.trim().is_empty() || !stderr.trim().is_empty() {
        // Messages about the host's own units: shown, not failed on.
        eprintln!("{report}");
    }
}

#[test]
fn service_unit_keeps_the_directives_the_supervisor_relies_on() {
    let unit = Unit::parse(&shipped("myapp.service"));
    let socket = Unit::parse(&shipped("myapp.socket"));

    assert_eq!(unit.only("Service", "Type"), "notify");
    assert_eq!(unit.only("Service", "KillMode"), "mixed");
    assert_eq!(unit.only("Service", "NotifyAccess"), "main");
    assert!(!unit.only("Service", "RuntimeDirectory").is_empty());

    let start = unit.command("ExecStart");
    assert!(start[0].ends_with("/supervisor"), "ExecStart={start:?}");
    let server_args = start.iter().position(|a| a == "--").map_or(0, |i| i + 1);
    assert!(server_args > 0, "ExecStart= has no `-- CMD`: {start:?}");
    let own = &start[..server_args];
    assert_eq!(
        option(own, "--ready"),
        Some("notify"),
        "ExecStart={start:?}"
    );

    let reload = unit.command("ExecReload");
    assert!(
        reload[0].ends_with("/supervisor") && reload.get(1).map(String::as_str) == Some("reload"),
        "ExecReload= is not `supervisor reload`: {reload:?}"
    );

    // Stop: systemd must not SIGKILL the unit while the supervisor is still
    // within the drain it was given.
    let drain = supervisor_duration(
        option(own, "--drain-timeout").expect("ExecStart= sets --drain-timeout"),
    );
    let stop = systemd_timespan(unit.only("Service", "TimeoutStopSec"));
    assert!(
        stop > drain,
        "TimeoutStopSec= ({stop:?}) must exceed --drain-timeout ({drain:?})"
    );

    // Reload: the supervisor's verdict (ready, or --ready-timeout passed)
    // must reach `supervisor reload` before its --timeout, and that before
    // systemd's TimeoutStartSec=, which also bounds ExecReload=.
    let ready = option(own, "--ready-timeout").map_or(Duration::from_secs(60), supervisor_duration);
    let reload_timeout =
        supervisor_duration(option(&reload, "--timeout").expect("ExecReload= sets --timeout"));
    let start_timeout = systemd_timespan(unit.only("Service", "TimeoutStartSec"));
    assert!(
        ready < reload_timeout && reload_timeout < start_timeout,
        "want --ready-timeout ({ready:?}) < reload --timeout ({reload_timeout:?}) < TimeoutStartSec= ({start_timeout:?})"
    );

    // The socket: the listener itself goes to the service, under a name;
    // the service refers to it by that name or not at all.
    assert_eq!(socket.only("Socket", "Accept"), "no");
    let fd_name = socket.only("Socket", "FileDescriptorName");
    for (i, arg) in own.iter().enumerate() {
        let spec = match arg.as_str() {
            "-l" | "--listen" => own.get(i + 1).map(String::as_str),
            a => a.strip_prefix("--listen="),
        };
        if let Some(spec) = spec {
            assert!(
                spec.split_once('=').map(|(n, _)| n) == Some(fd_name),
                "ExecStart= listens on {spec} besides the socket {fd_name:?} from myapp.socket"
            );
        }
    }
}

/// A unit file as (section, key, value) entries, in order.
struct Unit(Vec<(String, String, String)>);

impl Unit {
    /// Comments skipped, lines ending in `\` joined as systemd does.
    fn parse(text: &str) -> Unit {
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for line in text.lines() {
            let line = line.trim();
            if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            let line = std::mem::take(&mut pending) + line;
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
            } else if let Some((key, value)) = line.split_once('=') {
                entries.push((
                    section.clone(),
                    key.trim().to_string(),
                    value.trim().to_string(),
                ));
            }
        }
        Unit(entries)
    }

    /// The value of a key that must be set exactly once.
    fn only(&self, section: &str, key: &str) -> &str {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect();
        match values[..] {
            [v] => v,
            _ => panic!(
                "[{section}] {key}= is set {} times, not once: {values:?}",
                values.len()
            ),
        }
    }

    /// The argv of a command key in [Service], without systemd's `-@:+!`
    /// prefixes.
    fn command(&self, key: &str) -> Vec<String> {
        let mut argv: Vec<String> = self
            .only("Service", key)
            .split_whitespace()
            .map(String::from)
            .collect();
        assert!(!argv.is_empty(), "{key}= is empty");
        argv[0] = argv[0]
            .trim_start_matches(['-', '@', ':', '+', '!'])
            .to_string();
        argv
    }
}

/// The value of `--opt VALUE` or `--opt=VALUE`.
fn option<'a>(args: &'a [String], opt: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == opt {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(opt)?.strip_prefix('=')
        }
    })
}

/// A duration as the supervisor reads it (`500ms`, `30s`, `2m`, `1h`,
/// `1.5s`, `0`), through the supervisor's own parser.
fn supervisor_duration(s: &str) -> Duration {
    duration::parse(s).unwrap_or_else(|e| panic!("supervisor duration: {e}"))
}

/// A systemd time span (systemd.time(7)): `45`, `45s`, `1min 30s`,
/// `500ms`, `infinity`. A bare number is seconds.
fn systemd_timespan(s: &str) -> Duration {
    if s == "infinity" {
        return Duration::MAX;
    }
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    assert!(!rest.is_empty(), "empty time span");
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_end]
            .parse()
            .unwrap_or_else(|_| panic!("bad number in time span {s:?}"));
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "us" | "usec" | "μs" => 1e-6,
            "ms" | "msec" => 1e-3,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 7.0 * 86400.0,
            unit => panic!("unknown unit {unit:?} in time span {s:?}"),
        };
        total += Duration::from_secs_f64(value * scale);
        rest = rest[unit_end..].trim_start();
    }
    total
}

#[test]
fn duration_parsers_read_both_syntaxes() {
    assert_eq!(supervisor_duration("30s"), Duration::from_secs(30));
    assert_eq!(supervisor_duration("1.5s"), Duration::from_millis(1500));
    assert_eq!(supervisor_duration("2m"), Duration::from_secs(120));
    assert_eq!(systemd_timespan("45"), Duration::from_secs(45));
    assert_eq!(systemd_timespan("45s"), Duration::from_secs(45));
    assert_eq!(systemd_timespan("1min"), Duration::from_secs(60));
    assert_eq!(systemd_timespan("1min 30s"), Duration::from_secs(90));
    assert_eq!(systemd_timespan("2m30s"), Duration::from_secs(150));
    assert_eq!(systemd_timespan("500ms"), Duration::from_millis(500));
}
