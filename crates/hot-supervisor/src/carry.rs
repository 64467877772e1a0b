//! What crosses an `execve` or a takeover besides the state's text: the
//! fds it names ([`Keep`] while it is written, [`Adopt`] while it is read)
//! and instants as `CLOCK_MONOTONIC` readings ([`mono`]). Every part uses
//! it to save and restore itself; it depends on nothing of the
//! supervisor's, and never decides what is carried.

pub mod mono;

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Result, bail};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// The fds a state names, collected while it is written.
#[derive(Debug, Default)]
pub struct Keep(Vec<RawFd>);

impl Keep {
    /// Carry `fd`; its number is what the state records.
    pub fn fd(&mut self, fd: BorrowedFd<'_>) -> RawFd {
        let raw = fd.as_raw_fd();
        if !self.0.contains(&raw) {
            self.0.push(raw);
        }
        raw
    }

    /// The fds, for the state's list.
    pub fn list(&self) -> Vec<RawFd> {
        self.0.clone()
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
        // SAFETY: the fd is open (checked in `new`), was the old image's,
        // survived the exec because the old image cleared its close-on-exec
        // flag, and is taken only once (asserted above).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        fd
    }

    /// Fds listed but not taken (closed: nothing owns them).
    pub fn close_rest(self) {
        if self.received.is_some() {
            // Dropped with the map.
            return;
        }
        for raw in self.listed.difference(&self.taken) {
            // SAFETY: listed, open and not taken: nothing in this image owns
            // it.
            drop(unsafe { OwnedFd::from_raw_fd(*raw) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopting_checks_every_fd_first() {
        let e = Adopt::new(&[1_000_000]).unwrap_err().to_string();
        assert!(e.contains("not open"), "{e}");
        let e = Adopt::new(&[0, 0]).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
