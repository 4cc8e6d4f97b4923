//! HTTP under `wrk`: the demo's `GET /items/{id}` served from the cache, the same request
//! revalidated with `If-None-Match` (a `304` from the cache), the same read with the near cache
//! on (answered from process memory), the same handler with the cache out of reach (fail-open, so every request reads SQLite), a handler that returns the same
//! JSON as a constant, and the axum example's item read, 200 and 304.
//!
//! The demo has no switch to bypass its cache and this benchmark does not change it, so the
//! "bypassed" run points the demo at a loopback port where no Redis listens: that measures
//! the database read plus the cache's fail-open path (a refused connection per attempt, or
//! nothing when the runtime stops trying), an upper bound on a clean bypass's cost.

use std::{net::SocketAddr, process::Command, time::Duration};

use actix_web::{App, HttpResponse, HttpServer, web};
use tests::{RedisServer, free_port};

const CONNECTIONS: usize = 64;
const SECONDS: u64 = 5;
const PATH: &str = "/items/1";
/// The demo's near cache bound in the near-cache run (what `REDIS_CACHE_NEAR_ENTRIES` sets).
const LOCAL_ENTRIES: u64 = 10_000;

#[derive(Clone, Copy, Debug)]
struct Wrk {
    requests_per_sec: f64,
    p99_ms: f64,
}

/// `wrk -t2 -c64 -d{secs}s --latency [-H header]`; `None` when wrk is missing or its output
/// unreadable.
fn wrk(addr: SocketAddr, secs: u64, header: Option<&str>) -> Option<Wrk> {
    let mut command = Command::new("wrk");
    command
        .args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s")])
        .arg("--latency");
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let out = command.arg(format!("http://{addr}{PATH}")).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let requests_per_sec = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))?
        .trim();
    Some(Wrk {
        requests_per_sec,
        p99_ms: parse_duration_ms(p99)?,
    })
}

/// `812.00us`, `1.25ms`, `2.00s` as milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// A warm-up second, then the measured run; prints a table row.
fn measure(name: &str, addr: SocketAddr) -> Option<Wrk> {
    measure_with(name, addr, None)
}

/// [`measure`] with a request header on every request.
fn measure_with(name: &str, addr: SocketAddr, header: Option<&str>) -> Option<Wrk> {
    wrk(addr, 1, header)?;
    let w = wrk(addr, SECONDS, header)?;
    println!(
        "| {name} | {:.0} | {:.2} ms |",
        w.requests_per_sec, w.p99_ms
    );
    Some(w)
}

/// The demo on `127.0.0.1:0`; `local_entries` > 0 turns its near cache on, as
/// `REDIS_CACHE_NEAR_ENTRIES` does through `CacheBuilder::from_env`.
async fn start_demo(
    redis_url: String,
    db: &std::path::Path,
    local_entries: u64,
) -> demo_app::Running {
    let mut config = demo_app::Config::new(redis_url, db);
    config.bind = "127.0.0.1:0".to_owned();
    config.cache = config.cache.near_cache(local_entries);
    demo_app::start(config).await.expect("start the demo")
}

/// Requests answered from the demo's process memory so far.
fn near_hits(running: &demo_app::Running) -> u64 {
    let total = running.state().cache.stats().total;
    total.near_hits + total.near_null_hits
}

pub(crate) fn run(rt: &tokio::runtime::Runtime) {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("\n## HTTP\n\nnot measured: `wrk` is not installed (apt-get install wrk)");
        return;
    }
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("cached-bench-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the bench's temp dir");
    println!(
        "\n## HTTP: `wrk -t2 -c{CONNECTIONS} -d{SECONDS}s` on GET {PATH} (after a 1 s warm-up)\n"
    );
    println!("| server | requests/s | p99 |");
    println!("|---|---:|---:|");

    let warm = rt.block_on(start_demo(redis.url(), &dir.join("warm.db"), 0));
    let (body, etag) = rt.block_on(get_item(warm.addr()));
    let cached = measure("demo, cache warm (200)", warm.addr());
    let revalidated = measure_with(
        "demo, cache warm, `If-None-Match` (304)",
        warm.addr(),
        Some(&format!("If-None-Match: {etag}")),
    );
    rt.block_on(warm.stop()).expect("stop the demo");

    let near = rt.block_on(start_demo(redis.url(), &dir.join("near.db"), LOCAL_ENTRIES));
    assert!(
        rt.block_on(near.state().cache.near_ready(Duration::from_secs(10))),
        "the demo's near cache did not start serving"
    );
    rt.block_on(get_item(near.addr()));
    let local_before = near_hits(&near);
    let near_cached = measure(
        &format!("demo, near cache on (`near_cache({LOCAL_ENTRIES})`), warm (200)"),
        near.addr(),
    );
    let near_total = near.state().cache.stats().total;
    let near_local = near_hits(&near) - local_before;
    rt.block_on(near.stop()).expect("stop the demo");

    let down = format!("redis://127.0.0.1:{}", free_port());
    let bypassed = rt.block_on(start_demo(down, &dir.join("bypassed.db"), 0));
    measure(
        "demo, Redis unreachable (fail-open: SQLite read per request)",
        bypassed.addr(),
    );
    rt.block_on(bypassed.stop()).expect("stop the demo");

    let constant = rt.block_on(async move {
        let server = HttpServer::new(move || {
            let body = body.clone();
            App::new().route(
                PATH,
                web::get().to(move || {
                    let body = body.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }),
            )
        })
        .disable_signals()
        .shutdown_timeout(1)
        .bind("127.0.0.1:0")
        .expect("bind the constant server");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        (addr, handle)
    });
    let fixed = measure("constant JSON handler (same bytes)", constant.0);
    rt.block_on(async {
        constant.1.stop(true).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
    if let (Some(c), Some(f)) = (cached, fixed) {
        println!(
            "\nwarm item read / constant handler: {:.2}",
            c.requests_per_sec / f.requests_per_sec
        );
    }
    if let (Some(n), Some(f)) = (near_cached, fixed) {
        println!(
            "\nwarm item read with the near cache / constant handler: {:.2}",
            n.requests_per_sec / f.requests_per_sec
        );
    }
    println!(
        "\nnear-cache demo: {near_local} calls answered from process memory during the runs \
         (warm-up and measured); all its calls: {}, Redis hits {}",
        near_total.calls(),
        near_total.hits
    );
    if let (Some(ok), Some(not_modified)) = (cached, revalidated) {
        println!(
            "\n304 / 200 on the same warm demo: {:.2}",
            not_modified.requests_per_sec / ok.requests_per_sec
        );
    }

    println!("\n### The axum example (`demo-axum`), same Redis\n");
    println!("| server | requests/s | p99 |");
    println!("|---|---:|---:|");
    let axum = rt.block_on(async {
        let mut config = demo_axum::Config::new(&redis.url(), dir.join("axum.db"));
        config.bind = "127.0.0.1:0".to_owned();
        demo_axum::start(config).await.expect("start demo-axum")
    });
    let (_, etag) = rt.block_on(get_item(axum.addr()));
    let ok = measure("demo-axum, cache warm (200)", axum.addr());
    let not_modified = measure_with(
        "demo-axum, cache warm, `If-None-Match` (304)",
        axum.addr(),
        Some(&format!("If-None-Match: {etag}")),
    );
    rt.block_on(axum.stop()).expect("stop demo-axum");
    if let (Some(ok), Some(not_modified)) = (ok, not_modified) {
        println!(
            "\n304 / 200 on the same warm demo-axum: {:.2}",
            not_modified.requests_per_sec / ok.requests_per_sec
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The item's body and `ETag`, read until the cache answers (the demos connect lazily).
async fn get_item(addr: SocketAddr) -> (actix_web::web::Bytes, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = reqwest::get(format!("http://{addr}{PATH}"))
            .await
            .expect("GET the item");
        let hit = response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v == "HIT");
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.expect("the item's body");
        if let (true, Some(etag)) = (hit, etag) {
            return (body, etag);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the item never came from the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
