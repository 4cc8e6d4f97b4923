//! Counters: per prefix and in total, as atomics, mirrored to the `metrics` facade.
//!
//! Every cached call ends in exactly one *outcome*: `hits`, `null_hits`, `misses`,
//! `coalesced`, `bypasses` or `errors`, so their sum is the number of calls and
//! `hits + null_hits + coalesced` over it is the hit ratio. The other counters are *events*
//! a call may cause besides its outcome (a store, a decode failure, …).
//!
//! Metric names (each with a `prefix` label): `redis_cache_{field}_total`, one per field of
//! [`Counts`]. Install the metrics recorder before the first cached call so the handles
//! register with it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, OnceLock, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

macro_rules! counters {
    ($($field:ident => $metric:literal: $doc:literal),* $(,)?) => {
        /// A snapshot of the counters of one prefix, or of all.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        #[non_exhaustive]
        pub struct Counts {
            $(#[doc = $doc] pub $field: u64,)*
        }

        pub(crate) struct Counters {
            $($field: (AtomicU64, metrics::Counter),)*
            /// Rate-limits warnings about this prefix's values and keys.
            pub(crate) warnings: WarnLimiter,
        }

        impl Counters {
            fn new(prefix: &str) -> Self {
                Self {
                    $($field: (
                        AtomicU64::new(0),
                        metrics::counter!($metric, "prefix" => prefix.to_owned()),
                    ),)*
                    warnings: WarnLimiter::default(),
                }
            }

            $(
                pub(crate) fn $field(&self, n: u64) {
                    self.$field.0.fetch_add(n, Ordering::Relaxed);
                    self.$field.1.increment(n);
                }
            )*

            fn snapshot(&self) -> Counts {
                Counts { $($field: self.$field.0.load(Ordering::Relaxed),)* }
            }
        }

        impl std::ops::AddAssign for Counts {
            fn add_assign(&mut self, other: Counts) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counters! {
    hits => "redis_cache_hits_total": "Outcome: answered from a stored value.",
    null_hits => "redis_cache_null_hits_total": "Outcome: answered from a null marker.",
    misses => "redis_cache_misses_total": "Outcome: ran the body after the cache had nothing usable.",
    coalesced => "redis_cache_coalesced_total": "Outcome: answered by another caller's fill (in this process, or in another through the lock) instead of running the body.",
    bypasses => "redis_cache_bypasses_total": "Outcome: the cache was not read on purpose (a `bypass` or `refresh` scope, or an invalidation still pending).",
    errors => "redis_cache_errors_total": "Outcome: ran the body because the cache could not be read (Redis failing or skipped by the circuit breaker, or a key that could not be built).",
    stores => "redis_cache_stores_total": "Event: entries written (values and null markers).",
    decode_failures => "redis_cache_decode_failures_total": "Event: stored entries that did not decode and were treated as misses.",
    encode_failures => "redis_cache_encode_failures_total": "Event: results that could not be encoded and were returned unstored.",
    oversized => "redis_cache_oversized_total": "Event: results returned but not stored because they exceeded the size limit.",
    redis_errors => "redis_cache_redis_errors_total": "Event: Redis commands that failed, timed out or were skipped by the breaker.",
    invalidated => "redis_cache_invalidated_total": "Event: keys deleted by invalidation.",
}

/// Counters of a cache: in total and per prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// All prefixes together.
    pub total: Counts,
    /// By prefix; a pattern invalidation counts under `"*"`.
    pub prefixes: BTreeMap<String, Counts>,
    /// Whether the circuit breaker is open now (Redis is being skipped).
    pub circuit_open: bool,
    /// How many times the circuit breaker has opened.
    pub circuit_opened: u64,
    /// Connections retired as broken, half-open or failing over, and replaced.
    pub connections_retired: u64,
    /// Callers waiting right now for another caller's fill of the same key.
    pub waiting: u64,
    /// Invalidations that failed and are being retried; until they succeed, the keys they
    /// cover are not read from the cache.
    pub pending_invalidations: u64,
}

impl Counts {
    /// Calls counted: the sum of the six outcomes.
    pub fn calls(&self) -> u64 {
        self.hits + self.null_hits + self.misses + self.coalesced + self.bypasses + self.errors
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    by_prefix: RwLock<HashMap<Box<str>, Arc<Counters>>>,
}

impl Registry {
    pub(crate) fn prefix(&self, prefix: &str) -> Arc<Counters> {
        if let Some(c) = self
            .by_prefix
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(prefix)
        {
            return Arc::clone(c);
        }
        let mut map = self
            .by_prefix
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(prefix.into())
                .or_insert_with(|| Arc::new(Counters::new(prefix))),
        )
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let map = self
            .by_prefix
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut stats = Stats::default();
        for (prefix, counters) in map.iter() {
            let counts = counters.snapshot();
            stats.total += counts;
            stats.prefixes.insert(prefix.to_string(), counts);
        }
        stats
    }
}

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
