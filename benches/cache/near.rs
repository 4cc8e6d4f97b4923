//! The near cache (issue 12): the warm hit answered from process memory, beside the
//! hand-written `GET` + decode, the cache without a near cache and `amalgam-cache`'s warm L1
//! hit; how long an update made through one cache takes to reach another cache's near cache;
//! and what an entry costs in resident memory.
//!
//! The memory figure comes from a child process of this binary (started with
//! [`MEMORY_CHILD_ENV`] set), so that nothing the other sections allocated and freed is
//! reused by the entries being measured.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use amalgam::{
    EntryOptions,
    provider::{
        Backplane, DistributedCache, DistributedSerializer, JsonSerializer, RedisBackplane,
        RedisDistributedCache,
    },
};
use cached_runtime::{Cache, Policy};
use tests::RedisServer;

use crate::{
    HIT_OPS,
    harness::{CONCURRENCY, Sample, bench, histogram, record_since},
    variants::{self, HOT_ID, Item, TTL_SECS, Variants, item_ours},
};

/// Operations per repetition of the two in-memory variants: ten times the Redis variants'
/// count, so that a repetition lasts long enough to time (a call is under a microsecond).
const LOCAL_OPS: usize = 10 * HIT_OPS;
/// The near cache's entry bound in the hit-path and propagation runs.
const LOCAL_ENTRIES: u64 = 10_000;
/// How long to wait for a near cache's tracking connection.
const READY: Duration = Duration::from_secs(10);
/// Updates timed in the propagation run.
const UPDATES: usize = 1_000;
/// The id the propagation run updates.
const PROPAGATION_ID: u64 = 7;
/// Entries held for the memory figure.
const MEMORY_ENTRIES: u64 = 100_000;
/// Entries read (and dropped) before the memory baseline, and read again into the measured
/// cache before its baseline.
const MEMORY_WARMUP: u64 = 1_000;
/// The memory run's near cache bound: room for every entry, as quick_cache's shards each take
/// an equal share of it and the keys do not spread evenly.
const MEMORY_BOUND: u64 = 120_000;
/// The first id of the memory run's keys (apart from every other section's).
const MEMORY_FIRST_ID: u64 = 10_000_000;
/// Tasks that fill the memory run's entries concurrently.
const FILLERS: u64 = 16;
/// Set (to the Redis URL) in the child process that measures memory.
pub(crate) const MEMORY_CHILD_ENV: &str = "BENCH_NEAR_MEMORY_URL";

/// Hit-path figures of one concurrency, for the tables and the chart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NearRow {
    pub(crate) callers: usize,
    pub(crate) hand: Sample,
    pub(crate) ours: Sample,
    pub(crate) near: Sample,
    pub(crate) amalgam: Sample,
}

/// A cache with the near cache on, serving (its tracking connection is up).
async fn near_cache(url: &str, name: &str, entries: u64) -> Cache {
    let cache = Cache::builder(url)
        .name(name)
        .near_cache(entries)
        .build()
        .await
        .expect("a cache with a near cache");
    assert!(
        cache.near_ready(READY).await,
        "the near cache of {name} did not start serving within {READY:?}"
    );
    cache
}

/// Variant (d): `amalgam-cache` as its `examples/redis.rs` configures it: Redis as L2, JSON,
/// Redis pub/sub as the backplane; entries live as long as ours ([`TTL_SECS`]) in both tiers.
async fn amalgam_cache(url: &str) -> amalgam::Cache<Item> {
    let l2 = RedisDistributedCache::connect(url.to_owned())
        .await
        .expect("amalgam's Redis L2");
    let backplane = RedisBackplane::connect(url.to_owned())
        .await
        .expect("amalgam's Redis backplane");
    let cache = amalgam::Cache::<Item>::builder()
        .distributed(Arc::new(l2) as Arc<dyn DistributedCache>)
        .serializer(Arc::new(JsonSerializer) as Arc<dyn DistributedSerializer<Item>>)
        .backplane(Arc::new(backplane) as Arc<dyn Backplane>)
        .default_options(EntryOptions::new(Duration::from_secs(TTL_SECS)))
        .try_build()
        .expect("an amalgam cache");
    cache.ready().await.expect("amalgam's backplane subscribes");
    cache
}

/// Variant (d) as a user writes it: the key from `id`, the body as the factory.
async fn item_amalgam(cache: &amalgam::Cache<Item>, id: u64) -> Item {
    cache
        .get_or_set(
            format!("item:{id}"),
            amalgam::source::factory(move |ctx| async move {
                Ok::<_, amalgam::FactoryError>(ctx.value(variants::load(id).await))
            }),
        )
        .await
        .expect("amalgam get_or_set")
}

/// Calls answered from process memory so far.
fn near_hits(cache: &Cache) -> u64 {
    let total = cache.stats().total;
    total.near_hits + total.near_null_hits
}

/// `1.23 µs`, `117 µs`: a duration in microseconds with about three significant digits.
fn us(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Wall time per operation (all callers together) and the per-call p50 / p99, in µs.
fn per_op(s: &Sample) -> String {
    format!(
        "{} ({} / {})",
        us(1e6 / s.ops_per_sec),
        us(s.p50_us),
        us(s.p99_us)
    )
}

/// The three parts in order; returns the hit-path rows for the chart.
pub(crate) async fn run(server: &RedisServer) -> Vec<NearRow> {
    let rows = hits(server).await;
    propagation(server).await;
    memory(server).await;
    rows
}

async fn hits(server: &RedisServer) -> Vec<NearRow> {
    let url = server.url();
    let v = Arc::new(Variants::new(server).await);
    let near = Arc::new(near_cache(&url, "near", LOCAL_ENTRIES).await);
    let amalgam = Arc::new(amalgam_cache(&url).await);
    // Warm both tiers of both: the first call reads Redis (ours) or runs the factory
    // (amalgam), the second must be answered from memory.
    for _ in 0..2 {
        item_ours(&near, HOT_ID).await;
        item_amalgam(&amalgam, HOT_ID).await;
    }
    assert!(
        near_hits(&near) > 0,
        "the warm near cache did not answer from memory"
    );
    let body_runs = v.body_runs();
    let hits_before = near_hits(&near);

    println!(
        "\n## Near cache: hit path (warm)\n\n\
         Redis variants {HIT_OPS} ops, in-memory variants {LOCAL_OPS} ops per repetition, \
         median of {}; near cache bound {LOCAL_ENTRIES} entries\n",
        crate::harness::REPS
    );
    let mut rows = Vec::new();
    for &c in &CONCURRENCY {
        let hand = bench("a multiplexed GET + decode", c, HIT_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.hand_hit().await }
            }
        })
        .await;
        let ours = bench("b #[redis_cache], no near cache", c, HIT_OPS, {
            let v = Arc::clone(&v);
            move || {
                let v = Arc::clone(&v);
                async move { v.ours_hit().await }
            }
        })
        .await;
        let near_sample = bench("c #[redis_cache], near cache", c, LOCAL_OPS, {
            let near = Arc::clone(&near);
            move || {
                let near = Arc::clone(&near);
                async move {
                    std::hint::black_box(item_ours(&near, HOT_ID).await);
                }
            }
        })
        .await;
        let amalgam_sample = bench("d amalgam get_or_set, L1", c, LOCAL_OPS, {
            let amalgam = Arc::clone(&amalgam);
            move || {
                let amalgam = Arc::clone(&amalgam);
                async move {
                    std::hint::black_box(item_amalgam(&amalgam, HOT_ID).await);
                }
            }
        })
        .await;
        rows.push(NearRow {
            callers: c,
            hand,
            ours,
            near: near_sample,
            amalgam: amalgam_sample,
        });
    }
    let near_calls = (CONCURRENCY.len() * (crate::harness::REPS + 1) * LOCAL_OPS) as u64;
    println!(
        "\nnear-cache calls answered from memory: {} of {near_calls}; body runs: {}",
        near_hits(&near) - hits_before,
        v.body_runs() - body_runs
    );

    println!("\n### Near cache: hit path, ops/s\n");
    println!(
        "| callers | a multiplexed GET+decode | b `#[redis_cache]` | c `#[redis_cache]` + `near_cache` | d `amalgam` L1 | c/d | c/a |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} |",
            r.callers,
            r.hand.ops_per_sec,
            r.ours.ops_per_sec,
            r.near.ops_per_sec,
            r.amalgam.ops_per_sec,
            r.near.ops_per_sec / r.amalgam.ops_per_sec,
            r.near.ops_per_sec / r.hand.ops_per_sec,
        );
    }
    println!(
        "\n### Near cache: hit path, time per op in µs: wall time / ops (per-call p50 / p99)\n"
    );
    println!("| callers | a | b | c | d |");
    println!("|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.callers,
            per_op(&r.hand),
            per_op(&r.ours),
            per_op(&r.near),
            per_op(&r.amalgam),
        );
    }
    rows
}

/// Two caches on separate connections, both warm on one key: an update through A, then
/// reads through B until B returns it. B's reads yield to the runtime between attempts, as
/// a server's requests do, so its tracking connection is read meanwhile.
async fn propagation(server: &RedisServer) {
    let url = server.url();
    let a = near_cache(&url, "near-a", LOCAL_ENTRIES).await;
    let b = near_cache(&url, "near-b", LOCAL_ENTRIES).await;
    let key = a
        .key("item")
        .arg(&PROPAGATION_ID)
        .build()
        .expect("a valid key");
    let policy =
        Policy::new("item", Duration::from_secs(TTL_SECS)).expect("the item policy is valid");
    for cache in [&a, &b] {
        for _ in 0..2 {
            item_ours(cache, PROPAGATION_ID).await;
        }
    }
    let mut h = histogram();
    let mut reads = 0u64;
    let mut first_read = 0u64;
    let mut rewarm_reads = 0u64;
    for i in 1..=UPDATES as u64 {
        // B holds the current value in memory: its next read is answered locally.
        loop {
            let before = near_hits(&b);
            item_ours(&b, PROPAGATION_ID).await;
            rewarm_reads += 1;
            if near_hits(&b) > before {
                break;
            }
        }
        let price = 1_000_000 + i;
        a.set(&key, &Item::priced(PROPAGATION_ID, price), &policy)
            .await
            .expect("the update through cache A");
        let t = Instant::now();
        let mut n = 0u64;
        loop {
            n += 1;
            if item_ours(&b, PROPAGATION_ID).await.price_cents() == price {
                break;
            }
            tokio::task::yield_now().await;
        }
        record_since(&mut h, t);
        reads += n;
        if n == 1 {
            first_read += 1;
        }
    }
    let local = b.stats().near.expect("cache B has a near cache");
    let slow = UPDATES as u64 - h.count_between(0, 1_000_000);
    println!(
        "\n## Near cache: invalidation propagation\n\n\
         {UPDATES} updates through cache A (`Cache::set`), each timed from its return until \
         cache B (own connections, warm) returns the new value; no `sync_near`\n"
    );
    println!(
        "| p50 | p99 | max | mean | over 1 ms | reads through B per update | new value on B's first read |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} µs | {} µs | {} µs | {} µs | {slow} | {:.2} | {first_read} of {UPDATES} |",
        us(h.value_at_quantile(0.5) as f64 / 1000.0),
        us(h.value_at_quantile(0.99) as f64 / 1000.0),
        us(h.max() as f64 / 1000.0),
        us(h.mean() / 1000.0),
        reads as f64 / UPDATES as f64,
    );
    println!(
        "\ncache B: {rewarm_reads} reads to re-warm before the updates ({UPDATES} at least); \
         {} invalidations received, {} flushes, serving: {}",
        local.invalidations, local.flushes, local.serving
    );
}

/// Fills Redis with the memory run's entries, then measures them in a child process.
async fn memory(server: &RedisServer) {
    let plain = Arc::new(
        Cache::builder(server.url())
            .build()
            .await
            .expect("a cache without a near cache"),
    );
    let total = MEMORY_WARMUP + MEMORY_ENTRIES;
    fill(&plain, MEMORY_FIRST_ID, total, |cache, id| async move {
        item_ours(&cache, id).await;
    })
    .await;
    println!(
        "\n## Near cache: memory per entry\n\n\
         {MEMORY_ENTRIES} entries of the ~200-byte item, read from Redis into a near cache \
         bounded at {MEMORY_BOUND} entries, in a fresh process; VmRSS before and after\n"
    );
    let exe = std::env::current_exe().expect("this benchmark's path");
    let out = tokio::process::Command::new(exe)
        .arg("--bench")
        .env(MEMORY_CHILD_ENV, server.url())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .expect("run the memory child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        println!("\nthe memory child failed: {}", out.status);
    }
}

/// Calls `op(cache, id)` for `count` ids from `first` on, over [`FILLERS`] tasks.
async fn fill<C, F, Fut>(cache: &Arc<C>, first: u64, count: u64, op: F)
where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let tasks: Vec<_> = (0..FILLERS)
        .map(|t| {
            let cache = Arc::clone(cache);
            let op = op.clone();
            tokio::spawn(async move {
                for id in (first..first + count)
                    .skip(t as usize)
                    .step_by(FILLERS as usize)
                {
                    op(Arc::clone(&cache), id).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a fill task panicked");
    }
}

/// The process's resident set, in bytes (`VmRSS` of `/proc/self/status`).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("VmRSS in kB")
        * 1024
}

/// The child process: prints the memory table's rows.
pub(crate) fn memory_child(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let warm_ids = MEMORY_FIRST_ID;
        let ids = MEMORY_FIRST_ID + MEMORY_WARMUP;
        let bound = MEMORY_BOUND;

        // Warm-up: the code paths, connections and the allocator's arenas, then dropped.
        let warm = Arc::new(near_cache(url, "memory-warm-up", bound).await);
        fill(&warm, warm_ids, MEMORY_WARMUP, |cache, id| async move {
            item_ours(&cache, id).await;
        })
        .await;
        drop(warm);

        let cache = Arc::new(near_cache(url, "memory", bound).await);
        fill(&cache, warm_ids, MEMORY_WARMUP, |cache, id| async move {
            item_ours(&cache, id).await;
        })
        .await;
        // What `near_cache_bytes` would count for one entry: the key and the stored entry.
        let key = cache.key("item").arg(&ids).build().expect("a valid key");
        let mut conn = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let stored: usize = redis::AsyncCommands::strlen(&mut conn, key.as_str())
            .await
            .expect("STRLEN");
        let before = (rss(), cache.stats().near.expect("a near cache"));
        fill(&cache, ids, MEMORY_ENTRIES, |cache, id| async move {
            item_ours(&cache, id).await;
        })
        .await;
        let after = (rss(), cache.stats().near.expect("a near cache"));
        // Every entry is in memory: a second pass is answered locally.
        let hits = near_hits(&cache);
        fill(&cache, ids, MEMORY_ENTRIES, |cache, id| async move {
            item_ours(&cache, id).await;
        })
        .await;
        let second_pass_local = near_hits(&cache) - hits;

        let entries = after.1.entries - before.1.entries;
        let grown = after.0.saturating_sub(before.0);
        println!(
            "| cache | entries added | RSS growth | bytes per entry (RSS) | weight per entry | `near_cache_bytes` would count |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        println!(
            "| `#[redis_cache]` + `near_cache({bound})` | {entries} | {:.1} MiB | {:.0} | {:.2} | {} + {stored} = {} bytes |",
            grown as f64 / (1 << 20) as f64,
            grown as f64 / entries.max(1) as f64,
            (after.1.weight - before.1.weight) as f64 / entries.max(1) as f64,
            key.as_str().len(),
            key.as_str().len() + stored,
        );

        let amalgam = Arc::new(amalgam_cache(url).await);
        fill(&amalgam, warm_ids, MEMORY_WARMUP, |cache, id| async move {
            item_amalgam(&cache, id).await;
        })
        .await;
        let amalgam_before = rss();
        fill(&amalgam, ids, MEMORY_ENTRIES, |cache, id| async move {
            item_amalgam(&cache, id).await;
        })
        .await;
        let amalgam_grown = rss().saturating_sub(amalgam_before);
        println!(
            "| `amalgam` L1 (unbounded; factory + L2 write per entry), for reference | {MEMORY_ENTRIES} | {:.1} MiB | {:.0} | n/a | n/a |",
            amalgam_grown as f64 / (1 << 20) as f64,
            amalgam_grown as f64 / MEMORY_ENTRIES as f64,
        );
        println!(
            "\nnear cache after the fill: {:?}; second pass answered from memory: \
             {second_pass_local} of {MEMORY_ENTRIES}",
            after.1
        );
    });
}
