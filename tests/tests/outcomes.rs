//! Honest counters: every call ends in exactly one outcome; and a configuration out of range
//! is an error, never a panic.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, CacheError, ErrorKind, shape::Plain};
use tests::{
    RedisServer,
    fixtures::{Scripted, policy, scripted_outcomes, value},
    wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_sequence_counts_one_outcome_per_call() {
    let mut server = RedisServer::start();
    let Scripted { cache, runs } = scripted_outcomes(&mut server, "outcomes").await;

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
    assert_eq!(runs, 4);
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
