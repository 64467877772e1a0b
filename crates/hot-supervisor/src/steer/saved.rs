//! The listeners and their groups as carried across an in-place upgrade
//! or handed to a supervisor that takes over: every member in the kernel's
//! order, so that the copy of that order stays true. Only the saved form
//! and its conversions; it never changes a socket.

use std::net::SocketAddr;
use std::os::fd::AsFd;

use nix::sys::socket::Backlog;

use super::{Member, Mode, PREVIOUS, Slot, Steering};
use crate::listen::{Listener, SocketOptions};
use crate::machine::Generation;

/// The listeners and their groups as carried across an in-place upgrade:
/// the members in the kernel's order, so the mirror stays true.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    slots: Vec<SavedSlot>,
    unwatched: Vec<i32>,
    steer: bool,
    /// The split of new connections between generations, in percent.
    #[serde(default)]
    split: Vec<(Generation, u32)>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedSlot {
    listener: crate::listen::Saved,
    mode: Mode,
    /// (fd, owner, retired, spare, pinned), in the kernel's order.
    members: Vec<(i32, Option<Generation>, bool, bool, bool)>,
    routed: usize,
    probe: Option<(u16, usize)>,
    stream: bool,
    addr: SocketAddr,
    v6only: bool,
    frozen: bool,
    shared_addr: Option<SocketAddr>,
    /// The members made ahead of time for the next generation (indices).
    #[serde(default)]
    reserves: Vec<usize>,
    /// Taking over: the reserves that are the previous supervisor's
    /// (indices; never written, set by [`Saved::into_previous`]).
    #[serde(skip)]
    borrowed: Vec<usize>,
}

impl Saved {
    /// The sockets as a supervisor that takes them over sees them: every
    /// member the previous supervisor's (kept, in the same order, until it
    /// has exited), no probe rule.
    pub fn into_previous(mut self) -> Saved {
        for s in &mut self.slots {
            // A TCP socket of the previous supervisor's own that no
            // generation holds and nothing is routed to (its reserve, or a
            // spare) is the first generation's socket here: it has
            // received nothing, and it leaves the group at once when closed
            // (shutdown), whoever else holds it. Taking it rather than
            // joining a new member keeps the members below the routed one
            // from piling up across chained takeovers. (UDP members leave
            // only when every holder has closed them: those stay the
            // previous supervisor's, closed once it is gone.)
            let mut reserve = None;
            if s.stream && s.mode == Mode::Steer && !s.frozen {
                reserve =
                    s.reserves.first().copied().or_else(|| {
                        (0..s.members.len()).find(|&k| k != s.routed && s.members[k].3)
                    });
            }
            for (k, m) in s.members.iter_mut().enumerate() {
                m.1 = (Some(k) != reserve).then_some(PREVIOUS);
                m.2 = false;
                m.3 = false;
            }
            s.reserves = reserve.into_iter().collect();
            s.borrowed = s.reserves.clone();
            s.probe = None;
        }
        self.unwatched.clear();
        self.split.clear();
        self
    }
}

impl Steering {
    /// The state for an in-place upgrade.
    pub fn save(&self, keep: &mut crate::carry::Keep) -> Saved {
        Saved {
            slots: self
                .slots
                .iter()
                .map(|s| SavedSlot {
                    listener: s.listener.save(keep),
                    mode: s.mode.clone(),
                    members: s
                        .members
                        .iter()
                        .map(|m| {
                            let fd = keep.fd(m.fd.as_fd());
                            (fd, m.owner, m.retired, m.spare, m.pinned)
                        })
                        .collect(),
                    routed: s.routed,
                    probe: s.probe,
                    stream: s.stream,
                    addr: s.addr,
                    v6only: s.v6only,
                    frozen: s.frozen,
                    shared_addr: s.shared_addr,
                    reserves: (0..s.members.len())
                        .filter(|&k| s.members[k].reserve)
                        .collect(),
                    borrowed: Vec::new(),
                })
                .collect(),
            unwatched: self.unwatched.iter().copied().collect(),
            steer: self.steer,
            split: self.split.clone(),
        }
    }

    /// The listeners an upgrade carried across. The groups' programs stay
    /// attached through the exec (they belong to the sockets).
    pub fn restore(
        saved: Saved,
        backlog: Backlog,
        options: SocketOptions,
        adopt: &mut crate::carry::Adopt,
    ) -> Steering {
        let slots = saved
            .slots
            .into_iter()
            .map(|s| Slot {
                listener: Listener::restore(s.listener, adopt),
                mode: s.mode,
                members: s
                    .members
                    .into_iter()
                    .enumerate()
                    .map(|(k, (fd, owner, retired, spare, pinned))| Member {
                        reserve: s.reserves.contains(&k) && owner.is_none(),
                        borrowed: s.borrowed.contains(&k),
                        retired,
                        spare,
                        pinned,
                        ..Member::new(adopt.take(fd), owner)
                    })
                    .collect(),
                routed: s.routed,
                probe: s.probe,
                stream: s.stream,
                addr: s.addr,
                v6only: s.v6only,
                frozen: s.frozen,
                shared_addr: s.shared_addr,
                attached: Vec::new(),
            })
            .collect();
        Steering {
            slots,
            unwatched: saved.unwatched.into_iter().collect(),
            backlog,
            options,
            steer: saved.steer,
            held: false,
            deferred: Vec::new(),
            split: saved.split,
            no_reserves: false,
            unscreened: Vec::new(),
        }
    }
}
