//! Small helpers shared by the runtime tests: a policy per prefix, and a counted cached call.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, Key, Policy, shape::Plain};
use tokio::task::JoinHandle;

/// A policy with a 600 s TTL.
pub fn policy(prefix: &'static str) -> Policy {
    Policy::new(prefix, Duration::from_secs(600)).expect("valid policy")
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
