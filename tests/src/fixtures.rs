//! Test fixtures defined once: policies, the test value [`Item`], counted cached calls, the
//! scripted sequence of outcomes that the counters and the metrics are both checked against,
//! the demo services booted for end-to-end tests ([`demo`]), and stale serving ([`stale`]).

pub mod demo;
pub mod stale;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{
    Cache, Key, Policy,
    shape::{Optional, Plain},
};
use redis::Commands;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::{RedisServer, wait_until};

/// A policy with a 600 s TTL.
pub fn policy(prefix: &'static str) -> Policy {
    policy_with_ttl(prefix, 600)
}

/// A policy with a TTL of `ttl` seconds.
pub fn policy_with_ttl(prefix: &'static str, ttl: u64) -> Policy {
    Policy::new(prefix, Duration::from_secs(ttl)).expect("valid policy")
}

/// The key of `id` under `prefix`.
pub fn key(cache: &Cache, prefix: &str, id: u64) -> Key {
    cache.key(prefix).arg(&id).build().expect("valid key")
}

/// The stored form of a plain `u64` under a policy of version 0 (see
/// `cached-runtime/src/codec.rs`), for raw writes that stand for another process of the same
/// service.
pub fn entry(value: u64) -> String {
    format!("rc1:0:v:{value}")
}

/// The value the tests cache, stored as the JSON `{"id":…,"name":…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// What it is found by.
    pub id: u64,
    /// What tells two versions, or two variants, of it apart.
    pub name: String,
}

/// Item `id`, named `item {id}`.
pub fn item(id: u64) -> Item {
    Item {
        id,
        name: format!("item {id}"),
    }
}

/// Item `id` in language `lang`, named `item {id} ({lang})`: a value that depends on both.
pub fn item_in(id: u64, lang: &str) -> Item {
    Item {
        id,
        name: format!("item {id} ({lang})"),
    }
}

/// Calls `v(id)` through the cache under prefix `v`; the body counts itself in `runs` and
/// computes `id * 10`.
pub async fn value(cache: &Cache, id: u64, runs: &AtomicUsize) -> u64 {
    let key = cache.key("v").arg(&id).build().expect("valid key");
    cache
        .get_or_fill::<Plain, _, _>(&key, &policy("v"), async {
            runs.fetch_add(1, Ordering::SeqCst);
            id * 10
        })
        .await
}

/// A call of `key` on its own task whose body never finishes: the leader a test cancels.
pub fn spawn_stuck(cache: &Cache, key: &Key, policy: Arc<Policy>) -> JoinHandle<u64> {
    let (cache, key) = (cache.clone(), key.clone());
    tokio::spawn(async move {
        cache
            .get_or_fill::<Plain, u64, _>(&key, &policy, std::future::pending())
            .await
    })
}

/// A call of `key` on its own task whose body counts itself in `runs` and returns `value`.
pub fn spawn_counted(
    cache: &Cache,
    key: &Key,
    policy: Arc<Policy>,
    runs: &Arc<AtomicUsize>,
    value: u64,
) -> JoinHandle<u64> {
    let (cache, key, runs) = (cache.clone(), key.clone(), Arc::clone(runs));
    tokio::spawn(async move {
        cache
            .get_or_fill::<Plain, u64, _>(&key, &policy, async move {
                runs.fetch_add(1, Ordering::SeqCst);
                value
            })
            .await
    })
}

/// Serves `app` on a free loopback port, on its own task, and returns the address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// What [`scripted_outcomes`] leaves behind.
#[derive(Debug)]
pub struct Scripted {
    /// The cache it called (its Redis is gone by then).
    pub cache: Cache,
    /// How many times the bodies of `v` ran.
    pub runs: usize,
}

/// Runs one call of every outcome on a cache named `name` on `server`, with the circuit
/// breaker off (so the last error is an error, not a skip), and kills `server` at the end:
///
/// 1. `v`: a miss, then a hit (`v(1)` twice);
/// 2. `o`: a miss that stores the null marker, then a null hit;
/// 3. `v`: a corrupt entry: a decode failure, and a miss that overwrites it (`v(2)`);
/// 4. `c`: a leader that waits for its follower, and the follower, coalesced;
/// 5. `v`: a bypass (`v(1)`);
/// 6. `v`: Redis killed: an error, the body answers (`v(3)`).
///
/// Nine calls in all; four bodies of `v` run (the two misses, the bypass and the error).
pub async fn scripted_outcomes(server: &mut RedisServer, name: &str) -> Scripted {
    let cache = server
        .cache_builder()
        .name(name)
        .circuit_breaker(0, Duration::from_secs(1))
        .build()
        .await
        .expect("connect");
    let runs = AtomicUsize::new(0);
    value(&cache, 1, &runs).await;
    value(&cache, 1, &runs).await;

    let absent = cache.key("o").arg(&1u8).build().expect("key");
    for _ in 0..2 {
        let got = cache
            .get_or_fill::<Optional, Option<u64>, _>(&absent, &policy("o"), async { None })
            .await;
        assert_eq!(got, None);
    }

    let corrupt = cache.key("v").arg(&2u64).build().expect("key");
    let _: () = server.conn().set(corrupt.as_str(), "garbage").expect("SET");
    assert_eq!(value(&cache, 2, &runs).await, 20);

    let key = cache.key("c").arg(&1u8).build().expect("key");
    let leader = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            let waiting = cache.clone();
            cache
                .get_or_fill::<Plain, u64, _>(&key, &policy("c"), async move {
                    wait_until(Duration::from_secs(10), || waiting.stats().waiting == 1).await;
                    9
                })
                .await
        })
    };
    // The leader's miss is counted before its body runs: from then on, a call follows it.
    wait_until(Duration::from_secs(10), || {
        cache
            .stats()
            .prefixes
            .get("c")
            .is_some_and(|c| c.misses == 1)
    })
    .await;
    let follower = cache
        .get_or_fill::<Plain, u64, _>(&key, &policy("c"), async { unreachable!() })
        .await;
    assert_eq!((leader.await.expect("no panic"), follower), (9, 9));

    cached_runtime::bypass(value(&cache, 1, &runs)).await;

    server.kill();
    assert_eq!(value(&cache, 3, &runs).await, 30);
    Scripted {
        cache,
        runs: runs.load(Ordering::SeqCst),
    }
}
