//! A job queue on Redis that loses nothing: typed jobs, delayed jobs, leases with fencing,
//! retries with backoff, dead letters, workers that block instead of polling. Feature `queue`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cached_runtime::CacheError> {
//! use std::time::Duration;
//! use cached_runtime::{Redis, queue::{PushOptions, Queue}};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Reindex { item: u64 }
//!
//! let redis = Redis::builder("redis://127.0.0.1:6379").build().await?;
//! let queue: Queue<Reindex> = Queue::builder(&redis, "reindex").build().await?;
//!
//! // Runnable in 5 s; a second push for the same item within those 5 s is a no-op.
//! let options = PushOptions::new()
//!     .delay(Duration::from_secs(5))
//!     .idempotency_key("item:42", Duration::from_secs(5));
//! queue.push_with(&Reindex { item: 42 }, &options).await?;
//!
//! let worker = queue
//!     .worker(|job: cached_runtime::queue::Job<Reindex>| async move {
//!         println!("reindexing item {}", job.payload().item);
//!         Ok(())
//!     })
//!     .concurrency(8)
//!     .start()?;
//! // … and when the process stops: finish or hand back the jobs in hand within 10 s.
//! worker.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **At least once.** A job is taken under a lease (a visibility timeout) that its worker
//!   extends while the handler runs. A worker that dies or stalls stops extending it; once
//!   it runs out, the job is runnable again (counted in `redis_queue_lease_expired_total`).
//!   A handler may therefore run more than once for one job: make it idempotent.
//! - **Fencing.** Each lease has a token; an ack, failure, extension or hand-back with a
//!   token that no longer holds the lease is rejected, counted
//!   (`redis_queue_stale_acks_total`) and logged, so a stalled worker that wakes up cannot
//!   complete or fail a job that another worker now holds.
//! - **Retries.** A failed attempt is retried after an exponential backoff (with jitter, up
//!   to a maximum) while it has attempts left, then the job is dead: listed by
//!   [`Queue::dead`], requeued by [`Queue::requeue_dead`]. Completed jobs are deleted, or
//!   kept bounded by count and age ([`QueueBuilder::keep_completed`]).
//! - **Delayed jobs** are due at a time measured by Redis's clock, taken once (every
//!   transition is one atomic script), never before they are due. Idle workers block in
//!   `BLPOP` on a marker list that pushes fill, and sleep locally until the next due time
//!   or lease deadline they were told of: an idle worker sends nothing but its blocking waits.
//! - **Cluster-safe.** Every key of a queue is under its hash tag, `{prefix}{{name}}:…`, so
//!   they share one slot; every script is given all of them as `KEYS`.
//! - **Redis down.** A push returns the error (never drops the job silently); a worker counts
//!   the failure, backs off and resumes when Redis answers.
//! - **Eviction.** At start, [`QueueBuilder::build`] refuses (or warns, see
//!   [`EvictionCheck`]) when Redis's `maxmemory-policy` may evict the queue's keys.
//!
//! # Keys
//!
//! With the default prefix `queue:` and a queue named `mail`: `queue:{mail}:wait`,
//! `:delayed`, `:active`, `:dead`, `:done` (sorted sets of job ids), `:jobs` (a hash of
//! payloads and job state), `:ids` and `:fence` (counters), `:idem` and `:idem-exp`
//! (idempotency keys), `:marker` (a list that wakes blocked workers).
//!
//! # Metrics
//!
//! Through the `metrics` facade, labelled `queue`:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `redis_queue_pushed_total` | counter | `queue` | jobs pushed (duplicates not included) |
//! | `redis_queue_duplicates_total` | counter | `queue` | pushes that were no-ops: their idempotency key was seen within its window |
//! | `redis_queue_completed_total` | counter | `queue` | jobs acked by the worker that held their lease |
//! | `redis_queue_retried_total` | counter | `queue` | failed attempts scheduled again (with backoff) |
//! | `redis_queue_dead_total` | counter | `queue` | jobs moved to the dead letters (out of attempts, a permanent error, a payload that does not decode) |
//! | `redis_queue_lease_expired_total` | counter | `queue` | leases that ran out (a worker died, stalled or lost Redis): the job is runnable again, or dead |
//! | `redis_queue_stale_acks_total` | counter | `queue` | acks, failures or extensions rejected because the worker no longer held the lease (fencing) |
//! | `redis_queue_handed_back_total` | counter | `queue` | jobs handed back unfinished (shutdown deadline, a dropped lease) |
//! | `redis_queue_errors_total` | counter | `queue`, `op` | Redis commands of the queue that failed (`push`, `take`, `ack`, `fail`, `extend`, `release`, `wait`, `admin`) |
//! | `redis_queue_jobs` | gauge | `queue`, `state` | jobs `waiting`, `delayed`, `running` and `dead`, as last seen by a take or [`Queue::counts`](Queue::counts) |
//! | `redis_queue_lateness_seconds` | histogram | `queue` | how long after it became due each job was taken (Redis's clock) |
//! | `redis_queue_job_duration_seconds` | histogram | `queue` | how long handlers ran |

mod eviction;
mod job;
mod keys;
mod lease;
mod metrics;
mod ops;
mod scripts;
mod worker;

use std::{marker::PhantomData, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};

pub use self::eviction::EvictionCheck;
pub use self::job::{
    DeadJob, Job, JobError, JobId, JobState, MAX_PRIORITY, PushOptions, Pushed, QueueCounts,
};
pub use self::lease::{Lease, Settled};
pub use self::worker::{ShutdownReport, Worker, WorkerBuilder, WorkerStats};
use self::{keys::Keys, metrics::QueueMetrics};
use crate::{connection::Redis, error::CacheError};

/// The prefix of every queue's keys unless [`QueueBuilder::prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "queue:";

/// A named queue of jobs of type `T` (serialized as JSON): cheap to clone, shared by the
/// producers and workers of one process.
pub struct Queue<T> {
    inner: Arc<Inner>,
    _payload: PhantomData<fn(T) -> T>,
}

/// What every handle, lease and worker of one queue shares.
pub(crate) struct Inner {
    pub(crate) redis: Redis,
    pub(crate) name: String,
    pub(crate) keys: Keys,
    pub(crate) metrics: QueueMetrics,
    pub(crate) max_attempts: u32,
    pub(crate) keep_completed: u64,
    pub(crate) keep_completed_age: Duration,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _payload: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("redis", &self.inner.redis.describe())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Queue`]; from [`Queue::builder`].
#[derive(Debug)]
pub struct QueueBuilder<T> {
    redis: Redis,
    name: String,
    prefix: String,
    eviction: EvictionCheck,
    max_attempts: u32,
    keep_completed: (u64, Duration),
    _payload: PhantomData<fn(T) -> T>,
}

impl<T> QueueBuilder<T> {
    /// The prefix of the queue's keys, before its `{name}` hash tag ([`DEFAULT_PREFIX`]):
    /// up to 64 of `A-Z a-z 0-9 _ . : / -`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What to do when Redis may evict the queue's keys ([`EvictionCheck::Refuse`] by
    /// default).
    pub fn eviction_check(mut self, check: EvictionCheck) -> Self {
        self.eviction = check;
        self
    }

    /// How many times a job may be taken before it is dead, unless its push says otherwise
    /// (5 by default, at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Keeps up to `count` completed jobs, none older than `max_age` (zero: no age limit),
    /// for [`Queue::state`]; by default (`count` 0) a completed job is deleted at once.
    /// Trimmed on each ack, a bounded batch at a time.
    pub fn keep_completed(mut self, count: u64, max_age: Duration) -> Self {
        self.keep_completed = (count, max_age);
        self
    }

    /// Checks the settings and Redis's eviction policy; see [`EvictionCheck`].
    pub async fn build(self) -> Result<Queue<T>, CacheError> {
        let keys = Keys::new(&self.prefix, &self.name)?;
        if self.max_attempts == 0 {
            return Err(CacheError::Config(
                "a queue's jobs need at least one attempt".to_owned(),
            ));
        }
        eviction::check(&self.redis, &self.name, self.eviction).await?;
        Ok(Queue {
            inner: Arc::new(Inner {
                metrics: QueueMetrics::new(&self.name),
                redis: self.redis,
                name: self.name,
                keys,
                max_attempts: self.max_attempts,
                keep_completed: self.keep_completed.0,
                keep_completed_age: self.keep_completed.1,
            }),
            _payload: PhantomData,
        })
    }
}

impl<T> Queue<T> {
    /// A builder for the queue `name` (1 to 64 of `A-Z a-z 0-9 _ . : -`) on `redis`. A queue
    /// wants a Redis that never evicts: often not the cache's.
    pub fn builder(redis: &Redis, name: impl Into<String>) -> QueueBuilder<T> {
        QueueBuilder {
            redis: redis.clone(),
            name: name.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            eviction: EvictionCheck::default(),
            max_attempts: 5,
            keep_completed: (0, Duration::ZERO),
            _payload: PhantomData,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The Redis it runs on.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    /// How many jobs each state holds now (and the `redis_queue_jobs` gauges updated).
    pub async fn counts(&self) -> Result<QueueCounts, CacheError> {
        self.inner.counts().await
    }

    /// Where job `id` is now; `None` once it completed (unless completed jobs are kept),
    /// was deleted, or was never pushed.
    pub async fn state(&self, id: JobId) -> Result<Option<JobState>, CacheError> {
        self.inner.state(id).await
    }

    /// Makes dead job `id` runnable again with its attempts reset; `false` when it is not
    /// dead.
    pub async fn requeue_dead(&self, id: JobId) -> Result<bool, CacheError> {
        Ok(self.inner.requeue_dead(Some(id), 1).await? == 1)
    }

    /// Makes up to `max` of the oldest dead jobs runnable again; returns how many.
    pub async fn requeue_all_dead(&self, max: u64) -> Result<u64, CacheError> {
        self.inner.requeue_dead(None, max).await
    }

    /// Deletes dead job `id` for good; `false` when it is not dead.
    pub async fn delete_dead(&self, id: JobId) -> Result<bool, CacheError> {
        self.inner.delete_dead(id).await
    }
}

impl<T: Serialize> Queue<T> {
    /// Pushes a job, runnable at once. Returns its id; an error when Redis did not take it
    /// (then it was not queued, unless the answer alone was lost: push with an
    /// idempotency key to retry safely).
    pub async fn push(&self, job: &T) -> Result<JobId, CacheError> {
        Ok(self.push_with(job, &PushOptions::new()).await?.id())
    }

    /// Pushes a job as `options` say: delayed, at a time, with a priority, an idempotency
    /// key, its own attempts.
    pub async fn push_with(&self, job: &T, options: &PushOptions) -> Result<Pushed, CacheError> {
        let payload = serde_json::to_vec(job).map_err(|e| CacheError::Encode(Box::new(e)))?;
        self.inner.push(payload, options).await
    }
}

impl<T: DeserializeOwned> Queue<T> {
    /// Dead jobs, oldest first, from `offset`, at most `count`.
    pub async fn dead(&self, offset: u64, count: u64) -> Result<Vec<DeadJob<T>>, CacheError> {
        let raw = self.inner.list_dead(offset, count).await?;
        Ok(raw
            .into_iter()
            .map(|(id, died, payload, attempts, error, created)| DeadJob {
                id,
                payload: serde_json::from_slice(&payload).map_err(|e| e.to_string()),
                attempts,
                error,
                created,
                died,
            })
            .collect())
    }
}

impl<T: DeserializeOwned + Send + 'static> Queue<T> {
    /// Takes the first runnable job under a lease of `lease`, for a consumer of its own;
    /// `None` when nothing is runnable. Most programs run a [`worker`](Self::worker) instead.
    ///
    /// The returned [`Lease`] must be acked, failed or handed back; dropped, it is handed
    /// back. A job whose payload does not decode into `T` is moved to the dead letters and
    /// the next one is taken.
    pub async fn take(&self, lease: Duration) -> Result<Option<Lease<T>>, CacheError> {
        loop {
            let deadline = std::time::Instant::now() + lease;
            match self.inner.take(lease, 1).await? {
                ops::Taken::Empty { .. } => return Ok(None),
                ops::Taken::Jobs(raws) => {
                    for raw in raws {
                        if let Some(lease) = Lease::decode(&self.inner, raw, deadline).await? {
                            return Ok(Some(lease));
                        }
                    }
                }
            }
        }
    }

    /// A worker that runs `handler` for each job; configure it, then
    /// [`start`](WorkerBuilder::start) it.
    ///
    /// The handler's `Ok(())` completes the job; an `Err` fails the attempt (retried with
    /// backoff while attempts remain, unless [`JobError::permanent`]); a panic fails it too.
    pub fn worker<H, F>(&self, handler: H) -> WorkerBuilder<T, H>
    where
        H: Fn(Job<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        WorkerBuilder::new(self.clone(), handler)
    }
}
