//! Queue benchmark: cached_runtime::queue beside apalis-redis 0.7 on one private redis-server.
//!
//! 1. push+take+ack throughput at 1, 16 and 64 workers (concurrency slots of one worker);
//! 2. delayed-job lateness (handler start minus due time) p50/p99/max;
//! 3. commands per second that an idle worker sends (INFO commandstats over a window).
//!
//! `cargo run --release -- [jobs] [idle_secs]`

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use cached_runtime::{
    Redis,
    connection::cmd,
    queue::{Job, PushOptions, Queue},
};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let s = Self { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis(url: &str) -> Redis {
    Redis::builder(url)
        .command_timeout(Duration::from_secs(5))
        .max_size(8)
        .build()
        .await
        .expect("connect")
}

/// Pushes `n` jobs from 16 producer tasks and waits until `done` reaches `n`.
async fn ours_throughput(url: &str, workers: usize, n: u64) -> f64 {
    let r = redis(url).await;
    let q: Queue<u64> = Queue::builder(&r, format!("tp-{workers}"))
        .build()
        .await
        .expect("queue");
    let done = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&done);
    let worker = q
        .worker(move |_job: Job<u64>| {
            let d = Arc::clone(&d);
            async move {
                d.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .concurrency(workers)
        .start()
        .expect("worker");
    let started = Instant::now();
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut i = p;
                while i < n {
                    q.push(&i).await.expect("push");
                    i += 16;
                }
            })
        })
        .collect();
    for p in producers {
        p.await.expect("producer");
    }
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    worker.shutdown(Duration::from_secs(5)).await;
    rate
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    n: u64,
}

/// apalis's defaults (fetch 10 jobs per 100 ms poll, scheduled jobs moved every 30 s), or
/// tuned (`APALIS_TUNED`): 100 per 10 ms poll, scheduled jobs moved every 10 ms.
fn apalis_config(namespace: &str) -> apalis_redis::Config {
    let config = apalis_redis::Config::default().set_namespace(namespace);
    if std::env::var("APALIS_TUNED").is_ok() {
        config
            .set_buffer_size(100)
            .set_poll_interval(Duration::from_millis(10))
            .set_enqueue_scheduled(Duration::from_millis(10))
    } else {
        config
    }
}

async fn apalis_throughput(url: &str, workers: usize, n: u64) -> f64 {
    let conn = apalis_redis::connect(url).await.expect("apalis connect");
    let config = apalis_config(&format!("apalis-tp-{workers}"));
    let storage: RedisStorage<Task> = RedisStorage::new_with_config(conn, config);
    let done = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&done);
    let worker = WorkerBuilder::new(format!("apalis-{workers}"))
        .concurrency(workers)
        .backend(storage.clone())
        .build_fn(move |_task: Task| {
            let d = Arc::clone(&d);
            async move {
                d.fetch_add(1, Ordering::Relaxed);
                Ok::<(), BoxDynError>(())
            }
        });
    let run = tokio::spawn(worker.run());
    let started = Instant::now();
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let mut s = storage.clone();
            tokio::spawn(async move {
                let mut i = p;
                while i < n {
                    s.push(Task { n: i }).await.expect("push");
                    i += 16;
                }
            })
        })
        .collect();
    for p in producers {
        p.await.expect("producer");
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = done.load(Ordering::Relaxed);
    let rate = got as f64 / started.elapsed().as_secs_f64();
    run.abort();
    if got < n {
        println!("  apalis: only {got} of {n} done within 300 s");
    }
    rate
}

fn epoch_us() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_micros())
        .expect("fits")
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "  {name}: n={} lateness p50={:.1} ms p99={:.1} ms max={:.1} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

/// `k` jobs due at random times 0.1–3 s ahead, one idle worker (16 slots): handler start
/// minus due time, by this machine's clock (Redis runs on it too).
async fn ours_lateness(url: &str, k: u64) -> Histogram<u64> {
    let r = redis(url).await;
    let q: Queue<u64> = Queue::builder(&r, "late").build().await.expect("queue");
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("hist")));
    let (h, done) = (Arc::clone(&hist), Arc::new(AtomicU64::new(0)));
    let d = Arc::clone(&done);
    let worker = q
        .worker(move |job: Job<u64>| {
            let late = epoch_us().saturating_sub(*job.payload());
            h.lock().expect("lock").record(late).expect("record");
            d.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        })
        .concurrency(16)
        .start()
        .expect("worker");
    // Let it go idle first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..k {
        let delay = Duration::from_millis(100 + fastrand_ms(2900));
        let due = epoch_us() + u64::try_from(delay.as_micros()).expect("fits");
        q.push_with(&due, &PushOptions::new().delay(delay))
            .await
            .expect("push");
    }
    while done.load(Ordering::Relaxed) < k {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await;
    hist.lock().expect("lock").clone()
}

fn fastrand_ms(below: u64) -> u64 {
    // A small LCG: no extra dependency for spreading due times.
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let x = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 33) % below
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Due {
    due_us: u64,
}

async fn apalis_lateness(url: &str, k: u64) -> Histogram<u64> {
    let conn = apalis_redis::connect(url).await.expect("apalis connect");
    let config = apalis_config("apalis-late");
    let mut storage: RedisStorage<Due> = RedisStorage::new_with_config(conn, config);
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("hist")));
    let (h, done) = (Arc::clone(&hist), Arc::new(AtomicU64::new(0)));
    let d = Arc::clone(&done);
    let worker = WorkerBuilder::new("apalis-late")
        .concurrency(16)
        .backend(storage.clone())
        .build_fn(move |task: Due| {
            let late = epoch_us().saturating_sub(task.due_us);
            h.lock().expect("lock").record(late).expect("record");
            d.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), BoxDynError>(()) }
        });
    let run = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..k {
        // apalis schedules at whole seconds (a Unix timestamp).
        let due_s = (epoch_us() / 1_000_000) + 1 + fastrand_ms(3);
        storage
            .schedule(Due { due_us: due_s * 1_000_000 }, i64::try_from(due_s).expect("fits"))
            .await
            .expect("schedule");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < k && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run.abort();
    hist.lock().expect("lock").clone()
}

async fn commandstats(url: &str) -> Vec<(String, u64)> {
    let r = redis(url).await;
    let info: String = r
        .query(cmd("INFO").arg("commandstats"))
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

async fn idle(window: Duration) {
    // Ours: a fresh server, one worker with the default idle wait (30 s), after one job.
    {
        let server = Server::start();
        let url = server.url();
        let r = redis(&url).await;
        let q: Queue<u64> = Queue::builder(&r, "idle").build().await.expect("queue");
        let worker = q
            .worker(|_job: Job<u64>| async { Ok(()) })
            .concurrency(16)
            .lease(Duration::from_secs(1))
            .start()
            .expect("worker");
        q.push(&1).await.expect("push");
        // Past the lease deadline the worker was told of: truly idle from here.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let reset = redis(&url).await;
        let _: () = reset
            .query(cmd("CONFIG").arg("RESETSTAT"))
            .await
            .expect("RESETSTAT");
        tokio::time::sleep(window).await;
        let stats = commandstats(&url).await;
        print_idle("cached_runtime::queue worker (16 slots)", &stats, window);
        worker.shutdown(Duration::from_secs(1)).await;
    }
    {
        let server = Server::start();
        let url = server.url();
        let conn = apalis_redis::connect(url.clone()).await.expect("apalis");
        let storage: RedisStorage<Task> = RedisStorage::new(conn);
        let worker = WorkerBuilder::new("apalis-idle")
            .concurrency(16)
            .backend(storage)
            .build_fn(|_task: Task| async { Ok::<(), BoxDynError>(()) });
        let run = tokio::spawn(worker.run());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let reset = redis(&url).await;
        let _: () = reset
            .query(cmd("CONFIG").arg("RESETSTAT"))
            .await
            .expect("RESETSTAT");
        tokio::time::sleep(window).await;
        let stats = commandstats(&url).await;
        print_idle("apalis-redis worker (16 slots)", &stats, window);
        run.abort();
    }
}

fn print_idle(name: &str, stats: &[(String, u64)], window: Duration) {
    // The reading's own INFO (and the reset) are not the worker's.
    let own: Vec<&(String, u64)> = stats
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "info" | "config|resetstat" | "config"))
        .collect();
    let total: u64 = own.iter().map(|(_, c)| c).sum();
    println!(
        "  {name}: {:.3} commands/s over {:?}: {:?}",
        total as f64 / window.as_secs_f64(),
        window,
        own
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let idle_secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    println!("throughput: push+take+ack of {n} jobs (16 producers), jobs/s");
    let only_apalis = std::env::var("APALIS_ONLY").is_ok();
    for workers in [1, 16, 64] {
        let server = Server::start();
        let ours = if only_apalis { 0.0 } else { ours_throughput(&server.url(), workers, n).await };
        drop(server);
        let server = Server::start();
        let theirs = apalis_throughput(&server.url(), workers, n).await;
        drop(server);
        println!("  {workers:>2} workers: cached_runtime::queue {ours:>8.0}   apalis-redis {theirs:>8.0}");
    }
    println!("delayed-job lateness (handler start minus due time)");
    if !only_apalis {
        let server = Server::start();
        report("cached_runtime::queue, 500 jobs due 0.1-3 s ahead", &ours_lateness(&server.url(), 500).await);
        drop(server);
    }
    let server = Server::start();
    report("apalis-redis, 500 jobs due at whole seconds 1-3 s ahead", &apalis_lateness(&server.url(), 500).await);
    drop(server);
    if !only_apalis {
        println!("idle worker");
        idle(Duration::from_secs(idle_secs)).await;
    }
}
