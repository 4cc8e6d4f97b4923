//! A Redis Cluster over TLS (issue 25): every node requires a client certificate signed by a
//! CA the test made (`tls-auth-clients yes`), the bus and replication are encrypted, and the
//! client is given a single `rediss://` seed, so every other node it reaches was learned from
//! `CLUSTER SLOTS` (over TLS, which names TLS ports). The cache, its near cache's tracking
//! connections, scripts, blocking connections and the macro all go through the same TLS. A
//! failover over TLS runs on a cluster of its own that asks for no client certificate.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use cached_runtime::{Cache, CacheBuilder, Redis, redis_cache, shape::Plain};
use redis::Commands;
use tests::{
    fixtures::policy_with_ttl,
    tls::{Certs, ClientCerts, TlsCluster, shared_certs},
    wait_for,
};

/// Any bounded wait of these tests; a passing run never waits this long.
const WITHIN: Duration = Duration::from_secs(15);

fn cluster() -> &'static TlsCluster {
    TlsCluster::shared()
}

/// A cache on one TLS seed, with the client certificate the nodes require.
fn builder() -> CacheBuilder {
    let certs = shared_certs();
    cluster()
        .cache_builder(certs, 1)
        .tls_client_cert_files(certs.path("client.pem"), certs.path("client.key"))
}

/// `count` key strings under `prefix` in namespace `ns`, asserted to land on all three
/// primaries.
fn spread(cache: &Cache, prefix: &str, count: u64) -> Vec<cached_runtime::Key> {
    let keys: Vec<_> = (0..count)
        .map(|id| cache.key(prefix).arg(&id).build().expect("valid key"))
        .collect();
    let owners: BTreeSet<usize> = keys
        .iter()
        .map(|k| cluster().plain.primary_for(k.as_str()))
        .collect();
    assert_eq!(owners.len(), 3, "{count} keys all hashed to {owners:?}");
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_found_from_one_seed_caches_on_every_primary_and_invalidates() {
    let cache = builder()
        .namespace("tlsc1:")
        .build()
        .await
        .expect("a TLS cluster cache");
    let policy = policy_with_ttl("basic", 600);
    let keys = spread(&cache, "basic", 30);
    let runs = AtomicUsize::new(0);
    for (id, key) in (0u64..).zip(&keys) {
        let got: u64 = cache
            .get_or_fill::<Plain, _, _>(key, &policy, async {
                runs.fetch_add(1, Ordering::SeqCst);
                id
            })
            .await;
        assert_eq!(got, id);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        30,
        "every first read is a miss"
    );
    let mut plain = cluster().plain.conn();
    for key in &keys {
        assert!(
            plain.exists::<_, bool>(key.as_str()).expect("EXISTS"),
            "{key} was not stored over TLS"
        );
    }
    for (id, key) in (0u64..).zip(&keys) {
        let got: u64 = cache
            .get_or_fill::<Plain, _, _>(key, &policy, async {
                runs.fetch_add(1, Ordering::SeqCst);
                u64::MAX
            })
            .await;
        assert_eq!(got, id, "a hit returns what the miss stored");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 30, "the second reads are hits");
    assert_eq!(cache.stats().total.hits, 30);

    // SCAN on every primary, over TLS.
    let deleted = cache.invalidate_prefix("basic").await.expect("invalidate");
    assert_eq!(deleted, 30);
    for key in &keys {
        assert!(!plain.exists::<_, bool>(key.as_str()).expect("EXISTS"));
    }
    let got: u64 = cache
        .get_or_fill::<Plain, _, _>(&keys[0], &policy, async { 1234 })
        .await;
    assert_eq!(got, 1234, "after the invalidation the read is a miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_on_a_tls_cluster_learns_of_updates_on_every_primary() {
    let near = |name: &'static str| async move {
        let cache = builder()
            .name(name)
            .namespace("tlsnear:")
            .near_cache(1000)
            .build()
            .await
            .expect("a TLS cluster cache");
        assert!(
            cache.near_ready(WITHIN).await,
            "{name}: tracking over TLS is not established"
        );
        cache
    };
    let a = near("tls-a").await;
    let b = near("tls-b").await;
    let policy = policy_with_ttl("near", 600);
    let keys = spread(&a, "near", 30);
    let read = |cache: &Cache, key, fresh: u64| {
        let cache = cache.clone();
        let policy = policy.clone();
        async move {
            cache
                .get_or_fill::<Plain, u64, _>(&key, &policy, async move { fresh })
                .await
        }
    };
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(read(&a, key.clone(), id).await, id);
    }
    b.sync_near().await.expect("sync_near");
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(read(&b, key.clone(), u64::MAX).await, id);
        assert_eq!(read(&b, key.clone(), u64::MAX).await, id);
    }
    let local = b.stats().total.near_hits;
    assert_eq!(local, 30, "b's second reads come from its near cache");
    for (id, key) in (0u64..).zip(&keys) {
        a.set(key, &(id + 1000), &policy).await.expect("SET");
    }
    // Every primary's invalidations reach b over its TLS tracking connections.
    b.sync_near().await.expect("sync_near");
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(
            read(&b, key.clone(), u64::MAX).await,
            id + 1000,
            "b still serves the old value of {key}"
        );
    }
}

#[redis_cache(prefix = "tlsmacro", ttl = 600, cache = cache, skip(cache, runs))]
async fn doubled(cache: &Cache, runs: &AtomicUsize, id: u64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    id * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_macro_caches_on_a_tls_cluster() {
    let cache = builder()
        .namespace("tlsc3:")
        .build()
        .await
        .expect("a TLS cluster cache");
    let runs = AtomicUsize::new(0);
    for id in 0..12 {
        assert_eq!(doubled(&cache, &runs, id).await, id * 2);
        assert_eq!(doubled(&cache, &runs, id).await, id * 2);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 12, "each second call is a hit");
    let key = cache.key("tlsmacro").arg(&5u64).build().expect("valid key");
    assert!(cache.invalidate(&key).await.expect("invalidate"));
    assert_eq!(doubled(&cache, &runs, 5).await, 10);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        13,
        "invalidated, so the body ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_and_blocking_connections_use_the_same_tls() {
    let certs = shared_certs();
    let redis = Redis::cluster(cluster().seeds(1))
        .tls_ca_pem(certs.read("ca.pem"))
        .tls_client_cert_pem(certs.read("client.pem"), certs.read("client.key"))
        .command_timeout(tests::GENEROUS_TIMEOUT)
        .connect_timeout(tests::GENEROUS_TIMEOUT)
        .build()
        .await
        .expect("a TLS cluster connection");
    let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    for (i, key) in ["tlss:{a}", "tlss:{b}", "tlss:{c}"].iter().enumerate() {
        let n: i64 = redis.eval(&script, &[key], 5).await.expect("EVAL over TLS");
        assert_eq!(n, 5, "script {i}");
    }
    let mut blocking = redis.blocking(Duration::from_secs(5));
    let _: () = cluster()
        .plain
        .conn()
        .rpush("tlsq:{q}", "job")
        .expect("RPUSH");
    let popped: Option<(String, String)> = blocking
        .query(redis::cmd("BLPOP").arg("tlsq:{q}").arg(5))
        .await
        .expect("BLPOP over TLS");
    assert_eq!(popped, Some(("tlsq:{q}".to_owned(), "job".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_refuses_a_client_without_a_certificate_with_a_clear_error() {
    let certs = shared_certs();
    let refused = cluster()
        .cache_builder(certs, 1)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect_err("a client without a certificate was accepted");
    let text = error_chain(&refused);
    assert!(
        text.contains("TLS") && text.contains("client certificate"),
        "the error does not say a client certificate is missing: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_primary_dies_the_cache_writes_to_its_promoted_replica_over_tls() {
    // A cluster of its own, which asks for no client certificate: TLS with a given CA alone.
    let certs = Certs::make();
    let mut cluster = TlsCluster::start(&certs, ClientCerts::Optional);
    let cache = Cache::cluster(cluster.seeds(6))
        .tls_ca_file(certs.path("ca.pem"))
        .command_timeout(tests::GENEROUS_TIMEOUT)
        .connect_timeout(tests::GENEROUS_TIMEOUT)
        .namespace("tlsfo:")
        .build()
        .await
        .expect("a TLS cluster cache without a client certificate");
    let policy = policy_with_ttl("fo", 600);
    let key = cache.key("fo").arg(&1u8).build().expect("valid key");
    cache.set(&key, &1u64, &policy).await.expect("SET before");
    let victim = cluster.plain.primary_for(key.as_str());
    let victim_port = cluster.plain.node(victim).port();
    cluster.plain.kill(victim);
    // The replica is promoted (over the TLS bus), and the cache reaches it over TLS.
    wait_for(Duration::from_secs(30), || {
        let cache = cache.clone();
        let (key, policy) = (key.clone(), policy.clone());
        async move { cache.set(&key, &2u64, &policy).await }
    })
    .await;
    cluster.plain.wait_until_settled();
    let owner = cluster.plain.primary_for(key.as_str());
    assert_ne!(cluster.plain.node(owner).port(), victim_port);
    let stored: Option<String> = cluster
        .plain
        .node(owner)
        .conn()
        .get(key.as_str())
        .expect("GET on the new primary");
    assert!(
        stored.is_some_and(|s| s.ends_with(":2")),
        "the promoted replica does not hold the write made after the failover"
    );
}

/// An error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
