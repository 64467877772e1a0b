//! The sd_notify protocol's text: the datagrams a child sends on
//! `NOTIFY_SOCKET` and the address that variable holds.
//!
//! Datagrams are parsed as systemd does (sd_notify(3) and systemd's
//! `src/shared/notify-recv.c`): NUL-holding messages are dropped, unknown
//! keys ignored. Pure: the supervisor's receiver (which also drops
//! truncated, fd-carrying and credential-less datagrams before they get
//! here) and the child's sender in `supervisor_child` do the I/O; what a
//! child sends is in [`supervisor_child::protocol::notify`].

use supervisor_child::protocol::{READY, RELOADING, STATUS_PREFIX, STOPPING};

/// Largest message systemd accepts (`NOTIFY_BUFFER_MAX`, `PIPE_BUF`).
pub const BUFFER_MAX: usize = 4096;

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Larger than the buffer, or its control data was cut.
    Truncated,
    /// It carried file descriptors (we store none).
    Fds,
    /// The kernel attached no credentials.
    NoCredentials,
    /// Sent by another user (this uid).
    Foreign(u32),
    /// Holds a NUL byte before its end.
    Nul,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Truncated => write!(f, "longer than {BUFFER_MAX} bytes"),
            Rejected::Fds => write!(f, "carries file descriptors"),
            Rejected::NoCredentials => write!(f, "has no sender credentials"),
            Rejected::Foreign(uid) => write!(f, "sent by uid {uid}, not ours"),
            Rejected::Nul => write!(f, "holds a NUL byte"),
        }
    }
}

/// The fields of one message the supervisor acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// `READY=1`.
    pub ready: bool,
    /// `STOPPING=1`.
    pub stopping: bool,
    /// `RELOADING=1`.
    pub reloading: bool,
    /// `STATUS=...` (the last one in the message).
    pub status: Option<String>,
}

/// Parse one datagram of newline-separated `KEY=VALUE` lines.
///
/// # Errors
/// A NUL byte anywhere but at the very end.
pub fn parse(data: &[u8]) -> Result<Message, Rejected> {
    let data = data.strip_suffix(b"\0").unwrap_or(data);
    if data.contains(&0) {
        return Err(Rejected::Nul);
    }
    let mut m = Message::default();
    for line in data.split(|&b| b == b'\n') {
        match line {
            l if l == READY.as_bytes() => m.ready = true,
            l if l == STOPPING.as_bytes() => m.stopping = true,
            l if l == RELOADING.as_bytes() => m.reloading = true,
            l => {
                if let Some(text) = l.strip_prefix(STATUS_PREFIX.as_bytes()) {
                    // Invalid UTF-8 is ignored, as systemd does.
                    if let Ok(t) = std::str::from_utf8(text) {
                        m.status = Some(t.to_string());
                    }
                }
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor_child::protocol::notify::{socket_addr, status_message};

    #[test]
    fn parses_as_systemd() {
        let m = parse(b"READY=1\nSTATUS=serving 3 conns\nX_FOO=bar\n").unwrap();
        assert!(m.ready && !m.stopping);
        assert_eq!(m.status.as_deref(), Some("serving 3 conns"));
        assert_eq!(parse(b"READY=0").unwrap(), Message::default());
        assert_eq!(parse(b"READY=1 ").unwrap(), Message::default());
        assert!(parse(b"STOPPING=1\0").unwrap().stopping);
        assert_eq!(parse(b"READY=1\0x"), Err(Rejected::Nul));
        assert_eq!(parse(b"STATUS=\xff").unwrap().status, None);
        assert_eq!(parse(b"").unwrap(), Message::default());
    }

    use supervisor_child::test_rng::Rng;

    #[test]
    fn any_bytes_parse_or_are_refused_whole() {
        let mut rng = Rng::new(1);
        for _ in 0..20_000 {
            let data = rng.bytes(64);
            let nul_inside = data[..data.len().saturating_sub(1)].contains(&0);
            match parse(&data) {
                // A refusal carries no message.
                Err(e) => assert!(e == Rejected::Nul && nul_inside, "{data:?}"),
                Ok(m) => {
                    assert!(!nul_inside, "{data:?}");
                    assert!(!m.status.is_some_and(|s| s.contains(['\n', '\0'])));
                }
            }
            let _ = socket_addr(std::os::unix::ffi::OsStrExt::from_bytes(&data));
        }
    }

    #[test]
    fn built_messages_parse_to_what_was_built() {
        let mut rng = Rng::new(2);
        for _ in 0..10_000 {
            let (ready, stopping, reloading) = (rng.one_in(2), rng.one_in(2), rng.one_in(2));
            let text = rng.one_in(3).then(|| rng.string(40));
            let mut lines: Vec<String> = Vec::new();
            for (on, line) in [(ready, READY), (stopping, STOPPING), (reloading, RELOADING)] {
                if on {
                    lines.push(line.into());
                }
            }
            if rng.one_in(2) {
                lines.push("X_UNKNOWN=1".into());
            }
            // Shuffled: order does not matter (STATUS= comes last, as
            // the last one wins).
            for i in (1..lines.len()).rev() {
                lines.swap(i, rng.below(i + 1));
            }
            if let Some(t) = &text {
                lines.push(status_message(t));
            }
            let m = parse(lines.join("\n").as_bytes()).unwrap();
            let want = Message {
                ready,
                stopping,
                reloading,
                status: text.map(|t| t.replace(['\n', '\r', '\0'], " ")),
            };
            assert_eq!(m, want, "{lines:?}");
        }
    }
}
