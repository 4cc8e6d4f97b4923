//! Serving stale (issue 20): what the stale options add to a fresh hit (near cache and
//! Redis, 1, 16 and 64 callers, interleaved rounds), and a hot key expiring under 200 callers
//! in two caches (standing for two processes) with plain TTL, stale-while-revalidate and
//! early refresh: latency across the expiries against the hits between them, and body runs
//! per expiry.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use cached_runtime::{Cache, Policy, shape::Plain};
use hdrhistogram::Histogram;
use tests::RedisServer;

use crate::{
    HIT_OPS,
    harness::{
        CONCURRENCY, Raw, Runner, bench_cache, histogram, interleave, median_cell, multiplexed,
        ratios, raw_runner, rounds, runner, skipped,
    },
};

async fn cache(url: &str, name: &str, near: bool) -> Cache {
    bench_cache(url, "bs:", name, near).await
}

/// `BENCH_SKIP=stale-hit` or `stale-expiry` leaves out one half.
pub(crate) async fn run(server: &RedisServer) {
    if !skipped("stale-hit") {
        fresh_hits(server).await;
    }
    if !skipped("stale-expiry") {
        expiry(server).await;
    }
}

/// The three policies of the fresh-hit comparison, all with an hour's TTL.
fn policies(prefix: &'static str) -> [Policy; 3] {
    let ttl = Duration::from_secs(3600);
    let window = Duration::from_secs(600);
    let plain = Policy::new(prefix, ttl).expect("policy");
    let stale = Policy::new(prefix, ttl)
        .expect("policy")
        .stale_window(window)
        .expect("window")
        .fail_safe(true)
        .stale_while_revalidate(true);
    let early = Policy::new(prefix, ttl)
        .expect("policy")
        .stale_window(window)
        .expect("window")
        .early_refresh(true);
    [plain, stale, early]
}

/// A fresh hit without stale options (`get_or_fill`, today's hit path), with a window,
/// fail-safe and stale-while-revalidate, and with a window and early refresh (both through
/// `get_or_refresh`, which those options need).
async fn fresh_hits(server: &RedisServer) {
    let url = server.url();
    let rounds = rounds();
    println!(
        "\n## Serving stale: a fresh hit with and without stale options, {rounds} interleaved rounds\n"
    );
    const NAMES: [&str; 5] = ["plain", "stale", "early", "hand GET", "hand GET+PTTL"];
    let mut rows = Vec::new();
    for near in [false, true] {
        let tier = if near { "near" } else { "redis" };
        let cache = Arc::new(cache(&url, &format!("stale-{tier}"), near).await);
        let [plain, stale, early] = policies("bs");
        let keys: Vec<_> = (1u64..=3)
            .map(|i| Arc::new(cache.key("bs").arg(&i).build().expect("key")))
            .collect();
        let (plain, stale, early) = (Arc::new(plain), Arc::new(stale), Arc::new(early));
        // Each policy reads its own key, filled first.
        let v: u64 = cache
            .get_or_fill::<Plain, _, _>(&keys[0], &plain, async { 42 })
            .await;
        assert_eq!(v, 42);
        for (key, policy) in [(&keys[1], &stale), (&keys[2], &early)] {
            let v: u64 = cache
                .get_or_refresh::<Plain, _, _>(key, policy, async { 42 })
                .await;
            assert_eq!(v, 42);
        }
        let ops = if near { HIT_OPS * 10 } else { HIT_OPS };
        // From Redis, by hand beside the cache: a `GET`, and `GET` with `PTTL` in one
        // pipeline (what a read sends when the policy has a stale window).
        let raw = (!near).then_some(multiplexed(&url).await);
        for &c in &CONCURRENCY {
            let plain_run = {
                let (cache, key, policy) =
                    (Arc::clone(&cache), Arc::clone(&keys[0]), Arc::clone(&plain));
                runner(c, ops, move || {
                    let (cache, key, policy) =
                        (Arc::clone(&cache), Arc::clone(&key), Arc::clone(&policy));
                    async move {
                        let v: u64 = cache
                            .get_or_fill::<Plain, _, _>(&key, &policy, async {
                                unreachable!("fresh")
                            })
                            .await;
                        std::hint::black_box(v);
                    }
                })
            };
            let refreshing = |key: &Arc<_>, policy: &Arc<Policy>| {
                let (cache, key, policy) =
                    (Arc::clone(&cache), Arc::clone(key), Arc::clone(policy));
                runner(c, ops, move || {
                    let (cache, key, policy) =
                        (Arc::clone(&cache), Arc::clone(&key), Arc::clone(&policy));
                    async move {
                        let v: u64 = cache
                            .get_or_refresh::<Plain, _, _>(&key, &policy, async { 43 })
                            .await;
                        std::hint::black_box(v);
                    }
                })
            };
            let mut variants: Vec<Runner> = vec![
                plain_run,
                refreshing(&keys[1], &stale),
                refreshing(&keys[2], &early),
            ];
            if let Some(conn) = &raw {
                let key = vec![keys[0].as_str().to_owned()];
                variants.push(raw_runner(conn, Raw::Get, key.clone(), c, ops));
                variants.push(raw_runner(conn, Raw::GetPttl, key, c, ops));
            }
            let samples = interleave(rounds, &variants).await;
            for (name, s) in NAMES.iter().zip(&samples) {
                println!("{tier} c={c} {name}: {}", median_cell(s));
            }
            rows.push((tier, c, samples));
        }
        let t = cache.stats().total;
        println!(
            "{tier}: misses {} (the 3 fills), early refreshes {}, stale {}",
            t.misses, t.early_refreshes, t.stale
        );
    }
    println!(
        "\n| tier | callers | no stale options: ops/s (p50 / p99 µs) | window + fail-safe + SWR | SWR / plain p50 | SWR / plain mean latency | window + early refresh | early / plain p50 | early / plain mean latency | by hand: `GET` | by hand: `GET`+`PTTL` | `GET`+`PTTL` / `GET` p50 | `GET`+`PTTL` / `GET` mean latency |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (tier, c, s) in &rows {
        let (sp50, smean) = ratios(&s[0], &s[1]);
        let (ep50, emean) = ratios(&s[0], &s[2]);
        let hand = match &s[..] {
            [_, _, _, get, pttl] => {
                let (p50, mean) = ratios(get, pttl);
                format!(
                    "{} | {} | {} | {}",
                    median_cell(get),
                    median_cell(pttl),
                    p50.ratio(),
                    mean.ratio()
                )
            }
            _ => "— | — | — | —".to_owned(),
        };
        println!(
            "| {tier} | {c} | {} | {} | {} | {} | {} | {} | {} | {hand} |",
            median_cell(&s[0]),
            median_cell(&s[1]),
            sp50.ratio(),
            smean.ratio(),
            median_cell(&s[2]),
            ep50.ratio(),
            emean.ratio()
        );
    }
}

/// Callers of the hot key, half on each cache.
const CALLERS: usize = 200;
/// Each caller calls once per `PACE`: 20,000 calls/s in all.
const PACE: Duration = Duration::from_millis(10);
/// How long the body takes (a database read, say).
const BODY: Duration = Duration::from_millis(20);
const TTL: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(60);
/// Load per mode: about ten expiries.
const LOAD: Duration = Duration::from_secs(21);
/// A call started this close to an expiry is "across the expiry"...
const NEAR_EXPIRY: Duration = Duration::from_millis(250);
/// ...and one started farther than this from every expiry is a plain hit.
const FAR_FROM_EXPIRY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy)]
enum Mode {
    Plain,
    Swr,
    Early,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain TTL (baseline)",
            Self::Swr => "stale-while-revalidate",
            Self::Early => "early refresh",
        }
    }

    fn policy(self, prefix: String) -> Policy {
        let policy = Policy::new(prefix, TTL).expect("policy");
        match self {
            Self::Plain => policy,
            Self::Swr => policy
                .stale_window(WINDOW)
                .expect("window")
                .stale_while_revalidate(true),
            Self::Early => policy
                .stale_window(WINDOW)
                .expect("window")
                .early_refresh(true),
        }
    }
}

/// When each body run started and ended.
type Runs = Arc<Mutex<Vec<(Instant, Instant)>>>;

async fn body(runs: Runs, value: u64) -> u64 {
    let started = Instant::now();
    tokio::time::sleep(BODY).await;
    runs.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((started, Instant::now()));
    value
}

struct Expiry {
    mode: Mode,
    expiries: usize,
    body_runs: usize,
    most_runs: usize,
    across: Histogram<u64>,
    hits: Histogram<u64>,
}

/// The hot key: `CALLERS` callers over two caches for `LOAD`, each mode in turn (two
/// rounds); calls grouped by when they started against when the entry would expire.
async fn expiry(server: &RedisServer) {
    let url = server.url();
    println!(
        "\n## Serving stale: a hot key expiring under {CALLERS} callers in two caches \
         (TTL {} s, body {} ms, {} calls/s)\n",
        TTL.as_secs(),
        BODY.as_millis(),
        CALLERS as u128 * 1000 / PACE.as_millis()
    );
    let caches = [
        Arc::new(cache(&url, "expiry-a", false).await),
        Arc::new(cache(&url, "expiry-b", false).await),
    ];
    let rounds = std::env::var("BENCH_EXPIRY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2usize);
    let mut results = Vec::new();
    let mut serial = 0;
    for round in 0..rounds {
        for mode in [Mode::Plain, Mode::Swr, Mode::Early] {
            serial += 1;
            let prefix = format!("hot{serial}");
            let r = hot_key(&caches, mode, prefix).await;
            println!(
                "round {round}, {}: {} expiries, {} body runs (at most {} for one), across: \
                 p50 {:.2} ms p99 {:.2} ms max {:.1} ms ({} calls); hits: p50 {:.2} ms \
                 p99 {:.2} ms ({} calls)",
                r.mode.name(),
                r.expiries,
                r.body_runs,
                r.most_runs,
                ms(&r.across, 0.5),
                ms(&r.across, 0.99),
                r.across.max() as f64 / 1e6,
                r.across.len(),
                ms(&r.hits, 0.5),
                ms(&r.hits, 0.99),
                r.hits.len(),
            );
            results.push((round, r));
        }
    }
    println!(
        "\n| round | mode | expiries | body runs per expiry (most for one) | across the expiry: p50 / p99 / max ms | hits between: p50 / p99 ms | p99 across / hit p99 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (round, r) in &results {
        println!(
            "| {round} | {} | {} | {:.2} ({}) | {:.2} / {:.2} / {:.1} | {:.2} / {:.2} | {:.2}x |",
            r.mode.name(),
            r.expiries,
            r.body_runs as f64 / r.expiries.max(1) as f64,
            r.most_runs,
            ms(&r.across, 0.5),
            ms(&r.across, 0.99),
            r.across.max() as f64 / 1e6,
            ms(&r.hits, 0.5),
            ms(&r.hits, 0.99),
            ms(&r.across, 0.99) / ms(&r.hits, 0.99)
        );
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

async fn hot_key(caches: &[Arc<Cache>; 2], mode: Mode, prefix: String) -> Expiry {
    let policy = Arc::new(mode.policy(prefix.clone()));
    let key = Arc::new(caches[0].key(&prefix).arg(&1u64).build().expect("key"));
    let runs: Runs = Arc::default();
    let v: u64 = caches[0]
        .get_or_refresh::<Plain, _, _>(&key, &policy, body(Arc::clone(&runs), 1))
        .await;
    assert_eq!(v, 1);
    let start = Instant::now();
    let deadline = start + LOAD;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let cache = Arc::clone(&caches[i % 2]);
            let (key, policy, runs) = (Arc::clone(&key), Arc::clone(&policy), Arc::clone(&runs));
            tokio::spawn(async move {
                // (started, took), in nanoseconds since `start`.
                let mut calls = Vec::with_capacity(LOAD.as_millis() as usize / 10 + 1);
                let mut pace = tokio::time::interval(PACE);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // Spread the callers over the pace.
                tokio::time::sleep(PACE * i as u32 / CALLERS as u32).await;
                while Instant::now() < deadline {
                    pace.tick().await;
                    let t = Instant::now();
                    let v: u64 = cache
                        .get_or_refresh::<Plain, _, _>(&key, &policy, body(Arc::clone(&runs), 2))
                        .await;
                    std::hint::black_box(v);
                    calls.push((t - start, t.elapsed()));
                }
                calls
            })
        })
        .collect();
    let mut calls = Vec::new();
    for t in tasks {
        calls.extend(t.await.expect("a caller panicked"));
    }
    // Let background refreshes land before the runs are read.
    tokio::time::sleep(BODY * 5).await;
    let mut runs = std::mem::take(&mut *runs.lock().unwrap_or_else(PoisonError::into_inner));
    runs.sort_by_key(|&(started, _)| started);
    // Runs started within half a TTL of each other answer one expiry; the entry then
    // expires a TTL after the last of them stored (early refresh moves that, and the calls
    // around the moment it would have expired are what it is for).
    let mut groups: Vec<Vec<(Instant, Instant)>> = Vec::new();
    for run in runs {
        match groups.last_mut() {
            Some(g) if run.0 - g[0].0 < TTL / 2 => g.push(run),
            _ => groups.push(vec![run]),
        }
    }
    let expiries_at: Vec<Duration> = groups
        .iter()
        .filter_map(|g| g.iter().map(|&(_, ended)| ended).max())
        .map(|ended| (ended + TTL).saturating_duration_since(start))
        .collect();
    let mut across = histogram();
    let mut hits = histogram();
    for (started, took) in calls {
        let distance = expiries_at
            .iter()
            .map(|&x| x.abs_diff(started))
            .min()
            .unwrap_or(Duration::MAX);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        if distance <= NEAR_EXPIRY {
            let _ = across.record(nanos);
        } else if distance > FAR_FROM_EXPIRY {
            let _ = hits.record(nanos);
        }
    }
    // The first group is the fill before the load.
    let answered = &groups[1.min(groups.len())..];
    Expiry {
        mode,
        expiries: answered.len(),
        body_runs: answered.iter().map(Vec::len).sum(),
        most_runs: answered.iter().map(Vec::len).max().unwrap_or(0),
        across,
        hits,
    }
}
