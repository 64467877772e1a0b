//! A listening socket that stops listening (a server called `shutdown()`
//! on it: the socket leaves its group, for every holder): noticed by its
//! hang-up, and a new socket put in its place. It never decides a reload:
//! it says whether the serving generation was hit.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::member::Owner;
use super::socket::listening;
use super::{Mode, Notice, Steering};

impl Steering {
    /// The listening TCP sockets that generations hold (polled for a
    /// hang-up only: a listening socket reports none, one that stopped
    /// listening after a `shutdown()` does), with their fd numbers.
    pub fn hangup_interest(&self) -> Vec<(i32, BorrowedFd<'_>)> {
        let mut out = Vec::new();
        for s in &self.slots {
            if !s.stream {
                continue;
            }
            match s.mode {
                Mode::Steer => {
                    for (k, m) in s.group.iter().enumerate() {
                        let raw = m.fd.as_raw_fd();
                        if (m.role.owner() != Owner::Nobody
                            || (k == s.group.routed() && !m.role.is_retired()))
                            && !self.unwatched.contains(&raw)
                        {
                            out.push((raw, m.fd.as_fd()));
                        }
                    }
                }
                Mode::Frozen(_) | Mode::Shared(_) => {
                    let fd = s.shared_fd();
                    if !self.unwatched.contains(&fd.as_raw_fd()) {
                        out.push((fd.as_raw_fd(), fd));
                    }
                }
            }
        }
        out
    }

    /// The socket with fd number `raw` hung up. A TCP socket that a
    /// holder `shutdown()` no longer listens, and has lost its port: it
    /// cannot listen again, and every process holding it has lost it. So
    /// the listener gets a fresh socket (steer mode: the dead one leaves the
    /// group's bookkeeping, and new connections go to the newest member
    /// meanwhile; shared mode: a new socket is bound on the address), and
    /// the answer says whether the serving generation must be replaced to
    /// use it (it holds only the dead one).
    pub fn on_hangup(&mut self, raw: i32, notices: &mut Vec<Notice>) -> bool {
        if self.held {
            // Nothing changes while another supervisor takes over; stop
            // watching it (it would report again and again).
            self.unwatched.insert(raw);
            return false;
        }
        for i in 0..self.slots.len() {
            if self.slots[i].mode != Mode::Steer {
                if self.slots[i].shared_fd().as_raw_fd() != raw {
                    continue;
                }
                if listening(self.slots[i].shared_fd()) {
                    self.unwatched.insert(raw);
                    return false;
                }
                let name = self.slots[i].listener.name.clone();
                let Some(addr) = self.slots[i].shared_addr else {
                    // A group a stranger joined: no plain socket can take
                    // the port while the stranger holds it.
                    self.unwatched.insert(raw);
                    notices.push(Notice::Relistened {
                        listener: name,
                        owner: Owner::Nobody,
                        failed: Some("another process holds sockets on its port".into()),
                    });
                    return false;
                };
                let failed = match self.bind_plain(addr, self.slots[i].v6only) {
                    Ok(fd) => {
                        self.slots[i].listener.replace_fd(fd);
                        None
                    }
                    Err(e) => {
                        self.unwatched.insert(raw);
                        Some(format!("{e:#}"))
                    }
                };
                let ok = failed.is_none();
                notices.push(Notice::Relistened {
                    listener: name,
                    owner: Owner::Nobody,
                    failed,
                });
                return ok;
            }
            let Some(k) = self.slots[i]
                .group
                .iter()
                .position(|m| m.fd.as_raw_fd() == raw)
            else {
                continue;
            };
            if listening(self.slots[i].group[k].fd.as_fd()) {
                self.unwatched.insert(raw);
                return false;
            }
            // The kernel has taken it out of the group, moving the last
            // member into its slot: mirror that (closing our copy: the
            // socket is dead for everyone), and point the program at the
            // routed member's new place, or, if the dead one was routed, at
            // the newest member until the replacement generation is ready.
            let slot = &mut self.slots[i];
            let was_routed = slot.group.routed() == k;
            let m = slot.group.remove(k);
            if was_routed {
                // The newest generation's socket (it is starting, or about
                // to be replaced by the generation started below), never a
                // spare or a socket of a gone generation.
                let newest = slot
                    .group
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.role.owner() != Owner::Nobody)
                    .max_by_key(|(_, m)| m.role.generation())
                    .map_or(0, |(j, _)| j);
                slot.group.set_routed(newest);
            }
            let owner = m.role.owner();
            drop(m);
            self.attach_after_leave(i, notices);
            notices.push(Notice::Relistened {
                listener: self.slots[i].listener.name.clone(),
                owner,
                failed: None,
            });
            return was_routed;
        }
        false
    }
}
