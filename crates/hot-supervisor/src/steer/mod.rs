//! Traffic steering: one socket per generation, new connections routed by
//! the supervisor.
//!
//! Owns every listening socket the generations receive. A listener in
//! *steer* mode is a `SO_REUSEPORT` group owned by the supervisor: each
//! generation gets its own member socket (same address, same fd number in
//! the child, same name), and a classic BPF program attached to the group
//! sends every new connection or datagram to the member of the *routed*
//! generation only. A starting generation's member receives nothing until
//! the machine asks to route to it; a probe connection from a known source
//! port is the one exception (readiness probes). A listener in *shared*
//! mode (Unix sockets, sockets that cannot be joined) gives every
//! generation the same socket.
//!
//! While a rolling reload or a canary runs, new connections are *split*
//! between generations by weight: the program draws a random number
//! (`ld random`, `SKF_AD_RANDOM`) and compares it with thresholds, one per
//! generation, so each member gets its share (see [`bpf::program`]). A
//! generation's workers (`--workers N`) share its one member socket.
//!
//! The kernel numbers a group's members in the order they joined and moves
//! the last member into the slot of one that leaves; this part keeps its own
//! copy of that order (a [`group::Group`], where that rule is written once)
//! and re-attaches the program after every change. After every change it
//! also looks for sockets on the same port that are not its own (another
//! process of the same user can join the group and shift the indices); on
//! finding one it stops changing that group (it is [`Mode::Frozen`]) and
//! shares the routed socket from then on, rather than misroute.
//!
//! A reload asks nothing of the kernel per listener before the new
//! generation starts: the next generation's member of each group is made
//! ahead of time, once the loop has nothing else to do (a *reserve*, see
//! [`Steering::replenish`]), and the program, which the kernel keeps per
//! group, is attached only when it changes (once per group per reload,
//! when the new generation is routed).
//!
//! It never spawns, signals or logs lifecycle events: it answers the
//! driver's calls with fds, counts and reasons. Here are the listeners and
//! the calls that change what each generation gets (giving sockets,
//! routing, splitting, releasing); in the submodules: the program
//! ([`bpf`]), a group's order ([`group`]), a member's role ([`member`]),
//! the reserves and spares ([`reserve`]), making sockets ([`socket`]), the
//! search for strangers ([`strangers`]), a socket a server shut down
//! ([`hangup`]), duplicates for holders outside ([`fetch`]) and the saved
//! form ([`saved`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{Backlog, SockType, getsockopt, sockopt};

use crate::listen::{Listener, SocketOptions};
use hot_supervisor::sockinfo::queue_length;

use crate::machine::Generation;

mod bpf;
mod fetch;
mod group;
mod hangup;
mod member;
mod reserve;
mod saved;
mod socket;
mod strangers;

pub use saved::Saved;

use bpf::{attach_cbpf, program};
use group::Group;
pub use member::Owner;
use member::{Member, Role};
use socket::{steer_kind, tcp_address};

/// How a listener is handed to the generations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One socket per generation, new connections routed.
    Steer,
    /// Steered until a stranger joined the group or the kernel refused a
    /// change: the group is never changed again (no member joins or
    /// leaves), later generations share the routed socket, and the program
    /// still routes to a generation that holds a socket of its own there.
    /// The reason, for the log.
    Frozen(String),
    /// The same socket for every generation; the reason, for the log.
    Shared(String),
}

impl Mode {
    /// `steer` or `shared` (a frozen group's socket is shared), as the
    /// status says.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Steer => "steer",
            Mode::Frozen(_) | Mode::Shared(_) => "shared",
        }
    }

    /// Whether the listener's group is routed by the program (steer mode,
    /// or frozen).
    fn routes(&self) -> bool {
        matches!(self, Mode::Steer | Mode::Frozen(_))
    }
}

/// Where one listener's traffic goes.
#[derive(Debug)]
struct Slot {
    listener: Listener,
    mode: Mode,
    /// Steer mode: the reuseport group's members in the kernel's order,
    /// the routed one, the probe's, the program attached. (Frozen: the
    /// group as it stands, no longer changed; shared: none, or the one
    /// member of a listener that fell back from steering at start.)
    group: Group<Member>,
    /// TCP (else UDP).
    stream: bool,
    /// Where new members bind.
    addr: SocketAddr,
    v6only: bool,
    /// A shared TCP listener's address, to bind it again if a server
    /// shuts it down.
    shared_addr: Option<SocketAddr>,
}

impl Notice {
    /// The log line.
    pub fn log(&self) {
        match self {
            Notice::ClosedWithQueue { listener, queued } => log::warn!(
                "listener {listener:?}: closing a gone generation's socket reset {queued} queued connection(s) (net.ipv4.tcp_migrate_req=1 makes the kernel move them instead)"
            ),
            Notice::Stranger { listener, who } => log::error!(
                "listener {listener:?}: sockets on its port that are not the supervisor's ({who}) may shift the reuseport group; it is no longer steered: new generations share the serving socket"
            ),
            Notice::Failed { listener, why } => log::error!(
                "listener {listener:?}: steering failed ({why}); new generations share the serving socket"
            ),
            Notice::Relistened {
                listener,
                owner,
                failed,
            } => {
                let whose = match owner {
                    Owner::Generation(g) => format!("{g}'s socket"),
                    Owner::Previous => "the previous supervisor's socket".to_string(),
                    Owner::Nobody => "the shared socket".to_string(),
                };
                match failed {
                    None => log::warn!(
                        "listener {listener:?}: {whose} stopped listening (a shutdown() by a server?): a new socket listens in its place"
                    ),
                    Some(why) => log::error!(
                        "listener {listener:?}: {whose} stopped listening and no new socket can listen in its place: {why}"
                    ),
                }
            }
        }
    }
}

impl Slot {
    /// The one socket of a shared listener: the listener's own, or, for a
    /// listener that fell back from steering, the routed member.
    fn shared_fd(&self) -> BorrowedFd<'_> {
        match self.group.routed_member() {
            Some(m) => m.fd.as_fd(),
            None => self.listener.fd(),
        }
    }
}

/// What steering reports back to the driver for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    /// A socket of a gone generation was closed with connections still in
    /// its queue (they are reset by the close).
    ClosedWithQueue {
        /// The listener's name.
        listener: String,
        /// The connections reset.
        queued: u64,
    },
    /// Sockets on the listener's port that the supervisor does not own:
    /// steering is off for it from now on.
    Stranger {
        /// The listener's name.
        listener: String,
        /// Who holds them, as far as can be found out.
        who: String,
    },
    /// The kernel refused a group change; the listener is shared from now.
    Failed {
        /// The listener's name.
        listener: String,
        /// Why.
        why: String,
    },
    /// A socket stopped listening (a `shutdown()` by a server, on a socket
    /// every holder shares) and a new one takes its place, or cannot.
    Relistened {
        /// The listener's name.
        listener: String,
        /// Who held it (nobody: a shared socket, or a routed one of a gone
        /// generation).
        owner: Owner,
        /// `None` if listening again worked, else why not.
        failed: Option<String>,
    },
}

/// Every listener's sockets. See the module documentation.
#[derive(Debug)]
pub struct Steering {
    slots: Vec<Slot>,
    /// Sockets no longer watched for a hang-up: one that reported one but
    /// still listens, or could not listen again (else poll would report it
    /// again and again).
    unwatched: BTreeSet<i32>,
    backlog: Backlog,
    options: SocketOptions,
    /// Steer mode asked for (`--handoff steer`).
    steer: bool,
    /// Shares of new connections by generation, in percent (a rolling
    /// reload, a canary); empty: all to the routed member.
    split: Vec<(Generation, u32)>,
    /// Another supervisor is taking the sockets over, its mirror of every
    /// group copied from this one: nothing here changes a group (no
    /// program, no member joins or leaves) until it is gone.
    held: bool,
    /// Generations reaped while held, released once no longer held.
    deferred: Vec<Generation>,
    /// Making a reserve failed (see [`Steering::replenish`]): not tried
    /// again until a generation's sockets are given back.
    no_reserves: bool,
    /// Groups that got a reserve and have not yet been looked at for
    /// strangers (see [`Steering::replenish`]).
    unscreened: Vec<usize>,
}

impl Steering {
    /// Another supervisor takes the sockets over: change no group from now.
    pub fn hold(&mut self) {
        self.held = true;
        // The other supervisor attaches programs of its own from now on.
        for s in &mut self.slots {
            s.group.forget_program();
        }
    }

    /// Whether another supervisor is taking the sockets over.
    pub fn held(&self) -> bool {
        self.held
    }

    /// The takeover failed and the other supervisor has exited (its
    /// sockets have left the groups): release what was reaped meanwhile,
    /// and route by this supervisor's program again.
    pub fn resume(&mut self, notices: &mut Vec<Notice>) {
        self.held = false;
        for g in std::mem::take(&mut self.deferred) {
            self.release(g, notices);
        }
        for i in 0..self.slots.len() {
            if self.slots[i].mode == Mode::Steer
                && let Err(e) = self.attach(i)
            {
                notices.push(Notice::Failed {
                    listener: self.slots[i].listener.name.clone(),
                    why: format!("attach the program: {e}"),
                });
            }
        }
    }

    /// The Unix socket files are another supervisor's (`false`: this
    /// one's again): left at exit.
    pub fn disown_files(&mut self, disown: bool) {
        for s in &mut self.slots {
            if disown {
                s.listener.disown_file();
            } else {
                s.listener.own_file();
            }
        }
    }

    /// The previous supervisor has exited: close its sockets (each leaves
    /// its group, mirrored as usual).
    pub fn release_previous(&mut self, notices: &mut Vec<Notice>) {
        let closing: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.mode == Mode::Steer && s.group.iter().any(|m| m.role.owner() == Owner::Previous)
            })
            .collect();
        self.screen(&closing, notices);
        let mut changed = Vec::new();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.mode != Mode::Steer {
                // Frozen or shared: nothing is closed.
                for m in slot.group.iter_mut() {
                    m.role.previous_gone(false);
                }
                continue;
            }
            let routed = slot.group.routed();
            let mut any = false;
            for (k, m) in slot.group.iter_mut().enumerate() {
                any |= m.role.previous_gone(k != routed);
            }
            if any && self.flush_retired(i, notices) {
                changed.push(i);
            }
        }
        self.attach_all(&changed, notices);
    }

    /// Take the bound listeners; `steer` asks for steer mode wherever it
    /// can work. Returns the listeners that fell back to shared mode with
    /// the reason, for the log.
    pub fn new(
        listeners: Vec<Listener>,
        steer: bool,
        backlog: Backlog,
        options: SocketOptions,
    ) -> Steering {
        let slots = listeners
            .into_iter()
            .map(|listener| slot_for(listener, steer))
            .collect();
        let mut s = Steering {
            slots,
            unwatched: BTreeSet::new(),
            backlog,
            options,
            steer,
            held: false,
            deferred: Vec::new(),
            split: Vec::new(),
            no_reserves: false,
            unscreened: Vec::new(),
        };
        for i in 0..s.slots.len() {
            s.start_steering(i);
        }
        s
    }

    /// Attach slot `i`'s program (and, for a handed-over socket, check that
    /// its group can be joined); fall back to shared mode if not.
    fn start_steering(&mut self, i: usize) {
        let s = self;
        {
            if s.slots[i].mode != Mode::Steer {
                return;
            }
            // A handed-over socket may belong to another user (a socket
            // unit's is root's): try joining its group once, now (after the
            // program is attached, so that no connection lands on the trial
            // socket, which is closed at once).
            if let Err(e) = s.attach(i) {
                s.slots[i].mode = Mode::Shared(format!("the kernel refused the program: {e}"));
                return;
            }
            if s.slots[i].listener.inherited
                && let Err(e) = s.join(i)
            {
                s.slots[i].mode = Mode::Shared(format!(
                    "its reuseport group cannot be joined ({e:#}; the service must run as the socket's owner)"
                ));
                return;
            }
            if let Err(e) = s.attach(i) {
                s.slots[i].mode = Mode::Shared(format!("the kernel refused the program: {e}"));
            }
        }
    }

    /// The listener named `spec.name`, opened now if there is none (bound
    /// with the start-up listeners' options and appended after them: every
    /// later generation gets it); its index. Bind and listen never block.
    ///
    /// # Errors
    /// A listener of that name bound elsewhere (the message says both
    /// addresses), or the bind fails (a port in use, a privilege).
    pub fn open(&mut self, spec: &crate::listen::Spec) -> Result<usize, String> {
        if let Some(i) = self.slots.iter().position(|s| s.listener.name == spec.name) {
            let slot = &self.slots[i];
            let fd = match (&slot.mode, slot.group.routed_member()) {
                (Mode::Steer, Some(m)) => m.fd.as_fd(),
                _ => slot.shared_fd(),
            };
            if crate::listen::agrees(&spec.addr, fd) {
                return Ok(i);
            }
            return Err(format!(
                "listener {:?} is already bound to {}, not {}",
                spec.name, slot.listener.bound, spec.text
            ));
        }
        let opts = crate::listen::BindOptions {
            backlog: self.backlog,
            reuseport: self.steer,
            socket: self.options,
        };
        let mut bound =
            crate::listen::bind_all(std::slice::from_ref(spec), &opts).map_err(|e| {
                let why = format!("{e:#}");
                match self.agreeing(&spec.addr) {
                    Some(i) if why.contains("EADDRINUSE") => format!(
                        "{why} (it is the address of this supervisor's listener {:?})",
                        self.slots[i].listener.name
                    ),
                    _ => why,
                }
            })?;
        let listener = bound.pop().ok_or("nothing was bound")?;
        self.slots.push(slot_for(listener, self.steer));
        let i = self.slots.len() - 1;
        self.start_steering(i);
        Ok(i)
    }

    /// The first listener whose socket is what `addr` asks for (port 0:
    /// any port).
    fn agreeing(&self, addr: &crate::listen::Addr) -> Option<usize> {
        self.bounds()
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.agrees(addr)))
    }

    /// What each listener's socket is bound to, in fd order, read once: for
    /// `--listen` options without a name, matched against listeners taken
    /// over (thousands of options against thousands of listeners ask the
    /// kernel once per listener).
    pub fn bounds(&self) -> Vec<Option<crate::listen::Bound>> {
        self.slots
            .iter()
            .map(|slot| {
                let fd = match (&slot.mode, slot.group.routed_member()) {
                    (Mode::Steer, Some(m)) => m.fd.as_fd(),
                    _ => slot.shared_fd(),
                };
                crate::listen::Bound::of(fd)
            })
            .collect()
    }

    /// The listeners, in fd order.
    pub fn listeners(&self) -> impl Iterator<Item = (&Listener, &Mode)> {
        self.slots.iter().map(|s| (&s.listener, &s.mode))
    }

    /// Whether any listener is steered (so replaced generations quiesce).
    pub fn any_steered(&self) -> bool {
        self.slots.iter().any(|s| s.mode == Mode::Steer)
    }

    /// The sockets generation `g` receives, in fd order: for each steered
    /// listener the routed socket if no live generation holds it (the first
    /// generation, or the restart of a crashed one), else a new member that
    /// receives nothing yet; for each shared listener the one socket.
    pub fn sockets_for(&mut self, g: Generation, notices: &mut Vec<Notice>) -> Vec<BorrowedFd<'_>> {
        // Taking a reserve or a spare changes no group, so it needs no look
        // for strangers (a stranger that joined behind it shifts nothing
        // until a member leaves, and every close is preceded by a look: see
        // `release`); the reload so asks nothing of the kernel here (but
        // whether a spare before the reserve, if any, still listens).
        let mut changed = Vec::new();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.mode != Mode::Steer {
                continue;
            }
            // Another worker of `g`: the generation's socket is shared by
            // its workers.
            if slot.group.iter().any(|m| m.role.held_by(g)) {
                continue;
            }
            let routed = slot.group.routed();
            if slot.group.get_mut(routed).is_some_and(|m| m.role.take(g)) {
                continue;
            }
            // The socket made ahead of time, or a spare before it: nothing to
            // ask of the kernel. The lowest idle member, so that as few
            // members as can be stand before it once it is routed (see
            // `reserve`).
            if let Some(k) = reserve::idle_member(&slot.group) {
                let role = &mut slot.group[k].role;
                if role.is_spare() {
                    *role = Role::RESERVE;
                }
                role.take(g);
                // While it is not routed the routed member may be the last
                // one no more: spare sockets left behind while it was can
                // go now, as when a new member joins (below). After the
                // routing they could not, and would pile up reload after
                // reload.
                if self.flush_retired(i, notices) {
                    changed.push(i);
                }
                continue;
            }
            match self.join(i) {
                Ok(fd) => {
                    self.slots[i]
                        .group
                        .push(Member::new(fd, Role::live(Owner::Generation(g))));
                    // The routed member is no longer the last one: sockets
                    // retired meanwhile can go without moving it.
                    self.flush_retired(i, notices);
                    changed.push(i);
                }
                Err(e) => {
                    let slot = &mut self.slots[i];
                    slot.mode = Mode::Frozen(format!("steering failed: {e:#}"));
                    notices.push(Notice::Failed {
                        listener: slot.listener.name.clone(),
                        why: format!("{e:#}"),
                    });
                }
            }
        }
        self.after_change(&changed, notices);
        // A group found frozen just now gives `g` the routed socket (below),
        // not the member that joined for it: that one is not `g`'s.
        for slot in self.slots.iter_mut().filter(|s| s.mode != Mode::Steer) {
            let routed = slot.group.routed();
            for (k, m) in slot.group.iter_mut().enumerate() {
                if k != routed && m.role.held_by(g) {
                    m.role.disown();
                }
            }
        }
        self.slots
            .iter()
            .map(|slot| match slot.mode {
                Mode::Steer => {
                    let own = slot.group.iter().find(|m| m.role.held_by(g));
                    own.unwrap_or(&slot.group[slot.group.routed()]).fd.as_fd()
                }
                Mode::Frozen(_) | Mode::Shared(_) => slot.shared_fd(),
            })
            .collect()
    }

    /// Send new connections to `g`'s sockets. Sockets left behind by gone
    /// generations that nobody will take over are closed.
    pub fn route(&mut self, g: Generation, notices: &mut Vec<Notice>) {
        let mut changed = Vec::new();
        let mut held = Vec::new();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            // A frozen group (a stranger joined) is still re-pointed at the
            // new generation's own socket, if it has one: that socket is
            // the only one it accepts on (changing the program moves no
            // member); nothing is ever closed in it.
            if !slot.mode.routes() {
                continue;
            }
            let Some(k) = slot.group.iter().position(|m| m.role.held_by(g)) else {
                continue;
            };
            if k != slot.group.routed() {
                slot.group.set_routed(k);
                if slot.group.probe().is_some_and(|(_, j)| j == k) {
                    slot.group.set_probe(None);
                }
                changed.push(i);
            }
            held.push(i);
        }
        // The kernel routes by the program it has: point it at the new
        // members before any member is closed below. Closing one moves the
        // group's last member into its slot, and that may be the member
        // the old program pointed at: new connections would be spread by
        // hash over every member, old generations' included, until the new
        // program is attached.
        self.attach_all(&changed, notices);
        let mut flushed = Vec::new();
        for i in held {
            if self.slots[i].mode != Mode::Steer {
                continue;
            }
            // An orphan: the crashed generation's socket, replaced by a
            // generation that was already starting.
            let routed = self.slots[i].group.routed();
            for (k, m) in self.slots[i].group.iter_mut().enumerate() {
                if k != routed {
                    m.role.retire_orphan();
                }
            }
            if self.flush_retired(i, notices) {
                flushed.push(i);
            }
        }
        self.attach_all(&flushed, notices);
    }

    /// Share new connections between generations by weight (percent);
    /// empty: all to the routed generation again. A generation with no
    /// socket of its own in a group gets nothing there.
    pub fn split(&mut self, shares: &[(Generation, u32)], notices: &mut Vec<Notice>) {
        self.split = shares.to_vec();
        for i in 0..self.slots.len() {
            if !self.slots[i].mode.routes() {
                continue;
            }
            if let Err(e) = self.attach(i) {
                notices.push(Notice::Failed {
                    listener: self.slots[i].listener.name.clone(),
                    why: format!("attach the program: {e}"),
                });
            }
        }
    }

    /// The generations of this supervisor's that still own a socket in a
    /// steered group (the driver checks, in debug builds, that each is one
    /// the machine still knows; the previous supervisor's sockets, after a
    /// takeover, are let go by [`Steering::release_previous`]).
    pub fn owners(&self) -> BTreeSet<Generation> {
        // A group that stopped changing (frozen, or shared) keeps its
        // members, owners and all, until the supervisor exits.
        self.slots
            .iter()
            .filter(|s| s.mode == Mode::Steer)
            .flat_map(|s| s.group.iter().filter_map(|m| m.role.generation()))
            .collect()
    }

    /// Generation `g` was reaped: close its own sockets, unless one is
    /// routed (a crash: its restart takes it over, and connections queued
    /// meanwhile are served).
    pub fn release(&mut self, g: Generation, notices: &mut Vec<Notice>) {
        if self.held {
            self.deferred.push(g);
            return;
        }
        self.no_reserves = false;
        // Strangers first: closing a member moves the group's last member,
        // which may be a stranger's.
        let closing: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.mode == Mode::Steer
                    && s.group.iter().enumerate().any(|(k, m)| {
                        m.role.held_by(g) && k != s.group.routed() && !m.role.pinned()
                    })
            })
            .collect();
        self.screen(&closing, notices);
        let mut changed = Vec::new();
        for i in 0..self.slots.len() {
            // A frozen group is not changed at all (closing would move
            // members around in a group where a stranger's position is
            // unknown): its members keep their owners.
            if self.slots[i].mode != Mode::Steer {
                continue;
            }
            let slot = &mut self.slots[i];
            let Some(k) = slot.group.iter().position(|m| m.role.held_by(g)) else {
                continue;
            };
            if k == slot.group.routed() {
                // A crash: the restart takes it over.
                slot.group[k].role.disown();
                continue;
            }
            // Retired, unless the previous supervisor holds it too (closed
            // once it is gone) or it is handed out (UDP: it stays,
            // receiving nothing).
            if slot.group[k].role.release() && self.flush_retired(i, notices) {
                changed.push(i);
            }
        }
        self.attach_all(&changed, notices);
    }

    /// Attach the program of each group in `slots` (a no-op where it is
    /// attached already).
    fn attach_all(&mut self, slots: &[usize], notices: &mut Vec<Notice>) {
        for &i in slots {
            if let Err(e) = self.attach(i) {
                notices.push(Notice::Failed {
                    listener: self.slots[i].listener.name.clone(),
                    why: format!("attach the program: {e}"),
                });
            }
        }
    }

    /// Connections waiting in `g`'s own steered sockets (not counting a
    /// socket that is still routed).
    pub fn queued(&self, g: Generation) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.mode.routes())
            .flat_map(|s| {
                s.group
                    .iter()
                    .enumerate()
                    .filter(move |(k, m)| m.role.held_by(g) && *k != s.group.routed())
                    .map(move |(_, m)| queue_length(m.fd.as_fd(), s.stream))
            })
            .sum()
    }

    /// The queue of each steered listener's socket of `g`, for status.
    pub fn queue_of(&self, g: Generation) -> Option<u64> {
        let mut any = false;
        let mut n = 0;
        for s in self.slots.iter().filter(|s| s.mode.routes()) {
            for m in s.group.iter().filter(|m| m.role.held_by(g)) {
                any = true;
                n += queue_length(m.fd.as_fd(), s.stream);
            }
        }
        any.then_some(n)
    }

    /// Whether some listener is a steered TCP one (readiness probes need
    /// one).
    pub fn can_probe(&self) -> bool {
        self.slots.iter().any(|s| s.mode == Mode::Steer && s.stream)
    }

    /// The reserve in listener `i`'s group (0 or 1): the member made ahead
    /// of time for the next generation.
    pub fn reserves(&self, i: usize) -> u32 {
        self.slots[i]
            .group
            .iter()
            .filter(|m| m.role.is_reserve())
            .count() as u32
    }

    /// The spare sockets in listener `i`'s group: the supervisor's own
    /// members that no generation holds (spares, and the reserve made for
    /// the next generation).
    pub fn spares(&self, i: usize) -> u32 {
        self.slots[i]
            .group
            .iter()
            .filter(|m| m.role.is_spare() || m.role.is_reserve())
            .count() as u32
    }

    /// Connections waiting in each listener's serving socket, in order.
    pub fn serving_queues(&self) -> Vec<u64> {
        self.slots
            .iter()
            .map(|s| match (s.group.routed_member(), s.listener.fd_opt()) {
                (Some(m), _) => queue_length(m.fd.as_fd(), s.stream),
                (None, Some(fd)) => {
                    let stream =
                        getsockopt(&fd, sockopt::SockType).is_ok_and(|t| t == SockType::Stream);
                    queue_length(fd, stream)
                }
                (None, None) => 0,
            })
            .collect()
    }

    /// A TCP listener whose socket of `g` can be probed: the listener's
    /// index and the address to connect to.
    pub fn probe_target(&self, g: Generation) -> Option<(usize, SocketAddr)> {
        self.slots.iter().enumerate().find_map(|(i, s)| {
            let own = s.group.iter().any(|m| m.role.held_by(g));
            (s.mode == Mode::Steer && s.stream && own).then(|| (i, connect_addr(s.addr)))
        })
    }

    /// Route connections from source port `port` on listener `i` to `g`'s
    /// socket (a readiness probe); `None` ends the exception.
    pub fn set_probe(&mut self, i: usize, rule: Option<(u16, Generation)>) -> Result<()> {
        let slot = &mut self.slots[i];
        let probe = match rule {
            Some((port, g)) => {
                let k = slot.group.iter().position(|m| m.role.held_by(g));
                Some((port, k.context("the generation has no socket of its own")?))
            }
            None => None,
        };
        slot.group.set_probe(probe);
        Ok(self.attach(i)?)
    }

    /// `g`'s own socket of listener `i`, and whether it is TCP.
    pub fn socket_of(&self, i: usize, g: Generation) -> Option<BorrowedFd<'_>> {
        let s = &self.slots[i];
        s.group
            .iter()
            .find(|m| m.role.held_by(g))
            .map(|m| m.fd.as_fd())
    }

    /// Close member `k` of slot `i`: it leaves the group, and the group's
    /// mirror follows the kernel (see [`Group::remove`]).
    fn remove(&mut self, i: usize, k: usize, notices: &mut Vec<Notice>) {
        let slot = &mut self.slots[i];
        let m = slot.group.remove(k);
        self.unwatched.remove(&m.fd.as_raw_fd());
        let slot = &mut self.slots[i];
        let queued = queue_length(m.fd.as_fd(), slot.stream);
        if queued > 0 {
            notices.push(Notice::ClosedWithQueue {
                listener: slot.listener.name.clone(),
                queued,
            });
        }
        if slot.stream {
            // Leave the group at once, whoever else holds the socket.
            let _ = nix::sys::socket::shutdown(m.fd.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        }
        drop(m);
        // The kernel has moved its last member into slot k: if that was the
        // routed one, the program's index now points past the end, and the
        // kernel spreads new connections by hash over every member (starting
        // and draining generations too) until the program follows. So it
        // follows at once, before anything else (the stranger check reads
        // every listening socket of the machine).
        self.attach_after_leave(i, notices);
    }

    /// After a member left slot `i`'s group: attach the program that routes
    /// by the new indices (an empty group has none: it went with the group).
    fn attach_after_leave(&mut self, i: usize, notices: &mut Vec<Notice>) {
        if self.slots[i].group.is_empty() {
            return;
        }
        if let Err(e) = self.attach(i) {
            notices.push(Notice::Failed {
                listener: self.slots[i].listener.name.clone(),
                why: format!("attach the program: {e}"),
            });
        }
    }

    /// After members joined or left: look for strangers, then re-attach
    /// the program of every changed group.
    fn after_change(&mut self, changed: &[usize], notices: &mut Vec<Notice>) {
        self.screen(changed, notices);
        self.attach_all(changed, notices);
    }

    /// Attach slot `i`'s program: everything to the routed member, except
    /// a probe's source port.
    ///
    /// The kernel keeps one program per reuseport group (`reuse->prog`,
    /// carried over when members join and leave), so a group needs an
    /// attach only when its program changes: one that would attach the
    /// program already there is skipped (an attach is a system call that
    /// also converts and compiles the program, tens of microseconds).
    fn attach(&mut self, i: usize) -> Result<(), Errno> {
        if self.held {
            return Ok(());
        }
        let weights = self.weights(i);
        let s = &mut self.slots[i];
        // Any member attaches the program to the whole group; an empty
        // group has nothing to route (its next member gets the program).
        let Some(m) = s.group.routed_member().or(s.group.first()) else {
            s.group.forget_program();
            return Ok(());
        };
        let prog = program(
            s.group.routed() as u32,
            &weights,
            s.group.probe().map(|(p, k)| (p, k as u32)),
        );
        let key: group::Program = prog.iter().map(|f| (f.code, f.jt, f.jf, f.k)).collect();
        if key == *s.group.attached() {
            return Ok(());
        }
        let r = attach_cbpf(m.fd.as_fd(), &prog);
        // A failed attach leaves the kernel's program unknown.
        s.group
            .set_attached(if r.is_ok() { key } else { Vec::new() });
        r
    }

    /// Slot `i`'s members and their weights under the current split: each
    /// generation in the split that has a socket of its own there. Fewer
    /// than two: no split (all to the routed member).
    fn weights(&self, i: usize) -> Vec<(u32, u32)> {
        let s = &self.slots[i];
        let out: Vec<(u32, u32)> = self
            .split
            .iter()
            .filter(|(_, w)| *w > 0)
            .filter_map(|(g, w)| {
                let k = s.group.iter().position(|m| m.role.held_by(*g))?;
                Some((k as u32, *w))
            })
            .collect();
        if out.len() < 2 { Vec::new() } else { out }
    }
}

/// The slot of a bound listener: steered if `steer` asks for it and the
/// socket can be (TCP or UDP with `SO_REUSEPORT`), else shared.
fn slot_for(mut listener: Listener, steer: bool) -> Slot {
    let kind = if steer {
        steer_kind(listener.fd())
    } else {
        Err("--handoff shared".to_string())
    };
    match kind {
        Ok((stream, addr, v6only)) => {
            // Steering owns the socket from now on: it must be able to
            // close it once generation 1 is gone.
            let fd = listener
                .take_fd()
                .expect("a bound listener holds its socket");
            Slot {
                listener,
                mode: Mode::Steer,
                group: Group::new(vec![Member::new(fd, Role::live(Owner::Nobody))], 0, None),
                stream,
                addr,
                v6only,
                shared_addr: None,
            }
        }
        Err(why) => {
            // A TCP listener is watched for a hang-up, and bound again on
            // its address if a server shuts it down.
            let tcp = tcp_address(listener.fd());
            Slot {
                stream: tcp.is_some(),
                listener,
                mode: Mode::Shared(why),
                group: Group::none(),
                addr: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
                v6only: tcp.is_some_and(|(_, only)| only),
                shared_addr: tcp.map(|(a, _)| a),
            }
        }
    }
}

/// Where a probe connects for a listener bound to `addr`: loopback for a
/// wildcard address.
fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// For the unit tests that ask the kernel itself: a non-blocking TCP
/// listener on 127.0.0.1:`port` (0: any) with `SO_REUSEPORT`, so that
/// several on one port make a reuseport group.
#[cfg(test)]
fn reuseport_listener(port: u16) -> std::net::TcpListener {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockProtocol, SockType, SockaddrIn, bind, listen,
        setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )
    .unwrap();
    setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
    listen(&fd, Backlog::new(1024).unwrap()).unwrap();
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true).unwrap();
    l
}
