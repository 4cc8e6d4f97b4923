//! Hit-path throughput and latency against a private redis-server on loopback.
//!
//! `cargo bench -p tests --bench cache` (results go to stdout; docs/BENCHMARKS.md records a run).
//! Each variant runs a fixed number of operations at 1, 16 and 64 concurrent callers on a
//! two-worker Tokio runtime; each figure is the median of three repetitions.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use cached_runtime::{Cache, Policy, shape::Optional};
use hdrhistogram::Histogram;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tests::RedisServer;

const OPS: usize = 60_000;
const REPS: usize = 3;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// About 200 bytes of JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    category: String,
    price_cents: u64,
    tags: Vec<String>,
    description: String,
}

fn sample() -> Item {
    Item {
        id: 42,
        name: "Stainless steel kettle".into(),
        category: "kitchen".into(),
        price_cents: 3499,
        tags: vec!["steel".into(), "1.7l".into(), "electric".into()],
        description: "Boils water fast; auto shut-off; cordless base that turns all the way".into(),
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Runs `OPS` calls of `op` spread over `callers` tasks; returns throughput and latency.
async fn measure<F, Fut>(callers: usize, op: F) -> Sample
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let per_task = OPS / callers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("valid histogram");
                for _ in 0..per_task {
                    let t = Instant::now();
                    op().await;
                    let _ = h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
                h
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3).expect("valid histogram");
    for t in tasks {
        all.add(t.await.expect("task")).expect("same bounds");
    }
    let elapsed = start.elapsed().as_secs_f64();
    Sample {
        ops_per_sec: (per_task * callers) as f64 / elapsed,
        p50_us: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: all.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    v[v.len() / 2]
}

async fn bench<F, Fut>(name: &str, callers: usize, op: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    // One unmeasured warm-up pass.
    measure(callers, op.clone()).await;
    let mut samples = Vec::new();
    for _ in 0..REPS {
        samples.push(measure(callers, op.clone()).await);
    }
    let s = median(samples);
    println!(
        "{name:<34} c={callers:<3} {:>10.0} ops/s  p50 {:>7.1} us  p99 {:>7.1} us",
        s.ops_per_sec, s.p50_us, s.p99_us
    );
    s
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: measure only under
    // `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped: run it with `cargo bench -p tests --bench cache`");
        return;
    }
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&server));
}

async fn run(server: &RedisServer) {
    let item = sample();
    let json = serde_json::to_vec(&item).expect("encodes");
    println!(
        "value: {} bytes of JSON, {OPS} ops per repetition, median of {REPS}",
        json.len()
    );

    let client = redis::Client::open(server.url()).expect("url");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = raw.set("bench:raw", &json).await.expect("SET");

    let connections = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cache = Cache::builder(server.url())
        .connections(connections)
        .build()
        .await
        .expect("cache");
    let policy = Arc::new(Policy::new("bench", Duration::from_secs(3600)).expect("policy"));
    let key = Arc::new(cache.key("bench").arg(&42u64).build().expect("key"));
    let warm: Option<Item> = cache
        .get_or_fill::<Optional, _, _>(&key, &policy, async { Some(sample()) })
        .await;
    assert!(warm.is_some());

    let pool = bb8::Pool::builder()
        .build(bb8_redis::RedisConnectionManager::new(server.url()).expect("url"))
        .await
        .expect("bb8 pool");

    let mut rows = Vec::new();
    for &c in &CONCURRENCY {
        let conn = raw.clone();
        let hand = bench("multiplexed GET + decode", c, move || {
            let mut conn = conn.clone();
            async move {
                let bytes: Vec<u8> = conn.get("bench:raw").await.expect("GET");
                let v: Item = serde_json::from_slice(&bytes).expect("decode");
                std::hint::black_box(v);
            }
        })
        .await;

        let (cache2, policy2, key2) = (cache.clone(), Arc::clone(&policy), Arc::clone(&key));
        let ours = bench("Cache::get_or_fill (hit)", c, move || {
            let (cache, policy, key) = (cache2.clone(), Arc::clone(&policy2), Arc::clone(&key2));
            async move {
                let v: Option<Item> = cache
                    .get_or_fill::<Optional, _, _>(&key, &policy, async {
                        unreachable!("warm cache")
                    })
                    .await;
                std::hint::black_box(v);
            }
        })
        .await;

        let pool2 = pool.clone();
        let bb8 = bench("bb8-redis defaults, checkout per GET", c, move || {
            let pool = pool2.clone();
            async move {
                let mut conn = pool.get().await.expect("checkout");
                let bytes: Vec<u8> = conn.get("bench:raw").await.expect("GET");
                let v: Item = serde_json::from_slice(&bytes).expect("decode");
                std::hint::black_box(v);
            }
        })
        .await;
        rows.push((c, hand, ours, bb8));
    }

    println!();
    println!(
        "| callers | multiplexed GET+decode ops/s | Cache hit ops/s | bb8 default ops/s | Cache / multiplexed | bb8 / multiplexed |"
    );
    println!("|---|---|---|---|---|---|");
    for (c, hand, ours, bb8) in rows {
        println!(
            "| {c} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            hand.ops_per_sec,
            ours.ops_per_sec,
            bb8.ops_per_sec,
            ours.ops_per_sec / hand.ops_per_sec,
            bb8.ops_per_sec / hand.ops_per_sec
        );
    }
}
