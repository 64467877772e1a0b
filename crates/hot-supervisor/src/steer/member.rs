//! One member of a reuseport group: its socket, and what it is for (its
//! [`Role`]: a generation's socket, the next generation's made ahead of
//! time, or one waiting to be closed), with the changes of role that
//! steering makes, and what the decisions on reserves and spares read of
//! it ([`Standing`]). The roles say which sockets may be closed and which
//! generation a socket is given to; it never touches the group's order
//! (see [`super::group`]) nor decides when a change is made.

use std::os::fd::{AsFd, OwnedFd};

use super::socket::listening;
use crate::machine::Generation;

/// Who holds a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A generation of this supervisor's (its workers share it).
    Generation(Generation),
    /// The previous supervisor's generations, after a takeover: it stays,
    /// in its place in the group, until that supervisor is gone.
    Previous,
    /// Nobody: a routed socket waiting for the crash restart that takes it
    /// over, a socket handed out that stays, a member of a group that is no
    /// longer changed, or a socket about to be retired.
    Nobody,
}

/// What a member is for. Its owner, whether it is handed out and whether
/// the previous supervisor holds it too matter only while it is in use:
/// a reserve is nobody's yet and never handed out, a retired member is
/// closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The next generation's socket, made ahead of time (see
    /// [`super::Steering::replenish`]): in the group, nobody's, never
    /// routed, so it receives nothing until a generation takes it.
    Reserve {
        /// The previous supervisor's reserve or spare, taken over for this
        /// one's first generation (see `Live::borrowed`).
        borrowed: bool,
    },
    /// In use, or waiting to be.
    Live {
        /// Who holds it.
        owner: Owner,
        /// A UDP socket handed out over the control socket (`fds`): never
        /// closed while the supervisor runs, since the holder keeps it
        /// bound and in the group, where closing our copy would shift the
        /// mirror of the group's order.
        pinned: bool,
        /// The previous supervisor's reserve or spare, taken over for this
        /// one's first generation: the previous supervisor holds it too,
        /// and may yet carry on with it (if that generation fails), so it
        /// is never closed here before the previous supervisor is gone (a
        /// `shutdown` would end it for both).
        borrowed: bool,
    },
    /// Its generation is gone and nothing is routed to it: it is closed as
    /// soon as that moves no routed member (see
    /// [`super::Steering::flush_retired`]).
    Retired {
        /// A socket of the supervisor's own that only stands in the group
        /// so that a leaving member's slot is filled by it rather than by
        /// the routed member: retired from the start, never routed.
        spare: bool,
    },
}

impl Role {
    /// The next generation's socket, made ahead of time.
    pub const RESERVE: Role = Role::Reserve { borrowed: false };
    /// A spare (see [`Role::Retired`]).
    pub const SPARE: Role = Role::Retired { spare: true };

    /// In use by `owner`.
    pub fn live(owner: Owner) -> Role {
        Role::Live {
            owner,
            pinned: false,
            borrowed: false,
        }
    }

    /// Who holds it (nobody, unless it is in use).
    pub fn owner(self) -> Owner {
        match self {
            Role::Live { owner, .. } => owner,
            Role::Reserve { .. } | Role::Retired { .. } => Owner::Nobody,
        }
    }

    /// The generation of this supervisor's that holds it.
    pub fn generation(self) -> Option<Generation> {
        match self.owner() {
            Owner::Generation(g) => Some(g),
            Owner::Previous | Owner::Nobody => None,
        }
    }

    /// Whether generation `g` holds it.
    pub fn held_by(self, g: Generation) -> bool {
        self.owner() == Owner::Generation(g)
    }

    /// Whether it is handed out and so never closed.
    pub fn pinned(self) -> bool {
        matches!(self, Role::Live { pinned: true, .. })
    }

    /// Whether it is the next generation's, made ahead of time.
    pub fn is_reserve(self) -> bool {
        matches!(self, Role::Reserve { .. })
    }

    /// Whether it waits to be closed.
    pub fn is_retired(self) -> bool {
        matches!(self, Role::Retired { .. })
    }

    /// Whether it is a spare.
    pub fn is_spare(self) -> bool {
        self == Role::SPARE
    }

    /// Generation `g` takes it, if it is free for the taking: a reserve,
    /// or a socket in use by nobody (the routed one of a gone generation).
    /// Whether it did.
    pub fn take(&mut self, g: Generation) -> bool {
        *self = match *self {
            Role::Reserve { borrowed } => Role::Live {
                owner: Owner::Generation(g),
                pinned: false,
                borrowed,
            },
            Role::Live {
                owner: Owner::Nobody,
                pinned,
                borrowed,
            } => Role::Live {
                owner: Owner::Generation(g),
                pinned,
                borrowed,
            },
            Role::Live { .. } | Role::Retired { .. } => return false,
        };
        true
    }

    /// Its owner lets it go, and it stays in use by nobody (it is routed,
    /// or its group is no longer changed).
    pub fn disown(&mut self) {
        if let Role::Live { owner, .. } = self {
            *owner = Owner::Nobody;
        }
    }

    /// Its generation is gone and nothing is routed to it: it is retired,
    /// unless it stays for another holder (the previous supervisor's until
    /// that one is gone, or nobody's if handed out). Whether it is retired.
    pub fn release(&mut self) -> bool {
        match self {
            Role::Live {
                borrowed: true,
                owner,
                ..
            } => *owner = Owner::Previous,
            Role::Live {
                pinned: true,
                owner,
                ..
            } => *owner = Owner::Nobody,
            Role::Live { .. } => *self = Role::Retired { spare: false },
            Role::Reserve { .. } | Role::Retired { .. } => {}
        }
        self.is_retired()
    }

    /// A socket nobody holds that nothing is routed to (a crashed
    /// generation's, replaced by a generation already starting) is
    /// retired, unless handed out. Whether it was.
    pub fn retire_orphan(&mut self) -> bool {
        let orphan = matches!(
            self,
            Role::Live {
                owner: Owner::Nobody,
                pinned: false,
                ..
            }
        );
        if orphan {
            *self = Role::Retired { spare: false };
        }
        orphan
    }

    /// The previous supervisor is gone: nothing is borrowed from it any
    /// more, and its sockets are nobody's, or retired if `retire` (nothing
    /// is routed to it and the group may change) and not handed out.
    /// Whether it was retired.
    pub fn previous_gone(&mut self, retire: bool) -> bool {
        match self {
            Role::Reserve { borrowed } => *borrowed = false,
            Role::Live {
                owner,
                pinned,
                borrowed,
            } => {
                *borrowed = false;
                if *owner == Owner::Previous {
                    if retire && !*pinned {
                        *self = Role::Retired { spare: false };
                        return true;
                    }
                    *owner = Owner::Nobody;
                }
            }
            Role::Retired { .. } => {}
        }
        false
    }

    /// Handed out (UDP): never closed from now.
    pub fn pin(&mut self) {
        if let Role::Live { pinned, .. } = self {
            *pinned = true;
        }
    }
}

/// One socket of a group.
#[derive(Debug)]
pub(super) struct Member {
    pub fd: OwnedFd,
    /// What it is for.
    pub role: Role,
    /// Its inode (for the stranger check), read once.
    pub ino: Option<u64>,
}

impl Member {
    /// A member with its role.
    pub fn new(fd: OwnedFd, role: Role) -> Member {
        Member {
            ino: hot_supervisor::sockinfo::inode(fd.as_fd()),
            fd,
            role,
        }
    }
}

/// What the decisions on reserves and spares (see [`super::reserve`]) read
/// of a member: its role, and whether it still listens. A [`Member`] asks
/// the kernel; the unit tests' members are plain values, so that those
/// decisions are tested without sockets.
pub(super) trait Standing {
    /// What it is for.
    fn role(&self) -> Role;
    /// Whether it still listens (a socket a server shut down has left its
    /// group already; a UDP socket never listens).
    fn listens(&self) -> bool;
}

impl Standing for Member {
    fn role(&self) -> Role {
        self.role
    }

    fn listens(&self) -> bool {
        listening(self.fd.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G1: Generation = Generation(1);
    const G2: Generation = Generation(2);

    #[test]
    fn a_reserve_or_a_routed_socket_of_nobody_is_taken() {
        let mut r = Role::Reserve { borrowed: true };
        assert!(r.take(G1));
        assert_eq!(
            r,
            Role::Live {
                owner: Owner::Generation(G1),
                pinned: false,
                borrowed: true
            }
        );
        // Held: not taken by another.
        assert!(!r.take(G2));
        assert!(r.held_by(G1));
        r.disown();
        assert!(r.take(G2));
        assert_eq!(r.generation(), Some(G2));
        // Neither a retired member nor the previous supervisor's.
        for mut r in [Role::SPARE, Role::live(Owner::Previous)] {
            assert!(!r.take(G1));
        }
    }

    #[test]
    fn a_released_socket_is_retired_unless_someone_else_holds_it() {
        let mut r = Role::live(Owner::Generation(G1));
        assert!(r.release());
        assert_eq!(r, Role::Retired { spare: false });
        assert!(!r.is_spare());
        // Handed out: it stays, nobody's.
        let mut r = Role::live(Owner::Generation(G1));
        r.pin();
        assert!(!r.release());
        assert_eq!(r.owner(), Owner::Nobody);
        assert!(r.pinned());
        // Borrowed: the previous supervisor's until it is gone.
        let mut r = Role::Reserve { borrowed: true };
        r.take(G1);
        assert!(!r.release());
        assert_eq!(r.owner(), Owner::Previous);
        assert_eq!(r.generation(), None);
        assert!(r.previous_gone(true));
        assert!(r.is_retired());
    }

    #[test]
    fn the_previous_supervisors_sockets_go_with_it_unless_kept() {
        let mut routed = Role::live(Owner::Previous);
        assert!(!routed.previous_gone(false));
        assert_eq!(routed, Role::live(Owner::Nobody));
        let mut handed = Role::Live {
            owner: Owner::Previous,
            pinned: true,
            borrowed: false,
        };
        assert!(!handed.previous_gone(true));
        assert_eq!(handed.owner(), Owner::Nobody);
        // A generation's own socket borrowed from it is this one's only.
        let mut own = Role::Live {
            owner: Owner::Generation(G1),
            pinned: false,
            borrowed: true,
        };
        assert!(!own.previous_gone(true));
        assert_eq!(own, Role::live(Owner::Generation(G1)));
        let mut reserve = Role::Reserve { borrowed: true };
        reserve.previous_gone(true);
        assert_eq!(reserve, Role::RESERVE);
    }

    #[test]
    fn only_an_orphan_not_handed_out_is_retired_by_routing() {
        let mut orphan = Role::live(Owner::Nobody);
        assert!(orphan.retire_orphan());
        for mut kept in [
            Role::live(Owner::Generation(G1)),
            Role::live(Owner::Previous),
            Role::RESERVE,
            Role::Live {
                owner: Owner::Nobody,
                pinned: true,
                borrowed: false,
            },
        ] {
            let before = kept;
            assert!(!kept.retire_orphan());
            assert_eq!(kept, before);
        }
        // Pinning is for sockets in use only.
        let mut spare = Role::SPARE;
        spare.pin();
        assert_eq!(spare, Role::SPARE);
    }
}
