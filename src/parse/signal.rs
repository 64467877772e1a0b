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
}
