//! Ready modes as the command line names them (`--ready`): `auto`,
//! `notify`, `tcp`, `http:PATH` or `delay:DUR`.
//!
//! Pure; the supervisor turns a [`Ready`] into its machine's mode or a
//! probe.

use std::time::Duration;

/// A `--ready` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// `auto` (the default): `READY=1`, or a TCP probe the worker accepted,
    /// whichever comes first; where nothing can be probed, `READY=1` or a
    /// delay.
    Auto,
    /// `notify`: the child sends `READY=1`.
    Notify,
    /// `tcp`: a probe connection is accepted.
    Tcp,
    /// `http:PATH`: `GET PATH` is answered with 2xx or 3xx.
    Http(String),
    /// `delay:DUR`: ready once the child has run this long.
    Delay(Duration),
}

/// Parse `auto`, `notify`, `tcp`, `http:PATH` or `delay:DUR` (a duration
/// as [`crate::duration::parse`] reads it).
///
/// # Errors
/// None of these; a path that does not start with `/` or holds spaces or
/// control characters; a bad duration.
pub fn parse(s: &str) -> Result<Ready, String> {
    if s == "auto" {
        return Ok(Ready::Auto);
    }
    if s == "notify" {
        return Ok(Ready::Notify);
    }
    if s == "tcp" {
        return Ok(Ready::Tcp);
    }
    if let Some(path) = s.strip_prefix("http:") {
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "'{s}': the path must start with '/' and hold no spaces or control characters"
            ));
        }
        return Ok(Ready::Http(path.to_string()));
    }
    match s.strip_prefix("delay:") {
        Some(d) => crate::duration::parse(d).map(Ready::Delay),
        None => Err(format!(
            "'{s}' is not a ready mode (use auto, notify, tcp, http:PATH or delay:DUR)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_modes() {
        assert_eq!(parse("auto"), Ok(Ready::Auto));
        assert_eq!(parse("notify"), Ok(Ready::Notify));
        assert_eq!(
            parse("delay:250ms"),
            Ok(Ready::Delay(Duration::from_millis(250)))
        );
        assert_eq!(parse("tcp"), Ok(Ready::Tcp));
        assert_eq!(parse("http:/health"), Ok(Ready::Http("/health".into())));
        assert!(parse("http:health").is_err());
        assert!(parse("http:/a b").is_err());
        assert!(parse("http:/a\x7f").is_err());
        assert!(parse("delay:soon").unwrap_err().contains("'soon'"));
        assert!(parse("soon").is_err());
    }

    use supervisor_child::test_rng::Rng;

    #[test]
    fn any_text_is_a_mode_or_refused() {
        let mut rng = Rng::new(10);
        let pieces = [
            "notify", "tcp", "http:", "delay:", "/", "1", ".5", "ms", "s", " ", "\x7f",
        ];
        for _ in 0..20_000 {
            let text = rng.mix(&pieces, 5);
            match parse(&text) {
                Ok(Ready::Http(p)) => {
                    assert!(p.starts_with('/') && !p.bytes().any(|b| b <= b' ' || b == 0x7f));
                    assert_eq!(parse(&format!("http:{p}")), Ok(Ready::Http(p)));
                }
                Ok(Ready::Delay(d)) => assert!(d <= crate::duration::MAX),
                Ok(_) | Err(_) => {}
            }
        }
    }
}
