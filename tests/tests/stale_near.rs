//! The near cache through a Redis outage: with fail-safe, a frozen Redis (`SIGSTOP`) does not
//! empty it for those functions; their entries are answered stale, and coherence resumes
//! with the connection. And early refresh decided on a near-cache hit.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, Policy, shape::Plain};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{
        entry, key, policy_with_ttl,
        stale::{assert_unlocked, read_fresh, stale_policy, stale_policy_with_ttl},
    },
    wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

async fn read(cache: &Cache, policy: &Policy, id: u64, runs: &AtomicUsize) -> u64 {
    let key = key(cache, policy.prefix(), id);
    cache
        .get_or_fill::<Plain, u64, _>(&key, policy, async move {
            runs.fetch_add(1, Ordering::SeqCst);
            100 + id
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_frozen_fail_safe_entries_are_served_from_the_near_cache_and_coherent_after() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .name("outage")
        .command_timeout(Duration::from_millis(300))
        .near_cache(100)
        .build()
        .await
        .expect("cache");
    assert!(cache.near_ready(WAIT).await, "tracking established");
    let safe = stale_policy("safe").fail_safe(true);
    let plain = policy_with_ttl("plain", 60);
    let runs = AtomicUsize::new(0);
    assert_eq!(read(&cache, &safe, 1, &runs).await, 101);
    assert_eq!(read(&cache, &plain, 1, &runs).await, 101);
    assert_eq!(read(&cache, &safe, 1, &runs).await, 101);
    assert_eq!(cache.stats().total.near_hits, 1, "kept in the near cache");
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    server.freeze();
    // The tracking connection notices the outage and stops the near cache.
    wait_until(WAIT, || !cache.stats().near.expect("near").serving).await;
    assert_eq!(
        cache.stats().near.expect("near").entries,
        1,
        "the fail-safe entry is kept, the other dropped"
    );
    assert_eq!(read(&cache, &safe, 1, &runs).await, 101, "served stale");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "without running the body");
    let stats = cache.stats().total;
    assert_eq!((stats.stale, stats.fail_safe), (1, 1), "{stats:?}");
    assert_eq!(stats.stale_unreachable, 1, "counted by its reason");
    // A function without fail-safe runs its body, as before.
    assert_eq!(read(&cache, &plain, 1, &runs).await, 101);
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    server.thaw();
    assert!(
        cache.near_ready(WAIT).await,
        "tracking back after the outage"
    );
    // Coherent again: another client's write is seen.
    let key = key(&cache, "safe", 1);
    let _: () = server.conn().set(key.as_str(), entry(7)).expect("SET");
    cache.sync_near().await.expect("sync");
    assert_eq!(read(&cache, &safe, 1, &runs).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_entry_read_from_the_near_cache_is_refreshed_early_with_no_caller_waiting() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .near_cache(100)
        .build()
        .await
        .expect("cache");
    assert!(cache.near_ready(WAIT).await, "tracking established");
    let policy = stale_policy_with_ttl("hot", 3).early_refresh(true);
    let key = key(&cache, "hot", 1);
    // A slow first body: XFetch weighs the time left against it. Its result is kept in the
    // near cache, which answers every call below without a Redis command.
    let first = cache
        .get_or_refresh::<Plain, u64, _>(&key, &policy, async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            1
        })
        .await;
    assert_eq!(first, 1);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut calls = 0u64;
    // Each call refreshes with p = exp(-left / 0.5 s): near certain long before the 3 s end.
    while cache.stats().refreshing == 0 && cache.stats().total.early_refreshes == 0 {
        let r = Arc::clone(&runs);
        let got = cache
            .get_or_refresh::<Plain, u64, _>(&key, &policy, async move {
                r.fetch_add(1, Ordering::SeqCst);
                2
            })
            .await;
        assert_eq!(
            got, 1,
            "answered from the near cache, the body not run by a caller"
        );
        calls += 1;
        tokio::task::yield_now().await;
    }
    let stats = cache.stats().total;
    // No caller waited, and none read Redis: the refresh was decided on a near hit.
    assert_eq!(
        (stats.misses, stats.hits, stats.near_hits),
        (1, 0, calls),
        "{stats:?}"
    );
    wait_until(WAIT, || {
        let stats = cache.stats();
        stats.total.refreshed == 1 && stats.refreshing == 0
    })
    .await;
    let stats = cache.stats().total;
    assert_eq!(
        (stats.early_refreshes, stats.refreshes),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one body run");
    assert_unlocked(&server, &key);
    // The refreshed value is what callers get now, fresh.
    assert_eq!(read_fresh(&cache, &key, &policy).await, 2);
}
