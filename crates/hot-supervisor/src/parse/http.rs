//! The little HTTP/1.x the supervisor reads: request heads sent to its
//! health endpoint, and the status line of answers to its readiness probe.
//!
//! Pure: the health server and the prober do the I/O.

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /livez`.
    Live,
    /// `GET /readyz`.
    Ready,
    /// `GET /metrics`.
    Metrics,
}

/// Parse a request head: the route, whether it is `HEAD`, or the status
/// and text to answer with.
///
/// # Errors
/// 400 for a request line that is not `METHOD TARGET HTTP/1.x`, 405 for a
/// method other than `GET` and `HEAD`, 404 for an unknown path.
pub fn parse_request(head: &[u8]) -> Result<(Route, bool), (u16, &'static str)> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .or_else(|| head.iter().position(|&b| b == b'\n'))
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| (400, "bad request\n"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "bad request\n"));
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err((400, "bad request\n"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err((405, "only GET and HEAD\n")),
    };
    let path = target.split('?').next().unwrap_or("");
    let route = match path {
        "/livez" => Route::Live,
        "/readyz" => Route::Ready,
        "/metrics" => Route::Metrics,
        _ => return Err((404, "not found: try /livez, /readyz or /metrics\n")),
    };
    Ok((route, head_only))
}

/// The status code of an HTTP answer, once its status line is complete
/// (`None` before); 0 for an answer that is not HTTP or whose code is not
/// a number.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return Some(0);
    }
    parts.next()?.parse().ok().or(Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse_request(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok((Route::Ready, false))
        );
        assert_eq!(
            parse_request(b"HEAD /livez?x=1 HTTP/1.0\r\n\r\n"),
            Ok((Route::Live, true))
        );
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\n\n"),
            Ok((Route::Metrics, false))
        );
        assert_eq!(
            parse_request(b"POST /livez HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .0,
            405
        );
        assert_eq!(
            parse_request(b"GET /x HTTP/1.1\r\n\r\n").unwrap_err().0,
            404
        );
        assert_eq!(parse_request(b"\x16\x03\x01garbage").unwrap_err().0, 400);
        assert_eq!(
            parse_request(b"GET /livez SPDY/3\r\n\r\n").unwrap_err().0,
            400
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 302 Found\r\nLocation: /\r\n"),
            Some(302)
        );
        assert_eq!(status_code(b"HTTP/1.1 500 Internal"), None);
        assert_eq!(status_code(b"SSH-2.0-x\r\n"), Some(0));
    }

    use supervisor_child::test_rng::Rng;

    #[test]
    fn any_head_is_routed_or_answered_with_an_error() {
        let mut rng = Rng::new(11);
        let pieces = [
            "GET", "HEAD", "POST", " ", "/livez", "/readyz", "/metrics", "?", "HTTP/1.1", "HTTP/",
            "\r\n", "\n", "200", "OK",
        ];
        for _ in 0..20_000 {
            let head = rng.mix(&pieces, 8).into_bytes();
            match parse_request(&head) {
                Ok((_, head_only)) => {
                    let method: &[u8] = if head_only { b"HEAD " } else { b"GET " };
                    assert!(head.starts_with(method));
                }
                Err((code, _)) => assert!([400, 404, 405].contains(&code)),
            }
            if let Some(code) = status_code(&head) {
                assert!(code == 0 || head.starts_with(b"HTTP/"));
            }
        }
    }

    #[test]
    fn written_requests_and_status_lines_read_back() {
        let mut rng = Rng::new(12);
        for _ in 0..5_000 {
            let (path, route) = *rng.pick(&[
                &("/livez", Route::Live),
                &("/readyz", Route::Ready),
                &("/metrics", Route::Metrics),
            ]);
            let head_only = rng.one_in(2);
            let method = if head_only { "HEAD" } else { "GET" };
            let query = if rng.one_in(2) { "?x=1" } else { "" };
            let head = format!(
                "{method} {path}{query} HTTP/1.{}\r\nHost: x\r\n\r\n",
                rng.below(2)
            );
            assert_eq!(parse_request(head.as_bytes()), Ok((route, head_only)));
            let code = rng.below(1000) as u16;
            let answer = format!("HTTP/1.1 {code} Whatever\r\nX: y\r\n");
            assert_eq!(status_code(answer.as_bytes()), Some(code));
        }
    }
}
