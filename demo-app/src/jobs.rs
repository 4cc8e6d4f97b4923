//! Delayed jobs: updating an item schedules its reindex a few seconds later on a Redis queue
//! (one job per item however many updates land meanwhile), a worker in this process runs
//! them, and `GET /admin/jobs/dead` lists the jobs that died (the item was deleted first).

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{get, post, web};
use cached_runtime::{
    CacheError, RedisBuilder,
    queue::{EvictionCheck, Job, JobError, JobId, PushOptions, Pushed, Queue, QueueCounts, Worker},
};
use serde::{Deserialize, Serialize};

use crate::{app::AppState, auth::Admin, db::Db, error::ApiError};

/// The queue's name: its keys are `queue:{reindex}:…`.
pub const REINDEX_QUEUE: &str = "reindex";

/// A reindex job: the item to read back and index.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reindex {
    /// The item's id.
    pub item: u64,
}

/// The queue, its in-process worker, and what the worker did.
#[derive(Debug)]
pub struct Jobs {
    queue: Queue<Reindex>,
    worker: Mutex<Option<Worker>>,
    delay: Duration,
    reindexed: Arc<AtomicU64>,
}

impl Jobs {
    /// Connects (in the background when Redis is down now), builds the queue and starts the
    /// worker. The demo's queue shares the cache's Redis, so a policy that may evict is
    /// logged, not refused.
    pub(crate) async fn start(
        redis: RedisBuilder,
        db: Arc<Db>,
        delay: Duration,
    ) -> Result<Self, CacheError> {
        let redis = match redis.clone().build().await {
            Ok(redis) => redis,
            Err(e) => {
                tracing::warn!(error = %e, "the reindex queue's redis does not answer yet: updates cannot schedule reindexes until it does");
                redis.build_lazy()?
            }
        };
        let queue: Queue<Reindex> = Queue::builder(&redis, REINDEX_QUEUE)
            .eviction_check(EvictionCheck::Warn)
            .max_attempts(3)
            .build()
            .await?;
        let reindexed = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&reindexed);
        let worker = queue
            .worker(move |job: Job<Reindex>| reindex(Arc::clone(&db), Arc::clone(&done), job))
            .concurrency(2)
            .start()?;
        Ok(Self {
            queue,
            worker: Mutex::new(Some(worker)),
            delay,
            reindexed,
        })
    }

    /// Schedules item `id`'s reindex after the delay; a second update within the delay is
    /// covered by the job already scheduled.
    pub(crate) async fn schedule(&self, id: u64) -> Result<Pushed, CacheError> {
        let options = PushOptions::new()
            .delay(self.delay)
            .idempotency_key(format!("item:{id}"), self.delay);
        self.queue.push_with(&Reindex { item: id }, &options).await
    }

    /// Reindexes done since start.
    pub fn reindexed(&self) -> u64 {
        self.reindexed.load(Ordering::Relaxed)
    }

    /// The queue, for tests and tools.
    pub fn queue(&self) -> &Queue<Reindex> {
        &self.queue
    }

    /// Stops the worker: reindexes in hand finish within 5 s or are handed back.
    pub(crate) async fn stop(&self) {
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(worker) = worker {
            let report = worker.shutdown(Duration::from_secs(5)).await;
            tracing::info!(
                finished = report.finished,
                handed_back = report.handed_back,
                "reindex worker stopped"
            );
        }
    }
}

/// The job: reads the item back (as an indexer would) and counts it. An item deleted before
/// its reindex ran is a permanent failure: the job is dead at once.
async fn reindex(db: Arc<Db>, done: Arc<AtomicU64>, job: Job<Reindex>) -> Result<(), JobError> {
    let id = job.payload().item;
    let item = web::block(move || db.get(id))
        .await
        .map_err(|e| JobError::retry(e.to_string()))?
        .map_err(JobError::retry)?;
    match item {
        Some(item) => {
            done.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                item = id,
                name = %item.name,
                price = item.price,
                lateness_ms = job.lateness().as_millis(),
                "item reindexed"
            );
            Ok(())
        }
        None => Err(JobError::permanent(format!("item {id} no longer exists"))),
    }
}

/// A dead job as the admin endpoint shows it.
#[derive(Serialize)]
struct DeadBody {
    id: u64,
    item: Option<u64>,
    attempts: u32,
    error: String,
    created_ms: u64,
    died_ms: u64,
}

/// `GET /admin/jobs/dead`'s body.
#[derive(Serialize)]
struct DeadJobs {
    queue: &'static str,
    counts: CountsBody,
    reindexed: u64,
    dead: Vec<DeadBody>,
}

#[derive(Serialize)]
struct CountsBody {
    waiting: u64,
    delayed: u64,
    running: u64,
    dead: u64,
}

impl From<QueueCounts> for CountsBody {
    fn from(c: QueueCounts) -> Self {
        Self {
            waiting: c.waiting,
            delayed: c.delayed,
            running: c.running,
            dead: c.dead,
        }
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn unavailable(e: &CacheError) -> ApiError {
    ApiError::CacheUnavailable(e.to_string())
}

/// Pagination of the dead letters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    50
}

/// `GET /admin/jobs/dead?offset=0&limit=50`: the queue's counts and its dead jobs, oldest
/// first (bearer token as for the other admin endpoint).
#[get("/admin/jobs/dead")]
async fn dead_jobs(
    _admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<DeadQuery>,
) -> Result<web::Json<DeadJobs>, ApiError> {
    let jobs = &state.jobs;
    let limit = query.limit.min(500);
    let counts = jobs.queue.counts().await.map_err(|e| unavailable(&e))?;
    let dead = jobs
        .queue
        .dead(query.offset, limit)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(web::Json(DeadJobs {
        queue: REINDEX_QUEUE,
        counts: counts.into(),
        reindexed: jobs.reindexed(),
        dead: dead
            .into_iter()
            .map(|d| DeadBody {
                id: d.id.0,
                item: d.payload.ok().map(|p| p.item),
                attempts: d.attempts,
                error: d.error,
                created_ms: epoch_ms(d.created),
                died_ms: epoch_ms(d.died),
            })
            .collect(),
    }))
}

#[derive(Serialize)]
struct Requeued {
    requeued: bool,
}

/// `POST /admin/jobs/dead/{id}/requeue`: runs a dead job again, its attempts reset.
#[post("/admin/jobs/dead/{id}/requeue")]
async fn requeue_dead(
    _admin: Admin,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<web::Json<Requeued>, ApiError> {
    let id = JobId(id.into_inner());
    let requeued = state
        .jobs
        .queue
        .requeue_dead(id)
        .await
        .map_err(|e| unavailable(&e))?;
    if !requeued {
        return Err(ApiError::NotFound(format!("job {id} is not dead")));
    }
    Ok(web::Json(Requeued { requeued }))
}

/// Registers the admin endpoints of the jobs.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(dead_jobs).service(requeue_dead);
}
