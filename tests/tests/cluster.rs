//! What only a Redis Cluster has: keys spread over shards, invalidation across every
//! primary, lock keys in their entry's slot. The behaviour shared with one server runs in
//! the parameterised suites (`runtime.rs`, `macro_behaviour.rs`).

use std::time::Duration;

use cached_runtime::shape::Plain;
use redis::Commands;
use tests::{
    fixtures::policy,
    topology::{LocalCluster, TestRedis, Topology},
};

#[tokio::test]
async fn entries_land_on_every_primary_and_are_read_back_from_each() {
    let redis = TestRedis::start(Topology::Cluster);
    let cache = redis.cache().await;
    let cluster = LocalCluster::shared();
    let p = policy("spread");
    let mut owners = std::collections::BTreeSet::new();
    for id in 0..60u32 {
        let key = cache.key("spread").arg(&id).build().expect("valid key");
        let stored = cache
            .get_or_fill::<Plain, _, _>(&key, &p, async move { id * 2 })
            .await;
        assert_eq!(stored, id * 2);
        owners.insert(cluster.node(cluster.primary_for(key.as_str())).port());
    }
    assert_eq!(owners.len(), 3, "60 keys all hashed to {owners:?}");
    for id in 0..60u32 {
        let key = cache.key("spread").arg(&id).build().expect("valid key");
        let hit = cache
            .get_or_fill::<Plain, _, _>(&key, &p, async { u32::MAX })
            .await;
        assert_eq!(hit, id * 2);
    }
    let stats = cache.stats();
    assert_eq!(stats.prefixes["spread"].hits, 60);
    assert_eq!(stats.total.errors, 0);
    assert_eq!(stats.total.stores, 60);
}

#[tokio::test]
async fn a_lock_key_hashes_to_its_entrys_slot() {
    let redis = TestRedis::start(Topology::Cluster);
    let cache = redis
        .cache_builder()
        .namespace("app:")
        .build()
        .await
        .expect("connect");
    let mut conn = redis.conn();
    for id in 0..50u32 {
        let key = cache.key("locked").arg(&id).build().expect("valid key");
        let lock = key.lock_key();
        assert!(lock.starts_with("app:{"), "{lock} leaves the namespace");
        let mut slot = |k: &str| -> i64 {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(k)
                .query(&mut conn)
                .expect("CLUSTER KEYSLOT")
        };
        let (lock_slot, entry_slot) = (slot(&lock), slot(key.as_str()));
        assert_eq!(lock_slot, entry_slot, "{lock} vs {key}");
    }
}

#[tokio::test]
async fn a_namespace_with_a_hash_tag_is_rejected() {
    let redis = TestRedis::start(Topology::Cluster);
    let err = redis
        .cache_builder()
        .namespace("{shop}:")
        .build()
        .await
        .expect_err("a hash tag in the namespace pins every key to one shard");
    assert!(err.to_string().contains("one shard"), "{err}");
}

#[tokio::test]
async fn prefix_invalidation_of_100k_keys_clears_every_primary_and_nothing_else() {
    let redis = TestRedis::start(Topology::Cluster);
    let cache = redis.cache().await;
    let cluster = LocalCluster::shared();
    let mut conn = redis.conn();
    // Written in bulk (a cluster pipeline groups them per node), as a cached function
    // would have written them.
    let keys: Vec<String> = (0..100_000u32)
        .map(|id| {
            cache
                .key("bulk")
                .arg(&id)
                .build()
                .expect("valid key")
                .to_string()
        })
        .collect();
    let mut cluster_conn = cluster.conn();
    for chunk in keys.chunks(5000) {
        let mut pipe = redis::cluster::cluster_pipe();
        for key in chunk {
            pipe.set(key, "rc1:0:v:1").ignore();
        }
        let _: () = pipe.query(&mut cluster_conn).expect("write the keys");
    }
    let per_primary = cluster
        .primary_ports()
        .into_iter()
        .map(|port| cluster.dbsize(port));
    let per_primary: Vec<u64> = per_primary.collect();
    assert_eq!(per_primary.len(), 3);
    assert!(
        per_primary.iter().all(|&n| n > 30_000),
        "uneven spread {per_primary:?}"
    );
    // Neighbours that must survive: another prefix, and a prefix that starts the same.
    let _: () = conn.set("other:1", "x").expect("SET");
    let _: () = conn.set("bulk2:1", "x").expect("SET");
    let deleted = cache.invalidate_prefix("bulk").await.expect("invalidate");
    assert_eq!(deleted, 100_000);
    for port in cluster.primary_ports() {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("bulk:*")
            .query(&mut cluster.node_on(port).conn())
            .expect("KEYS");
        assert!(left.is_empty(), "{} keys left on {port}", left.len());
    }
    assert!(conn.exists::<_, bool>("other:1").expect("EXISTS"));
    assert!(conn.exists::<_, bool>("bulk2:1").expect("EXISTS"));
}

#[tokio::test]
async fn a_lazy_cluster_cache_answers_at_once_and_caches_once_connected() {
    let redis = TestRedis::start(Topology::Cluster);
    let cache = redis.cache_builder().build_lazy().expect("valid config");
    let p = policy("lazy");
    let key = cache.key("lazy").arg(&1u8).build().expect("valid key");
    // Bounded: the first calls may run their body while the connection is made.
    tests::wait_until_async(Duration::from_secs(20), || async {
        let v: u32 = cache
            .get_or_fill::<Plain, _, _>(&key, &p, async { 5 })
            .await;
        assert_eq!(v, 5);
        cache.stats().total.hits > 0
    })
    .await;
    let mut conn = redis.conn();
    let stored: String = conn.get(key.as_str()).expect("GET");
    assert_eq!(stored, "rc1:0:v:5");
}

#[tokio::test]
async fn a_prefix_invalidation_dropped_mid_scan_is_still_carried_out_on_every_primary() {
    let redis = TestRedis::start(Topology::Cluster);
    let cache = redis.cache().await;
    let keys: Vec<String> = (0..3000u32)
        .map(|id| {
            cache
                .key("gone")
                .arg(&id)
                .build()
                .expect("valid key")
                .to_string()
        })
        .collect();
    redis.set_all(&keys, "rc1:0:v:1");
    // Polled once: it has started (and registered itself) but no reply can have come back.
    let dropped = tokio::time::timeout(Duration::ZERO, cache.invalidate_prefix("gone")).await;
    assert!(dropped.is_err(), "the invalidation was meant to be dropped");
    tests::wait_until(Duration::from_secs(30), || {
        cache.stats().pending_invalidations == 0
    })
    .await;
    assert_eq!(redis.keys("gone:*"), Vec::<String>::new());
}
