//! `GET /metrics`: the process's metrics in the Prometheus text format, rendered from the
//! `metrics` facade by `metrics-exporter-prometheus`.
//!
//! The library reports through the facade and installs nothing; the service installs the
//! recorder, once per process (the first [`start`](crate::start) does), with the library's
//! bucket presets for its histograms and Prometheus's recommended names (unit suffixes, so
//! `db.client.operation.duration` reads `db_client_operation_duration_seconds`). Upkeep
//! (draining histogram samples) runs every few seconds while a server runs.

use std::{sync::OnceLock, time::Duration};

use actix_web::{HttpResponse, get, http::header, web};
use cached_runtime::telemetry::HISTOGRAM_BUCKETS;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;

/// How often upkeep runs.
pub(crate) const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder's handle: `None` when another global recorder was installed first (an
/// embedding program's own), whose exporter then publishes the metrics.
pub(crate) fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match install() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::info!(error = %e, "GET /metrics disabled: the process has another metrics recorder");
                None
            }
        })
        .clone()
}

fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let mut builder = PrometheusBuilder::new().with_recommended_naming(true);
    for (name, buckets) in HISTOGRAM_BUCKETS {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)?;
    }
    builder.install_recorder()
}

/// Runs the recorder's upkeep until the task is aborted.
pub(crate) async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// `GET /metrics`: Prometheus text format 0.0.4; 404 when the process exports its metrics
/// another way.
#[get("/metrics")]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match &state.metrics {
        Some(handle) => HttpResponse::Ok()
            .insert_header((
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ))
            .body(handle.render()),
        None => HttpResponse::NotFound().json(serde_json::json!({
            "error": "metrics are exported by this process's own recorder"
        })),
    }
}
