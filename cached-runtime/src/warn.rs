//! Log rate limiting: a warning that repeats (Redis failing, entries of a prefix that keep
//! failing to decode) is logged at warn level once per period, with the number suppressed
//! since; the ones in between go to debug.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How often one kind of warning is logged at warn level; the ones in between go to debug.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Admits one warning per [`WARN_EVERY`] and counts the rest.
#[derive(Default)]
pub(crate) struct WarnLimiter {
    // Milliseconds since `epoch` of the last warning, plus one (0: never warned).
    last: AtomicU64,
    suppressed: AtomicU64,
    epoch: OnceLock<Instant>,
}

impl WarnLimiter {
    /// `Some(suppressed since the last warning)` when this one may be logged at warn.
    pub(crate) fn admit(&self) -> Option<u64> {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_admitted_once_per_period_and_the_rest_counted() {
        let w = WarnLimiter::default();
        assert_eq!(w.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(w.admit(), None);
        }
        assert_eq!(w.suppressed.load(Ordering::Relaxed), 5);
    }
}
