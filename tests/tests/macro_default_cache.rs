//! `#[redis_cache]` without `cache = …` uses the cache installed with
//! `cached_runtime::install`, and runs uncached while none is. Installing is process-wide, so
//! this binary holds one test.

#![deny(warnings, clippy::all)]

use std::sync::atomic::{AtomicUsize, Ordering};

use cached_runtime::redis_cache;
use redis::Commands;
use tests::RedisServer;

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[redis_cache(prefix = "default", ttl = 600)]
async fn double(n: u64) -> u64 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    n * 2
}

#[tokio::test]
async fn functions_without_a_cache_option_use_the_installed_cache() {
    assert_eq!(double(2).await, 4);
    assert_eq!(double(2).await, 4);
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        2,
        "no cache installed: every call runs"
    );

    let server = RedisServer::start();
    cached_runtime::install(server.cache().await);
    assert_eq!(double(2).await, 4);
    assert_eq!(double(2).await, 4);
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        3,
        "installed: the second call is a hit"
    );
    assert!(
        server
            .conn()
            .exists::<_, bool>("default:2")
            .expect("EXISTS")
    );
}
