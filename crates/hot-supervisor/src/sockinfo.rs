//! What the kernel says about sockets, asked without side effects: the
//! accept queue of a listening socket (`TCP_INFO`), a socket's inode, the
//! listening sockets of the machine (sock_diag), which processes hold a
//! socket and which process accepted a connection (sock_diag or
//! `/proc/net/tcp`, then `/proc/PID/fd`). Used by the supervisor's
//! steering (its search for strangers) and probes, and by the tests that
//! check them. Holds no state; never changes a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

/// Connections waiting in a listening TCP socket's accept queue
/// (`tcpi_unacked`, what `ss -lt` shows as Recv-Q).
///
/// # Errors
/// `TCP_INFO` failed (not a TCP socket, or not open).
pub fn tcp_queue(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    // SAFETY: tcp_info is plain old data; zeroes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `info`, which lives across
    // the call; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(u64::from(info.tcpi_unacked))
    } else {
        Err(Errno::last())
    }
}

/// [`tcp_queue`] for a TCP socket (0 if it cannot be read), or 1 if a UDP
/// socket has a datagram waiting.
pub fn queue_length(fd: BorrowedFd<'_>, stream: bool) -> u64 {
    if stream {
        tcp_queue(fd).unwrap_or(0)
    } else {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int to the pointer given.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
        u64::from(r == 0 && n > 0)
    }
}

/// Every listening TCP (or unconnected UDP) socket of `family`
/// (`AF_INET` or `AF_INET6`), as (local address, owner uid, inode), from
/// one sock_diag dump: the kernel filters by state, so thousands of
/// connections in TIME_WAIT cost nothing (`/proc/net/tcp` lists them all).
///
/// # Errors
/// The netlink socket cannot be made, or the kernel refuses the dump.
pub fn listening(family: libc::c_int, stream: bool) -> Result<Vec<(SocketAddr, u32, u64)>, Errno> {
    const TCP_LISTEN: u32 = 10;
    const TCP_CLOSE: u32 = 7;
    let states: u32 = 1 << if stream { TCP_LISTEN } else { TCP_CLOSE };
    dump(family, stream, states)
}

/// The established TCP connections of the machine (both families) whose
/// local port is one of `ports`: their inodes (0 for a connection still
/// in an accept queue is left out). One sock_diag dump per family, the
/// kernel filtering by state.
///
/// # Errors
/// The netlink socket cannot be made, or the kernel refuses the dump.
pub fn established_inodes(ports: &[u16]) -> Result<std::collections::HashSet<u64>, Errno> {
    const TCP_ESTABLISHED: u32 = 1;
    const TCP_CLOSE_WAIT: u32 = 8;
    let states = (1 << TCP_ESTABLISHED) | (1 << TCP_CLOSE_WAIT);
    let mut out = std::collections::HashSet::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        for (local, _, ino) in dump(family, true, states)? {
            if ino != 0 && ports.contains(&local.port()) {
                out.insert(ino);
            }
        }
    }
    Ok(out)
}

/// How many of the sockets `inodes` the processes `pids` hold open
/// (each socket counted once, however many fds point at it).
pub fn held_by(pids: &[i32], inodes: &std::collections::HashSet<u64>) -> u64 {
    let mut seen = std::collections::HashSet::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.filter_map(Result::ok) {
            let Ok(link) = std::fs::read_link(e.path()) else {
                continue;
            };
            let ino = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok());
            if let Some(ino) = ino.filter(|i| inodes.contains(i)) {
                seen.insert(ino);
            }
        }
    }
    seen.len() as u64
}

/// One sock_diag dump of `family`'s TCP (`stream`) or UDP sockets in
/// `states` (a bit per state): (local address, uid, inode) of each.
fn dump(
    family: libc::c_int,
    stream: bool,
    states: u32,
) -> Result<Vec<(SocketAddr, u32, u64)>, Errno> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[16] = family as u8;
    req[17] = if stream {
        libc::IPPROTO_TCP as u8
    } else {
        libc::IPPROTO_UDP as u8
    };
    req[20..24].copy_from_slice(&states.to_ne_bytes());
    let fd = diag_send(&req)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its whole length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(e);
        }
        let data = &buf[..n as usize];
        let mut off = 0;
        while off + 16 <= data.len() {
            let len =
                u32::from_ne_bytes(data[off..off + 4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap_or_default());
            if len < 16 || off + len > data.len() {
                return Ok(out);
            }
            match i32::from(ty) {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => return Err(Errno::EPROTO),
                _ => {}
            }
            // inet_diag_msg: family, state, timer, retrans, then the
            // socket id (source port first, big-endian), ..., inode at 68.
            let msg = &data[off + 16..off + len];
            // inet_diag_msg: family, state, timer, retrans (4 bytes); the
            // socket id: source port and destination port (big-endian),
            // source and destination address (16 bytes each), interface,
            // cookie (48 bytes); expires, rqueue, wqueue, uid, inode.
            if msg.len() >= 72 {
                let port = u16::from_be_bytes([msg[4], msg[5]]);
                let ip: IpAddr = if msg[0] == libc::AF_INET as u8 {
                    Ipv4Addr::new(msg[8], msg[9], msg[10], msg[11]).into()
                } else {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&msg[8..24]);
                    Ipv6Addr::from(a).into()
                };
                let uid = u32::from_ne_bytes(msg[64..68].try_into().unwrap_or_default());
                let ino = u32::from_ne_bytes(msg[68..72].try_into().unwrap_or_default());
                out.push((SocketAddr::new(ip, port), uid, u64::from(ino)));
            }
            off += (len + 3) & !3;
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// The inode of the server's side of a TCP connection, once a process has
/// accepted it: the socket whose local address is `local` and whose peer
/// is `remote`. `Ok(None)` while the connection waits in an accept queue
/// (such a socket has no inode yet) or when there is no such connection.
///
/// Asks sock_diag for that one socket (an exact lookup, not a dump); where
/// netlink is not allowed (systemd's `RestrictAddressFamilies=` without
/// `AF_NETLINK`), reads `/proc/net/tcp` or `tcp6` instead, which lists
/// every TCP socket of the namespace and so costs more under load.
///
/// # Errors
/// Neither source can be read.
pub fn accepted_inode(local: SocketAddr, remote: SocketAddr) -> Result<Option<u64>, Errno> {
    match diag_one(local, remote) {
        Ok(found) => Ok(found),
        Err(Errno::EACCES | Errno::EAFNOSUPPORT | Errno::EPERM | Errno::EPROTONOSUPPORT) => {
            proc_net_inode(local, remote)
        }
        Err(e) => Err(e),
    }
}

/// A sock_diag netlink socket with `req` (a whole netlink message) sent on
/// it, ready for the answer.
fn diag_send(req: &[u8]) -> Result<OwnedFd, Errno> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: socket(2) just returned this descriptor; nothing else owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: zeroes are a valid sockaddr_nl (the kernel as destination).
    let mut dest: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    dest.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: the buffer and the address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const dest).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(Errno::last());
    }
    Ok(fd)
}

/// Whether sock_diag can be asked here (a netlink socket can be made).
pub fn diag_allowed() -> bool {
    // SAFETY: socket(2) with constant arguments; closed at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return false;
    }
    // SAFETY: socket(2) just returned this descriptor; nothing else owns it.
    drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    true
}

/// sock_diag's exact lookup of one TCP socket by its four-tuple.
fn diag_one(local: SocketAddr, remote: SocketAddr) -> Result<Option<u64>, Errno> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    if local.is_ipv4() != remote.is_ipv4() {
        return Ok(None);
    }
    // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes): family, protocol,
    // ext, pad, states (4), then the socket id: sport, dport (big-endian),
    // src[16], dst[16], if (4), cookie (8).
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[16] = if local.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    };
    req[17] = libc::IPPROTO_TCP as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    req[24..26].copy_from_slice(&local.port().to_be_bytes());
    req[26..28].copy_from_slice(&remote.port().to_be_bytes());
    let put = |req: &mut [u8], at: usize, ip: IpAddr| match ip {
        IpAddr::V4(a) => req[at..at + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => req[at..at + 16].copy_from_slice(&a.octets()),
    };
    put(&mut req, 28, local.ip());
    put(&mut req, 44, remote.ip());
    // INET_DIAG_NOCOOKIE: any cookie.
    req[64..72].copy_from_slice(&[0xff; 8]);
    let fd = diag_send(&req)?;
    let mut buf = [0u8; 1024];
    let n = loop {
        // SAFETY: `buf` is valid for writes of its whole length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            break n as usize;
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    };
    let data = &buf[..n];
    if data.len() < 16 {
        return Ok(None);
    }
    let ty = u16::from_ne_bytes([data[4], data[5]]);
    if i32::from(ty) == libc::NLMSG_ERROR {
        // nlmsgerr: a negative errno; ENOENT when there is no such socket.
        let code = i32::from_ne_bytes(data[16..20].try_into().unwrap_or_default());
        return match -code {
            0 | libc::ENOENT => Ok(None),
            e => Err(Errno::from_raw(e)),
        };
    }
    // inet_diag_msg after the header; its inode at 68.
    let msg = &data[16..];
    if msg.len() < 72 {
        return Ok(None);
    }
    let ino = u32::from_ne_bytes(msg[68..72].try_into().unwrap_or_default());
    Ok((ino != 0).then_some(u64::from(ino)))
}

/// The same from `/proc/net/tcp` or `/proc/net/tcp6`.
fn proc_net_inode(local: SocketAddr, remote: SocketAddr) -> Result<Option<u64>, Errno> {
    let file = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(file).map_err(|_| Errno::last())?;
    Ok(inode_in_proc_net(&text, local, remote))
}

/// The inode of the socket with these addresses in a `/proc/net/tcp{,6}`
/// text (`None` if absent or not yet accepted: inode 0).
pub fn inode_in_proc_net(text: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let want_local = proc_net_address(local);
    let want_remote = proc_net_address(remote);
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || !f[1].eq_ignore_ascii_case(&want_local) {
            return None;
        }
        if !f[2].eq_ignore_ascii_case(&want_remote) {
            return None;
        }
        f[9].parse::<u64>().ok().filter(|&i| i != 0)
    })
}

/// An address as `/proc/net/tcp` writes it: the address's bytes as
/// native-endian 32-bit words in hex, a colon, the port in hex.
fn proc_net_address(a: SocketAddr) -> String {
    let words: Vec<u32> = match a.ip() {
        IpAddr::V4(v) => vec![u32::from_ne_bytes(v.octets())],
        IpAddr::V6(v) => v
            .octets()
            .chunks(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let hex: String = words.iter().map(|w| format!("{w:08X}")).collect();
    format!("{hex}:{:04X}", a.port())
}

/// Whether process `pid` has the socket with this inode open: one of its
/// fds links to `socket:[inode]`. False if the process is gone or its fds
/// cannot be read.
pub fn holds_socket(pid: i32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.filter_map(Result::ok)
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

/// The inode of a socket (as `/proc/net/*` and `/proc/PID/fd` show it).
pub fn inode(fd: BorrowedFd<'_>) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|s| s.st_ino)
}

/// The processes holding one of the sockets `inodes` open, as (pid,
/// command name), in `/proc`'s order; those whose fds cannot be read (other
/// users' processes, without privilege) are not seen.
pub fn holders(inodes: &[u64]) -> Vec<(i32, String)> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut who = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return who;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| wanted.iter().any(|w| l.as_os_str() == w.as_str()))
        });
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            who.push((pid, comm.trim().to_string()));
        }
    }
    who
}

/// `pid` and its descendants, from `/proc/PID/task/TID/children` (a server
/// whose worker processes accept, such as gunicorn or nginx, holds the
/// accepted socket in a child of the process the supervisor started).
/// Bounded: at most 4,096 processes.
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 4096 {
        let p = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.filter_map(Result::ok) {
            let Ok(children) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok())
                    .filter(|c| !out.contains(c))
                    .collect::<Vec<_>>(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn an_accepted_connection_is_found_by_inode_in_this_process() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // The server's side: local is where the client connected to,
        // remote is the client's own address.
        let (local, remote) = (client.peer_addr().unwrap(), client.local_addr().unwrap());
        // Queued, not accepted: no inode yet.
        assert_eq!(accepted_inode(local, remote).unwrap(), None);
        let (accepted, _) = listener.accept().unwrap();
        let ino = accepted_inode(local, remote)
            .unwrap()
            .expect("an inode once accepted");
        // The same from /proc/net/tcp, and the fd is ours.
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
        assert_eq!(inode_in_proc_net(&text, local, remote), Some(ino));
        let me = std::process::id() as i32;
        assert!(holds_socket(me, ino));
        assert!(process_tree(me).contains(&me));
        drop(accepted);
        // Another process's socket is not ours.
        assert!(!holds_socket(1, ino) || me == 1);
    }

    #[test]
    fn a_socket_is_found_by_its_inode_in_its_holder() {
        use std::os::fd::AsFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = inode(listener.as_fd()).expect("a socket has an inode");
        let me = std::process::id() as i32;
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(holders(&[ino]).contains(&(me, comm.trim().to_string())));
        // This process is among the listening sockets' holders the kernel
        // lists, with its uid.
        let listed = listening(libc::AF_INET, true).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        assert!(
            listed
                .iter()
                .any(|&(a, u, i)| a == listener.local_addr().unwrap() && u == uid && i == ino),
            "{listed:?}"
        );
        drop(listener);
        assert!(!holders(&[ino]).iter().any(|(pid, _)| *pid == me));
    }

    #[test]
    fn proc_net_addresses() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(proc_net_address(a), "0100007F:1F90");
        }
        let six: SocketAddr = "[::1]:80".parse().unwrap();
        assert!(proc_net_address(six).ends_with(":0050"));
        assert_eq!(proc_net_address(six).len(), 32 + 5);
    }
}
