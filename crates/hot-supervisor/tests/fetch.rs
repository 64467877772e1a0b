//! Listeners over the control socket (`SCM_RIGHTS`): `fds` and `supervisor
//! fds`, listeners opened at run time (`listen`, `supervisor listen`), the
//! README's Python client, and what fetching leaves behind.

use super::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use supervisor_child::{fetch_listeners, open_listener};

const T: Duration = Duration::from_secs(20);

/// A child that serves every TCP listener it got: each connection is
/// answered `GENERATION PID\n` and closed; READY=1 once listening; exits 0
/// on SIGTERM.
const SERVE_ALL: &str = r#"
import os, select, signal, socket, sys
gen = os.environ["SUPERVISOR_GENERATION"]
socks = []
for i in range(int(os.environ.get("LISTEN_FDS", "0"))):
    s = socket.socket(fileno=3 + i)
    if s.type == socket.SOCK_STREAM:
        s.setblocking(False)
        socks.append(s)
    else:
        s.detach()
r, w = os.pipe()
signal.signal(signal.SIGTERM, lambda *a: os.write(w, b"x"))
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    ready, _, _ = select.select(socks + [r], [], [])
    if r in ready:
        sys.exit(0)
    for s in ready:
        try:
            c, _ = s.accept()
        except OSError:
            continue
        c.setblocking(True)
        c.sendall(f"{gen} {os.getpid()}\n".encode())
        c.close()
"#;

fn python_child(dir: &TempDir) -> String {
    let path = dir.path("serve_all.py");
    std::fs::write(&path, SERVE_ALL).unwrap();
    path.to_str().unwrap().to_string()
}

/// Connect and read the one line a SERVE_ALL child answers: (generation,
/// pid).
fn ask(addr: SocketAddr) -> (u64, i32) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    let mut words = text.split_whitespace();
    let g = words.next().and_then(|w| w.parse().ok());
    let p = words.next().and_then(|w| w.parse().ok());
    match (g, p) {
        (Some(g), Some(p)) => (g, p),
        _ => panic!("{addr} answered {text:?}"),
    }
}

fn inode(fd: impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd).unwrap().st_ino
}

/// The socket inodes process `pid` holds, by fd.
fn socket_inodes(pid: i32) -> Vec<(i32, u64)> {
    fds(pid)
        .into_iter()
        .filter_map(|(fd, target)| {
            let ino = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some((fd, ino.parse().ok()?))
        })
        .collect()
}

fn local_addr(fd: impl AsFd) -> String {
    use nix::sys::socket::{SockaddrLike, SockaddrStorage, getsockname};
    let a: SockaddrStorage = getsockname(fd.as_fd().as_raw_fd()).unwrap();
    if let Some(a) = a.as_sockaddr_in() {
        return SocketAddr::from(*a).to_string();
    }
    if let Some(a) = a.as_sockaddr_in6() {
        return SocketAddr::from(*a).to_string();
    }
    let u = a.as_unix_addr().unwrap();
    match (u.path(), u.as_abstract()) {
        (Some(p), _) => p.display().to_string(),
        (_, Some(n)) => format!("@{}", String::from_utf8_lossy(n)),
        _ => format!("unnamed ({} bytes)", a.len()),
    }
}

/// Raise this process's soft fd limit to at least `need` (children, the
/// supervisor among them, inherit it): up to the hard limit, and the hard
/// limit too where the process may (root). Fails, saying how to fix it,
/// where the machine's hard limit is lower: Linux's default is far above
/// what these tests need.
fn raise_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one live rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_max < need {
            // Only a privileged process may raise its hard limit.
            let more = libc::rlimit {
                rlim_cur: need,
                rlim_max: need,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &more);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        if lim.rlim_cur < need {
            lim.rlim_cur = lim.rlim_max.min(need.max(lim.rlim_cur));
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    assert!(
        lim.rlim_cur >= need,
        "this test needs {need} open files, and the hard limit here is {}: raise it (`ulimit -Hn {need}` as root, or LimitNOFILE=) or run the tests as root",
        lim.rlim_max
    );
}

/// The received fds are the supervisor's sockets (the same inodes the
/// serving generation holds at fds 3..., the same local addresses), with
/// their names and kinds, in fd order or in the order asked for.
#[test]
fn fetched_sockets_are_the_supervisors_own_in_order() {
    let dir = TempDir::new("fetch-same");
    let unix = dir.path("u s.sock");
    let sv = Supervisor::builder()
        .listen("web=127.0.0.1:0")
        .listen("dns=udp:127.0.0.1:0")
        .listen(&format!("app=unix:{}", unix.display()))
        .listen(&format!("abs=unix:@sv-fetch-test-{}", std::process::id()))
        .ready("delay:10ms")
        .sleeper()
        .start();
    let child = sv.wait_active(1);
    let st = sv.status();
    let got = fetch_listeners(&sv.control, &[]).expect("fetch");
    let described: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str(), f.address.as_str()))
        .collect();
    let web = st.listeners[0].address.clone();
    let dns = st.listeners[1]
        .address
        .strip_prefix("udp:")
        .unwrap()
        .to_string();
    let app = unix.display().to_string();
    let abs = format!("@sv-fetch-test-{}", std::process::id());
    assert_eq!(
        described,
        [
            ("web", "tcp", web.as_str()),
            ("dns", "udp", dns.as_str()),
            ("app", "unix", app.as_str()),
            ("abs", "unix", abs.as_str()),
        ]
    );
    // The generation (steer mode: the routed members) holds the same
    // sockets at fds 3, 4, 5, 6.
    let held = socket_inodes(child);
    for (k, f) in got.iter().enumerate() {
        let fd = 3 + k as i32;
        let theirs = held.iter().find(|(n, _)| *n == fd).map(|(_, i)| *i);
        assert_eq!(Some(inode(&f.fd)), theirs, "fd {fd} ({})", f.name);
        assert_eq!(local_addr(&f.fd), f.address, "{}", f.name);
        // Close-on-exec, as MSG_CMSG_CLOEXEC asks.
        let flags = nix::fcntl::fcntl(&f.fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "{}", f.name);
    }
    // Some, in the order asked.
    let some = fetch_listeners(&sv.control, &["app", "web"]).unwrap();
    let names: Vec<&str> = some.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["app", "web"]);
    assert_eq!(inode(&some[1].fd), inode(&got[0].fd));
    // An unknown name is refused, naming it.
    let e = fetch_listeners(&sv.control, &["web", "nope"]).unwrap_err();
    assert!(e.to_string().contains("no listener named \"nope\""), "{e}");
    // The fetched TCP socket is a working listener: a connection to the
    // address lands in it (the generation is `sleep`, which accepts
    // nothing).
    let listener = std::net::TcpListener::from(got[0].fd.try_clone().unwrap());
    let mut c = TcpStream::connect(&web).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

/// 1,000 listeners in one fetch: four batches, every name and socket in
/// order.
#[test]
fn a_thousand_listeners_in_one_fetch() {
    // 1,000 listeners need about 2,600 fds.
    raise_fd_limit(2600);
    let mut b = Supervisor::builder().ready("delay:10ms");
    for i in 0..1000 {
        b = b.listen(&format!("l{i}=127.0.0.1:0"));
    }
    let sv = b.sleeper().start();
    sv.wait_active(1);
    let st = sv.status();
    let got = fetch_listeners(&sv.control, &[]).expect("fetch 1,000");
    assert_eq!(got.len(), 1000);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.name, format!("l{i}"));
        assert_eq!(f.address, st.listeners[i].address);
        assert_eq!(local_addr(&f.fd), f.address);
    }
    let inodes: BTreeSet<u64> = got.iter().map(|f| inode(&f.fd)).collect();
    assert_eq!(inodes.len(), 1000, "1,000 distinct sockets");
    // And a few of them by name, out of order.
    let some = fetch_listeners(&sv.control, &["l999", "l0", "l500"]).unwrap();
    assert_eq!(inode(&some[0].fd), inode(&got[999].fd));
    assert_eq!(inode(&some[1].fd), inode(&got[0].fd));
    assert_eq!(inode(&some[2].fd), inode(&got[500].fd));
}

/// A peer of another uid is refused: a helper that setuid's to 65534 and
/// asks for the listeners gets `error permission denied` and no fd.
#[test]
#[ignore = "needs root: a helper of another user"]
fn a_peer_of_another_uid_is_refused() {
    require_root("a_peer_of_another_uid_is_refused");
    let dir = TempDir::new("fetch-uid");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = dir.path("c.sock");
    let sv = Supervisor::builder()
        .tcp()
        .ready("delay:10ms")
        .control(&sock)
        .sleeper()
        .start();
    sv.wait_active(1);
    // Past the kernel's 0600 check, the supervisor's own.
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let helper = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b"fds\n")
except OSError:
    pass  # refused and closed before the request: the answer is there
msg, anc, flags, _ = s.recvmsg(4096, socket.CMSG_SPACE(253 * 4))
print(msg.decode().strip(), len(anc))
"#;
    let python = python3_for_others();
    let out = Command::new(python)
        .args(["-c", helper, sock.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("error permission denied: uid 65534") && text.trim_end().ends_with(" 0"),
        "{text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sv.wait_line("refused a control connection from pid", T);
}

/// A client that leaves in the middle of a transfer leaks no fd: the
/// supervisor, holding duplicates of what it has not sent yet, closes them,
/// and the client's own copies are gone with it.
#[test]
fn a_client_that_leaves_mid_transfer_leaks_nothing() {
    // 2,000 listeners need about 5,000 fds.
    raise_fd_limit(5000);
    let sv = Supervisor::builder()
        .tcp()
        .ready("delay:10ms")
        .sleeper()
        .start();
    sv.wait_active(1);
    // 2,000 listeners with long names, opened at run time (so that no
    // generation's LISTEN_FDNAMES outgrows the kernel's limit on one
    // variable): their description lines (eight batches of about 65 kB)
    // outgrow the control socket's send buffer (about 200 kB), so the
    // supervisor must hold whole batches, mid-transfer, for the client.
    let long = "x".repeat(240);
    for i in 0..2000 {
        open_listener(&sv.control, &format!("{long}{i:04}"), "tcp:127.0.0.1:0").unwrap();
    }
    let baseline = sv.fds_without_control_connections().len();
    let ours: BTreeSet<u64> = socket_inodes(sv.pid).into_iter().map(|(_, i)| i).collect();

    let mut c = UnixStream::connect(&sv.control).unwrap();
    c.write_all(b"fds\n").unwrap();
    // The first batch only.
    let mut received: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let n = recv_batch(c.as_raw_fd(), &mut buf, &mut received);
    assert!(n > 0, "nothing received");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("ok 2001\n"));
    assert!(!received.is_empty());
    // The supervisor holds the rest for the transfer (more fds than at
    // rest)...
    let held = wait_until(T, || {
        let now = fds(sv.pid).len();
        (now > baseline + 100).then_some(now)
    });
    assert!(held.is_some(), "the supervisor is not mid-transfer");
    // ...until the client leaves.
    drop(received);
    drop(c);
    let back = wait_until(T, || {
        let open = sv.fds_without_control_connections();
        (open.len() == baseline).then_some(())
    });
    assert!(
        back.is_some(),
        "supervisor fds: {} at rest, {} after the client left",
        baseline,
        fds(sv.pid).len()
    );
    // None of the supervisor's sockets is left open in this process.
    let me = std::process::id() as i32;
    let leaked: Vec<_> = socket_inodes(me)
        .into_iter()
        .filter(|(_, i)| ours.contains(i))
        .collect();
    assert!(leaked.is_empty(), "left open here: {leaked:?}");
    // And the supervisor serves the next fetch in full.
    assert_eq!(fetch_listeners(&sv.control, &[]).unwrap().len(), 2001);
}

/// One recvmsg with room for 253 fds; the bytes read.
fn recv_batch(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> usize {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).unwrap();
    assert!(!msg.flags.contains(MsgFlags::MSG_CTRUNC));
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: SCM_RIGHTS just installed these fds in our table.
            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
        }
    }
    msg.bytes
}

/// The Python client of the control chapter (docs/control.md), run as it
/// is written there.
#[test]
fn the_docs_python_client_works_as_written() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/control.md"
    ))
    .unwrap();
    let code = readme
        .split("```python\n")
        .skip(1)
        .filter_map(|b| b.split_once("\n```").map(|(c, _)| c))
        .find(|c| c.contains("def fetch(control"))
        .expect("the Python client of docs/control.md");
    let dir = TempDir::new("fetch-py");
    let script = dir.path("client.py");
    std::fs::write(&script, code).unwrap();
    let unix = dir.path("app.sock");
    let sv = Supervisor::builder()
        .listen("web=127.0.0.1:0")
        .listen("dns=udp:127.0.0.1:0")
        .listen(&format!("app=unix:{}", unix.display()))
        .ready("delay:10ms")
        .sleeper()
        .start();
    sv.wait_active(1);
    let st = sv.status();
    let run = |names: &[&str]| {
        let out = Command::new("python3")
            .arg(&script)
            .arg(&sv.control)
            .args(names)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0][..3],
        ["web", "tcp", st.listeners[0].address.as_str()]
    );
    assert_eq!(
        lines[1][..3],
        [
            "dns",
            "udp",
            st.listeners[1].address.strip_prefix("udp:").unwrap()
        ]
    );
    assert_eq!(lines[2][..3], ["app", "unix", unix.to_str().unwrap()]);
    let (code, out, _) = run(&["app"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("app unix "), "{out}");
    let (code, _, err) = run(&["nope"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no listener named \"nope\""), "{err}");
}

/// `supervisor fds -- CMD`: CMD gets the sockets at fds 3... with
/// LISTEN_FDS, LISTEN_PID (its own pid) and LISTEN_FDNAMES, and serves on
/// the supervisor's port; errors are clear.
#[test]
fn supervisor_fds_execs_a_server_on_the_same_port() {
    let dir = TempDir::new("fetch-cmd");
    let sv = Supervisor::builder()
        .listen("web=127.0.0.1:0")
        .listen("other=127.0.0.1:0")
        .ready("delay:10ms")
        .sleeper()
        .start();
    sv.wait_active(1);
    let web = sv.listener_addr(0);
    let report = dir.path("env");
    // Serves one connection on fd 3 after writing what it saw.
    let server = r#"
import os, socket, sys
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(" ".join([os.environ.get(k, "-") for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")] + [str(os.getpid())]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s = socket.socket(fileno=3)
c, _ = s.accept()
c.sendall(b"served by the fetcher\n")
c.close()
"#;
    let control = sv.control.to_str().unwrap().to_string();
    let mut fetcher = Command::new(supervisor_bin())
        .args([
            "fds",
            "--control",
            &control,
            "--name",
            "web",
            "--name",
            "other",
            "--",
        ])
        .args(["python3", "-c", server, report.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let seen =
        wait_until(T, || std::fs::read_to_string(&report).ok()).expect("the fetcher never started");
    let words: Vec<&str> = seen.split(' ').collect();
    assert_eq!(words[0], "2", "{seen}");
    assert_eq!(words[1], fetcher.id().to_string(), "LISTEN_PID: {seen}");
    assert_eq!(words[1], words[3], "LISTEN_PID is its own pid: {seen}");
    assert_eq!(words[2], "web:other", "{seen}");
    let mut c = TcpStream::connect(web).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert_eq!(text, "served by the fetcher\n");
    assert!(fetcher.wait().unwrap().success());

    // No supervisor at the path, an unknown name, no command.
    let out = ctl(&["fds", "--control", "/nonexistent/c.sock", "--", "true"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        one_line("no supervisor", &out.stderr).contains("/nonexistent/c.sock"),
        "{out:?}"
    );
    let out = ctl(&["fds", "--control", &control, "--name", "nope", "--", "true"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        one_line("unknown name", &out.stderr).contains("no listener named \"nope\""),
        "{out:?}"
    );
    let out = ctl(&["fds", "--control", &control]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        one_line("no command", &out.stderr).contains("no command given"),
        "{out:?}"
    );
    let out = ctl(&["fds", "--control", &control, "--", "/nonexistent/cmd"]);
    assert_eq!(out.code, Some(127), "{out:?}");
    assert!(
        one_line("missing command", &out.stderr).contains("/nonexistent/cmd"),
        "{out:?}"
    );
}

/// A listener opened at run time: every later generation serves it (five
/// reloads, same port), a second request returns the same socket, a
/// conflicting address is refused naming both, a port in use is refused,
/// and status lists it.
#[test]
fn a_run_time_listener_survives_five_reloads() {
    let dir = TempDir::new("fetch-listen");
    let sv = Supervisor::builder()
        .listen("web=127.0.0.1:0")
        .notify()
        .command(["python3", &python_child(&dir)])
        .start();
    sv.wait_active(1);
    let control = sv.control.to_str().unwrap().to_string();
    let out = ctl(&["listen", "--control", &control, "late=tcp:127.0.0.1:0"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let line = one_line("listen", &out.stdout).to_string();
    let address = line
        .strip_prefix("late tcp ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let late: SocketAddr = address.parse().unwrap();
    // The same name and address (port 0 matches any): the same socket.
    let a = open_listener(&sv.control, "late", "tcp:127.0.0.1:0").unwrap();
    let b = open_listener(&sv.control, "late", &format!("tcp:{address}")).unwrap();
    assert_eq!(inode(&a.fd), inode(&b.fd));
    assert_eq!(a.address, address);
    // Another address for the name: refused, saying both.
    let out = ctl(&["listen", "--control", &control, "late=tcp:127.0.0.1:1"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let err = one_line("conflict", &out.stderr);
    assert!(
        err.contains(&address) && err.contains("tcp:127.0.0.1:1"),
        "{err}"
    );
    // A port in use (the web listener's) under another name.
    let web = sv.listener_addr(0);
    let out = ctl(&["listen", "--control", &control, &format!("dup=tcp:{web}")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        one_line("in use", &out.stderr).contains("Address already in use"),
        "{out:?}"
    );
    // Listed, after the others.
    let st = sv.status();
    let listed: Vec<(&str, &str, i32)> = st
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.address.as_str(), l.fd))
        .collect();
    assert_eq!(
        listed,
        [
            ("web", web.to_string().as_str(), 3),
            ("late", address.as_str(), 4)
        ]
    );
    let first = a;
    drop(b);
    for g in 2..=6u64 {
        let answer = sv.reload_and_wait();
        assert_eq!(answer.code, Some(0), "{}", answer.line);
        let pid = sv.wait_active(g);
        // Served by the new generation, on the same port; its LISTEN_FDNAMES
        // ends with the name.
        assert_eq!(ask(late), (g, pid), "generation {g} on {late}");
        assert_eq!(ask(web), (g, pid));
        let env = environ(pid);
        assert_eq!(
            env.get("LISTEN_FDNAMES").map(String::as_str),
            Some("web:late")
        );
        assert_eq!(env.get("SUPERVISOR_CONTROL"), Some(&control));
    }
    // The socket fetched from generation 1's time (steer mode: its own
    // member) no longer listens now that generation 1 is gone: its holder
    // must fetch again.
    let gone = wait_until(T, || {
        (!nix::sys::socket::getsockopt(&first.fd, nix::sys::socket::sockopt::AcceptConn)
            .unwrap_or(true))
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "a fetched member of a gone generation still listens"
    );
    let again = fetch_listeners(&sv.control, &["late"]).unwrap();
    assert!(
        nix::sys::socket::getsockopt(&again[0].fd, nix::sys::socket::sockopt::AcceptConn).unwrap()
    );
    assert_eq!(again[0].address, address);
}

/// Run as root with `--user nobody`: a privileged port opened at run time is
/// served by the unprivileged generations after it.
#[test]
#[ignore = "needs root: --user, a port below 1024"]
fn a_privileged_port_for_an_unprivileged_child() {
    require_root("a_privileged_port_for_an_unprivileged_child");
    let dir = TempDir::new("fetch-priv");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = python_child(&dir);
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (_port_held, port) = privileged_port();
    let python = python3_for_others();
    let sv = Supervisor::builder()
        .listen("web=127.0.0.1:0")
        .notify()
        .args(["--user", "nobody"])
        .control(dir.path("c.sock"))
        .command([python.to_str().unwrap(), &script])
        .start();
    let pid1 = sv.wait_active(1);
    assert_eq!(
        status_field(pid1, "Uid").split_whitespace().next(),
        Some("65534")
    );
    let control = sv.control.to_str().unwrap().to_string();
    let out = ctl(&[
        "listen",
        "--control",
        &control,
        &format!("priv=127.0.0.1:{port}"),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let answer = sv.reload_and_wait();
    assert_eq!(answer.code, Some(0), "{}", answer.line);
    let pid2 = sv.wait_active(2);
    assert_eq!(
        status_field(pid2, "Uid").split_whitespace().next(),
        Some("65534")
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(ask(addr), (2, pid2));
}
