//! Notify datagrams (`parse::notify::parse`), `NOTIFY_SOCKET` values
//! (`socket_addr`) and the child's `STATUS=` builder (`status_message`).
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use hot_supervisor::parse::notify::{self, Message, Rejected};
use libfuzzer_sys::fuzz_target;
use supervisor_child::protocol::notify::{socket_addr, status_message};

fn encode(m: &Message) -> String {
    let mut lines = Vec::new();
    if m.ready {
        lines.push("READY=1".to_string());
    }
    if m.stopping {
        lines.push("STOPPING=1".to_string());
    }
    if m.reloading {
        lines.push("RELOADING=1".to_string());
    }
    if let Some(s) = &m.status {
        lines.push(format!("STATUS={s}"));
    }
    lines.join("\n")
}

fuzz_target!(|data: &[u8]| {
    match notify::parse(data) {
        Ok(m) => {
            // A NUL may only end the datagram.
            assert!(!data[..data.len().saturating_sub(1)].contains(&0));
            if let Some(s) = &m.status {
                assert!(!s.contains(['\n', '\0']));
            }
            // What was understood, written again, reads back the same.
            assert_eq!(notify::parse(encode(&m).as_bytes()), Ok(m));
        }
        Err(e) => assert_eq!(e, Rejected::Nul),
    }
    let _ = socket_addr(OsStr::from_bytes(data));
    if let Ok(text) = std::str::from_utf8(data) {
        // The builder's field is one line that parses back whole.
        let line = status_message(text);
        let m = notify::parse(line.as_bytes()).expect("a built status parses");
        assert_eq!(m.status.as_deref(), Some(&line["STATUS=".len()..]));
        assert_eq!(
            line["STATUS=".len()..].chars().count(),
            text.chars().count()
        );
    }
});
