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

mod chart;
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
    outage: 12.0..18.0,
    end: 30.0,
};

struct Script {
    outage: std::ops::Range<f64>,
    end: f64,
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
    let points = rt.block_on(run());
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
    let path = std::env::var("LOAD_CHART")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/load.svg").to_owned());
    match chart::write(&path, &points, &SCRIPT.outage) {
        Ok(()) => println!("\nchart written to {path}"),
        Err(e) => eprintln!("cannot write the chart to {path}: {e}"),
    }
}

async fn run() -> Vec<Point> {
    let redis = RedisServer::start();
    let db = std::env::temp_dir().join(format!("demo-load-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let mut config = demo_app::Config::new(redis.url(), &db);
    config.bind = "127.0.0.1:0".to_owned();
    config.workers = Some(2);
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

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(SCRIPT.end);
    let latencies = Arc::new(Mutex::new(histogram()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            let latencies = Arc::clone(&latencies);
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(i as u64);
                let mut pace = tokio::time::interval(PACE);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < deadline {
                    pace.tick().await;
                    let sent = Instant::now();
                    let ok = client.get(format!("{base}{}", path(&mut rng))).send().await;
                    if let Ok(reply) = ok {
                        let _ = reply.bytes().await;
                    }
                    let nanos = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let _ = latencies
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(nanos);
                }
            })
        })
        .collect();

    let mut points = Vec::new();
    let mut previous = Scraped::read(&client, &base).await;
    let mut frozen = false;
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
        let in_outage = SCRIPT.outage.contains(&t);
        if in_outage != frozen {
            if in_outage {
                redis.freeze();
            } else {
                redis.thaw();
            }
            frozen = in_outage;
        }
        next += EVERY;
    }
    if frozen {
        redis.thaw();
    }
    for c in clients {
        let _ = c.await;
    }
    running.stop().await.expect("stops");
    let _ = std::fs::remove_file(&db);
    points
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("3 significant digits is a valid precision")
}

/// The request mix: items by a skewed popularity (a few ids most of the time), ids that do
/// not exist (null markers), and list pages.
fn path(rng: &mut fastrand::Rng) -> String {
    match rng.u32(0..100) {
        0..85 => {
            let u = rng.f64();
            format!("/items/{}", 1 + (u * u * u * 300.0) as u64)
        }
        85..90 => format!("/items/{}", rng.u32(1000..1040)),
        _ => {
            const CATEGORIES: [&str; 6] = ["books", "music", "games", "garden", "kitchen", "tools"];
            let category = CATEGORIES[rng.usize(0..CATEGORIES.len())];
            format!("/items?category={category}&page={}", rng.u32(1..4))
        }
    }
}
