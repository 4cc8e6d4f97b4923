//! Tags (issue 21) against real Redis, one server and a cluster: entries of several functions
//! dropped together by one command per tag, a fill racing an invalidation, near caches of two
//! processes, a tag key lost, and a tag with 100k entries on the cluster.
//!
//! Two caches built apart stand for two processes. Whether a read was served or recomputed is
//! told by the body: it counts its runs and returns a value that says which run it was.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, CacheBuilder, Key, Policy, shape::Plain};
use tests::{RedisServer, fixtures::policy, topology::TestRedis, topology_suite, wait_until};
use tokio::sync::oneshot;

const NS: &str = "tags:";
const WITHIN: Duration = Duration::from_secs(15);

async fn cache(redis: &TestRedis, name: &str) -> Cache {
    redis
        .cache_builder()
        .name(name)
        .namespace(NS)
        .build()
        .await
        .expect("connect")
}

async fn near(builder: CacheBuilder, name: &str) -> Cache {
    let cache = builder
        .name(name)
        .namespace(NS)
        .near_cache(1000)
        .build()
        .await
        .expect("connect");
    assert!(
        cache.near_ready(WITHIN).await,
        "{name}: near cache not serving"
    );
    cache
}

fn key(cache: &Cache, prefix: &str, id: u64, tags: &[&str]) -> Key {
    tags.iter()
        .fold(cache.key(prefix).arg(&id), |k, t| k.tag(t))
        .build()
        .expect("a key")
}

/// Reads `key`; the body returns `fresh` and counts itself in `runs`.
async fn read(cache: &Cache, key: &Key, policy: &Policy, fresh: u64, runs: &AtomicU64) -> u64 {
    cache
        .get_or_fill::<Plain, _, _>(key, policy, async {
            runs.fetch_add(1, Ordering::SeqCst);
            fresh
        })
        .await
}

/// Whether the read of `key` ran the body (else it was served).
async fn recomputed(cache: &Cache, key: &Key, policy: &Policy) -> bool {
    let runs = AtomicU64::new(0);
    read(cache, key, policy, 2, &runs).await;
    runs.load(Ordering::SeqCst) == 1
}

async fn one_tag_drops_the_entries_of_two_functions_and_another_tag_keeps_them(redis: TestRedis) {
    let a = cache(&redis, "a").await;
    let (pages, items) = (policy("page"), policy("item"));
    let runs = AtomicU64::new(0);
    let page = key(&a, "page", 1, &["category:books", "user:7"]);
    let item = key(&a, "item", 1, &["category:books"]);
    let other = key(&a, "item", 2, &["category:garden"]);
    for (k, p) in [(&page, &pages), (&item, &items), (&other, &items)] {
        assert_eq!(read(&a, k, p, 1, &runs).await, 1);
        assert_eq!(
            read(&a, k, p, 99, &runs).await,
            1,
            "{k} is served once filled"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // A tag no entry carries, and one only the page carries, from another process.
    let b = cache(&redis, "b").await;
    assert_eq!(b.invalidate_tags(["user:8"]).await.expect("invalidate"), 0);
    assert!(!recomputed(&a, &page, &pages).await);
    assert_eq!(b.invalidate_tags(["user:7"]).await.expect("invalidate"), 1);
    assert!(
        recomputed(&a, &page, &pages).await,
        "the page carries user:7"
    );
    assert!(!recomputed(&a, &item, &items).await, "the item does not");

    // One tag, two functions; the garden item keeps its entry.
    b.invalidate_tags(["category:books"])
        .await
        .expect("invalidate");
    assert!(recomputed(&a, &page, &pages).await);
    assert!(recomputed(&a, &item, &items).await);
    assert!(!recomputed(&a, &other, &items).await);
    assert!(a.tag_stats().rejected >= 3, "{:?}", a.tag_stats());
    assert_eq!(b.tag_stats().invalidations, 3);
}

async fn a_fill_racing_an_invalidation_never_lands_a_servable_entry(redis: TestRedis) {
    let a = cache(&redis, "a").await;
    let b = cache(&redis, "b").await;
    let p = policy("race");
    let k = key(&a, "race", 1, &["category:books"]);
    // Give the tag a version first, so the race is with an existing tag.
    assert!(recomputed(&a, &k, &p).await);
    a.invalidate(&k).await.expect("invalidate");
    for invalidator in [&b, &a] {
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let fill = {
            let (a, k, p) = (a.clone(), k.clone(), p.clone());
            tokio::spawn(async move {
                a.get_or_fill::<Plain, _, _>(&k, &p, async move {
                    let _ = started_tx.send(());
                    let _ = go_rx.await;
                    1u64
                })
                .await
            })
        };
        // The body runs: it read the tag's version before; invalidate now, then let it store.
        started_rx.await.expect("the body started");
        invalidator
            .invalidate_tags(["category:books"])
            .await
            .expect("invalidate");
        go_tx.send(()).expect("the body waits");
        assert_eq!(fill.await.expect("the fill"), 1);
        for reader in [&a, &b] {
            let runs = AtomicU64::new(0);
            assert_eq!(
                read(reader, &k, &p, 2, &runs).await,
                2,
                "the raced fill's value is never served"
            );
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            a.invalidate(&k).await.expect("invalidate");
        }
    }
}

async fn two_near_caches_see_each_others_tag_invalidation(redis: TestRedis) {
    let a = near(redis.cache_builder(), "a").await;
    let b = near(redis.cache_builder(), "b").await;
    let p = policy("nearpage");
    let keys: Vec<Key> = (0..20)
        .map(|i| key(&a, "nearpage", i, &["category:books"]))
        .collect();
    for k in &keys {
        assert!(recomputed(&a, k, &p).await);
        // b reads from Redis once, then from its near cache.
        assert!(!recomputed(&b, k, &p).await);
        assert!(!recomputed(&a, k, &p).await);
    }
    let near_hits = |c: &Cache| c.stats().total.near_hits;
    let before = near_hits(&b);
    let gets = redis.calls("get");
    for k in &keys {
        assert!(!recomputed(&b, k, &p).await);
    }
    assert_eq!(
        redis.calls("get"),
        gets,
        "warm tagged near hits send nothing, not even for the tags"
    );
    assert_eq!(
        near_hits(&b),
        before + 20,
        "warm tagged reads are near hits"
    );
    for (invalidator, reader) in [(&a, &b), (&b, &a)] {
        invalidator
            .invalidate_tags(["category:books"])
            .await
            .expect("invalidate");
        reader.sync_near().await.expect("sync_near");
        for (i, k) in keys.iter().enumerate() {
            assert!(
                recomputed(reader, k, &p).await,
                "entry {i} after the other cache's invalidation"
            );
        }
        invalidator.sync_near().await.expect("sync_near");
        for k in &keys {
            assert!(!recomputed(invalidator, k, &p).await, "refilled once");
        }
    }
}

async fn a_tag_key_deleted_by_hand_invalidates_its_entries_for_good(redis: TestRedis) {
    let a = cache(&redis, "a").await;
    let p = policy("lost");
    let x = key(&a, "lost", 1, &["user:7"]);
    let y = key(&a, "lost", 2, &["user:7"]);
    assert!(recomputed(&a, &x, &p).await);
    assert!(recomputed(&a, &y, &p).await);
    let tag = format!("{NS}#tag:user:7");
    let version: Vec<u8> = redis::cmd("GET")
        .arg(&tag)
        .query(&mut redis.conn())
        .expect("GET");
    let _: i64 = redis::cmd("DEL")
        .arg(&tag)
        .query(&mut redis.conn())
        .expect("DEL");
    // x's fill gives the tag a new version: y's entry, stored with the old one, stays dead.
    assert!(recomputed(&a, &x, &p).await);
    assert!(recomputed(&a, &y, &p).await);
    assert!(!recomputed(&a, &x, &p).await);
    // The old version written back by hand does not bring them back either: they were
    // refilled with the new one.
    let _: () = redis::cmd("SET")
        .arg(&tag)
        .arg(&version)
        .query(&mut redis.conn())
        .expect("SET");
    assert!(recomputed(&a, &x, &p).await);
}

async fn an_entry_without_tag_versions_is_a_counted_miss(redis: TestRedis) {
    let a = cache(&redis, "a").await;
    let p = policy("old");
    let k = key(&a, "old", 1, &["user:7"]);
    // Stored by a build of the function without tags.
    let _: () = redis::cmd("SET")
        .arg(k.as_str())
        .arg("rc1:0:v:5")
        .query(&mut redis.conn())
        .expect("SET");
    let runs = AtomicU64::new(0);
    assert_eq!(read(&a, &k, &p, 6, &runs).await, 6);
    assert_eq!(a.stats().total.decode_failures, 1);
    assert_eq!(read(&a, &k, &p, 7, &runs).await, 6);
}

async fn a_write_through_of_a_tagged_key_is_served_until_its_tag_is_invalidated(redis: TestRedis) {
    let a = cache(&redis, "a").await;
    let p = policy("written");
    let k = key(&a, "written", 1, &["user:7"]);
    a.set(&k, &5u64, &p).await.expect("write-through");
    let runs = AtomicU64::new(0);
    assert_eq!(read(&a, &k, &p, 6, &runs).await, 5);
    a.invalidate_tags(["user:7"]).await.expect("invalidate");
    assert_eq!(read(&a, &k, &p, 6, &runs).await, 6);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn a_tag_of_100k_entries_is_invalidated_with_one_command(redis: TestRedis) {
    let a = cache(&redis, "a").await;
    let p = policy("bulk");
    let first = key(&a, "bulk", 0, &["category:all"]);
    assert!(recomputed(&a, &first, &p).await);
    let stored: String = redis::cmd("GET")
        .arg(first.as_str())
        .query(&mut redis.conn())
        .expect("GET");
    // What the fill stored, written under 100k keys as if filled by as many calls.
    let keys: Vec<Key> = (0..100_000)
        .map(|i| key(&a, "bulk", i, &["category:all"]))
        .collect();
    let names: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
    redis.set_all(&names, &stored);
    for k in keys.iter().step_by(9973) {
        assert!(!recomputed(&a, k, &p).await, "{k} is served");
    }
    let (unlinks, scans, dels) = (
        redis.calls("unlink"),
        redis.calls("scan"),
        redis.calls("del"),
    );
    assert_eq!(
        a.invalidate_tags(["category:all"])
            .await
            .expect("invalidate"),
        1
    );
    assert_eq!(redis.calls("unlink"), unlinks + 1, "one command per tag");
    assert_eq!(redis.calls("scan"), scans, "no scan");
    assert_eq!(redis.calls("del"), dels);
    for k in keys.iter().step_by(9973) {
        assert!(recomputed(&a, k, &p).await, "{k} is dropped");
    }
}

topology_suite!(standalone, cluster;
    one_tag_drops_the_entries_of_two_functions_and_another_tag_keeps_them,
    a_fill_racing_an_invalidation_never_lands_a_servable_entry,
    two_near_caches_see_each_others_tag_invalidation,
    a_tag_key_deleted_by_hand_invalidates_its_entries_for_good,
    an_entry_without_tag_versions_is_a_counted_miss,
    a_write_through_of_a_tagged_key_is_served_until_its_tag_is_invalidated,
    a_tag_of_100k_entries_is_invalidated_with_one_command,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_sent_to_a_frozen_redis_is_not_lost() {
    let server = RedisServer::start();
    let a = server
        .cache_builder()
        .namespace(NS)
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("connect");
    let p = policy("frozen");
    let k = key(&a, "frozen", 1, &["user:7"]);
    let runs = AtomicU64::new(0);
    assert_eq!(read(&a, &k, &p, 1, &runs).await, 1);
    assert_eq!(read(&a, &k, &p, 2, &runs).await, 1);
    server.freeze();
    let failed = a.invalidate_tags(["user:7"]).await;
    assert!(failed.is_err(), "a frozen redis answered the invalidation");
    assert_eq!(a.stats().pending_invalidations, 1);
    server.thaw();
    // The very next read, whatever state the retry is in, does not serve the old entry.
    assert_eq!(read(&a, &k, &p, 3, &runs).await, 3);
    wait_until(WITHIN, || a.stats().pending_invalidations == 0).await;
    // Read 3 was either skipped by the pending invalidation (not stored) or, after the
    // retry, a miss that stored 3 under the tag's new version; never the old entry.
    let served = read(&a, &k, &p, 4, &runs).await;
    assert!([3, 4].contains(&served), "{served}");
    assert_eq!(read(&a, &k, &p, 5, &runs).await, served, "cached again");
}

#[tokio::test]
async fn in_memory_tags_behave_as_in_redis() {
    let a = Cache::in_memory();
    let p = policy("mem");
    let k = key(&a, "mem", 1, &["category:books"]);
    let runs = Arc::new(AtomicU64::new(0));
    assert_eq!(read(&a, &k, &p, 1, &runs).await, 1);
    assert_eq!(read(&a, &k, &p, 2, &runs).await, 1);
    a.invalidate_tags(["category:books"])
        .await
        .expect("invalidate");
    assert_eq!(read(&a, &k, &p, 3, &runs).await, 3);
    let tag = a
        .tag()
        .literal("category:")
        .value(&"books")
        .build()
        .expect("a tag");
    assert_eq!(tag, "category:books");
    a.invalidate_tags([tag]).await.expect("invalidate");
    assert_eq!(read(&a, &k, &p, 4, &runs).await, 4);
}
