//! Each operation of a queue as one script call, and its reply read into Rust: what the
//! public handle, leases and workers are built on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Inner,
    job::{JobId, JobState, MAX_PRIORITY, PushOptions, Pushed, QueueCounts},
    metrics::QueueOp,
    scripts,
};
use crate::{
    connection::{Script, ToRedisArgs, Value, pipe},
    error::CacheError,
};

/// A job leased by a take, its payload not yet decoded.
#[derive(Debug)]
pub(crate) struct RawJob {
    pub(crate) id: JobId,
    pub(crate) payload: Vec<u8>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) token: String,
    pub(crate) lateness: Duration,
}

/// What a take found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// One job or more, in the order they were runnable.
    Jobs(Vec<RawJob>),
    /// Nothing runnable; something is due (a delayed job, a lease's end) in this long.
    Empty { next_in: Option<Duration> },
}

/// How a settle (ack, fail, extend, hand back) went, from the script's token check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done now. For a fail: `Some(true)` dead, `Some(false)` retry scheduled.
    Done { dead: Option<bool> },
    /// Settled before by this same lease: an earlier try whose answer was lost landed.
    Already,
    /// The job is gone (completed and not kept).
    Gone,
    /// Another lease holds it: this worker's lease ran out (fencing).
    Stale,
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn unexpected(what: &str) -> CacheError {
    CacheError::Command {
        code: None,
        source: format!("unexpected reply to the queue's {what} script").into(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `{waiting, delayed, running, dead}` at `from` in a script's reply.
fn counts_at(reply: &[Value], from: usize) -> QueueCounts {
    let n = |i: usize| {
        int(reply.get(from + i))
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    };
    QueueCounts {
        waiting: n(0),
        delayed: n(1),
        running: n(2),
        dead: n(3),
        completed: 0,
    }
}

impl Inner {
    async fn run<A: ToRedisArgs>(
        &self,
        op: QueueOp,
        script: &Script,
        args: A,
    ) -> Result<Value, CacheError> {
        let reply = self.redis.eval(script, self.keys.all(), args).await;
        if reply.is_err() {
            self.metrics.error(op);
        }
        reply
    }

    pub(crate) async fn push(
        &self,
        payload: Vec<u8>,
        options: &PushOptions,
    ) -> Result<Pushed, CacheError> {
        if options.priority > MAX_PRIORITY {
            return Err(CacheError::Config(format!(
                "job priority {} is above the maximum, {MAX_PRIORITY}",
                options.priority
            )));
        }
        let max_attempts = options.max_attempts.unwrap_or(self.max_attempts);
        if max_attempts == 0 {
            return Err(CacheError::Config(
                "a job needs at least one attempt".to_owned(),
            ));
        }
        let at = match options.at {
            // Before the epoch is in the past: runnable at once.
            Some(at) => ms(at.duration_since(UNIX_EPOCH).unwrap_or_default()).to_string(),
            None => String::new(),
        };
        let (key, window) = match &options.idempotency {
            Some((key, window)) if window.is_zero() => {
                return Err(CacheError::Config(format!(
                    "the idempotency window of key {key:?} is zero"
                )));
            }
            Some((key, window)) => (key.as_str(), ms(*window)),
            None => ("", 0),
        };
        let reply = self
            .run(
                QueueOp::Push,
                &scripts::PUSH,
                (
                    payload,
                    ms(options.delay),
                    at,
                    options.priority,
                    max_attempts,
                    key,
                    window,
                ),
            )
            .await?;
        let Value::Array(reply) = reply else {
            return Err(unexpected("push"));
        };
        let id = int(reply.get(1))
            .and_then(|n| u64::try_from(n).ok())
            .map(JobId)
            .ok_or_else(|| unexpected("push"))?;
        if int(reply.first()) == Some(1) {
            self.metrics.pushed();
            Ok(Pushed::Queued(id))
        } else {
            self.metrics.duplicate();
            Ok(Pushed::Duplicate(id))
        }
    }

    /// Leases up to `count` of the first runnable jobs for `lease` (one script call), after
    /// promoting due jobs and reclaiming expired leases.
    pub(crate) async fn take(&self, lease: Duration, count: usize) -> Result<Taken, CacheError> {
        let reply = self
            .run(QueueOp::Take, &scripts::TAKE, (ms(lease), count.max(1)))
            .await?;
        let Value::Array(mut reply) = reply else {
            return Err(unexpected("take"));
        };
        self.reclaimed(&reply, 2);
        self.metrics.counts(&counts_at(&reply, 4));
        let n = int(reply.first())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| unexpected("take"))?;
        if n == 0 {
            let next_in = int(reply.get(1))
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_millis);
            return Ok(Taken::Empty { next_in });
        }
        let now = int(reply.get(1)).ok_or_else(|| unexpected("take"))?;
        if reply.len() != 8 + 6 * n {
            return Err(unexpected("take"));
        }
        let mut jobs = Vec::with_capacity(n);
        for job in reply.split_off(8).chunks_exact_mut(6) {
            let field = |i: usize| int(job.get(i));
            let (Some(id), Some(attempt), Some(max_attempts), Some(token), Some(due)) = (
                field(0).and_then(|n| u64::try_from(n).ok()),
                field(2).and_then(|n| u32::try_from(n).ok()),
                field(3).and_then(|n| u32::try_from(n).ok()),
                text(job.get(4)),
                field(5),
            ) else {
                return Err(unexpected("take"));
            };
            let payload = match std::mem::replace(&mut job[1], Value::Nil) {
                Value::BulkString(b) => b,
                _ => Vec::new(),
            };
            let lateness = Duration::from_millis(u64::try_from(now - due).unwrap_or(0));
            self.metrics.lateness(lateness);
            jobs.push(RawJob {
                id: JobId(id),
                payload,
                attempt,
                max_attempts,
                token,
                lateness,
            });
        }
        Ok(Taken::Jobs(jobs))
    }

    /// Promotes due jobs and reclaims expired leases without taking anything; returns how
    /// long until the next due time.
    pub(crate) async fn promote(&self) -> Result<Option<Duration>, CacheError> {
        let reply = self
            .run(QueueOp::Take, &scripts::PROMOTE, &[] as &[u64])
            .await?;
        let Value::Array(reply) = reply else {
            return Err(unexpected("promote"));
        };
        self.reclaimed(&reply, 1);
        self.metrics.counts(&counts_at(&reply, 3));
        Ok(int(reply.first())
            .and_then(|n| u64::try_from(n).ok())
            .map(Duration::from_millis))
    }

    /// Counts the lease expiries (and the dead among them) at `at` in a reply.
    fn reclaimed(&self, reply: &[Value], at: usize) {
        let n = |i| {
            int(reply.get(i))
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        let (expired, died) = (n(at), n(at + 1));
        if expired > 0 {
            tracing::info!(queue = %self.name, expired, died, "leases ran out: jobs runnable again");
        }
        self.metrics.lease_expired(expired);
        self.metrics.dead(died);
    }

    fn settle_code(&self, op: &str, code: Option<i64>) -> Result<Settle, CacheError> {
        match code {
            Some(1) => Ok(Settle::Done { dead: None }),
            Some(2) => Ok(Settle::Already),
            Some(0) => Ok(Settle::Gone),
            Some(-1) => Ok(Settle::Stale),
            Some(3) => Ok(Settle::Done { dead: Some(false) }),
            Some(4) => Ok(Settle::Done { dead: Some(true) }),
            _ => Err(unexpected(op)),
        }
    }

    pub(crate) async fn ack(&self, id: JobId, token: &str) -> Result<Settle, CacheError> {
        let reply = self
            .run(
                QueueOp::Ack,
                &scripts::ACK,
                (
                    id.0,
                    token,
                    self.keep_completed,
                    ms(self.keep_completed_age),
                ),
            )
            .await?;
        self.settle_code("ack", int(Some(&reply)))
    }

    /// Fails an attempt: retried after `retry_in`, or dead when `None` or out of attempts.
    pub(crate) async fn fail(
        &self,
        id: JobId,
        token: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<Settle, CacheError> {
        let delay: i64 = retry_in.map_or(-1, |d| i64::try_from(ms(d)).unwrap_or(i64::MAX));
        // A bounded error text: it is kept with the job.
        let error: String = error.chars().take(2000).collect();
        let reply = self
            .run(QueueOp::Fail, &scripts::FAIL, (id.0, token, error, delay))
            .await?;
        self.settle_code("fail", int(Some(&reply)))
    }

    pub(crate) async fn extend(
        &self,
        id: JobId,
        token: &str,
        lease: Duration,
    ) -> Result<Settle, CacheError> {
        let reply = self
            .run(QueueOp::Extend, &scripts::EXTEND, (id.0, token, ms(lease)))
            .await?;
        self.settle_code("extend", int(Some(&reply)))
    }

    pub(crate) async fn release(&self, id: JobId, token: &str) -> Result<Settle, CacheError> {
        let reply = self
            .run(QueueOp::Release, &scripts::RELEASE, (id.0, token))
            .await?;
        self.settle_code("release", int(Some(&reply)))
    }

    pub(crate) async fn requeue_dead(
        &self,
        id: Option<JobId>,
        max: u64,
    ) -> Result<u64, CacheError> {
        let id = id.map(|id| id.0.to_string()).unwrap_or_default();
        let reply = self
            .run(QueueOp::Admin, &scripts::REQUEUE_DEAD, (id, max.max(1)))
            .await?;
        int(Some(&reply))
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| unexpected("requeue"))
    }

    pub(crate) async fn delete_dead(&self, id: JobId) -> Result<bool, CacheError> {
        let reply = self
            .run(QueueOp::Admin, &scripts::DELETE_DEAD, id.0)
            .await?;
        Ok(int(Some(&reply)) == Some(1))
    }

    /// Dead jobs from `offset`, oldest first: (id, died, payload, attempts, error, created).
    pub(crate) async fn list_dead(
        &self,
        offset: u64,
        count: u64,
    ) -> Result<Vec<(JobId, SystemTime, Vec<u8>, u32, String, SystemTime)>, CacheError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let reply = self
            .run(QueueOp::Admin, &scripts::LIST_DEAD, (offset, count))
            .await?;
        let Value::Array(reply) = reply else {
            return Err(unexpected("list"));
        };
        let mut out = Vec::with_capacity(reply.len() / 6);
        for job in reply.chunks_exact(6) {
            let (Some(id), Some(died)) = (int(job.first()), int(job.get(1))) else {
                return Err(unexpected("list"));
            };
            let payload = match job.get(2) {
                Some(Value::BulkString(b)) => b.clone(),
                _ => Vec::new(),
            };
            out.push((
                JobId(u64::try_from(id).unwrap_or(0)),
                at_ms(died),
                payload,
                int(job.get(3))
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                text(job.get(4)).unwrap_or_default(),
                at_ms(int(job.get(5)).unwrap_or(0)),
            ));
        }
        Ok(out)
    }

    /// How many jobs each state holds, in one round trip.
    pub(crate) async fn counts(&self) -> Result<QueueCounts, CacheError> {
        let k = &self.keys;
        let mut p = pipe();
        for key in [k.wait(), k.delayed(), k.active(), k.dead(), k.done()] {
            p.cmd("ZCARD").arg(key);
        }
        let (waiting, delayed, running, dead, completed): (u64, u64, u64, u64, u64) = self
            .redis
            .query_pipeline(&p)
            .await
            .inspect_err(|_| self.metrics.error(QueueOp::Admin))?;
        let counts = QueueCounts {
            waiting,
            delayed,
            running,
            dead,
            completed,
        };
        self.metrics.counts(&counts);
        Ok(counts)
    }

    /// Where job `id` is now; `None` when the queue does not have it (completed and not
    /// kept, deleted, or never pushed).
    pub(crate) async fn state(&self, id: JobId) -> Result<Option<JobState>, CacheError> {
        let k = &self.keys;
        let mut p = pipe();
        for key in [k.wait(), k.delayed(), k.active(), k.dead(), k.done()] {
            p.cmd("ZSCORE").arg(key).arg(id.0);
        }
        let found: Vec<Option<String>> = self
            .redis
            .query_pipeline(&p)
            .await
            .inspect_err(|_| self.metrics.error(QueueOp::Admin))?;
        const STATES: [JobState; 5] = [
            JobState::Waiting,
            JobState::Delayed,
            JobState::Running,
            JobState::Dead,
            JobState::Completed,
        ];
        Ok(found
            .iter()
            .zip(STATES)
            .find_map(|(score, state)| score.as_ref().map(|_| state)))
    }

    /// Hands a marker on to another blocked worker (this one consumed it with no free slot).
    pub(crate) async fn hand_on_marker(&self) {
        let mut c = crate::connection::cmd("LPUSH");
        c.arg(self.keys.marker()).arg("1");
        if self.redis.query::<Value>(&c).await.is_err() {
            self.metrics.error(QueueOp::Wait);
        }
    }
}
