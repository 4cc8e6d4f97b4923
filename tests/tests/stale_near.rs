//! The near cache through a Redis outage: with fail-safe, a frozen Redis (`SIGSTOP`) does not
//! empty it for those functions; their entries are answered stale, and coherence resumes
//! with the connection.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use cached_runtime::{Cache, Policy, shape::Plain};
use redis::Commands;
use tests::{RedisServer, fixtures::entry, wait_until};

const WAIT: Duration = Duration::from_secs(30);

async fn read(cache: &Cache, policy: &Policy, id: u64, runs: &AtomicUsize) -> u64 {
    let key = cache.key(policy.prefix()).arg(&id).build().expect("key");
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
    let safe = Policy::new("safe", Duration::from_secs(60))
        .expect("policy")
        .stale_window(Duration::from_secs(600))
        .expect("window")
        .fail_safe(true);
    let plain = Policy::new("plain", Duration::from_secs(60)).expect("policy");
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
    // A function without fail-safe runs its body, as before.
    assert_eq!(read(&cache, &plain, 1, &runs).await, 101);
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    server.thaw();
    assert!(
        cache.near_ready(WAIT).await,
        "tracking back after the outage"
    );
    // Coherent again: another client's write is seen.
    let key = cache.key("safe").arg(&1u64).build().expect("key");
    let _: () = server.conn().set(key.as_str(), entry(7)).expect("SET");
    cache.sync_near().await.expect("sync");
    assert_eq!(read(&cache, &safe, 1, &runs).await, 7);
}
