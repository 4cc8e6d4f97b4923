//! Stampede protection: concurrent misses of one key run the body once, in one process and,
//! with a lock, across processes, and above all when Redis is down.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{
    Cache,
    shape::{Fallible, Plain},
};
use redis::Commands;
use tests::{
    GENEROUS_TIMEOUT, RedisServer,
    fixtures::{policy, value},
    free_port, wait_until,
};

/// `n` concurrent calls of one cold key whose body waits until the other `n - 1` callers are
/// waiting for it; returns the values and how often the body ran.
async fn stampede(cache: &Cache, n: usize) -> (Vec<u64>, usize) {
    let runs = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                let key = cache.key("s").arg(&1u8).build().expect("valid key");
                let waiting = cache.clone();
                cache
                    .get_or_fill::<Plain, u64, _>(&key, &policy("s"), async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let others = n as u64 - 1;
                        wait_until(Duration::from_secs(20), || {
                            waiting.stats().waiting == others
                        })
                        .await;
                        42
                    })
                    .await
            })
        })
        .collect();
    let mut values = Vec::new();
    for call in calls {
        values.push(call.await.expect("no panic"));
    }
    (values, runs.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_cold_calls_run_the_body_once() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let (values, runs) = stampede(&cache, 500).await;
    assert!(values.iter().all(|v| *v == 42));
    assert_eq!(runs, 1);
    let stats = cache.stats().total;
    assert_eq!(
        (stats.misses, stats.coalesced, stats.calls()),
        (1, 499, 500)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_two_hundred_concurrent_calls_of_one_key_run_the_body_once() {
    // Nothing listens on this port: every GET fails.
    let cache = Cache::builder(format!("redis://127.0.0.1:{}", free_port()))
        .connect_timeout(GENEROUS_TIMEOUT)
        .build_lazy()
        .expect("lazy build");
    let (values, runs) = stampede(&cache, 200).await;
    assert!(values.iter().all(|v| *v == 42));
    assert_eq!(runs, 1, "the outage multiplied the load");
    let stats = cache.stats().total;
    assert_eq!((stats.errors, stats.coalesced), (1, 199), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_circuit_open_concurrent_calls_of_one_key_run_the_body_once() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder()
        .circuit_breaker(1, Duration::from_secs(600))
        .build()
        .await
        .expect("connect");
    server.kill();
    let runs = AtomicUsize::new(0);
    value(&cache, 1, &runs).await;
    wait_until(Duration::from_secs(15), || cache.stats().circuit_open).await;
    let (values, runs) = stampede(&cache, 200).await;
    assert!(values.iter().all(|v| *v == 42));
    assert_eq!(runs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_distinct_keys_send_one_get_each() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .expect("CONFIG RESETSTAT");
    let runs = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..2048u64)
        .map(|id| {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move { value(&cache, id, &runs).await })
        })
        .collect();
    for (id, call) in (0..2048u64).zip(calls) {
        assert_eq!(call.await.expect("no panic"), id * 10);
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("INFO");
    let calls_of = |cmd: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(calls_of("get"), 2048, "{info}");
    assert_eq!(calls_of("set"), 2048, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_makes_independent_caches_run_the_body_once() {
    let server = RedisServer::start();
    let caches = [
        server.cache().await,
        server.cache().await,
        server.cache().await,
    ];
    let locked = Arc::new(
        policy("l")
            .lock(Duration::from_secs(10))
            .expect("valid lock"),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for i in 0..150 {
        let cache = caches[i % caches.len()].clone();
        let (locked, runs) = (Arc::clone(&locked), Arc::clone(&runs));
        calls.push(tokio::spawn(async move {
            let key = cache.key("l").arg(&1u8).build().expect("valid key");
            cache
                .get_or_fill::<Fallible, Result<u64, String>, _>(&key, &locked, async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Long enough that the other caches see the lock held.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(99)
                })
                .await
        }));
    }
    for call in calls {
        assert_eq!(call.await.expect("no panic"), Ok(99));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let key = caches[0].key("l").arg(&1u8).build().expect("valid key");
    let mut conn = server.conn();
    let lock_left: bool = conn.exists(key.lock_key()).expect("EXISTS");
    assert!(!lock_left, "the owner did not release its lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lock_holder_blocks_others_no_longer_than_the_lock_ttl() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.conn();
    let key = cache.key("l").arg(&1u8).build().expect("valid key");
    // A holder that took the lock and died: nobody will release it.
    let _: () = redis::cmd("SET")
        .arg(key.lock_key())
        .arg("dead-holder")
        .arg("PX")
        .arg(300)
        .query(&mut conn)
        .expect("SET");
    let locked = policy("l").lock(Duration::from_millis(300)).expect("valid");
    let runs = AtomicUsize::new(0);
    let got = cache
        .get_or_fill::<Plain, u64, _>(&key, &locked, async {
            runs.fetch_add(1, Ordering::SeqCst);
            5
        })
        .await;
    assert_eq!(got, 5);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stored: Option<Vec<u8>> = conn.get(key.as_str()).expect("GET");
    assert!(stored.is_some());
}
