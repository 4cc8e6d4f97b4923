//! Counters: per prefix and in total, as atomics, mirrored to the `metrics` facade.
//!
//! Metric names (each with a `prefix` label): `redis_cache_hits_total`,
//! `redis_cache_misses_total`, `redis_cache_null_hits_total`, `redis_cache_stores_total`,
//! `redis_cache_decode_failures_total`, `redis_cache_errors_total`,
//! `redis_cache_oversized_total`, `redis_cache_invalidated_total`. Install the metrics
//! recorder before the first cached call so the handles register with it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
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
        }

        impl Counters {
            fn new(prefix: &str) -> Self {
                Self {
                    $($field: (
                        AtomicU64::new(0),
                        metrics::counter!($metric, "prefix" => prefix.to_owned()),
                    ),)*
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
    hits => "redis_cache_hits_total": "Calls answered from a stored value.",
    misses => "redis_cache_misses_total": "Calls that ran the body (no entry, an unusable entry, or Redis failing).",
    null_hits => "redis_cache_null_hits_total": "Calls answered from a null marker.",
    stores => "redis_cache_stores_total": "Entries written (values and null markers).",
    decode_failures => "redis_cache_decode_failures_total": "Stored entries that did not decode and were treated as misses.",
    errors => "redis_cache_errors_total": "Redis commands that failed or timed out, and keys that could not be built.",
    oversized => "redis_cache_oversized_total": "Results returned but not stored because they exceeded the size limit.",
    invalidated => "redis_cache_invalidated_total": "Keys deleted by invalidation.",
    coalesced => "redis_cache_coalesced_total": "Misses that waited for another caller's fill instead of running the body.",
}

/// Counters of a cache: in total and per prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// All prefixes together.
    pub total: Counts,
    /// By prefix; a pattern invalidation counts under `"*"`.
    pub prefixes: BTreeMap<String, Counts>,
    /// Whether the circuit breaker is open now (Redis is being skipped).
    pub circuit_open: bool,
    /// How many times the circuit breaker has opened.
    pub circuit_opened: u64,
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
