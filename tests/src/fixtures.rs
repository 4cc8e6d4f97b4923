//! Small helpers shared by the runtime tests: a policy per prefix, and a counted cached call.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use cached_runtime::{Cache, Policy, shape::Plain};

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
