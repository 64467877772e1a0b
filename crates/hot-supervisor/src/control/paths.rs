//! Where the control socket lives: the default path (`RUNTIME_DIRECTORY`,
//! `XDG_RUNTIME_DIR`, else a private `/tmp/supervisor-UID`) and the checks
//! that make a shared directory safe to use. Pure path rules and directory
//! checks: it never binds, connects or serves.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The socket's file name in its directory.
pub const FILE_NAME: &str = "supervisor.sock";

/// The default control socket path: `supervisor.sock` in the first entry of
/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else in
/// `$XDG_RUNTIME_DIR`, else in the private directory `/tmp/supervisor-UID`
/// (which [`private_dir`] creates and checks). Values that are not
/// absolute paths are ignored.
pub fn default_path(
    runtime_directory: Option<&std::ffi::OsStr>,
    xdg_runtime_dir: Option<&std::ffi::OsStr>,
    uid: u32,
) -> PathBuf {
    let first = |v: &std::ffi::OsStr| {
        // systemd joins several RuntimeDirectory= entries with ':'.
        let s = v.to_string_lossy();
        let first = s.split(':').next().unwrap_or("").to_string();
        Some(PathBuf::from(first)).filter(|p| p.is_absolute())
    };
    runtime_directory
        .and_then(first)
        .or_else(|| {
            xdg_runtime_dir
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        })
        .unwrap_or_else(|| fallback_dir(uid))
        .join(FILE_NAME)
}

/// The last-resort directory: per user, private.
pub fn fallback_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/supervisor-{uid}"))
}

/// The default path for this process's environment and user.
pub fn default_path_here() -> PathBuf {
    default_path(
        std::env::var_os("RUNTIME_DIRECTORY").as_deref(),
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        nix::unistd::geteuid().as_raw(),
    )
}

/// The control socket path of a run: `--control PATH` as given, else the
/// default, whose fallback directory is created private if needed.
///
/// # Errors
/// The fallback directory cannot be made private to us.
pub fn path_for_run(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let p = default_path_here();
    if let Some(dir) = p.parent()
        && dir == fallback_dir(nix::unistd::geteuid().as_raw())
    {
        let made = private_dir(dir);
        if made.is_err() && !Path::new("/tmp").is_dir() {
            // A FROM scratch container, say: say where the files could go.
            return anyhow::Context::context(
                made.map(|()| p),
                "control socket directory (runtime files go to $RUNTIME_DIRECTORY, else \
                 $XDG_RUNTIME_DIR, else /tmp: neither variable is set and /tmp does not \
                 exist; create /tmp, or set RUNTIME_DIRECTORY to a writable directory)",
            );
        }
        anyhow::Context::context(made, "control socket directory")?;
    }
    Ok(p)
}

/// Create the fallback directory if needed and make sure nobody else can
/// use it: a directory we own, mode 0700, not a symlink. Anyone can create
/// `/tmp/supervisor-UID` before us, so its existence proves nothing.
///
/// # Errors
/// It cannot be created, or it exists but is not private to us.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // Exactly 0700, whatever the umask (one with 0100 set would leave
        // the directory unusable to its owner).
        Ok(()) => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| anyhow::Error::new(e).context(format!("chmod {}", dir.display())))?;
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("create {}", dir.display())));
        }
    }
    check_private(dir)
}

/// Check that `dir` is a directory owned by us with mode 0700 (not a
/// symlink).
///
/// # Errors
/// It is not, or it cannot be inspected.
pub fn check_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| anyhow::anyhow!("inspect {}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is not a private directory of uid {me} (a directory it owns, mode 0700); give --control PATH",
            dir.display()
        );
    }
    Ok(())
}
