//! Time: the one place that reads the clock and converts between `OffsetDateTime`, unix
//! milliseconds (how the database stores instants), `std::time::Duration` and protobuf
//! `Timestamp`s.
//!
//! Conversions that cannot fail for any instant `time` can represent return plain values;
//! the ones that can fail (a database value out of range, a clock before 1970) return an
//! `Option` and the caller decides what that means.

use std::time::Duration;

use prost_types::Timestamp;
use time::OffsetDateTime;

/// Clock skew tolerated between this server, its replicas and its callers on token times.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Now, in UTC, to the millisecond: the precision the database keeps, so an instant the
/// server answers (a refresh token's expiry, say) is the one it stored. Access-token times are
/// whole seconds, as the token's claims carry them.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - time::Duration::nanoseconds(i64::from(now.nanosecond() % 1_000_000))
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    millis(now())
}

/// Unix milliseconds of `t`. Every instant `time` represents (years ±9999) is well inside
/// `i64` milliseconds, so this cannot overflow.
pub fn millis(t: OffsetDateTime) -> i64 {
    t.unix_timestamp() * 1000 + i64::from(t.millisecond())
}

/// The instant of unix milliseconds `ms`; `None` if it lies outside what `time` represents
/// (only a corrupt database value does).
pub fn from_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// `d` in milliseconds, saturating at `i64::MAX` (a duration of 292 million years).
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds `d` before now (for "newer than" queries).
pub fn millis_ago(d: Duration) -> i64 {
    now_millis().saturating_sub(duration_millis(d))
}

/// Unix seconds now; `None` if the system clock is set before 1970.
pub fn unix_secs_now() -> Option<u64> {
    u64::try_from(now().unix_timestamp()).ok()
}

/// `t` as a protobuf `Timestamp`.
pub fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        // Always below 10^9, so it fits.
        nanos: i32::try_from(t.nanosecond()).unwrap_or(999_999_999),
    }
}

/// Unix milliseconds as a protobuf `Timestamp`.
pub fn timestamp_of_millis(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        // rem_euclid(1000) * 10^6 is below 10^9, so it fits.
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(999_999_999),
    }
}

/// A protobuf `Timestamp` in unix milliseconds (saturating: a timestamp past year 292
/// million clamps, out-of-range nanos are clamped to the second).
pub fn millis_of_timestamp(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos.clamp(0, 999_999_999) / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_through_every_form() {
        let t =
            OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_789).expect("in range");
        let ms = millis(t);
        assert_eq!(ms, 1_764_000_000_123);
        assert_eq!(from_millis(ms).map(millis), Some(ms));
        assert_eq!(millis_of_timestamp(&timestamp_of_millis(ms)), ms);
        assert_eq!(millis_of_timestamp(&timestamp(t)), ms);
        assert_eq!(millis(OffsetDateTime::UNIX_EPOCH), 0);
        assert_eq!(timestamp_of_millis(-1).seconds, -1);
        assert_eq!(timestamp_of_millis(-1).nanos, 999_000_000);
        assert!(from_millis(i64::MAX).is_none());
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
        assert_eq!(now().nanosecond() % 1_000_000, 0);
    }
}
