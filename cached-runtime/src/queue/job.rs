//! What a queue holds and hands out: job ids, push options, jobs as a handler sees them, the
//! errors a handler returns, and the views of a queue's state.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::error::BoxError;

/// A job's id: unique within its queue, in push order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The highest priority a job can have.
pub const MAX_PRIORITY: u8 = 15;

/// How to push one job: when it becomes runnable, its priority, attempts and idempotency key.
///
/// ```
/// use std::time::Duration;
/// use cached_runtime::queue::PushOptions;
///
/// let options = PushOptions::new()
///     .delay(Duration::from_secs(5))
///     .idempotency_key("reindex:42", Duration::from_secs(5))
///     .max_attempts(3);
/// ```
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    pub(crate) delay: Duration,
    pub(crate) at: Option<SystemTime>,
    pub(crate) priority: u8,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) idempotency: Option<(String, Duration)>,
}

impl PushOptions {
    /// Runnable at once, priority 0, the queue's attempts, no idempotency key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runnable after `delay` (by Redis's clock, from when the push reaches it).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self.at = None;
        self
    }

    /// Runnable at `at` (wall-clock time, compared with Redis's clock); a time in the past
    /// is runnable at once.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = Some(at);
        self
    }

    /// 0 (the default) to [`MAX_PRIORITY`]: among runnable jobs, higher priorities are taken
    /// first, and jobs of one priority in push order. Above the maximum, the push fails.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// How many times the job may be taken before it is dead (at least 1); the queue's
    /// default otherwise.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// A second push with the same `key` within `window` of the first is a no-op that returns
    /// the first job's id ([`Pushed::Duplicate`]). `window` is at least a millisecond.
    pub fn idempotency_key(mut self, key: impl Into<String>, window: Duration) -> Self {
        self.idempotency = Some((key.into(), window));
        self
    }
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A new job.
    Queued(JobId),
    /// Its idempotency key was pushed within its window: nothing was pushed; the id is the
    /// earlier job's.
    Duplicate(JobId),
}

impl Pushed {
    /// The job's id (the earlier job's for a duplicate).
    pub fn id(self) -> JobId {
        match self {
            Self::Queued(id) | Self::Duplicate(id) => id,
        }
    }

    /// Whether nothing was pushed because of the idempotency key.
    pub fn is_duplicate(self) -> bool {
        matches!(self, Self::Duplicate(_))
    }
}

/// A job as its handler receives it.
#[derive(Debug)]
pub struct Job<T> {
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) lateness: Duration,
    pub(crate) payload: T,
    pub(crate) lease_lost: Arc<AtomicBool>,
}

impl<T> Job<T> {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Which attempt this is: 1 the first time it is taken.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts it has in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long after it became due (its push, its delay, its retry's backoff) it was taken,
    /// by Redis's clock.
    pub fn lateness(&self) -> Duration {
        self.lateness
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The payload, by value.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// Whether this worker lost the job's lease (it could not extend it in time, say while
    /// Redis was unreachable or the process stalled): another worker may be running it, and
    /// this one's result will be rejected. A handler may stop early when it sees this.
    pub fn lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::Acquire)
    }
}

/// Why a handler did not complete a job: retried with backoff while it has attempts left,
/// unless [`permanent`](Self::permanent), then dead.
#[derive(Debug)]
pub struct JobError {
    pub(crate) error: BoxError,
    pub(crate) permanent: bool,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self {
            error: error.into(),
            permanent: false,
        }
    }

    /// A failure that would repeat: the job is dead at once, whatever attempts it has left.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self {
            error: error.into(),
            permanent: true,
        }
    }

    /// Whether the job goes straight to the dead letters.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(error: E) -> Self {
        Self::retry(error)
    }
}

/// Where a job is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// Runnable, waiting for a worker.
    Waiting,
    /// Due later: pushed with a delay, or backing off before a retry.
    Delayed,
    /// Leased to a worker.
    Running,
    /// Out of attempts: in the dead letters.
    Dead,
    /// Completed, and kept (see `QueueBuilder::keep_completed`).
    Completed,
}

/// How many jobs a queue holds in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Runnable.
    pub waiting: u64,
    /// Due later.
    pub delayed: u64,
    /// Leased to workers.
    pub running: u64,
    /// Dead letters.
    pub dead: u64,
    /// Completed jobs kept.
    pub completed: u64,
}

impl QueueCounts {
    /// Jobs not yet completed or dead: waiting, delayed and running.
    pub fn pending(&self) -> u64 {
        self.waiting + self.delayed + self.running
    }
}

/// A job in the dead letters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadJob<T> {
    /// Its id.
    pub id: JobId,
    /// Its payload, or why it does not decode.
    pub payload: Result<T, String>,
    /// How many times it was taken.
    pub attempts: u32,
    /// Its last error.
    pub error: String,
    /// When it was pushed.
    pub created: SystemTime,
    /// When it died.
    pub died: SystemTime,
}
