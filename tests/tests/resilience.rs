//! Real faults injected into a real redis-server: killed, restarted, frozen; stampedes in
//! one process and across caches; a lock holder that dies.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use cached_runtime::{
    Cache, Policy,
    shape::{Fallible, Plain},
};
use redis::Commands;
use tests::RedisServer;
use tokio::sync::Notify;

fn policy(prefix: &'static str) -> Policy {
    Policy::new(prefix, Duration::from_secs(600)).expect("valid policy")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

/// Calls `value(id)` through the cache; the body computes `id * 10`.
async fn value(cache: &Cache, id: u64, runs: &AtomicUsize) -> u64 {
    let key = cache.key("v").arg(&id).build().expect("valid key");
    cache
        .get_or_fill::<Plain, _, _>(&key, &policy("v"), async {
            runs.fetch_add(1, Ordering::SeqCst);
            id * 10
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_redis_fails_no_call_and_hits_resume() {
    let mut server = RedisServer::start();
    let port = server.port();
    let cache = Cache::builder(server.url())
        .circuit_breaker(3, Duration::from_millis(200))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    for id in 0..50 {
        assert_eq!(value(&cache, id, &runs).await, id * 10);
    }

    server.kill();
    // A steady stream while Redis is gone: every call answers, with the right value.
    for round in 0..400u64 {
        let id = round % 50;
        assert_eq!(value(&cache, id, &runs).await, id * 10);
    }
    assert!(
        cache.stats().circuit_opened >= 1,
        "the circuit never opened"
    );

    let _server = RedisServer::start_on(port);
    let restarted = Instant::now();
    let hits_before = cache.stats().total.hits;
    let deadline = restarted + Duration::from_secs(15);
    let mut round = 0u64;
    while cache.stats().total.hits == hits_before {
        assert!(
            Instant::now() < deadline,
            "no hit within 15 s of the restart"
        );
        let id = round % 50;
        assert_eq!(value(&cache, id, &runs).await, id * 10);
        round += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("first hit {:?} after the restart", restarted.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_about_one_timeout_and_opens_the_circuit() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let cache = Cache::builder(server.url())
        .command_timeout(timeout)
        .circuit_breaker(3, Duration::from_secs(60))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    value(&cache, 1, &runs).await;

    signal(server.pid(), "-STOP");
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(value(&cache, 1, &runs).await, 10);
        worst = worst.max(t.elapsed());
    }
    signal(server.pid(), "-CONT");
    let stats = cache.stats();
    assert!(stats.circuit_open, "the circuit did not open");
    assert_eq!(stats.circuit_opened, 1);
    // Three timed-out GETs opened it; every later call skipped Redis.
    assert_eq!(stats.total.errors, 20, "{stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 21);
    println!("worst call while frozen: {worst:?} (command timeout {timeout:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_cold_calls_run_the_body_once() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..500)
        .map(|_| {
            let (cache, runs) = (cache.clone(), Arc::clone(&runs));
            tokio::spawn(async move { value(&cache, 7, &runs).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("no panic"), 70);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

// Current-thread runtime: when the test task sees a caller's miss counted, that caller has
// already joined the flight (no await lies between the two).
#[tokio::test]
async fn a_panicking_leader_releases_the_waiters_to_run_the_body_themselves() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let release = Arc::new(Notify::new());
    let key = cache.key("p").arg(&1u8).build().expect("valid key");
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
    let follower_runs = Arc::new(AtomicUsize::new(0));
    let followers: Vec<_> = (0..10u64)
        .map(|i| {
            let (cache, key, runs) = (cache.clone(), key.clone(), Arc::clone(&follower_runs));
            tokio::spawn(async move {
                cache
                    .get_or_fill::<Plain, u64, _>(&key, &policy("p"), async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        i
                    })
                    .await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().prefixes.get("p").map_or(0, |c| c.misses) < 11 {
        assert!(Instant::now() < deadline, "callers never missed");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        follower_runs.load(Ordering::SeqCst),
        0,
        "followers did not wait"
    );
    release.notify_one();
    assert!(leader.await.expect_err("the leader panicked").is_panic());
    let mut got = Vec::new();
    for f in followers {
        got.push(f.await.expect("a follower must not panic"));
    }
    // Each follower ran its own body after the leader died (one of them may have read
    // another's stored value instead).
    assert!(follower_runs.load(Ordering::SeqCst) >= 1);
    assert!(got.iter().all(|v| *v < 10), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fill_of_one_key_never_delays_another_key() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let release = Arc::new(Notify::new());
    let slow = {
        let (cache, release) = (cache.clone(), Arc::clone(&release));
        tokio::spawn(async move {
            let key = cache.key("k").arg(&"slow").build().expect("valid key");
            cache
                .get_or_fill::<Plain, u8, _>(&key, &policy("k"), async move {
                    release.notified().await;
                    1
                })
                .await
        })
    };
    let key = cache.key("k").arg(&"fast").build().expect("valid key");
    let fast = tokio::time::timeout(
        Duration::from_secs(10),
        cache.get_or_fill::<Plain, u8, _>(&key, &policy("k"), async { 2 }),
    )
    .await;
    assert_eq!(fast, Ok(2), "the other key's fill blocked this one");
    release.notify_one();
    assert_eq!(slow.await.expect("no panic"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_makes_independent_caches_run_the_body_once() {
    let server = RedisServer::start();
    let caches = [
        server.cache().await,
        server.cache().await,
        server.cache().await,
    ];
    let locked = Arc::new(
        policy("l")
            .lock(Duration::from_secs(10))
            .expect("valid lock"),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for i in 0..150 {
        let cache = caches[i % caches.len()].clone();
        let (locked, runs) = (Arc::clone(&locked), Arc::clone(&runs));
        calls.push(tokio::spawn(async move {
            let key = cache.key("l").arg(&1u8).build().expect("valid key");
            cache
                .get_or_fill::<Fallible, Result<u64, String>, _>(&key, &locked, async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Long enough that the other caches see the lock held.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(99)
                })
                .await
        }));
    }
    for call in calls {
        assert_eq!(call.await.expect("no panic"), Ok(99));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let mut conn = server.conn();
    let lock_left: bool = conn.exists("l:1#lock").expect("EXISTS");
    assert!(!lock_left, "the owner did not release its lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lock_holder_blocks_others_no_longer_than_the_lock_ttl() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.conn();
    // A holder that took the lock and died: nobody will release it.
    let _: () = redis::cmd("SET")
        .arg(&["l:1#lock", "dead-holder", "PX", "300"])
        .query(&mut conn)
        .expect("SET");
    let locked = policy("l").lock(Duration::from_millis(300)).expect("valid");
    let runs = AtomicUsize::new(0);
    let key = cache.key("l").arg(&1u8).build().expect("valid key");
    let got = cache
        .get_or_fill::<Plain, u64, _>(&key, &locked, async {
            runs.fetch_add(1, Ordering::SeqCst);
            5
        })
        .await;
    assert_eq!(got, 5);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stored: Option<String> = conn.get("l:1").expect("GET");
    assert_eq!(stored.as_deref(), Some("rc1:0:v:5"));
}
