//! One reading of `/metrics`, and what changed between two readings: what Grafana's `rate()`
//! and `histogram_quantile()` compute over the same series.

use hdrhistogram::Histogram;
use prometheus_parse::{Scrape, Value};

/// The cache's counters and the `GET` latency buckets at one moment.
pub(crate) struct Scraped {
    /// Calls answered without the body (hits, null hits, stale answers, coalesced), and all
    /// calls.
    answered: f64,
    calls: f64,
    /// `(le, cumulative count)` of successful `GET`s.
    get_buckets: Vec<(f64, f64)>,
    circuit: f64,
}

impl Scraped {
    pub(crate) async fn read(client: &reqwest::Client, base: &str) -> Self {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("the demo answers /metrics")
            .text()
            .await
            .expect("a body");
        let scrape =
            Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
        Self::from(&scrape)
    }

    fn from(scrape: &Scrape) -> Self {
        let catalog = |s: &&prometheus_parse::Sample| s.labels.get("cache") == Some("catalog");
        let mut out = Self {
            answered: 0.0,
            calls: 0.0,
            get_buckets: Vec::new(),
            circuit: 0.0,
        };
        for s in scrape.samples.iter().filter(catalog) {
            match (s.metric.as_str(), &s.value) {
                ("redis_cache_requests_total", Value::Counter(v)) => {
                    out.calls += v;
                    if matches!(
                        s.labels.get("outcome"),
                        Some("hit" | "null_hit" | "stale" | "coalesced")
                    ) {
                        out.answered += v;
                    }
                }
                ("db_client_operation_duration_seconds", Value::Histogram(buckets))
                    if s.labels.get("db_operation_name") == Some("GET")
                        && s.labels.get("error_type").is_none() =>
                {
                    out.get_buckets = buckets.iter().map(|b| (b.less_than, b.count)).collect();
                }
                ("redis_cache_circuit_state", Value::Gauge(v)) => out.circuit = *v,
                _ => {}
            }
        }
        out
    }
}

/// One point of the chart.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    pub(crate) t: f64,
    pub(crate) rps: f64,
    pub(crate) hit_ratio: Option<f64>,
    pub(crate) http_p50_ms: f64,
    pub(crate) http_p99_ms: f64,
    pub(crate) redis_p99_ms: Option<f64>,
    pub(crate) circuit: f64,
}

impl Point {
    pub(crate) fn between(
        t: f64,
        before: &Scraped,
        after: &Scraped,
        http: &Histogram<u64>,
        every: std::time::Duration,
    ) -> Self {
        let calls = after.calls - before.calls;
        let ms = |q: f64| http.value_at_quantile(q) as f64 / 1e6;
        Self {
            t,
            rps: http.len() as f64 / every.as_secs_f64(),
            hit_ratio: (calls > 0.0).then(|| (after.answered - before.answered) / calls),
            http_p50_ms: ms(0.5),
            http_p99_ms: ms(0.99),
            redis_p99_ms: quantile(0.99, &before.get_buckets, &after.get_buckets).map(|s| s * 1e3),
            circuit: after.circuit,
        }
    }
}

/// `histogram_quantile` over the increase between two readings of cumulative buckets:
/// linear within the bucket the rank falls in.
fn quantile(q: f64, before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let old = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = if n > lower.1 {
                (rank - lower.1) / (n - lower.1)
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, n);
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let before = [(0.001, 0.0), (0.01, 0.0), (f64::INFINITY, 0.0)];
        let after = [(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(super::quantile(0.5, &before, &after), Some(0.001));
        assert_eq!(super::quantile(0.75, &before, &after), Some(0.0055));
    }
}
