//! A short scripted load on the demo, read back through its own `GET /metrics` the way the
//! Grafana dashboard (docs/grafana-dashboard.json) reads it, and drawn as docs/load.svg: the
//! hit ratio and the latency while the cache warms up, while Redis stops answering, and
//! after it answers again.
//!
//! `cargo bench -p benches --bench load` (about 40 s). Everything runs on loopback: a private
//! redis-server on a free port, the demo in this process, eight clients at 100 requests/s
//! each, for exactly [`SCRIPT`]'s length. The chart goes to `LOAD_CHART` (default
//! docs/load.svg); a table of the samples to stdout. `LOAD_NEAR_ENTRIES=N` gives the demo a
//! near cache of `N` entries.
//!
//! Through the Redis outage it also counts the database calls (the demo's `/stats`: SQL
//! statements and body runs per prefix) against the distinct keys the clients asked for.
//!
//! `LOAD_SCRIPT=db` runs the other outage instead: every key of the request mix is read once
//! first, half of them are then moved into their stale window (`PEXPIRE`, as their TTL running
//! out would), and the demo's database is down (`POST /admin/db/outage`) from 4 s to 14 s of
//! an 18 s load; the clients count what they got per phase (HTTP status, `X-Cache`). No chart
//! unless `LOAD_CHART` names one.

mod chart;
mod outage;
mod sample;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use sample::{Point, Scraped};
use tests::RedisServer;

/// Clients, each sending one request per [`PACE`].
const CLIENTS: usize = 8;
const PACE: Duration = Duration::from_millis(10);
/// How often `/metrics` is read.
const EVERY: Duration = Duration::from_millis(500);
/// The script: warm up, Redis stopped (SIGSTOP: connections stay open, nothing answers),
/// Redis back; seconds from the start.
const SCRIPT: Script = Script {
    what: What::Redis,
    outage: 12.0..18.0,
    end: 30.0,
};
/// `LOAD_SCRIPT=db`: every key read first, then the database down for 10 s. The whole run
/// stays within the null markers' 30 s, so every key asked for is cached within its window.
const DB_SCRIPT: Script = Script {
    what: What::Database,
    outage: 4.0..14.0,
    end: 18.0,
};

struct Script {
    what: What,
    outage: std::ops::Range<f64>,
    end: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum What {
    /// Redis stopped with `SIGSTOP`.
    Redis,
    /// The demo's database down (`POST /admin/db/outage`).
    Database,
}

/// The demo's admin token in this run (for `POST /admin/db/outage`).
const ADMIN_TOKEN: &str = "load-bench-admin-token";

fn script() -> &'static Script {
    match std::env::var("LOAD_SCRIPT").as_deref() {
        Ok("db") => &DB_SCRIPT,
        _ => &SCRIPT,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped: run it with `cargo bench -p benches --bench load`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let script = script();
    let (points, outage) = rt.block_on(run(script));
    println!(
        "\n| t (s) | req/s | hit ratio | HTTP p50 ms | HTTP p99 ms | Redis GET p99 ms | circuit |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for p in &points {
        println!(
            "| {:.1} | {:.0} | {} | {:.2} | {:.2} | {} | {} |",
            p.t,
            p.rps,
            p.hit_ratio.map_or("-".to_owned(), |r| format!("{:.3}", r)),
            p.http_p50_ms,
            p.http_p99_ms,
            p.redis_p99_ms.map_or("-".to_owned(), |v| format!("{v:.3}")),
            p.circuit,
        );
    }
    outage.print(script.what);
    let path = match (std::env::var("LOAD_CHART"), script.what) {
        (Ok(path), _) => path,
        (Err(_), What::Redis) => {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/load.svg").to_owned()
        }
        (Err(_), What::Database) => return,
    };
    let title = format!(
        "The demo under a scripted load; {} from {} s to {} s",
        match script.what {
            What::Redis => "Redis stopped (SIGSTOP)",
            What::Database => "the database down",
        },
        script.outage.start,
        script.outage.end
    );
    match chart::write(&path, &title, &points, &script.outage) {
        Ok(()) => println!("\nchart written to {path}"),
        Err(e) => eprintln!("cannot write the chart to {path}: {e}"),
    }
}

async fn run(script: &Script) -> (Vec<Point>, outage::Report) {
    let redis = RedisServer::start();
    let db = std::env::temp_dir().join(format!("demo-load-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let mut config = demo_app::Config::new(redis.url(), &db);
    config.bind = "127.0.0.1:0".to_owned();
    config.workers = Some(2);
    config.admin_token = Some(ADMIN_TOKEN.into());
    // `LOAD_NEAR_ENTRIES=10000`: with the near cache, whose fail-safe entries (the demo's
    // items) answer through the outage.
    if let Some(n) = std::env::var("LOAD_NEAR_ENTRIES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        config.cache = config.cache.near_cache(n);
    }
    let running = demo_app::start(config).await.expect("start the demo");
    let base = format!("http://{}", running.addr());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    tests::wait_until_async(Duration::from_secs(15), || async {
        let health = client.get(format!("{base}/healthz")).send().await;
        match health {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .contains(r#""redis":"up""#),
            Err(_) => false,
        }
    })
    .await;
    if script.what == What::Database {
        outage::read_every_key(&client, &base, &paths()).await;
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(script.end);
    let latencies = Arc::new(Mutex::new(histogram()));
    let phase = Arc::new(outage::Phase::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            let latencies = Arc::clone(&latencies);
            let phase = Arc::clone(&phase);
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(i as u64);
                let mut pace = tokio::time::interval(PACE);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seen = outage::Seen::default();
                while Instant::now() < deadline {
                    pace.tick().await;
                    let sent = Instant::now();
                    let path = path(&mut rng);
                    let now = phase.get();
                    let ok = client.get(format!("{base}{path}")).send().await;
                    match ok {
                        Ok(reply) => {
                            seen.answer(now, &path, &reply);
                            let _ = reply.bytes().await;
                        }
                        Err(_) => seen.failed(now, &path),
                    }
                    let nanos = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let _ = latencies
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(nanos);
                }
                seen
            })
        })
        .collect();

    let mut points = Vec::new();
    let mut previous = Scraped::read(&client, &base).await;
    let mut down = false;
    let mut stats = Vec::new();
    let mut next = start + EVERY;
    while next <= deadline {
        tokio::time::sleep_until(next.into()).await;
        let t = start.elapsed().as_secs_f64();
        let scraped = Scraped::read(&client, &base).await;
        let http = std::mem::replace(
            &mut *latencies.lock().unwrap_or_else(PoisonError::into_inner),
            histogram(),
        );
        points.push(Point::between(t, &previous, &scraped, &http, EVERY));
        previous = scraped;
        let in_outage = script.outage.contains(&t);
        if in_outage != down {
            // `/stats` reads only the process's counters: it answers with Redis stopped.
            stats.push(outage::Stats::read(&client, &base).await);
            match (script.what, in_outage) {
                (What::Redis, true) => redis.freeze(),
                (What::Redis, false) => redis.thaw(),
                (What::Database, true) => {
                    let staled = outage::make_half_stale(&redis);
                    println!("moved {staled} entries into their stale window");
                    outage::set_database(&client, &base, ADMIN_TOKEN, true).await;
                }
                (What::Database, false) => {
                    outage::set_database(&client, &base, ADMIN_TOKEN, false).await;
                }
            }
            phase.next();
            down = in_outage;
        }
        next += EVERY;
    }
    if down {
        match script.what {
            What::Redis => redis.thaw(),
            What::Database => outage::set_database(&client, &base, ADMIN_TOKEN, false).await,
        }
    }
    let mut report = outage::Report::default();
    for c in clients {
        if let Ok(seen) = c.await {
            report.add(seen);
        }
    }
    report.stats = stats;
    running.stop().await.expect("stops");
    let _ = std::fs::remove_file(&db);
    (points, report)
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("3 significant digits is a valid precision")
}

const CATEGORIES: [&str; 6] = ["books", "music", "games", "garden", "kitchen", "tools"];
/// The item ids of the mix, and the ids that do not exist.
const ITEMS: std::ops::RangeInclusive<u64> = 1..=300;
const MISSING: std::ops::Range<u32> = 1000..1040;
const PAGES: std::ops::Range<u32> = 1..4;

/// The request mix: items by a skewed popularity (a few ids most of the time), ids that do
/// not exist (null markers), and list pages.
fn path(rng: &mut fastrand::Rng) -> String {
    match rng.u32(0..100) {
        0..85 => {
            let u = rng.f64();
            format!("/items/{}", 1 + (u * u * u * *ITEMS.end() as f64) as u64)
        }
        85..90 => format!("/items/{}", rng.u32(MISSING)),
        _ => {
            let category = CATEGORIES[rng.usize(0..CATEGORIES.len())];
            format!("/items?category={category}&page={}", rng.u32(PAGES))
        }
    }
}

/// Every path [`path`] can give.
fn paths() -> Vec<String> {
    let items = ITEMS.map(|id| format!("/items/{id}"));
    let missing = MISSING.map(|id| format!("/items/{id}"));
    let lists = CATEGORIES.iter().flat_map(|category| {
        PAGES.map(move |page| format!("/items?category={category}&page={page}"))
    });
    items.chain(missing).chain(lists).collect()
}
