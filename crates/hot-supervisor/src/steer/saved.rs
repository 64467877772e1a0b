//! The listeners and their groups as carried across an in-place upgrade
//! or handed to a supervisor that takes over: every member in the kernel's
//! order, so that the copy of that order stays true. Only the saved form
//! and its conversions; it never changes a socket.

use std::net::SocketAddr;
use std::os::fd::AsFd;

use nix::sys::socket::Backlog;

use super::{Group, Member, Mode, Owner, Role, Slot, Steering};
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
    mode: SavedMode,
    /// In the kernel's order.
    members: Vec<SavedMember>,
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

/// A listener's mode as saved, with `frozen` beside it: a frozen group is
/// written as shared, and frozen (see [`SavedMode::new`]).
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum SavedMode {
    Steer,
    Shared(String),
}

impl SavedMode {
    /// The mode as written, and whether it is frozen.
    fn new(mode: &Mode) -> (SavedMode, bool) {
        match mode {
            Mode::Steer => (SavedMode::Steer, false),
            Mode::Frozen(why) => (SavedMode::Shared(why.clone()), true),
            Mode::Shared(why) => (SavedMode::Shared(why.clone()), false),
        }
    }

    /// The mode read, given whether it is frozen. (Supervisors freeze only
    /// a group they also write as shared.)
    fn mode(self, frozen: bool) -> Mode {
        match (self, frozen) {
            (SavedMode::Steer, false) => Mode::Steer,
            (SavedMode::Steer, true) => Mode::Frozen("steering stopped".into()),
            (SavedMode::Shared(why), true) => Mode::Frozen(why),
            (SavedMode::Shared(why), false) => Mode::Shared(why),
        }
    }
}

/// One member as saved. Written as the tuple `(fd, owner, retired, spare,
/// pinned)`, as every earlier version wrote it (see [`MemberWire`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "MemberWire", into = "MemberWire")]
struct SavedMember {
    /// Its number in the state's fds.
    fd: i32,
    owner: Owner,
    retired: bool,
    spare: bool,
    pinned: bool,
}

/// A member as written: (fd, owner, retired, spare, pinned), the owner
/// `null` for nobody, and [`PREVIOUS`] for the previous supervisor's.
type MemberWire = (i32, Option<Generation>, bool, bool, bool);

/// The owner written for the previous supervisor's sockets, after a
/// takeover (this supervisor's generations count from 1).
const PREVIOUS: Generation = Generation(0);

impl From<MemberWire> for SavedMember {
    fn from((fd, owner, retired, spare, pinned): MemberWire) -> SavedMember {
        let owner = match owner {
            None => Owner::Nobody,
            Some(PREVIOUS) => Owner::Previous,
            Some(g) => Owner::Generation(g),
        };
        SavedMember {
            fd,
            owner,
            retired,
            spare,
            pinned,
        }
    }
}

impl From<SavedMember> for MemberWire {
    fn from(m: SavedMember) -> MemberWire {
        let owner = match m.owner {
            Owner::Nobody => None,
            Owner::Previous => Some(PREVIOUS),
            Owner::Generation(g) => Some(g),
        };
        (m.fd, owner, m.retired, m.spare, m.pinned)
    }
}

impl SavedMember {
    /// Member `fd` with its role; and whether it is a reserve (those are
    /// listed by index beside the members).
    fn new(fd: i32, role: Role) -> (SavedMember, bool) {
        let (owner, retired, spare, pinned) = match role {
            Role::Reserve { .. } => (Owner::Nobody, false, false, false),
            Role::Live { owner, pinned, .. } => (owner, false, false, pinned),
            Role::Retired { spare } => (Owner::Nobody, true, spare, false),
        };
        let m = SavedMember {
            fd,
            owner,
            retired,
            spare,
            pinned,
        };
        (m, role.is_reserve())
    }

    /// Its role, given whether it is listed as a reserve and as borrowed.
    /// Supervisors write only what [`SavedMember::new`] writes: a reserve
    /// and a retired member are nobody's and not handed out, and only a
    /// retired member is a spare.
    fn role(self, reserve: bool, borrowed: bool) -> Role {
        match self.owner {
            Owner::Nobody if reserve => Role::Reserve { borrowed },
            Owner::Nobody if self.retired => Role::Retired { spare: self.spare },
            owner => Role::Live {
                owner,
                pinned: self.pinned,
                borrowed,
            },
        }
    }
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
            if s.stream && s.mode == SavedMode::Steer && !s.frozen {
                reserve = s.reserves.first().copied().or_else(|| {
                    (0..s.members.len()).find(|&k| k != s.routed && s.members[k].spare)
                });
            }
            for (k, m) in s.members.iter_mut().enumerate() {
                m.owner = if Some(k) == reserve {
                    Owner::Nobody
                } else {
                    Owner::Previous
                };
                m.retired = false;
                m.spare = false;
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
                .map(|s| {
                    let (members, reserves): (Vec<SavedMember>, Vec<bool>) = s
                        .group
                        .iter()
                        .map(|m| SavedMember::new(keep.fd(m.fd.as_fd()), m.role))
                        .unzip();
                    let (mode, frozen) = SavedMode::new(&s.mode);
                    SavedSlot {
                        listener: s.listener.save(keep),
                        mode,
                        members,
                        routed: s.group.routed(),
                        probe: s.group.probe(),
                        stream: s.stream,
                        addr: s.addr,
                        v6only: s.v6only,
                        frozen,
                        shared_addr: s.shared_addr,
                        reserves: (0..reserves.len()).filter(|&k| reserves[k]).collect(),
                        borrowed: Vec::new(),
                    }
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
                mode: s.mode.mode(s.frozen),
                group: Group::new(
                    s.members
                        .into_iter()
                        .enumerate()
                        .map(|(k, m)| {
                            let role = m.role(s.reserves.contains(&k), s.borrowed.contains(&k));
                            Member::new(adopt.take(m.fd), role)
                        })
                        .collect(),
                    s.routed,
                    s.probe,
                ),
                stream: s.stream,
                addr: s.addr,
                v6only: s.v6only,
                shared_addr: s.shared_addr,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's saved form as written since the reserves were added:
    /// a steered TCP group (a routed member, a retired spare, a starting
    /// generation's member under a probe, the reserve) and a frozen UDP
    /// group (a handed-out member of the previous supervisor's).
    const CURRENT: &str = r#"{
        "slots": [
            {
                "listener": {"name": "http", "bound": "127.0.0.1:8080",
                    "starter_key": "127.0.0.1:8080", "inherited": false,
                    "fd": null, "created": null, "lock": null},
                "mode": "Steer",
                "members": [[5, 1, false, false, false], [6, null, true, true, false],
                    [7, 2, false, false, false], [8, null, false, false, false]],
                "routed": 0,
                "probe": [40000, 2],
                "stream": true,
                "addr": "127.0.0.1:8080",
                "v6only": false,
                "frozen": false,
                "shared_addr": null,
                "reserves": [3]
            },
            {
                "listener": {"name": "dns", "bound": "udp:[::1]:5353",
                    "starter_key": "udp:[::1]:5353", "inherited": true,
                    "fd": null, "created": null, "lock": null},
                "mode": {"Shared": "another process joined its reuseport group"},
                "members": [[9, 0, false, false, true], [10, null, false, false, false]],
                "routed": 1,
                "probe": null,
                "stream": false,
                "addr": "[::1]:5353",
                "v6only": true,
                "frozen": true,
                "shared_addr": null,
                "reserves": []
            }
        ],
        "unwatched": [9],
        "steer": true,
        "split": [[1, 90], [2, 10]]
    }"#;

    fn value(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    /// What is read is written back as it was: the format stays the one
    /// older supervisors write and read.
    #[test]
    fn the_saved_form_is_written_as_it_is_read() {
        let saved: Saved = serde_json::from_str(CURRENT).unwrap();
        assert_eq!(serde_json::to_value(&saved).unwrap(), value(CURRENT));
    }

    /// A state written before the reserves and the split (as the build of
    /// 0940d0a wrote it) is read, with none of either.
    #[test]
    fn a_saved_form_without_reserves_or_split_is_read() {
        let mut old = value(CURRENT);
        old.as_object_mut().unwrap().remove("split");
        for s in old["slots"].as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("reserves");
        }
        let saved: Saved = serde_json::from_value(old.clone()).unwrap();
        let mut want = old;
        want["split"] = serde_json::json!([]);
        for s in want["slots"].as_array_mut().unwrap() {
            s["reserves"] = serde_json::json!([]);
        }
        assert_eq!(serde_json::to_value(&saved).unwrap(), want);
    }

    /// The members of the state above in their roles; every role is
    /// written so as to be read back the same (but borrowing: a state is
    /// never written while another supervisor's sockets are borrowed).
    #[test]
    fn members_are_read_in_their_roles() {
        let roles = |s: &SavedSlot| -> Vec<Role> {
            let reads = |(k, m): (usize, &SavedMember)| {
                m.role(s.reserves.contains(&k), s.borrowed.contains(&k))
            };
            s.members.iter().enumerate().map(reads).collect()
        };
        let saved: Saved = serde_json::from_str(CURRENT).unwrap();
        let of = |g| Role::live(Owner::Generation(Generation(g)));
        assert_eq!(
            roles(&saved.slots[0]),
            vec![of(1), Role::SPARE, of(2), Role::RESERVE]
        );
        let handed = Role::Live {
            owner: Owner::Previous,
            pinned: true,
            borrowed: false,
        };
        assert_eq!(
            roles(&saved.slots[1]),
            vec![handed, Role::live(Owner::Nobody)]
        );
        let taken = saved.into_previous();
        assert_eq!(
            roles(&taken.slots[0]),
            vec![
                Role::live(Owner::Previous),
                Role::live(Owner::Previous),
                Role::live(Owner::Previous),
                Role::Reserve { borrowed: true }
            ]
        );
        for role in [
            of(3),
            Role::live(Owner::Previous),
            Role::live(Owner::Nobody),
            handed,
            Role::RESERVE,
            Role::SPARE,
            Role::Retired { spare: false },
        ] {
            let (m, reserve) = SavedMember::new(7, role);
            assert_eq!(m.role(reserve, false), role);
            let wire = serde_json::to_value(m).unwrap();
            assert_eq!(serde_json::from_value::<SavedMember>(wire).unwrap(), m);
        }
    }

    /// A frozen group is written as shared, and frozen; every mode is
    /// read back as it was written.
    #[test]
    fn a_frozen_group_is_written_as_shared_and_frozen() {
        let saved: Saved = serde_json::from_str(CURRENT).unwrap();
        let modes: Vec<Mode> = saved
            .slots
            .into_iter()
            .map(|s| s.mode.mode(s.frozen))
            .collect();
        let why = "another process joined its reuseport group".to_string();
        assert_eq!(modes, vec![Mode::Steer, Mode::Frozen(why)]);
        for mode in [
            Mode::Steer,
            Mode::Frozen("steering failed: EMFILE".into()),
            Mode::Shared("--handoff shared".into()),
        ] {
            let (written, frozen) = SavedMode::new(&mode);
            assert_eq!(written.mode(frozen), mode);
        }
    }

    /// Taking over: every member is the previous supervisor's but the TCP
    /// group's reserve (the new supervisor's first generation takes it);
    /// nothing is retired or spare; no probe, no split, nothing unwatched.
    #[test]
    fn taken_over_every_member_is_the_previous_supervisors_but_the_reserve() {
        let saved: Saved = serde_json::from_str(CURRENT).unwrap();
        let mut want = value(CURRENT);
        want["slots"][0]["members"] = serde_json::json!([
            [5, 0, false, false, false],
            [6, 0, false, false, false],
            [7, 0, false, false, false],
            [8, null, false, false, false]
        ]);
        want["slots"][0]["probe"] = serde_json::Value::Null;
        want["slots"][1]["members"] =
            serde_json::json!([[9, 0, false, false, true], [10, 0, false, false, false]]);
        want["unwatched"] = serde_json::json!([]);
        want["split"] = serde_json::json!([]);
        let taken = saved.into_previous();
        assert_eq!(serde_json::to_value(&taken).unwrap(), want);
        assert_eq!(taken.slots[0].borrowed, vec![3]);
        assert!(taken.slots[1].borrowed.is_empty());
        // Without a reserve, a spare of the group's is taken instead.
        let mut no_reserve = value(CURRENT);
        no_reserve["slots"][0]["reserves"] = serde_json::json!([]);
        let taken = serde_json::from_value::<Saved>(no_reserve)
            .unwrap()
            .into_previous();
        let members = serde_json::to_value(&taken).unwrap()["slots"][0]["members"].clone();
        assert_eq!(
            members[1],
            serde_json::json!([6, null, false, false, false])
        );
        assert_eq!(taken.slots[0].reserves, vec![1]);
        assert_eq!(taken.slots[0].borrowed, vec![1]);
    }
}
