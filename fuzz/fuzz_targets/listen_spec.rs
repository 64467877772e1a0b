//! Listener specs: `Spec::from_str`, `parse_addr`, `host_port`.
#![no_main]

use hot_supervisor::parse::listen::{self, Spec};
use libfuzzer_sys::fuzz_target;
use supervisor_child::protocol::valid_fd_name;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = listen::host_port(s);
    if let Ok(addr) = listen::parse_addr(s) {
        // The address as printed parses back to itself.
        assert_eq!(listen::parse_addr(&addr.to_string()), Ok(addr));
    }
    if let Ok(spec) = s.parse::<Spec>() {
        assert!(
            !spec.name.is_empty() && valid_fd_name(&spec.name),
            "{spec:?}"
        );
        assert_eq!(listen::parse_addr(&spec.text).as_ref(), Ok(&spec.addr));
        if !spec.name.contains('=') {
            let again: Spec = format!("{}={}", spec.name, spec.addr)
                .parse()
                .expect("a formatted spec parses");
            assert_eq!((&again.name, &again.addr), (&spec.name, &spec.addr));
        }
    }
});
