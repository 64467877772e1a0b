//! Bad input: a one-line error on stderr naming the problem, a non-zero
//! exit, nothing left running or bound.

use super::common;

use std::process::{Command, Output};

use common::*;

fn run(args: &[&str]) -> Output {
    // Its own runtime directory: a supervisor that gets as far as its
    // control socket must not meet another test's.
    let runtime = TempDir::new("cli");
    Command::new(supervisor_bin())
        .args(args)
        .env("RUNTIME_DIRECTORY", &runtime.0)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run supervisor")
}

/// Exit code and the single stderr line.
fn fails(args: &[&str]) -> (i32, String) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "want one stderr line for {args:?}, got:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout for {args:?}: {:?}",
        out.stdout
    );
    (out.status.code().expect("exit code"), lines[0].to_string())
}

#[test]
fn unparsable_listen_address() {
    let (code, line) = fails(&["-l", "nonsense", "--", "true"]);
    assert_eq!(code, 2);
    assert!(line.starts_with("supervisor: error: "), "{line}");
    assert!(line.contains("invalid address 'nonsense'"), "{line}");
    let (code, line) = fails(&["-l", "127.0.0.1:99999", "--", "true"]);
    assert_eq!(code, 2);
    assert!(line.contains("port '99999'"), "{line}");
}

#[test]
fn bad_durations_signals_and_modes() {
    for (args, want) in [
        (vec!["--drain-timeout", "30", "--", "true"], "no unit"),
        (
            vec!["--stop-signal", "FOO", "--", "true"],
            "'FOO' is not a signal name",
        ),
        (
            vec!["--ready", "soon", "--", "true"],
            "'soon' is not a ready mode",
        ),
        (vec!["--restart", "sometimes", "--", "true"], "sometimes"),
        (vec!["--bogus-flag", "--", "true"], "--bogus-flag"),
        (
            vec!["--drain-timeout", "-1s", "--", "true"],
            "'-1s' is negative",
        ),
        (
            vec!["--handoff", "sideways", "--", "true"],
            "invalid value 'sideways' for '--handoff",
        ),
        (
            vec!["--ready", "http:health", "--", "true"],
            "the path must start with '/'",
        ),
        (
            vec!["--quiesce", "fast", "--", "true"],
            "'fast' is not a duration",
        ),
    ] {
        let (code, line) = fails(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(line.contains(want), "{args:?}: {line}");
    }
}

#[test]
fn port_in_use_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("inuse");
    let sock = dir.path("first.sock");
    let sock_arg = format!("unix:{}", sock.display());
    let (code, line) = fails(&["-l", &sock_arg, "-l", &addr, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(
        line.contains(&format!("bind {addr}")) && line.contains("Address already in use"),
        "{line}"
    );
    // The listener bound before the failure was closed and its file removed.
    assert!(
        !sock.exists(),
        "socket file left behind after a failed start"
    );
}

#[test]
fn missing_command() {
    let (code, line) = fails(&["-l", "127.0.0.1:0", "--", "/nonexistent/server"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("command not found: /nonexistent/server"),
        "{line}"
    );
    let (code, line) = fails(&["--", "no-such-server-binary"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("command not found: no-such-server-binary"),
        "{line}"
    );
}

#[test]
fn no_command() {
    let (code, line) = fails(&["-l", "127.0.0.1:0"]);
    assert_eq!(code, 2);
    assert!(line.contains("no command given"), "{line}");
}

#[test]
fn unix_socket_of_a_live_process_is_refused_a_stale_one_replaced() {
    let dir = TempDir::new("unix");
    let path = dir.path("live.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let arg = format!("unix:{}", path.display());
    let (code, line) = fails(&["-l", &arg, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(line.contains("is in use by a running process"), "{line}");
    assert!(path.exists(), "the live socket's file was removed");
    drop(live); // Now the file is stale: nobody accepts on it.
    // Once no process holds the socket: a process another test forks holds
    // a copy of every fd of this one until it execs (the socket is
    // close-on-exec), and a socket held there still takes connections.
    let stale = wait_until(WAIT, || {
        std::os::unix::net::UnixStream::connect(&path)
            .is_err()
            .then_some(())
    });
    assert!(
        stale.is_some(),
        "{} still takes connections",
        path.display()
    );
    let mut sv = Supervisor::builder()
        .listen(&arg)
        .ready("delay:10ms")
        .sleeper()
        .start();
    sv.wait_active(1);
    assert_eq!(sv.listener_address(0), arg);
    assert!(sv.has_line("removing stale socket file"));
    std::os::unix::net::UnixStream::connect(&path).expect("connect to the new socket");
    assert_eq!(sv.terminate(), Some(0));
    assert!(!path.exists());

    let plain = dir.path("plain");
    std::fs::write(&plain, "x").unwrap();
    let (code, line) = fails(&["-l", &format!("unix:{}", plain.display()), "--", "true"]);
    assert_eq!(code, 1);
    assert!(line.contains("exists and is not a socket"), "{line}");
}

#[test]
fn live_unix_socket_with_a_full_accept_queue_is_refused_without_hanging() {
    let dir = TempDir::new("full");
    let path = dir.path("busy.sock");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Fill its accept queue: non-blocking connects until EAGAIN.
    let mut held = Vec::new();
    for _ in 0..10_000 {
        // SAFETY: plain socket(2); the fd is owned by the OwnedFd below.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(fd >= 0);
        // SAFETY: fd was just created and is owned by nothing else.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in sa.sun_path.iter_mut().zip(path.to_str().unwrap().bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: connect(2) with a valid, initialised sockaddr_un.
        let r = unsafe {
            libc::connect(
                fd,
                (&sa as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            )
        };
        held.push(owned);
        if r != 0 {
            break;
        }
    }
    let arg = format!("unix:{}", path.display());
    let mut sv = Supervisor::builder().listen(&arg).sleeper().start();
    let code = sv.wait_exit(WAIT).code();
    assert_eq!(code, Some(1), "{}", sv.output());
    assert!(
        sv.has_line("is in use by a running process"),
        "{}",
        sv.output()
    );
    drop(held);
    drop(live);
}

#[test]
fn two_supervisors_never_share_a_unix_socket_path() {
    let dir = TempDir::new("two");
    let path = dir.path("app.sock");
    let arg = format!("unix:{}", path.display());
    let mut first = Supervisor::builder()
        .listen(&arg)
        .ready("delay:10ms")
        .sleeper()
        .start();
    first.wait_active(1);
    let (code, line) = fails(&["-l", &arg, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(line.contains("in use by another supervisor"), "{line}");
    assert!(path.exists());
    first.terminate();
    assert!(!path.exists());
}

#[test]
fn udp_port_in_use_is_an_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = format!("udp:{}", taken.local_addr().unwrap());
    let (code, line) = fails(&["-l", &addr, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(line.contains("Address already in use"), "{line}");
}

#[test]
fn out_of_range_durations_are_usage_errors() {
    let (code, line) = fails(&["--drain-timeout", "2600000000000000h", "--", "true"]);
    assert_eq!(code, 2);
    assert!(line.contains("out of range"), "{line}");
}

#[test]
fn a_command_that_cannot_be_executed_stops_at_once_with_127() {
    let dir = TempDir::new("noexec");
    let script = dir.path("no-shebang");
    std::fs::write(&script, "echo hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut sv = Supervisor::builder()
        .restart("always")
        .command([&script])
        .start();
    assert_eq!(sv.wait_exit(WAIT).code(), Some(127));
    assert!(sv.has_line("Exec format error"), "{}", sv.output());
}

#[test]
fn many_listeners_fit_within_a_tight_fd_limit() {
    // 300 listeners under a 400-fd limit: placing them at 3.. in the child
    // must not need a second copy of each.
    let mut sv = Supervisor::builder()
        .launcher(["sh", "-c", "ulimit -n 400 && exec \"$0\" \"$@\""])
        .args(std::iter::repeat_n(["-l", "127.0.0.1:0"], 300).flatten())
        .ready("delay:10ms")
        .sleeper()
        .start();
    let pid = sv.wait_active(1);
    assert_eq!(sv.status().listeners.len(), 300);
    let fds = fds(pid);
    // 0-2, the 300 listeners, and the child's channel right after them.
    assert_eq!(fds.len(), 304, "child fds: {}", fds.len());
    assert!((3..304).all(|n| fds.get(&n).is_some_and(|t| t.starts_with("socket:"))));
    assert_eq!(environ(pid)["SUPERVISOR_CHANNEL_FD"], "303");
    assert_eq!(sv.terminate(), Some(0));
}

#[test]
fn bad_compat_lists_and_unnameable_listeners() {
    let (code, line) = fails(&["--compat", "apache", "--", "true"]);
    assert_eq!(code, 2);
    assert!(line.contains("unknown launcher 'apache'"), "{line}");
    let dir = TempDir::new("compat");
    let odd = format!("unix:{}", dir.path("a=b.sock").display());
    let (code, line) = fails(&[
        "-l",
        &odd,
        "--compat",
        "server-starter",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(code, 1);
    assert!(
        line.contains("cannot be named in SERVER_STARTER_PORT"),
        "{line}"
    );
    assert!(!dir.path("a=b.sock").exists(), "socket file left behind");
}

#[test]
fn control_commands_reject_bad_usage_in_one_line() {
    for (args, want) in [
        (vec!["reload", "--bogus"], "--bogus"),
        (vec!["reload", "--timeout", "soon"], "'soon'"),
        (vec!["status", "--timeout", "5s"], "--timeout"),
        (vec!["stop", "extra"], "extra"),
        (vec!["reload", "--ready", "notify"], "--ready"),
    ] {
        let (code, line) = fails(&args);
        assert_eq!(code, 2, "{args:?}: {line}");
        assert!(line.starts_with("supervisor: error: "), "{line}");
        assert!(line.contains(want), "{args:?}: {line}");
    }
}

#[test]
fn a_control_socket_path_that_cannot_be_bound_is_a_one_line_error() {
    let dir = TempDir::new("ctl-bad");
    let not_a_socket = dir.path("file");
    std::fs::write(&not_a_socket, "x").unwrap();
    let arg = not_a_socket.to_string_lossy().into_owned();
    let (code, line) = fails(&["--control", &arg, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(
        line.contains(&format!("control socket {arg}")) && line.contains("is not a socket"),
        "{line}"
    );
    // The file is left alone.
    assert_eq!(std::fs::read_to_string(&not_a_socket).unwrap(), "x");
    let missing = dir.path("no/such/dir/c.sock");
    let arg = missing.to_string_lossy().into_owned();
    let (code, line) = fails(&["--control", &arg, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert!(line.contains(&format!("control socket {arg}")), "{line}");
}

#[test]
fn probe_readiness_needs_steering_and_a_tcp_listener() {
    let (code, line) = fails(&[
        "--handoff",
        "shared",
        "--ready",
        "tcp",
        "-l",
        "127.0.0.1:0",
        "--",
        "true",
    ]);
    assert_eq!(code, 1);
    assert!(line.contains("--ready tcp needs --handoff steer"), "{line}");
    let dir = TempDir::new("cli-probe");
    let sock = format!("unix:{}", dir.path("app.sock").display());
    let (code, line) = fails(&["--ready", "http:/health", "-l", &sock, "--", "true"]);
    assert_eq!(code, 1);
    assert!(
        line.contains("--ready http:/health: no TCP listener can be steered"),
        "{line}"
    );
}

#[test]
fn a_control_word_after_the_options_is_a_usage_error() {
    let (code, line) = fails(&["--control", "/nonexistent/supervisor.sock", "reload"]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains("put the command first: supervisor reload --control PATH"),
        "{line}"
    );
}

/// The error lines the usage chapter (docs/usage.md) quotes are what the
/// program prints (with its address replaced by the one the test uses).
#[test]
fn the_docs_quote_the_errors_as_printed() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/usage.md"))
            .expect("docs/usage.md");
    let quoted = "supervisor: error: bind 127.0.0.1:8080: EADDRINUSE: Address already in use";
    assert!(
        readme.contains(quoted),
        "docs/usage.md no longer quotes {quoted:?}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, line) = fails(&["-l", &addr, "--", "sleep", "300"]);
    assert_eq!(code, 1);
    assert_eq!(line, quoted.replace("127.0.0.1:8080", &addr));

    let quoted = "supervisor: error: invalid value 'nonsense' for '--listen ";
    assert!(
        readme.contains(quoted),
        "docs/usage.md no longer quotes {quoted:?}"
    );
    let (code, line) = fails(&["--listen", "nonsense", "--", "true"]);
    assert_eq!(code, 2);
    assert!(line.starts_with(quoted), "{line}");
}

/// The long options a help text lists (`--name` at the start of an option
/// line).
fn long_options(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('-')
                .filter(|r| !r.starts_with('-'))
                .map_or(l, |r| r.split_once(", ").map_or(r, |(_, rest)| rest));
            let name = l.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(name.len());
            Some(format!("--{}", &name[..end]))
        })
        .collect()
}

/// `supervisor --generate man` documents every long option that
/// `--help` (and each control command's `--help`) lists, in the roff
/// form (`\-\-name`).
#[test]
fn the_man_page_has_every_option_of_the_help() {
    let man = run(&["--generate", "man"]);
    assert!(man.status.success(), "{man:?}");
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH supervisor 1"),
        "roff"
    );
    let mut checked = 0;
    for args in [
        vec!["--help"],
        vec!["reload", "--help"],
        vec!["status", "--help"],
        vec!["stop", "--help"],
        vec!["upgrade", "--help"],
        vec!["fds", "--help"],
        vec!["listen", "--help"],
    ] {
        let help = run(&args);
        assert!(help.status.success(), "{args:?}: {help:?}");
        let help = String::from_utf8(help.stdout).unwrap();
        let options = long_options(&help);
        assert!(!options.is_empty(), "{args:?}: no options found in {help}");
        for option in options {
            checked += 1;
            assert!(
                man.contains(&format!("\\fB{}", option.replace('-', "\\-"))),
                "the man page lacks {option} (from supervisor {})",
                args.join(" ")
            );
        }
    }
    assert!(checked > 40, "only {checked} options checked");
    // And the variable of every option that has one (`[env: NAME=]` in
    // --help).
    let help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    let vars: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .collect();
    assert!(vars.len() > 20, "only {} variables in --help", vars.len());
    for var in vars {
        assert!(
            var.starts_with("SUPERVISOR_OPT_"),
            "{var}: not under the prefix that children never see"
        );
        assert!(man.contains(var), "the man page lacks {var}");
    }
}

/// The completions name the options too, and `--generate` stands alone.
#[test]
fn completions_are_generated_for_three_shells() {
    for (shell, marker) in [
        ("complete-bash", "complete -F"),
        ("complete-zsh", "#compdef supervisor"),
        ("complete-fish", "complete -c supervisor"),
    ] {
        let out = run(&["--generate", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        for option in ["drain-timeout", "ready", "handoff", "workers"] {
            assert!(text.contains(option), "{shell}: no {option}");
        }
    }
    let (code, line) = fails(&["--generate", "man", "--", "true"]);
    assert_eq!(code, 2, "{line}");
    let (code, line) = fails(&["--generate", "pdf"]);
    assert_eq!(code, 2);
    assert!(line.contains("pdf"), "{line}");
}
