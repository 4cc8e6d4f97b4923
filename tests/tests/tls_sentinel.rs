//! Sentinel over TLS (issue 25): the sentinels and the data nodes listen on TLS ports with
//! certificates of a CA the test made, the sentinels reach the nodes and each other over TLS
//! and name the primary by its TLS port. The cache asks a sentinel over TLS, connects to the
//! primary over TLS, tracks keys for its near cache over TLS, and follows a failover.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, redis_cache, shape::Plain};
use redis::Commands;
use tests::{
    fixtures::policy_with_ttl,
    tls::{Certs, TlsSentinel, shared_certs},
    wait_for,
};

/// Any bounded wait of these tests; a passing run never waits this long.
const WITHIN: Duration = Duration::from_secs(30);

/// The setup shared by the tests that do not fail it over.
fn shared() -> &'static TlsSentinel {
    static SHARED: OnceLock<TlsSentinel> = OnceLock::new();
    SHARED.get_or_init(|| {
        let setup = TlsSentinel::start(shared_certs());
        setup.kill_at_exit();
        setup
    })
}

#[redis_cache(prefix = "tlsmacro", ttl = 600, cache = cache, skip(cache, runs))]
async fn tripled(cache: &Cache, runs: &AtomicUsize, id: u64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    id * 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_over_tls_sentinels_caches_on_the_tls_primary_and_invalidates() {
    let setup = shared();
    let cache = setup
        .cache_builder(shared_certs())
        .namespace("tlss1:")
        .build()
        .await
        .expect("a cache over TLS sentinels");
    let policy = policy_with_ttl("basic", 600);
    let runs = AtomicUsize::new(0);
    let read = |id: u64| {
        let (cache, policy, runs) = (&cache, &policy, &runs);
        async move {
            let key = cache.key("basic").arg(&id).build().expect("valid key");
            cache
                .get_or_fill::<Plain, u64, _>(&key, policy, async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    id
                })
                .await
        }
    };
    for id in 0..10 {
        assert_eq!(read(id).await, id);
        assert_eq!(read(id).await, id);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 10, "each second read is a hit");
    let stored: Option<String> = setup.conn().get("tlss1:basic:3").expect("GET");
    assert!(
        stored.is_some(),
        "the primary holds what was cached over TLS"
    );
    assert_eq!(
        cache.invalidate_prefix("basic").await.expect("invalidate"),
        10
    );
    assert_eq!(read(3).await, 3);
    assert_eq!(runs.load(Ordering::SeqCst), 11, "invalidated, so a miss");

    let macro_runs = AtomicUsize::new(0);
    assert_eq!(tripled(&cache, &macro_runs, 4).await, 12);
    assert_eq!(tripled(&cache, &macro_runs, 4).await, 12);
    assert_eq!(
        macro_runs.load(Ordering::SeqCst),
        1,
        "the macro's second call is a hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_sentinels_can_name_a_primary_reached_over_tls() {
    let setup = shared();
    let cache = Cache::sentinel(tests::tls::MASTER_NAME, setup.plain_sentinel_urls())
        .tls_ca_file(shared_certs().path("ca.pem"))
        .sentinel_primary_tls(true)
        .command_timeout(tests::GENEROUS_TIMEOUT)
        .connect_timeout(tests::GENEROUS_TIMEOUT)
        .namespace("tlsmixed:")
        .build()
        .await
        .expect("plain sentinels, primary over TLS");
    let key = cache.key("mixed").arg(&1u8).build().expect("valid key");
    cache
        .set(&key, &9u64, &policy_with_ttl("mixed", 600))
        .await
        .expect("SET on the primary over TLS");
    let stored: Option<String> = setup.conn().get(key.as_str()).expect("GET");
    assert!(stored.is_some_and(|s| s.ends_with(":9")));
    // Without TLS to the primary, its TLS port does not answer in plaintext.
    let refused = Cache::sentinel(tests::tls::MASTER_NAME, setup.plain_sentinel_urls())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await;
    assert!(
        refused.is_err(),
        "a plaintext client got through a TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_over_tls_sentinels_learns_of_another_caches_update() {
    let setup = shared();
    let near = |name: &'static str| async move {
        let cache = setup
            .cache_builder(shared_certs())
            .name(name)
            .namespace("tlssnear:")
            .near_cache(100)
            .build()
            .await
            .expect("a cache over TLS sentinels");
        assert!(
            cache.near_ready(Duration::from_secs(15)).await,
            "{name}: tracking over TLS is not established"
        );
        cache
    };
    let (a, b) = (near("tlss-a").await, near("tlss-b").await);
    let policy = policy_with_ttl("near", 600);
    let key = a.key("near").arg(&1u8).build().expect("valid key");
    let read = |cache: &Cache| {
        let (cache, key, policy) = (cache.clone(), key.clone(), policy.clone());
        async move {
            cache
                .get_or_fill::<Plain, u64, _>(&key, &policy, async { 1 })
                .await
        }
    };
    assert_eq!(read(&a).await, 1);
    b.sync_near().await.expect("sync_near");
    assert_eq!(read(&b).await, 1);
    assert_eq!(read(&b).await, 1);
    assert_eq!(b.stats().total.near_hits, 1, "b's second read is local");
    a.set(&key, &2u64, &policy).await.expect("SET");
    b.sync_near().await.expect("sync_near");
    assert_eq!(read(&b).await, 2, "b's near cache dropped the old value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_over_tls_the_cache_writes_to_the_new_primary() {
    let certs = Certs::make();
    let mut setup = TlsSentinel::start(&certs);
    let cache = setup
        .cache_builder(&certs)
        .namespace("tlsfo:")
        .build()
        .await
        .expect("a cache over TLS sentinels");
    let policy = policy_with_ttl("fo", 600);
    let key = cache.key("fo").arg(&1u8).build().expect("valid key");
    cache.set(&key, &1u64, &policy).await.expect("SET before");
    let old = setup.kill_primary();
    let new = wait_for(WITHIN, || {
        let port = setup.primary_tls_port();
        async move {
            match port {
                Ok(p) if p != old => Ok(p),
                Ok(_) => Err("the sentinels still name the old primary".to_owned()),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    assert_ne!(new, old);
    // The cache finds the new primary through the sentinels, over TLS.
    wait_for(WITHIN, || {
        let cache = cache.clone();
        let (key, policy) = (key.clone(), policy.clone());
        async move { cache.set(&key, &2u64, &policy).await }
    })
    .await;
    let stored: Option<String> = setup.conn().get(key.as_str()).expect("GET");
    assert!(
        stored.is_some_and(|s| s.ends_with(":2")),
        "the new primary does not hold the write made after the failover"
    );
}
