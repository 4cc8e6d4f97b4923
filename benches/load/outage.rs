//! What the clients got before, during and after an outage, and what the outage cost the
//! database: the demo's `/stats` read as the outage starts and as it ends.

use std::{
    collections::{BTreeMap, HashSet},
    sync::atomic::{AtomicUsize, Ordering},
};

use redis::Commands;
use tests::RedisServer;

use crate::What;

const PHASES: [&str; 3] = ["before", "during the outage", "after"];

/// The script's phase now: before, during or after the outage.
#[derive(Default)]
pub(crate) struct Phase(AtomicUsize);

impl Phase {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed).min(PHASES.len() - 1)
    }

    pub(crate) fn next(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// One phase's answers.
#[derive(Default)]
struct Tally {
    requests: u64,
    /// By HTTP status.
    status: BTreeMap<u16, u64>,
    /// Requests that got no answer at all.
    failed: u64,
    /// By `X-Cache` value.
    x_cache: BTreeMap<String, u64>,
    /// The paths asked for.
    paths: HashSet<String>,
    /// Answers marked `X-Cache: MISS` (the body ran for them), by path.
    misses: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: Self) {
        self.requests += other.requests;
        for (k, v) in other.status {
            *self.status.entry(k).or_default() += v;
        }
        self.failed += other.failed;
        for (k, v) in other.x_cache {
            *self.x_cache.entry(k).or_default() += v;
        }
        self.paths.extend(other.paths);
        for (k, v) in other.misses {
            *self.misses.entry(k).or_default() += v;
        }
    }

    fn server_errors(&self) -> u64 {
        self.status
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum()
    }
}

/// What one client saw, per phase.
#[derive(Default)]
pub(crate) struct Seen([Tally; 3]);

impl Seen {
    pub(crate) fn answer(&mut self, phase: usize, path: &str, reply: &reqwest::Response) {
        let t = &mut self.0[phase];
        t.requests += 1;
        *t.status.entry(reply.status().as_u16()).or_default() += 1;
        let x_cache = reply
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        *t.x_cache.entry(x_cache.to_owned()).or_default() += 1;
        if x_cache == "MISS" {
            *t.misses.entry(path.to_owned()).or_default() += 1;
        }
        if !t.paths.contains(path) {
            t.paths.insert(path.to_owned());
        }
    }

    pub(crate) fn failed(&mut self, phase: usize, path: &str) {
        let t = &mut self.0[phase];
        t.requests += 1;
        t.failed += 1;
        t.paths.insert(path.to_owned());
    }
}

/// The demo's `/stats` at one moment: SQL statements, and the counters of the two prefixes.
pub(crate) struct Stats {
    db_queries: u64,
    item: serde_json::Value,
    items: serde_json::Value,
}

impl Stats {
    pub(crate) async fn read(client: &reqwest::Client, base: &str) -> Self {
        let body: serde_json::Value = client
            .get(format!("{base}/stats"))
            .send()
            .await
            .expect("the demo answers /stats")
            .json()
            .await
            .expect("JSON");
        Self {
            db_queries: body["db_queries"].as_u64().unwrap_or(0),
            item: body["by_prefix"]["item"].clone(),
            items: body["by_prefix"]["items"].clone(),
        }
    }
}

/// Body runs of a prefix between two readings: misses, calls that could not read the cache,
/// and background refreshes each ran the body once.
fn body_runs(before: &serde_json::Value, after: &serde_json::Value) -> u64 {
    ["misses", "errors", "refreshes"]
        .iter()
        .map(|f| {
            after[f]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(before[f].as_u64().unwrap_or(0))
        })
        .sum()
}

fn delta(before: &serde_json::Value, after: &serde_json::Value, field: &str) -> u64 {
    after[field]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(before[field].as_u64().unwrap_or(0))
}

/// Everything the clients saw, and `/stats` at the outage's start and end.
#[derive(Default)]
pub(crate) struct Report {
    phases: [Tally; 3],
    pub(crate) stats: Vec<Stats>,
}

impl Report {
    pub(crate) fn add(&mut self, seen: Seen) {
        for (mine, theirs) in self.phases.iter_mut().zip(seen.0) {
            mine.add(theirs);
        }
    }

    pub(crate) fn print(&self, what: What) {
        println!("\n| phase | requests | HTTP status | no answer | 5xx | X-Cache |");
        println!("|---|---:|---|---:|---:|---|");
        for (name, t) in PHASES.iter().zip(&self.phases) {
            let status: Vec<String> = t.status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            let x_cache: Vec<String> = t.x_cache.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            println!(
                "| {name} | {} | {} | {} | {} | {} |",
                t.requests,
                status.join(", "),
                t.failed,
                t.server_errors(),
                x_cache.join(", ")
            );
        }
        let during = &self.phases[1];
        let stale = during.x_cache.get("STALE").copied().unwrap_or(0);
        println!(
            "\nduring the outage: {} requests, {} errors to clients (5xx or no answer), {} stale answers",
            during.requests,
            during.server_errors() + during.failed,
            stale
        );
        let most = during.misses.iter().max_by_key(|(_, n)| **n);
        println!(
            "answers marked MISS during the outage: {} over {} paths; most for one path: {}",
            during.misses.values().sum::<u64>(),
            during.misses.len(),
            most.map_or("none".to_owned(), |(p, n)| format!("{n} ({p})"))
        );
        let [start, end] = match &self.stats[..] {
            [start, end, ..] => [start, end],
            _ => {
                println!("(the outage did not start and end within the script)");
                return;
            }
        };
        let before: HashSet<&String> = self.phases[0].paths.iter().collect();
        let is_list = |p: &&String| p.starts_with("/items?");
        let item_keys: Vec<&String> = during.paths.iter().filter(|p| !is_list(p)).collect();
        let list_keys: Vec<&String> = during.paths.iter().filter(is_list).collect();
        let new = |keys: &[&String]| keys.iter().filter(|k| !before.contains(*k)).count();
        let item_runs = body_runs(&start.item, &end.item);
        let list_runs = body_runs(&start.items, &end.items);
        let queries = end.db_queries - start.db_queries;
        println!(
            "\n| prefix | distinct keys asked for during the outage | of them not asked for before it | body runs (database calls) | per key | stale answers | fail-safe answers |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (name, keys, runs, b, a) in [
            ("item", &item_keys, item_runs, &start.item, &end.item),
            (
                "items (lists)",
                &list_keys,
                list_runs,
                &start.items,
                &end.items,
            ),
        ] {
            println!(
                "| {name} | {} | {} | {runs} | {:.3} | {} | {} |",
                keys.len(),
                new(keys),
                runs as f64 / keys.len().max(1) as f64,
                delta(b, a, "stale"),
                delta(b, a, "fail_safe"),
            );
        }
        let keys = item_keys.len() + list_keys.len();
        println!(
            "\nall: {} body runs for {keys} keys ({:.3} per key); {queries} SQL statements \
             (an item read is 1, a list page 2)",
            item_runs + list_runs,
            (item_runs + list_runs) as f64 / keys.max(1) as f64,
        );
        if what == What::Database {
            println!("(the database was down: a body run there is a failed call, not a query)");
        }
    }
}

/// Reads every path once, so each key is cached before the outage.
pub(crate) async fn read_every_key(client: &reqwest::Client, base: &str, paths: &[String]) {
    for path in paths {
        let reply = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("the demo answers");
        assert!(
            reply.status().is_success() || reply.status() == reqwest::StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.status()
        );
        let _ = reply.bytes().await;
    }
    println!("read {} keys once before the load", paths.len());
}

/// Moves every other stored item and list page into its stale window, as its TTL running
/// out would: an item (TTL 600 s, window 3,600 s) to 3,000 s left, a page (60 s, 300 s) to
/// 200 s left. Null markers (no window) are left alone. Returns how many it moved.
pub(crate) fn make_half_stale(redis: &RedisServer) -> usize {
    let mut conn = redis.conn();
    let mut moved = 0;
    for (pattern, fresh_above_ms, left_ms) in [
        ("item:*", 3_600_000i64, 3_000_000i64),
        ("items:*", 300_000, 200_000),
    ] {
        let mut keys: Vec<String> = conn
            .scan_match::<_, String>(pattern)
            .expect("SCAN")
            .collect::<Result<_, _>>()
            .expect("SCAN");
        keys.sort();
        for key in keys.iter().step_by(2) {
            let left: i64 = conn.pttl(key).expect("PTTL");
            if left > fresh_above_ms {
                let _: bool = conn.pexpire(key, left_ms).expect("PEXPIRE");
                moved += 1;
            }
        }
    }
    moved
}

/// `POST /admin/db/outage`.
pub(crate) async fn set_database(client: &reqwest::Client, base: &str, token: &str, down: bool) {
    let reply = client
        .post(format!("{base}/admin/db/outage"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "down": down }))
        .send()
        .await
        .expect("the demo answers");
    assert!(reply.status().is_success(), "{}", reply.status());
}
