//! Fixed-count runs over N concurrent callers, hdrhistogram latencies, median of three; and
//! variants measured in interleaved rounds, for comparisons on a noisy machine.

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use hdrhistogram::Histogram;

pub(crate) const REPS: usize = 3;
pub(crate) const CONCURRENCY: [usize; 3] = [1, 16, 64];

#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
}

impl Sample {
    /// `123456 (45 / 210)`: ops/s, then p50 and p99 in microseconds.
    pub(crate) fn cell(&self) -> String {
        format!(
            "{:.0} ({:.0} / {:.0})",
            self.ops_per_sec, self.p50_us, self.p99_us
        )
    }
}

/// A histogram of nanoseconds with three significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("3 significant digits is a valid precision")
}

/// Records the nanoseconds since `t`.
pub(crate) fn record_since(h: &mut Histogram<u64>, t: Instant) {
    let _ = h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
}

/// Runs `ops` calls of `op` spread over `callers` tasks; returns throughput and latency.
async fn measure<F, Fut>(callers: usize, ops: usize, op: F) -> Sample
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let per_task = ops / callers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut h = histogram();
                for _ in 0..per_task {
                    let t = Instant::now();
                    op().await;
                    record_since(&mut h, t);
                }
                h
            })
        })
        .collect();
    let mut all = histogram();
    for t in tasks {
        all.add(t.await.expect("a measured call panicked"))
            .expect("histograms with the same bounds add");
    }
    let elapsed = start.elapsed().as_secs_f64();
    Sample {
        ops_per_sec: (per_task * callers) as f64 / elapsed,
        p50_us: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: all.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    v[v.len() / 2]
}

/// One unmeasured warm-up pass, then the median of [`REPS`] measured ones; prints a line.
pub(crate) async fn bench<F, Fut>(name: &str, callers: usize, ops: usize, op: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    measure(callers, ops, op.clone()).await;
    let mut samples = Vec::new();
    for _ in 0..REPS {
        samples.push(measure(callers, ops, op.clone()).await);
    }
    let s = median(samples);
    println!(
        "{name:<36} c={callers:<3} {:>10.0} ops/s  p50 {:>7.1} us  p99 {:>7.1} us",
        s.ops_per_sec, s.p50_us, s.p99_us
    );
    s
}

/// Rounds of interleaved measurements, unless `BENCH_ROUNDS` says otherwise.
pub(crate) fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(9)
}

/// One variant's measurement, started anew on each call.
pub(crate) type Runner =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Sample> + Send>> + Send + Sync>;

/// `ops` calls of `op` over `callers` tasks, as a [`Runner`]; the boxing is per measurement,
/// not per call.
pub(crate) fn runner<F, Fut>(callers: usize, ops: usize, op: F) -> Runner
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move || Box::pin(measure(callers, ops, op.clone())))
}

/// One unmeasured pass of each variant, then `rounds` rounds in which every variant runs
/// once, the order rotated each round, so drift and bursts of load from other processes fall
/// on all variants alike. `samples[variant][round]`.
pub(crate) async fn interleave(rounds: usize, variants: &[Runner]) -> Vec<Vec<Sample>> {
    for v in variants {
        v().await;
    }
    let mut out = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        for i in 0..variants.len() {
            let v = (i + round) % variants.len();
            out[v].push(variants[v]().await);
        }
    }
    out
}

/// The median and the range of some figures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        match (v.first(), v.last()) {
            (Some(&min), Some(&max)) => Self {
                median: v[v.len() / 2],
                min,
                max,
            },
            _ => Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            },
        }
    }

    /// `1.02x (0.97–1.10)`.
    pub(crate) fn ratio(&self) -> String {
        format!("{:.2}x ({:.2}–{:.2})", self.median, self.min, self.max)
    }
}

/// Medians across rounds of ops/s, p50 and p99: `123456 (4.5 / 21)`.
pub(crate) fn median_cell(samples: &[Sample]) -> String {
    let ops = Spread::of(samples.iter().map(|s| s.ops_per_sec)).median;
    let p50 = Spread::of(samples.iter().map(|s| s.p50_us)).median;
    let p99 = Spread::of(samples.iter().map(|s| s.p99_us)).median;
    let us = |v: f64| {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        }
    };
    format!("{ops:.0} ({} / {})", us(p50), us(p99))
}

/// Round by round, `b`'s figure over `a`'s: p50 latency, and mean latency (`a`'s ops/s over
/// `b`'s, the callers being the same).
pub(crate) fn ratios(a: &[Sample], b: &[Sample]) -> (Spread, Spread) {
    let p50 = Spread::of(a.iter().zip(b).map(|(a, b)| b.p50_us / a.p50_us));
    let mean = Spread::of(a.iter().zip(b).map(|(a, b)| a.ops_per_sec / b.ops_per_sec));
    (p50, mean)
}

/// Reads by hand on one multiplexed redis-rs connection, each call one round trip: `GET` of
/// one key, `MGET` of several, or a pipeline of `GET` and `PTTL`; what the server and the
/// protocol alone make of each, beside the cache's calls that send the same.
#[derive(Clone, Copy)]
pub(crate) enum Raw {
    Get,
    Mget,
    GetPttl,
}

pub(crate) fn raw_runner(
    conn: &redis::aio::MultiplexedConnection,
    how: Raw,
    keys: Vec<String>,
    callers: usize,
    ops: usize,
) -> Runner {
    let (conn, keys) = (conn.clone(), Arc::new(keys));
    runner(callers, ops, move || {
        let (mut conn, keys) = (conn.clone(), Arc::clone(&keys));
        async move {
            match how {
                Raw::Get => {
                    let v: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&keys[0])
                        .query_async(&mut conn)
                        .await
                        .expect("GET");
                    std::hint::black_box(v);
                }
                Raw::Mget => {
                    let v: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                        .arg(&keys[..])
                        .query_async(&mut conn)
                        .await
                        .expect("MGET");
                    std::hint::black_box(v);
                }
                Raw::GetPttl => {
                    let v: (Option<Vec<u8>>, i64) = redis::pipe()
                        .cmd("GET")
                        .arg(&keys[0])
                        .cmd("PTTL")
                        .arg(&keys[0])
                        .query_async(&mut conn)
                        .await
                        .expect("GET, PTTL");
                    std::hint::black_box(v);
                }
            }
        }
    })
}

/// A multiplexed redis-rs connection to `url`.
pub(crate) async fn multiplexed(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Whether `BENCH_SKIP` (a comma-separated list) names `part`.
pub(crate) fn skipped(part: &str) -> bool {
    std::env::var("BENCH_SKIP").is_ok_and(|skip| skip.split(',').any(|s| s.trim() == part))
}

/// A cache on `url` under `namespace` with a long command timeout (a benchmark's bursts must
/// not time out), with a warm near cache when `near`.
pub(crate) async fn bench_cache(
    url: &str,
    namespace: &str,
    name: &str,
    near: bool,
) -> cached_runtime::Cache {
    use std::time::Duration;
    let mut builder = cached_runtime::Cache::builder(url)
        .name(name)
        .namespace(namespace)
        .command_timeout(Duration::from_secs(10));
    if near {
        builder = builder.near_cache(10_000);
    }
    let cache = builder.build().await.expect("connect");
    if near {
        assert!(cache.near_ready(Duration::from_secs(15)).await);
    }
    cache
}
