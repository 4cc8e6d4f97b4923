//! Stampede: 1,000 concurrent calls for one cold key; how many run the body.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cached::{ConcurrentCachedAsync, stores::AsyncRedisCache};
use cached_runtime::{Cache, redis_cache};
use tests::RedisServer;

const CALLS: usize = 1_000;
/// How long the body (a database read, say) takes.
const BODY_TIME: Duration = Duration::from_millis(50);

static RUNS: AtomicU64 = AtomicU64::new(0);

async fn slow_body(id: u64) -> String {
    RUNS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(BODY_TIME).await;
    format!("value of {id}")
}

#[redis_cache(prefix = "stampede", ttl = 600, skip(cache), cache = cache)]
async fn ours(cache: &Cache, id: u64) -> String {
    slow_body(id).await
}

async fn peer(cache: &AsyncRedisCache<u64, String>, id: u64) -> String {
    if let Ok(Some(v)) = cache.async_cache_get(&id).await {
        return v;
    }
    let v = slow_body(id).await;
    let _ = cache.async_cache_set(id, v.clone()).await;
    v
}

/// Starts `CALLS` calls of `call` at once; returns body runs and the time until all returned.
async fn storm<F, Fut>(call: F) -> (u64, Duration)
where
    F: Fn() -> Fut,
    Fut: Future<Output = String> + Send + 'static,
{
    RUNS.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLS).map(|_| tokio::spawn(call())).collect();
    for t in tasks {
        t.await.expect("a stampede call panicked");
    }
    (RUNS.load(Ordering::Relaxed), start.elapsed())
}

pub(crate) async fn run(server: &RedisServer) {
    let cache = Cache::builder(server.url()).build().await.expect("cache");
    let store = Arc::new(
        AsyncRedisCache::<u64, String>::builder("stampede")
            .namespace("peer")
            .ttl(Duration::from_secs(600))
            .connection_string(&server.url())
            .build()
            .await
            .expect("cached AsyncRedisCache"),
    );
    println!(
        "\n## Stampede: {CALLS} concurrent calls for one cold key, body takes {} ms\n",
        BODY_TIME.as_millis()
    );
    println!("| variant | body runs | all calls returned after |");
    println!("|---|---:|---:|");
    let (runs, took) = storm(|| {
        let cache = cache.clone();
        async move { ours(&cache, 1).await }
    })
    .await;
    println!(
        "| 2 `#[redis_cache]`, single-flight on (the default) | {runs} | {:.0} ms |",
        took.as_secs_f64() * 1000.0
    );
    let off = Cache::builder(server.url())
        .single_flight(false)
        .build()
        .await
        .expect("cache");
    let (runs, took) = storm(|| {
        let cache = off.clone();
        async move { ours(&cache, 2).await }
    })
    .await;
    println!(
        "| 2 `#[redis_cache]`, `single_flight(false)` | {runs} | {:.0} ms |",
        took.as_secs_f64() * 1000.0
    );
    let (runs, took) = storm(|| {
        let store = Arc::clone(&store);
        async move { peer(&store, 1).await }
    })
    .await;
    println!(
        "| 3 `cached` AsyncRedisCache (no single-flight) | {runs} | {:.0} ms |",
        took.as_secs_f64() * 1000.0
    );
}
