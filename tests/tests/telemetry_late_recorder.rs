//! A recorder installed after the cache was built (and used) still receives: alone in its
//! binary, because the global recorder can be installed once per process.

use std::sync::atomic::AtomicUsize;

use cached_runtime::telemetry;
use tests::{RedisServer, fixtures::value, recorder::TestRecorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_installed_after_the_cache_was_built_receives() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .name("late")
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    // Without a recorder: counted in `stats()`, not reported anywhere.
    value(&cache, 1, &runs).await;

    let r = TestRecorder::global();
    value(&cache, 1, &runs).await;
    value(&cache, 1, &runs).await;
    let requests = |outcome: &str| {
        r.counter(
            telemetry::REQUESTS,
            &[("cache", "late"), ("prefix", "v"), ("outcome", outcome)],
        )
    };
    let hits = r.counter(
        telemetry::REQUESTS,
        &[
            ("cache", "late"),
            ("prefix", "v"),
            ("outcome", "hit"),
            ("tier", "redis"),
        ],
    );
    assert_eq!(hits, Some(2));
    assert_eq!(
        requests("miss"),
        Some(0),
        "the miss happened before the recorder"
    );
    let get = [
        ("cache", "late"),
        ("db.system.name", "redis"),
        ("db.operation.name", "GET"),
    ];
    let timed = r.histogram(telemetry::OPERATION_DURATION, &get);
    assert_eq!(timed.map(|v| v.len()), Some(2));
    assert_eq!(
        r.gauge(telemetry::CIRCUIT_STATE, &[("cache", "late")]),
        Some(0.0),
        "the breaker's state reaches the new recorder with the first command"
    );
    assert_eq!(
        r.unit(telemetry::FILL_DURATION),
        Some(Some(metrics::Unit::Seconds))
    );
    // The cache's own counters saw everything.
    let v = &cache.stats().prefixes["v"];
    assert_eq!((v.misses, v.hits), (1, 2));
}
