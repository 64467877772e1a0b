//! The fetch wire format: the answer line of the control socket (`ok TEXT`
//! or `error TEXT`), and for `fds` and `listen` the header `ok N` and one
//! description line `NAME KIND ADDRESS` per file descriptor, the fds
//! themselves travelling as `SCM_RIGHTS` in batches of at most
//! [`SCM_MAX_FD`].
//!
//! Pure: the supervisor's control server writes these, the fetch client
//! ([`crate::fetch`]) and the supervisor's own client read them. Not part
//! of this crate's API.

/// The most file descriptors one `sendmsg` carries (the kernel's
/// `SCM_MAX_FD`): a transfer of more goes in batches of this size.
pub const SCM_MAX_FD: usize = 253;

/// A listener name: a `LISTEN_FDNAMES` entry (1 to 255 printable ASCII
/// characters without `:`), and no space either, since the control
/// socket's listener descriptions separate their fields with spaces.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(' ') && super::valid_fd_name(name)
}

/// The kinds of listener in a description line.
pub const KINDS: [&str; 3] = ["tcp", "udp", "unix"];

/// The first line of a successful `fds` or `listen` answer: `ok N\n`, N
/// the number of descriptions and file descriptors that follow.
pub fn fds_header(n: usize) -> String {
    format!("ok {n}\n")
}

/// One listener's description line, `NAME KIND ADDRESS\n`, for the file
/// descriptor at the same position. `KIND:ADDRESS` is a `--listen`
/// address (`tcp:127.0.0.1:8080`, `udp:[::1]:53`, `unix:/run/x.sock`,
/// `unix:@name`); ADDRESS is the rest of the line and may hold spaces.
///
/// # Errors
/// A name or address that cannot travel in one line (a space in the name,
/// a line break anywhere, an unknown kind).
pub fn fd_line(name: &str, kind: &str, address: &str) -> Result<String, String> {
    if !valid_name(name) {
        return Err(format!(
            "listener {name:?} cannot be sent: its name holds a space or is not a valid LISTEN_FDNAMES entry"
        ));
    }
    if !KINDS.contains(&kind) {
        return Err(format!("listener {name:?}: unknown kind {kind:?}"));
    }
    if address.is_empty() || address.contains(['\n', '\r']) {
        return Err(format!(
            "listener {name:?} cannot be sent: its address {address:?} is empty or holds a line break"
        ));
    }
    Ok(format!("{name} {kind} {address}\n"))
}

/// What the supervisor answered: `ok TEXT` (`ok N` before file
/// descriptors), or `error TEXT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<T = String> {
    /// `ok`: the request succeeded; the text (or the count of fds).
    Ok(T),
    /// `error TEXT`: the request failed, for this reason.
    Error(String),
}

/// A line that is not an answer of the protocol's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadAnswer {
    /// Neither `ok` nor `error` (the line, shown short).
    Unexpected(String),
    /// `ok` without the count of the fds that follow (what came after
    /// `ok`).
    NoCount(String),
}

impl std::fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadAnswer::Unexpected(shown) => write!(f, "unexpected answer {shown:?}"),
            BadAnswer::NoCount(n) => write!(f, "expected `ok N`, got `ok {n}`"),
        }
    }
}

impl std::error::Error for BadAnswer {}

/// Parse the first line of an `fds` or `listen` answer (without its
/// newline): `ok N` or `error TEXT`.
///
/// # Errors
/// Neither form.
pub fn parse_fds_header(line: &str) -> Result<Answer<usize>, BadAnswer> {
    match parse_answer(line)? {
        Answer::Ok(n) => match n.parse::<usize>() {
            Ok(n) => Ok(Answer::Ok(n)),
            Err(_) => Err(BadAnswer::NoCount(n)),
        },
        Answer::Error(text) => Ok(Answer::Error(text)),
    }
}

/// Parse a description line (without its newline) into (name, kind,
/// address).
///
/// # Errors
/// Fewer than three fields, an unknown kind, or an empty name.
pub fn parse_fd_line(line: &str) -> Result<(String, String, String), String> {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(kind), Some(addr))
            if !name.is_empty() && KINDS.contains(&kind) && !addr.is_empty() =>
        {
            Ok((name.to_string(), kind.to_string(), addr.to_string()))
        }
        _ => {
            let shown: String = line.chars().take(60).collect();
            Err(format!(
                "bad listener description {shown:?} (expected NAME KIND ADDRESS)"
            ))
        }
    }
}

/// An answer line: `ok TEXT` or `error TEXT`, newline-terminated. Line
/// breaks inside `text` become spaces, so the answer stays one line.
pub fn answer(ok: bool, text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("{} {text}\n", if ok { "ok" } else { "error" })
}

/// Parse an answer line (without its newline): `ok TEXT` or `error TEXT`.
///
/// # Errors
/// Neither form.
pub fn parse_answer(line: &str) -> Result<Answer, BadAnswer> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if let Some(text) = line.strip_prefix("ok ") {
        Ok(Answer::Ok(text.to_string()))
    } else if line == "ok" {
        Ok(Answer::Ok(String::new()))
    } else if let Some(text) = line.strip_prefix("error ") {
        Ok(Answer::Error(text.to_string()))
    } else {
        Err(BadAnswer::Unexpected(line.chars().take(60).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    #[test]
    fn fd_lines() {
        assert_eq!(fds_header(3), "ok 3\n");
        assert_eq!(parse_fds_header("ok 3"), Ok(Answer::Ok(3)));
        assert_eq!(parse_fds_header("error no"), Ok(Answer::Error("no".into())));
        assert_eq!(
            parse_fds_header("ok three").unwrap_err().to_string(),
            "expected `ok N`, got `ok three`"
        );
        let line = fd_line("http", "tcp", "[::1]:8080").unwrap();
        assert_eq!(line, "http tcp [::1]:8080\n");
        assert_eq!(
            parse_fd_line(line.trim_end()),
            Ok(("http".into(), "tcp".into(), "[::1]:8080".into()))
        );
        let line = fd_line("u", "unix", "/run/a b.sock").unwrap();
        assert_eq!(
            parse_fd_line(line.trim_end()).unwrap().2,
            "/run/a b.sock",
            "the address is the rest of the line"
        );
        assert!(fd_line("a b", "tcp", "1.2.3.4:5").is_err());
        assert!(fd_line("a", "sctp", "1.2.3.4:5").is_err());
        assert!(fd_line("a", "unix", "/x\ny").is_err());
        assert!(fd_line("a", "unix", "").is_err());
        assert!(parse_fd_line("a tcp").is_err());
        assert!(parse_fd_line("a sctp x").is_err());
    }

    #[test]
    fn answers() {
        assert_eq!(
            answer(true, "generation 2 ready"),
            "ok generation 2 ready\n"
        );
        assert_eq!(answer(false, "a\nb\r"), "error a b \n");
        assert_eq!(parse_answer("ok fine"), Ok(Answer::Ok("fine".into())));
        assert_eq!(parse_answer("ok"), Ok(Answer::Ok(String::new())));
        assert_eq!(parse_answer("error no\r"), Ok(Answer::Error("no".into())));
        assert_eq!(
            parse_answer("HTTP/1.1 400").unwrap_err().to_string(),
            "unexpected answer \"HTTP/1.1 400\""
        );
        let text = "generation 7 (pid 4211) ready in 180ms";
        let line = answer(true, text);
        assert_eq!(parse_answer(line.trim_end()), Ok(Answer::Ok(text.into())));
    }

    #[test]
    fn answers_are_one_line_and_parse_back() {
        let mut rng = Rng::new(4);
        for _ in 0..10_000 {
            let text = rng.string(60);
            let ok = rng.one_in(2);
            let line = answer(ok, &text);
            let body = line.strip_suffix('\n').unwrap();
            assert!(!body.contains(['\n', '\r']), "{line:?}");
            let want = text.replace(['\n', '\r'], " ");
            let got = parse_answer(body).unwrap();
            assert_eq!(
                got,
                if ok {
                    Answer::Ok(want)
                } else {
                    Answer::Error(want)
                }
            );
            // Whatever else comes back is described, not trusted.
            let _ = parse_answer(&String::from_utf8_lossy(&rng.bytes(40)));
        }
    }
}
