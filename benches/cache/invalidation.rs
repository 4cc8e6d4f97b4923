//! Invalidation: `invalidate_prefix` (SCAN + UNLINK batches) over 1,000,000 keys under one
//! prefix among 1,000,000 others, against `KEYS` + `DEL` as the blocking baseline, with a
//! stream of GETs running during each.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use cached_runtime::Cache;
use hdrhistogram::Histogram;
use redis::{AsyncCommands, AsyncConnectionConfig, aio::MultiplexedConnection};
use tests::RedisServer;

use crate::harness::{histogram, record_since};

const TARGET: u64 = 1_000_000;
const OTHERS: u64 = 1_000_000;
const FILL_BATCH: u64 = 10_000;
const DEL_BATCH: usize = 10_000;

/// Sets one small value per key, `FILL_BATCH` commands per pipeline.
async fn fill(conn: &mut MultiplexedConnection, keys: impl Iterator<Item = String>) {
    let mut pipe = redis::pipe();
    let mut n = 0;
    for key in keys {
        pipe.set(key, 1u8).ignore();
        n += 1;
        if n % FILL_BATCH == 0 {
            let _: () = pipe.query_async(conn).await.expect("pipelined SET");
            pipe = redis::pipe();
        }
    }
    if n % FILL_BATCH != 0 {
        let _: () = pipe.query_async(conn).await.expect("pipelined SET");
    }
}

/// How many keys match `pattern`, by SCAN.
async fn count(conn: &mut MultiplexedConnection, pattern: &str) -> u64 {
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await
            .expect("SCAN");
        n += keys.len() as u64;
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// GETs one key back to back until stopped; returns their latencies and count.
fn probe(
    conn: MultiplexedConnection,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Histogram<u64>> {
    tokio::spawn(async move {
        let mut conn = conn;
        let mut h = histogram();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let _: Option<Vec<u8>> = conn.get("probe").await.expect("probe GET");
            record_since(&mut h, t);
        }
        h
    })
}

/// Runs `op` with the GET stream going; returns what `op` returned, its time and the stream.
async fn during<F, R>(conn: &MultiplexedConnection, op: F) -> (R, Duration, Histogram<u64>)
where
    F: Future<Output = R>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let stream = probe(conn.clone(), Arc::clone(&stop));
    // Let the stream start before the operation.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let r = op.await;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    (r, took, stream.await.expect("probe task"))
}

fn row(name: &str, took: Duration, h: &Histogram<u64>, deleted: u64, left: u64, others: u64) {
    println!(
        "| {name} | {:.2} s | {deleted} | {left} | {others} | {} | {:.0} µs | {:.1} ms |",
        took.as_secs_f64(),
        h.len(),
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1e6,
    );
}

pub(crate) async fn run(server: &RedisServer) {
    let client = redis::Client::open(server.url()).expect("url");
    // KEYS over 2,000,000 keys takes longer than redis-rs' default 500 ms response timeout.
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect");
    let probe_conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect");
    let _: () = conn.set("probe", "x").await.expect("SET");
    let cache = Cache::builder(server.url()).build().await.expect("cache");
    let key = |prefix: &str, i: u64| {
        cache
            .key(prefix)
            .arg(&i)
            .build()
            .expect("a valid key")
            .as_str()
            .to_owned()
    };
    let ns = cache.namespace().to_owned();
    let target_pattern = format!("{ns}inv:*");

    println!(
        "\n## Invalidation: {TARGET} keys under `inv` among {OTHERS} others (half under `inv2`, half under `other`)\n"
    );
    let t = Instant::now();
    fill(
        &mut conn,
        (0..OTHERS).map(|i| key(if i % 2 == 0 { "inv2" } else { "other" }, i)),
    )
    .await;
    fill(&mut conn, (0..TARGET).map(|i| key("inv", i))).await;
    let total: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE");
    println!(
        "filled {total} keys in {:.1} s (pipelined SET)\n",
        t.elapsed().as_secs_f64()
    );

    println!(
        "| method | time | deleted | left under `inv` | others left (of {OTHERS}) | GETs during it | GET p99 | GET max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");

    let (_, idle, h) = during(&probe_conn, tokio::time::sleep(Duration::from_secs(1))).await;
    row("(nothing, 1 s of GETs)", idle, &h, 0, TARGET, OTHERS);

    let (deleted, took, h) = during(&probe_conn, cache.invalidate_prefix("inv")).await;
    let deleted = deleted.expect("invalidate_prefix");
    let left = count(&mut conn, &target_pattern).await;
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE");
    // Everything still there besides `probe` and the keys left under `inv`.
    row(
        "`Cache::invalidate_prefix` (SCAN + UNLINK)",
        took,
        &h,
        deleted,
        left,
        dbsize - 1 - left,
    );

    fill(&mut conn, (0..TARGET).map(|i| key("inv", i))).await;
    let mut del_conn = conn.clone();
    let (deleted, took, h) = during(&probe_conn, async move {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&target_pattern)
            .query_async(&mut del_conn)
            .await
            .expect("KEYS");
        let mut deleted = 0u64;
        for chunk in keys.chunks(DEL_BATCH) {
            let n: u64 = del_conn.del(chunk).await.expect("DEL");
            deleted += n;
        }
        deleted
    })
    .await;
    let left = count(&mut conn, &format!("{ns}inv:*")).await;
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE");
    row(
        "`KEYS` + `DEL` in batches of 10,000",
        took,
        &h,
        deleted,
        left,
        dbsize - 1 - left,
    );
}
