//! The sd_notify protocol's text on the sender's side: the `STATUS=`
//! field and the address a `NOTIFY_SOCKET` value names (sd_notify(3)).
//! The supervisor parses what arrives; this is what a child sends.
//!
//! Pure but for building a socket address. Not part of this crate's API.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr;

use super::{NOTIFY_SOCKET, STATUS_PREFIX};

/// `STATUS=<text>`, with line breaks and NULs in `text` (which would end
/// the field, or make the receiver drop the datagram) turned into spaces.
pub fn status_message(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\0') {
                ' '
            } else {
                c
            }
        })
        .collect();
    format!("{STATUS_PREFIX}{line}")
}

/// The socket address a `NOTIFY_SOCKET` value names: an absolute path, or
/// `@` and an abstract name.
///
/// # Errors
/// Any other form (the `vsock:` ones are not supported), or a path or name
/// too long for a socket address; the message names the variable and value.
pub fn socket_addr(target: &OsStr) -> io::Result<SocketAddr> {
    let bytes = target.as_bytes();
    let addr = match bytes {
        [b'/', ..] => SocketAddr::from_pathname(target),
        [b'@', name @ ..] if !name.is_empty() => SocketAddr::from_abstract_name(name),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET}={}: unsupported address (expected /path or @name)",
                    target.to_string_lossy()
                ),
            ));
        }
    };
    addr.map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("{NOTIFY_SOCKET}={}: {err}", target.to_string_lossy()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_too_long_are_refused_not_cut() {
        let ok = format!("/{}", "a".repeat(106));
        assert!(socket_addr(OsStr::new(&ok)).is_ok());
        let long = format!("/{}", "a".repeat(200));
        assert!(socket_addr(OsStr::new(&long)).is_err());
        assert!(socket_addr(OsStr::new(&format!("@{}", "a".repeat(200)))).is_err());
    }
}
