//! Binding listener specs (`[NAME=]ADDR`, parsed in
//! [`hot_supervisor::parse::listen`]).
//!
//! The supervisor binds each listener once, with CLOEXEC set (the spawner
//! clears it on the child's copies only), and keeps it open for its whole
//! life: the kernel's accept queue belongs to the socket, so it survives
//! every reload, crash and restart of the child. A Unix socket file is
//! unlinked at exit only if the supervisor created it and it is still the
//! same file.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
    SockaddrStorage, UnixAddr, bind, connect, getsockname, listen, setsockopt, socket, sockopt,
};

pub use hot_supervisor::parse::listen::{Addr, Spec};

/// A bound listener the supervisor owns.
#[derive(Debug)]
pub struct Listener {
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// What it is bound to, as the kernel reports it (port 0 resolved).
    pub bound: String,
    /// Its key in `SERVER_STARTER_PORT`, as Server::Starter writes it.
    pub starter_key: String,
    /// Handed to the supervisor by its launcher (socket activation), not
    /// bound by it.
    pub inherited: bool,
    /// The socket; taken by steering for a listener it steers.
    fd: Option<OwnedFd>,
    /// Unix socket file we created: (path, device, inode), for cleanup.
    created: Option<(PathBuf, u64, u64)>,
    /// The file is another supervisor's (a takeover under way): left at
    /// exit.
    disowned: bool,
    /// For a Unix socket path: the lock on `PATH.lock`, held for our life,
    /// so that two supervisors never both decide the path is theirs.
    _lock: Option<Flock<File>>,
}

impl Listener {
    /// The socket.
    ///
    /// # Panics
    /// After [`Listener::take_fd`]: steering owns the socket then.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("the listener's socket was taken")
            .as_fd()
    }

    /// The socket, unless steering owns it.
    pub fn fd_opt(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Put a new socket in place of the listener's (bound again after a
    /// server shut the old one down).
    pub fn replace_fd(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
    }

    /// The socket's file (a Unix socket's) belongs to another supervisor
    /// now, which took the socket over: it is not removed at exit.
    pub fn disown_file(&mut self) {
        self.disowned = true;
    }

    /// The socket's file is this supervisor's (again): removed at exit.
    pub fn own_file(&mut self) {
        self.disowned = false;
    }

    /// Hand the socket to its new owner (steering); the listener keeps its
    /// name, address and Unix socket file.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }
}

/// A listener as carried across an in-place upgrade.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    name: String,
    bound: String,
    starter_key: String,
    inherited: bool,
    fd: Option<i32>,
    created: Option<(PathBuf, u64, u64)>,
    lock: Option<i32>,
}

impl Listener {
    /// Its state for an in-place upgrade.
    pub fn save(&self, keep: &mut crate::carry::Keep) -> Saved {
        Saved {
            name: self.name.clone(),
            bound: self.bound.clone(),
            starter_key: self.starter_key.clone(),
            inherited: self.inherited,
            fd: self.fd.as_ref().map(|f| keep.fd(f.as_fd())),
            created: self.created.clone(),
            lock: self._lock.as_ref().map(|l| keep.fd(l.as_fd())),
        }
    }

    /// The listener an upgrade carried across.
    pub fn restore(saved: Saved, adopt: &mut crate::carry::Adopt) -> Listener {
        // The lock's open file description already holds the lock; locking
        // it again through the carried fd only confirms that.
        let lock = saved
            .lock
            .map(|raw| File::from(adopt.take(raw)))
            .and_then(|f| {
                Flock::lock(f, FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| log::warn!("the lock of {}: {e}", saved.bound))
                    .ok()
            });
        Listener {
            name: saved.name,
            bound: saved.bound,
            starter_key: saved.starter_key,
            inherited: saved.inherited,
            fd: saved.fd.map(|raw| adopt.take(raw)),
            created: saved.created,
            disowned: false,
            _lock: lock,
        }
    }
}

/// Socket options for the listeners the supervisor binds (accepted TCP
/// connections inherit them from the listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// `TCP_NODELAY` (default on, as nginx, Go and Node set it).
    pub nodelay: bool,
    /// `SO_KEEPALIVE` on accepted connections.
    pub keepalive: bool,
    /// `TCP_DEFER_ACCEPT`, in seconds (0: off).
    pub defer_accept: u32,
    /// `SO_RCVBUF`, in bytes.
    pub rcvbuf: Option<usize>,
    /// `SO_SNDBUF`, in bytes.
    pub sndbuf: Option<usize>,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            nodelay: true,
            keepalive: false,
            defer_accept: 0,
            rcvbuf: None,
            sndbuf: None,
        }
    }
}

impl SocketOptions {
    /// Set these options on a socket before it is bound.
    ///
    /// # Errors
    /// The kernel refuses one; the message names it.
    pub fn apply(&self, fd: BorrowedFd<'_>, stream: bool) -> Result<()> {
        if stream {
            setsockopt(&fd, sockopt::TcpNoDelay, &self.nodelay).context("TCP_NODELAY")?;
            if self.keepalive {
                setsockopt(&fd, sockopt::KeepAlive, &true).context("SO_KEEPALIVE")?;
            }
            if self.defer_accept > 0 {
                let secs = libc::c_int::try_from(self.defer_accept).unwrap_or(libc::c_int::MAX);
                // SAFETY: the option value is one c_int that lives across
                // the call; its size is passed.
                let r = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        libc::TCP_DEFER_ACCEPT,
                        (&raw const secs).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(Errno::last()).context("TCP_DEFER_ACCEPT");
                }
            }
        }
        if let Some(n) = self.rcvbuf {
            setsockopt(&fd, sockopt::RcvBuf, &n).context("SO_RCVBUF")?;
        }
        if let Some(n) = self.sndbuf {
            setsockopt(&fd, sockopt::SndBuf, &n).context("SO_SNDBUF")?;
        }
        Ok(())
    }
}

/// How the supervisor binds the listeners of a run.
#[derive(Clone, Copy, Debug)]
pub struct BindOptions {
    /// The listen backlog.
    pub backlog: Backlog,
    /// Set `SO_REUSEPORT` on TCP and UDP sockets (steer mode), after
    /// making sure nobody else holds the address.
    pub reuseport: bool,
    /// Socket options.
    pub socket: SocketOptions,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.disowned {
            // The lock's open file description is shared with the other
            // supervisor (the fd came with the socket): dropping the lock
            // would unlock it for both. The fd closes at exit instead.
            std::mem::forget(self._lock.take());
        }
        if !self.disowned
            && let Some((path, dev, ino)) = &self.created
            && let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.dev() == *dev
            && meta.ino() == *ino
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bind every spec, in order.
///
/// # Errors
/// The first spec that cannot be bound, naming its address and the reason.
pub fn bind_all(specs: &[Spec], opts: &BindOptions) -> Result<Vec<Listener>> {
    specs
        .iter()
        .map(|s| bind_one(s, opts).with_context(|| format!("bind {}", s.text)))
        .collect()
}

/// The listeners of a run: the sockets handed to the supervisor (in their
/// order), then every `--listen` not naming one of them (in its order). A
/// `--listen NAME=ADDR` whose name is a handed-over socket's refers to that
/// socket, and its address must agree with it.
///
/// # Errors
/// A name that is ambiguous or an address that disagrees with the socket
/// of that name; a spec that cannot be bound.
pub fn merge(
    inherited: Vec<Listener>,
    specs: &[Spec],
    opts: &BindOptions,
) -> Result<Vec<Listener>> {
    let mut rest = Vec::new();
    for spec in specs {
        let same: Vec<&Listener> = inherited.iter().filter(|l| l.name == spec.name).collect();
        match same.as_slice() {
            [] => rest.push(spec.clone()),
            [l] => {
                if !agrees(&spec.addr, l.fd()) {
                    bail!(
                        "--listen {}={}: the socket handed to the supervisor as {:?} is bound to {}, not {}",
                        spec.name,
                        spec.text,
                        l.name,
                        l.bound,
                        spec.addr
                    );
                }
            }
            many => bail!(
                "--listen {}={}: {} sockets were handed to the supervisor with the name {:?}, so the name cannot pick one",
                spec.name,
                spec.text,
                many.len(),
                spec.name
            ),
        }
    }
    let mut all = inherited;
    all.extend(bind_all(&rest, opts)?);
    Ok(all)
}

/// Whether a socket is what `addr` asks for (port 0 asks for any port).
pub fn agrees(addr: &Addr, fd: BorrowedFd<'_>) -> bool {
    Bound::of(fd).is_some_and(|b| b.agrees(addr))
}

/// What a socket is bound to, read once, to be compared with any number of
/// `--listen` addresses ([`Bound::agrees`]) without asking the kernel again.
#[derive(Debug, Clone)]
pub struct Bound {
    ty: SockType,
    addr: SockaddrStorage,
}

impl Bound {
    /// The socket's type and address; none if the kernel will not say.
    pub fn of(fd: BorrowedFd<'_>) -> Option<Bound> {
        let addr = getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
        let ty = nix::sys::socket::getsockopt(&fd, sockopt::SockType).ok()?;
        Some(Bound { ty, addr })
    }

    /// Whether the socket is what `addr` asks for (port 0 asks for any
    /// port).
    pub fn agrees(&self, addr: &Addr) -> bool {
        let (bound, ty) = (&self.addr, self.ty);
        let inet = || -> Option<SocketAddr> {
            if let Some(a) = bound.as_sockaddr_in() {
                return Some(SocketAddr::from(*a));
            }
            bound.as_sockaddr_in6().map(|a| SocketAddr::from(*a))
        };
        let port_ok = |want: u16, got: u16| want == 0 || want == got;
        match addr {
            Addr::Tcp(a) | Addr::Udp(a) => {
                let want_ty = if matches!(addr, Addr::Tcp(_)) {
                    SockType::Stream
                } else {
                    SockType::Datagram
                };
                ty == want_ty
                    && inet().is_some_and(|b| b.ip() == a.ip() && port_ok(a.port(), b.port()))
            }
            Addr::TcpAll(p) | Addr::UdpAll(p) => {
                let want_ty = if matches!(addr, Addr::TcpAll(_)) {
                    SockType::Stream
                } else {
                    SockType::Datagram
                };
                ty == want_ty
                    && inet().is_some_and(|b| b.ip().is_unspecified() && port_ok(*p, b.port()))
            }
            Addr::Unix(path) => bound
                .as_unix_addr()
                .and_then(|u| u.path())
                .is_some_and(|p| p == path.as_path()),
            Addr::UnixAbstract(name) => bound
                .as_unix_addr()
                .and_then(|u| u.as_abstract())
                .is_some_and(|n| n == name.as_slice()),
        }
    }
}

/// The sockets handed to this process by the socket-activation protocol
/// (sd_listen_fds(3), and systemd's `src/libsystemd/sd-daemon/sd-daemon.c`):
/// `LISTEN_PID` must be our pid (and
/// `LISTEN_PIDFDID`, if present and checkable, our pidfd's id), then fds 3
/// to 3+`LISTEN_FDS`-1 are ours, named by `LISTEN_FDNAMES` (every name
/// `unknown` without it). They are marked close-on-exec, as
/// `sd_listen_fds` does; the spawner hands them to the children.
///
/// Call before anything else opens a file descriptor.
///
/// # Errors
/// The variables are for us but malformed, or an fd is not a listening
/// socket.
pub fn inherited() -> Result<Vec<Listener>> {
    use supervisor_child::protocol::activation::{self, ListenPid};
    use supervisor_child::protocol::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_START, LISTEN_PID};
    let var = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    match activation::listen_pid(var(LISTEN_PID).as_deref(), std::process::id())
        .map_err(anyhow::Error::msg)?
    {
        ListenPid::Unset => return Ok(Vec::new()),
        ListenPid::Ours => {}
        ListenPid::Other(pid) => {
            if std::env::var_os(LISTEN_FDS).is_some() {
                // As sd_listen_fds(3) does; but say so, since a wrapper script
                // that runs the supervisor without `exec` ends up here.
                log::warn!(
                    "{LISTEN_FDS} is set for pid {pid}, not for this process ({}): ignoring the sockets it names",
                    std::process::id()
                );
            }
            return Ok(Vec::new());
        }
    }
    if !pidfd_id_matches()? {
        log::warn!("LISTEN_PIDFDID names another process: ignoring the sockets of LISTEN_FDS");
        return Ok(Vec::new());
    }
    let Some(n) = var(LISTEN_FDS) else {
        return Ok(Vec::new());
    };
    let n = activation::listen_fds(&n).map_err(anyhow::Error::msg)?;
    // Every fd must be open before anything is built for them (a huge
    // count fails here, at its first closed fd, not in an allocation).
    for raw in LISTEN_FDS_START..LISTEN_FDS_START + n {
        // SAFETY: F_GETFD reads the descriptor's flags; no memory is passed,
        // and a closed descriptor only yields EBADF.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            bail!(
                "fd {raw}, one of the {n} handed over by {LISTEN_FDS}: {}",
                Errno::last()
            );
        }
    }
    let names = activation::listen_fdnames(var(LISTEN_FDNAMES).as_deref(), n)
        .map_err(anyhow::Error::msg)?
        .unwrap_or_else(|| vec!["unknown".to_string(); n as usize]);
    let mut out = Vec::with_capacity(n as usize);
    for (i, name) in names.into_iter().enumerate() {
        let raw = LISTEN_FDS_START + i as i32;
        // SAFETY: the launcher handed fds 3..3+n to this process (LISTEN_PID
        // is ours), the fd is open (checked above), and nothing in this
        // process has taken or opened it before us: this runs before any
        // other descriptor is opened, and each fd is taken once.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        out.push(adopt(fd, raw, name)?);
    }
    Ok(out)
}

/// Check `LISTEN_PIDFDID` against our own pidfd's inode, where the kernel
/// can tell it (as `sd_listen_fds` does since systemd PR #38256: an id that
/// differs means the variables were meant for another process).
///
/// # Errors
/// The variable is present but not a number.
fn pidfd_id_matches() -> Result<bool> {
    let var = supervisor_child::protocol::LISTEN_PIDFDID;
    let Some(want) = std::env::var_os(var) else {
        return Ok(true);
    };
    let Some(want) = want
        .to_str()
        .and_then(supervisor_child::protocol::activation::listen_pidfdid)
    else {
        bail!("{var}={want:?} is not a pidfd id");
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    let Ok(raw) = i32::try_from(raw) else {
        return Ok(true);
    };
    if raw < 0 {
        return Ok(true);
    }
    // SAFETY: the syscall just returned this new fd, owned by nobody else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    Ok(match nix::sys::stat::fstat(&fd) {
        Ok(st) => st.st_ino == want,
        Err(_) => true,
    })
}

/// Turn a handed-over fd into a listener, after checking it is one.
fn adopt(fd: OwnedFd, raw: i32, name: String) -> Result<Listener> {
    let what = || format!("fd {raw} ({name:?}) handed over by LISTEN_FDS");
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .with_context(what)?;
    let st = nix::sys::stat::fstat(&fd).with_context(what)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        bail!("{} is not a socket", what());
    }
    let ty: SockType = nix::sys::socket::getsockopt(&fd, sockopt::SockType).with_context(what)?;
    if ty != SockType::Datagram {
        let listening =
            nix::sys::socket::getsockopt(&fd, sockopt::AcceptConn).with_context(what)?;
        if !listening {
            bail!(
                "{} is a connected socket, not a listening one (a socket unit needs Accept=no)",
                what()
            );
        }
    }
    let bound = describe(fd.as_fd()).unwrap_or_else(|| format!("fd {raw}"));
    let starter_key = inherited_starter_key(&bound);
    Ok(Listener {
        name,
        bound,
        starter_key,
        inherited: true,
        fd: Some(fd),
        created: None,
        disowned: false,
        _lock: None,
    })
}

/// Server::Starter's key for a handed-over socket: a bare port for a
/// wildcard address, else the address (a path for a Unix socket).
fn inherited_starter_key(bound: &str) -> String {
    let bare = bound.strip_prefix("udp:").unwrap_or(bound);
    if let Some(path) = bare.strip_prefix("unix:") {
        return path.to_string();
    }
    match bare.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => a.port().to_string(),
        _ => bare.to_string(),
    }
}

/// Bind the control socket at `path`: mode 0600 from the start (the umask
/// is tightened around the bind), a stale file replaced, a live one (or
/// one whose lock another supervisor holds) refused.
///
/// # Errors
/// It cannot be bound; the message names the path.
pub fn bind_control(path: &Path) -> Result<Listener> {
    let spec = Spec {
        name: "control".into(),
        addr: Addr::Unix(path.to_path_buf()),
        text: path.display().to_string(),
        name_from_address: false,
    };
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let opts = BindOptions {
        backlog: Backlog::MAXALLOWABLE,
        reuseport: false,
        socket: SocketOptions::default(),
    };
    let bound = bind_one(&spec, &opts);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .context("chmod 0600")?;
    // Accepting never blocks the loop.
    nix::fcntl::fcntl(
        listener.fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .context("make the control socket non-blocking")?;
    Ok(listener)
}

fn bind_one(spec: &Spec, opts: &BindOptions) -> Result<Listener> {
    let flags = SockFlag::SOCK_CLOEXEC;
    let backlog = opts.backlog;
    let fd = match &spec.addr {
        Addr::Tcp(a) => bind_inet(*a, SockType::Stream, false, opts)?,
        Addr::Udp(a) => bind_inet(*a, SockType::Datagram, false, opts)?,
        Addr::TcpAll(port) => bind_all_addresses(*port, SockType::Stream, opts)?,
        Addr::UdpAll(port) => bind_all_addresses(*port, SockType::Datagram, opts)?,
        Addr::UnixAbstract(name) => {
            // The kernel refuses a taken abstract name: no race here.
            let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
            bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name)?)?;
            listen(&fd, backlog)?;
            fd
        }
        Addr::Unix(_) => socket(AddressFamily::Unix, SockType::Stream, flags, None)?,
    };
    let mut listener = Listener {
        name: spec.name.clone(),
        bound: String::new(),
        starter_key: String::new(),
        inherited: false,
        fd: Some(fd),
        created: None,
        disowned: false,
        _lock: None,
    };
    if let Addr::Unix(path) = &spec.addr {
        listener._lock = Some(lock_path(path)?);
        remove_stale(path)?;
        bind(listener.fd().as_raw_fd(), &UnixAddr::new(path.as_path())?)?;
        // Recorded before anything else can fail, so that Drop removes it.
        let meta = std::fs::symlink_metadata(path)?;
        listener.created = Some((path.clone(), meta.dev(), meta.ino()));
        listen(&listener.fd(), backlog)?;
    }
    listener.bound = describe(listener.fd()).unwrap_or_else(|| spec.addr.to_string());
    if spec.name_from_address {
        // A port-0 listener is named after the port it got.
        listener.name = listener.bound.replace(':', "_");
    }
    listener.starter_key = starter_key(spec, &listener.bound);
    Ok(listener)
}

/// The listener's key as Server::Starter writes it: the address as given
/// (`127.0.0.1:80`, `[::1]:80`), a bare port for every address (`80`), the
/// path of a Unix socket, no `udp:` prefix. A port 0 is replaced by the
/// port the kernel chose.
fn starter_key(spec: &Spec, bound: &str) -> String {
    let bound = bound.strip_prefix("udp:").unwrap_or(bound);
    let bound_port = || bound.rsplit(':').next().unwrap_or("0").to_string();
    match &spec.addr {
        Addr::Tcp(a) | Addr::Udp(a) if a.port() == 0 => bound.to_string(),
        Addr::Tcp(_) => spec
            .text
            .strip_prefix("tcp:")
            .unwrap_or(&spec.text)
            .to_string(),
        Addr::Udp(_) => spec
            .text
            .strip_prefix("udp:")
            .unwrap_or(&spec.text)
            .to_string(),
        Addr::TcpAll(0) | Addr::UdpAll(0) => bound_port(),
        Addr::TcpAll(p) | Addr::UdpAll(p) => p.to_string(),
        Addr::Unix(path) => path.display().to_string(),
        Addr::UnixAbstract(name) => format!("@{}", String::from_utf8_lossy(name)),
    }
}

/// `[::]` dual-stack, or `0.0.0.0` on a host without IPv6.
fn bind_all_addresses(port: u16, ty: SockType, opts: &BindOptions) -> Result<OwnedFd> {
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    match bind_inet(any6, ty, true, opts) {
        Err(e)
            if e.downcast_ref::<Errno>()
                .is_some_and(|e| matches!(e, Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL)) =>
        {
            let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            bind_inet(any4, ty, false, opts)
        }
        other => other,
    }
}

/// Take `PATH.lock` (created if missing, never removed: removing a lock
/// file races with the next taker).
fn lock_path(path: &Path) -> Result<Flock<File>> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .with_context(|| format!("open lock file {}", lock.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => anyhow::anyhow!(
            "{} is in use by another supervisor (it holds {})",
            path.display(),
            lock.display()
        ),
        e => anyhow::Error::new(e).context(format!("lock {}", lock.display())),
    })
}

fn bind_inet(addr: SocketAddr, ty: SockType, dual: bool, opts: &BindOptions) -> Result<OwnedFd> {
    if opts.reuseport && addr.port() != 0 {
        // With SO_REUSEPORT our bind would succeed next to another
        // process's socket of the same user and join its group. A bind
        // without it conflicts with any socket on the address, so a port
        // in use is refused as plainly as without steering.
        let plain = BindOptions {
            reuseport: false,
            ..*opts
        };
        drop(bind_inet_once(addr, ty, dual, &plain, false)?);
    }
    bind_inet_once(addr, ty, dual, opts, true)
}

fn bind_inet_once(
    addr: SocketAddr,
    ty: SockType,
    dual: bool,
    opts: &BindOptions,
    listening: bool,
) -> Result<OwnedFd> {
    let backlog = opts.backlog;
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let proto = match ty {
        SockType::Datagram => SockProtocol::Udp,
        _ => SockProtocol::Tcp,
    };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, proto)?;
    if ty == SockType::Stream {
        // TIME_WAIT connections from a previous supervisor must not block
        // the port; this is not SO_REUSEPORT, which would split the accept
        // queue. Not for UDP, where it would let two binders share a port.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if opts.reuseport {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    opts.socket.apply(fd.as_fd(), ty == SockType::Stream)?;
    if family == AddressFamily::Inet6 {
        // "[::]:80" means IPv6 only (as Server::Starter does); ":80" means
        // every address, IPv4 included.
        setsockopt(&fd, sockopt::Ipv6V6Only, &!dual)?;
    }
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?,
    }
    if ty == SockType::Stream && listening {
        listen(&fd, backlog)?;
    }
    Ok(fd)
}

/// A socket file left at `path` by a dead process is removed; one that a
/// live process still accepts on, or a file that is not a socket, is an
/// error.
fn remove_stale(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("inspect existing file"),
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket", path.display());
    }
    // Non-blocking: a live owner with a full accept queue answers EAGAIN
    // instead of hanging us.
    let probe = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    match connect(probe.as_raw_fd(), &UnixAddr::new(path)?) {
        Ok(()) | Err(Errno::EAGAIN) => {
            bail!("{} is in use by a running process", path.display())
        }
        Err(Errno::ECONNREFUSED) => {
            log::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path).context("remove stale socket file")
        }
        Err(e) => Err(e).context("probe existing socket file"),
    }
}

fn describe(fd: BorrowedFd<'_>) -> Option<String> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    let ty: SockType = nix::sys::socket::getsockopt(&fd, sockopt::SockType).ok()?;
    let udp = if ty == SockType::Datagram { "udp:" } else { "" };
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(format!("{udp}{}", SocketAddr::from(*a)));
    }
    if let Some(a) = addr.as_sockaddr_in6() {
        return Some(format!("{udp}{}", SocketAddr::from(*a)));
    }
    let u = addr.as_unix_addr()?;
    if let Some(p) = u.path() {
        return Some(format!("unix:{}", p.display()));
    }
    u.as_abstract()
        .map(|n| format!("unix:@{}", String::from_utf8_lossy(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Result<Spec, String> {
        s.parse()
    }

    #[test]
    fn server_starter_keys() {
        let key = |s: &str, bound: &str| starter_key(&spec(s).unwrap(), bound);
        assert_eq!(key("127.0.0.1:80", "127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(key("tcp:localhost:80", "127.0.0.1:80"), "localhost:80");
        assert_eq!(key("web=[::1]:80", "[::1]:80"), "[::1]:80");
        assert_eq!(key(":80", "[::]:80"), "80");
        assert_eq!(key(":0", "[::]:4567"), "4567");
        assert_eq!(key("127.0.0.1:0", "127.0.0.1:4567"), "127.0.0.1:4567");
        assert_eq!(key("udp:127.0.0.1:53", "udp:127.0.0.1:53"), "127.0.0.1:53");
        assert_eq!(key("udp:127.0.0.1:0", "udp:127.0.0.1:999"), "127.0.0.1:999");
        assert_eq!(
            key("unix:/tmp/app.sock", "unix:/tmp/app.sock"),
            "/tmp/app.sock"
        );
    }
}
