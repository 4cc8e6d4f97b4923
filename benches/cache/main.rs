//! The cache's hit and miss paths against the ceiling and the closest peer, on a private
//! redis-server on loopback; then the near cache (hit path, invalidation propagation, memory),
//! the same on a local Redis Cluster, invalidation, tags, serving stale, HTTP under `wrk` and
//! a cold stampede.
//!
//! `cargo bench -p benches --bench cache` (or `scripts/bench.sh`, which also writes the chart;
//! docs/BENCHMARKS.md records a run). Results go to stdout as Markdown tables.
//!
//! Each variant runs a fixed number of operations at 1, 16 and 64 concurrent callers on a
//! two-worker Tokio runtime; each figure is the median of three repetitions after one
//! unmeasured warm-up pass. Sections can be skipped with `BENCH_SKIP=invalidation,http,...`.
//! The comparisons of close variants (tagged and untagged hits, hits with and without stale
//! options) run in interleaved rounds instead, `BENCH_ROUNDS` of them (default 9), and report
//! medians and ranges across rounds.

mod chart;
mod cluster;
mod harness;
mod http;
mod invalidation;
mod near;
mod stale;
mod stampede;
mod tags;
mod variants;

use std::{process::Command, sync::Arc, time::Instant};

use harness::{CONCURRENCY, Sample, bench};
use tests::RedisServer;
use variants::Variants;

/// Operations per repetition on the hit path.
pub(crate) const HIT_OPS: usize = 60_000;
/// Operations per repetition on the miss path (each one leaves a key behind).
const MISS_OPS: usize = 20_000;
/// Operations per `redis-benchmark` run.
const SERVER_OPS: usize = 200_000;

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: measure only under
    // `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped: run it with `cargo bench -p benches --bench cache`");
        return;
    }
    // The near section's memory figure, in a fresh process of this binary.
    if let Ok(url) = std::env::var(near::MEMORY_CHILD_ENV) {
        near::memory_child(&url);
        return;
    }
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let skip = std::env::var("BENCH_SKIP").unwrap_or_default();
    let skipped = |section: &str| skip.split(',').any(|s| s.trim() == section);

    if !skipped("calls") {
        let server = RedisServer::start();
        let rows = rt.block_on(calls(&server));
        if let Ok(path) = std::env::var("BENCH_CHART") {
            match chart::write(&path, &rows) {
                Ok(()) => println!("\nchart written to {path}"),
                Err(e) => eprintln!("cannot write the chart to {path}: {e}"),
            }
        }
    }
    if !skipped("near") {
        let server = RedisServer::start();
        let rows = rt.block_on(near::run(&server));
        if let Ok(path) = std::env::var("BENCH_CHART") {
            let path = near_chart_path(&path);
            match chart::write_near(&path, &rows) {
                Ok(()) => println!("\nchart written to {path}"),
                Err(e) => eprintln!("cannot write the chart to {path}: {e}"),
            }
        }
    }
    if !skipped("cluster") {
        rt.block_on(cluster::run());
    }
    if !skipped("stampede") {
        let server = RedisServer::start();
        rt.block_on(stampede::run(&server));
    }
    if !skipped("invalidation") {
        let server = RedisServer::start();
        rt.block_on(invalidation::run(&server));
    }
    if !skipped("tags") {
        let server = RedisServer::start();
        rt.block_on(tags::run(&server));
    }
    if !skipped("stale") {
        let server = RedisServer::start();
        rt.block_on(stale::run(&server));
    }
    if !skipped("http") {
        http::run(&rt);
    }
    println!("\nwhole run: {:.0} s", started.elapsed().as_secs_f64());
}

/// The near section's chart beside the `BENCH_CHART` one: `dir/x.svg` gives `dir/x-near.svg`.
fn near_chart_path(path: &str) -> String {
    match path.strip_suffix(".svg") {
        Some(stem) => format!("{stem}-near.svg"),
        None => format!("{path}-near.svg"),
    }
}

/// Hit-path figures of one concurrency, for the tables and the chart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    pub(crate) callers: usize,
    pub(crate) hand: Sample,
    pub(crate) ours: Sample,
    pub(crate) peer: Sample,
    pub(crate) bb8: Sample,
    pub(crate) server: Option<Sample>,
}

async fn calls(server: &RedisServer) -> Vec<Row> {
    let v = Arc::new(Variants::new(server).await);
    let [hand, ours, peer] = v.stored_sizes().await;
    println!(
        "stored value: {hand} bytes of JSON by hand, {ours} bytes by #[redis_cache], \
         {peer} bytes of MessagePack by `cached`; hit {HIT_OPS} ops, miss {MISS_OPS} ops \
         per repetition, median of {}",
        harness::REPS
    );

    println!("\n## Hit path (warm)\n");
    let mut rows = Vec::new();
    for &c in &CONCURRENCY {
        let hand = bench("1 multiplexed GET + decode", c, HIT_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.hand_hit().await }
            }
        })
        .await;
        let ours = bench("2 #[redis_cache] fn", c, HIT_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.ours_hit().await }
            }
        })
        .await;
        let peer = bench("3 cached AsyncRedisCache", c, HIT_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.peer_hit().await }
            }
        })
        .await;
        let bb8 = bench("4 bb8-redis defaults, checkout/GET", c, HIT_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.bb8_hit().await }
            }
        })
        .await;
        let server = redis_benchmark(server, c);
        rows.push(Row {
            callers: c,
            hand,
            ours,
            peer,
            bb8,
            server,
        });
    }

    println!("\n## Miss path (GET miss + body + SET EX)\n");
    let mut misses = Vec::new();
    let skip_misses =
        std::env::var("BENCH_SKIP").is_ok_and(|s| s.split(',').any(|s| s.trim() == "miss"));
    for &c in CONCURRENCY.iter().filter(|_| !skip_misses) {
        let hand = bench("1 multiplexed GET + SET EX", c, MISS_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.hand_miss().await }
            }
        })
        .await;
        let ours = bench("2 #[redis_cache] fn", c, MISS_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.ours_miss().await }
            }
        })
        .await;
        let peer = bench("3 cached AsyncRedisCache", c, MISS_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.peer_miss().await }
            }
        })
        .await;
        misses.push((c, hand, ours, peer));
    }

    println!("\n### Hit path, ops/s (p50 / p99 µs)\n");
    println!(
        "| callers | 1 multiplexed GET+decode | 2 `#[redis_cache]` | 3 `cached` AsyncRedisCache | 4 bb8 defaults | redis-benchmark GET | 2/1 | 2/3 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            r.callers,
            r.hand.cell(),
            r.ours.cell(),
            r.peer.cell(),
            r.bb8.cell(),
            r.server.map_or_else(|| "n/a".to_owned(), |s| s.cell()),
            r.ours.ops_per_sec / r.hand.ops_per_sec,
            r.ours.ops_per_sec / r.peer.ops_per_sec,
        );
    }
    println!("\n### Miss path, ops/s (p50 / p99 µs)\n");
    println!(
        "| callers | 1 GET + SET EX by hand | 2 `#[redis_cache]` | 3 `cached` AsyncRedisCache | 2/1 | 2/3 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (c, hand, ours, peer) in &misses {
        println!(
            "| {c} | {} | {} | {} | {:.2} | {:.2} |",
            hand.cell(),
            ours.cell(),
            peer.cell(),
            ours.ops_per_sec / hand.ops_per_sec,
            ours.ops_per_sec / peer.ops_per_sec,
        );
    }
    println!(
        "\nbody runs during the miss benchmarks: {} (one per miss call: {})",
        v.body_runs(),
        v.body_runs() == v.miss_calls()
    );
    rows
}

/// `redis-benchmark -t get -d 200 -c C` against the same server: the server's own ceiling.
fn redis_benchmark(server: &RedisServer, callers: usize) -> Option<Sample> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["-t", "get", "-d", "200", "--csv"])
        .args(["-c", &callers.to_string(), "-n", &SERVER_OPS.to_string()])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "redis-benchmark failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("redis-benchmark not run: {e}");
            return None;
        }
    };
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms"
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("\"GET\""))?;
    let fields: Vec<f64> = line
        .split(',')
        .skip(1)
        .filter_map(|f| f.trim_matches('"').parse().ok())
        .collect();
    let s = Sample {
        ops_per_sec: *fields.first()?,
        p50_us: fields.get(3)? * 1000.0,
        p99_us: fields.get(5)? * 1000.0,
    };
    println!(
        "{:<36} c={callers:<3} {:>10.0} ops/s  p50 {:>7.1} us  p99 {:>7.1} us",
        "redis-benchmark -t get -d 200", s.ops_per_sec, s.p50_us, s.p99_us
    );
    Some(s)
}
