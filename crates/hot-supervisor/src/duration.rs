//! Durations as people write them (`500ms`, `30s`, `2m`, `1h`, `1.5s`, `0`)
//! and as the supervisor prints them (`3.2ms`, `85ms`, `1.2s`, `2m30s`).
//!
//! The one parser and the one printer of the project: the command line, the
//! client, the example servers, the load generator and the tests all use
//! these, so every place accepts the same units. Pure functions, no I/O.

use std::time::Duration;

/// The longest duration accepted: far beyond any sensible timeout, and far
/// from overflowing an `Instant` deadline.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parse `250us`, `500ms`, `30s`, `2m`, `1h`, decimals (`1.5s`), or a bare
/// `0`; also several of these, largest unit first and without blanks
/// (`2m30s`, `1h30m`), as [`human`] prints a minute or more. The error
/// names the text and what is wrong with it.
///
/// # Errors
/// No unit, an unknown unit, a negative or unparsable number, or more than
/// [`MAX`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("'{s}' is negative (a duration is 0 or more)"));
    }
    if s.is_empty() {
        return Err("an empty duration (write e.g. 500ms, 30s, 2m, 1h)".to_string());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' has no unit (write e.g. 500ms, 30s, 2m, 1h)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (write e.g. 500ms, 30s, 2m, 1h)"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return match compound(s) {
                Some(Some(d)) if d <= MAX => Ok(d),
                Some(_) => Err(format!("'{s}' is out of range (at most 100 years)")),
                None => Err(format!(
                    "'{s}': unknown unit '{unit}' (use us, ms, s, m or h)"
                )),
            };
        }
    };
    match Duration::try_from_secs_f64(value * scale) {
        Ok(d) if d <= MAX => Ok(d),
        _ => Err(format!("'{s}' is out of range (at most 100 years)")),
    }
}

/// Two or more `NUMBER UNIT` parts with units from the largest down, each
/// at most once (`2m30s`, `1h0m5.5s`): `None` if `s` is not that,
/// `Some(None)` if it is but its sum overflows.
fn compound(s: &str) -> Option<Option<Duration>> {
    const UNITS: [(&str, f64); 5] = [
        ("h", 3600.0),
        ("m", 60.0),
        ("s", 1.0),
        ("ms", 1e-3),
        ("us", 1e-6),
    ];
    let mut rest = s;
    let mut next_unit = 0;
    let mut parts = 0;
    let mut total = Some(Duration::ZERO);
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let unit_end = rest[num_end..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .map_or(rest.len(), |i| num_end + i);
        let value: f64 = rest[..num_end].parse().ok()?;
        let unit = &rest[num_end..unit_end];
        let i = next_unit + UNITS[next_unit..].iter().position(|(u, _)| *u == unit)?;
        next_unit = i + 1;
        parts += 1;
        let part = Duration::try_from_secs_f64(value * UNITS[i].1).ok();
        total = total.zip(part).and_then(|(t, p)| t.checked_add(p));
        rest = &rest[unit_end..];
    }
    (parts >= 2).then_some(total)
}

/// `3.2ms`, `85ms`, `1.2s`, `2m30s`: short, with one decimal below 10 ms
/// and below a minute.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 10 {
        let s = format!("{:.1}", d.as_secs_f64() * 1000.0);
        format!("{}ms", s.strip_suffix(".0").unwrap_or(&s))
    } else if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.1}", d.as_secs_f64());
        format!("{}s", s.strip_suffix(".0").unwrap_or(&s))
    } else {
        let s = d.as_secs();
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// Whole milliseconds, saturating (for status reports).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_name_the_text_and_the_fault() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("30x").unwrap_err().contains("unknown unit 'x'"));
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("1.2.3s").unwrap_err().contains("not a duration"));
        assert!(parse("99999999h").unwrap_err().contains("out of range"));
    }

    #[test]
    fn prints_short() {
        assert_eq!(human(Duration::from_micros(3240)), "3.2ms");
        assert_eq!(human(Duration::from_millis(5)), "5ms");
        assert_eq!(human(Duration::from_millis(85)), "85ms");
        assert_eq!(human(Duration::from_millis(1200)), "1.2s");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(150)), "2m30s");
    }

    #[test]
    fn reads_what_it_prints_for_a_minute_or_more() {
        assert_eq!(parse("2m30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1h2m3.5s"), Ok(Duration::from_millis(3_723_500)));
        assert_eq!(parse("1s500ms"), Ok(Duration::from_millis(1500)));
        // Units largest first, each once; no blanks, no trailing number.
        for bad in ["30s2m", "1m1m", "2m 30s", "2m30", "2m30x", "2m-1s", "2m.s"] {
            assert!(parse(bad).unwrap_err().contains("unknown unit"), "{bad}");
        }
        assert!(parse("876000h1s").unwrap_err().contains("out of range"));
        assert_eq!(parse("876000h0s"), Ok(MAX));
    }

    #[test]
    fn round_trips_what_it_prints() {
        for ms in [1u64, 85, 1200, 30_000, 60_000, 150_000, 7_200_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&human(d)), Ok(d));
        }
    }

    use supervisor_child::test_rng::Rng;

    #[test]
    fn prints_what_it_reads_for_every_representable_duration() {
        let mut rng = Rng::new(13);
        for _ in 0..20_000 {
            // Exactly what `human` shows: tenths of a millisecond below
            // 10 ms, milliseconds below a second, tenths of a second below
            // a minute, whole seconds after.
            let d = match rng.below(4) {
                0 => Duration::from_micros(100 * rng.below(100) as u64),
                1 => Duration::from_millis(10 + rng.below(990) as u64),
                2 => Duration::from_millis(100 * (10 + rng.below(590) as u64)),
                _ => Duration::from_secs(60 + rng.next() % (MAX.as_secs() - 59)),
            };
            assert_eq!(parse(&human(d)), Ok(d), "{}", human(d));
        }
    }

    #[test]
    fn any_text_parses_within_range_or_is_refused() {
        let mut rng = Rng::new(14);
        let pieces = [
            "0", "1", "9", ".", "us", "ms", "s", "m", "h", "x", " ", "-", "e",
        ];
        for _ in 0..20_000 {
            let text = rng.mix(&pieces, 6);
            if let Ok(d) = parse(&text) {
                assert!(d <= MAX);
                assert!(parse(&human(d)).is_ok(), "{text}");
            }
            // Any duration at all prints as something that parses close
            // to it.
            let d = Duration::new(rng.next() % MAX.as_secs(), rng.below(1_000_000_000) as u32);
            let back = parse(&human(d)).unwrap();
            assert!(back.abs_diff(d) <= Duration::from_secs(1), "{d:?}");
        }
    }
}
