//! A job in hand: its lease's token, and the settles (ack, fail, hand back) that only the
//! current token can make. Dropped unsettled, a lease hands its job back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;

use super::{
    Inner,
    job::{Job, JobError, JobId},
    ops::{RawJob, Settle},
};
use crate::error::CacheError;

/// A job taken under a lease ([`Queue::take`](super::Queue::take)): settle it with
/// [`ack`](Self::ack), [`fail`](Self::fail) or [`release`](Self::release), and
/// [`extend`](Self::extend) it while the work takes longer than the lease.
///
/// Dropped without being settled (a cancelled task, a panic), it hands the job back in the
/// background: nothing stays leased longer than it must.
#[derive(Debug)]
pub struct Lease<T> {
    held: Held,
    job: Job<T>,
}

/// The lease itself, apart from the job: what a worker keeps while its handler owns the job.
#[derive(Debug)]
pub(crate) struct Held {
    inner: Arc<Inner>,
    id: JobId,
    attempt: u32,
    token: String,
    /// When the lease runs out by this process's clock (the server's deadline is no earlier).
    deadline: Instant,
    settled: bool,
    lease_lost: Arc<AtomicBool>,
}

/// How a settle ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settled {
    /// Acked: the job is complete.
    Completed,
    /// Failed, with attempts left: it runs again after its backoff.
    Retrying,
    /// Failed for the last time, or permanently: it is in the dead letters.
    Dead,
    /// Handed back unfinished: runnable again at once, the attempt not counted.
    HandedBack,
    /// Rejected: this lease no longer holds the job (it ran out and another worker took it,
    /// or it completed elsewhere). Counted in `redis_queue_stale_acks_total`.
    Rejected,
}

/// What a settle does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action<'a> {
    Ack,
    Fail {
        error: &'a str,
        retry_in: Option<Duration>,
    },
    Release,
}

impl<T> Lease<T> {
    /// The job.
    pub fn job(&self) -> &Job<T> {
        &self.job
    }

    /// Extends the lease to `lease` from now; `false` when it no longer holds the job (then
    /// the job's [`lease_lost`](Job::lease_lost) is set).
    pub async fn extend(&mut self, lease: Duration) -> Result<bool, CacheError> {
        self.held.extend(lease).await
    }

    /// Completes the job.
    pub async fn ack(mut self) -> Result<Settled, CacheError> {
        self.held.settle_once(Action::Ack, false).await
    }

    /// Fails this attempt with `error`: runnable again after `retry_in` while attempts
    /// remain; dead when `retry_in` is `None` or this was the last attempt.
    pub async fn fail(
        mut self,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<Settled, CacheError> {
        self.held
            .settle_once(Action::Fail { error, retry_in }, false)
            .await
    }

    /// Hands the job back unfinished: runnable again at once, this attempt not counted.
    pub async fn release(mut self) -> Result<Settled, CacheError> {
        self.held.settle_once(Action::Release, false).await
    }
}

impl Held {
    pub(crate) fn id(&self) -> JobId {
        self.id
    }

    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the lease was found lost (by an extension or a settle).
    pub(crate) fn is_lost(&self) -> bool {
        self.lease_lost.load(Ordering::Acquire)
    }

    pub(crate) async fn extend(&mut self, lease: Duration) -> Result<bool, CacheError> {
        let asked = Instant::now();
        match self.inner.extend(self.id, &self.token, lease).await? {
            Settle::Done { .. } => {
                self.deadline = asked + lease;
                Ok(true)
            }
            Settle::Already | Settle::Gone | Settle::Stale => {
                self.lost("extend");
                Ok(false)
            }
        }
    }

    /// One try of `action`. `retried`: an earlier try failed without an answer, so the job
    /// being gone after an ack means that try landed.
    pub(crate) async fn settle_once(
        &mut self,
        action: Action<'_>,
        retried: bool,
    ) -> Result<Settled, CacheError> {
        let (id, token) = (self.id, self.token.as_str());
        let settle = match action {
            Action::Ack => self.inner.ack(id, token).await?,
            Action::Fail { error, retry_in } => self.inner.fail(id, token, error, retry_in).await?,
            Action::Release => self.inner.release(id, token).await?,
        };
        self.settled = true;
        let m = &self.inner.metrics;
        let settled = match (action, settle) {
            (Action::Ack, Settle::Done { .. } | Settle::Already) => Settled::Completed,
            (Action::Ack, Settle::Gone) if retried => Settled::Completed,
            (Action::Fail { .. }, Settle::Done { dead: Some(true) }) => Settled::Dead,
            (Action::Fail { .. }, Settle::Done { .. }) => Settled::Retrying,
            // An earlier try landed; which way it went is not known here.
            (Action::Fail { retry_in, .. }, Settle::Already) => match retry_in {
                Some(_) => Settled::Retrying,
                None => Settled::Dead,
            },
            (Action::Release, Settle::Done { .. } | Settle::Already) => Settled::HandedBack,
            (_, Settle::Gone | Settle::Stale) => {
                self.lost(match action {
                    Action::Ack => "ack",
                    Action::Fail { .. } => "fail",
                    Action::Release => "hand back",
                });
                return Ok(Settled::Rejected);
            }
        };
        match settled {
            Settled::Completed => m.completed(),
            Settled::Retrying => m.retried(),
            Settled::Dead => m.dead(1),
            Settled::HandedBack => m.handed_back(),
            Settled::Rejected => {}
        }
        Ok(settled)
    }

    /// `action` with transient failures retried (with backoff) until the lease's deadline:
    /// past it the job is someone else's to run, and a settle would be rejected anyway.
    pub(crate) async fn settle_until_deadline(
        &mut self,
        action: Action<'_>,
    ) -> Result<Settled, CacheError> {
        let mut pause = Duration::from_millis(20);
        let mut retried = false;
        loop {
            match self.settle_once(action, retried).await {
                Ok(settled) => return Ok(settled),
                Err(e) if e.is_transient() && Instant::now() + pause < self.deadline => {
                    retried = true;
                    tokio::time::sleep(super::worker::jittered(pause)).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records that this lease no longer holds the job.
    fn lost(&self, what: &str) {
        self.lease_lost.store(true, Ordering::Release);
        self.inner.metrics.stale_ack();
        tracing::warn!(
            queue = %self.inner.name,
            job = %self.id,
            attempt = self.attempt,
            "{what} rejected: the lease ran out and another worker holds the job (or completed it)"
        );
    }
}

impl<T: DeserializeOwned> Lease<T> {
    /// The lease of a job just taken; `None` when its payload did not decode (see
    /// [`decode`]).
    /// `deadline`: when the lease runs out, by this process's clock (measured before the
    /// take was sent, so no later than the server's).
    pub(crate) async fn decode(
        inner: &Arc<Inner>,
        raw: RawJob,
        deadline: Instant,
    ) -> Result<Option<Self>, CacheError> {
        Ok(decode(inner, raw, deadline)
            .await?
            .map(|(held, job)| Self { held, job }))
    }
}

/// The lease and job of a job just taken; a payload that does not decode sends the job to
/// the dead letters (`None`): no attempt could ever decode it.
pub(crate) async fn decode<T: DeserializeOwned>(
    inner: &Arc<Inner>,
    raw: RawJob,
    deadline: Instant,
) -> Result<Option<(Held, Job<T>)>, CacheError> {
    match serde_json::from_slice::<T>(&raw.payload) {
        Ok(payload) => {
            let lease_lost = Arc::new(AtomicBool::new(false));
            let held = Held {
                inner: Arc::clone(inner),
                id: raw.id,
                attempt: raw.attempt,
                token: raw.token,
                deadline,
                settled: false,
                lease_lost: Arc::clone(&lease_lost),
            };
            let job = Job {
                id: raw.id,
                attempt: raw.attempt,
                max_attempts: raw.max_attempts,
                lateness: raw.lateness,
                payload,
                lease_lost,
            };
            Ok(Some((held, job)))
        }
        Err(e) => {
            let error = format!("the payload does not decode: {e}");
            tracing::warn!(queue = %inner.name, job = %raw.id, "{error}: moved to the dead letters");
            if inner.fail(raw.id, &raw.token, &error, None).await?
                == (Settle::Done { dead: Some(true) })
            {
                inner.metrics.dead(1);
            }
            Ok(None)
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (inner, id, token) = (Arc::clone(&self.inner), self.id, self.token.clone());
        inner.redis.spawner().clone().spawn(async move {
            hand_back(&inner, id, &token).await;
        });
    }
}

/// Hands back a job whose lease was dropped unsettled (one try: if it fails, the lease runs
/// out and the job is runnable then).
async fn hand_back(inner: &Inner, id: JobId, token: &str) {
    match inner.release(id, token).await {
        Ok(Settle::Done { .. }) => inner.metrics.handed_back(),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            queue = %inner.name,
            job = %id,
            "could not hand back a dropped lease ({e}): the job is runnable when its lease runs out"
        ),
    }
}

impl JobError {
    /// The text kept with a failed job.
    pub(crate) fn text(&self) -> String {
        self.error.to_string()
    }
}
