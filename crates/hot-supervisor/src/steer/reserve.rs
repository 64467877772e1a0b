//! The supervisor's own members of a group that no generation holds: the
//! *reserve*, the next generation's socket made ahead of time, so that a
//! reload asks nothing of the kernel per listener; and the *spares*, which
//! let a retired member close without moving the routed one. Decides when
//! they are made, and closes retired members; it never routes.

use std::os::fd::AsFd;

use super::member::{Member, Role};
use super::socket::listening;
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
    /// A reserve is also what keeps sockets from piling up: it is the last
    /// member whenever a replaced generation's socket is closed, so the
    /// routed member never has to move and no spare is needed; and a
    /// supervisor that takes the sockets over starts its first generation
    /// on the previous supervisor's reserve (see [`super::Saved::into_previous`]).
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
        // A spare listens in the group and has received nothing: it becomes
        // the reserve, with no fd more.
        for slot in self.slots.iter_mut() {
            if !lacking(slot) {
                continue;
            }
            if let Some(m) = slot
                .group
                .iter_mut()
                .find(|m| m.role.is_spare() && listening(m.fd.as_fd()))
            {
                m.role = Role::RESERVE;
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
    /// one that moves; spares are closed later, when that moves no routed
    /// member (once the next generation's socket has joined, it is the last
    /// one). Returns whether the group changed.
    pub(super) fn flush_retired(&mut self, i: usize, notices: &mut Vec<Notice>) -> bool {
        let mut changed = false;
        // Each pass closes one member or ends: bounded by the member count.
        for _ in 0..=self.slots[i].group.len() * 2 {
            let slot = &self.slots[i];
            let Some(last) = slot.group.len().checked_sub(1) else {
                break;
            };
            // A member that no longer listens has left the group already
            // (a server shut it down): closing it moves nothing.
            let safe = |k: usize| {
                k == last || slot.group.routed() != last || !listening(slot.group[k].fd.as_fd())
            };
            if let Some(k) = (0..=last)
                .rev()
                .find(|&k| slot.group[k].role.is_retired() && safe(k))
            {
                self.remove(i, k, notices);
                changed = true;
                continue;
            }
            // A retired member (not a spare) that only the spare can free.
            let Some(k) =
                (0..=last).find(|&k| slot.group[k].role == Role::Retired { spare: false })
            else {
                break;
            };
            match self.join(i) {
                Ok(fd) => {
                    self.slots[i].group.push(Member::new(fd, Role::SPARE));
                    self.remove(i, k, notices);
                    changed = true;
                }
                Err(e) => {
                    // Without a spare, closing would move the routed member:
                    // it waits for the next generation's socket instead.
                    log::debug!("no spare socket ({e:#}): closing later");
                    break;
                }
            }
        }
        changed
    }
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
