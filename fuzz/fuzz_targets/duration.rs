//! Durations: `duration::parse` on any text, and `parse(human(d))` for
//! any duration up to the maximum.
#![no_main]

use std::time::Duration;

use hot_supervisor::duration::{MAX, human, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(d) = parse(s)
    {
        assert!(d <= MAX);
        assert!(parse(&human(d)).is_ok(), "{s:?} -> {d:?} -> {}", human(d));
    }
    if let Some(b) = data.get(..12) {
        let secs = u64::from_le_bytes(b[..8].try_into().unwrap()) % (MAX.as_secs() + 1);
        let nanos = u32::from_le_bytes(b[8..].try_into().unwrap()) % 1_000_000_000;
        let d = Duration::new(secs, nanos).min(MAX);
        let printed = human(d);
        let back = parse(&printed).unwrap_or_else(|e| panic!("{d:?} -> {printed}: {e}"));
        // What is printed is d to its shown precision.
        let tolerance = match d.as_millis() {
            0..10 => Duration::from_micros(51),
            10..1000 => Duration::from_millis(1),
            1000..60_000 => Duration::from_micros(50_001),
            _ => Duration::from_secs(1),
        };
        assert!(
            back.abs_diff(d) <= tolerance,
            "{d:?} -> {printed} -> {back:?}"
        );
    }
});
