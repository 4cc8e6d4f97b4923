//! A dropped future leaves nothing behind: each piece of state a call takes (the breaker's
//! probe, single-flight leadership, the cross-process lock) is released when the call is
//! cancelled at the point where it holds it, and the cache keeps working afterwards.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, shape::Plain};
use redis::Commands;
use tests::{
    GENEROUS_TIMEOUT, Proxy, RedisServer,
    fixtures::{policy, spawn_counted, spawn_stuck, value},
    topology::TestRedis,
    topology_suite, wait_until, wait_until_async,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_cancelled_mid_command_does_not_leave_the_circuit_open() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.addr());
    let cooldown = Duration::from_millis(100);
    let cache = Cache::builder(proxy.url())
        .command_timeout(Duration::from_millis(200))
        .connect_timeout(GENEROUS_TIMEOUT)
        .circuit_breaker(1, cooldown)
        .build()
        .await
        .expect("connect through the proxy");
    let runs = AtomicUsize::new(0);
    value(&cache, 1, &runs).await;
    // One timeout is one event, which opens a threshold-1 circuit and reconnects.
    proxy.blackhole();
    value(&cache, 1, &runs).await;
    assert!(cache.stats().circuit_open, "{:?}", cache.stats());
    wait_until(Duration::from_secs(10), || proxy.connections() >= 2).await;
    // Setup only: the fresh connection finishes its handshake (it is the cache's once bb8's
    // check-out `PING` is answered), then it is silenced too.
    let fresh = proxy.connections() - 1;
    wait_until(Duration::from_secs(10), || {
        let traffic = &proxy.traffic()[fresh];
        traffic.count("PING") > 0 && traffic.answered()
    })
    .await;
    proxy.blackhole();
    // The probe after the cool-down is dropped while its GET is in flight (a probe that
    // finds no connection completes at once and is not what this test is about).
    wait_until_async(Duration::from_secs(15), || async {
        tokio::time::sleep(cooldown * 2).await;
        tokio::time::timeout(Duration::from_micros(1), value(&cache, 1, &runs))
            .await
            .is_err()
    })
    .await;
    // Another caller probes; once a connection answers, the circuit closes and hits return.
    let hits = cache.stats().total.hits;
    wait_until_async(Duration::from_secs(20), || async {
        assert_eq!(value(&cache, 1, &runs).await, 10);
        cache.stats().total.hits > hits
    })
    .await;
    assert!(!cache.stats().circuit_open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_the_fill_to_one_follower() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = cache.key("p").arg(&1u8).build().expect("valid key");
    let leader = spawn_stuck(&cache, &key, Arc::new(policy("p")));
    wait_until(Duration::from_secs(10), || cache.stats().total.misses == 1).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let p = Arc::new(policy("p"));
    let followers: Vec<_> = (0..100)
        .map(|_| spawn_counted(&cache, &key, Arc::clone(&p), &runs, 7))
        .collect();
    wait_until(Duration::from_secs(10), || cache.stats().waiting == 100).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0, "followers did not wait");
    // The leader is dropped mid-body (a client disconnect).
    leader.abort();
    assert!(leader.await.expect_err("aborted").is_cancelled());
    for f in followers {
        assert_eq!(f.await.expect("no panic"), 7);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "more than one follower ran the body"
    );
    let stats = cache.stats().total;
    assert_eq!((stats.misses, stats.coalesced), (2, 99), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_leader_hands_the_fill_to_one_follower() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = cache.key("p").arg(&1u8).build().expect("valid key");
    let release = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (cache, key, release) = (cache.clone(), key.clone(), Arc::clone(&release));
        tokio::spawn(async move {
            cache
                .get_or_fill::<Plain, u64, _>(&key, &policy("p"), async move {
                    release.notified().await;
                    panic!("the leader's body fails");
                })
                .await
        })
    };
    wait_until(Duration::from_secs(10), || cache.stats().total.misses == 1).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let p = Arc::new(policy("p"));
    let followers: Vec<_> = (0..10)
        .map(|_| spawn_counted(&cache, &key, Arc::clone(&p), &runs, 3))
        .collect();
    wait_until(Duration::from_secs(10), || cache.stats().waiting == 10).await;
    release.notify_one();
    assert!(leader.await.expect_err("the leader panicked").is_panic());
    for f in followers {
        assert_eq!(f.await.expect("a follower must not panic"), 3);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn a_cancelled_lock_holder_releases_the_lock_for_other_processes(server: TestRedis) {
    let (a, b) = (server.cache().await, server.cache().await);
    // A lock that would block the other instance for a minute if it were not released.
    let locked = Arc::new(policy("l").lock(Duration::from_secs(60)).expect("valid"));
    let key = a.key("l").arg(&1u8).build().expect("valid key");
    let holder = spawn_stuck(&a, &key, Arc::clone(&locked));
    let lock_key = key.lock_key();
    let mut conn = server.conn();
    wait_until(Duration::from_secs(10), || {
        conn.exists::<_, bool>(&lock_key).expect("EXISTS")
    })
    .await;
    holder.abort();
    assert!(holder.await.expect_err("aborted").is_cancelled());
    wait_until(Duration::from_secs(10), || {
        !conn.exists::<_, bool>(&lock_key).expect("EXISTS")
    })
    .await;
    // The other instance takes the lock at once instead of waiting out its TTL.
    let got = tokio::time::timeout(
        Duration::from_secs(30),
        b.get_or_fill::<Plain, u64, _>(&key, &locked, async { 5 }),
    )
    .await;
    assert_eq!(got, Ok(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_locked_fill_wait_as_long_as_the_lock_can_live() {
    let server = RedisServer::start();
    let holder_cache = server.cache().await;
    // A short fill wait: without the lock's TTL added, these followers would give up.
    let waiting_cache = server
        .cache_builder()
        .fill_wait(Duration::from_millis(50))
        .build()
        .await
        .expect("connect");
    let locked = Arc::new(policy("l").lock(Duration::from_secs(30)).expect("valid"));
    let key = holder_cache.key("l").arg(&2u8).build().expect("valid key");
    let release = Arc::new(tokio::sync::Notify::new());
    let holder = {
        let (cache, key, locked, release) = (
            holder_cache.clone(),
            key.clone(),
            Arc::clone(&locked),
            Arc::clone(&release),
        );
        tokio::spawn(async move {
            cache
                .get_or_fill::<Plain, u64, _>(&key, &locked, async move {
                    release.notified().await;
                    11
                })
                .await
        })
    };
    wait_until(Duration::from_secs(10), || {
        holder_cache.stats().total.misses == 1
    })
    .await;
    let runs = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..5)
        .map(|_| spawn_counted(&waiting_cache, &key, Arc::clone(&locked), &runs, 0))
        .collect();
    wait_until(Duration::from_secs(10), || {
        waiting_cache.stats().waiting == 4
    })
    .await;
    // Well past the fill wait: the followers are still waiting for the locked fill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(waiting_cache.stats().waiting, 4);
    release.notify_one();
    assert_eq!(holder.await.expect("no panic"), 11);
    for w in waiters {
        assert_eq!(w.await.expect("no panic"), 11);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a waiter ran the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_leaves_no_waiter_counted() {
    let server = RedisServer::start();
    let cache: Cache = server.cache().await;
    let key = cache.key("p").arg(&3u8).build().expect("valid key");
    let leader = spawn_stuck(&cache, &key, Arc::new(policy("p")));
    wait_until(Duration::from_secs(10), || cache.stats().total.misses == 1).await;
    let follower = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_fill::<Plain, u64, _>(&key, &policy("p"), async { 1 })
                .await
        })
    };
    wait_until(Duration::from_secs(10), || cache.stats().waiting == 1).await;
    follower.abort();
    let _ = follower.await;
    assert_eq!(cache.stats().waiting, 0);
    leader.abort();
    let _ = leader.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_dropped_before_redis_answered_is_still_carried_out() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = cache.key("p").arg(&4u8).build().expect("valid key");
    let runs = Arc::new(AtomicUsize::new(0));
    let p = Arc::new(policy("p"));
    assert_eq!(
        spawn_counted(&cache, &key, Arc::clone(&p), &runs, 1)
            .await
            .expect("no panic"),
        1
    );
    server.freeze();
    // The writer gives up while its UNLINK waits on a frozen server.
    let dropped = tokio::time::timeout(Duration::from_millis(100), cache.invalidate(&key)).await;
    assert!(dropped.is_err(), "the invalidation was meant to be dropped");
    assert_eq!(cache.stats().pending_invalidations, 1);
    server.thaw();
    // Not read from the cache while pending, and deleted in the background after.
    assert_eq!(
        spawn_counted(&cache, &key, Arc::clone(&p), &runs, 2)
            .await
            .expect("no panic"),
        2
    );
    wait_until(Duration::from_secs(15), || {
        cache.stats().pending_invalidations == 0
    })
    .await;
    let mut conn = server.conn();
    let left: Option<Vec<u8>> = conn.get(key.as_str()).expect("GET");
    // Gone, or replaced by the new value a later read stored: never the old entry.
    assert_ne!(
        left.as_deref(),
        Some(&b"rc1:0:v:1"[..]),
        "the dropped invalidation never reached redis"
    );
}

// The lock's compare-and-delete runs on the entry's shard on a cluster: its key shares the
// entry's slot.
topology_suite!(standalone, cluster;
    a_cancelled_lock_holder_releases_the_lock_for_other_processes,
);
