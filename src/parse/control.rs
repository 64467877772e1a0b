//! The control socket's protocol text: one request line in (`reload`,
//! `status` or `stop`), one answer line out (`ok TEXT` or `error TEXT`).
//!
//! Pure: the supervisor's control server and its client do the I/O.

/// Longest request line accepted (the real ones are a few bytes).
pub const MAX_REQUEST: usize = 1024;

/// A request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Start a new generation; answer with the outcome.
    Reload,
    /// Answer with the supervisor's state, as JSON.
    Status,
    /// Stop gracefully; answer when about to exit.
    Stop,
    /// Upgrade the supervisor in place (`upgrade` or `upgrade TIMEOUT`,
    /// the bound on the new binary's check); answer with the outcome.
    Upgrade(Option<std::time::Duration>),
}

impl Request {
    /// The request line (without its newline).
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Reload => "reload",
            Request::Status => "status",
            Request::Stop => "stop",
            Request::Upgrade(_) => "upgrade",
        }
    }
}

impl Request {
    /// The whole request line (without its newline), arguments included.
    pub fn line(self) -> String {
        match self {
            Request::Upgrade(Some(t)) => format!("upgrade {}ms", t.as_millis().max(1)),
            r => r.as_str().to_string(),
        }
    }
}

/// Parse a request line (without its newline; a `\r` before it is
/// tolerated).
///
/// # Errors
/// The line is not a known request; the message says what was expected.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line {
        b"reload" => Ok(Request::Reload),
        b"status" => Ok(Request::Status),
        b"stop" => Ok(Request::Stop),
        b"upgrade" => Ok(Request::Upgrade(None)),
        _ if line.starts_with(b"upgrade ") => {
            let arg = String::from_utf8_lossy(&line[b"upgrade ".len()..]).into_owned();
            match crate::duration::parse(&arg) {
                Ok(d) if !d.is_zero() => Ok(Request::Upgrade(Some(d))),
                Ok(_) => Err("upgrade: the timeout must be more than 0".to_string()),
                Err(e) => Err(format!(
                    "upgrade: bad timeout {:?}: {e}",
                    arg.chars().take(40).collect::<String>()
                )),
            }
        }
        _ => {
            let shown: String = String::from_utf8_lossy(line).chars().take(40).collect();
            Err(format!(
                "unknown request {:?} (expected reload, status, stop or upgrade)",
                shown
            ))
        }
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

/// An answer line: `ok TEXT` or `error TEXT`, newline-terminated. Line
/// breaks inside `text` become spaces, so the answer stays one line.
pub fn answer(ok: bool, text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("{} {text}\n", if ok { "ok" } else { "error" })
}

/// Parse an answer line (without its newline) into `Ok(text)` for `ok` and
/// `Err(text)` for `error`.
///
/// # Errors
/// Neither form: the outer error holds a description of the line.
#[allow(clippy::type_complexity)]
pub fn parse_answer(line: &str) -> Result<Result<String, String>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if let Some(text) = line.strip_prefix("ok ") {
        Ok(Ok(text.to_string()))
    } else if line == "ok" {
        Ok(Ok(String::new()))
    } else if let Some(text) = line.strip_prefix("error ") {
        Ok(Err(text.to_string()))
    } else {
        let shown: String = line.chars().take(60).collect();
        Err(format!("unexpected answer {shown:?}"))
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
        let r = Request::Upgrade(Some(std::time::Duration::from_millis(2500)));
        assert_eq!(parse_request(r.line().as_bytes()), Ok(r));
        assert_eq!(
            parse_request(b"upgrade 30s"),
            Ok(Request::Upgrade(Some(std::time::Duration::from_secs(30))))
        );
        for bad in [&b"upgrade 0s"[..], b"upgrade soon", b"upgrade -1s"] {
            assert!(parse_request(bad).unwrap_err().starts_with("upgrade: "));
        }
        for bad in [&b""[..], b"RELOAD", b"reload now", b"\xff\xfe", b"stop\0"] {
            let e = parse_request(bad).unwrap_err();
            assert!(
                e.contains("expected reload, status, stop or upgrade"),
                "{e}"
            );
        }
        // Garbage is shown short and escaped, never as raw bytes.
        let e = parse_request(&[b'x'; 500]).unwrap_err();
        assert!(e.len() < 120, "{e}");
        assert!(!parse_request(b"\x1b[2J").unwrap_err().contains('\x1b'));
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

    #[test]
    fn answers() {
        assert_eq!(
            answer(true, "generation 2 ready"),
            "ok generation 2 ready\n"
        );
        assert_eq!(answer(false, "a\nb\r"), "error a b \n");
        assert_eq!(parse_answer("ok fine"), Ok(Ok("fine".into())));
        assert_eq!(parse_answer("ok"), Ok(Ok(String::new())));
        assert_eq!(parse_answer("error no\r"), Ok(Err("no".into())));
        assert!(parse_answer("HTTP/1.1 400").is_err());
        let text = "generation 7 (pid 4211) ready in 180ms";
        let line = answer(true, text);
        assert_eq!(parse_answer(line.trim_end()), Ok(Ok(text.into())));
    }

    use crate::parse::rng::Rng;

    #[test]
    fn any_bytes_are_a_request_or_a_short_escaped_error() {
        let mut rng = Rng::new(3);
        for i in 0..20_000 {
            let mut data = rng.bytes(if i % 50 == 0 { 3000 } else { 40 });
            if rng.one_in(4) {
                let r = rng.pick(&["reload", "status", "stop"]);
                data.splice(0..0, r.bytes());
            }
            match parse_request(&data) {
                Ok(r) => assert!(
                    data.strip_suffix(b"\r")
                        .unwrap_or(&data)
                        .starts_with(r.as_str().as_bytes())
                ),
                Err(e) => assert!(e.len() < 600 && !e.contains(char::is_control), "{e:?}"),
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
            assert_eq!(got, if ok { Ok(want) } else { Err(want) });
            // Whatever else comes back is described, not trusted.
            let _ = parse_answer(&String::from_utf8_lossy(&rng.bytes(40)));
        }
    }
}
