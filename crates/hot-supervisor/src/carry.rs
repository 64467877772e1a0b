//! What crosses an `execve` or a takeover besides the state's text: the
//! fds it names ([`Keep`] while it is written, [`Adopt`] while it is read)
//! and instants as `CLOCK_MONOTONIC` readings ([`mono`]). Every part uses
//! it to save and restore itself; it depends on nothing of the
//! supervisor's, and never decides what is carried.
//!
//! A [`Keep`] never holds a part's fd past the part's own `save`: each fd
//! is acted on while its owner lends it, so no number is ever turned back
//! into an fd on this side of the exec. On the other side, [`Adopt`] owns
//! the fds the state names, each once.

pub mod mono;

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Result, bail};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// The fds a state names, collected while it is written: each part lends
/// its fds to [`Keep::fd`] while it writes its saved form, and the keep
/// records the number the state names each one by and, while the fd is
/// lent, does with it what the state is written for ([`Carry`]).
#[derive(Debug, Default)]
pub struct Keep {
    carry: Carry,
    numbers: Vec<RawFd>,
    /// The same numbers, to find one fast (a state may name thousands).
    seen: BTreeSet<RawFd>,
    /// With [`Carry::Duplicates`]: one for each number, in order.
    duplicates: Vec<OwnedFd>,
    /// The first duplicate that could not be made.
    failed: Option<io::Error>,
}

/// What a [`Keep`] does with each fd lent to it, besides recording its
/// number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Carry {
    /// Nothing: the state is to be read, not acted on (an upgrade's check).
    #[default]
    Nothing,
    /// A duplicate of each (close-on-exec), for another process: a
    /// takeover sends them.
    Duplicates,
    /// Each one's close-on-exec flag cleared: an exec is to carry them.
    AcrossExec,
    /// Each one's close-on-exec flag set again: the exec failed.
    Back,
}

impl Keep {
    /// An empty keep that does `carry` with each fd.
    pub fn new(carry: Carry) -> Keep {
        Keep {
            carry,
            ..Keep::default()
        }
    }

    /// Carry `fd`; its number is what the state records. An fd lent twice
    /// is carried once.
    pub fn fd(&mut self, fd: BorrowedFd<'_>) -> RawFd {
        let raw = fd.as_raw_fd();
        if !self.seen.insert(raw) {
            return raw;
        }
        self.numbers.push(raw);
        match self.carry {
            Carry::Nothing => {}
            Carry::Duplicates => match fd.try_clone_to_owned() {
                Ok(dup) => self.duplicates.push(dup),
                Err(e) => {
                    self.failed.get_or_insert(e);
                }
            },
            // A flag that cannot be changed shows in the new image: the fd
            // is not open there, and it refuses the state by name.
            Carry::AcrossExec => {
                let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()));
            }
            Carry::Back => {
                let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
            }
        }
        raw
    }

    /// The fds' numbers, for the state's list.
    pub fn numbers(&self) -> Vec<RawFd> {
        self.numbers.clone()
    }

    /// With [`Carry::Duplicates`]: each number with its duplicate.
    ///
    /// # Errors
    /// A duplicate could not be made (out of fds).
    pub fn into_duplicates(self) -> io::Result<Vec<(RawFd, OwnedFd)>> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        Ok(self.numbers.into_iter().zip(self.duplicates).collect())
    }
}

/// Taking the carried fds back, each once: the fds an exec kept (their
/// numbers unchanged), or fds received from another supervisor (a
/// takeover), each known by the number it had there.
#[derive(Debug)]
pub struct Adopt {
    listed: BTreeSet<RawFd>,
    taken: BTreeSet<RawFd>,
    received: Option<std::collections::BTreeMap<RawFd, OwnedFd>>,
}

impl Adopt {
    /// Check that every listed fd is open, before any is taken.
    ///
    /// # Errors
    /// A listed fd is closed, or listed twice.
    pub fn new(fds: &[RawFd]) -> Result<Adopt> {
        let mut listed = BTreeSet::new();
        for &fd in fds {
            if fd < 0 || !listed.insert(fd) {
                bail!("the state lists fd {fd} twice (or a negative fd)");
            }
            // SAFETY: F_GETFD on any number is harmless; it only asks
            // whether the fd is open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                bail!("fd {fd} named by the state is not open");
            }
        }
        Ok(Adopt {
            listed,
            taken: BTreeSet::new(),
            received: None,
        })
    }

    /// Fds received from another supervisor: `fds[k]` was its fd `numbers[k]`.
    ///
    /// # Errors
    /// The counts differ, or a number is listed twice.
    pub fn received(numbers: &[RawFd], fds: Vec<OwnedFd>) -> Result<Adopt> {
        if numbers.len() != fds.len() {
            bail!("{} fds received for {} named", fds.len(), numbers.len());
        }
        let mut map = std::collections::BTreeMap::new();
        for (n, fd) in numbers.iter().zip(fds) {
            if map.insert(*n, fd).is_some() {
                bail!("fd {n} is named twice");
            }
        }
        Ok(Adopt {
            listed: numbers.iter().copied().collect(),
            taken: BTreeSet::new(),
            received: Some(map),
        })
    }

    /// Own fd `raw` again (close-on-exec set again).
    ///
    /// # Panics
    /// `raw` is not in the state's list, or taken twice: the state's writer
    /// lists every fd it names exactly once, so this is a bug.
    pub fn take(&mut self, raw: RawFd) -> OwnedFd {
        assert!(
            self.listed.contains(&raw) && self.taken.insert(raw),
            "fd {raw} taken twice or not listed in the upgrade state"
        );
        if let Some(map) = &mut self.received {
            return map.remove(&raw).expect("a listed fd was received");
        }
        let fd = inherited(raw);
        let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        fd
    }

    /// Fds listed but not taken (closed: nothing owns them).
    pub fn close_rest(self) {
        if self.received.is_some() {
            // Dropped with the map.
            return;
        }
        for &raw in self.listed.difference(&self.taken) {
            drop(inherited(raw));
        }
    }
}

/// Own `raw`, an fd the state names that this image inherited through the
/// exec, listed and not yet taken: the one place where a carried number
/// becomes an fd again.
fn inherited(raw: RawFd) -> OwnedFd {
    // SAFETY: every caller passes a number from the state's list, checked
    // open in `Adopt::new` (the old image cleared its close-on-exec flag,
    // so it survived the exec) and taken once: `take` records it in
    // `taken` first, and `close_rest` only takes those not in `taken`,
    // consuming the `Adopt`. Nothing else in this image owns it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap())
            .contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn a_keep_acts_on_each_fd_while_it_is_lent() {
        use std::os::fd::AsFd;
        let (a, b) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let numbers = [a.as_raw_fd(), b.as_raw_fd()];

        let mut keep = Keep::new(Carry::Duplicates);
        for fd in [a.as_fd(), b.as_fd(), a.as_fd()] {
            keep.fd(fd);
        }
        assert_eq!(keep.numbers(), numbers, "each fd once, in order");
        let dups = keep.into_duplicates().unwrap();
        assert_eq!(dups.len(), 2);
        for ((n, dup), original) in dups.iter().zip([&a, &b]) {
            assert_eq!(*n, original.as_raw_fd());
            assert_ne!(dup.as_raw_fd(), *n);
            assert!(cloexec(dup.as_fd()));
        }

        let mut keep = Keep::new(Carry::AcrossExec);
        keep.fd(a.as_fd());
        assert!(!cloexec(a.as_fd()) && cloexec(b.as_fd()));
        let mut keep = Keep::new(Carry::Back);
        keep.fd(a.as_fd());
        assert!(cloexec(a.as_fd()));

        let mut keep = Keep::default();
        keep.fd(b.as_fd());
        assert!(cloexec(b.as_fd()));
        assert_eq!(keep.numbers(), [b.as_raw_fd()]);
    }

    #[test]
    fn adopting_checks_every_fd_first() {
        let e = Adopt::new(&[1_000_000]).unwrap_err().to_string();
        assert!(e.contains("not open"), "{e}");
        let e = Adopt::new(&[0, 0]).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
