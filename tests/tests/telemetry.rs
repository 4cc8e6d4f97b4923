//! What a cache reports: exact metric values read through a test recorder installed for this
//! binary (each test's caches have their own `cache` label, so tests running in parallel do
//! not mix), and the dashboard's queries. The spans are in `telemetry_spans.rs`.

use std::{sync::atomic::AtomicUsize, time::Duration};

use cached_runtime::telemetry;
use tests::{
    RedisServer,
    fixtures::{Scripted, scripted_outcomes, value},
    recorder::{Labels, TestRecorder},
    wait_until, wait_until_async,
};

/// Every label the crate may put on a series.
const KNOWN_LABELS: [&str; 10] = [
    "cache",
    "prefix",
    "outcome",
    "tier",
    "reason",
    "wait",
    "to",
    "db.system.name",
    "db.operation.name",
    "error.type",
];

/// Calls of `prefix` that ended in `outcome`; hits are those Redis answered (no near cache
/// here: its hits are `tier="near"`).
fn requests(r: &TestRecorder, cache: &str, prefix: &str, outcome: &str) -> Option<u64> {
    let mut labels = vec![("cache", cache), ("prefix", prefix), ("outcome", outcome)];
    if matches!(outcome, "hit" | "null_hit") {
        labels.push(("tier", "redis"));
    }
    r.counter(telemetry::REQUESTS, &labels)
}

fn count(r: &TestRecorder, name: &str, labels: Labels<'_>) -> usize {
    r.histogram(name, labels).map_or(0, |v| v.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_reports_exact_values_through_the_recorder() {
    let r = TestRecorder::global();
    let mut server = RedisServer::start();
    let Scripted { cache, .. } = scripted_outcomes(&mut server, "scripted").await;
    assert_eq!(cache.name(), "scripted");

    for (prefix, outcome, n) in [
        ("v", "hit", 1),
        ("v", "null_hit", 0),
        ("v", "miss", 2),
        ("v", "coalesced", 0),
        ("v", "bypass", 1),
        ("v", "error", 1),
        ("o", "miss", 1),
        ("o", "null_hit", 1),
        ("o", "hit", 0),
        ("c", "miss", 1),
        ("c", "coalesced", 1),
    ] {
        assert_eq!(
            requests(r, "scripted", prefix, outcome),
            Some(n),
            "{prefix} {outcome}"
        );
    }
    let v = [("cache", "scripted"), ("prefix", "v")];
    let c = [("cache", "scripted"), ("prefix", "c")];
    assert_eq!(r.counter(telemetry::STORES, &v), Some(2));
    assert_eq!(r.counter(telemetry::DECODE_FAILURES, &v), Some(1));
    assert_eq!(r.counter(telemetry::REDIS_ERRORS, &v), Some(1));
    assert_eq!(r.counter(telemetry::OVERSIZED, &v), Some(0));
    assert_eq!(r.counter(telemetry::ENCODE_FAILURES, &v), Some(0));
    assert_eq!(
        r.counter(telemetry::STORES, &[("cache", "scripted"), ("prefix", "o")]),
        Some(1)
    );
    // Bodies the cache ran: two misses and the error (not the bypass), and the leader.
    assert_eq!(count(r, telemetry::FILL_DURATION, &v), 3);
    assert_eq!(count(r, telemetry::FILL_DURATION, &c), 1);
    let flight_wait = [("cache", "scripted"), ("prefix", "c"), ("wait", "flight")];
    assert_eq!(count(r, telemetry::WAIT_DURATION, &flight_wait), 1);
    // GETs answered: v 3 (the bypass sent none), o 2, c 2; SETs: the four stores.
    let op = |name: &'static str| {
        [
            ("cache", "scripted"),
            ("db.system.name", "redis"),
            ("db.operation.name", name),
        ]
    };
    assert_eq!(count(r, telemetry::OPERATION_DURATION, &op("GET")), 7);
    assert_eq!(count(r, telemetry::OPERATION_DURATION, &op("SET")), 4);
    // The GET after the kill failed: timed once, with its error type.
    let failed: usize = ["timeout", "connection", "reply"]
        .iter()
        .map(|e| {
            let mut labels = op("GET").to_vec();
            labels.push(("error.type", e));
            count(r, telemetry::OPERATION_DURATION, &labels)
        })
        .sum();
    assert_eq!(failed, 1);
    let latencies = r
        .histogram(telemetry::OPERATION_DURATION, &op("GET"))
        .expect("GET timed");
    assert!(
        latencies.iter().all(|s| (0.0..5.0).contains(s)),
        "seconds: {latencies:?}"
    );
    assert_eq!(
        r.gauge(telemetry::CIRCUIT_STATE, &[("cache", "scripted")]),
        Some(0.0),
        "the breaker is off: closed"
    );

    // Bounded labels: prefixes and fixed values only, never an argument of a key.
    for (name, labels) in r.all_series(&[("cache", "scripted")]) {
        for (k, v) in &labels {
            assert!(KNOWN_LABELS.contains(&k.as_str()), "{name}: label {k}");
            if k == "prefix" {
                assert!(["v", "o", "c"].contains(&v.as_str()), "{name}: prefix {v}");
            }
        }
    }
    assert_eq!(
        r.unit(telemetry::FILL_DURATION),
        Some(Some(metrics::Unit::Seconds))
    );
    assert_eq!(
        r.unit(telemetry::OPERATION_DURATION),
        Some(Some(metrics::Unit::Seconds))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_caches_report_apart() {
    let r = TestRecorder::global();
    let server = RedisServer::start();
    let first = server.cache().await;
    let second = server
        .cache_builder()
        .namespace("two:")
        .build()
        .await
        .expect("connect");
    assert_ne!(
        first.name(),
        second.name(),
        "unnamed caches get distinct names"
    );
    let runs = AtomicUsize::new(0);
    value(&first, 1, &runs).await;
    value(&first, 1, &runs).await;
    value(&second, 1, &runs).await;
    assert_eq!(requests(r, first.name(), "v", "hit"), Some(1));
    assert_eq!(requests(r, first.name(), "v", "miss"), Some(1));
    assert_eq!(requests(r, second.name(), "v", "hit"), Some(0));
    assert_eq!(requests(r, second.name(), "v", "miss"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_reports_its_state_and_every_transition() {
    let r = TestRecorder::global();
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = server
        .cache_builder()
        .name("breaker")
        .circuit_breaker(1, Duration::from_millis(200))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    let state = || r.gauge(telemetry::CIRCUIT_STATE, &[("cache", "breaker")]);
    let transitions = |to: &str| {
        r.counter(
            telemetry::CIRCUIT_TRANSITIONS,
            &[("cache", "breaker"), ("to", to)],
        )
        .unwrap_or(0)
    };
    value(&cache, 1, &runs).await;
    assert_eq!(state(), Some(0.0));
    assert_eq!(transitions("open"), 0);

    // Every probe goes half-open, then closes the circuit or opens it again.
    let consistent = || transitions("open") == 1 + transitions("half_open") - transitions("closed");

    server.kill();
    // The first failed command (or reconnect) is one event: the circuit opens.
    value(&cache, 1, &runs).await;
    wait_until(Duration::from_secs(10), || cache.stats().circuit_open).await;
    assert_eq!(state(), Some(2.0));
    assert!(transitions("open") >= 1);
    assert_eq!(transitions("closed"), 0);
    assert!(consistent());

    let _server = RedisServer::start_on(port);
    // Calls probe the circuit; it closes once Redis is back.
    wait_until_async(Duration::from_secs(30), || async {
        value(&cache, 1, &runs).await;
        !cache.stats().circuit_open
    })
    .await;
    assert_eq!(state(), Some(0.0));
    assert_eq!(transitions("closed"), 1);
    assert!(transitions("half_open") >= 1);
    assert!(consistent());
}

#[test]
fn the_dashboard_queries_only_series_the_cache_reports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    // The names as Prometheus shows them (recommended naming: the unit suffix on the one
    // OpenTelemetry name), with a histogram's series suffixes.
    let histograms = [
        "db_client_operation_duration_seconds",
        telemetry::FILL_DURATION,
        telemetry::WAIT_DURATION,
    ];
    let mut known: Vec<String> = [
        telemetry::REQUESTS,
        telemetry::STORES,
        telemetry::OVERSIZED,
        telemetry::DECODE_FAILURES,
        telemetry::ENCODE_FAILURES,
        telemetry::REDIS_ERRORS,
        telemetry::INVALIDATED_KEYS,
        telemetry::FAIL_SAFE,
        telemetry::STALE_SERVED,
        telemetry::REFRESHES,
        telemetry::REFRESHED,
        telemetry::REFRESH_FAILURES,
        telemetry::EARLY_REFRESHES,
        telemetry::CIRCUIT_STATE,
        telemetry::CIRCUIT_TRANSITIONS,
    ]
    .map(str::to_owned)
    .to_vec();
    for h in histograms {
        known.extend(["_bucket", "_count", "_sum"].map(|s| format!("{h}{s}")));
    }
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if token.starts_with("redis_cache_") || token.starts_with("db_client_") {
                assert!(
                    known.iter().any(|k| k == token),
                    "unknown series {token} in {expr}"
                );
                used.insert(token);
            }
        }
    }
    // What the dashboard is for: hit ratio, latency percentiles, errors, breaker state.
    for needed in [
        "redis_cache_requests_total",
        "db_client_operation_duration_seconds_bucket",
        "redis_cache_fill_duration_seconds_bucket",
        "redis_cache_circuit_state",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}
