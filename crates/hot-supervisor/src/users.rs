//! `--user` and `--group` without the C library's name service: the
//! entries of `/etc/passwd` and `/etc/group` (passwd(5), group(5)) read
//! directly, for the static build, whose C library cannot load the name
//! service's modules (a `FROM scratch` container has none, and often no
//! `/etc` at all).
//!
//! Owns the parsing of those two files and the rules for a name or number
//! that is not in them. Must never guess: a name that is not found is an
//! error, and a number that is not found is taken as it is only where its
//! group is known too (`--group`), never defaulted to root's.

use std::path::Path;

/// One line of `/etc/passwd`: `name:password:uid:gid:gecos:home:shell`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    /// The login name.
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
}

/// One line of `/etc/group`: `name:password:gid:member,member,...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    /// The group's name.
    pub name: String,
    /// The group id.
    pub gid: u32,
    /// The users who have it as a supplementary group.
    pub members: Vec<String>,
}

/// The well-formed entries of a passwd file; comments, blank lines, NIS
/// `+`/`-` lines and malformed lines are skipped, as the C library does.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() || f[0].starts_with(['#', '+', '-']) {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// The well-formed entries of a group file (see [`parse_passwd`]).
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() || f[0].starts_with(['#', '+', '-']) {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

/// Who `--user` and `--group` name: uid, primary gid and the supplementary
/// groups `initgroups` would set (the primary one first).
///
/// # Errors
/// A name that is in neither file; a number for `--user` that has no
/// entry, without `--group` (its group would be a guess).
pub fn resolve(
    user: Option<&str>,
    group: Option<&str>,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
    current: (u32, u32),
) -> Result<(u32, u32, Vec<u32>), String> {
    let group_gid = match group {
        None => None,
        Some(g) => Some(match groups.iter().find(|e| e.name == g) {
            Some(e) => e.gid,
            None => g.parse::<u32>().map_err(|_| {
                format!("--group {g}: no such group in /etc/group (a number is taken as a gid)")
            })?,
        }),
    };
    let Some(u) = user else {
        let gid = group_gid.unwrap_or(current.1);
        return Ok((current.0, gid, vec![gid]));
    };
    let found = passwd.iter().find(|e| e.name == u).or_else(|| {
        u.parse::<u32>()
            .ok()
            .and_then(|n| passwd.iter().find(|e| e.uid == n))
    });
    match found {
        Some(entry) => {
            let gid = group_gid.unwrap_or(entry.gid);
            let mut list = vec![gid];
            for g in groups {
                if g.members.contains(&entry.name) && !list.contains(&g.gid) {
                    list.push(g.gid);
                }
            }
            Ok((entry.uid, gid, list))
        }
        None => match (u.parse::<u32>(), group_gid) {
            (Ok(uid), Some(gid)) => Ok((uid, gid, vec![gid])),
            (Ok(uid), None) => Err(format!(
                "--user {uid}: no entry in /etc/passwd, so its group is unknown: give --group too"
            )),
            (Err(_), _) => Err(format!("--user {u}: no such user in /etc/passwd")),
        },
    }
}

/// [`resolve`] against the files under `root` (`/` in use); a file that
/// does not exist counts as empty.
///
/// # Errors
/// As [`resolve`]; a file that exists but cannot be read.
pub fn resolve_from_files(
    user: Option<&str>,
    group: Option<&str>,
    root: &Path,
    current: (u32, u32),
) -> Result<(u32, u32, Vec<u32>), String> {
    let read = |name: &str| match std::fs::read_to_string(root.join(name)) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("/{name}: {e}")),
    };
    let passwd = parse_passwd(&read("etc/passwd")?);
    let groups = parse_group(&read("etc/group")?);
    resolve(user, group, &passwd, &groups, current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment

nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
app:x:1000:1000::/home/app:/bin/sh
broken:x:notanumber:1:::
short:x:5
+nis
";
    const GROUP: &str = "\
root:x:0:
nogroup:x:65534:
app:x:1000:
www:x:33:app, other
audio:x:29:other
";

    fn r(u: Option<&str>, g: Option<&str>) -> Result<(u32, u32, Vec<u32>), String> {
        resolve(u, g, &parse_passwd(PASSWD), &parse_group(GROUP), (0, 0))
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(r(Some("app"), None), Ok((1000, 1000, vec![1000, 33])));
        assert_eq!(r(Some("1000"), None), Ok((1000, 1000, vec![1000, 33])));
        assert_eq!(r(Some("nobody"), None), Ok((65534, 65534, vec![65534])));
        assert_eq!(r(Some("app"), Some("www")), Ok((1000, 33, vec![33])));
        assert_eq!(r(Some("app"), Some("29")), Ok((1000, 29, vec![29, 33])));
        assert_eq!(r(None, Some("nogroup")), Ok((0, 65534, vec![65534])));
        assert_eq!(r(Some("4242"), Some("4242")), Ok((4242, 4242, vec![4242])));
    }

    #[test]
    fn never_a_guess() {
        assert!(r(Some("ghost"), None).unwrap_err().contains("no such user"));
        assert!(
            r(Some("broken"), None).is_err(),
            "a malformed line is no entry"
        );
        assert!(r(Some("+nis"), None).is_err());
        let e = r(Some("4242"), None).unwrap_err();
        assert!(e.contains("give --group"), "{e}");
        assert!(
            r(Some("app"), Some("ghosts"))
                .unwrap_err()
                .contains("no such group")
        );
    }

    #[test]
    fn no_files_at_all() {
        let empty = std::env::temp_dir().join(format!("sv-users-{}", std::process::id()));
        assert_eq!(
            resolve_from_files(Some("65534"), Some("65534"), &empty, (0, 0)),
            Ok((65534, 65534, vec![65534]))
        );
        assert!(resolve_from_files(Some("nobody"), None, &empty, (0, 0)).is_err());
    }
}
