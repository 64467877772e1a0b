//! Sending file descriptors with `SCM_RIGHTS` without ever blocking: an
//! answer of `ok N`, N description lines and the N sockets, in batches of
//! at most `SCM_MAX_FD`, resumed when the socket has room, retried after
//! `ETOOMANYREFS`. Shared by the control socket, the children's channels
//! and the takeover. It owns the duplicates it sends (closed once sent or
//! dropped) and never chooses what to send.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use hot_supervisor::parse::control::{SCM_MAX_FD, fds_header};

/// How long to wait before sending again after `ETOOMANYREFS` (the
/// peer's user has too many file descriptors in flight: the kernel counts
/// them against its `RLIMIT_NOFILE` until the receiver takes them).
pub const REFUSED_RETRY: Duration = Duration::from_millis(20);

/// How many `ETOOMANYREFS` in a row a transfer survives (about 5 s).
pub const MAX_REFUSED: u32 = 250;

/// An answer that carries file descriptors: `ok N\n` and N description
/// lines, the fds attached in the same order, at most [`SCM_MAX_FD`] per
/// `sendmsg`, each batch's lines as the data of the `sendmsg` that carries
/// its fds (the header with the first). The fds are the supervisor's own
/// duplicates, closed once the kernel has taken them (or when the transfer
/// is dropped: a client that leaves mid-transfer leaks nothing).
#[derive(Debug)]
pub struct Transfer {
    pub(super) batches: VecDeque<Batch>,
    /// `ETOOMANYREFS` in a row.
    refused: u32,
    /// Sending resumes at this time (after `ETOOMANYREFS`), not when the
    /// socket is writable.
    retry_at: Option<Instant>,
    /// Some bytes have gone out: an error can no longer be answered.
    started: bool,
}

#[derive(Debug)]
pub(super) struct Batch {
    pub(super) data: Vec<u8>,
    sent: usize,
    /// Emptied once attached to a `sendmsg` that went out.
    pub(super) fds: Vec<OwnedFd>,
}

impl Transfer {
    /// The answer for these (description line, socket) pairs, in order.
    pub fn new(items: Vec<(String, OwnedFd)>) -> Transfer {
        Transfer::with_preamble(String::new(), items)
    }

    /// A transfer of one line and no fd (an `error` answer on a channel
    /// that takes several requests in turn).
    pub fn line(line: String) -> Transfer {
        Transfer {
            batches: VecDeque::from([Batch {
                data: line.into_bytes(),
                sent: 0,
                fds: Vec::new(),
            }]),
            refused: 0,
            retry_at: None,
            started: false,
        }
    }

    /// As [`Transfer::new`], with `preamble` (whole lines) between the
    /// header and the first description line.
    pub fn with_preamble(preamble: String, items: Vec<(String, OwnedFd)>) -> Transfer {
        let mut head = fds_header(items.len()).into_bytes();
        head.extend_from_slice(preamble.as_bytes());
        Transfer::with_head(head, items, |line, data| {
            data.extend_from_slice(line.as_bytes());
        })
    }

    /// The answer whose header and preamble are `head` (already written:
    /// a large preamble need not be copied), with each item's description
    /// line written by `line` into the data of the batch that carries its
    /// fd.
    pub fn with_head<T>(
        head: Vec<u8>,
        items: Vec<(T, OwnedFd)>,
        line: impl Fn(&T, &mut Vec<u8>),
    ) -> Transfer {
        let mut batches = VecDeque::new();
        let mut head = Some(head);
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut data = head.take().unwrap_or_default();
            let mut fds = Vec::new();
            for (item, fd) in items.by_ref().take(SCM_MAX_FD) {
                line(&item, &mut data);
                fds.push(fd);
            }
            batches.push_back(Batch { data, sent: 0, fds });
        }
        if let Some(data) = head {
            // No listener: the header alone.
            batches.push_back(Batch {
                data,
                sent: 0,
                fds: Vec::new(),
            });
        }
        Transfer {
            batches,
            refused: 0,
            retry_at: None,
            started: false,
        }
    }
}

impl Transfer {
    /// Sending resumes at this time (after `ETOOMANYREFS`), not when the
    /// socket is writable.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The retry time has come.
    pub fn clear_retry(&mut self) {
        self.retry_at = None;
    }
}

/// What a send step of a [`Transfer`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum SendStep {
    /// More to send, when writable (or at the retry time).
    Pending,
    /// Everything sent: close.
    Done,
    /// It cannot go on; whether nothing was sent yet, and why.
    Failed(bool, String),
}

/// Send what the socket takes of `t`; never blocks.
pub fn send_some(stream: &UnixStream, t: &mut Transfer, now: Instant) -> SendStep {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    while let Some(b) = t.batches.front_mut() {
        if b.sent == b.data.len() {
            t.batches.pop_front();
            continue;
        }
        let raw: Vec<RawFd> = b.fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
        let iov = [IoSlice::new(&b.data[b.sent..])];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(0) => return SendStep::Failed(!t.started, "sendmsg sent nothing".into()),
            Ok(n) => {
                // The fds went with the first bytes sent (unix(7) stream
                // sockets attach them to the first segment): our copies go.
                b.fds.clear();
                b.sent += n;
                t.refused = 0;
                t.started = true;
            }
            Err(nix::errno::Errno::EAGAIN) => return SendStep::Pending,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ETOOMANYREFS) => {
                t.refused += 1;
                if t.refused > MAX_REFUSED {
                    return SendStep::Failed(
                        !t.started,
                        "the receiving user has too many file descriptors in flight (ETOOMANYREFS; its RLIMIT_NOFILE is too low for this many listeners)".into(),
                    );
                }
                t.retry_at = Some(now + REFUSED_RETRY);
                return SendStep::Pending;
            }
            Err(e) => return SendStep::Failed(!t.started, format!("sendmsg: {e}")),
        }
    }
    SendStep::Done
}
