//! Tags: a tagged hit beside an untagged one (from Redis, and from the near cache) at 1, 16
//! and 64 callers; `invalidate_tags` on a tag with 1,000,000 entries (p50/p99 of one call);
//! the demo's writer invalidation (what `PUT /items/{id}` asks of the cache) at 1,000,000
//! keys, by pattern scans before and by tags after.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cached_runtime::{Cache, Key, Policy, shape::Plain};
use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};
use tests::RedisServer;

use crate::{
    HIT_OPS,
    harness::{
        CONCURRENCY, Raw, Runner, bench_cache, histogram, interleave, median_cell, multiplexed,
        ratios, raw_runner, record_since, rounds, runner, skipped,
    },
};

const ENTRIES: u64 = 1_000_000;
const BATCH: u64 = 10_000;
const INVALIDATIONS: usize = 2_000;

async fn cache(url: &str, name: &str, near: bool) -> Cache {
    bench_cache(url, "bt:", name, near).await
}

async fn conn(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(120))),
        )
        .await
        .expect("connect")
}

/// A warm read of `key`; the body never runs.
async fn hit(cache: &Cache, key: &Key, policy: &Policy) {
    let v: u64 = cache
        .get_or_fill::<Plain, _, _>(key, policy, async { unreachable!("warm") })
        .await;
    std::hint::black_box(v);
}

/// `BENCH_SKIP=tags-hit` or `tags-invalidation` leaves out one half.
pub(crate) async fn run(server: &RedisServer) {
    if !skipped("tags-hit") {
        hits(server).await;
    }
    if !skipped("tags-invalidation") {
        invalidation(server).await;
    }
}

async fn hits(server: &RedisServer) {
    let url = server.url();
    let policy = Arc::new(Policy::new("bt", Duration::from_secs(3600)).expect("policy"));
    let rounds = rounds();
    println!("\n## Tags: a tagged hit beside an untagged one, {rounds} interleaved rounds\n");
    let mut rows = Vec::new();
    for near in [false, true] {
        let cache = Arc::new(cache(&url, if near { "tags-near" } else { "tags" }, near).await);
        let untagged = Arc::new(cache.key("bt").arg(&1u64).build().expect("key"));
        let tagged = Arc::new(
            cache
                .key("bt")
                .arg(&2u64)
                .tag("category:books")
                .tag("user:7")
                .build()
                .expect("key"),
        );
        for key in [&untagged, &tagged] {
            let v: u64 = cache
                .get_or_fill::<Plain, _, _>(key, &policy, async { 42 })
                .await;
            assert_eq!(v, 42);
        }
        // A near hit takes well under a microsecond: more calls per sample than from Redis.
        let ops = if near { HIT_OPS * 10 } else { HIT_OPS };
        // From Redis, the same reads by hand beside the cache's: the untagged `GET` and the
        // tagged `MGET` of the entry and its two tag keys.
        let raw = if near {
            None
        } else {
            let mut conn = multiplexed(&url).await;
            let all: Vec<String> = redis::cmd("KEYS")
                .arg("*")
                .query_async(&mut conn)
                .await
                .expect("KEYS");
            let tag_keys: Vec<String> = all
                .into_iter()
                .filter(|k| k != untagged.as_str() && k != tagged.as_str())
                .collect();
            assert_eq!(tag_keys.len(), 2, "the two tag keys: {tag_keys:?}");
            let mut mget = vec![tagged.as_str().to_owned()];
            mget.extend(tag_keys);
            Some((conn, vec![untagged.as_str().to_owned()], mget))
        };
        let variants = |c: usize, ops: usize| {
            let mut variants: Vec<Runner> = [&untagged, &tagged]
                .into_iter()
                .map(|key| {
                    let (cache, key, policy) =
                        (Arc::clone(&cache), Arc::clone(key), Arc::clone(&policy));
                    runner(c, ops, move || {
                        let (cache, key, policy) =
                            (Arc::clone(&cache), Arc::clone(&key), Arc::clone(&policy));
                        async move { hit(&cache, &key, &policy).await }
                    })
                })
                .collect();
            if let Some((conn, get, mget)) = &raw {
                variants.push(raw_runner(conn, Raw::Get, get.clone(), c, ops));
                variants.push(raw_runner(conn, Raw::Mget, mget.clone(), c, ops));
            }
            variants
        };
        for &c in &CONCURRENCY {
            let tier = if near { "near" } else { "redis" };
            let variants = variants(c, ops);
            let samples = interleave(rounds, &variants).await;
            println!(
                "{tier} c={c}: {}",
                samples
                    .iter()
                    .map(|s| median_cell(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            rows.push((tier, c, samples));
        }
        if !near {
            cpu_split(server, &variants(64, HIT_OPS * 5), rounds).await;
        }
    }
    println!(
        "\n| tier | callers | untagged ops/s (p50 / p99 µs) | tagged, 2 tags | tagged / untagged p50 | tagged / untagged mean latency | by hand: `GET` | by hand: `MGET` of 3 keys | `MGET` / `GET` p50 | `MGET` / `GET` mean latency |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (tier, c, s) in rows {
        let (p50, mean) = ratios(&s[0], &s[1]);
        let hand = match &s[..] {
            [_, _, get, mget] => {
                let (p50, mean) = ratios(get, mget);
                format!(
                    "{} | {} | {} | {}",
                    median_cell(get),
                    median_cell(mget),
                    p50.ratio(),
                    mean.ratio()
                )
            }
            _ => "— | — | — | —".to_owned(),
        };
        println!(
            "| {tier} | {c} | {} | {} | {} | {} | {hand} |",
            median_cell(&s[0]),
            median_cell(&s[1]),
            p50.ratio(),
            mean.ratio()
        );
    }
    println!(
        "\n(medians across the rounds; ratios: the median of the rounds' ratios, then their range)"
    );
}

/// Writes `count` entries `bt:page:{i}` tagged with `tag` (the form a fill stores).
async fn fill_tagged(conn: &mut MultiplexedConnection, cache: &Cache, prefix: &str, tag: &str) {
    let policy = Policy::new(prefix.to_owned(), Duration::from_secs(3600)).expect("policy");
    let first = cache.key(prefix).arg(&0u64).tag(tag).build().expect("key");
    let _: u64 = cache
        .get_or_fill::<Plain, _, _>(&first, &policy, async { 1 })
        .await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(first.as_str())
        .query_async(conn)
        .await
        .expect("GET");
    let mut pipe = redis::pipe();
    for i in 1..ENTRIES {
        let key = cache.key(prefix).arg(&i).build().expect("key");
        pipe.set(key.as_str(), &stored).ignore();
        if i % BATCH == 0 {
            let _: () = pipe.query_async(conn).await.expect("pipelined SET");
            pipe = redis::pipe();
        }
    }
    let _: () = pipe.query_async(conn).await.expect("pipelined SET");
}

async fn invalidation(server: &RedisServer) {
    let url = server.url();
    let cache = cache(&url, "tags-inv", false).await;
    let mut conn = conn(server).await;
    println!("\n## Tags: invalidation at {ENTRIES} entries\n");
    let started = Instant::now();
    fill_tagged(&mut conn, &cache, "page", "category:books").await;
    println!(
        "filled {ENTRIES} entries tagged `category:books` in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Each call deletes the tag key; a fill gives it a version again, as writes and reads
    // alternate in a service.
    let policy = Policy::new("page", Duration::from_secs(3600)).expect("policy");
    let probe = cache
        .key("page")
        .arg(&0u64)
        .tag("category:books")
        .build()
        .expect("key");
    let mut h = histogram();
    for _ in 0..INVALIDATIONS {
        let _: u64 = cache
            .get_or_fill::<Plain, _, _>(&probe, &policy, async { 1 })
            .await;
        let t = Instant::now();
        cache
            .invalidate_tags(["category:books"])
            .await
            .expect("invalidate");
        record_since(&mut h, t);
    }
    println!(
        "\n| operation | entries | calls | p50 µs | p99 µs | max µs |\n|---|---:|---:|---:|---:|---:|"
    );
    println!(
        "| `invalidate_tags([\"category:books\"])` | {ENTRIES} | {INVALIDATIONS} | {:.0} | {:.0} | {:.0} |",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );

    // The demo's writer: the lists of the old and new category and the unfiltered list.
    // Before: one pattern scan per list over the whole database; after: one tag each.
    let t = Instant::now();
    let mut deleted = 0;
    for pattern in [
        "items:(category=books,page=*)",
        "items:(category=music,page=*)",
        "items:(category=~,page=*)",
    ] {
        deleted += cache.invalidate_pattern(pattern).await.expect("scan");
    }
    let scans = t.elapsed();
    let t = Instant::now();
    cache
        .invalidate_tags(["list:books", "list:music", "list:~"])
        .await
        .expect("invalidate");
    let tags = t.elapsed();
    println!(
        "| the demo's `PUT` invalidation, 3 pattern scans (before) | {ENTRIES} in the database | 1 | {:.0} | — | — |",
        scans.as_secs_f64() * 1e6
    );
    println!(
        "| the demo's `PUT` invalidation, 3 tags (after) | {ENTRIES} in the database | 1 | {:.0} | — | — |",
        tags.as_secs_f64() * 1e6
    );
    println!(
        "(the scans deleted {deleted} keys: the lists are not in this database, the scan cost is the walk)"
    );
}

/// Where the CPU of a Redis-tier hit goes, at 64 callers: this process (the callers and the
/// connection's task) and redis-server, per call, from their `/proc/{pid}/stat` times (in
/// clock ticks, 100 per second here: the ratios are what counts), in interleaved rounds.
async fn cpu_split(server: &RedisServer, variants: &[Runner], rounds: usize) {
    const NAMES: [&str; 4] = [
        "cache, untagged",
        "cache, tagged",
        "by hand: GET",
        "by hand: MGET of 3",
    ];
    let calls = (HIT_OPS * 5 / 64 * 64) as f64;
    let server_pid = server.pid();
    let mut per_call = vec![Vec::new(); variants.len()];
    for round in 0..rounds.min(5) {
        for i in 0..variants.len() {
            let v = (i + round) % variants.len();
            let (me, redis) = (cpu_ticks("self"), cpu_ticks(&server_pid.to_string()));
            variants[v]().await;
            let (me2, redis2) = (cpu_ticks("self"), cpu_ticks(&server_pid.to_string()));
            // Ticks of 10 ms, in microseconds per call.
            let us = |ticks: u64| ticks as f64 * 10_000.0 / calls;
            per_call[v].push((us(me2 - me), us(redis2 - redis)));
        }
    }
    println!(
        "\n| redis tier, 64 callers | this process: CPU µs per call | redis-server: CPU µs per call |"
    );
    println!("|---|---:|---:|");
    for (name, v) in NAMES.iter().zip(&per_call) {
        let me = crate::harness::Spread::of(v.iter().map(|p| p.0));
        let redis = crate::harness::Spread::of(v.iter().map(|p| p.1));
        println!(
            "| {name} | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) |",
            me.median, me.min, me.max, redis.median, redis.min, redis.max
        );
    }
}

/// User and system time of a process so far, in clock ticks (`/proc/{pid}/stat` fields 14
/// and 15); 0 when it cannot be read.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count fields after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime 15.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}
