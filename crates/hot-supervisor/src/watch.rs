//! `--watch PATH`: a reload when a watched file or directory changes, with
//! inotify from the poll loop (no thread, no polling timer).
//!
//! Owns the inotify fd, its watches and the debounce timer. For each path
//! it watches the path itself (following a symlink to what it names) and
//! the directory that holds it (for the path's own name), so that it sees
//! the ways files really change:
//!
//! - written in place (`cp` truncates and writes): `IN_MODIFY`,
//!   `IN_CLOSE_WRITE` on the file;
//! - replaced by a rename (editors, `install`, a deploy that switches a
//!   `current` symlink, a new binary): `IN_MOVED_TO` of the name in its
//!   directory;
//! - a Kubernetes ConfigMap or Secret volume, where the visible names are
//!   symlinks through `..data` to a timestamped directory that is swapped
//!   atomically: for a watched directory, the `..data` rename inside it;
//!   for a watched file, the deletion of the old target it followed
//!   (`IN_DELETE_SELF`, `IN_MOVE_SELF`).
//!
//! After every batch of events the watches are set again, so that they
//! follow the new inodes. A change starts (or restarts) the quiet period
//! of `--watch-debounce`; when it has passed, the watcher says which path
//! changed first, once. It must never decide anything about the reload
//! itself: the driver asks the machine, which queues one reload during
//! another and never retries a failed one by itself.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// What each watch descriptor stands for.
#[derive(Clone, Debug)]
enum Target {
    /// The path itself (index into the paths).
    Path(usize),
    /// The directory holding path `usize`, whose name is the `String`.
    Parent(usize, std::ffi::OsString),
}

/// The watcher. See the module documentation.
pub struct Watcher {
    inotify: Inotify,
    paths: Vec<PathBuf>,
    watches: Vec<(WatchDescriptor, Target)>,
    debounce: Duration,
    /// The end of the current quiet period, and the first path that
    /// changed in it.
    due: Option<(Instant, usize)>,
    /// The last path that triggered a reload, and when.
    last: Option<(PathBuf, Instant)>,
}

/// Events that mean a watched file's content may have changed.
fn file_events() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
}

/// Events on a directory entry that mean the name now names something else.
fn entry_events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MODIFY
}

impl Watcher {
    /// Watch `paths`; a change is reported once `debounce` has passed
    /// without another.
    ///
    /// # Errors
    /// inotify cannot be set up; a path whose directory does not exist.
    pub fn new(paths: Vec<PathBuf>, debounce: Duration) -> Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("--watch: inotify")?;
        for p in &paths {
            let dir = parent(p);
            if !dir.is_dir() {
                anyhow::bail!(
                    "--watch {}: its directory {} does not exist",
                    p.display(),
                    dir.display()
                );
            }
        }
        let mut w = Watcher {
            inotify,
            paths,
            watches: Vec::new(),
            debounce,
            due: None,
            last: None,
        };
        w.arm();
        Ok(w)
    }

    /// The watched paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The last path that triggered a reload, and when.
    pub fn last(&self) -> Option<(&Path, Instant)> {
        self.last.as_ref().map(|(p, t)| (p.as_path(), *t))
    }

    /// (Re)set every watch, so that each follows what its path names now.
    fn arm(&mut self) {
        for (wd, _) in self.watches.drain(..) {
            // A watch whose inode is gone was removed by the kernel.
            let _ = self.inotify.rm_watch(wd);
        }
        for (i, p) in self.paths.iter().enumerate() {
            if let Ok(wd) = self.inotify.add_watch(p, file_events()) {
                self.watches.push((wd, Target::Path(i)));
            }
            let name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
            match self.inotify.add_watch(parent(p), entry_events()) {
                Ok(wd) => self.watches.push((wd, Target::Parent(i, name))),
                Err(e) => log::warn!("--watch {}: cannot watch its directory: {e}", p.display()),
            }
        }
    }

    /// The inotify fd, to poll for input.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// When the quiet period ends.
    pub fn deadline(&self) -> Option<Instant> {
        self.due.map(|(at, _)| at)
    }

    /// Read what changed; a change (re)starts the quiet period.
    pub fn on_readable(&mut self, now: Instant) {
        let mut changed = None;
        loop {
            match self.inotify.read_events() {
                Ok(events) if !events.is_empty() => {
                    for e in events {
                        let Some((_, target)) = self.watches.iter().find(|(wd, _)| *wd == e.wd)
                        else {
                            continue;
                        };
                        let hit = match target {
                            Target::Path(i) => Some(*i),
                            // In the directory: only the path's own name,
                            // or, for a watched directory's own entries,
                            // any (a ConfigMap's `..data` swap).
                            Target::Parent(i, name) => {
                                (e.name.as_deref() == Some(name.as_os_str())).then_some(*i)
                            }
                        };
                        if let Some(i) = hit {
                            log::debug!(
                                "--watch {}: {:?} {:?}",
                                self.paths[i].display(),
                                e.mask,
                                e.name
                            );
                            changed.get_or_insert(i);
                        }
                    }
                }
                Ok(_) | Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("--watch: reading inotify events: {e}");
                    break;
                }
            }
        }
        if let Some(i) = changed {
            let first = self.due.map_or(i, |(_, f)| f);
            self.due = Some((now + self.debounce, first));
            // The names may point at new inodes now.
            self.arm();
        }
    }

    /// The quiet period has passed: the path that changed first, once.
    pub fn on_timeout(&mut self, now: Instant) -> Option<PathBuf> {
        let (at, i) = self.due?;
        if at > now {
            return None;
        }
        self.due = None;
        let p = self.paths[i].clone();
        self.last = Some((p.clone(), now));
        Some(p)
    }
}

/// The directory that holds `p` (`.` for a bare name).
fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
