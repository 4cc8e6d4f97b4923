//! Tags with the stale-serving options: a tag invalidation ends stale service of the entries
//! carrying the tag, from Redis (fail-safe, stale-while-revalidate) and from the near cache
//! kept through an outage.
//!
//! An entry is made stale by shortening its `PTTL` below the stale window with `PEXPIRE`, as
//! its TTL running out would.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use cached_runtime::{Cache, key::Key, shape::Plain};
use tests::{
    RedisServer,
    fixtures::stale::{down, fallible, make_stale, stale_policy},
    wait_until,
};

const WAIT: Duration = Duration::from_secs(30);
const TAG: &str = "category:books";

fn key(cache: &Cache, prefix: &str, id: u64) -> Key {
    cache
        .key(prefix)
        .arg(&id)
        .tag(TAG)
        .build()
        .expect("valid key")
}

#[tokio::test]
async fn a_tag_invalidation_ends_fail_safe_service_of_a_stale_entry() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("fs").fail_safe(true);
    let runs = AtomicUsize::new(0);
    let k = key(&cache, "fs", 1);
    assert_eq!(fallible(&cache, &k, &policy, Ok(7), &runs).await, Ok(7));
    make_stale(&server, &k);
    // Without an invalidation the stale entry answers for the failing body.
    assert_eq!(fallible(&cache, &k, &policy, down(), &runs).await, Ok(7));
    assert_eq!(cache.stats().total.fail_safe, 1);

    cache.invalidate_tags([TAG]).await.expect("invalidate");
    assert_eq!(
        fallible(&cache, &k, &policy, down(), &runs).await,
        down(),
        "an invalidated entry is never a fail-safe answer"
    );
    assert_eq!(cache.stats().total.fail_safe, 1, "no stale answer counted");
    assert!(cache.tag_stats().rejected >= 1, "{:?}", cache.tag_stats());
    assert_eq!(runs.load(Ordering::SeqCst), 3, "the body ran each time");
}

#[tokio::test]
async fn a_tag_invalidation_ends_stale_while_revalidate_service() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("swr").stale_while_revalidate(true);
    let k = key(&cache, "swr", 1);
    let read = |value: u64| {
        let (cache, k, policy) = (cache.clone(), k.clone(), policy.clone());
        async move {
            cache
                .get_or_refresh::<Plain, _, _>(&k, &policy, async move { value })
                .await
        }
    };
    assert_eq!(read(1).await, 1);
    make_stale(&server, &k);
    // Stale: answered at once, refreshed in the background.
    assert_eq!(read(2).await, 1);
    wait_until(WAIT, || cache.stats().total.refreshed == 1).await;
    assert_eq!(read(3).await, 2, "the background refresh landed");

    make_stale(&server, &k);
    cache.invalidate_tags([TAG]).await.expect("invalidate");
    assert_eq!(
        read(4).await,
        4,
        "an invalidated stale entry is a miss: the caller waits for the body"
    );
    assert_eq!(read(5).await, 4, "and its result is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidated_before_an_outage_is_not_answered_stale_from_the_near_cache() {
    let server = RedisServer::start();
    let build = |name: &'static str| {
        server
            .cache_builder()
            .name(name)
            .command_timeout(Duration::from_millis(300))
            .near_cache(100)
            .build()
    };
    let cache = build("reader").await.expect("cache");
    let writer = build("writer").await.expect("cache");
    assert!(cache.near_ready(WAIT).await, "tracking established");
    let policy = stale_policy("near").fail_safe(true);
    let runs = AtomicUsize::new(0);
    let (kept, dropped) = (key(&cache, "near", 1), key(&cache, "near", 2));
    let other = cache
        .key("near")
        .arg(&3u64)
        .tag("category:garden")
        .build()
        .expect("key");
    let keys = [&kept, &dropped, &other];
    for k in keys {
        assert_eq!(fallible(&cache, k, &policy, Ok(7), &runs).await, Ok(7));
    }
    // The fills' own writes of the tag keys are reported back: read once more after them, so
    // what is kept carries the versions the near cache holds.
    cache.sync_near().await.expect("sync_near");
    for k in keys {
        assert_eq!(fallible(&cache, k, &policy, Ok(8), &runs).await, Ok(7));
    }
    cache.sync_near().await.expect("sync_near");
    let before = cache.stats().total.near_hits;
    for k in keys {
        assert_eq!(fallible(&cache, k, &policy, Ok(8), &runs).await, Ok(7));
    }
    assert_eq!(
        cache.stats().total.near_hits,
        before + 3,
        "kept in the near cache"
    );

    // Another process invalidates the tag; this one hears of it through tracking.
    writer.invalidate_tags([TAG]).await.expect("invalidate");
    cache.sync_near().await.expect("sync_near");
    server.freeze();
    wait_until(WAIT, || !cache.stats().near.expect("near").serving).await;

    assert_eq!(
        fallible(&cache, &other, &policy, down(), &runs).await,
        Ok(7),
        "an entry of another tag is answered stale through the outage"
    );
    for k in [&kept, &dropped] {
        assert_eq!(
            fallible(&cache, k, &policy, down(), &runs).await,
            down(),
            "{k}: its tag was invalidated before the outage"
        );
    }
    server.thaw();
    assert!(cache.near_ready(WAIT).await, "tracking back");
}
