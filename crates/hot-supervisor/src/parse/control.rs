//! The control socket's protocol text: one request line in (`reload`,
//! `reload rolling K`, `reload canary PCT [DUR]`, `promote`, `rollback`,
//! `status`, `stop`, `fds [NAME...]` or `listen NAME ADDR`). The answer
//! line (`ok TEXT` or `error TEXT`) and, for `fds` and `listen`, the
//! listener descriptions that go with the file descriptors are the fetch
//! wire format, which children read too: it is defined in
//! [`supervisor_child::protocol::fetch`] and re-exported here.
//!
//! Pure: the supervisor's control server and its client do the I/O.

use crate::parse::listen::{Spec, valid_name as valid_wire_name};
pub use supervisor_child::protocol::fetch::{
    Answer, BadAnswer, KINDS, SCM_MAX_FD, answer, fd_line, fds_header, parse_answer, parse_fd_line,
    parse_fds_header,
};

/// Longest request line accepted (the real ones are a few bytes).
pub const MAX_REQUEST: usize = 1024;

/// A request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Start a new generation; answer with the outcome.
    Reload,
    /// Answer with the supervisor's state, as JSON.
    Status,
    /// Stop gracefully; answer when about to exit.
    Stop,
    /// Send the listening sockets with `SCM_RIGHTS`: these names in this
    /// order, or every listener when empty.
    Fds(Vec<String>),
    /// Open a listener at run time (or find the one of that name) and send
    /// it with `SCM_RIGHTS`.
    Listen(Spec),
    /// Upgrade the supervisor in place (`upgrade` or `upgrade TIMEOUT`,
    /// the bound on the new binary's check); answer with the outcome.
    Upgrade(Option<std::time::Duration>),
    /// Another supervisor takes every socket over (supervisor to
    /// supervisor; see the binary's `takeover` module).
    Takeover,
    /// A reload with a strategy of its own (`reload rolling K`, `reload
    /// canary PCT [DUR]`); answered as `reload` is.
    ReloadWith(ReloadKind),
    /// Finish a canary: it takes every new connection.
    Promote,
    /// Undo a canary or a rolling reload: the serving generation takes
    /// every new connection back, the new one stops.
    Rollback,
    /// Stream the lifecycle events, one JSON object per line after `ok
    /// events`, until the client leaves (the one request that keeps its
    /// connection open).
    Events,
}

/// How a `reload` replaces the serving generation when it says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadKind {
    /// K workers at a time.
    Rolling(u32),
    /// A canary with this share (1 to 99 percent), promoted by itself
    /// after the duration, if one is given.
    Canary {
        /// Percent of new connections.
        percent: u32,
        /// Promote after this long.
        promote_after: Option<std::time::Duration>,
    },
}

impl Request {
    /// The request's word (the first of its line).
    pub fn as_str(&self) -> &'static str {
        match self {
            Request::Reload => "reload",
            Request::Status => "status",
            Request::Stop => "stop",
            Request::Fds(_) => "fds",
            Request::Listen(_) => "listen",
            Request::Upgrade(_) => "upgrade",
            Request::Takeover => "takeover",
            Request::ReloadWith(_) => "reload",
            Request::Promote => "promote",
            Request::Rollback => "rollback",
            Request::Events => "events",
        }
    }

    /// The request line (without its newline).
    pub fn line(&self) -> String {
        match self {
            Request::Fds(names) if !names.is_empty() => format!("fds {}", names.join(" ")),
            Request::Listen(spec) => format!("listen {} {}", spec.name, spec.text),
            Request::Upgrade(Some(t)) => format!("upgrade {}ms", t.as_millis().max(1)),
            Request::ReloadWith(ReloadKind::Rolling(k)) => format!("reload rolling {k}"),
            Request::ReloadWith(ReloadKind::Canary {
                percent,
                promote_after,
            }) => match promote_after {
                Some(d) => format!("reload canary {percent} {}ms", d.as_millis().max(1)),
                None => format!("reload canary {percent}"),
            },
            other => other.as_str().to_string(),
        }
    }

    /// Whether the answer carries file descriptors (the [`fds_header`]
    /// format rather than one answer line).
    pub fn sends_fds(&self) -> bool {
        matches!(self, Request::Fds(_) | Request::Listen(_))
    }
}

/// What is wrong with a request line. Its text (`Display`) is what the
/// control socket answers: what was given, shown short and escaped, and
/// what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Longer than [`MAX_REQUEST`] bytes without a newline.
    TooLong,
    /// Not a request at all (the line, shown short).
    Unknown(String),
    /// `upgrade 0s`.
    ZeroUpgradeTimeout,
    /// `upgrade DUR` with no duration (the argument shown short, and the
    /// duration parser's reason).
    BadUpgradeTimeout(String, String),
    /// `reload ...` with no strategy that parses.
    Reload(ReloadError),
    /// `fds` with names that are not ASCII (the names, shown short).
    NamesNotAscii(String),
    /// A name that cannot be a listener's, in `fds` or `listen` (the
    /// request's word, the name shown short).
    BadName(&'static str, String),
    /// `listen` with a line that is not UTF-8 (shown short).
    ListenNotUtf8(String),
    /// `listen` without both a name and an address.
    ListenUsage,
    /// `listen NAME ADDR` with an address that does not parse (why).
    ListenAddress(String),
}

/// What is wrong with the words after `reload `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadError {
    /// Neither `rolling K` nor `canary PCT [DUR]`.
    Usage,
    /// A number out of its range (what it is, its maximum, the word shown
    /// short).
    Number(&'static str, u32, String),
    /// The canary's promote-after duration (shown short).
    PromoteAfter(String),
}

/// The requests, for an unknown one's answer.
const EXPECTED: &str = "reload [rolling K|canary PCT [DUR]], promote, rollback, status, events, stop, upgrade [DUR], fds [NAME...] or listen NAME ADDR";

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::Unknown(line) => {
                write!(f, "unknown request {line:?} (expected {EXPECTED})")
            }
            RequestError::ZeroUpgradeTimeout => {
                write!(f, "upgrade: the timeout must be more than 0")
            }
            RequestError::BadUpgradeTimeout(arg, why) => write!(
                f,
                "upgrade: bad timeout {arg:?}: {}",
                why.chars().take(200).collect::<String>().escape_debug()
            ),
            RequestError::Reload(e) => write!(f, "reload: {e}"),
            RequestError::NamesNotAscii(names) => {
                write!(f, "fds: names are ASCII, not {names:?}")
            }
            RequestError::BadName(request, name) => write!(
                f,
                "{request}: invalid listener name {name:?} (1 to 255 printable ASCII characters without ':' or space)"
            ),
            RequestError::ListenNotUtf8(line) => write!(f, "listen: not UTF-8: {line:?}"),
            RequestError::ListenUsage => write!(f, "listen: expected `listen NAME ADDR`"),
            // The message quotes the address: shown short and escaped.
            RequestError::ListenAddress(why) => write!(
                f,
                "listen: {}",
                why.chars().take(200).collect::<String>().escape_debug()
            ),
        }
    }
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Usage => write!(
                f,
                "expected `reload`, `reload rolling K` or `reload canary PCT [DUR]`"
            ),
            ReloadError::Number(what, max, word) => {
                write!(f, "{what} must be a number from 1 to {max}, not {word:?}")
            }
            ReloadError::PromoteAfter(word) => {
                write!(f, "bad promote-after duration {word:?}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Parse a request line (without its newline; a `\r` before it is
/// tolerated).
///
/// # Errors
/// The line is not a known request; the error says what was wrong.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line {
        b"reload" => return Ok(Request::Reload),
        b"status" => return Ok(Request::Status),
        b"stop" => return Ok(Request::Stop),
        b"fds" => return Ok(Request::Fds(Vec::new())),
        b"upgrade" => return Ok(Request::Upgrade(None)),
        b"takeover" => return Ok(Request::Takeover),
        b"promote" => return Ok(Request::Promote),
        b"rollback" => return Ok(Request::Rollback),
        b"events" => return Ok(Request::Events),
        _ => {}
    }
    let shown = |b: &[u8]| -> String { String::from_utf8_lossy(b).chars().take(40).collect() };
    if let Some(rest) = line.strip_prefix(b"upgrade ") {
        let arg = String::from_utf8_lossy(rest).into_owned();
        return match crate::duration::parse(&arg) {
            Ok(d) if !d.is_zero() => Ok(Request::Upgrade(Some(d))),
            Ok(_) => Err(RequestError::ZeroUpgradeTimeout),
            Err(e) => Err(RequestError::BadUpgradeTimeout(shown(rest), e)),
        };
    }
    if let Some(rest) = line.strip_prefix(b"reload ") {
        return parse_reload(rest)
            .map(Request::ReloadWith)
            .map_err(RequestError::Reload);
    }
    if let Some(rest) = line.strip_prefix(b"fds ") {
        let rest =
            std::str::from_utf8(rest).map_err(|_| RequestError::NamesNotAscii(shown(rest)))?;
        let mut names = Vec::new();
        for name in rest.split(' ').filter(|n| !n.is_empty()) {
            if !valid_wire_name(name) {
                return Err(RequestError::BadName("fds", shown(name.as_bytes())));
            }
            names.push(name.to_string());
        }
        return Ok(Request::Fds(names));
    }
    if let Some(rest) = line.strip_prefix(b"listen ") {
        let rest =
            std::str::from_utf8(rest).map_err(|_| RequestError::ListenNotUtf8(shown(rest)))?;
        let Some((name, addr)) = rest.split_once(' ') else {
            return Err(RequestError::ListenUsage);
        };
        if !valid_wire_name(name) {
            return Err(RequestError::BadName("listen", shown(name.as_bytes())));
        }
        let spec = Spec::named(name, addr).map_err(RequestError::ListenAddress)?;
        return Ok(Request::Listen(spec));
    }
    Err(RequestError::Unknown(shown(line)))
}

/// The words after `reload `: `rolling K` or `canary PCT [DUR]`.
fn parse_reload(rest: &[u8]) -> Result<ReloadKind, ReloadError> {
    let text = std::str::from_utf8(rest).map_err(|_| ReloadError::Usage)?;
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let number = |w: &str, what: &'static str, max: u32| -> Result<u32, ReloadError> {
        match w.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ReloadError::Number(what, max, w.chars().take(40).collect())),
        }
    };
    match words.as_slice() {
        ["rolling", k] => Ok(ReloadKind::Rolling(number(k, "K", 1024)?)),
        ["canary", pct] => Ok(ReloadKind::Canary {
            percent: number(pct, "the canary's percent", 99)?,
            promote_after: None,
        }),
        ["canary", pct, dur] => {
            let percent = number(pct, "the canary's percent", 99)?;
            match crate::duration::parse(dur) {
                Ok(d) if !d.is_zero() => Ok(ReloadKind::Canary {
                    percent,
                    promote_after: Some(d),
                }),
                _ => Err(ReloadError::PromoteAfter(dur.chars().take(40).collect())),
            }
        }
        _ => Err(ReloadError::Usage),
    }
}

/// What a read buffer holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// No newline yet, and still short enough.
    Incomplete,
    /// A complete line (bytes after it are ignored: one request per
    /// connection).
    Complete(&'a [u8]),
    /// More than [`MAX_REQUEST`] bytes without a newline.
    TooLong,
}

/// Look for the request line in what was read so far.
pub fn take_line(buf: &[u8]) -> Line<'_> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(n) if n <= MAX_REQUEST => Line::Complete(&buf[..n]),
        Some(_) => Line::TooLong,
        None if buf.len() > MAX_REQUEST => Line::TooLong,
        None => Line::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(parse_request(b"reload"), Ok(Request::Reload));
        assert_eq!(parse_request(b"status\r"), Ok(Request::Status));
        assert_eq!(parse_request(b"stop"), Ok(Request::Stop));
        assert_eq!(parse_request(b"upgrade"), Ok(Request::Upgrade(None)));
        assert_eq!(parse_request(b"takeover"), Ok(Request::Takeover));
        let r = Request::Upgrade(Some(std::time::Duration::from_millis(2500)));
        assert_eq!(parse_request(r.line().as_bytes()), Ok(r));
        for bad in [&b"upgrade 0s"[..], b"upgrade soon", b"upgrade -1s"] {
            assert!(
                parse_request(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("upgrade: ")
            );
        }
        for bad in [&b""[..], b"RELOAD", b"\xff\xfe", b"stop\0"] {
            let e = parse_request(bad).unwrap_err().to_string();
            assert!(
                e.contains(
                    "expected reload [rolling K|canary PCT [DUR]], promote, rollback, status, events, stop, upgrade [DUR], fds [NAME...] or listen NAME ADDR"
                ),
                "{e}"
            );
        }
        assert!(
            parse_request(b"reload now")
                .unwrap_err()
                .to_string()
                .starts_with("reload: ")
        );
        // Garbage is shown short and escaped, never as raw bytes.
        let e = parse_request(&[b'x'; 500]).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        assert!(
            !parse_request(b"\x1b[2J")
                .unwrap_err()
                .to_string()
                .contains('\x1b')
        );
    }

    #[test]
    fn reload_strategies_promote_and_rollback() {
        assert_eq!(
            parse_request(b"reload rolling 2"),
            Ok(Request::ReloadWith(ReloadKind::Rolling(2)))
        );
        assert_eq!(
            parse_request(b"reload canary 20"),
            Ok(Request::ReloadWith(ReloadKind::Canary {
                percent: 20,
                promote_after: None
            }))
        );
        let r = Request::ReloadWith(ReloadKind::Canary {
            percent: 5,
            promote_after: Some(std::time::Duration::from_secs(90)),
        });
        assert_eq!(r.line(), "reload canary 5 90000ms");
        assert_eq!(parse_request(r.line().as_bytes()), Ok(r));
        let r = Request::ReloadWith(ReloadKind::Rolling(3));
        assert_eq!(parse_request(r.line().as_bytes()), Ok(r));
        assert_eq!(parse_request(b"promote"), Ok(Request::Promote));
        assert_eq!(parse_request(b"rollback\r"), Ok(Request::Rollback));
        for bad in [
            &b"reload rolling 0"[..],
            b"reload rolling",
            b"reload canary 100",
            b"reload canary 0",
            b"reload canary 20 0s",
            b"reload canary 20 soon",
            b"reload canary 20 1s x",
            b"reload \xff",
        ] {
            let e = parse_request(bad).unwrap_err().to_string();
            assert!(e.starts_with("reload: "), "{e}");
        }
    }

    #[test]
    fn fetch_requests() {
        assert_eq!(parse_request(b"fds"), Ok(Request::Fds(vec![])));
        assert_eq!(parse_request(b"fds\r"), Ok(Request::Fds(vec![])));
        assert_eq!(
            parse_request(b"fds b a  c"),
            Ok(Request::Fds(vec!["b".into(), "a".into(), "c".into()]))
        );
        assert_eq!(parse_request(b"fds "), Ok(Request::Fds(vec![])));
        for bad in [&b"fds a:b"[..], b"fds a\tb", b"fds \xff", b"fdsa"] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let r = parse_request(b"fds x y").unwrap();
        assert_eq!(r.line(), "fds x y");
        assert!(r.sends_fds());
        assert!(!Request::Reload.sends_fds());
    }

    #[test]
    fn listen_requests() {
        use crate::parse::listen::Addr;
        let Ok(Request::Listen(spec)) = parse_request(b"listen metrics tcp:127.0.0.1:9090") else {
            panic!()
        };
        assert_eq!(spec.name, "metrics");
        assert_eq!(spec.addr, Addr::Tcp("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(spec.text, "tcp:127.0.0.1:9090");
        assert_eq!(
            Request::Listen(spec).line(),
            "listen metrics tcp:127.0.0.1:9090"
        );
        // The address is the rest of the line: a path may hold spaces.
        let Ok(Request::Listen(spec)) = parse_request(b"listen u unix:/run/a b.sock") else {
            panic!()
        };
        assert_eq!(spec.addr, Addr::Unix("/run/a b.sock".into()));
        let Ok(Request::Listen(spec)) = parse_request(b"listen d udp:[::1]:53") else {
            panic!()
        };
        assert_eq!(spec.addr, Addr::Udp("[::1]:53".parse().unwrap()));
        for (bad, says) in [
            (&b"listen"[..], "unknown request"),
            (b"listen x", "expected `listen NAME ADDR`"),
            (b"listen a:b 127.0.0.1:1", "invalid listener name"),
            (b"listen x 127.0.0.1:99999", "invalid address"),
            (b"listen x nowhere", "invalid address"),
        ] {
            let e = parse_request(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(parse_request(b"listen x"), Err(RequestError::ListenUsage));
        assert_eq!(
            parse_request(b"upgrade 0s"),
            Err(RequestError::ZeroUpgradeTimeout)
        );
        assert_eq!(
            parse_request(b"reload rolling 0"),
            Err(RequestError::Reload(ReloadError::Number(
                "K",
                1024,
                "0".into()
            )))
        );
        assert_eq!(
            parse_request(b"fds a:b"),
            Err(RequestError::BadName("fds", "a:b".into()))
        );
        // The texts the control socket answers with.
        for (line, text) in [
            (
                &b"RELOAD"[..],
                "unknown request \"RELOAD\" (expected reload [rolling K|canary PCT [DUR]], promote, rollback, status, events, stop, upgrade [DUR], fds [NAME...] or listen NAME ADDR)",
            ),
            (b"upgrade 0s", "upgrade: the timeout must be more than 0"),
            (
                b"reload canary 100",
                "reload: the canary's percent must be a number from 1 to 99, not \"100\"",
            ),
            (
                b"reload canary 5 x",
                "reload: bad promote-after duration \"x\"",
            ),
            (
                b"reload x",
                "reload: expected `reload`, `reload rolling K` or `reload canary PCT [DUR]`",
            ),
            (b"fds \xff", "fds: names are ASCII, not \"\u{fffd}\""),
            (
                b"listen a:b x",
                "listen: invalid listener name \"a:b\" (1 to 255 printable ASCII characters without ':' or space)",
            ),
            (b"listen \xff", "listen: not UTF-8: \"\u{fffd}\""),
        ] {
            assert_eq!(parse_request(line).unwrap_err().to_string(), text);
        }
        assert_eq!(
            RequestError::TooLong.to_string(),
            format!("request longer than {MAX_REQUEST} bytes")
        );
    }

    #[test]
    fn lines() {
        assert_eq!(take_line(b"relo"), Line::Incomplete);
        assert_eq!(take_line(b"reload\nrest"), Line::Complete(b"reload"));
        assert_eq!(take_line(&[b'x'; MAX_REQUEST]), Line::Incomplete);
        assert_eq!(take_line(&[b'x'; MAX_REQUEST + 1]), Line::TooLong);
        let mut long = vec![b'x'; MAX_REQUEST + 1];
        long.push(b'\n');
        assert_eq!(take_line(&long), Line::TooLong);
    }

    use supervisor_child::test_rng::Rng;

    #[test]
    fn any_bytes_are_a_request_or_a_short_escaped_error() {
        let mut rng = Rng::new(3);
        for i in 0..20_000 {
            let mut data = rng.bytes(if i % 50 == 0 { 3000 } else { 40 });
            if rng.one_in(4) {
                let r = rng.pick(&["reload", "status", "stop", "fds ", "listen x ", "upgrade "]);
                data.splice(0..0, r.bytes());
            }
            match parse_request(&data) {
                Ok(Request::Upgrade(Some(_))) => assert!(data.starts_with(b"upgrade ")),
                Ok(Request::ReloadWith(_)) => assert!(data.starts_with(b"reload ")),
                Ok(r) if !r.sends_fds() => assert_eq!(
                    data.strip_suffix(b"\r").unwrap_or(&data),
                    r.as_str().as_bytes()
                ),
                Ok(r) => assert!(data.starts_with(r.as_str().as_bytes())),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.len() < 600 && !e.contains(char::is_control), "{e:?}")
                }
            }
            match take_line(&data) {
                Line::Complete(l) => {
                    assert!(l.len() <= MAX_REQUEST);
                    assert_eq!(data.get(l.len()), Some(&b'\n'));
                }
                // Oversized input is refused, never cut to size.
                Line::TooLong => assert!(data.len() > MAX_REQUEST),
                Line::Incomplete => {
                    assert!(data.len() <= MAX_REQUEST && !data.contains(&b'\n'))
                }
            }
        }
    }
}
