//! What the cache reports: metrics through the [`metrics`](https://docs.rs/metrics) facade,
//! and a `tracing` span per cached call.
//!
//! # Metrics
//!
//! The crate never installs a recorder: install one (an exporter such as
//! `metrics-exporter-prometheus`) in the application. It may be installed before or after the
//! cache is built; handles are registered with the recorder current where they are used, and
//! once more when a different one appears.
//!
//! Every series has a `cache` label: the name given with
//! [`CacheBuilder::name`](crate::CacheBuilder::name) (or `REDIS_CACHE_NAME`), else `default`
//! for the first cache built in the process and `default-2`, `default-3`, … for later ones,
//! so two caches never add up into one series. Labels are bounded: prefixes come from the
//! code (`#[redis_cache(prefix = …)]`, or `*` for pattern invalidations), never from key
//! arguments.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `redis_cache_requests_total` | counter | `cache`, `prefix`, `outcome`, `tier` (hits only) | cached calls by how they ended, exactly one outcome per call: `hit`, `null_hit` (a stored absence), each with `tier="near"` (the near cache) or `tier="redis"`, `stale` (a value past its TTL, within its stale window, served on purpose without running the body: stale-while-revalidate, a soft timeout, the fail-safe throttle, or the near cache while Redis cannot be read; why is in `redis_cache_stale_served_total`), `miss` (the body ran and its result was stored), `coalesced` (answered by another caller's fill), `bypass` (a `bypass`/`refresh` scope or a pending invalidation), `error` (the cache could not be read, the body ran) |
//! | `redis_cache_stores_total` | counter | `cache`, `prefix` | entries written (values and null markers) |
//! | `redis_cache_oversized_total` | counter | `cache`, `prefix` | results returned but not stored: larger than `max_value_bytes` |
//! | `redis_cache_decode_failures_total` | counter | `cache`, `prefix` | stored entries that did not decode (garbage, another version or shape), treated as misses and overwritten |
//! | `redis_cache_encode_failures_total` | counter | `cache`, `prefix` | results that could not be encoded as JSON, returned unstored |
//! | `redis_cache_redis_errors_total` | counter | `cache`, `prefix` | Redis commands of cached calls that failed, timed out or were skipped by the open circuit |
//! | `redis_cache_invalidated_keys_total` | counter | `cache`, `prefix` | keys deleted by invalidation (`prefix="*"` for pattern invalidations) |
//! | `redis_cache_fail_safe_total` | counter | `cache`, `prefix` | stale values served (within the stale window) instead of a body's error or panic, or of an unreachable Redis; the call counts its own outcome too (`miss`, `error` or `stale`) |
//! | `redis_cache_stale_served_total` | counter | `cache`, `prefix`, `reason` | stale values served (within the stale window), one per value whatever the call's outcome, by why: `revalidate` (stale-while-revalidate, refreshing in the background), `soft_timeout` (the body passed its soft timeout, or the key was being refreshed already), `fail_safe` (the body failed or panicked), `throttle` (the key throttled after a failure, the body not run), `unreachable` (Redis could not be read, the near cache kept the value); the last three add up to `redis_cache_fail_safe_total` |
//! | `redis_cache_refreshes_total` | counter | `cache`, `prefix` | background refreshes started (stale-while-revalidate, soft timeouts, early refreshes); one per key at a time across processes |
//! | `redis_cache_refreshed_total` | counter | `cache`, `prefix` | background refreshes that stored a result |
//! | `redis_cache_refresh_failures_total` | counter | `cache`, `prefix` | background refreshes whose body failed, panicked (logged) or passed its hard timeout; the entry is left as it was |
//! | `redis_cache_early_refreshes_total` | counter | `cache`, `prefix` | fresh entries refreshed before their TTL (XFetch) |
//! | `redis_cache_tag_invalidations_total` | counter | `cache` | tags invalidated by `Cache::invalidate_tags` (one per tag, whatever the number of entries) |
//! | `redis_cache_tag_rejected_total` | counter | `cache`, `prefix` | entries found in Redis but not served: stored before a tag they carry was invalidated (or its key lost), treated as misses and overwritten |
//! | `redis_cache_fill_duration_seconds` | histogram | `cache`, `prefix` | how long the function's body took when the cache ran it (miss, error, refresh): what each hit saves |
//! | `redis_cache_wait_duration_seconds` | histogram | `cache`, `prefix`, `wait` | how long a call waited for another caller's fill: `wait="flight"` in this process (single-flight), `wait="lock"` for another process holding the fill lock |
//! | `db.client.operation.duration` | histogram (seconds) | `cache`, `db.system.name="redis"`, `db.operation.name`, `error.type` (failures only) | each Redis command sent: `GET`, `SET`, `EVALSHA` (lock release), `UNLINK`, `SCAN`, `PING`; `error.type` is `timeout`, `connection` or `reply` (Redis answered with an error). A command skipped by the open circuit or without a connection is not timed |
//! | `redis_cache_circuit_state` | gauge | `cache` | the circuit breaker now: 0 closed, 1 half-open (a probe is out), 2 open (Redis skipped) |
//! | `redis_cache_circuit_transitions_total` | counter | `cache`, `to` | circuit breaker transitions into `closed`, `half_open` or `open` |
//!
//! `db.client.operation.duration` follows the OpenTelemetry database conventions; exported to
//! Prometheus with `metrics-exporter-prometheus`'s recommended naming it reads
//! `db_client_operation_duration_seconds{db_system_name="redis",db_operation_name="GET",…}`
//! (without it, the `_seconds` suffix is not added). The other names are final Prometheus
//! names either way.
//!
//! The hit ratio of a prefix is `requests_total{outcome=~"hit|null_hit|stale|coalesced"}` over all
//! of its `requests_total`; [`Counts::hit_ratio`](crate::Counts::hit_ratio) computes the same
//! from [`Cache::stats`](crate::Cache::stats).
//!
//! The `SET` of a fill whose result the near cache keeps travels on the tracking connection
//! and is not timed in `db.client.operation.duration`; neither are the tracking connections'
//! `ROLE` heartbeats.
//!
//! Hits and null hits carry a `tier` label: `near` when the near cache answered (no Redis
//! command), `redis` otherwise; summing over it gives all hits. The near cache's own state is
//! in [`Cache::stats`](crate::Cache::stats) (`near`).
//!
//! Histograms are recorded in seconds. [`LATENCY_BUCKETS`] suit Redis commands on a local
//! network (tens of microseconds up to the command timeout); [`FILL_BUCKETS`] suit bodies
//! (database queries and computations). [`HISTOGRAM_BUCKETS`] pairs each histogram with its
//! preset, for an exporter's per-metric buckets (the demo's `demo-app/src/metrics.rs` sets
//! up `metrics-exporter-prometheus` this way).
//!
//! # Tracing
//!
//! Each cached call runs in a `cache.get` span at debug level (target `cached_runtime`), with
//! the body inside it, so the body's own spans nest under it. Its fields: `cache`, `prefix`,
//! `key` (the prefix and a hash of the key, never the argument values, which may be personal
//! data), `outcome` (as in `redis_cache_requests_total`) and `redis_ms`, the latency of the
//! `GET` when one ran. The full key is logged at trace level only, and passwords never.
//! Warnings while Redis is failing are rate-limited (one per 10 s, with the number
//! suppressed).

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};

/// Cached calls by outcome: counter, labels `cache`, `prefix`, `outcome`.
pub const REQUESTS: &str = "redis_cache_requests_total";
/// Entries written: counter, labels `cache`, `prefix`.
pub const STORES: &str = "redis_cache_stores_total";
/// Results not stored for their size: counter, labels `cache`, `prefix`.
pub const OVERSIZED: &str = "redis_cache_oversized_total";
/// Entries that did not decode: counter, labels `cache`, `prefix`.
pub const DECODE_FAILURES: &str = "redis_cache_decode_failures_total";
/// Results that could not be encoded: counter, labels `cache`, `prefix`.
pub const ENCODE_FAILURES: &str = "redis_cache_encode_failures_total";
/// Redis commands of cached calls that failed: counter, labels `cache`, `prefix`.
pub const REDIS_ERRORS: &str = "redis_cache_redis_errors_total";
/// Keys deleted by invalidation: counter, labels `cache`, `prefix`.
pub const INVALIDATED_KEYS: &str = "redis_cache_invalidated_keys_total";
/// Stale values served instead of an error (fail-safe): counter, labels `cache`, `prefix`.
pub const FAIL_SAFE: &str = "redis_cache_fail_safe_total";
/// Stale values served, by why: counter, labels `cache`, `prefix`, `reason`.
pub const STALE_SERVED: &str = "redis_cache_stale_served_total";
/// Background refreshes started: counter, labels `cache`, `prefix`.
pub const REFRESHES: &str = "redis_cache_refreshes_total";
/// Background refreshes that stored a result: counter, labels `cache`, `prefix`.
pub const REFRESHED: &str = "redis_cache_refreshed_total";
/// Background refreshes that failed, panicked or were abandoned: counter, labels `cache`,
/// `prefix`.
pub const REFRESH_FAILURES: &str = "redis_cache_refresh_failures_total";
/// Early refreshes of fresh entries (XFetch): counter, labels `cache`, `prefix`.
pub const EARLY_REFRESHES: &str = "redis_cache_early_refreshes_total";
/// Tags invalidated (`Cache::invalidate_tags`, one per tag): counter, labels `cache`.
pub const TAG_INVALIDATIONS: &str = "redis_cache_tag_invalidations_total";
/// Entries found but not served, a tag they carry being invalidated: counter, labels
/// `cache`, `prefix`.
pub const TAG_REJECTED: &str = "redis_cache_tag_rejected_total";
/// Body run time: histogram in seconds, labels `cache`, `prefix`.
pub const FILL_DURATION: &str = "redis_cache_fill_duration_seconds";
/// Time spent waiting for another caller's fill: histogram in seconds, labels `cache`,
/// `prefix`, `wait`.
pub const WAIT_DURATION: &str = "redis_cache_wait_duration_seconds";
/// Redis command latency (OpenTelemetry's name): histogram in seconds, labels `cache`,
/// `db.system.name`, `db.operation.name`, `error.type`.
pub const OPERATION_DURATION: &str = "db.client.operation.duration";
/// The circuit breaker's state: gauge, label `cache`.
pub const CIRCUIT_STATE: &str = "redis_cache_circuit_state";
/// Circuit breaker transitions: counter, labels `cache`, `to`.
pub const CIRCUIT_TRANSITIONS: &str = "redis_cache_circuit_transitions_total";

/// Bucket bounds (seconds) for Redis command latencies: 50 µs to 1 s, dense below a
/// millisecond, where a healthy Redis answers, so a quantile there is not smeared over a wide
/// bucket; the command timeout (250 ms by default) is a bound too.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Bucket bounds (seconds) for bodies and waits for them: 100 µs to 10 s.
pub const FILL_BUCKETS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Each histogram's name with the bucket preset that suits it.
pub const HISTOGRAM_BUCKETS: [(&str, &[f64]); 3] = [
    (OPERATION_DURATION, LATENCY_BUCKETS),
    (FILL_DURATION, FILL_BUCKETS),
    (WAIT_DURATION, FILL_BUCKETS),
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Handles registered with the recorder current where they are first used, and again (once)
/// when a different recorder is current: the usual case is none at build time and the
/// application's installed later. A third recorder (thread-local ones in tests) gets fresh
/// handles on every use.
pub(crate) struct Lazy<H> {
    slots: [OnceLock<(usize, H)>; 2],
}

impl<H> Lazy<H> {
    pub(crate) const fn new() -> Self {
        Self {
            slots: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Runs `f` on the handles of the current recorder, registering them with `register`
    /// first when needed.
    #[inline]
    pub(crate) fn with<T>(
        &self,
        register: impl Fn(&dyn Recorder) -> H,
        f: impl FnOnce(&H) -> T,
    ) -> T {
        metrics::with_recorder(|recorder| {
            // The recorder's address tells recorders apart: the global one never moves.
            let id = std::ptr::from_ref(recorder).cast::<()>().addr();
            for slot in &self.slots {
                let (owner, handles) = slot.get_or_init(|| (id, register(recorder)));
                if *owner == id {
                    return f(handles);
                }
            }
            f(&register(recorder))
        })
    }
}

pub(crate) fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

pub(crate) fn counter(r: &dyn Recorder, name: &'static str, labels: Vec<Label>) -> Counter {
    r.register_counter(&key(name, labels), &METADATA)
}

pub(crate) fn histogram(r: &dyn Recorder, name: &'static str, labels: Vec<Label>) -> Histogram {
    r.register_histogram(&key(name, labels), &METADATA)
}

/// Units and help texts, sent to a recorder whenever handles are registered with it.
pub(crate) fn describe(r: &dyn Recorder) {
    let counters: [(&'static str, &'static str); 14] = [
        (
            REQUESTS,
            "Cached calls by outcome: hit, null_hit, stale, miss, coalesced, bypass, error.",
        ),
        (
            FAIL_SAFE,
            "Stale values served instead of a failing body or an unreachable Redis.",
        ),
        (
            STALE_SERVED,
            "Stale values served, by reason: revalidate, soft_timeout, fail_safe, throttle, unreachable.",
        ),
        (REFRESHES, "Background refreshes started."),
        (REFRESHED, "Background refreshes that stored a result."),
        (
            REFRESH_FAILURES,
            "Background refreshes that failed, panicked or were abandoned.",
        ),
        (
            EARLY_REFRESHES,
            "Early refreshes of entries about to expire.",
        ),
        (STORES, "Cache entries written."),
        (
            OVERSIZED,
            "Results not stored: larger than max_value_bytes.",
        ),
        (
            DECODE_FAILURES,
            "Cache entries that did not decode, treated as misses.",
        ),
        (
            ENCODE_FAILURES,
            "Results that could not be encoded, returned unstored.",
        ),
        (
            REDIS_ERRORS,
            "Redis commands of cached calls that failed, timed out or were skipped.",
        ),
        (INVALIDATED_KEYS, "Cache keys deleted by invalidation."),
        (
            CIRCUIT_TRANSITIONS,
            "Circuit breaker transitions, by the state entered.",
        ),
    ];
    for (name, help) in counters {
        r.describe_counter(
            KeyName::from_const_str(name),
            Some(Unit::Count),
            SharedString::const_str(help),
        );
    }
    let histograms: [(&'static str, &'static str); 3] = [
        (
            FILL_DURATION,
            "Time the cached function's body took when the cache ran it.",
        ),
        (
            WAIT_DURATION,
            "Time a cached call waited for another caller's fill.",
        ),
        (OPERATION_DURATION, "Duration of Redis commands."),
    ];
    for (name, help) in histograms {
        r.describe_histogram(
            KeyName::from_const_str(name),
            Some(Unit::Seconds),
            SharedString::const_str(help),
        );
    }
    r.describe_gauge(
        KeyName::from_const_str(CIRCUIT_STATE),
        None,
        SharedString::const_str("Circuit breaker state: 0 closed, 1 half-open, 2 open."),
    );
}

/// A Redis command, as `db.operation.name` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    /// `SET … EX`: a value or null marker, or a write-through.
    Set,
    /// `SET … NX PX`: taking the fill lock.
    Lock,
    /// The lock's compare-and-delete script.
    Unlock,
    Unlink,
    Scan,
    Ping,
    /// `CLUSTER SLOTS`: which primary owns which slots, read around a cluster-wide scan.
    Cluster,
    /// A script (`EVALSHA`).
    Eval,
    /// A pipeline of several commands in one round trip.
    Pipeline,
    /// `DEL`.
    Del,
    /// Any other command sent through [`Redis::query`](crate::connection::Redis::query):
    /// labelled `OTHER`, so the label stays bounded whatever users send.
    Other,
}

impl Op {
    const COUNT: usize = 12;

    const fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Set | Op::Lock => "SET",
            Op::Unlock | Op::Eval => "EVALSHA",
            Op::Unlink => "UNLINK",
            Op::Scan => "SCAN",
            Op::Ping => "PING",
            Op::Cluster => "CLUSTER",
            Op::Pipeline => "PIPELINE",
            Op::Del => "DEL",
            Op::Other => "OTHER",
        }
    }

    /// The operation a command is timed as, by its name.
    pub(crate) fn of(cmd: &redis::Cmd) -> Self {
        let name = match cmd.args_iter().next() {
            Some(redis::Arg::Simple(name)) => name,
            _ => return Op::Other,
        };
        const KNOWN: [(&[u8], Op); 9] = [
            (b"GET", Op::Get),
            (b"SET", Op::Set),
            (b"EVALSHA", Op::Eval),
            (b"UNLINK", Op::Unlink),
            (b"SCAN", Op::Scan),
            (b"PING", Op::Ping),
            (b"CLUSTER", Op::Cluster),
            (b"DEL", Op::Del),
            (b"EVAL", Op::Eval),
        ];
        KNOWN
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Op::Other, |(_, op)| *op)
    }
}

/// How a command sent to Redis ended, as `error.type` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpResult {
    Ok,
    /// Redis answered with an error.
    Reply,
    Timeout,
    /// The connection broke.
    Connection,
}

impl OpResult {
    const COUNT: usize = 4;

    const fn error_type(self) -> Option<&'static str> {
        match self {
            OpResult::Ok => None,
            OpResult::Reply => Some("reply"),
            OpResult::Timeout => Some("timeout"),
            OpResult::Connection => Some("connection"),
        }
    }
}

/// The circuit breaker's state, as `redis_cache_circuit_state` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Circuit {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl Circuit {
    const ALL: [Circuit; 3] = [Circuit::Closed, Circuit::HalfOpen, Circuit::Open];

    const fn label(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::HalfOpen => "half_open",
            Circuit::Open => "open",
        }
    }
}

struct CircuitHandles {
    state: Gauge,
    transitions: [Counter; 3],
}

/// The series of one cache that are not per prefix: Redis command latency and the circuit
/// breaker.
pub(crate) struct CacheMetrics {
    name: SharedString,
    ops: [[Lazy<Histogram>; OpResult::COUNT]; Op::COUNT],
    circuit: Lazy<CircuitHandles>,
    /// The breaker's state, so a recorder that appears later starts from it.
    state: AtomicU8,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics")
            .field("name", &&*self.name)
            .finish_non_exhaustive()
    }
}

impl CacheMetrics {
    pub(crate) fn new(name: SharedString) -> Self {
        let metrics = Self {
            name,
            ops: std::array::from_fn(|_| std::array::from_fn(|_| Lazy::new())),
            circuit: Lazy::new(),
            state: AtomicU8::new(Circuit::Closed as u8),
        };
        // Registered now, so the gauge reads "closed" from the start.
        metrics.with_circuit(|_| ());
        metrics
    }

    /// The `cache` label.
    pub(crate) fn name(&self) -> &SharedString {
        &self.name
    }

    /// The circuit state last reported.
    #[cfg(test)]
    pub(crate) fn circuit_state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    fn with_circuit<T>(&self, f: impl FnOnce(&CircuitHandles) -> T) -> T {
        self.circuit.with(
            |r| {
                describe(r);
                let cache = || vec![Label::new("cache", self.name.clone())];
                let state = r.register_gauge(&key(CIRCUIT_STATE, cache()), &METADATA);
                state.set(f64::from(self.state.load(Ordering::Relaxed)));
                CircuitHandles {
                    state,
                    transitions: Circuit::ALL.map(|to| {
                        let mut labels = cache();
                        labels.push(Label::from_static_parts("to", to.label()));
                        counter(r, CIRCUIT_TRANSITIONS, labels)
                    }),
                }
            },
            f,
        )
    }

    /// The circuit breaker moved to `to`; reporting the state it is in already is a no-op.
    pub(crate) fn circuit(&self, to: Circuit) {
        if self.state.swap(to as u8, Ordering::Relaxed) == to as u8 {
            return;
        }
        self.with_circuit(|h| {
            h.transitions[to as usize].increment(1);
            h.state.set(f64::from(to as u8));
        });
    }

    /// One Redis command that was sent, and how it ended.
    pub(crate) fn operation(&self, op: Op, result: OpResult, took: Duration) {
        self.ops[op as usize][result as usize].with(
            |r| {
                // A new recorder also learns the breaker's state now, not at its next change.
                self.with_circuit(|_| ());
                let mut labels = vec![
                    Label::new("cache", self.name.clone()),
                    Label::from_static_parts("db.system.name", "redis"),
                    Label::from_static_parts("db.operation.name", op.name()),
                ];
                if let Some(error) = result.error_type() {
                    labels.push(Label::from_static_parts("error.type", error));
                }
                histogram(r, OPERATION_DURATION, labels)
            },
            |h| h.record(took.as_secs_f64()),
        );
    }
}

/// The `cache` label of a cache built without a name: `default`, then `default-2`, ….
pub(crate) fn cache_name(given: Option<&str>) -> SharedString {
    static UNNAMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    match given {
        Some(name) => SharedString::from_owned(name.to_owned()),
        None => match UNNAMED.fetch_add(1, Ordering::Relaxed) {
            1 => SharedString::const_str("default"),
            n => SharedString::from_owned(format!("default-{n}")),
        },
    }
}

/// Starts timing for a span field, only when the span is recorded.
#[inline]
pub(crate) fn span_timer(span: &tracing::Span) -> Option<Instant> {
    (!span.is_disabled()).then(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_sorted_and_cover_their_ranges() {
        for (name, buckets) in HISTOGRAM_BUCKETS {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
        assert!(LATENCY_BUCKETS[0] <= 0.000_1, "sub-millisecond resolution");
        assert!(
            *LATENCY_BUCKETS.last().unwrap_or(&0.0) >= 0.25,
            "the default timeout"
        );
    }

    #[test]
    fn unnamed_caches_get_distinct_names() {
        let a = cache_name(None);
        let b = cache_name(None);
        assert_ne!(a, b);
        assert_eq!(&*cache_name(Some("catalog")), "catalog");
    }
}
