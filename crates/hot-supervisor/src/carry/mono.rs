//! Instants across `execve`: written as `CLOCK_MONOTONIC` nanoseconds,
//! which the same process keeps counting through the exec, and read back as
//! instants of the new image. Used with `#[serde(with = ...)]`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn clock_ns() -> i64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() * 1_000_000_000 + t.tv_nsec(),
        // Cannot fail on Linux for CLOCK_MONOTONIC.
        Err(_) => 0,
    }
}

/// `i` on the `CLOCK_MONOTONIC` scale.
pub fn to_ns(i: Instant) -> i64 {
    let now = Instant::now();
    let clock = clock_ns();
    if i <= now {
        clock.saturating_sub(i64::try_from((now - i).as_nanos()).unwrap_or(i64::MAX))
    } else {
        clock.saturating_add(i64::try_from((i - now).as_nanos()).unwrap_or(i64::MAX))
    }
}

/// The instant at `ns` on the `CLOCK_MONOTONIC` scale.
pub fn from_ns(ns: i64) -> Instant {
    let now = Instant::now();
    let clock = clock_ns();
    let gap = Duration::from_nanos(ns.abs_diff(clock));
    if ns <= clock {
        now.checked_sub(gap).unwrap_or(now)
    } else {
        now.checked_add(gap).unwrap_or(now)
    }
}

/// For an `Instant` field.
pub fn serialize<S: Serializer>(i: &Instant, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(to_ns(*i))
}

/// For an `Instant` field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
    Ok(from_ns(i64::deserialize(d)?))
}

/// For an `Option<Instant>` field.
pub mod opt {
    use super::*;

    /// Write.
    pub fn serialize<S: Serializer>(i: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        i.map(to_ns).serialize(s)
    }

    /// Read.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.map(from_ns))
    }
}

/// For a `VecDeque<Instant>` field.
pub mod seq {
    use super::*;

    /// Write.
    pub fn serialize<S: Serializer>(v: &VecDeque<Instant>, s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|i| to_ns(*i))
            .collect::<Vec<i64>>()
            .serialize(s)
    }

    /// Read.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<Instant>, D::Error> {
        Ok(Vec::<i64>::deserialize(d)?
            .into_iter()
            .map(from_ns)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_come_back_within_a_millisecond() {
        let now = Instant::now();
        for i in [
            now,
            now + Duration::from_secs(5),
            now.checked_sub(Duration::from_secs(3)).unwrap_or(now),
        ] {
            let back = from_ns(to_ns(i));
            let gap = if back > i { back - i } else { i - back };
            assert!(gap < Duration::from_millis(1), "{gap:?}");
        }
    }
}
