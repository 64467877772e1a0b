//! Ready modes: `parse::ready::parse`.
#![no_main]

use hot_supervisor::parse::ready::{Ready, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    match parse(s) {
        Ok(Ready::Http(p)) => {
            assert!(p.starts_with('/') && !p.bytes().any(|b| b <= b' ' || b == 0x7f));
            assert_eq!(parse(&format!("http:{p}")), Ok(Ready::Http(p)));
        }
        Ok(Ready::Delay(d)) => {
            let printed = hot_supervisor::duration::human(d);
            assert!(parse(&format!("delay:{printed}")).is_ok(), "{d:?}");
        }
        Ok(_) | Err(_) => {}
    }
});
