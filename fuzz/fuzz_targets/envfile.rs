//! Environment files (`envfile::parse`) and `--env` assignments
//! (`envfile::parse_assignment`).
#![no_main]

use hot_supervisor::envfile;
use libfuzzer_sys::fuzz_target;

/// A value in double quotes, as the file format escapes it.
fn quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fuzz_target!(|text: &str| {
    if let Ok(list) = envfile::parse(text) {
        for (key, value) in list {
            // Every key is a valid one, and every value written back in
            // quotes reads back the same.
            let line = format!("{key}={value}");
            assert_eq!(
                envfile::parse_assignment(&line),
                Ok((key.clone(), value.clone()))
            );
            let again = envfile::parse(&format!("{key}={}\n", quoted(&value)));
            assert_eq!(again, Ok(vec![(key, value)]));
        }
    }
    if let Ok((key, value)) = envfile::parse_assignment(text) {
        assert_eq!(format!("{key}={value}"), text);
    }
});
