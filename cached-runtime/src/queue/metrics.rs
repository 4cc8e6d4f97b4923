//! What a queue reports through the `metrics` facade, every series labelled with the queue's
//! name (bounded: queues are named in code); the table is in the
//! [`queue`](super) module's documentation.

use std::{sync::Arc, time::Duration};

use metrics::SharedString;

use super::job::QueueCounts;

/// The operations whose failures `redis_queue_errors_total` counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum QueueOp {
    Push,
    Take,
    Ack,
    Fail,
    Extend,
    Release,
    Wait,
    Admin,
}

impl QueueOp {
    fn label(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Take => "take",
            Self::Ack => "ack",
            Self::Fail => "fail",
            Self::Extend => "extend",
            Self::Release => "release",
            Self::Wait => "wait",
            Self::Admin => "admin",
        }
    }
}

/// The series of one queue.
#[derive(Clone, Debug)]
pub(crate) struct QueueMetrics {
    queue: SharedString,
}

impl QueueMetrics {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            queue: SharedString::from(Arc::<str>::from(name)),
        }
    }

    fn count(&self, name: &'static str, n: u64) {
        if n > 0 {
            metrics::counter!(name, "queue" => self.queue.clone()).increment(n);
        }
    }

    pub(crate) fn pushed(&self) {
        self.count("redis_queue_pushed_total", 1);
    }

    pub(crate) fn duplicate(&self) {
        self.count("redis_queue_duplicates_total", 1);
    }

    pub(crate) fn completed(&self) {
        self.count("redis_queue_completed_total", 1);
    }

    pub(crate) fn retried(&self) {
        self.count("redis_queue_retried_total", 1);
    }

    pub(crate) fn dead(&self, n: u64) {
        self.count("redis_queue_dead_total", n);
    }

    pub(crate) fn lease_expired(&self, n: u64) {
        self.count("redis_queue_lease_expired_total", n);
    }

    pub(crate) fn stale_ack(&self) {
        self.count("redis_queue_stale_acks_total", 1);
    }

    pub(crate) fn handed_back(&self) {
        self.count("redis_queue_handed_back_total", 1);
    }

    pub(crate) fn error(&self, op: QueueOp) {
        metrics::counter!("redis_queue_errors_total", "queue" => self.queue.clone(), "op" => op.label())
            .increment(1);
    }

    pub(crate) fn counts(&self, counts: &QueueCounts) {
        for (state, n) in [
            ("waiting", counts.waiting),
            ("delayed", counts.delayed),
            ("running", counts.running),
            ("dead", counts.dead),
        ] {
            #[allow(clippy::cast_precision_loss)] // a gauge of job counts
            metrics::gauge!("redis_queue_jobs", "queue" => self.queue.clone(), "state" => state)
                .set(n as f64);
        }
    }

    pub(crate) fn lateness(&self, lateness: Duration) {
        metrics::histogram!("redis_queue_lateness_seconds", "queue" => self.queue.clone())
            .record(lateness.as_secs_f64());
    }

    pub(crate) fn job_duration(&self, took: Duration) {
        metrics::histogram!("redis_queue_job_duration_seconds", "queue" => self.queue.clone())
            .record(took.as_secs_f64());
    }
}
