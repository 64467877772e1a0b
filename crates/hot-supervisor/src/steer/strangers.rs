//! Strangers in a reuseport group: sockets of the supervisor's own user
//! bound to a steered port that the supervisor did not make (another
//! process could join a group and shift the members' indices), found with
//! sock_diag, and who holds them, from `/proc`. Reads only.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use hot_supervisor::sockinfo;

/// The inode of a socket (as `/proc/net/*` and `/proc/PID/fd` show it).
pub(super) fn inode(fd: BorrowedFd<'_>) -> Option<u64> {
    nix::sys::stat::fstat(fd).ok().map(|s| s.st_ino)
}

/// Sockets bound to one of `ports` (TCP listening, or unconnected UDP)
/// whose inode is not in `own`: (port, is TCP, inode). Asked of the kernel
/// with sock_diag(7), which filters by state, so that thousands of
/// connections in TIME_WAIT cost nothing (`/proc/net/tcp` lists them all).
pub(super) fn foreign_sockets(
    ports: &[(SocketAddr, bool)],
    own: &BTreeSet<u64>,
) -> Vec<(u16, bool, u64)> {
    let mut found = Vec::new();
    // Only sockets of our own user can join our groups (the kernel admits
    // none other), and only on the same address.
    let me = nix::unistd::geteuid().as_raw();
    for stream in [true, false] {
        if !ports.iter().any(|(_, s)| *s == stream) {
            continue;
        }
        for family in [libc::AF_INET, libc::AF_INET6] {
            match sockinfo::listening(family, stream) {
                Ok(list) => {
                    for (addr, uid, ino) in list {
                        let same = || {
                            ports.iter().any(|(ours, s)| {
                                *s == stream
                                    && ours.port() == addr.port()
                                    && (ours.ip() == addr.ip()
                                        || (ours.ip().is_unspecified()
                                            && addr.ip().is_unspecified()))
                            })
                        };
                        // Our own sockets first: most are, and that test is
                        // a lookup, where `same` scans the ports.
                        if ino != 0 && uid == me && !own.contains(&ino) && same() {
                            found.push((addr.port(), stream, ino));
                        }
                    }
                }
                Err(e) => {
                    // Once per process, not per group change: the cause
                    // (a sandbox without AF_NETLINK) does not go away.
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        log::warn!(
                            "sock_diag (netlink) cannot be used ({e}): strangers joining a reuseport group are not detected; under systemd, add AF_NETLINK to RestrictAddressFamilies="
                        );
                    });
                    log::debug!("sock_diag: {e}: sockets of other processes not checked");
                }
            }
        }
    }
    found
}

/// `pid 1234 (python3)` for each process holding one of the sockets, or
/// the inodes if no holder can be seen.
pub(super) fn describe_holders(inodes: &[u64]) -> String {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut who = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
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
                who.push(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    if who.is_empty() {
        let list: Vec<String> = inodes.iter().map(u64::to_string).collect();
        format!("socket inode {}", list.join(", "))
    } else {
        who.join(", ")
    }
}
