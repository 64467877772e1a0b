//! Strangers in a reuseport group: sockets of the supervisor's own user
//! bound to a steered port that the supervisor did not make (another
//! process could join a group and shift the members' indices). Owns the
//! decision (which sockets are strangers, and freezing a group that has
//! one); what the kernel says (the machine's listening sockets, who holds a
//! socket) is read by [`hot_supervisor::sockinfo`]. It never closes or
//! joins a socket.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use hot_supervisor::sockinfo;

use super::{Mode, Notice, Steering};

impl Steering {
    /// The inode of every socket the supervisor holds for the listeners.
    fn own_inodes(&self) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        for s in &self.slots {
            if let Some(fd) = s.listener.fd_opt() {
                set.extend(sockinfo::inode(fd));
            }
            for m in s.group.iter() {
                set.extend(m.ino);
            }
        }
        set
    }

    /// Look for strangers in the groups of `slots` (one sock_diag dump for
    /// them all); freeze each group that has one.
    pub(super) fn screen(&mut self, slots: &[usize], notices: &mut Vec<Notice>) {
        if slots.is_empty() {
            return;
        }
        let own = self.own_inodes();
        let ports: Vec<(SocketAddr, bool)> = slots
            .iter()
            .map(|&i| (self.slots[i].addr, self.slots[i].stream))
            .collect();
        let found = foreign_sockets(&ports, &own);
        for &i in slots {
            let port = self.slots[i].addr.port();
            let stream = self.slots[i].stream;
            let strangers: Vec<u64> = found
                .iter()
                .filter(|(p, s, _)| *p == port && *s == stream)
                .map(|(_, _, ino)| *ino)
                .collect();
            if !strangers.is_empty() {
                self.freeze(i);
                notices.push(Notice::Stranger {
                    listener: self.slots[i].listener.name.clone(),
                    who: describe_holders(&sockinfo::holders(&strangers), &strangers),
                });
            }
        }
    }

    /// A stranger joined slot `i`: never change the group again, and end
    /// a probe's exception (the probed member may not be where the mirror
    /// says).
    fn freeze(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.mode = Mode::Frozen("another process joined its reuseport group".into());
        slot.group.set_probe(None);
        // Owners stay: a generation already started holds its own socket
        // and accepts on nothing else, so it is routed there when ready
        // (best effort: a member that joined after the stranger may not be
        // where the list says). Later generations share the routed socket,
        // and no member is closed again while the supervisor runs.
    }
}

/// Sockets bound to one of `ports` (TCP listening, or unconnected UDP)
/// whose inode is not in `own`: (port, is TCP, inode). Asked of the kernel
/// with sock_diag(7), which filters by state, so that thousands of
/// connections in TIME_WAIT cost nothing (`/proc/net/tcp` lists them all).
fn foreign_sockets(ports: &[(SocketAddr, bool)], own: &BTreeSet<u64>) -> Vec<(u16, bool, u64)> {
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

/// `pid 1234 (python3)` for each holder of the strangers found, or their
/// inodes if no holder can be seen.
fn describe_holders(holders: &[(i32, String)], inodes: &[u64]) -> String {
    if holders.is_empty() {
        let list: Vec<String> = inodes.iter().map(u64::to_string).collect();
        return format!("socket inode {}", list.join(", "));
    }
    let who: Vec<String> = holders
        .iter()
        .map(|(pid, comm)| format!("pid {pid} ({comm})"))
        .collect();
    who.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_named_by_pid_and_command_else_by_inode() {
        let holders = [(12, "python3".to_string()), (345, "nc".to_string())];
        assert_eq!(
            describe_holders(&holders, &[7, 8]),
            "pid 12 (python3), pid 345 (nc)"
        );
        assert_eq!(describe_holders(&[], &[7, 8]), "socket inode 7, 8");
    }
}
