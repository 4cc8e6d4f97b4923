//! Instructions and client CPU per call of `#[redis_cache]` beside the hand-written path
//! (one multiplexed redis-rs connection: `GET`, decode; on a miss the body and `SET EX`), on a
//! private `redis-server` on a free loopback port, killed on exit.
//!
//! ```text
//! perf-instr run  <variant> <callers> <ops>       # `ops` measured calls after a warm-up
//! perf-instr tput <callers> <ops> <variant>...    # ops/s and client CPU µs per call
//! ```
//!
//! Variants: `hand-hit`, `ours-hit`, `hand-miss`, `ours-miss`, and with the `near` feature
//! `near-hit` and `near-miss` (the function on a cache with `near_cache(100_000)`).
//!
//! `run` is for callgrind: `instr.sh` runs it twice under `valgrind --tool=callgrind` with two
//! values of `ops` and divides the difference in instructions by the difference in calls, so
//! start-up, connecting and the warm-up cancel out. `tput` runs every variant at the given
//! concurrency on two Tokio workers, rotating their order per repetition, and reports the
//! median of three: ops/s, and the process's CPU time (user + system, `getrusage`) per call.
//! `redis-server` is a separate process, so that time is the client's alone.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cached_runtime::{Cache, redis_cache};
use nix::sys::resource::{UsageWho, getrusage};
use redis::{AsyncCommands, aio::MultiplexedConnection};
use serde::{Deserialize, Serialize};

const TTL_SECS: u64 = 3600;
const HOT_ID: u64 = 42;
/// Calls before measuring (and before each `tput` repetition).
const WARM_UP: usize = 2_000;
const REPS: usize = 3;

/// About 200 bytes of JSON, as in the workspace's benchmarks.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    category: String,
    price_cents: u64,
    tags: Vec<String>,
    description: String,
}

static BODY_RUNS: AtomicU64 = AtomicU64::new(0);

/// The "database read".
async fn load(id: u64) -> Item {
    BODY_RUNS.fetch_add(1, Ordering::Relaxed);
    Item {
        id,
        name: "Stainless steel kettle".into(),
        category: "kitchen".into(),
        price_cents: 3499,
        tags: vec!["steel".into(), "1.7l".into(), "electric".into()],
        description: "Boils water fast; auto shut-off; cordless base that turns all the way".into(),
    }
}

#[redis_cache(prefix = "item", ttl = 3600, skip(cache), cache = cache)]
async fn item_ours(cache: &Cache, id: u64) -> Item {
    load(id).await
}

/// `GET` + `serde_json`, else the body and `SET EX` of its JSON.
async fn item_hand(conn: &mut MultiplexedConnection, id: u64) -> Item {
    let key = format!("hand:{id}");
    let got: Option<Vec<u8>> = conn.get(&key).await.expect("GET");
    if let Some(bytes) = got {
        return serde_json::from_slice(&bytes).expect("the stored JSON decodes");
    }
    let v = load(id).await;
    let bytes = serde_json::to_vec(&v).expect("an Item encodes");
    let _: () = conn.set_ex(&key, bytes, TTL_SECS).await.expect("SET EX");
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    HandHit,
    OursHit,
    HandMiss,
    OursMiss,
    #[cfg(feature = "near")]
    NearHit,
    #[cfg(feature = "near")]
    NearMiss,
}

impl Variant {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hand-hit" => Self::HandHit,
            "ours-hit" => Self::OursHit,
            "hand-miss" => Self::HandMiss,
            "ours-miss" => Self::OursMiss,
            #[cfg(feature = "near")]
            "near-hit" => Self::NearHit,
            #[cfg(feature = "near")]
            "near-miss" => Self::NearMiss,
            _ => return None,
        })
    }

    fn is_miss(self) -> bool {
        match self {
            Self::HandMiss | Self::OursMiss => true,
            #[cfg(feature = "near")]
            Self::NearMiss => true,
            _ => false,
        }
    }
}

/// The clients, on one server.
struct Clients {
    conn: MultiplexedConnection,
    cache: Cache,
    #[cfg(feature = "near")]
    near: Cache,
    /// Ids never read before: every miss call takes the next one.
    next_cold: AtomicU64,
}

impl Clients {
    async fn new(url: &str) -> Self {
        let client = redis::Client::open(url).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let cache = Cache::builder(url).build().await.expect("cache");
        #[cfg(feature = "near")]
        let near = {
            let near = Cache::builder(url)
                .namespace("near")
                .near_cache(100_000)
                .build()
                .await
                .expect("near cache");
            assert!(near.near_ready(Duration::from_secs(10)).await, "tracking");
            near
        };
        item_hand(&mut conn, HOT_ID).await;
        item_ours(&cache, HOT_ID).await;
        #[cfg(feature = "near")]
        item_ours(&near, HOT_ID).await;
        Self {
            conn,
            cache,
            #[cfg(feature = "near")]
            near,
            next_cold: AtomicU64::new(1_000_000),
        }
    }

    async fn call(&self, v: Variant) {
        let id = if v.is_miss() {
            self.next_cold.fetch_add(1, Ordering::Relaxed)
        } else {
            HOT_ID
        };
        let item = match v {
            Variant::HandHit | Variant::HandMiss => item_hand(&mut self.conn.clone(), id).await,
            Variant::OursHit | Variant::OursMiss => item_ours(&self.cache, id).await,
            #[cfg(feature = "near")]
            Variant::NearHit | Variant::NearMiss => item_ours(&self.near, id).await,
        };
        std::hint::black_box(item);
    }
}

/// `ops` calls of `v` split over `callers` tasks.
async fn drive(clients: &Arc<Clients>, v: Variant, callers: usize, ops: usize) {
    let mut tasks = Vec::with_capacity(callers);
    for c in 0..callers {
        let clients = Arc::clone(clients);
        let share = ops / callers + usize::from(c < ops % callers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                clients.call(v).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("a caller panicked");
    }
}

/// The process's CPU time so far (user, system) and its context switches (voluntary,
/// involuntary).
#[derive(Clone, Copy, Debug)]
struct Usage {
    user: Duration,
    system: Duration,
    switches: i64,
}

impl Usage {
    fn now() -> Self {
        let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
        let tv = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(t.tv_sec().unsigned_abs())
                + Duration::from_micros(t.tv_usec().unsigned_abs())
        };
        Self {
            user: tv(usage.user_time()),
            system: tv(usage.system_time()),
            switches: usage.voluntary_context_switches() + usage.involuntary_context_switches(),
        }
    }
}

/// Commands the server has processed so far.
async fn server_commands(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed in INFO stats")
}

/// One repetition's figures.
#[derive(Clone, Copy, Debug)]
struct Rep {
    ops_per_sec: f64,
    /// Client CPU per call, µs: user and system.
    user_us: f64,
    system_us: f64,
    switches: f64,
    commands: f64,
}

/// A private `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("perf-instr-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let child = Command::new(std::env::var("REDIS_SERVER_BIN").unwrap_or("redis-server".into()))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/ensure-redis.sh installs it)");
        let server = Self { child, port, dir };
        let client = redis::Client::open(server.url()).expect("url");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not answer PING");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: perf-instr run <variant> <callers> <ops> | perf-instr tput <callers> <ops> <variant>...\n\
         variants: hand-hit ours-hit hand-miss ours-miss (near-hit near-miss with --features near)"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let variant = |s: &String| Variant::parse(s).unwrap_or_else(|| usage());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = Server::start();
    let clients = Arc::new(rt.block_on(Clients::new(&server.url())));
    match args.first().map(String::as_str) {
        Some("run") => {
            let (v, callers, ops) = (variant(args.get(1).unwrap_or_else(|| usage())), num(2), num(3));
            rt.block_on(async {
                drive(&clients, v, callers, WARM_UP).await;
                drive(&clients, v, callers, ops).await;
            });
            println!("{v:?} callers={callers} ops={ops} body_runs={}", BODY_RUNS.load(Ordering::Relaxed));
        }
        Some("sizes") => {
            // The future a call returns: moved into place on every call.
            let f = item_ours(&clients.cache, HOT_ID);
            println!("item_ours future: {} bytes", std::mem::size_of_val(&f));
            drop(f);
        }
        Some("tput") => {
            let (callers, ops) = (num(1), num(2));
            let variants: Vec<Variant> = args[3..].iter().map(variant).collect();
            if variants.is_empty() {
                usage();
            }
            let mut results: Vec<Vec<Rep>> = vec![Vec::new(); variants.len()];
            rt.block_on(async {
                let mut conn = clients.conn.clone();
                for &v in &variants {
                    drive(&clients, v, callers, WARM_UP).await;
                }
                for rep in 0..REPS {
                    for i in 0..variants.len() {
                        let i = (i + rep) % variants.len();
                        let commands = server_commands(&mut conn).await;
                        let (usage, started) = (Usage::now(), Instant::now());
                        drive(&clients, variants[i], callers, ops).await;
                        let (wall, after) = (started.elapsed(), Usage::now());
                        let commands = server_commands(&mut conn).await - commands - 1;
                        let per = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
                        results[i].push(Rep {
                            ops_per_sec: ops as f64 / wall.as_secs_f64(),
                            user_us: per(after.user - usage.user),
                            system_us: per(after.system - usage.system),
                            switches: (after.switches - usage.switches) as f64 / ops as f64,
                            commands: commands as f64 / ops as f64,
                        });
                    }
                }
            });
            println!("variant\tcallers\tops/s\tcpu_us\tuser_us\tsys_us\tswitches\tcommands\treps_ops/s");
            for (v, mut r) in variants.iter().zip(results) {
                r.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
                let m = r[r.len() / 2];
                let all: Vec<String> = r.iter().map(|x| format!("{:.0}", x.ops_per_sec)).collect();
                println!(
                    "{v:?}\t{callers}\t{:.0}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{}",
                    m.ops_per_sec,
                    m.user_us + m.system_us,
                    m.user_us,
                    m.system_us,
                    m.switches,
                    m.commands,
                    all.join(",")
                );
            }
        }
        _ => usage(),
    }
    drop(clients);
    drop(rt);
    drop(server);
}
