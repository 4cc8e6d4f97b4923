//! Workers: a loop that takes jobs while it has free slots and blocks on the queue's marker
//! list (or sleeps until the next due time) when there is nothing to take, and one task per
//! job that runs the handler, extends the lease meanwhile, and settles the job.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    task::{JoinHandle, JoinSet},
};

use super::{
    Queue,
    job::{Job, JobError},
    lease::{Action, Held, Settled, decode},
    metrics::QueueOp,
    ops::{RawJob, Taken},
};
use crate::{
    connection::{BlockingConnection, cmd},
    error::CacheError,
};

/// After this many blocking waits in a row end with nothing, a worker takes once anyway: a
/// safety net for a wake-up lost with a failed-over Redis.
const RECHECK_AFTER: u32 = 10;

/// The most jobs one take leases (one per free slot).
const MAX_BATCH: usize = 32;

/// `d` with "equal jitter": between half of it and all of it.
pub(crate) fn jittered(d: Duration) -> Duration {
    d / 2 + d.mul_f64(fastrand::f64() / 2.0)
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        jittered(d)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Configures a [`Worker`]; from [`Queue::worker`].
pub struct WorkerBuilder<T, H> {
    queue: Queue<T>,
    handler: H,
    config: Config,
}

#[derive(Clone, Debug)]
struct Config {
    concurrency: usize,
    lease: Duration,
    idle_wait: Duration,
    retry_base: Duration,
    retry_max: Duration,
    error_min: Duration,
    error_max: Duration,
}

impl<T, H> std::fmt::Debug for WorkerBuilder<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queue", &self.queue.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T, H, F> WorkerBuilder<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Fn(Job<T>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), JobError>> + Send + 'static,
{
    pub(crate) fn new(queue: Queue<T>, handler: H) -> Self {
        Self {
            queue,
            handler,
            config: Config {
                concurrency: 1,
                lease: Duration::from_secs(30),
                idle_wait: Duration::from_secs(30),
                retry_base: Duration::from_secs(1),
                retry_max: Duration::from_secs(300),
                error_min: Duration::from_millis(50),
                error_max: Duration::from_secs(5),
            },
        }
    }

    /// How many jobs run at once (1 by default).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// The visibility timeout (30 s by default, at least 100 ms): a job whose worker stops
    /// extending it is runnable again this long after the last extension. The worker
    /// extends it every third of it while the handler runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// How long one blocking wait for a marker lasts on the server (30 s by default, 10 ms
    /// to 1 h); an idle worker sends one `BLPOP` per wait, and a take after ten empty ones.
    /// Delayed jobs and lease deadlines do not depend on it: the worker sleeps locally until
    /// the next one it knows of.
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.config.idle_wait = wait;
        self
    }

    /// A failed attempt `n` is retried after `base · 2ⁿ⁻¹`, at most `max`, with jitter
    /// (half to all of it); 1 s and 5 min by default.
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.retry_base = base;
        self.config.retry_max = max;
        self
    }

    /// How long the worker waits after Redis failed, doubling from `min` up to `max` while
    /// it keeps failing (50 ms and 5 s by default).
    pub fn error_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.error_min = min;
        self.config.error_max = max;
        self
    }

    /// Starts the worker on the current Tokio runtime.
    pub fn start(self) -> Result<Worker, CacheError> {
        let c = &self.config;
        let bad = |m: &str| Err(CacheError::Config(m.to_owned()));
        if c.concurrency == 0 {
            return bad("a worker's concurrency must be at least 1");
        }
        if c.lease < Duration::from_millis(100) {
            return bad("a worker's lease must be at least 100 ms");
        }
        if c.idle_wait < Duration::from_millis(10) || c.idle_wait > Duration::from_secs(3600) {
            return bad("a worker's idle wait must be between 10 ms and 1 h");
        }
        if c.retry_base.is_zero() || c.retry_max < c.retry_base {
            return bad("a worker's retry backoff needs 0 < base <= max");
        }
        if c.error_min.is_zero() || c.error_max < c.error_min {
            return bad("a worker's error backoff needs 0 < min <= max");
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            CacheError::Config("a worker must be started within a Tokio runtime".to_owned())
        })?;
        let (stop_tx, stop_rx) = watch::channel(None);
        let stats = Arc::new(Counters::default());
        let run = Run {
            queue: self.queue,
            handler: Arc::new(self.handler),
            config: self.config,
            stats: Arc::clone(&stats),
            stop: stop_rx,
        };
        let task = runtime.spawn(run.main());
        Ok(Worker {
            stop: stop_tx,
            task: Some(task),
            stats,
        })
    }
}

/// A running worker. [`shutdown`](Self::shutdown) stops it gracefully; dropped, it stops at
/// once, handing back the jobs in hand.
#[derive(Debug)]
pub struct Worker {
    stop: watch::Sender<Option<Instant>>,
    task: Option<JoinHandle<ShutdownReport>>,
    stats: Arc<Counters>,
}

/// What a worker has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Jobs taken.
    pub taken: u64,
    /// Jobs acked.
    pub completed: u64,
    /// Attempts failed and scheduled again.
    pub retried: u64,
    /// Jobs this worker sent to the dead letters.
    pub dead: u64,
    /// Settles rejected because the lease no longer held the job (fencing).
    pub rejected: u64,
    /// Jobs handed back unfinished.
    pub handed_back: u64,
    /// Jobs whose settle could not reach Redis before their lease ran out (they run again).
    pub unsettled: u64,
    /// Redis failures seen by the worker loop (takes and waits).
    pub errors: u64,
    /// Jobs in hand now.
    pub running: u64,
}

/// How a graceful shutdown went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs in hand when the shutdown began that were settled (completed, retried or dead)
    /// before the deadline.
    pub finished: u64,
    /// Jobs in hand at the deadline, handed back unfinished (runnable again at once).
    pub handed_back: u64,
}

#[derive(Debug, Default)]
struct Counters {
    taken: AtomicU64,
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    rejected: AtomicU64,
    handed_back: AtomicU64,
    unsettled: AtomicU64,
    errors: AtomicU64,
    running: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn settled(&self, settled: Settled) {
        Self::add(match settled {
            Settled::Completed => &self.completed,
            Settled::Retrying => &self.retried,
            Settled::Dead => &self.dead,
            Settled::HandedBack => &self.handed_back,
            Settled::Rejected => &self.rejected,
        });
    }
}

impl Worker {
    /// What it has done so far.
    pub fn stats(&self) -> WorkerStats {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            taken: n(&s.taken),
            completed: n(&s.completed),
            retried: n(&s.retried),
            dead: n(&s.dead),
            rejected: n(&s.rejected),
            handed_back: n(&s.handed_back),
            unsettled: n(&s.unsettled),
            errors: n(&s.errors),
            running: n(&s.running),
        }
    }

    /// Stops taking jobs at once, lets the handlers in hand finish within `deadline`, then
    /// hands back the jobs still running (their handlers are dropped). Returns once every
    /// job in hand is settled or handed back.
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        self.stop.send_replace(Some(Instant::now() + deadline));
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => ShutdownReport::default(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.task.is_some() {
            // Stop at once: the loop hands back what it holds and ends on its own.
            self.stop.send_replace(Some(Instant::now()));
        }
    }
}

/// A pending `BLPOP` on the marker list, owning its connection until it ends.
type Waiter = Pin<Box<dyn Future<Output = (BlockingConnection, Result<bool, CacheError>)> + Send>>;

async fn wait_for_marker(
    mut conn: BlockingConnection,
    key: String,
    wait: Duration,
) -> (BlockingConnection, Result<bool, CacheError>) {
    let secs = format!("{:.3}", wait.as_secs_f64());
    let popped = conn
        .query::<Option<(String, String)>>(cmd("BLPOP").arg(key).arg(secs))
        .await;
    (conn, popped.map(|p| p.is_some()))
}

/// Completes with the waiter's result (and clears it); never, when there is none.
async fn wait_on(waiter: &mut Option<Waiter>) -> (BlockingConnection, Result<bool, CacheError>) {
    let Some(w) = waiter.as_mut() else {
        return std::future::pending().await;
    };
    let done = w.await;
    *waiter = None;
    done
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Completes once a stop was asked for (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

/// Completes once the jobs in hand must be handed back (or the worker loop is gone).
async fn aborted(abort: &mut watch::Receiver<bool>) {
    let _ = abort.wait_for(|a| *a).await;
}

/// How one job's task ended.
enum End {
    Settled(Settled),
    /// Its settle could not be made; its lease runs out and it runs again.
    Unsettled,
}

struct Run<T, H> {
    queue: Queue<T>,
    handler: Arc<H>,
    config: Config,
    stats: Arc<Counters>,
    stop: watch::Receiver<Option<Instant>>,
}

impl<T, H, F> Run<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Fn(Job<T>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), JobError>> + Send + 'static,
{
    async fn main(self) -> ShutdownReport {
        let inner = Arc::clone(&self.queue.inner);
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut jobs: JoinSet<End> = JoinSet::new();
        let (abort_tx, abort_rx) = watch::channel(false);
        let mut conn = Some(inner.redis.blocking(self.config.idle_wait));
        let mut waiter: Option<Waiter> = None;
        let mut next_due: Option<Instant> = None;
        let mut errors = Backoff::new(self.config.error_min, self.config.error_max);
        let mut failing = false;
        let mut stop = self.stop.clone();
        'run: loop {
            // A free slot. Meanwhile: reap finished jobs, promote due jobs at their time, and
            // hand on a marker that arrived with no slot to use it.
            let permit = loop {
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break 'run,
                    permit = Arc::clone(&slots).acquire_owned() => match permit {
                        Ok(p) => break p,
                        Err(_) => break 'run,
                    },
                    Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                    (c, woke) = wait_on(&mut waiter), if waiter.is_some() => {
                        conn = Some(c);
                        if matches!(woke, Ok(true)) {
                            inner.hand_on_marker().await;
                        }
                    }
                    () = sleep_until(next_due), if next_due.is_some() => {
                        next_due = match inner.promote().await {
                            Ok(next) => next.map(|d| Instant::now() + d),
                            Err(_) => Some(Instant::now() + errors.next()),
                        };
                    }
                }
            };
            // Every free slot is filled by one take.
            let mut permits = vec![permit];
            while permits.len() < MAX_BATCH {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            let deadline = Instant::now() + self.config.lease;
            match inner.take(self.config.lease, permits.len()).await {
                Ok(Taken::Jobs(raws)) => {
                    self.recovered(&mut errors, &mut failing);
                    for (raw, permit) in raws.into_iter().zip(permits) {
                        Counters::add(&self.stats.taken);
                        jobs.spawn(self.job(raw, deadline, permit, abort_rx.clone()));
                    }
                    continue 'run;
                }
                Ok(Taken::Empty { next_in }) => {
                    // Idle: one slot is enough to wait with.
                    permits.truncate(1);
                    tracing::trace!(queue = %inner.name, ?next_in, "nothing to take");
                    self.recovered(&mut errors, &mut failing);
                    next_due = next_in.map(|d| Instant::now() + d);
                }
                Err(e) => {
                    self.failed("take", &e, &mut failing);
                    let pause = errors.next();
                    drop(permits);
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => break 'run,
                        () = tokio::time::sleep(pause) => continue 'run,
                    }
                }
            }
            // Idle with a free slot: wait for a marker, the next due time, or a stop.
            let mut empty_waits = 0;
            loop {
                if waiter.is_none() {
                    let c = conn
                        .take()
                        .unwrap_or_else(|| inner.redis.blocking(self.config.idle_wait));
                    let key = inner.keys.marker().to_owned();
                    waiter = Some(Box::pin(wait_for_marker(c, key, self.config.idle_wait)));
                }
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => break 'run,
                    (c, woke) = wait_on(&mut waiter) => {
                        conn = Some(c);
                        tracing::trace!(queue = %inner.name, woke = ?woke.as_ref().ok(), "blocking wait ended");
                        match woke {
                            Ok(true) => break,
                            Ok(false) => {
                                empty_waits += 1;
                                if empty_waits >= RECHECK_AFTER {
                                    break;
                                }
                            }
                            Err(e) => {
                                inner.metrics.error(QueueOp::Wait);
                                self.failed("wait", &e, &mut failing);
                                let pause = errors.next();
                                tokio::select! {
                                    biased;
                                    () = stopped(&mut stop) => break 'run,
                                    // Wake-ups may have been missed meanwhile: take.
                                    () = tokio::time::sleep(pause) => break,
                                }
                            }
                        }
                    }
                    () = sleep_until(next_due), if next_due.is_some() => {
                        next_due = None;
                        break;
                    }
                    Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                }
            }
            drop(permits);
        }
        // Stopping: take nothing more. The blocking wait goes with its connection (the server
        // drops a closed client's wait).
        drop(waiter);
        drop(conn);
        let deadline = stop.borrow().unwrap_or_else(Instant::now);
        let mut report = ShutdownReport::default();
        let tally = |end: End, report: &mut ShutdownReport| match end {
            End::Settled(Settled::HandedBack) => report.handed_back += 1,
            End::Settled(_) => report.finished += 1,
            End::Unsettled => {}
        };
        let drained = tokio::time::timeout_at(deadline.into(), async {
            while let Some(end) = jobs.join_next().await {
                if let Ok(end) = end {
                    tally(end, &mut report);
                }
            }
        })
        .await;
        if drained.is_err() {
            abort_tx.send_replace(true);
            while let Some(end) = jobs.join_next().await {
                if let Ok(end) = end {
                    tally(end, &mut report);
                }
            }
        }
        report
    }

    fn recovered(&self, errors: &mut Backoff, failing: &mut bool) {
        errors.reset();
        if std::mem::take(failing) {
            tracing::info!(queue = %self.queue.name(), "redis answers again: the worker resumes");
        }
    }

    fn failed(&self, what: &str, e: &CacheError, failing: &mut bool) {
        Counters::add(&self.stats.errors);
        if std::mem::replace(failing, true) {
            tracing::debug!(queue = %self.queue.name(), error = %e, "worker {what} failed again");
        } else {
            tracing::warn!(queue = %self.queue.name(), error = %e, "worker {what} failed: backing off until redis answers");
        }
    }

    /// The task of one job: decode, run the handler (in a task of its own, so a panic fails
    /// the attempt), extend the lease meanwhile, settle.
    fn job(
        &self,
        raw: RawJob,
        deadline: Instant,
        permit: OwnedSemaphorePermit,
        mut abort: watch::Receiver<bool>,
    ) -> impl Future<Output = End> + Send + 'static {
        let inner = Arc::clone(&self.queue.inner);
        let handler = Arc::clone(&self.handler);
        let config = self.config.clone();
        let stats = Arc::clone(&self.stats);
        async move {
            let _permit = permit;
            stats.running.fetch_add(1, Ordering::Relaxed);
            let _running = Decrement(&stats.running);
            let (mut held, job) = match decode::<T>(&inner, raw, deadline).await {
                Ok(Some(pair)) => pair,
                Ok(None) => {
                    stats.settled(Settled::Dead);
                    return End::Settled(Settled::Dead);
                }
                Err(e) => {
                    tracing::warn!(queue = %inner.name, error = %e, "could not dead-letter a job that does not decode");
                    return End::Unsettled;
                }
            };
            let started = Instant::now();
            let mut run = AbortOnDrop(tokio::spawn(handler(job)));
            let mut extend = tokio::time::interval_at(
                (Instant::now() + config.lease / 3).into(),
                config.lease / 3,
            );
            extend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let outcome = loop {
                tokio::select! {
                    biased;
                    done = &mut run.0 => break Some(done),
                    () = aborted(&mut abort) => break None,
                    _ = extend.tick(), if !held.is_lost() => {
                        if held.extend(config.lease).await.is_err() {
                            // Counted by the op; the next tick tries again while the lease lasts.
                        }
                    }
                }
            };
            inner.metrics.job_duration(started.elapsed());
            let (action, error);
            match outcome {
                None => {
                    run.0.abort();
                    action = Action::Release;
                }
                Some(Ok(Ok(()))) => action = Action::Ack,
                Some(Ok(Err(e))) => {
                    error = e.text();
                    let retry_in = (!e.is_permanent()).then(|| {
                        let exp = held.attempt().saturating_sub(1).min(30);
                        jittered(
                            config
                                .retry_base
                                .saturating_mul(1 << exp)
                                .min(config.retry_max),
                        )
                    });
                    return settle(
                        &mut held,
                        Action::Fail {
                            error: &error,
                            retry_in,
                        },
                        &stats,
                        &inner.name,
                    )
                    .await;
                }
                Some(Err(join)) if join.is_panic() => {
                    error = format!("the handler panicked: {}", panic_text(join.into_panic()));
                    let exp = held.attempt().saturating_sub(1).min(30);
                    let retry_in = Some(jittered(
                        config
                            .retry_base
                            .saturating_mul(1 << exp)
                            .min(config.retry_max),
                    ));
                    return settle(
                        &mut held,
                        Action::Fail {
                            error: &error,
                            retry_in,
                        },
                        &stats,
                        &inner.name,
                    )
                    .await;
                }
                // Cancelled: the runtime is shutting down.
                Some(Err(_)) => action = Action::Release,
            }
            settle(&mut held, action, &stats, &inner.name).await
        }
    }
}

async fn settle(held: &mut Held, action: Action<'_>, stats: &Counters, queue: &str) -> End {
    match held.settle_until_deadline(action).await {
        Ok(Settled::Dead) => {
            if let Action::Fail { error, .. } = action {
                tracing::warn!(queue, job = %held.id(), attempt = held.attempt(), error, "job dead: moved to the dead letters");
            }
            stats.settled(Settled::Dead);
            End::Settled(Settled::Dead)
        }
        Ok(settled) => {
            stats.settled(settled);
            End::Settled(settled)
        }
        Err(e) => {
            Counters::add(&stats.unsettled);
            tracing::warn!(
                queue,
                job = %held.id(),
                error = %e,
                "could not settle a job before its lease ran out: it runs again"
            );
            End::Unsettled
        }
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "(not a string)".to_owned(),
        },
    }
}

/// Aborts the handler's task when the job's task is dropped (a runtime shutting down).
struct AbortOnDrop<R>(JoinHandle<R>);

impl<R> Drop for AbortOnDrop<R> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Decrements a gauge when dropped, however the job's task ends.
struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
