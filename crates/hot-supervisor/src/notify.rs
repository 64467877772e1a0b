//! The sd_notify receiver: one datagram socket per generation.
//!
//! Each generation gets its own socket, in a private 0700 directory, as its
//! `NOTIFY_SOCKET`. The socket a message arrives on names the generation,
//! also when the sender is a helper process of the child (a shell running
//! `systemd-notify --ready`) that may have exited before the datagram is
//! read, so no pid lookup can race. Credentials then only keep out other
//! users. Datagrams are parsed as systemd does (sd_notify(3) and systemd's
//! `src/shared/notify-recv.c`):
//! truncated, fd-carrying, credential-less and NUL-holding messages are
//! dropped, unknown keys ignored; the parsing is pure, in
//! [`hot_supervisor::parse::notify`].

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, bind, recvmsg,
    setsockopt, socket, sockopt,
};
use nix::unistd::Uid;

use hot_supervisor::parse::notify::{BUFFER_MAX, parse};
pub use hot_supervisor::parse::notify::{Message, Rejected};

/// The private directory holding the per-generation sockets; removed on
/// drop.
#[derive(Debug)]
pub struct NotifyDir {
    path: PathBuf,
}

impl NotifyDir {
    /// Create a fresh 0700 directory under `$RUNTIME_DIRECTORY`, else
    /// `$XDG_RUNTIME_DIR`, else the system temporary directory.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn create() -> Result<NotifyDir> {
        Self::create_under(false)
    }

    /// For `--user`: a fresh directory as [`NotifyDir::create`] makes, but
    /// only under a base that every user can pass through, then opened
    /// with [`NotifyDir::open_for_others`]. `$XDG_RUNTIME_DIR` is 0700 by
    /// the XDG Base Directory Specification, and `RuntimeDirectoryMode=`
    /// may make `$RUNTIME_DIRECTORY` so: a child running as another user
    /// could not reach a socket under either (connect(2) needs search
    /// permission on every directory of the path).
    ///
    /// # Errors
    /// The directory cannot be created or opened.
    pub fn create_for_others() -> Result<NotifyDir> {
        let dir = Self::create_under(true)?;
        dir.open_for_others()?;
        Ok(dir)
    }

    fn create_under(for_others: bool) -> Result<NotifyDir> {
        use std::os::unix::fs::PermissionsExt;
        // Every directory from the root down has the search bit for others.
        let passable = |p: &PathBuf| {
            p.ancestors()
                .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        };
        // A socket path must fit in sun_path (108 bytes): leave room for
        // "/supervisor-<pid>-XXXXXX/gen-<n>.sock".
        let fits = |p: &PathBuf| {
            p.is_absolute()
                && p.is_dir()
                && p.as_os_str().len() <= 60
                && (!for_others || passable(p))
        };
        // systemd's RuntimeDirectory= (its first entry) is private to the
        // service and writable under ProtectSystem=strict.
        let runtime = std::env::var_os("RUNTIME_DIRECTORY").and_then(|v| {
            let v = v.to_string_lossy().into_owned();
            v.split(':').next().map(PathBuf::from)
        });
        let base = runtime
            .filter(fits)
            .or_else(|| {
                std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .filter(fits)
            })
            .or_else(|| Some(std::env::temp_dir()).filter(fits))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let template = base.join(format!("supervisor-{}-XXXXXX", std::process::id()));
        // mkdtemp creates the directory with mode 0700.
        let path = nix::unistd::mkdtemp(&template)
            .with_context(|| format!("create notify directory {}", template.display()))?;
        Ok(NotifyDir { path })
    }

    /// Let other users reach sockets in the directory (mode 0711: they can
    /// pass through, not list it); each socket is then opened to its
    /// child's user alone with [`NotifySocket::allow`]. For `--user`.
    ///
    /// # Errors
    /// chmod failed.
    pub fn open_for_others(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("chmod 0711 {}", self.path.display()))
    }

    /// Bind the socket for worker `worker` of generation `generation`
    /// (each worker has its own, so that a `READY=1` names its worker
    /// whoever sends it).
    ///
    /// # Errors
    /// The socket cannot be created or bound.
    pub fn socket(&self, generation: u64, worker: u32) -> Result<NotifySocket> {
        let path = if worker == 0 {
            self.path.join(format!("gen-{generation}.sock"))
        } else {
            self.path.join(format!("gen-{generation}-{worker}.sock"))
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .context("create notify socket")?;
        setsockopt(&fd, sockopt::PassCred, &true).context("set SO_PASSCRED")?;
        bind(fd.as_raw_fd(), &UnixAddr::new(path.as_path())?)
            .with_context(|| format!("bind notify socket {}", path.display()))?;
        // 0600 whatever the umask (the directory is private anyway until
        // `--user` opens it); `allow` gives it to the child's user.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        Ok(NotifySocket {
            fd,
            path,
            allowed: None,
        })
    }
}

impl NotifyDir {
    /// Its path, for an in-place upgrade.
    pub fn save(&self) -> PathBuf {
        self.path.clone()
    }

    /// The directory an upgrade carried across (it exists already).
    pub fn restore(path: PathBuf) -> NotifyDir {
        NotifyDir { path }
    }
}

impl Drop for NotifyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One generation's notify socket; its file is removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    fd: OwnedFd,
    path: PathBuf,
    /// Besides the supervisor's own uid and root, messages from this uid
    /// (the child's, under `--user`) are accepted.
    allowed: Option<u32>,
}

impl NotifySocket {
    /// The value for the child's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Let user `uid` (the child's, under `--user`) send to this socket:
    /// the file is given to it, and its messages are accepted.
    ///
    /// # Errors
    /// chown failed.
    pub fn allow(&mut self, uid: u32, gid: u32) -> Result<()> {
        nix::unistd::chown(
            &self.path,
            Some(Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .with_context(|| format!("chown {}", self.path.display()))?;
        self.allowed = Some(uid);
        Ok(())
    }

    /// The socket, for poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Read one datagram: `Ok(None)` when none is waiting.
    ///
    /// # Errors
    /// `recvmsg` failed for a reason other than an empty queue.
    pub fn recv(&self) -> Result<Option<Result<Message, Rejected>>> {
        let mut buf = [0u8; BUFFER_MAX];
        let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; 16]);
        let (len, flags, mut uid, mut fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
            ) {
                Ok(m) => m,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e).context("receive on notify socket"),
            };
            let mut uid = None;
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmCredentials(cred) => uid = Some(cred.uid()),
                        ControlMessageOwned::ScmRights(rights) => fds.extend(rights),
                        _ => {}
                    }
                }
            }
            (msg.bytes, msg.flags, uid.take(), fds)
        };
        let received_fds = !fds.is_empty();
        for fd in fds.drain(..) {
            // MSG_CMSG_CLOEXEC made them CLOEXEC; we only need to close them.
            let _ = nix::unistd::close(fd);
        }
        let me = Uid::effective().as_raw();
        Ok(Some(match uid.take() {
            _ if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) => {
                Err(Rejected::Truncated)
            }
            // sd_notify_barrier(3) (systemd-notify sends one after READY=1
            // since systemd 250): `BARRIER=1` with the write end of a pipe,
            // which the receiver closes (done above) to say it has read
            // everything before. Nothing else to do, and nothing to warn of.
            _ if received_fds && is_barrier(&buf[..len.min(BUFFER_MAX)]) => {
                Ok(hot_supervisor::parse::notify::Message::default())
            }
            _ if received_fds => Err(Rejected::Fds),
            None => Err(Rejected::NoCredentials),
            Some(u) if u != me && u != 0 && Some(u) != self.allowed => Err(Rejected::Foreign(u)),
            Some(_) => parse(&buf[..len.min(BUFFER_MAX)]),
        }))
    }
}

/// A notify socket as carried across an in-place upgrade.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    fd: RawFd,
    path: PathBuf,
    allowed: Option<u32>,
}

impl NotifySocket {
    /// Its state for an in-place upgrade.
    pub fn save(&self, keep: &mut crate::carry::Keep) -> Saved {
        Saved {
            fd: keep.fd(self.fd.as_fd()),
            path: self.path.clone(),
            allowed: self.allowed,
        }
    }

    /// The socket an upgrade carried across.
    pub fn restore(saved: Saved, adopt: &mut crate::carry::Adopt) -> NotifySocket {
        NotifySocket {
            fd: adopt.take(saved.fd),
            path: saved.path,
            allowed: saved.allowed,
        }
    }
}

/// Whether a datagram is `BARRIER=1` alone (sd_notify_barrier(3)).
fn is_barrier(data: &[u8]) -> bool {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data == b"BARRIER=1"
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_from_own_uid_only_whole_messages() {
        let dir = NotifyDir::create().unwrap();
        let sock = dir.socket(1, 0).unwrap();
        assert!(sock.recv().unwrap().is_none());
        let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
        tx.send_to(b"READY=1\nSTATUS=up", sock.path()).unwrap();
        let m = sock.recv().unwrap().unwrap().unwrap();
        assert!(m.ready);
        assert_eq!(m.status.as_deref(), Some("up"));
        tx.send_to(&[b'x'; BUFFER_MAX + 1], sock.path()).unwrap();
        assert_eq!(sock.recv().unwrap().unwrap(), Err(Rejected::Truncated));
        let path = dir.path.clone();
        drop(sock);
        drop(dir);
        assert!(!path.exists());
    }
}
