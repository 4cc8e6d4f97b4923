//! Counters: per prefix and in total, as atomics, mirrored to the `metrics` facade.
//!
//! Every cached call ends in exactly one *outcome*: `near_hits`, `near_null_hits` (answered
//! by the near cache), `hits`, `null_hits` (answered by Redis), `misses`, `coalesced`,
//! `bypasses` or `errors`, so their sum is the number of calls and the answered ones over it
//! is the hit ratio. The other counters are *events*
//! a call may cause besides its outcome (a store, a decode failure, …).
//!
//! The series these become are listed in [`telemetry`](crate::telemetry).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use serde::Serialize;

use metrics::Histogram;

use crate::{
    cache::report::{self, PrefixHandles, Wait},
    telemetry::{self, Lazy},
    warn::WarnLimiter,
};

/// How a call ended: exactly one per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit,
    NullHit,
    NearHit,
    NearNullHit,
    Miss,
    Coalesced,
    Bypass,
    Error,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 8] = [
        Outcome::Hit,
        Outcome::NullHit,
        Outcome::NearHit,
        Outcome::NearNullHit,
        Outcome::Miss,
        Outcome::Coalesced,
        Outcome::Bypass,
        Outcome::Error,
    ];

    /// The `outcome` label value.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Outcome::Hit | Outcome::NearHit => "hit",
            Outcome::NullHit | Outcome::NearNullHit => "null_hit",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
            Outcome::Bypass => "bypass",
            Outcome::Error => "error",
        }
    }

    /// The `tier` label value: which tier answered a hit.
    pub(crate) const fn tier(self) -> Option<&'static str> {
        match self {
            Outcome::Hit | Outcome::NullHit => Some("redis"),
            Outcome::NearHit | Outcome::NearNullHit => Some("near"),
            _ => None,
        }
    }
}

/// What a call may cause besides its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Stores,
    DecodeFailures,
    EncodeFailures,
    Oversized,
    RedisErrors,
    Invalidated,
}

impl Event {
    pub(crate) const ALL: [Event; 6] = [
        Event::Stores,
        Event::DecodeFailures,
        Event::EncodeFailures,
        Event::Oversized,
        Event::RedisErrors,
        Event::Invalidated,
    ];

    /// The series this event is counted in.
    pub(crate) const fn metric(self) -> &'static str {
        match self {
            Event::Stores => telemetry::STORES,
            Event::DecodeFailures => telemetry::DECODE_FAILURES,
            Event::EncodeFailures => telemetry::ENCODE_FAILURES,
            Event::Oversized => telemetry::OVERSIZED,
            Event::RedisErrors => telemetry::REDIS_ERRORS,
            Event::Invalidated => telemetry::INVALIDATED_KEYS,
        }
    }
}

/// A snapshot of the counters of one prefix, or of all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Counts {
    /// Outcome: answered from a value stored in Redis.
    pub hits: u64,
    /// Outcome: answered from a null marker stored in Redis.
    pub null_hits: u64,
    /// Outcome: answered from a value in the near cache, without a Redis command.
    pub near_hits: u64,
    /// Outcome: answered from a null marker in the near cache, without a Redis command.
    pub near_null_hits: u64,
    /// Outcome: ran the body after the cache had nothing usable.
    pub misses: u64,
    /// Outcome: answered by another caller's fill (in this process, or in another through the
    /// lock) instead of running the body.
    pub coalesced: u64,
    /// Outcome: the cache was not read on purpose (a `bypass` or `refresh` scope, or an
    /// invalidation still pending).
    pub bypasses: u64,
    /// Outcome: ran the body because the cache could not be read (Redis failing or skipped by
    /// the circuit breaker, or a key that could not be built).
    pub errors: u64,
    /// Event: entries written (values and null markers).
    pub stores: u64,
    /// Event: stored entries that did not decode and were treated as misses.
    pub decode_failures: u64,
    /// Event: results that could not be encoded and were returned unstored.
    pub encode_failures: u64,
    /// Event: results returned but not stored because they exceeded the size limit.
    pub oversized: u64,
    /// Event: Redis commands that failed, timed out or were skipped by the breaker.
    pub redis_errors: u64,
    /// Event: keys deleted by invalidation.
    pub invalidated: u64,
}

impl Counts {
    /// Calls counted: the sum of the eight outcomes.
    pub fn calls(&self) -> u64 {
        self.answered() + self.misses + self.bypasses + self.errors
    }

    /// Calls answered without running the body: hits and null hits of both tiers, and
    /// coalesced calls.
    pub fn answered(&self) -> u64 {
        self.hits + self.null_hits + self.near_hits + self.near_null_hits + self.coalesced
    }

    /// [`answered`](Self::answered) over all calls; `None` before the first call.
    #[allow(clippy::cast_precision_loss)] // a ratio: 2^52 calls are far away
    pub fn hit_ratio(&self) -> Option<f64> {
        let calls = self.calls();
        (calls > 0).then(|| self.answered() as f64 / calls as f64)
    }

    fn add(&mut self, outcomes: &[u64; 8], events: &[u64; 6]) {
        let [
            hits,
            null_hits,
            near_hits,
            near_null_hits,
            misses,
            coalesced,
            bypasses,
            errors,
        ] = *outcomes;
        let [
            stores,
            decode_failures,
            encode_failures,
            oversized,
            redis_errors,
            invalidated,
        ] = *events;
        self.hits += hits;
        self.null_hits += null_hits;
        self.near_hits += near_hits;
        self.near_null_hits += near_null_hits;
        self.misses += misses;
        self.coalesced += coalesced;
        self.bypasses += bypasses;
        self.errors += errors;
        self.stores += stores;
        self.decode_failures += decode_failures;
        self.encode_failures += encode_failures;
        self.oversized += oversized;
        self.redis_errors += redis_errors;
        self.invalidated += invalidated;
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        let o = other;
        self.add(
            &[
                o.hits,
                o.null_hits,
                o.near_hits,
                o.near_null_hits,
                o.misses,
                o.coalesced,
                o.bypasses,
                o.errors,
            ],
            &[
                o.stores,
                o.decode_failures,
                o.encode_failures,
                o.oversized,
                o.redis_errors,
                o.invalidated,
            ],
        );
    }
}

/// The counters of one prefix of one cache, and its metric handles.
pub(crate) struct Counters {
    outcomes: [AtomicU64; 8],
    events: [AtomicU64; 6],
    cache: metrics::SharedString,
    prefix: metrics::SharedString,
    handles: Lazy<PrefixHandles>,
    fill: Lazy<Histogram>,
    waits: [Lazy<Histogram>; 2],
    /// Rate-limits warnings about this prefix's values and keys.
    pub(crate) warnings: WarnLimiter,
}

/// The prefix pattern invalidations count under: it has no calls.
pub(crate) const PATTERN_PREFIX: &str = "*";

impl Counters {
    fn new(cache: metrics::SharedString, prefix: &str) -> Self {
        let counters = Self {
            outcomes: Default::default(),
            events: Default::default(),
            cache,
            prefix: metrics::SharedString::from_owned(prefix.to_owned()),
            handles: Lazy::new(),
            fill: Lazy::new(),
            waits: [Lazy::new(), Lazy::new()],
            warnings: WarnLimiter::default(),
        };
        // Registered now, so every counter of the prefix reads 0 before its first increment.
        if prefix != PATTERN_PREFIX {
            counters.with_handles(|_| ());
        }
        counters
    }

    #[inline]
    fn with_handles<T>(&self, f: impl FnOnce(&PrefixHandles) -> T) -> T {
        self.handles.with(
            |recorder| PrefixHandles::register(recorder, &self.cache, &self.prefix),
            f,
        )
    }

    /// Counts the one outcome of a call.
    #[inline]
    pub(crate) fn outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.with_handles(|h| h.outcomes[outcome as usize].increment(1));
    }

    #[inline]
    fn event(&self, event: Event, n: u64) {
        self.events[event as usize].fetch_add(n, Ordering::Relaxed);
        self.with_handles(|h| h.events[event as usize].increment(n));
    }

    pub(crate) fn stores(&self, n: u64) {
        self.event(Event::Stores, n);
    }

    pub(crate) fn decode_failures(&self, n: u64) {
        self.event(Event::DecodeFailures, n);
    }

    pub(crate) fn encode_failures(&self, n: u64) {
        self.event(Event::EncodeFailures, n);
    }

    pub(crate) fn oversized(&self, n: u64) {
        self.event(Event::Oversized, n);
    }

    pub(crate) fn redis_errors(&self, n: u64) {
        self.event(Event::RedisErrors, n);
    }

    pub(crate) fn invalidated(&self, n: u64) {
        self.event(Event::Invalidated, n);
    }

    /// How long a body the cache ran took.
    pub(crate) fn fill_time(&self, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        self.fill.with(
            |r| report::prefix_histogram(r, &self.cache, &self.prefix, None),
            |h| h.record(secs),
        );
    }

    /// How long a caller waited for another caller's fill.
    pub(crate) fn wait_time(&self, wait: Wait, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        self.waits[wait as usize].with(
            |r| report::prefix_histogram(r, &self.cache, &self.prefix, Some(wait)),
            |h| h.record(secs),
        );
    }

    fn snapshot(&self) -> Counts {
        let load8 = |a: &[AtomicU64; 8]| a.each_ref().map(|c| c.load(Ordering::Relaxed));
        let load6 = |a: &[AtomicU64; 6]| a.each_ref().map(|c| c.load(Ordering::Relaxed));
        let mut counts = Counts::default();
        counts.add(&load8(&self.outcomes), &load6(&self.events));
        counts
    }
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
    /// The near cache, when one is configured.
    pub near: Option<crate::cache::near::NearStats>,
}

pub(crate) struct Registry {
    /// The cache's `cache` label.
    cache: metrics::SharedString,
    by_prefix: RwLock<HashMap<Box<str>, Arc<Counters>>>,
}

impl Registry {
    pub(crate) fn new(cache: metrics::SharedString) -> Self {
        Self {
            cache,
            by_prefix: RwLock::default(),
        }
    }

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
                .or_insert_with(|| Arc::new(Counters::new(self.cache.clone(), prefix))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_ratio_counts_null_hits_and_coalesced_calls_as_answered() {
        assert_eq!(Counts::default().hit_ratio(), None);
        let counts = Counts {
            hits: 3,
            near_hits: 1,
            near_null_hits: 1,
            null_hits: 1,
            coalesced: 2,
            misses: 1,
            errors: 1,
            ..Counts::default()
        };
        assert_eq!(counts.hit_ratio(), Some(0.8));
    }

    #[test]
    fn outcomes_and_events_land_in_their_own_fields() {
        let c = Counters::new(metrics::SharedString::const_str("test"), "p");
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                c.outcome(o);
            }
        }
        c.stores(7);
        c.decode_failures(8);
        c.encode_failures(9);
        c.oversized(10);
        c.redis_errors(11);
        c.invalidated(12);
        let expected = Counts {
            hits: 1,
            null_hits: 2,
            near_hits: 3,
            near_null_hits: 4,
            misses: 5,
            coalesced: 6,
            bypasses: 7,
            errors: 8,
            stores: 7,
            decode_failures: 8,
            encode_failures: 9,
            oversized: 10,
            redis_errors: 11,
            invalidated: 12,
        };
        assert_eq!(c.snapshot(), expected);
        let mut twice = expected;
        twice += expected;
        assert_eq!(twice.calls(), 72);
    }
}
