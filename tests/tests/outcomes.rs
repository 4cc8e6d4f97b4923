//! Honest counters: every call ends in exactly one outcome; and a configuration out of range
//! is an error, never a panic.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{
    Cache, CacheError, ErrorKind,
    shape::{Optional, Plain},
};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{policy, value},
    wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_counts_one_outcome_per_call() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder()
        .circuit_breaker(0, Duration::from_secs(1))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    // miss, hit
    value(&cache, 1, &runs).await;
    value(&cache, 1, &runs).await;
    // miss (stores the null marker), null hit
    let absent = cache.key("o").arg(&1u8).build().expect("key");
    for _ in 0..2 {
        let got = cache
            .get_or_fill::<Optional, Option<u64>, _>(&absent, &policy("o"), async { None })
            .await;
        assert_eq!(got, None);
    }
    // A corrupt entry: a decode failure event, and a miss.
    let corrupt = cache.key("v").arg(&2u64).build().expect("key");
    let mut conn = server.conn();
    let _: () = conn.set(corrupt.as_str(), "garbage").expect("SET");
    assert_eq!(value(&cache, 2, &runs).await, 20);
    // coalesced: a follower of a leader that waits for it
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
        cache
            .stats()
            .prefixes
            .get("c")
            .is_some_and(|c| c.misses == 1)
    })
    .await;
    let follower = cache
        .get_or_fill::<Plain, u64, _>(&key, &policy("c"), async { unreachable!() })
        .await;
    assert_eq!((leader.await.expect("no panic"), follower), (9, 9));
    // bypass
    cached_runtime::bypass(value(&cache, 1, &runs)).await;
    // error: Redis gone
    server.kill();
    assert_eq!(value(&cache, 3, &runs).await, 30);

    let stats = cache.stats();
    let v = &stats.prefixes["v"];
    assert_eq!(
        (v.hits, v.misses, v.bypasses, v.errors, v.decode_failures),
        (1, 2, 1, 1, 1),
        "{v:?}"
    );
    let o = &stats.prefixes["o"];
    assert_eq!((o.misses, o.null_hits, o.stores), (1, 1, 1), "{o:?}");
    let c = &stats.prefixes["c"];
    assert_eq!((c.misses, c.coalesced), (1, 1), "{c:?}");
    // 2 + 2 + 1 + 2 + 1 + 1 calls, each counted once.
    assert_eq!(stats.total.calls(), 9, "{:?}", stats.total);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_counts_as_coalesced_only() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move {
                let key = cache.key("f").arg(&1u8).build().expect("key");
                let waiting = cache.clone();
                cache
                    .get_or_fill::<Plain, u64, _>(&key, &policy("f"), async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        wait_until(Duration::from_secs(10), || waiting.stats().waiting == 19).await;
                        1
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.expect("no panic");
    }
    let total = cache.stats().total;
    assert_eq!(
        (total.misses, total.coalesced, total.hits),
        (1, 19, 0),
        "{total:?}"
    );
    assert_eq!(total.calls(), 20);
}

#[tokio::test]
async fn out_of_range_configuration_is_an_error() {
    let builder = || Cache::builder("redis://127.0.0.1:1");
    let cases: Vec<(&str, Result<Cache, CacheError>)> = vec![
        ("min idle", builder().max_size(2).min_idle(3).build_lazy()),
        (
            "zero timeout",
            builder().command_timeout(Duration::ZERO).build_lazy(),
        ),
        (
            "huge timeout",
            builder()
                .connect_timeout(Duration::from_secs(1 << 40))
                .build_lazy(),
        ),
        (
            "huge null ttl",
            builder()
                .null_ttl(Duration::from_secs(u64::MAX))
                .build_lazy(),
        ),
        ("no connections", builder().connections(0).build_lazy()),
    ];
    for (what, result) in cases {
        let err = result.expect_err(what);
        assert_eq!(err.kind(), ErrorKind::Config, "{what}: {err}");
    }
    let lock = policy("x").lock(Duration::from_secs(1 << 40));
    assert!(lock.is_err(), "a lock of 35,000 years was accepted");
    let ttl = cached_runtime::Policy::new("x", Duration::from_secs(u64::MAX));
    assert!(ttl.is_err(), "a ttl past what redis accepts was accepted");
}

#[tokio::test]
async fn an_in_memory_cache_counts_like_a_redis_one() {
    let cache = Cache::in_memory();
    let runs = AtomicUsize::new(0);
    value(&cache, 1, &runs).await;
    value(&cache, 1, &runs).await;
    let key = cache.key("v").arg(&1u64).build().expect("key");
    assert!(cache.invalidate(&key).await.expect("invalidate"));
    value(&cache, 1, &runs).await;
    let v = &cache.stats().prefixes["v"];
    assert_eq!(
        (v.misses, v.hits, v.invalidated, v.stores),
        (2, 1, 1, 2),
        "{v:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
