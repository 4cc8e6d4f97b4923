//! Real faults injected into a real redis-server: killed and restarted, frozen, its connection
//! black-holed or cut by a proxy, demoted to a replica. The cache never fails a call, never
//! stays off, and counts one breaker event per broken connection.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use cached_runtime::{Cache, shape::Plain};
use redis::Commands;
use tests::{
    GENEROUS_TIMEOUT, Proxy, RedisServer,
    fixtures::{policy, value},
    wait_until, wait_until_async,
};

/// Calls until one is a hit, at most `within`; returns how long that took.
async fn until_a_hit(cache: &Cache, within: Duration) -> Duration {
    let start = Instant::now();
    let runs = AtomicUsize::new(0);
    let hits = || cache.stats().total.hits;
    let before = hits();
    wait_until_async(within, || async {
        assert_eq!(value(cache, 1, &runs).await, 10, "a wrong value");
        hits() > before
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_redis_fails_no_call_and_hits_resume() {
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = server
        .cache_builder()
        .circuit_breaker(3, Duration::from_millis(200))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    for id in 0..50 {
        assert_eq!(value(&cache, id, &runs).await, id * 10);
    }

    server.kill();
    // A steady stream while Redis is gone: every call answers, with the right value.
    for round in 0..400u64 {
        let id = round % 50;
        assert_eq!(value(&cache, id, &runs).await, id * 10);
    }
    assert_eq!(
        cache.stats().total.errors,
        400,
        "every call during the outage is an error outcome"
    );
    // Failed reconnects open the circuit, traffic or not.
    wait_until(Duration::from_secs(15), || cache.stats().circuit_open).await;

    let _server = RedisServer::start_on(port);
    let took = until_a_hit(&cache, Duration::from_secs(15)).await;
    println!("first hit {took:?} after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_about_one_timeout_then_calls_skip_it() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let cache = server
        .cache_builder()
        .command_timeout(timeout)
        .circuit_breaker(3, Duration::from_secs(60))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    value(&cache, 1, &runs).await;

    server.freeze();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(value(&cache, 1, &runs).await, 10);
        worst = worst.max(t.elapsed());
    }
    let stats = cache.stats();
    server.thaw();
    assert_eq!(stats.total.errors, 20, "{stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 21);
    // Three timeouts retire the connection; the calls after that fail fast.
    assert!(stats.connections_retired >= 1, "{stats:?}");
    println!("worst call while frozen: {worst:?} (command timeout {timeout:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_retired_and_hits_resume() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.addr());
    let cache = Cache::builder(proxy.url())
        .command_timeout(Duration::from_millis(300))
        .connect_timeout(GENEROUS_TIMEOUT)
        .build()
        .await
        .expect("connect through the proxy");
    let runs = AtomicUsize::new(0);
    value(&cache, 1, &runs).await;
    assert_eq!(value(&cache, 1, &runs).await, 10);
    assert_eq!(cache.stats().total.hits, 1);

    // The connection stays open but nothing comes back: only timeouts can tell.
    proxy.blackhole();
    let took = until_a_hit(&cache, Duration::from_secs(20)).await;
    let stats = cache.stats();
    assert!(stats.connections_retired >= 1, "{stats:?}");
    assert!(proxy.connections() >= 2, "no new connection was made");
    println!("back to hits {took:?} after the connection was black-holed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_callers_on_one_dropped_connection_are_one_breaker_event() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.addr());
    let cache = Cache::builder(proxy.url())
        .command_timeout(GENEROUS_TIMEOUT)
        .connect_timeout(GENEROUS_TIMEOUT)
        .circuit_breaker(2, Duration::from_secs(60))
        .build()
        .await
        .expect("connect through the proxy");
    // Hold 64 GETs in flight on the one connection, then cut it under them.
    proxy.blackhole();
    let runs = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..64u64)
        .map(|id| {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move { value(&cache, id, &runs).await })
        })
        .collect();
    // Setup only: the 64 GETs have been written to the socket.
    wait_until(Duration::from_secs(10), || {
        proxy
            .traffic()
            .iter()
            .map(|t| t.count("GET"))
            .sum::<usize>()
            >= 64
    })
    .await;
    proxy.kill_connections();
    for (id, call) in (0..64u64).zip(calls) {
        assert_eq!(call.await.expect("no panic"), id * 10);
    }
    let stats = cache.stats();
    assert_eq!(stats.total.errors, 64, "{stats:?}");
    assert_eq!(stats.connections_retired, 1, "{stats:?}");
    assert_eq!(
        stats.circuit_opened, 0,
        "one dropped connection opened the circuit"
    );
    assert!(!stats.circuit_open);
    until_a_hit(&cache, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readonly_reply_retires_the_connection_and_stores_resume_after_promotion() {
    let primary = RedisServer::start();
    let demoted = RedisServer::start();
    let mut admin = demoted.conn();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query(&mut admin)
        .expect("REPLICAOF");
    let cache = demoted.cache().await;
    let runs = AtomicUsize::new(0);
    // Reads work on a replica; the SET of the fill is answered READONLY.
    assert_eq!(value(&cache, 1, &runs).await, 10);
    let stats = cache.stats();
    assert_eq!(stats.total.stores, 0, "{stats:?}");
    assert!(
        stats.connections_retired >= 1,
        "READONLY did not retire: {stats:?}"
    );

    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut admin)
        .expect("REPLICAOF NO ONE");
    wait_until_async(Duration::from_secs(15), || async {
        value(&cache, 2, &runs).await;
        cache.stats().total.stores > 0
    })
    .await;
    let key = cache.key("v").arg(&2u64).build().expect("key");
    let stored: Option<Vec<u8>> = admin.get(key.as_str()).expect("GET");
    assert!(stored.is_some(), "the promoted node holds no entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_repeated_reconnect_failures_and_closes_when_redis_returns() {
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = server
        .cache_builder()
        .circuit_breaker(3, Duration::from_millis(200))
        .build()
        .await
        .expect("connect");
    server.kill();
    let runs = AtomicUsize::new(0);
    // Failed reconnects in the background are events: the circuit opens without traffic.
    value(&cache, 1, &runs).await;
    wait_until(Duration::from_secs(15), || cache.stats().circuit_open).await;
    let _server = RedisServer::start_on(port);
    until_a_hit(&cache, Duration::from_secs(15)).await;
    assert!(!cache.stats().circuit_open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_outlives_the_runtime_it_was_built_on() {
    let server = RedisServer::start();
    let url = server.url();
    // Built lazily on a runtime that shuts down before its background connect ran.
    let cache = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            Cache::builder(url)
                .command_timeout(GENEROUS_TIMEOUT)
                .connect_timeout(GENEROUS_TIMEOUT)
                .build_lazy()
                .expect("lazy build")
        })
    })
    .join()
    .expect("no panic");
    until_a_hit(&cache, Duration::from_secs(15)).await;
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Cache::builder("redis://127.0.0.1:1")
        .build_lazy()
        .expect_err("no runtime");
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fill_of_one_key_never_delays_another_key() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let slow = {
        let (cache, release) = (cache.clone(), Arc::clone(&release));
        tokio::spawn(async move {
            let key = cache.key("k").arg(&"slow").build().expect("valid key");
            cache
                .get_or_fill::<Plain, u8, _>(&key, &policy("k"), async move {
                    release.notified().await;
                    1
                })
                .await
        })
    };
    let key = cache.key("k").arg(&"fast").build().expect("valid key");
    let fast = tokio::time::timeout(
        Duration::from_secs(10),
        cache.get_or_fill::<Plain, u8, _>(&key, &policy("k"), async { 2 }),
    )
    .await;
    assert_eq!(fast, Ok(2), "the other key's fill blocked this one");
    release.notify_one();
    assert_eq!(slow.await.expect("no panic"), 1);
}
