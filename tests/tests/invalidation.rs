//! Invalidation is never silently lost, and a fill under way never stores a value an
//! invalidation meant to drop; write-through, bypass and refresh for the writer side.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, Key, shape::Plain};
use redis::Commands;
use tests::{RedisServer, fixtures::policy, wait_until};

/// The database a cached read stands in front of.
#[derive(Clone, Default)]
struct Db(Arc<AtomicU64>);

impl Db {
    fn set(&self, v: u64) {
        self.0.store(v, Ordering::SeqCst);
    }

    async fn read(&self, cache: &Cache, key: &Key) -> u64 {
        let db = self.clone();
        cache
            .get_or_fill::<Plain, u64, _>(
                key,
                &policy("d"),
                async move { db.0.load(Ordering::SeqCst) },
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_sent_to_a_frozen_redis_is_not_lost() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("connect");
    let key = cache.key("d").arg(&1u8).build().expect("valid key");
    let db = Db::default();
    db.set(1);
    assert_eq!(db.read(&cache, &key).await, 1);
    assert_eq!(db.read(&cache, &key).await, 1);
    assert_eq!(cache.stats().total.hits, 1);

    server.freeze();
    db.set(2);
    let failed = cache.invalidate(&key).await;
    assert!(failed.is_err(), "a frozen redis answered the invalidation");
    assert_eq!(cache.stats().pending_invalidations, 1);
    server.thaw();
    // The very next read, whatever state the retry is in, sees the update.
    assert_eq!(db.read(&cache, &key).await, 2);
    wait_until(Duration::from_secs(15), || {
        cache.stats().pending_invalidations == 0
    })
    .await;
    assert_eq!(db.read(&cache, &key).await, 2);
    assert_eq!(db.read(&cache, &key).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prefix_invalidation_keeps_the_prefix_out_of_the_cache_until_retried() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("connect");
    let key = cache.key("d").arg(&7u8).build().expect("valid key");
    let db = Db::default();
    db.set(1);
    db.read(&cache, &key).await;
    server.freeze();
    db.set(2);
    assert!(cache.invalidate_prefix("d").await.is_err());
    server.thaw();
    assert_eq!(db.read(&cache, &key).await, 2);
    wait_until(Duration::from_secs(15), || {
        cache.stats().pending_invalidations == 0
    })
    .await;
    let mut conn = server.conn();
    let left: Option<Vec<u8>> = conn.get(key.as_str()).expect("GET");
    // Either the retry deleted it, or a read after the retry stored the new value.
    assert!(left.is_none() || db.read(&cache, &key).await == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_stops_a_fill_under_way_from_storing_its_old_value() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = cache.key("d").arg(&2u8).build().expect("valid key");
    let release = Arc::new(tokio::sync::Notify::new());
    let fill = {
        let (cache, key, release) = (cache.clone(), key.clone(), Arc::clone(&release));
        tokio::spawn(async move {
            cache
                .get_or_fill::<Plain, u64, _>(&key, &policy("d"), async move {
                    // Read from the database before the update...
                    let old = 1;
                    release.notified().await;
                    old
                })
                .await
        })
    };
    wait_until(Duration::from_secs(10), || cache.stats().total.misses == 1).await;
    // ...the update and its invalidation happen...
    cache.invalidate(&key).await.expect("invalidate");
    // ...and only then does the fill finish.
    release.notify_one();
    assert_eq!(fill.await.expect("no panic"), 1);
    let mut conn = server.conn();
    let stored: Option<Vec<u8>> = conn.get(key.as_str()).expect("GET");
    assert_eq!(
        stored, None,
        "the fill stored a value computed before the invalidation"
    );
    let db = Db::default();
    db.set(2);
    assert_eq!(db.read(&cache, &key).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_set_is_read_back_without_running_the_body() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = cache.key("d").arg(&3u8).build().expect("valid key");
    let db = Db::default();
    db.set(1);
    assert_eq!(db.read(&cache, &key).await, 1);
    db.set(5);
    cache.set(&key, &5u64, &policy("d")).await.expect("set");
    db.set(6);
    // The stored value, not the database: the body did not run.
    assert_eq!(db.read(&cache, &key).await, 5);
    let mut conn = server.conn();
    let ttl: i64 = conn.ttl(key.as_str()).expect("TTL");
    assert!(ttl > 0 && ttl <= 600, "ttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_runs_the_body_and_refresh_replaces_the_entry() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = cache.key("d").arg(&4u8).build().expect("valid key");
    let db = Db::default();
    db.set(1);
    assert_eq!(db.read(&cache, &key).await, 1);
    db.set(2);
    // Bypass: fresh value, the entry untouched.
    assert_eq!(cached_runtime::bypass(db.read(&cache, &key)).await, 2);
    assert_eq!(db.read(&cache, &key).await, 1);
    // Refresh: fresh value, and stored for the next readers.
    assert_eq!(cached_runtime::refresh(db.read(&cache, &key)).await, 2);
    db.set(3);
    assert_eq!(db.read(&cache, &key).await, 2);
    let stats = cache.stats().total;
    assert_eq!(
        (stats.bypasses, stats.hits, stats.misses),
        (2, 2, 1),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_invalidation_deletes_only_its_prefix() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let db = Db::default();
    for id in 0..50u8 {
        db.read(&cache, &cache.key("d").arg(&id).build().expect("key"))
            .await;
    }
    let other = cache.key("d2").arg(&1u8).build().expect("key");
    cache.set(&other, &1u64, &policy("d2")).await.expect("set");
    assert_eq!(cache.invalidate_prefix("d").await.expect("invalidate"), 50);
    let mut conn = server.conn();
    let kept: bool = conn.exists(other.as_str()).expect("EXISTS");
    assert!(kept, "invalidating `d` touched `d2`");
    assert_eq!(cache.stats().prefixes["d"].invalidated, 50);
}
