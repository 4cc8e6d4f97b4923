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
    /// A value past its TTL served on purpose, without running the body.
    Stale,
    Miss,
    Coalesced,
    Bypass,
    Error,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 9] = [
        Outcome::Hit,
        Outcome::NullHit,
        Outcome::NearHit,
        Outcome::NearNullHit,
        Outcome::Stale,
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
            Outcome::Stale => "stale",
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
    FailSafe,
    Refreshes,
    Refreshed,
    RefreshFailures,
    EarlyRefreshes,
    StaleRevalidate,
    StaleSoftTimeout,
    StaleFailSafe,
    StaleThrottle,
    StaleUnreachable,
}

/// Why a stale value was served: one per stale value served, whatever the call's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StaleReason {
    /// Stale-while-revalidate: answered at once, refreshed in the background.
    Revalidate,
    /// The body passed its soft timeout (or is running already), in the background.
    SoftTimeout,
    /// Fail-safe: the body failed or panicked.
    FailSafe,
    /// Fail-safe: the key is throttled after a failure, the body was not run.
    Throttle,
    /// Fail-safe: Redis could not be read, the near cache kept the value.
    Unreachable,
}

impl StaleReason {
    const fn event(self) -> Event {
        match self {
            StaleReason::Revalidate => Event::StaleRevalidate,
            StaleReason::SoftTimeout => Event::StaleSoftTimeout,
            StaleReason::FailSafe => Event::StaleFailSafe,
            StaleReason::Throttle => Event::StaleThrottle,
            StaleReason::Unreachable => Event::StaleUnreachable,
        }
    }

    /// Whether fail-safe served it (counted in `fail_safe` too).
    const fn fail_safe(self) -> bool {
        matches!(
            self,
            StaleReason::FailSafe | StaleReason::Throttle | StaleReason::Unreachable
        )
    }
}

impl Event {
    pub(crate) const ALL: [Event; 16] = [
        Event::Stores,
        Event::DecodeFailures,
        Event::EncodeFailures,
        Event::Oversized,
        Event::RedisErrors,
        Event::Invalidated,
        Event::FailSafe,
        Event::Refreshes,
        Event::Refreshed,
        Event::RefreshFailures,
        Event::EarlyRefreshes,
        Event::StaleRevalidate,
        Event::StaleSoftTimeout,
        Event::StaleFailSafe,
        Event::StaleThrottle,
        Event::StaleUnreachable,
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
            Event::FailSafe => telemetry::FAIL_SAFE,
            Event::Refreshes => telemetry::REFRESHES,
            Event::Refreshed => telemetry::REFRESHED,
            Event::RefreshFailures => telemetry::REFRESH_FAILURES,
            Event::EarlyRefreshes => telemetry::EARLY_REFRESHES,
            Event::StaleRevalidate
            | Event::StaleSoftTimeout
            | Event::StaleFailSafe
            | Event::StaleThrottle
            | Event::StaleUnreachable => telemetry::STALE_SERVED,
        }
    }

    /// The `reason` label value of a stale value served.
    pub(crate) const fn reason(self) -> Option<&'static str> {
        match self {
            Event::StaleRevalidate => Some("revalidate"),
            Event::StaleSoftTimeout => Some("soft_timeout"),
            Event::StaleFailSafe => Some("fail_safe"),
            Event::StaleThrottle => Some("throttle"),
            Event::StaleUnreachable => Some("unreachable"),
            _ => None,
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
    /// Outcome: answered with a value past its TTL, within its stale window, without running
    /// the body (stale-while-revalidate, a soft timeout, the fail-safe throttle, or the near
    /// cache while Redis cannot be reached).
    pub stale: u64,
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
    /// Event: stale values served instead of a failing body or an unreachable Redis: the sum
    /// of `stale_fail_safe`, `stale_throttle` and `stale_unreachable`.
    pub fail_safe: u64,
    /// Event: background refreshes started.
    pub refreshes: u64,
    /// Event: background refreshes that stored a result.
    pub refreshed: u64,
    /// Event: background refreshes that failed, panicked or passed their hard timeout.
    pub refresh_failures: u64,
    /// Event: fresh entries refreshed early (XFetch).
    pub early_refreshes: u64,
    /// Event: stale values served by stale-while-revalidate (refreshing in the background).
    pub stale_revalidate: u64,
    /// Event: stale values served past a soft timeout (the body finishing in the
    /// background), or while the key was being refreshed already.
    pub stale_soft_timeout: u64,
    /// Event: stale values served because the body failed or panicked (fail-safe).
    pub stale_fail_safe: u64,
    /// Event: stale values served without running the body, the key throttled after a
    /// failure (fail-safe).
    pub stale_throttle: u64,
    /// Event: stale values served from the near cache because Redis could not be read
    /// (fail-safe).
    pub stale_unreachable: u64,
}

impl Counts {
    /// Calls counted: the sum of the eight outcomes.
    pub fn calls(&self) -> u64 {
        self.answered() + self.misses + self.bypasses + self.errors
    }

    /// Calls answered without running the body: hits and null hits of both tiers, stale
    /// answers, and coalesced calls.
    pub fn answered(&self) -> u64 {
        self.hits
            + self.null_hits
            + self.near_hits
            + self.near_null_hits
            + self.stale
            + self.coalesced
    }

    /// [`answered`](Self::answered) over all calls; `None` before the first call.
    #[allow(clippy::cast_precision_loss)] // a ratio: 2^52 calls are far away
    pub fn hit_ratio(&self) -> Option<f64> {
        let calls = self.calls();
        (calls > 0).then(|| self.answered() as f64 / calls as f64)
    }

    /// Stale values served, for any reason and with any outcome.
    pub fn stale_served(&self) -> u64 {
        self.stale_revalidate
            + self.stale_soft_timeout
            + self.stale_fail_safe
            + self.stale_throttle
            + self.stale_unreachable
    }

    fn add(&mut self, outcomes: &[u64; 9], events: &[u64; 16]) {
        let [
            hits,
            null_hits,
            near_hits,
            near_null_hits,
            stale,
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
            fail_safe,
            refreshes,
            refreshed,
            refresh_failures,
            early_refreshes,
            stale_revalidate,
            stale_soft_timeout,
            stale_fail_safe,
            stale_throttle,
            stale_unreachable,
        ] = *events;
        self.hits += hits;
        self.null_hits += null_hits;
        self.near_hits += near_hits;
        self.near_null_hits += near_null_hits;
        self.stale += stale;
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
        self.fail_safe += fail_safe;
        self.refreshes += refreshes;
        self.refreshed += refreshed;
        self.refresh_failures += refresh_failures;
        self.early_refreshes += early_refreshes;
        self.stale_revalidate += stale_revalidate;
        self.stale_soft_timeout += stale_soft_timeout;
        self.stale_fail_safe += stale_fail_safe;
        self.stale_throttle += stale_throttle;
        self.stale_unreachable += stale_unreachable;
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
                o.stale,
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
                o.fail_safe,
                o.refreshes,
                o.refreshed,
                o.refresh_failures,
                o.early_refreshes,
                o.stale_revalidate,
                o.stale_soft_timeout,
                o.stale_fail_safe,
                o.stale_throttle,
                o.stale_unreachable,
            ],
        );
    }
}

/// The counters of one prefix of one cache, and its metric handles.
pub(crate) struct Counters {
    outcomes: [AtomicU64; 9],
    events: [AtomicU64; 16],
    /// How long the last body the cache ran took, in microseconds (early refresh's input).
    last_fill_us: AtomicU64,
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
    pub(crate) fn new(cache: metrics::SharedString, prefix: &str) -> Self {
        let counters = Self {
            outcomes: Default::default(),
            events: Default::default(),
            last_fill_us: AtomicU64::new(0),
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

    /// A stale value served, and why; a fail-safe one counts in `fail_safe` too.
    pub(crate) fn stale_served(&self, reason: StaleReason) {
        self.event(reason.event(), 1);
        if reason.fail_safe() {
            self.event(Event::FailSafe, 1);
        }
    }

    pub(crate) fn refreshes(&self, n: u64) {
        self.event(Event::Refreshes, n);
    }

    pub(crate) fn refreshed(&self, n: u64) {
        self.event(Event::Refreshed, n);
    }

    pub(crate) fn refresh_failures(&self, n: u64) {
        self.event(Event::RefreshFailures, n);
    }

    pub(crate) fn early_refreshes(&self, n: u64) {
        self.event(Event::EarlyRefreshes, n);
    }

    /// How long the last body the cache ran for this prefix took.
    pub(crate) fn last_fill(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.last_fill_us.load(Ordering::Relaxed))
    }

    /// How long a body the cache ran took.
    pub(crate) fn fill_time(&self, started: Instant) {
        let took = started.elapsed();
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_fill_us.store(us, Ordering::Relaxed);
        let secs = took.as_secs_f64();
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
        let outcomes = self.outcomes.each_ref().map(|c| c.load(Ordering::Relaxed));
        let events = self.events.each_ref().map(|c| c.load(Ordering::Relaxed));
        let mut counts = Counts::default();
        counts.add(&outcomes, &events);
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
    /// Background refreshes running right now (stale-while-revalidate, soft timeouts, early
    /// refreshes).
    pub refreshing: u64,
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
        c.event(Event::FailSafe, 13);
        c.refreshes(14);
        c.refreshed(15);
        c.refresh_failures(16);
        c.early_refreshes(17);
        for reason in [
            StaleReason::Revalidate,
            StaleReason::SoftTimeout,
            StaleReason::FailSafe,
            StaleReason::Throttle,
            StaleReason::Unreachable,
        ] {
            c.stale_served(reason);
        }
        let expected = Counts {
            hits: 1,
            null_hits: 2,
            near_hits: 3,
            near_null_hits: 4,
            stale: 5,
            misses: 6,
            coalesced: 7,
            bypasses: 8,
            errors: 9,
            stores: 7,
            decode_failures: 8,
            encode_failures: 9,
            oversized: 10,
            redis_errors: 11,
            invalidated: 12,
            // Three of the reasons are fail-safe ones.
            fail_safe: 16,
            refreshes: 14,
            refreshed: 15,
            refresh_failures: 16,
            early_refreshes: 17,
            stale_revalidate: 1,
            stale_soft_timeout: 1,
            stale_fail_safe: 1,
            stale_throttle: 1,
            stale_unreachable: 1,
        };
        assert_eq!(c.snapshot(), expected);
        let mut twice = expected;
        twice += expected;
        assert_eq!(twice.calls(), 90);
    }
}
