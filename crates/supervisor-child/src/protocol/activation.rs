//! The socket-activation variables: `LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES` and `LISTEN_PIDFDID` (sd_listen_fds(3), and systemd's
//! `src/libsystemd/sd-daemon/sd-daemon.c`).
//!
//! Two readers use them. A child of the supervisor reads them as
//! `sd_listen_fds_with_names` does, all at once ([`listen_env`], for
//! [`crate::Listeners`]). The supervisor reads the ones its own
//! launcher set a step at a time ([`listen_pid`], [`listen_pidfdid`],
//! [`listen_fds`], [`listen_fdnames`]), because it checks its pidfd and the
//! fds between the steps; it also tolerates blanks around the numbers.
//!
//! Pure: the callers read the environment and the fds, and hand the values
//! here.

use std::io;

use super::{LISTEN_FDNAMES, LISTEN_FDS, LISTEN_FDS_START, LISTEN_PID};

/// The `LISTEN_*` variables as a child parsed them.
#[derive(Debug, PartialEq, Eq)]
pub struct ListenEnv {
    /// How many fds, from [`LISTEN_FDS_START`] on, are the listeners.
    pub count: usize,
    /// `None` when `LISTEN_FDNAMES` is absent: every name is `unknown`.
    /// Kept apart from `count` so that a bogus huge `LISTEN_FDS` is caught by
    /// the open-fd check before anything is allocated per fd.
    pub names: Option<Vec<String>>,
}

/// Parses the three `LISTEN_*` values as `sd_listen_fds_with_names` does.
///
/// `Ok(None)` means "no listeners for us": `LISTEN_PID` or `LISTEN_FDS`
/// unset, or `LISTEN_PID` names another process than `own_pid`.
///
/// # Errors
/// `LISTEN_PID` is not a pid, `LISTEN_FDS` not a count whose last fd fits
/// in a C int, or `LISTEN_FDNAMES` does not hold one name per fd; the
/// message names the variable and its value.
pub fn listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> io::Result<Option<ListenEnv>> {
    let Some(pid) = pid else {
        return Ok(None);
    };
    let listen_pid = match pid.parse::<u32>() {
        Ok(listen_pid) if listen_pid > 0 => listen_pid,
        _ => return Err(invalid(format!("{LISTEN_PID}={pid:?} is not a pid"))),
    };
    if listen_pid != own_pid {
        return Ok(None);
    }
    let Some(fds) = fds else {
        return Ok(None);
    };
    // The last fd number, 3 + n - 1, must fit in a C int.
    let max = (i32::MAX - LISTEN_FDS_START) as usize;
    let count = match fds.parse::<usize>() {
        Ok(count) if (1..=max).contains(&count) => count,
        _ => {
            return Err(invalid(format!(
                "{LISTEN_FDS}={fds:?} is not a listener count (1..={max})"
            )));
        }
    };
    let names = match names {
        None => None,
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            if names.len() != count {
                return Err(invalid(format!(
                    "{LISTEN_FDNAMES}={joined:?} has {got} names for {LISTEN_FDS}={count}",
                    joined = names.join(":"),
                    got = names.len(),
                )));
            }
            Some(names)
        }
    };
    Ok(Some(ListenEnv { count, names }))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// What `LISTEN_PID` says to the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenPid {
    /// Unset: no sockets were handed over.
    Unset,
    /// The variables are meant for this other process (a wrapper script
    /// that ran the supervisor without `exec` leaves them so).
    Other(u32),
    /// The variables are meant for us.
    Ours,
}

/// The supervisor's reading of `LISTEN_PID` (blanks around the number
/// tolerated), against its own pid `own_pid`.
///
/// # Errors
/// Set but not a number.
pub fn listen_pid(value: Option<&str>, own_pid: u32) -> Result<ListenPid, String> {
    let Some(pid) = value else {
        return Ok(ListenPid::Unset);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("{LISTEN_PID}={pid:?} is not a process id"))?;
    Ok(if pid == own_pid {
        ListenPid::Ours
    } else {
        ListenPid::Other(pid)
    })
}

/// The supervisor's reading of `LISTEN_PIDFDID`: the pidfd inode number it
/// names, `None` if it is not a number.
pub fn listen_pidfdid(value: &str) -> Option<u64> {
    value.trim().parse::<u64>().ok()
}

/// The supervisor's reading of `LISTEN_FDS`: a count of 1 or more whose
/// last fd, `3 + n - 1`, fits in a C int.
///
/// # Errors
/// Anything else; the message names the value.
pub fn listen_fds(value: &str) -> Result<i32, String> {
    match value.trim().parse() {
        Ok(n) if n > 0 && n <= i32::MAX - LISTEN_FDS_START => Ok(n),
        _ => Err(format!(
            "{LISTEN_FDS}={value:?} is not a count of 1 or more"
        )),
    }
}

/// The supervisor's reading of `LISTEN_FDNAMES` for `count` fds: one name
/// per fd, split at `:` (empty names kept); `None` when unset, meaning
/// every name is `unknown` (not built here, so that nothing is allocated
/// per fd before the fds are known to be open).
///
/// # Errors
/// Not one name per fd.
pub fn listen_fdnames(value: Option<&str>, count: i32) -> Result<Option<Vec<String>>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let names: Vec<String> = value.split(':').map(str::to_string).collect();
    if i32::try_from(names.len()) != Ok(count) {
        return Err(format!(
            "{LISTEN_FDNAMES} holds {} names for {LISTEN_FDS}={count} sockets",
            names.len()
        ));
    }
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: u32 = 4242;

    fn parse(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
    ) -> io::Result<Option<ListenEnv>> {
        listen_env(pid, fds, names, PID)
    }

    fn error_text(result: io::Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn pid_unset_means_no_listeners() {
        assert_eq!(parse(None, Some("2"), Some("a:b")).unwrap(), None);
    }

    #[test]
    fn pid_of_another_process_means_no_listeners() {
        assert_eq!(parse(Some("4243"), Some("2"), Some("a:b")).unwrap(), None);
    }

    #[test]
    fn unparsable_pid_is_an_error() {
        for pid in ["", "abc", "-1", "0", "12x"] {
            let text = error_text(parse(Some(pid), Some("1"), None));
            assert!(text.starts_with("LISTEN_PID="), "{text}");
        }
    }

    #[test]
    fn fds_unset_means_no_listeners() {
        assert_eq!(parse(Some("4242"), None, Some("a")).unwrap(), None);
    }

    #[test]
    fn bad_fd_counts_are_errors_naming_the_value() {
        for fds in ["0", "-1", "", "two", "2147483645"] {
            let text = error_text(parse(Some("4242"), Some(fds), None));
            assert!(text.starts_with(&format!("LISTEN_FDS={fds:?}")), "{text}");
        }
        assert_eq!(
            parse(Some("4242"), Some("2147483644"), None)
                .unwrap()
                .unwrap()
                .count,
            2147483644
        );
    }

    #[test]
    fn names_absent_means_none() {
        let parsed = parse(Some("4242"), Some("2"), None).unwrap().unwrap();
        assert_eq!(
            parsed,
            ListenEnv {
                count: 2,
                names: None
            }
        );
    }

    #[test]
    fn names_split_without_coalescing() {
        let parsed = parse(Some("4242"), Some("3"), Some("x::z"))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.names.unwrap(), ["x", "", "z"]);
        let parsed = parse(Some("4242"), Some("1"), Some("")).unwrap().unwrap();
        assert_eq!(parsed.names.unwrap(), [""]);
    }

    #[test]
    fn name_count_mismatch_is_an_error() {
        let text = error_text(parse(Some("4242"), Some("2"), Some("a:b:c")));
        assert_eq!(
            text,
            "LISTEN_FDNAMES=\"a:b:c\" has 3 names for LISTEN_FDS=2"
        );
        assert!(parse(Some("4242"), Some("2"), Some("a")).is_err());
    }

    #[test]
    fn the_supervisor_reads_a_step_at_a_time() {
        assert_eq!(listen_pid(None, PID), Ok(ListenPid::Unset));
        assert_eq!(listen_pid(Some(" 4242\n"), PID), Ok(ListenPid::Ours));
        assert_eq!(listen_pid(Some("0"), PID), Ok(ListenPid::Other(0)));
        assert_eq!(
            listen_pid(Some("x"), PID),
            Err("LISTEN_PID=\"x\" is not a process id".into())
        );
        assert_eq!(listen_pidfdid(" 17 "), Some(17));
        assert_eq!(listen_pidfdid("-1"), None);
        assert_eq!(listen_fds("2"), Ok(2));
        assert_eq!(listen_fds("2147483644"), Ok(2147483644));
        for bad in ["0", "-1", "", "2147483645", "two"] {
            assert_eq!(
                listen_fds(bad),
                Err(format!("LISTEN_FDS={bad:?} is not a count of 1 or more"))
            );
        }
        assert_eq!(listen_fdnames(None, 3), Ok(None));
        assert_eq!(
            listen_fdnames(Some("a::c"), 3),
            Ok(Some(vec!["a".into(), String::new(), "c".into()]))
        );
        assert_eq!(
            listen_fdnames(Some("a:b"), 3),
            Err("LISTEN_FDNAMES holds 2 names for LISTEN_FDS=3 sockets".into())
        );
    }

    use crate::test_rng::Rng;

    #[test]
    fn any_values_parse_or_fail_without_building_per_fd() {
        let mut rng = Rng::new(7);
        let pieces = [
            "4242",
            "1",
            "0",
            "-",
            "+",
            " ",
            ":",
            "2147483644",
            "99999999999",
            "x",
        ];
        for _ in 0..20_000 {
            let mut value = || rng.one_in(5).then(|| rng.mix(&pieces, 4));
            let (pid, fds, names) = (value(), value(), value());
            if let Ok(Some(env)) = listen_env(pid.as_deref(), fds.as_deref(), names.as_deref(), PID)
            {
                assert!((1..=(i32::MAX - 3) as usize).contains(&env.count));
                assert!(env.names.is_none_or(|n| n.len() == env.count));
            }
            let _ = listen_pid(pid.as_deref(), PID);
            let _ = listen_pidfdid(pid.as_deref().unwrap_or(""));
            if let Some(Ok(n)) = fds.as_deref().map(listen_fds) {
                assert!((1..=i32::MAX - 3).contains(&n));
            }
            // A huge count with no names builds nothing.
            assert_eq!(listen_fdnames(None, i32::MAX - 3), Ok(None));
            if let Ok(Some(list)) = listen_fdnames(names.as_deref(), rng.below(6) as i32) {
                assert!(!list.iter().any(|n| n.contains(':')));
            }
        }
    }

    #[test]
    fn written_variables_read_back() {
        let mut rng = Rng::new(8);
        for _ in 0..5_000 {
            let count = 1 + rng.below(20);
            let names: Vec<String> = (0..count).map(|_| rng.string_from("ab_-. 09", 8)).collect();
            let joined = names.join(":");
            let with_names = rng.one_in(2).then_some(joined.as_str());
            let env = listen_env(Some("4242"), Some(&count.to_string()), with_names, PID)
                .unwrap()
                .unwrap();
            assert_eq!(env.count, count);
            assert_eq!(env.names, with_names.map(|_| names.clone()));
            let n = listen_fds(&format!(" {count}\n")).unwrap();
            assert_eq!(listen_fdnames(with_names, n).unwrap(), env.names);
            assert!(listen_fdnames(Some(&joined), n + 1).is_err());
        }
    }
}
