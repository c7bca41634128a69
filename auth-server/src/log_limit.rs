//! Rate-limited logging: a warning or error that repeats (a refused call, a database outage,
//! an accept failure) logs one line per 10 s per kind, with the number held back since the
//! last line; every held-back line is counted (`auth_log_lines_suppressed_total`), and the
//! calls themselves are counted by status code in the RPC metrics. A flood costs a counter
//! increment per event, not a log line.

use std::sync::{
    LazyLock,
    atomic::{AtomicU64, Ordering::Relaxed},
};
use std::time::Instant;

/// Log lines held back by every [`LogThrottle`] since start.
static SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Lets one line through per 10 s and counts the ones it held back. `const`, so a kind of
/// message can own a `static` one.
#[derive(Debug, Default)]
pub struct LogThrottle {
    /// Milliseconds since `EPOCH` of the last line, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    const EVERY_MS: u64 = 10_000;

    /// A throttle that lets its first line through.
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` if this line may be logged now.
    pub fn should_log(&self) -> Option<u64> {
        self.should_log_at(u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn should_log_at(&self, now_ms: u64) -> Option<u64> {
        let now = now_ms.saturating_add(1);
        let last = self.last.load(Relaxed);
        if (last != 0 && now.saturating_sub(last) < Self::EVERY_MS)
            || self
                .last
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            SUPPRESSED_TOTAL.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

/// Log lines held back by every throttle since start (exported as a metric).
pub fn suppressed_total() -> u64 {
    SUPPRESSED_TOTAL.load(Relaxed)
}

/// Logs through `$throttle` (a [`LogThrottle`]): `tracing::$level!` with the fields given plus
/// `repeated` (lines held back since the last one), at most once per 10 s.
#[macro_export]
macro_rules! throttled {
    ($throttle:expr, $level:ident, $($rest:tt)+) => {
        if let Some(repeated) = $throttle.should_log() {
            tracing::$level!(repeated, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_ten_seconds_counting_what_was_held_back() {
        let throttle = LogThrottle::new();
        let before = suppressed_total();
        assert_eq!(throttle.should_log_at(0), Some(0));
        for ms in 0..500 {
            assert_eq!(throttle.should_log_at(ms * 10), None);
        }
        // Ten seconds after the first line, the next one reports the 500 held back.
        assert_eq!(throttle.should_log_at(10_000), Some(500));
        assert_eq!(throttle.should_log_at(10_001), None);
        assert!(suppressed_total() - before >= 501);
    }
}
