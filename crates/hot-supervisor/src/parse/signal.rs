//! Signals as the command line names them (`--stop-signal`): `TERM`,
//! `SIGTERM`, `term` or `15`.
//!
//! Pure.

use nix::sys::signal::Signal;

/// Parse `TERM`, `SIGTERM`, `term` or `15`, refusing signals that cannot
/// ask a process to exit (stop, continue, child status).
///
/// # Errors
/// Not a signal's name or number, or one of those signals.
pub fn parse(s: &str) -> Result<Signal, String> {
    let sig = if let Ok(n) = s.parse::<i32>() {
        Signal::try_from(n).map_err(|_| format!("{n} is not a signal number"))?
    } else {
        let upper = s.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        name.parse::<Signal>()
            .map_err(|_| format!("'{s}' is not a signal name (e.g. TERM, QUIT, USR1)"))?
    };
    use Signal::*;
    if matches!(
        sig,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU | SIGCONT | SIGCHLD
    ) {
        return Err(format!("{sig} cannot serve as a stop signal"));
    }
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse("sigquit"), Ok(Signal::SIGQUIT));
        assert_eq!(parse("10"), Ok(Signal::SIGUSR1));
        assert!(parse("NOPE").is_err());
        assert!(parse("99").is_err());
        assert!(parse("STOP").unwrap_err().contains("cannot serve"));
        assert!(parse("CONT").is_err());
        assert_eq!(parse("KILL"), Ok(Signal::SIGKILL));
    }

    use supervisor_child::test_rng::Rng;

    #[test]
    fn every_signal_reads_back_by_name_and_number() {
        for sig in Signal::iterator() {
            match parse(sig.as_str()) {
                Ok(s) => {
                    assert_eq!(s, sig);
                    assert_eq!(parse(&(sig as i32).to_string()), Ok(sig));
                    assert_eq!(parse(&sig.as_str()[3..].to_lowercase()), Ok(sig));
                }
                Err(e) => assert!(e.contains("cannot serve"), "{sig}: {e}"),
            }
        }
    }

    #[test]
    fn any_text_is_a_signal_or_refused() {
        let mut rng = Rng::new(9);
        let pieces = [
            "SIG", "sig", "TERM", "KILL", "USR", "1", "2", "-", "+", "99", "RTMIN",
        ];
        for _ in 0..20_000 {
            let text = rng.mix(&pieces, 4);
            if let Ok(sig) = parse(&text) {
                assert_eq!(parse(sig.as_str()), Ok(sig));
            }
        }
    }
}
