//! HTTP heads: health requests (`parse::http::parse_request`) and probe
//! answers (`parse::http::status_code`).
#![no_main]

use hot_supervisor::parse::http;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match http::parse_request(data) {
        Ok((_, head_only)) => {
            let method: &[u8] = if head_only { b"HEAD " } else { b"GET " };
            assert!(data.starts_with(method));
        }
        Err((code, text)) => assert!([400, 404, 405].contains(&code) && text.ends_with('\n')),
    }
    if let Some(code) = http::status_code(data) {
        assert!(data.windows(2).any(|w| w == b"\r\n"));
        assert!(code == 0 || data.starts_with(b"HTTP/"));
    }
});
