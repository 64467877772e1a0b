//! Environment variables for servers written for other launchers
//! (`--compat`), each exactly as the original launcher writes it: einhorn's
//! `prepare_child_environment` (`lib/einhorn/command.rb`), Server::Starter's
//! `start_server` (`lib/Server/Starter.pm`) and nginx's `ngx_add_inherited_sockets`
//! (`src/core/nginx.c`). Pure functions: the environment module adds what
//! they return to each child's environment.

use std::fmt;
use std::str::FromStr;

/// A launcher whose variables children may expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Launcher {
    /// einhorn: `EINHORN_FD_COUNT`, `EINHORN_FD_<i>`, `EINHORN_FDS`,
    /// `EINHORN_MASTER_PID`.
    Einhorn,
    /// Server::Starter: `SERVER_STARTER_PORT`, `SERVER_STARTER_GENERATION`.
    ServerStarter,
    /// nginx: `NGINX="3;4;"`.
    Nginx,
}

const ALL: [Launcher; 3] = [Launcher::Einhorn, Launcher::ServerStarter, Launcher::Nginx];

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::Einhorn => "einhorn",
            Launcher::ServerStarter => "server-starter",
            Launcher::Nginx => "nginx",
        })
    }
}

/// A `--compat` list: comma-separated launcher names, or `all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compat(pub Vec<Launcher>);

impl FromStr for Compat {
    type Err = String;

    fn from_str(s: &str) -> Result<Compat, String> {
        let mut list = Vec::new();
        for name in s.split(',').map(str::trim) {
            match name {
                "all" => list.extend(ALL),
                "einhorn" => list.push(Launcher::Einhorn),
                "server-starter" | "server_starter" | "starter" => {
                    list.push(Launcher::ServerStarter)
                }
                "nginx" => list.push(Launcher::Nginx),
                other => {
                    return Err(format!(
                        "unknown launcher '{other}' (use einhorn, server-starter, nginx or all)"
                    ));
                }
            }
        }
        list.sort();
        list.dedup();
        Ok(Compat(list))
    }
}

impl Compat {
    /// Merge several `--compat` flags.
    pub fn merge(all: &[Compat]) -> Compat {
        let mut list: Vec<Launcher> = all.iter().flat_map(|c| c.0.iter().copied()).collect();
        list.sort();
        list.dedup();
        Compat(list)
    }

    /// Whether `launcher` was asked for.
    pub fn has(&self, launcher: Launcher) -> bool {
        self.0.contains(&launcher)
    }
}

/// Refuse listeners that Server::Starter's variable cannot name (a key
/// holding `=` or `;`), when its variables were asked for.
///
/// # Errors
/// The first such listener, named.
pub fn check_keys(compat: &Compat, listeners: &[crate::listen::Listener]) -> anyhow::Result<()> {
    if compat.has(Launcher::ServerStarter)
        && let Some(l) = listeners
            .iter()
            .find(|l| l.starter_key.contains(['=', ';']))
    {
        anyhow::bail!(
            "--compat server-starter: listener {} cannot be named in SERVER_STARTER_PORT (its key {:?} holds '=' or ';')",
            l.bound,
            l.starter_key
        );
    }
    Ok(())
}

/// Variables of the supervisor's own environment that describe its own
/// launcher and are therefore never passed to children.
pub fn is_launcher_variable(name: &str) -> bool {
    name.starts_with("EINHORN_") || name.starts_with("SERVER_STARTER_") || name == "NGINX"
}

/// The variables for one generation.
///
/// `keys` are the Server::Starter keys of the listeners, in fd order (see
/// `listen::starter_key`); the listeners sit at fds
/// `first..first + keys.len()`.
pub fn variables(
    compat: &Compat,
    keys: &[String],
    first: i32,
    generation: u64,
    supervisor_pid: u32,
) -> Vec<(String, String)> {
    let fds: Vec<i32> = (0..keys.len() as i32).map(|i| first + i).collect();
    let mut vars = Vec::new();
    if compat.has(Launcher::Einhorn) {
        vars.push(("EINHORN_FD_COUNT".into(), fds.len().to_string()));
        for (i, fd) in fds.iter().enumerate() {
            vars.push((format!("EINHORN_FD_{i}"), fd.to_string()));
        }
        let list: Vec<String> = fds.iter().map(i32::to_string).collect();
        vars.push(("EINHORN_FDS".into(), list.join(" ")));
        // Workers check that their parent is the master: we are.
        vars.push(("EINHORN_MASTER_PID".into(), supervisor_pid.to_string()));
    }
    if compat.has(Launcher::ServerStarter) {
        let entries: Vec<String> = keys
            .iter()
            .zip(&fds)
            .map(|(k, fd)| format!("{k}={fd}"))
            .collect();
        vars.push(("SERVER_STARTER_PORT".into(), entries.join(";")));
        vars.push(("SERVER_STARTER_GENERATION".into(), generation.to_string()));
    }
    if compat.has(Launcher::Nginx) {
        // Every fd terminated: nginx ignores an unterminated last entry.
        let value: String = fds.iter().map(|fd| format!("{fd};")).collect();
        vars.push(("NGINX".into(), value));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!("nginx".parse::<Compat>().unwrap().0, vec![Launcher::Nginx]);
        assert_eq!("all".parse::<Compat>().unwrap().0, ALL.to_vec());
        assert_eq!(
            "nginx, einhorn,nginx".parse::<Compat>().unwrap().0,
            vec![Launcher::Einhorn, Launcher::Nginx]
        );
        assert!(
            "apache"
                .parse::<Compat>()
                .unwrap_err()
                .contains("unknown launcher 'apache'")
        );
    }

    #[test]
    fn writes_each_launcher_s_format() {
        let keys = vec!["0.0.0.0:80".to_string(), "/tmp/app.sock".to_string()];
        let all = "all".parse().unwrap();
        let vars = variables(&all, &keys, 3, 7, 4200);
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(get("EINHORN_FD_COUNT"), "2");
        assert_eq!(get("EINHORN_FD_0"), "3");
        assert_eq!(get("EINHORN_FD_1"), "4");
        assert_eq!(get("EINHORN_FDS"), "3 4");
        assert_eq!(get("EINHORN_MASTER_PID"), "4200");
        assert_eq!(get("SERVER_STARTER_PORT"), "0.0.0.0:80=3;/tmp/app.sock=4");
        assert_eq!(get("SERVER_STARTER_GENERATION"), "7");
        assert_eq!(get("NGINX"), "3;4;");
        assert!(variables(&Compat::default(), &keys, 3, 1, 1).is_empty());
    }

    #[test]
    fn launcher_variables_are_recognised() {
        assert!(is_launcher_variable("EINHORN_FD_0"));
        assert!(is_launcher_variable("SERVER_STARTER_PORT"));
        assert!(is_launcher_variable("NGINX"));
        assert!(!is_launcher_variable("NGINX_HOME"));
        assert!(!is_launcher_variable("PATH"));
    }
}
