//! Making and reading the listeners' sockets: a new member joined to a
//! group (bound with the listener's options, listening), a plain socket in
//! place of a shared one that a server shut down, and what a handed-over
//! socket is (TCP or UDP, its address, whether it can be steered). It never
//! changes a group's mirror nor the routing.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
    bind, getsockname, getsockopt, listen, setsockopt, socket, sockopt,
};

use super::Steering;

impl Steering {
    /// A new member for slot `i`, joined to the group.
    pub(super) fn join(&self, i: usize) -> Result<OwnedFd> {
        let s = &self.slots[i];
        let (family, ty, proto) = match (s.addr, s.stream) {
            (SocketAddr::V4(_), true) => (AddressFamily::Inet, SockType::Stream, SockProtocol::Tcp),
            (SocketAddr::V6(_), true) => {
                (AddressFamily::Inet6, SockType::Stream, SockProtocol::Tcp)
            }
            (SocketAddr::V4(_), false) => {
                (AddressFamily::Inet, SockType::Datagram, SockProtocol::Udp)
            }
            (SocketAddr::V6(_), false) => {
                (AddressFamily::Inet6, SockType::Datagram, SockProtocol::Udp)
            }
        };
        let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, proto).context("socket")?;
        setsockopt(&fd, sockopt::ReusePort, &true).context("SO_REUSEPORT")?;
        if s.stream {
            setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        }
        if family == AddressFamily::Inet6 {
            setsockopt(&fd, sockopt::Ipv6V6Only, &s.v6only).context("IPV6_V6ONLY")?;
        }
        if !s.listener.inherited {
            self.options.apply(fd.as_fd(), s.stream)?;
        }
        match s.addr {
            SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
            SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
        }
        .with_context(|| format!("bind a new socket to {}", s.addr))?;
        if s.stream {
            listen(&fd, self.backlog).context("listen")?;
        }
        Ok(fd)
    }

    /// A new listening TCP socket on `addr`, without `SO_REUSEPORT` (for a
    /// shared listener).
    pub(super) fn bind_plain(&self, addr: SocketAddr, v6only: bool) -> Result<OwnedFd> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Tcp,
        )
        .context("socket")?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        if family == AddressFamily::Inet6 {
            setsockopt(&fd, sockopt::Ipv6V6Only, &v6only).context("IPV6_V6ONLY")?;
        }
        self.options.apply(fd.as_fd(), true)?;
        match addr {
            SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
            SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
        }
        .with_context(|| format!("bind {addr} again"))?;
        listen(&fd, self.backlog).context("listen")?;
        Ok(fd)
    }
}

/// Whether a listener can be steered: TCP or UDP, with `SO_REUSEPORT`
/// set. Returns (is TCP, bound address, IPV6_V6ONLY).
pub(super) fn steer_kind(fd: BorrowedFd<'_>) -> Result<(bool, SocketAddr, bool), String> {
    let ty: SockType = getsockopt(&fd, sockopt::SockType).map_err(|e| format!("SO_TYPE: {e}"))?;
    let stream = match ty {
        SockType::Stream => true,
        SockType::Datagram => false,
        _ => return Err("neither TCP nor UDP".into()),
    };
    let addr: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| format!("getsockname: {e}"))?;
    let (addr, v6only) = if let Some(a) = addr.as_sockaddr_in() {
        (SocketAddr::from(*a), false)
    } else if let Some(a) = addr.as_sockaddr_in6() {
        let only = getsockopt(&fd, sockopt::Ipv6V6Only).unwrap_or(false);
        (SocketAddr::from(*a), only)
    } else {
        return Err("a Unix socket (no reuseport groups)".into());
    };
    if !getsockopt(&fd, sockopt::ReusePort).unwrap_or(false) {
        return Err("the socket was handed over without SO_REUSEPORT, so it cannot be joined (a systemd socket unit needs ReusePort=yes)".into());
    }
    Ok((stream, addr, v6only))
}

/// A TCP (IPv4 or IPv6) socket's address and `IPV6_V6ONLY`; `None` for
/// any other socket.
pub(super) fn tcp_address(fd: BorrowedFd<'_>) -> Option<(SocketAddr, bool)> {
    if getsockopt(&fd, sockopt::SockType).ok()? != SockType::Stream {
        return None;
    }
    let a: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(a) = a.as_sockaddr_in() {
        return Some((SocketAddr::from(*a), false));
    }
    let a = a.as_sockaddr_in6()?;
    Some((
        SocketAddr::from(*a),
        getsockopt(&fd, sockopt::Ipv6V6Only).unwrap_or(false),
    ))
}

/// Whether a socket is listening (`SO_ACCEPTCONN`).
pub(super) fn listening(fd: BorrowedFd<'_>) -> bool {
    getsockopt(&fd, sockopt::AcceptConn).unwrap_or(true)
}
