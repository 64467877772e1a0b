//! The classic BPF program of a reuseport group, and attaching it: which
//! member gets a new connection (the routed one, a weighted draw between
//! several, or the probe's member for the probe's source port). Pure
//! instructions and one `setsockopt`; it never chooses the routing itself.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// The classic BPF program of a group: connections from source port
/// `probe.0` go to member `probe.1`; the others to member `routed`, or,
/// when `split` names two members or more (member index, weight), to one
/// of them at random with a probability proportional to its weight.
///
/// The source port is read from the packet's transport header, found
/// through the network header (`SKF_NET_OFF`): after a variable-length IPv4
/// header, or after the fixed 40-byte IPv6 header.
///
/// The split draws a 32-bit random number (`ld #rand`, the ancillary load
/// at `SKF_AD_OFF + SKF_AD_RANDOM`, a fresh `get_random_u32` per packet)
/// and compares it with the cumulative thresholds `T_j = floor(2^32 *
/// (w_0 + ... + w_j) / W)`: the first member whose threshold is above the
/// number gets the connection, the last one everything above the last
/// threshold. So member j gets `(T_j - T_(j-1)) / 2^32` of the new
/// connections, its weight's share to within 2^-32.
pub fn program(
    routed: u32,
    split: &[(u32, u32)],
    probe: Option<(u16, u32)>,
) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20;
    const LD_B_ABS: u16 = 0x30;
    const LD_H_ABS: u16 = 0x28;
    const LD_H_IND: u16 = 0x48;
    const LDX_B_MSH: u16 = 0xb1;
    const ALU_RSH_K: u16 = 0x74;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const JA: u16 = 0x05;
    const RET_K: u16 = 0x06;
    let ins = |code, jt, jf, k: u32| libc::sock_filter { code, jt, jf, k };
    let net = libc::SKF_NET_OFF as u32;
    let tail = match split {
        [] | [_] => vec![ins(RET_K, 0, 0, routed)],
        _ => {
            let total: u64 = split.iter().map(|(_, w)| u64::from(*w)).sum();
            let mut out = vec![ins(
                LD_W_ABS,
                0,
                0,
                (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
            )];
            let mut cum = 0u64;
            let (last, first) = split.split_last().expect("two members or more");
            for (member, weight) in first {
                cum += u64::from(*weight);
                // At most 2^32 - 1: the last member's weight is above 0.
                let threshold = ((cum << 32) / total.max(1)).min(u64::from(u32::MAX)) as u32;
                // Random >= threshold: on to the next test; else this one.
                out.push(ins(JGE_K, 1, 0, threshold));
                out.push(ins(RET_K, 0, 0, *member));
            }
            out.push(ins(RET_K, 0, 0, last.0));
            out
        }
    };
    let Some((port, member)) = probe else {
        return tail;
    };
    let mut out = vec![
        ins(LD_B_ABS, 0, 0, net),  // 0: A = first byte of the IP header
        ins(ALU_RSH_K, 0, 0, 4),   // 1: A = IP version
        ins(JEQ_K, 3, 0, 6),       // 2: IPv6? to 6
        ins(LDX_B_MSH, 0, 0, net), // 3: X = IPv4 header length
        ins(LD_H_IND, 0, 0, net),  // 4: A = source port
        ins(JA, 0, 0, 1),          // 5: to 7
        ins(LD_H_ABS, 0, 0, net.wrapping_add(40)), // 6: A = IPv6 source port
        ins(JEQ_K, 0, 1, u32::from(port)), // 7: the probe's port?
        ins(RET_K, 0, 0, member),  // 8: to the probe's member
    ];
    out.extend(tail); // 9: everything else
    out
}

pub(super) fn attach_cbpf(fd: BorrowedFd<'_>, prog: &[libc::sock_filter]) -> Result<(), Errno> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points into `prog`, which outlives the call; the
    // kernel copies the program before returning.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(Errno::last()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_program_without_probe_is_one_return() {
        let p = program(3, &[], None);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].code, p[0].k), (0x06, 3));
    }

    #[test]
    fn a_probe_program_jumps_to_its_returns() {
        let p = program(1, &[], Some((40000, 2)));
        assert_eq!(p.len(), 10);
        // Every jump lands inside the program.
        for (i, ins) in p.iter().enumerate() {
            if ins.code == 0x15 {
                assert!(i + 1 + (ins.jt as usize) < p.len());
                assert!(i + 1 + (ins.jf as usize) < p.len());
            }
            if ins.code == 0x05 {
                assert!(i + 1 + (ins.k as usize) < p.len());
            }
        }
        assert_eq!(p[7].k, 40000);
        assert_eq!((p[8].code, p[8].k), (0x06, 2));
        assert_eq!((p[9].code, p[9].k), (0x06, 1));
    }

    #[test]
    fn a_split_program_compares_a_random_number_with_thresholds() {
        // 80/20 between members 2 and 0.
        let p = program(2, &[(2, 80), (0, 20)], None);
        assert_eq!(p.len(), 4);
        assert_eq!(
            (p[0].code, p[0].k),
            (0x20, (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32)
        );
        let t = p[1].k;
        assert_eq!((p[1].code, p[1].jt, p[1].jf), (0x35, 1, 0));
        assert_eq!((t as f64 / 2f64.powi(32) * 100.0).round(), 80.0);
        assert_eq!((p[2].code, p[2].k), (0x06, 2));
        assert_eq!((p[3].code, p[3].k), (0x06, 0));
        // Three members: two thresholds, increasing.
        let p = program(0, &[(0, 1), (1, 1), (2, 2)], None);
        assert_eq!(p.len(), 6);
        assert!(p[1].k < p[3].k);
        assert_eq!(p[3].k, 1 << 31);
        // One member is no split; with a probe the split follows it.
        assert_eq!(program(4, &[(1, 100)], None).len(), 1);
        let p = program(1, &[(1, 50), (3, 50)], Some((40000, 2)));
        assert_eq!(p.len(), 9 + 4);
        assert_eq!((p[8].code, p[8].k), (0x06, 2));
        assert_eq!(p[9].code, 0x20);
    }

    /// The kernel keeps one program per reuseport group, not per socket:
    /// attached once through one member, it routes for the whole group,
    /// and it stays through members joining and leaving (the attach that
    /// [`super::Steering::attach`] skips when the program is unchanged).
    #[test]
    fn the_kernel_keeps_the_program_per_group_through_joins_and_leaves() {
        use std::net::{TcpListener, TcpStream};
        let bind = super::super::reuseport_listener;
        let a = bind(0);
        let port = a.local_addr().unwrap().port();
        let b = bind(port);
        // Attached through `a`, member 0: everything to member 1 (`b`).
        attach_cbpf(a.as_fd(), &program(1, &[], None)).unwrap();
        let count = |members: &[&TcpListener], n: usize| -> Vec<usize> {
            let mut got = vec![0; members.len()];
            for _ in 0..n {
                let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                // The handshake is complete on loopback when connect returns.
                for (k, l) in members.iter().enumerate() {
                    if l.accept().is_ok() {
                        got[k] += 1;
                    }
                }
            }
            got
        };
        assert_eq!(count(&[&a, &b], 50), vec![0, 50]);
        // Two more join (members 2 and 3), with no attach: still all to b.
        let c = bind(port);
        let d = bind(port);
        assert_eq!(count(&[&a, &b, &c, &d], 50), vec![0, 50, 0, 0]);
        // `c` leaves: the last member (`d`) takes its slot 2, `b` stays
        // member 1, and the program still sends everything there.
        nix::sys::socket::shutdown(c.as_raw_fd(), nix::sys::socket::Shutdown::Read).unwrap();
        assert_eq!(count(&[&a, &b, &d], 50), vec![0, 50, 0]);
        // `a`, through which it was attached, leaves: `d` becomes member 0
        // and `b` is still member 1 under the same program.
        drop(a);
        assert_eq!(count(&[&b, &d], 50), vec![50, 0]);
    }

    /// The split program, run by the kernel on real connections: about the
    /// asked share lands on each of two listening sockets.
    #[test]
    fn the_kernel_runs_the_split_program() {
        use std::net::TcpStream;
        let bind = super::super::reuseport_listener;
        let a = bind(0);
        let port = a.local_addr().unwrap().port();
        let b = bind(port);
        // Member 0 is `a`, member 1 is `b` (join order): 25% to `b`.
        attach_cbpf(a.as_fd(), &program(0, &[(0, 75), (1, 25)], None)).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let total = 800;
        let (mut on_a, mut on_b) = (0, 0);
        for _ in 0..total {
            let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // The handshake is complete on loopback when connect returns.
            if a.accept().is_ok() {
                on_a += 1;
            }
            if b.accept().is_ok() {
                on_b += 1;
            }
        }
        assert_eq!(on_a + on_b, total);
        // Binomial(800, 0.25): mean 200, sd 12.2; 5 sd either way.
        assert!((139..=261).contains(&on_b), "{on_b} of {total} on b");
    }
}
