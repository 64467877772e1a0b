//! Duplicates of listening sockets for holders outside the generations'
//! spawn: a process that asks the control socket (`fds`: the sockets that
//! take new connections now) and a child that asks its channel (its own
//! generation's). It creates no socket and never changes the routing.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::{Mode, Slot, Steering};
use crate::machine::Generation;

/// One listener's socket as handed out over the control socket.
#[derive(Debug)]
pub struct Handed {
    /// The listener's name.
    pub name: String,
    /// What it is bound to (`127.0.0.1:80`, `udp:[::1]:53`,
    /// `unix:/run/x.sock`, `unix:@name`).
    pub bound: String,
    /// A duplicate of the socket that takes new connections.
    pub fd: OwnedFd,
}

impl Steering {
    /// The slots named, in that order, or every slot when `names` is empty.
    ///
    /// # Errors
    /// An unknown name (the message lists the known ones).
    fn pick(&self, names: &[String]) -> Result<Vec<usize>, String> {
        if names.is_empty() {
            return Ok((0..self.slots.len()).collect());
        }
        names
            .iter()
            .map(|n| {
                self.slots
                    .iter()
                    .position(|s| &s.listener.name == n)
                    .ok_or_else(|| {
                        let known: Vec<&str> = self
                            .slots
                            .iter()
                            .map(|s| s.listener.name.as_str())
                            .collect();
                        format!(
                            "no listener named {n:?} (there are: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        )
                    })
            })
            .collect()
    }

    /// Duplicates of the sockets that take new connections, for a holder
    /// outside (the control socket's `fds`): the listeners named, in that
    /// order, or every listener when `names` is empty. In steer mode that is
    /// the routed generation's socket; in shared mode the one socket.
    ///
    /// # Errors
    /// An unknown name (named in the message), or no fd left to duplicate.
    pub fn fetch(&mut self, names: &[String]) -> Result<Vec<Handed>, String> {
        let mut out = Vec::new();
        for i in self.pick(names)? {
            let slot = &mut self.slots[i];
            let routed = slot.group.routed();
            if let (Mode::Steer, Some(m)) = (&slot.mode, slot.group.get_mut(routed)) {
                // A UDP member stays in the group as long as anyone holds
                // it (only a TCP member leaves at shutdown()).
                if !slot.stream {
                    m.role.pin();
                }
            }
            let slot = &self.slots[i];
            let fd = match (&slot.mode, slot.group.get(routed)) {
                (Mode::Steer, Some(m)) => m.fd.as_fd(),
                _ => slot.shared_fd(),
            };
            out.push(handed(slot, fd)?);
        }
        Ok(out)
    }

    /// Duplicates of generation `g`'s own sockets (what it was given at
    /// fds 3, 4, ...), by name, every one when `names` is empty: for a
    /// child's channel. Creates nothing.
    ///
    /// # Errors
    /// An unknown name (the message lists the known ones), or a socket
    /// that cannot be duplicated.
    pub fn fetch_own(&self, g: Generation, names: &[String]) -> Result<Vec<Handed>, String> {
        let mut out = Vec::new();
        for i in self.pick(names)? {
            let slot = &self.slots[i];
            let fd = match slot.mode {
                Mode::Steer => {
                    let own = slot.group.iter().find(|m| m.role.held_by(g));
                    own.unwrap_or(&slot.group[slot.group.routed()]).fd.as_fd()
                }
                Mode::Frozen(_) | Mode::Shared(_) => slot.shared_fd(),
            };
            out.push(handed(slot, fd)?);
        }
        Ok(out)
    }
}

/// `slot`'s socket `fd`, duplicated, with the listener's name and address.
fn handed(slot: &Slot, fd: BorrowedFd<'_>) -> Result<Handed, String> {
    let fd: OwnedFd = fd.try_clone_to_owned().map_err(|e| {
        format!(
            "duplicate the socket of listener {:?}: {e}",
            slot.listener.name
        )
    })?;
    Ok(Handed {
        name: slot.listener.name.clone(),
        bound: slot.listener.bound.clone(),
        fd,
    })
}
