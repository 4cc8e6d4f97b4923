//! What a cache reports: exact metric values read through a test recorder installed for this
//! binary (each test's caches have their own `cache` label, so tests running in parallel do
//! not mix), and the `cache.get` span of each call.

use std::{
    io::Write,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicUsize},
    time::Duration,
};

use cached_runtime::{
    Policy,
    shape::{Optional, Plain},
    telemetry,
};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{policy, value},
    recorder::{Labels, TestRecorder},
    wait_until,
};

/// Every label the crate may put on a series.
const KNOWN_LABELS: [&str; 8] = [
    "cache",
    "prefix",
    "outcome",
    "wait",
    "to",
    "db.system.name",
    "db.operation.name",
    "error.type",
];

fn requests(r: &TestRecorder, cache: &str, prefix: &str, outcome: &str) -> Option<u64> {
    r.counter(
        telemetry::REQUESTS,
        &[("cache", cache), ("prefix", prefix), ("outcome", outcome)],
    )
}

fn count(r: &TestRecorder, name: &str, labels: Labels<'_>) -> usize {
    r.histogram(name, labels).map_or(0, |v| v.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_reports_exact_values_through_the_recorder() {
    let r = TestRecorder::global();
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder()
        .name("scripted")
        .circuit_breaker(0, Duration::from_secs(1))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    // v: miss, hit
    value(&cache, 1, &runs).await;
    value(&cache, 1, &runs).await;
    // o: miss (stores the null marker), null hit
    let absent = cache.key("o").arg(&1u8).build().expect("key");
    for _ in 0..2 {
        let got = cache
            .get_or_fill::<Optional, Option<u64>, _>(&absent, &policy("o"), async { None })
            .await;
        assert_eq!(got, None);
    }
    // v: a corrupt entry, a decode failure and a miss
    let corrupt = cache.key("v").arg(&2u64).build().expect("key");
    let _: () = server.conn().set(corrupt.as_str(), "garbage").expect("SET");
    assert_eq!(value(&cache, 2, &runs).await, 20);
    // c: a leader that waits for its follower, and the follower (coalesced)
    let key = cache.key("c").arg(&1u8).build().expect("key");
    let leader = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            let waiting = cache.clone();
            cache
                .get_or_fill::<Plain, u64, _>(&key, &policy("c"), async move {
                    wait_until(Duration::from_secs(10), || waiting.stats().waiting == 1).await;
                    9
                })
                .await
        })
    };
    wait_until(Duration::from_secs(10), || {
        requests(r, "scripted", "c", "miss") == Some(1)
    })
    .await;
    let follower = cache
        .get_or_fill::<Plain, u64, _>(&key, &policy("c"), async { unreachable!() })
        .await;
    assert_eq!((leader.await.expect("no panic"), follower), (9, 9));
    // v: bypass
    cached_runtime::bypass(value(&cache, 1, &runs)).await;
    // v: Redis gone, an error
    server.kill();
    assert_eq!(value(&cache, 3, &runs).await, 30);

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
    let probing = async {
        loop {
            value(&cache, 1, &runs).await;
            if !cache.stats().circuit_open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), probing)
        .await
        .expect("the circuit closes once Redis is back");
    assert_eq!(state(), Some(0.0));
    assert_eq!(transitions("closed"), 1);
    assert!(transitions("half_open") >= 1);
    assert!(consistent());
}

/// A `Write` into a shared buffer, for a subscriber's output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

fn subscriber(level: tracing::Level, out: &Captured) -> impl tracing::Subscriber + Send + Sync {
    let out = out.clone();
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || out.clone())
        .finish()
}

#[tokio::test]
async fn each_call_has_a_debug_span_with_its_outcome_and_no_argument_values() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .name("spans")
        .build()
        .await
        .expect("connect");
    let policy = Policy::new("user", Duration::from_secs(60)).expect("policy");
    let email = "alice.personal@example.com";
    let key = cache.key("user").arg(email).build().expect("key");
    let call = || {
        cache.get_or_fill::<Plain, u64, _>(&key, &policy, async {
            tracing::info!("body ran");
            7
        })
    };

    let debug = Captured::default();
    {
        let _guard = tracing::subscriber::set_default(subscriber(tracing::Level::DEBUG, &debug));
        assert_eq!(call().await, 7);
        assert_eq!(call().await, 7);
        // A corrupt entry: its debug log names the key by hash too.
        let _: () = server.conn().set(key.as_str(), "garbage").expect("SET");
        assert_eq!(call().await, 7);
    }
    let out = debug.text();
    let spans: Vec<&str> = out.lines().filter(|l| l.contains("cache.get{")).collect();
    assert_eq!(
        spans.iter().filter(|l| l.contains("close")).count(),
        3,
        "{out}"
    );
    for outcome in ["miss", "hit"] {
        assert!(
            spans
                .iter()
                .any(|l| l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("cache=\"spans\"")
                    && l.contains("prefix=\"user\"")
                    && l.contains("redis_ms=")),
            "no {outcome} span with its fields in:\n{out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.contains("body ran") && l.contains("cache.get{")),
        "the body runs inside the span:\n{out}"
    );
    assert!(
        out.contains("key=user#"),
        "keys appear as prefix#hash:\n{out}"
    );
    assert!(out.contains("unusable cache entry"), "{out}");
    assert!(
        !out.contains(email) && !out.contains("alice"),
        "an argument value leaked at debug:\n{out}"
    );

    // The full key is for trace level only.
    let trace = Captured::default();
    {
        let _guard = tracing::subscriber::set_default(subscriber(tracing::Level::TRACE, &trace));
        let _: () = server.conn().set(key.as_str(), "garbage").expect("SET");
        assert_eq!(call().await, 7);
    }
    assert!(trace.text().contains("alice.personal"), "{}", trace.text());
}
