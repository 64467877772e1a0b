//! The control protocol: request lines in (`take_line`, `parse_request`),
//! answer lines out (`answer`, `parse_answer`).
#![no_main]

use hot_supervisor::parse::control::{self, Line, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match control::take_line(data) {
        Line::Complete(l) => {
            assert!(l.len() <= MAX_REQUEST && !l.contains(&b'\n'));
            assert_eq!(data.get(l.len()), Some(&b'\n'));
        }
        // Oversized input is refused, never cut to size.
        Line::TooLong => assert!(data.len() > MAX_REQUEST),
        Line::Incomplete => assert!(data.len() <= MAX_REQUEST && !data.contains(&b'\n')),
    }
    match control::parse_request(data) {
        Ok(r) if !r.sends_fds() => assert_eq!(
            data.strip_suffix(b"\r").unwrap_or(data),
            r.as_str().as_bytes()
        ),
        // `fds NAME...`, `listen NAME ADDR`: the word leads the line.
        Ok(r) => assert!(data.starts_with(r.as_str().as_bytes())),
        // Shown short and escaped, never raw.
        Err(e) => {
            let e = e.to_string();
            assert!(e.len() < 600 && !e.contains(char::is_control), "{e:?}");
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Err(e) = control::parse_answer(&text) {
        let e = e.to_string();
        assert!(e.len() < 900 && !e.contains(char::is_control), "{e:?}");
    }
    for ok in [true, false] {
        let line = control::answer(ok, &text);
        let body = line.strip_suffix('\n').expect("an answer ends its line");
        assert!(!body.contains(['\n', '\r']));
        let want = text.replace(['\n', '\r'], " ");
        let got = control::parse_answer(body).expect("an answer parses");
        let want = if ok {
            control::Answer::Ok(want)
        } else {
            control::Answer::Error(want)
        };
        assert_eq!(got, want);
    }
});
