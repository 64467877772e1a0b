//! One reuseport group as this part mirrors it: the members in the
//! kernel's order, the routed member, the member a probe goes to, and the
//! program last attached.
//!
//! Owns the order invariant. The kernel numbers a group's members in the
//! order they joined (a new member is last) and, when one leaves, moves the
//! last member into its slot; the program routes by those numbers. Every
//! change of the order goes through [`Group::push`] and [`Group::remove`],
//! which keep the routed and probe indices on the same members. It is pure
//! bookkeeping, generic over the member: it never touches a socket (the
//! caller closes the member [`Group::remove`] hands back, and re-attaches
//! the program).

use std::ops::{Deref, Index, IndexMut};

/// A program as the kernel holds it, instruction by instruction (code,
/// jump if true, jump if false, constant): compared to skip an attach that
/// would change nothing.
pub(super) type Program = Vec<(u16, u8, u8, u32)>;

/// One group's members in the kernel's order (index = position).
#[derive(Clone, Debug)]
pub(super) struct Group<M> {
    members: Vec<M>,
    /// The index of the member that takes new connections (past the end
    /// only while the group has no member there: the routed one left last).
    routed: usize,
    /// A probe's source port and the index of the member it goes to.
    probe: Option<(u16, usize)>,
    /// The program last attached, as the kernel holds it (it keeps one per
    /// group, through members joining and leaving). Empty: unknown.
    attached: Program,
}

impl<M> Group<M> {
    /// A group of the members given, in the kernel's order, routed to
    /// member `routed`.
    pub fn new(members: Vec<M>, routed: usize, probe: Option<(u16, usize)>) -> Group<M> {
        Group {
            members,
            routed,
            probe,
            attached: Program::new(),
        }
    }

    /// No group (a shared listener's).
    pub fn none() -> Group<M> {
        Group::new(Vec::new(), 0, None)
    }

    /// A member joined: it is last.
    pub fn push(&mut self, m: M) {
        self.members.push(m);
    }

    /// Member `k` left, as the kernel does it: the last member moves into
    /// its slot, and the routed and probe indices follow their members (a
    /// probe to the member that left ends). Returns that member. The
    /// program the kernel held goes with the group's last member.
    pub fn remove(&mut self, k: usize) -> M {
        let m = self.members.swap_remove(k);
        let last = self.members.len();
        if self.routed == last {
            self.routed = k;
        }
        if let Some((port, j)) = self.probe {
            self.probe = (j != k).then_some((port, if j == last { k } else { j }));
        }
        if self.members.is_empty() {
            self.attached.clear();
        }
        m
    }

    /// The members, to change in place (never to reorder).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, M> {
        self.members.iter_mut()
    }

    /// Member `k`, to change in place.
    pub fn get_mut(&mut self, k: usize) -> Option<&mut M> {
        self.members.get_mut(k)
    }

    /// The index of the routed member.
    pub fn routed(&self) -> usize {
        self.routed
    }

    /// The routed member, if it is there.
    pub fn routed_member(&self) -> Option<&M> {
        self.members.get(self.routed)
    }

    /// Route new connections to member `k`.
    pub fn set_routed(&mut self, k: usize) {
        self.routed = k;
    }

    /// The probe's source port and member index.
    pub fn probe(&self) -> Option<(u16, usize)> {
        self.probe
    }

    /// Send connections from source port `port` to member `k` (`None`: no
    /// probe).
    pub fn set_probe(&mut self, probe: Option<(u16, usize)>) {
        self.probe = probe;
    }

    /// The program last attached (empty: unknown).
    pub fn attached(&self) -> &Program {
        &self.attached
    }

    /// The program is no longer known (another supervisor attaches its own,
    /// or an attach failed half-way): the next attach is made whatever it is.
    pub fn forget_program(&mut self) {
        self.attached.clear();
    }

    /// The program the kernel now holds (empty: unknown, so the next
    /// attach is made whatever it is).
    pub fn set_attached(&mut self, program: Program) {
        self.attached = program;
    }
}

/// A group reads as its members, in the kernel's order; it changes only
/// through its methods (no slice method can reorder it).
impl<M> Deref for Group<M> {
    type Target = [M];
    fn deref(&self) -> &[M] {
        &self.members
    }
}

impl<M> Index<usize> for Group<M> {
    type Output = M;
    fn index(&self, k: usize) -> &M {
        &self.members[k]
    }
}

impl<M> IndexMut<usize> for Group<M> {
    fn index_mut(&mut self, k: usize) -> &mut M {
        &mut self.members[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every removal from every group of up to six members, whatever is
    /// routed and probed: the other members keep their order but the last,
    /// which takes the place left; the routed and probe indices still name
    /// the same members (the probe ends with its member).
    #[test]
    fn a_removal_keeps_the_routed_and_probed_members_in_place() {
        for n in 1..=6usize {
            for routed in 0..n {
                for probe in (0..n).map(Some).chain([None]) {
                    for k in 0..n {
                        let mut g = Group::new(
                            (0..n).map(|i| i * 10).collect(),
                            routed,
                            probe.map(|p| (40000, p)),
                        );
                        g.set_attached(vec![(6, 0, 0, routed as u32)]);
                        assert_eq!(g.remove(k), k * 10);
                        // The kernel's order: the last member in slot k.
                        let mut want: Vec<usize> = (0..n).map(|i| i * 10).collect();
                        want.swap_remove(k);
                        assert_eq!(&*g, &want[..]);
                        if routed != k {
                            assert_eq!(g[g.routed()], routed * 10, "n {n} routed {routed} k {k}");
                        } else {
                            // The routed member left: the index now names
                            // the one that moved in (or nothing).
                            assert_eq!(g.routed(), k);
                        }
                        match probe {
                            Some(p) if p != k => {
                                let (port, j) = g.probe().expect("the probe stays");
                                assert_eq!((port, g[j]), (40000, p * 10));
                            }
                            _ => assert_eq!(g.probe(), None),
                        }
                        // The program goes with the group's last member.
                        assert_eq!(g.attached().is_empty(), n == 1);
                    }
                }
            }
        }
    }

    /// A sequence of joins and removals, against a plain list kept the
    /// kernel's way.
    #[test]
    fn joins_and_removals_keep_the_kernels_order() {
        let mut g = Group::new(vec!['a'], 0, None);
        let mut kernel = vec!['a'];
        for (step, c) in "bcdefghij".chars().enumerate() {
            g.push(c);
            kernel.push(c);
            if step % 2 == 1 {
                let k = step % g.len();
                let routed = g.routed_member().copied();
                let left = g.remove(k);
                assert_eq!(left, kernel.swap_remove(k));
                if routed != Some(left) {
                    assert_eq!(g.routed_member().copied(), routed);
                }
            }
            assert_eq!(&*g, &kernel[..]);
        }
    }

    /// The mirror against the kernel: four sockets in one group, routed by
    /// the program to the member the mirror names after each removal.
    #[test]
    fn the_kernel_routes_where_the_mirror_says_after_removals() {
        use super::super::bpf::{attach_cbpf, program};
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::{AsFd, AsRawFd};
        let bind = super::super::reuseport_listener;
        let first = bind(0);
        let port = first.local_addr().unwrap().port();
        let mut g = Group::new(vec![first], 0, None);
        for _ in 0..3 {
            g.push(bind(port));
        }
        // Which member takes a new connection.
        let lands = |g: &Group<TcpListener>| -> usize {
            let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // The handshake is complete on loopback when connect returns.
            let took: Vec<usize> = (0..g.len()).filter(|&k| g[k].accept().is_ok()).collect();
            assert_eq!(took.len(), 1, "{took:?}");
            took[0]
        };
        let attach = |g: &Group<TcpListener>| {
            attach_cbpf(g[0].as_fd(), &program(g.routed() as u32, &[], None)).unwrap();
        };
        // Routed to the last member; the first leaves, the last moves into
        // its slot: the mirror follows, and so does the program.
        g.set_routed(3);
        attach(&g);
        assert_eq!(lands(&g), 3);
        let left = g.remove(0);
        nix::sys::socket::shutdown(left.as_raw_fd(), nix::sys::socket::Shutdown::Read).unwrap();
        drop(left);
        assert_eq!(g.routed(), 0);
        attach(&g);
        assert_eq!(lands(&g), 0);
        // A member before the routed one leaves: nothing moves but the last.
        g.set_routed(1);
        attach(&g);
        let left = g.remove(2);
        drop(left);
        assert_eq!(g.routed(), 1);
        assert_eq!(lands(&g), 1);
    }
}
