//! Fixed-count runs over N concurrent callers, hdrhistogram latencies, median of three.

use std::{future::Future, sync::Arc, time::Instant};

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
    Fut: Future<Output = ()> + Send,
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
    Fut: Future<Output = ()> + Send,
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
