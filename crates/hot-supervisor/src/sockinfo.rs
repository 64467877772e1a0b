//! What the kernel says about sockets, asked without side effects: the
//! accept queue of a listening socket (`TCP_INFO`), and the listening
//! sockets of the machine (sock_diag). Used by the supervisor's steering
//! and by the tests that check it. Holds no state.

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
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const TCP_LISTEN: u32 = 10;
    const TCP_CLOSE: u32 = 7;
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
    let states: u32 = 1 << if stream { TCP_LISTEN } else { TCP_CLOSE };
    req[20..24].copy_from_slice(&states.to_ne_bytes());
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
