//! The child's environment: what a generation sees of the supervisor.
//!
//! The supervisor's own environment, less the variables that describe the
//! supervisor's launcher (its `LISTEN_*`, `NOTIFY_SOCKET`, `WATCHDOG_*`,
//! and every launcher-compatibility variable) and its own options
//! (`SUPERVISOR_OPT_*`: a child that runs a supervisor must not inherit its
//! parent's settings), plus the generation's own:
//! `LISTEN_FDS`, `LISTEN_FDNAMES` (`LISTEN_PID` is written by the spawned
//! child itself, see `spawn`), `NOTIFY_SOCKET`, `SUPERVISOR_GENERATION`,
//! `SUPERVISOR_WORKER`, `SUPERVISOR_WORKERS`, `SUPERVISOR_CONTROL`, and the
//! `--compat` variables. Pure: it reads the environment it is
//! given.

use std::ffi::{OsStr, OsString};

use supervisor_child::protocol as child;

use crate::compat::{self, Compat};

/// Variables of the supervisor's own environment never passed to children:
/// they describe the supervisor's launcher, not the child's.
const STRIPPED: [&str; 13] = [
    child::LISTEN_FDS,
    child::LISTEN_PID,
    child::LISTEN_FDNAMES,
    child::LISTEN_PIDFDID,
    child::NOTIFY_SOCKET,
    child::WATCHDOG_PID,
    child::WATCHDOG_USEC,
    child::SUPERVISOR_GENERATION,
    child::SUPERVISOR_WORKER,
    child::SUPERVISOR_WORKERS,
    child::SUPERVISOR_DRAIN_TIMEOUT_MS,
    child::SUPERVISOR_CONTROL,
    child::SUPERVISOR_CHANNEL_FD,
];

/// What a generation's environment is made of.
pub struct Inputs<'a> {
    /// The supervisor's environment.
    pub inherited: Vec<(OsString, OsString)>,
    /// `--env-file` and `--env` assignments, in order (later ones win).
    pub extra: &'a [(String, String)],
    /// The listeners' names, in fd order.
    pub names: &'a [&'a str],
    /// The listeners' Server::Starter keys, in fd order.
    pub starter_keys: &'a [String],
    /// The generation's notify socket.
    pub notify: &'a OsStr,
    /// The generation's number.
    pub generation: u64,
    /// The worker's index and the number of workers per generation.
    pub worker: (u32, u32),
    /// The drain timeout, passed on so that a server can finish first.
    pub drain_timeout: std::time::Duration,
    /// Launcher-compatibility variables to add.
    pub compat: &'a Compat,
    /// The supervisor's pid (for einhorn's master pid).
    pub supervisor_pid: u32,
    /// The control socket's path.
    pub control: &'a OsStr,
    /// The number of the child's channel, if it has one.
    pub channel_fd: Option<i32>,
}

/// The generation's environment.
pub fn build(i: &Inputs<'_>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = i
        .inherited
        .iter()
        .filter(|(k, _)| {
            !STRIPPED.iter().any(|s| k == s)
                && !k.to_str().is_some_and(compat::is_launcher_variable)
                && !k
                    .as_encoded_bytes()
                    .starts_with(crate::cli::OPTION_PREFIX.as_bytes())
        })
        .cloned()
        .collect();
    for (k, v) in i.extra {
        // The protocol's own variables are the supervisor's to set.
        if STRIPPED.iter().any(|s| s == k) {
            continue;
        }
        env.retain(|(key, _)| key != k.as_str());
        env.push((k.into(), v.into()));
    }
    let n = i.names.len();
    if n > 0 {
        env.push((child::LISTEN_FDS.into(), n.to_string().into()));
        env.push((child::LISTEN_FDNAMES.into(), i.names.join(":").into()));
    }
    env.push((child::NOTIFY_SOCKET.into(), i.notify.to_owned()));
    env.push((
        child::SUPERVISOR_GENERATION.into(),
        i.generation.to_string().into(),
    ));
    env.push((
        child::SUPERVISOR_WORKER.into(),
        i.worker.0.to_string().into(),
    ));
    env.push((
        child::SUPERVISOR_WORKERS.into(),
        i.worker.1.to_string().into(),
    ));
    env.push((
        child::SUPERVISOR_DRAIN_TIMEOUT_MS.into(),
        i.drain_timeout.as_millis().to_string().into(),
    ));
    env.push((child::SUPERVISOR_CONTROL.into(), i.control.to_owned()));
    if let Some(fd) = i.channel_fd {
        env.push((child::SUPERVISOR_CHANNEL_FD.into(), fd.to_string().into()));
    }
    let extra = compat::variables(
        i.compat,
        i.starter_keys,
        child::LISTEN_FDS_START,
        i.generation,
        i.supervisor_pid,
    );
    env.extend(extra.into_iter().map(|(k, v)| (k.into(), v.into())));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_variables_are_replaced_not_passed() {
        let inherited = vec![
            ("PATH".into(), "/bin".into()),
            ("LISTEN_FDS".into(), "9".into()),
            ("LISTEN_PID".into(), "1".into()),
            ("NOTIFY_SOCKET".into(), "/run/systemd/notify".into()),
            ("WATCHDOG_USEC".into(), "1000".into()),
            ("EINHORN_FD_COUNT".into(), "4".into()),
            ("SUPERVISOR_OPT_DRAIN_TIMEOUT".into(), "5s".into()),
            ("SUPERVISOR_OPT_LISTEN".into(), ":8080".into()),
        ];
        let compat = Compat::merge(&[]);
        let env = build(&Inputs {
            inherited,
            extra: &[
                ("PATH".into(), "/usr/bin".into()),
                ("LISTEN_FDS".into(), "7".into()),
                ("APP_MODE".into(), "prod".into()),
            ],
            names: &["http", "admin"],
            starter_keys: &["8080".into(), "9090".into()],
            notify: OsStr::new("/tmp/n/3"),
            generation: 3,
            worker: (1, 4),
            drain_timeout: std::time::Duration::from_secs(30),
            compat: &compat,
            supervisor_pid: 10,
            control: OsStr::new("/run/app/supervisor.sock"),
            channel_fd: None,
        });
        let get = |k: &str| {
            let v: Vec<_> = env.iter().filter(|(key, _)| key == k).collect();
            assert!(v.len() <= 1, "{k} twice");
            v.first().map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("PATH").as_deref(), Some("/usr/bin"), "--env wins");
        assert_eq!(get("APP_MODE").as_deref(), Some("prod"));
        assert_eq!(get("LISTEN_FDS").as_deref(), Some("2"));
        assert_eq!(get("LISTEN_FDNAMES").as_deref(), Some("http:admin"));
        assert_eq!(get("LISTEN_PID"), None);
        assert_eq!(
            get("SUPERVISOR_OPT_DRAIN_TIMEOUT"),
            None,
            "the supervisor's options stay its own"
        );
        assert_eq!(get("SUPERVISOR_OPT_LISTEN"), None);
        assert_eq!(get("NOTIFY_SOCKET").as_deref(), Some("/tmp/n/3"));
        assert_eq!(get("SUPERVISOR_GENERATION").as_deref(), Some("3"));
        assert_eq!(get("SUPERVISOR_WORKER").as_deref(), Some("1"));
        assert_eq!(get("SUPERVISOR_WORKERS").as_deref(), Some("4"));
        assert_eq!(get("SUPERVISOR_DRAIN_TIMEOUT_MS").as_deref(), Some("30000"));
        assert_eq!(
            get("SUPERVISOR_CONTROL").as_deref(),
            Some("/run/app/supervisor.sock")
        );
        assert_eq!(get("WATCHDOG_USEC"), None);
        assert_eq!(get("EINHORN_FD_COUNT"), None);
    }
}
