//! Sentinel failover with the near cache on: the tracking connections follow the topology
//! the data connections use, at the same moment. A manual `SENTINEL FAILOVER` keeps the old
//! primary alive, answering `ROLE` as a master for seconds before Sentinel demotes it; writes
//! meanwhile land on the new primary, and their invalidations must reach every near cache.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use cached_runtime::{Cache, shape::Plain};
use redis::Value;
use tests::{
    fixtures::{entry, policy},
    topology::{LocalSentinel, MASTER_NAME},
    wait_for,
};

/// Bound on every wait of this test; a passing run waits far less.
const WITHIN: Duration = Duration::from_secs(60);

/// A cache with a near cache, and `spare` idle connections kept open by its pool.
async fn near(setup: &LocalSentinel, name: &str, spare: u32) -> Cache {
    let cache = setup
        .cache_builder()
        .min_idle(spare)
        .name(name)
        .namespace("follow:")
        .near_cache(100)
        .build()
        .await
        .expect("connect");
    assert!(
        cache.near_ready(WITHIN).await,
        "cache {name}: the near cache is not serving"
    );
    cache
}

/// Whether the node on `port` says it is a replica (`false` while it cannot be asked: a node
/// being demoted drops its clients).
fn is_replica(port: u16) -> bool {
    let role = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .and_then(|mut c| redis::cmd("ROLE").query::<Vec<Value>>(&mut c));
    matches!(role.as_deref(), Ok([Value::BulkString(r), ..]) if r == b"slave")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_manual_failover_a_write_through_one_cache_reaches_the_others_near_cache() {
    writes_after_a_manual_failover_reach_the_other_near_cache(0).await;
}

/// With spare connections: those made before the failover reach the old primary, which
/// still answers as one; the pool must not hand them out after the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_spare_connections_a_write_after_a_manual_failover_reaches_the_others_near_cache() {
    writes_after_a_manual_failover_reach_the_other_near_cache(3).await;
}

async fn writes_after_a_manual_failover_reach_the_other_near_cache(spare: u32) {
    let setup = LocalSentinel::start();
    let a = near(&setup, "a", spare).await;
    let b = near(&setup, "b", spare).await;
    let p = policy("v");
    let key = a.key("v").arg(&1u8).build().expect("valid key");
    // What the cache returned, or `None` when the body ran (Redis failed, or the entry was
    // gone: B retries the invalidation of a write that failed during the switch), which
    // computes the value afresh and is never stale.
    let read = |cache: &Cache| {
        let (cache, key, p) = (cache.clone(), key.clone(), p.clone());
        async move {
            let ran = AtomicBool::new(false);
            let value = cache
                .get_or_fill::<Plain, u64, _>(&key, &p, async {
                    ran.store(true, Ordering::SeqCst);
                    0
                })
                .await;
            (!ran.load(Ordering::SeqCst)).then_some(value)
        }
    };
    // A holds the first value in its near cache.
    b.set(&key, &1u64, &p).await.expect("SET");
    a.sync_near().await.expect("sync_near");
    assert_eq!(read(&a).await, Some(1));
    let before = a.stats().total.near_hits;
    assert_eq!(read(&a).await, Some(1));
    assert_eq!(
        a.stats().total.near_hits,
        before + 1,
        "not in A's near cache"
    );

    let old = setup.primary_port();
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(MASTER_NAME)
        .query(&mut setup.sentinel_conn())
        .expect("SENTINEL FAILOVER");
    let deadline = Instant::now() + WITHIN;
    wait_for(WITHIN, || async {
        if setup.primary_port() == old {
            Err("the sentinels promoted no replica")
        } else {
            Ok(())
        }
    })
    .await;
    let new = setup.primary_port();
    let get = |port: u16| -> Option<String> {
        redis::cmd("GET")
            .arg(key.as_str())
            .query(&mut setup.conn_to(port))
            .expect("GET on the new primary")
    };

    // Write through B until the old primary is demoted (the window in which a tracking
    // connection left on it would hear nothing): every write that reached the new primary
    // must be what A returns after `sync_near`.
    let mut checked = 0u32;
    let mut computed = 0u32;
    let mut value = 1u64;
    while checked < 20 || !is_replica(old) {
        assert!(
            Instant::now() < deadline,
            "the old primary was not demoted within {WITHIN:?}"
        );
        value += 1;
        if b.set(&key, &value, &p).await.is_err() {
            continue;
        }
        if get(new) != Some(entry(value)) {
            // B's connections have not followed the switch yet.
            continue;
        }
        if a.sync_near().await.is_err() {
            // A's tracking is being re-established: nothing is promised until it is.
            continue;
        }
        let before = a.stats().total;
        let Some(seen) = read(&a).await else {
            if a.stats().total.misses > before.misses {
                // Right only if the new primary had no entry either.
                assert_ne!(
                    get(new),
                    Some(entry(value)),
                    "A missed {value}, which the new primary holds: it read another node"
                );
            }
            computed += 1;
            continue;
        };
        assert_eq!(
            seen, value,
            "A returned {seen} after {value} was written through B on the new primary"
        );
        checked += 1;
    }
    eprintln!(
        "{checked} reads after a write on the new primary returned it; {computed} ran the body \
         (A's connections were being replaced, or the entry was deleted)"
    );
}
