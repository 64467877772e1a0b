//! Stop signals: `parse::signal::parse`.
#![no_main]

use hot_supervisor::parse::signal::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(sig) = parse(s) {
        assert_eq!(parse(sig.as_str()), Ok(sig));
        assert_eq!(parse(&(sig as i32).to_string()), Ok(sig));
    }
});
