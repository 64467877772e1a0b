//! The supervisor's own members of a group that no generation holds: the
//! *reserve*, the next generation's socket made ahead of time, so that a
//! reload asks nothing of the kernel per listener; and the *spares*, which
//! let a retired member close without moving the routed one. Decides when
//! they are made, which of them a new generation takes, and closes retired
//! members; it never routes.
//!
//! How many spares there can be follows from the kernel's order. A member
//! that leaves is replaced in its slot by the last member, and the routed
//! member never moves (see [`Steering::flush_retired`]): so while the member
//! at index r is routed, exactly r members stand before it, and however they
//! leave, as many take their places. Once the generations that held them are
//! gone, they are the supervisor's idle members, the reserve and spares,
//! until a generation is routed at a lower index. So a new generation takes
//! the lowest idle member ([`idle_member`]): only sockets still in use then
//! stand before it, and once their generations have gone there are at most
//! that many spares less one (the reserve). That is bounded by how many
//! generations hold a socket at once, never by the number of reloads; but it
//! is no constant: after ten reloads within one `--quiesce`, the eleventh
//! generation is routed with the ten before it still standing, and nine
//! spares stay until the twelfth is routed. The decisions ([`idle_member`],
//! [`next_close`]) read a group only, and are tested without sockets.

use super::group::Group;
use super::member::{Member, Role, Standing};
use super::{Mode, Notice, Slot, Steering};

impl Steering {
    /// Make the next generation's socket of every steered listener ahead
    /// of time, so that a reload asks nothing of the kernel per listener
    /// before the new generation starts. Called by the driver when no
    /// generation is starting (off a reload's critical path): for each
    /// steered group without a reserve, a spare socket becomes its
    /// reserve, or a new member joins (last, under the group's program,
    /// which routes nothing to it); the retired members it lets go are
    /// closed. At most `budget` new members a call (so the loop is never
    /// held for long); returns whether some group still lacks one.
    ///
    /// A reserve is also what a replaced generation's socket is swapped
    /// with when it leaves (while it is the last member, the routed member
    /// never has to move and no spare is needed: reloads further apart
    /// than a generation's quiesce and drain need none); and a supervisor
    /// that takes the sockets over starts its first generation on the
    /// previous supervisor's reserve (see [`super::Saved::into_previous`]).
    pub fn replenish(&mut self, budget: usize, notices: &mut Vec<Notice>) -> bool {
        if self.held {
            return false;
        }
        let left = self.make_reserves(budget);
        if !left && !self.unscreened.is_empty() {
            // Once for all the batches (a look at every listening socket of
            // the machine, so never once per batch): strangers first, as
            // closing moves the last member; then what the reserves let go.
            let mut changed = std::mem::take(&mut self.unscreened);
            changed.sort_unstable();
            changed.dedup();
            self.after_change(&changed, notices);
            for i in changed {
                if self.slots[i].mode == Mode::Steer {
                    self.flush_retired(i, notices);
                }
            }
        }
        left
    }

    /// The batch of [`Steering::replenish`]: reserves for at most `budget`
    /// groups (the groups that got one are left in `unscreened`); whether
    /// some group still lacks one.
    fn make_reserves(&mut self, budget: usize) -> bool {
        if self.no_reserves {
            return false;
        }
        let lacking =
            |s: &Slot| s.mode == Mode::Steer && !s.group.iter().any(|m| m.role.is_reserve());
        // A spare listens in the group and has received nothing: the lowest
        // one becomes the reserve, with no fd more.
        for slot in self.slots.iter_mut() {
            if !lacking(slot) {
                continue;
            }
            if let Some(k) = idle_member(&slot.group) {
                slot.group[k].role = Role::RESERVE;
            }
        }
        let missing = self.slots.iter().filter(|s| lacking(s)).count();
        if missing == 0 {
            return false;
        }
        // Reserves only where the fd limit leaves room for them and still
        // for a reload that joins a new member for every steered listener,
        // with a margin for everything else (control connections, notify
        // sockets, pipes): a reserve must never be why something fails.
        let held: usize = self.slots.iter().map(|s| s.group.len().max(1)).sum();
        let steered = self.slots.iter().filter(|s| s.mode == Mode::Steer).count();
        let limit = open_files_limit();
        if held + missing + steered + FD_MARGIN > limit {
            log::debug!(
                "no sockets made ahead of time: {held} held, {missing} more and {steered} for a reload would pass the open-files limit ({limit}) less {FD_MARGIN}"
            );
            self.no_reserves = true;
            return false;
        }
        // At least an eighth of the groups a turn: every turn also polls
        // every generation's socket (for a hang-up), so a fixed batch would
        // make the whole cost grow with the square of the listeners.
        let budget = budget.max(steered.div_ceil(8));
        let mut made = 0;
        let mut changed = Vec::new();
        let mut left = false;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.mode != Mode::Steer || slot.group.iter().any(|m| m.role.is_reserve()) {
                continue;
            }
            if made == budget {
                left = true;
                break;
            }
            match self.join(i) {
                Ok(fd) => {
                    self.slots[i].group.push(Member::new(fd, Role::RESERVE));
                    made += 1;
                    changed.push(i);
                }
                Err(e) => {
                    // Out of fds, most likely: reloads join as before, and
                    // reserves are tried again once a generation is gone.
                    log::debug!(
                        "listener {:?}: no socket made ahead of time: {e:#}",
                        self.slots[i].listener.name
                    );
                    self.no_reserves = true;
                    break;
                }
            }
        }
        self.unscreened.extend(changed);
        left
    }

    /// Close the retired members of slot `i` without ever moving the routed
    /// member. The kernel fills a leaving member's slot with the group's
    /// last member; were that the routed one, the program's index would
    /// point past the end until re-attached, and new connections would be
    /// spread by hash over every member meanwhile. So when the routed member
    /// is last, a spare socket of the supervisor's joins first and is the
    /// one that moves (see [`next_close`]); spares are closed later, when
    /// that moves no routed member: those after the routed member as soon
    /// as it is not the last one, those before it once a generation is
    /// routed at a lower index (see the module documentation). Returns
    /// whether the group changed.
    pub(super) fn flush_retired(&mut self, i: usize, notices: &mut Vec<Notice>) -> bool {
        let mut changed = false;
        // Each pass closes one member or ends: bounded by the member count.
        for _ in 0..=self.slots[i].group.len() * 2 {
            match next_close(&self.slots[i].group) {
                None => break,
                Some(Close::Now(k)) => {
                    self.remove(i, k, notices);
                    changed = true;
                }
                Some(Close::AfterSpare(k)) => match self.join(i) {
                    Ok(fd) => {
                        self.slots[i].group.push(Member::new(fd, Role::SPARE));
                        self.remove(i, k, notices);
                        changed = true;
                    }
                    Err(e) => {
                        // Without a spare, closing would move the routed
                        // member: it waits for a change that lets it go.
                        log::debug!("no spare socket ({e:#}): closing later");
                        break;
                    }
                },
            }
        }
        changed
    }
}

/// The idle member a new generation of `group` takes, or a spare becomes
/// the reserve: the lowest of the reserve and the spares that still listen
/// (they have received nothing), or `None` if there is none (a new member
/// joins, last). The lowest, because as many members as stand before a
/// routed member stay in the group while it is routed (see the module
/// documentation): taking the lowest leaves before it only members still in
/// use.
pub(super) fn idle_member<M: Standing>(group: &Group<M>) -> Option<usize> {
    group.iter().position(|m| {
        let role = m.role();
        role.is_reserve() || (role.is_spare() && m.listens())
    })
}

/// One step in closing a group's retired members (see [`next_close`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Close {
    /// Close member k: the member that takes its slot is not the routed
    /// one.
    Now(usize),
    /// Member k, retired, stands before the routed member, which is last:
    /// a spare joins first (last), then member k is closed and the spare
    /// takes its slot.
    AfterSpare(usize),
}

/// The next step in closing `group`'s retired members without moving the
/// routed member, or `None` when nothing more can be closed. Retired
/// members (spares too) go from the last down, wherever the member that
/// fills the slot is not the routed one; a retired member that is not a
/// spare and can only go by moving the routed member goes after a spare
/// has joined. A spare that would need another spare stays.
pub(super) fn next_close<M: Standing>(group: &Group<M>) -> Option<Close> {
    let last = group.len().checked_sub(1)?;
    // A member that no longer listens has left the group already (a
    // server shut it down): closing it moves nothing.
    let moves_nothing_routed =
        |k: usize| k == last || group.routed() != last || !group[k].listens();
    if let Some(k) = (0..=last)
        .rev()
        .find(|&k| group[k].role().is_retired() && moves_nothing_routed(k))
    {
        return Some(Close::Now(k));
    }
    (0..=last)
        .find(|&k| group[k].role() == Role::Retired { spare: false })
        .map(Close::AfterSpare)
}

/// Fds kept free of reserves (see [`Steering::replenish`]).
const FD_MARGIN: usize = 64;

/// The soft limit on open files (`RLIMIT_NOFILE`).
fn open_files_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::super::group::Group;
    use super::super::member::{Owner, Role, Standing};
    use super::{Close, idle_member, next_close};
    use crate::machine::Generation;

    /// A member as these tests see it: a number to follow it by, its role,
    /// and whether it listens (a server may have shut it down).
    #[derive(Clone, Debug)]
    struct Fake {
        id: u64,
        role: Role,
        listens: bool,
    }

    impl Standing for Fake {
        fn role(&self) -> Role {
            self.role
        }

        fn listens(&self) -> bool {
            self.listens
        }
    }

    fn of(g: u64) -> Role {
        Role::live(Owner::Generation(Generation(g)))
    }

    fn group(roles: &[Role], routed: usize) -> Group<Fake> {
        let members = (0..)
            .zip(roles)
            .map(|(id, &role)| Fake {
                id,
                role,
                listens: true,
            })
            .collect();
        Group::new(members, routed, None)
    }

    #[test]
    fn a_new_generation_takes_the_lowest_idle_member_that_listens() {
        let g = group(&[of(1), Role::SPARE, of(2), Role::RESERVE], 2);
        assert_eq!(idle_member(&g), Some(1));
        let mut g = group(&[Role::SPARE, of(1), Role::SPARE, Role::RESERVE], 1);
        g[0].listens = false;
        assert_eq!(idle_member(&g), Some(2));
        let g = group(&[of(1), Role::Retired { spare: false }, of(2)], 2);
        assert_eq!(idle_member(&g), None);
    }

    #[test]
    fn retired_members_go_without_moving_the_routed_one() {
        // The routed member is last: a retired one before it needs a spare;
        // a spare before it stays.
        let g = group(&[Role::Retired { spare: false }, of(2)], 1);
        assert_eq!(next_close(&g), Some(Close::AfterSpare(0)));
        let g = group(&[Role::SPARE, of(2)], 1);
        assert_eq!(next_close(&g), None);
        // One that left the group already (a server shut it down) moves
        // nothing.
        let mut g = group(&[Role::SPARE, of(2)], 1);
        g[0].listens = false;
        assert_eq!(next_close(&g), Some(Close::Now(0)));
        // Something after the routed member: the last retired one goes.
        let g = group(&[Role::SPARE, of(2), Role::SPARE, of(3)], 1);
        assert_eq!(next_close(&g), Some(Close::Now(2)));
        let g = group(&[Role::SPARE, of(2), of(3)], 1);
        assert_eq!(next_close(&g), Some(Close::Now(0)));
        // The last member retired: closing it moves nothing.
        let g = group(&[of(2), Role::Retired { spare: false }], 0);
        assert_eq!(next_close(&g), Some(Close::Now(1)));
    }

    /// One TCP group changed as `Steering` changes it, with the same
    /// decisions in the same order (the kernel's order kept by [`Group`]),
    /// checking at every leave that the routed member stays where it is.
    #[derive(Clone, Debug)]
    struct Sim {
        group: Group<Fake>,
        ids: u64,
        /// For each generation: the older generations that held a member
        /// when it took its own.
        older: BTreeMap<u64, usize>,
    }

    impl Sim {
        /// Generation 1 alone, routed.
        fn new() -> Sim {
            Sim {
                group: group(&[of(1)], 0),
                ids: 1,
                older: BTreeMap::from([(1, 0)]),
            }
        }

        fn join(&mut self, role: Role) {
            self.group.push(Fake {
                id: self.ids,
                role,
                listens: true,
            });
            self.ids += 1;
        }

        /// Member `k` leaves (`Steering::remove`): never the routed one,
        /// and the routed one never moves.
        fn close(&mut self, k: usize) {
            let routed = self.group.routed();
            assert_ne!(k, routed, "the routed member closed: {:?}", self.group);
            let id = self.group[routed].id;
            self.group.remove(k);
            assert_eq!(self.group.routed(), routed, "the routed member moved");
            assert_eq!(self.group[routed].id, id);
        }

        /// `Steering::flush_retired`.
        fn flush(&mut self) {
            for _ in 0..=self.group.len() * 2 {
                match next_close(&self.group) {
                    None => return,
                    Some(Close::Now(k)) => self.close(k),
                    Some(Close::AfterSpare(k)) => {
                        self.join(Role::SPARE);
                        self.close(k);
                    }
                }
            }
            panic!("flushing did not end: {:?}", self.group);
        }

        fn position(&self, g: u64) -> usize {
            let held = |m: &Fake| m.role.held_by(Generation(g));
            self.group
                .iter()
                .position(held)
                .expect("a member of its own")
        }

        fn live(&self) -> usize {
            self.group
                .iter()
                .filter(|m| m.role.generation().is_some())
                .count()
        }

        /// A reload (`Steering::sockets_for`).
        fn spawn(&mut self, g: u64) {
            self.older.insert(g, self.live());
            match idle_member(&self.group) {
                Some(k) => {
                    let role = &mut self.group[k].role;
                    if role.is_spare() {
                        *role = Role::RESERVE;
                    }
                    assert!(role.take(Generation(g)));
                }
                None => self.join(of(g)),
            }
            self.flush();
        }

        /// `g` is ready (`Steering::route`).
        fn route(&mut self, g: u64) {
            let k = self.position(g);
            self.group.set_routed(k);
            self.flush();
        }

        /// `g` is gone (`Steering::release`).
        fn exit(&mut self, g: u64) {
            let k = self.position(g);
            assert_ne!(k, self.group.routed());
            assert!(self.group[k].role.release());
            self.flush();
        }

        /// The loop has a turn with no generation starting
        /// (`Steering::replenish`).
        fn idle(&mut self) {
            if self.group.iter().any(|m| m.role.is_reserve()) {
                return;
            }
            match idle_member(&self.group) {
                Some(k) => self.group[k].role = Role::RESERVE,
                None => {
                    self.join(Role::RESERVE);
                    self.flush();
                }
            }
        }

        fn spares(&self) -> usize {
            self.group.iter().filter(|m| m.role.is_spare()).count()
        }

        fn reserves(&self) -> usize {
            self.group.iter().filter(|m| m.role.is_reserve()).count()
        }

        /// The older generations that held a member when the routed one
        /// took its own.
        fn older_than_routed(&self) -> usize {
            let routed = &self.group[self.group.routed()];
            let g = routed.role.generation().expect("a generation's").0;
            self.older[&g]
        }
    }

    /// Ten reloads within one `--quiesce` (the first ten of
    /// `faults::a_thousand_reloads_under_load` can take less than its
    /// 50 ms): the eleventh generation is routed while the ten before it
    /// still hold their members. Those ten slots stay filled while it is
    /// routed: nine spares and the reserve once their generations are gone,
    /// and no order of joining and closing can do with fewer; they go when
    /// the next generation is routed before them.
    #[test]
    fn ten_generations_at_once_leave_nine_spares_until_the_next_is_routed() {
        let mut s = Sim::new();
        for g in 2..=11 {
            s.idle();
            s.spawn(g);
            s.route(g);
        }
        s.idle();
        assert_eq!(s.group.routed(), 10);
        for g in 1..=10 {
            s.exit(g);
            s.idle();
        }
        assert_eq!((s.spares(), s.reserves(), s.group.len()), (9, 1, 11));
        assert_eq!(s.older_than_routed(), 10);
        s.spawn(12);
        assert_eq!(s.position(12), 0, "the lowest idle member");
        s.route(12);
        assert_eq!((s.spares(), s.reserves(), s.group.len()), (0, 0, 2));
    }

    /// A small xorshift generator: the same runs every time.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The generations due to go by time `t` go, each followed by a turn
    /// of the loop unless one is `starting`.
    fn exits_until(s: &mut Sim, gone: &mut BTreeSet<(u64, u64)>, t: u64, starting: bool) {
        while let Some(&(at, g)) = gone.first() {
            if at > t {
                break;
            }
            gone.pop_first();
            s.exit(g);
            if !starting {
                s.idle();
            }
            assert!(s.spares() <= s.older_than_routed(), "{:?}", s.group);
        }
    }

    /// 1,000 reloads back to back, 40 times, with random timings (in
    /// microseconds) of the new generation's start, of when each replaced
    /// generation goes (a 50 ms quiesce and its drain: from before the next
    /// reload to dozens of reloads later), and of whether the loop has a
    /// turn before a reload. The routed member never moves (checked at
    /// every leave); the spares, at any time, are no more than the older
    /// generations that held a member when the routed one took its own;
    /// and, were the reloads to stop there, once those have gone, that
    /// many less one (the reserve). However many reloads: the count
    /// follows how many generations hold a member at once, never the
    /// number of reloads.
    #[test]
    fn a_thousand_fast_reloads_keep_the_spares_to_the_generations_alive_at_once() {
        for seed in 1..=40u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1000_0001));
            // The pace of this run: up to 20 ms between an answer and the
            // next reload, a start of up to 20 ms, a drain of up to 60 ms
            // (one in ten up to 200 ms more).
            let gap = 1 + rng.below(20_000);
            let start = 1 + rng.below(20_000);
            let drain = 5_000 * (1 + rng.below(12));
            let mut s = Sim::new();
            let mut now = 0u64;
            let mut gone = BTreeSet::new();
            for g in 2..=1001 {
                // Between the answer and the next reload: exits (each
                // followed by a turn of the loop), and maybe a turn.
                now += rng.below(gap);
                exits_until(&mut s, &mut gone, now, false);
                if rng.below(4) != 0 {
                    s.idle();
                }
                s.spawn(g);
                // The start: exits, and no turn makes a reserve.
                now += 500 + rng.below(start);
                exits_until(&mut s, &mut gone, now, true);
                s.route(g);
                let mut life = 50_000 + rng.below(drain);
                if rng.below(10) == 0 {
                    life += rng.below(200_000);
                }
                gone.insert((now + life, g - 1));
                assert!(s.spares() <= s.older_than_routed(), "{:?}", s.group);
                // Were this the last reload: every older generation goes.
                let mut after = s.clone();
                exits_until(&mut after, &mut gone.clone(), u64::MAX, false);
                assert_eq!(after.live(), 1);
                let older = s.older[&g];
                assert!(
                    after.spares() <= older.saturating_sub(1),
                    "seed {seed}, generation {g}: {} spares, {older} older generations at its start: {:?}",
                    after.spares(),
                    after.group
                );
                // The routed member, the reserve and the spares.
                assert!(after.group.len() <= older + 1, "{:?}", after.group);
            }
        }
    }
}
