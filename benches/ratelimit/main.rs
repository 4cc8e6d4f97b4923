//! Rate limits and counters against a private redis-server on loopback:
//!
//! 1. a decision (`RateLimiter::check`) against a hand-written `EVALSHA` loop of the same
//!    script on one multiplexed redis-rs connection, at 1, 16 and 64 callers (target ≥ 0.9x);
//! 2. a refused client: commands sent for 10,000 checks after Redis refused it (target 0);
//! 3. batched counters (`Counter::add`) against plain `INCR` (target ≥ 10x);
//! 4. an allowed request through the Actix middleware against the same app without it, and one
//!    `EVALSHA` round trip (target: with ≤ 1.1 × without + one round trip).
//!
//! `cargo bench -p benches --bench ratelimit [-- --secs N] [--only middleware]` (default 2 s per
//! measurement, each run three times, alternating, median kept; `--only middleware` runs part 4
//! alone). Needs `redis-server` on the `PATH` (or
//! `REDIS_SERVER_BIN`). Prints Markdown tables.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, web};
use tests::RedisServer;

use cached_runtime::{
    Redis,
    counter::Counter,
    ratelimit::{GCRA_SCRIPT, Limit, RateLimiter, actix::RateLimit},
};

/// How many times `command` ran (`INFO commandstats`).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let mut conn = server.conn();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("INFO");
    let field = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&field))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Operations a second of `callers` tasks each running `op(i)` in a loop for `secs`.
async fn throughput<F, Fut>(callers: usize, secs: Duration, op: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let (op, stop, done) = (op.clone(), Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op(i).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a caller panicked");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A limit that admits everything the benchmark can send: one a microsecond, a huge burst.
fn open_limit() -> Limit {
    Limit::new(1_000_000, Duration::from_secs(1)).burst(1_000_000_000)
}

async fn decisions(server: &RedisServer, secs: Duration) {
    let redis = Redis::builder(server.url()).build().await.expect("connect");
    let limiter = RateLimiter::on(&redis, "bench")
        .limit(open_limit())
        .fail_closed()
        .build()
        .expect("limiter");
    let client = redis::Client::open(server.url()).expect("url");
    let hand = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let script = redis::Script::new(GCRA_SCRIPT);
    let sha = script.get_hash().to_owned();
    let _: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(GCRA_SCRIPT)
        .query_async(&mut hand.clone())
        .await
        .expect("SCRIPT LOAD");
    let limit = open_limit();
    // The arguments the limiter sends: cost, interval, capacity (µs).
    let interval = 1u64;
    let capacity = (limit.burst_size() + 1) * interval;
    println!("### A decision against a hand-written EVALSHA loop of the same script\n");
    println!("| callers | check (decisions/s) | hand EVALSHA (/s) | ratio |");
    println!("|---|---|---|---|");
    for callers in [1usize, 16, 64] {
        let keys: Arc<Vec<String>> = Arc::new((0..callers).map(|i| format!("c{i}")).collect());
        let hand_keys: Arc<Vec<String>> = Arc::new(
            (0..callers)
                .map(|i| format!("hand:{{bench:c{i}}}:x"))
                .collect(),
        );
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (l, k) = (limiter.clone(), Arc::clone(&keys));
            ours.push(
                throughput(callers, secs, move |i| {
                    let (l, k) = (l.clone(), Arc::clone(&k));
                    async move {
                        let d = l.check(&k[i], 1).await;
                        assert!(d.is_allowed(), "{d:?}");
                    }
                })
                .await,
            );
            let (c, k, sha) = (hand.clone(), Arc::clone(&hand_keys), sha.clone());
            theirs.push(
                throughput(callers, secs, move |i| {
                    let (mut c, k, sha) = (c.clone(), Arc::clone(&k), sha.clone());
                    async move {
                        let reply: Vec<i64> = redis::cmd("EVALSHA")
                            .arg(&sha)
                            .arg(1)
                            .arg(&k[i])
                            .arg(1)
                            .arg(interval)
                            .arg(capacity)
                            .query_async(&mut c)
                            .await
                            .expect("EVALSHA");
                        assert_eq!(reply[0], 1);
                    }
                })
                .await,
            );
        }
        let (ours, theirs) = (median(ours), median(theirs));
        println!(
            "| {callers} | {ours:.0} | {theirs:.0} | {:.2} |",
            ours / theirs
        );
    }
    println!();
}

async fn refusals(server: &RedisServer) {
    let redis = Redis::builder(server.url()).build().await.expect("connect");
    let limiter = RateLimiter::on(&redis, "refused")
        .limit(Limit::per_hour(1))
        .fail_closed()
        .build()
        .expect("limiter");
    assert!(limiter.check("greedy", 1).await.is_allowed());
    assert!(!limiter.check("greedy", 1).await.is_allowed());
    let before = calls(server, "evalsha");
    let n = 10_000;
    let started = Instant::now();
    for _ in 0..n {
        assert!(!limiter.check("greedy", 1).await.is_allowed());
    }
    let took = started.elapsed();
    let sent = calls(server, "evalsha") - before;
    println!("### A refused client\n");
    println!("| checks after the refusal | EVALSHA sent | time per check |");
    println!("|---|---|---|");
    println!(
        "| {n} | {sent} | {:.0} ns |\n",
        took.as_nanos() as f64 / f64::from(n)
    );
}

async fn counters(server: &RedisServer, secs: Duration) {
    let redis = Redis::builder(server.url()).build().await.expect("connect");
    let plain = Counter::on(&redis, "plain").build().expect("counter");
    let batched = Counter::on(&redis, "batched")
        .batch(Duration::from_millis(100), 1000)
        .build()
        .expect("counter");
    let client = redis::Client::open(server.url()).expect("url");
    let hand = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    println!("### Batched counters against plain INCR (100 ids)\n");
    println!(
        "| callers | Counter::add, batched (/s) | Counter::incr (/s) | hand INCR (/s) | batched / hand |"
    );
    println!("|---|---|---|---|---|");
    for callers in [1usize, 16, 64] {
        let (mut b, mut p, mut h) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let c = batched.clone();
            b.push(
                throughput(callers, secs, move |i| {
                    let c = c.clone();
                    async move { c.add(&format!("{}", i % 100), 1).await }
                })
                .await,
            );
            let c = plain.clone();
            p.push(
                throughput(callers, secs, move |i| {
                    let c = c.clone();
                    async move {
                        c.incr(&format!("{}", i % 100), 1).await.expect("INCRBY");
                    }
                })
                .await,
            );
            let c = hand.clone();
            h.push(
                throughput(callers, secs, move |i| {
                    let mut c = c.clone();
                    async move {
                        let _: i64 = redis::cmd("INCR")
                            .arg(format!("hand:{}", i % 100))
                            .query_async(&mut c)
                            .await
                            .expect("INCR");
                    }
                })
                .await,
            );
        }
        let (b, p, h) = (median(b), median(p), median(h));
        println!("| {callers} | {b:.0} | {p:.0} | {h:.0} | {:.1} |", b / h);
    }
    batched.flush().await.expect("flush");
    println!();
}

/// Serves `$app` (an `App` expression) on a loopback port with one worker, on a thread of its
/// own; returns the address and the handle that stops it. `$before` runs first, on that
/// thread's runtime (where the limiter's connection must live).
macro_rules! serve {
    ($before:expr, |$v:ident| $app:expr) => {{
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let $v = $before.await;
                let server = actix_web::HttpServer::new(move || {
                    let $v = $v.clone();
                    $app
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .expect("bind");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).expect("the bench waits");
                server.await.expect("the server ran");
            })
        });
        rx.recv().expect("the server started")
    }};
}

/// Mean time of `n` sequential keep-alive `GET /` requests to `addr` over one connection.
async fn per_request(addr: std::net::SocketAddr, n: u32) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    for _ in 0..n {
        stream.write_all(request).await.expect("write");
        buf.clear();
        let total = loop {
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(read > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..read]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&buf[..end]).expect("ASCII headers");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("content-length");
            break end + 4 + length;
        };
        while buf.len() < total {
            let read = stream.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..read]);
        }
    }
    started.elapsed() / n
}

/// Whether one `GET /` to `addr` answers 200.
async fn ok(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    let mut head = [0u8; 12];
    stream.write_all(request).await.is_ok()
        && stream.read_exact(&mut head).await.is_ok()
        && &head == b"HTTP/1.1 200"
}

async fn hello() -> HttpResponse {
    HttpResponse::Ok().body("hello")
}

fn middleware(url: String) {
    let limiter_url = url.clone();
    let (bare, bare_handle) = serve!(async {}, |_unit| App::new()
        .route("/", web::get().to(hello)));
    let (limited, limited_handle) = serve!(
        async move {
            let redis = Redis::builder(limiter_url).build().await.expect("connect");
            RateLimiter::on(&redis, "http")
                .limit(open_limit())
                .fail_closed()
                .build()
                .expect("limiter")
        },
        |limiter| App::new()
            .wrap(RateLimit::new(limiter))
            .route("/", web::get().to(hello))
    );
    // The limiter's connection made by the worker itself (lazily, on its own runtime), as
    // against one made on the main thread and shared by the workers.
    let worker_url = url.clone();
    let (per_worker, per_worker_handle) = serve!(async move { worker_url }, |url| {
        let redis = Redis::builder(url).build_lazy().expect("a lazy connection");
        let limiter = RateLimiter::on(&redis, "http-worker")
            .limit(open_limit())
            .fail_closed()
            .build()
            .expect("limiter");
        App::new()
            .wrap(RateLimit::new(limiter))
            .route("/", web::get().to(hello))
    });
    // The same round trip written by hand: a middleware that sends one `EVALSHA` of the script
    // on a redis-rs connection of the worker's own, then calls the handler.
    let hand_url = url.clone();
    let (by_hand, by_hand_handle) = serve!(async move { hand_url }, |url| {
        let cell = Arc::new(tokio::sync::OnceCell::new());
        let sha = redis::Script::new(GCRA_SCRIPT).get_hash().to_owned();
        App::new()
            .wrap(actix_web::middleware::from_fn(
                move |req, next: actix_web::middleware::Next<_>| {
                    let (cell, url, sha) = (Arc::clone(&cell), url.clone(), sha.clone());
                    async move {
                        let conn: &redis::aio::MultiplexedConnection = cell
                            .get_or_init(|| async {
                                redis::Client::open(url)
                                    .expect("url")
                                    .get_multiplexed_async_connection()
                                    .await
                                    .expect("connect")
                            })
                            .await;
                        let reply: Vec<i64> = redis::cmd("EVALSHA")
                            .arg(&sha)
                            .arg(1)
                            .arg("hand:{mw:x}:y")
                            .arg(1)
                            .arg(1)
                            .arg(1_000_000_001u64)
                            .query_async(&mut conn.clone())
                            .await
                            .map_err(actix_web::error::ErrorServiceUnavailable)?;
                        assert_eq!(reply[0], 1);
                        next.call(req).await
                    }
                },
            ))
            .route("/", web::get().to(hello))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        // The lazy connections answer once connected.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(ok(per_worker).await && ok(by_hand).await) {
            assert!(Instant::now() < deadline, "the workers' connections did not come up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // `--profile limited|hand|bare SECS`: requests to that server alone, for a profiler.
        let mut args = std::env::args().skip_while(|a| a != "--profile").skip(1);
        if let (Some(which), Some(secs)) = (args.next(), args.next()) {
            let addr = match which.as_str() {
                "hand" => by_hand,
                "bare" => bare,
                _ => per_worker,
            };
            let secs: u64 = secs.parse().expect("--profile WHICH SECS");
            let redis = Redis::builder(url.clone()).build_lazy().expect("lazy");
            let limiter = RateLimiter::on(&redis, "size")
                .limit(open_limit())
                .fail_closed()
                .build()
                .expect("limiter");
            println!(
                "a check's future: {} bytes",
                std::mem::size_of_val(&limiter.check("k", 1))
            );
            let until = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < until {
                println!("{which}: {:?} a request", per_request(addr, 2_000).await);
            }
            return;
        }
        let client = redis::Client::open(url).expect("url");
        let mut hand = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let sha = redis::Script::new(GCRA_SCRIPT).get_hash().to_owned();
        // Short runs, interleaved many times: the machine's other work drifts, and each
        // median compares runs made close together.
        let n = 2_000;
        let (mut without, mut with, mut worker, mut trip, mut hand_mw) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..15 {
            hand_mw.push(per_request(by_hand, n).await.as_nanos() as f64);
            without.push(per_request(bare, n).await.as_nanos() as f64);
            with.push(per_request(limited, n).await.as_nanos() as f64);
            worker.push(per_request(per_worker, n).await.as_nanos() as f64);
            let started = Instant::now();
            for _ in 0..n {
                let _: Vec<i64> = redis::cmd("EVALSHA")
                    .arg(&sha)
                    .arg(1)
                    .arg("hand:{http:x}:y")
                    .arg(1)
                    .arg(1)
                    .arg(1_000_000_001u64)
                    .query_async(&mut hand)
                    .await
                    .expect("EVALSHA");
            }
            trip.push(started.elapsed().as_nanos() as f64 / f64::from(n));
        }
        // The fastest round of each, as well: on a shared machine a round the scheduler
        // disturbed is slower, never faster, so the minimum is the steadier figure.
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (best_without, best_worker, best_hand) = (best(&without), best(&worker), best(&hand_mw));
        let (without, with, worker, trip, hand_mw) = (
            median(without),
            median(with),
            median(worker),
            median(trip),
            median(hand_mw),
        );
        println!("### An allowed request through the Actix middleware (HTTP/1.1 keep-alive on loopback, one client, one worker)\n");
        println!("| the limiter's connection | without the middleware | with it | one EVALSHA round trip | (with − round trip) / without |");
        println!("|---|---|---|---|---|");
        for (what, with) in [("made on the main thread, shared", with), ("made by the worker", worker)] {
            println!(
                "| {what} | {:.1} µs | {:.1} µs | {:.1} µs | {:.2} |",
                without / 1e3,
                with / 1e3,
                trip / 1e3,
                (with - trip) / without
            );
        }
        // One round trip as a request in the worker pays it: the hand-written middleware's
        // request less the bare one.
        let in_worker = hand_mw - without;
        println!(
            "\nThe same round trip by hand (a `from_fn` middleware sending one `EVALSHA` on the \
             worker's redis-rs connection): {:.1} µs a request, so one round trip from a worker \
             costs {:.1} µs. The limiter's middleware (worker's connection): {:.2}x the hand one; \
             (with − that round trip) / without = {:.2} (target ≤ 1.1).\n",
            hand_mw / 1e3,
            in_worker / 1e3,
            worker / hand_mw,
            (worker - in_worker) / without
        );
        println!(
            "Fastest of the rounds: without {:.1} µs, hand {:.1} µs, the limiter's (worker's \
             connection) {:.1} µs; (with − (hand − without)) / without = {:.2}.\n",
            best_without / 1e3,
            best_hand / 1e3,
            best_worker / 1e3,
            (best_worker - (best_hand - best_without)) / best_without
        );
    });
    runtime.block_on(async {
        bare_handle.stop(false).await;
        limited_handle.stop(false).await;
        per_worker_handle.stop(false).await;
        by_hand_handle.stop(false).await;
    });
}

fn main() {
    let secs = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs);
    let only_middleware = std::env::args().any(|a| a == "middleware");
    let server = RedisServer::start();
    if only_middleware {
        middleware(server.url());
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        decisions(&server, secs).await;
        refusals(&server).await;
        counters(&server, secs).await;
    });
    drop(runtime);
    middleware(server.url());
}
