//! Counters (`INCRBY`), optionally batched in process, and rankings (sorted sets): on the
//! same connections, topologies, breaker and metrics as the cache.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cached_runtime::CacheError> {
//! use std::time::Duration;
//! use cached_runtime::{Redis, counter::{Counter, Ranking}};
//!
//! let redis = Redis::builder("redis://127.0.0.1:6379").build().await?;
//! let popular = Ranking::on(&redis, "popular").build()?;
//! // Views of each item, sent every 500 ms or 1,000 views, and fed into the ranking.
//! let views = Counter::on(&redis, "views")
//!     .batch(Duration::from_millis(500), 1000)
//!     .ranking(&popular)
//!     .build()?;
//! views.add("item:42", 1).await;
//! let top = popular.top(10).await?;
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! A counter's value for `id` is at `{prefix}{{{name}:{id}}}` (`cnt:{views:item:42}`); a
//! ranking is the sorted set `{prefix}{{{name}}}` (`rank:{popular}`). Each key is its own hash
//! tag, so on a cluster counters spread over the shards, and keys a user derives from one
//! (`cnt:{views:item:42}:daily`) share its slot. Ids longer than 128 bytes are replaced by
//! their SHA-256.
//!
//! # Batching and what a crash loses
//!
//! Unbatched, [`Counter::incr`] and [`Counter::add`] send one `INCRBY` each and lose nothing
//! that Redis acknowledged. Batched ([`CounterBuilder::batch`]), [`Counter::add`] adds in
//! process and the sums go to Redis in one pipeline per hash slot when `max_calls` adds have
//! accumulated or every `every`, whichever comes first (and when the last handle is dropped).
//! At most one batch is on its way at a time, and adds wait while it is, so **a crash loses
//! at most the last `max_calls` adds** (those pending, or the batch being sent), or those of
//! the last `every` if fewer. While Redis cannot be reached the sums stay pending and are
//! sent later (so a crash then loses all of them); a batch whose fate is unknown (a timeout
//! or a broken connection after it was sent) is dropped rather than risk counting it twice,
//! and counted in `redis_counter_batches_total{result="lost"}`.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Weak},
    time::Duration,
};

use ::metrics::{
    Counter as MetricCounter, Key, KeyName, Label, Level, Metadata, SharedString, Unit,
};
use sha2::Digest as _;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{
    connection::{Redis, Script, Value, cluster::key_slot, cmd, pipe},
    error::CacheError,
    telemetry::Lazy,
};

/// Batches sent by batching counters: counter, labels `counter`, `result` (`ok`,
/// `retained`: not sent, kept for the next flush; `lost`: fate unknown, dropped).
pub const BATCHES: &str = "redis_counter_batches_total";

/// Ids longer than this are replaced by their SHA-256 in keys.
const MAX_ID: usize = 128;

/// 1 to 64 of `A-Z a-z 0-9 _ - .`.
fn validate_name(what: &str, name: &str) -> Result<(), CacheError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CacheError::Config(format!(
            "{what} name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ - ."
        )))
    }
}

fn validate_prefix(prefix: &str) -> Result<(), CacheError> {
    if prefix.contains(['{', '}']) {
        return Err(CacheError::Config(format!(
            "prefix {prefix:?}: braces would change the keys' hash tag"
        )));
    }
    Ok(())
}

/// An id as it goes into a key: as given, or `#` and its SHA-256 when long.
fn id_part(id: &str) -> std::borrow::Cow<'_, str> {
    if id.len() <= MAX_ID {
        return id.into();
    }
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut hex = String::with_capacity(65);
    hex.push('#');
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.into()
}

/// A ranking: a sorted set of members by score, highest first. Cheap to clone.
#[derive(Clone)]
pub struct Ranking {
    redis: Redis,
    key: Arc<str>,
}

impl fmt::Debug for Ranking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ranking")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Everything a [`Ranking`] is built from; start with [`Ranking::on`].
#[derive(Clone, Debug)]
pub struct RankingBuilder {
    redis: Redis,
    name: String,
    prefix: String,
}

impl RankingBuilder {
    /// The start of the key (`rank:` by default).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks the name and prefix.
    pub fn build(self) -> Result<Ranking, CacheError> {
        validate_name("ranking", &self.name)?;
        validate_prefix(&self.prefix)?;
        Ok(Ranking {
            key: format!("{}{{{}}}", self.prefix, self.name).into(),
            redis: self.redis,
        })
    }
}

/// Members around one, in one round trip: its rank, then the `n` above and below it.
const AROUND: &str = r"
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not rank then return false end
local n = tonumber(ARGV[2])
local from = rank - n
if from < 0 then from = 0 end
return {rank, redis.call('ZREVRANGE', KEYS[1], from, rank + n, 'WITHSCORES')}
";

fn around_script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(AROUND))
}

impl Ranking {
    /// A builder for the ranking `name` (ASCII letters, digits and `_ - .`) on `redis`.
    pub fn on(redis: &Redis, name: impl Into<String>) -> RankingBuilder {
        RankingBuilder {
            redis: redis.clone(),
            name: name.into(),
            prefix: "rank:".to_owned(),
        }
    }

    /// Its key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds `by` to `member`'s score (`ZINCRBY`); returns the new score.
    pub async fn incr(&self, member: &str, by: f64) -> Result<f64, CacheError> {
        self.redis
            .query(cmd("ZINCRBY").arg(&*self.key).arg(by).arg(member))
            .await
    }

    /// The `n` highest, highest first, with their scores (ties in reverse member order).
    pub async fn top(&self, n: usize) -> Result<Vec<(String, f64)>, CacheError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.redis
            .query(
                cmd("ZREVRANGE")
                    .arg(&*self.key)
                    .arg(0)
                    .arg(n - 1)
                    .arg("WITHSCORES"),
            )
            .await
    }

    /// `member`'s place, 0 for the highest; `None` when it has no score.
    pub async fn rank(&self, member: &str) -> Result<Option<u64>, CacheError> {
        self.redis
            .query(cmd("ZREVRANK").arg(&*self.key).arg(member))
            .await
    }

    /// `member`'s score, if it has one.
    pub async fn score(&self, member: &str) -> Result<Option<f64>, CacheError> {
        self.redis
            .query(cmd("ZSCORE").arg(&*self.key).arg(member))
            .await
    }

    /// `member`'s rank and the members from `n` places above it to `n` below it (itself
    /// included), highest first, read together in one script; `None` when it has no score.
    pub async fn around(
        &self,
        member: &str,
        n: usize,
    ) -> Result<Option<(u64, Vec<(String, f64)>)>, CacheError> {
        self.redis
            .eval(around_script(), &[&*self.key], (member, n))
            .await
    }

    /// Removes `member`; returns whether it had a score.
    pub async fn remove(&self, member: &str) -> Result<bool, CacheError> {
        self.redis
            .query(cmd("ZREM").arg(&*self.key).arg(member))
            .await
    }

    /// How many members have a score.
    pub async fn members(&self) -> Result<u64, CacheError> {
        self.redis.query(cmd("ZCARD").arg(&*self.key)).await
    }
}

/// A named family of counters, one per id. Cheap to clone.
#[derive(Clone)]
pub struct Counter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    name: SharedString,
    prefix: String,
    ranking: Option<Ranking>,
    batch: Option<Batching>,
}

struct Batching {
    pending: Arc<Mutex<Pending>>,
    max_calls: u64,
    metrics: Arc<BatchMetrics>,
}

/// Sums not yet acknowledged by Redis, by key.
#[derive(Default)]
struct Pending {
    sums: HashMap<Box<str>, i64>,
    calls: u64,
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("name", &&*self.inner.name)
            .field("batched", &self.inner.batch.is_some())
            .field("ranking", &self.inner.ranking)
            .finish_non_exhaustive()
    }
}

/// Everything a [`Counter`] is built from; start with [`Counter::on`].
#[derive(Clone)]
pub struct CounterBuilder {
    redis: Redis,
    name: String,
    prefix: String,
    batch: Option<(Duration, u64)>,
    ranking: Option<Ranking>,
}

impl fmt::Debug for CounterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterBuilder")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("batch", &self.batch)
            .field("ranking", &self.ranking)
            .finish_non_exhaustive()
    }
}

impl CounterBuilder {
    /// The start of every key (`cnt:` by default).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Batches [`Counter::add`]: sums are sent every `every` or once `max_calls` adds have
    /// accumulated. See the module docs for what a crash loses.
    pub fn batch(mut self, every: Duration, max_calls: u64) -> Self {
        self.batch = Some((every, max_calls));
        self
    }

    /// Also adds every increment to `ranking`, under the id as member.
    pub fn ranking(mut self, ranking: &Ranking) -> Self {
        self.ranking = Some(ranking.clone());
        self
    }

    /// Checks the configuration; a batching counter starts its timer (on the runtime the
    /// connection was built on).
    pub fn build(self) -> Result<Counter, CacheError> {
        validate_name("counter", &self.name)?;
        validate_prefix(&self.prefix)?;
        let name = SharedString::from_owned(self.name);
        let batch = match self.batch {
            None => None,
            Some((every, max_calls)) => {
                if every.is_zero() || every > Duration::from_secs(3600) || max_calls == 0 {
                    return Err(CacheError::Config(
                        "a batch needs an interval of 1 ms to one hour and at least one call"
                            .to_owned(),
                    ));
                }
                Some((every, max_calls))
            }
        };
        let inner = Arc::new(Inner {
            batch: batch.map(|(_, max_calls)| Batching {
                pending: Arc::default(),
                max_calls,
                metrics: Arc::new(BatchMetrics::new(name.clone())),
            }),
            redis: self.redis,
            name,
            prefix: self.prefix,
            ranking: self.ranking,
        });
        if let Some((every, _)) = batch {
            let weak = Arc::downgrade(&inner);
            inner.redis.spawner().spawn(tick(weak, every));
        }
        Ok(Counter { inner })
    }
}

/// Flushes every `every` until the counter is gone.
async fn tick(counter: Weak<Inner>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(inner) = counter.upgrade() else {
            return;
        };
        let Some(batch) = &inner.batch else {
            return;
        };
        let guard = Arc::clone(&batch.pending).lock_owned().await;
        let send = inner.sender();
        drop(inner);
        let _ = send.send(guard).await;
    }
}

impl Counter {
    /// A builder for the counters `name` (ASCII letters, digits and `_ - .`) on `redis`.
    pub fn on(redis: &Redis, name: impl Into<String>) -> CounterBuilder {
        CounterBuilder {
            redis: redis.clone(),
            name: name.into(),
            prefix: "cnt:".to_owned(),
            batch: None,
            ranking: None,
        }
    }

    /// The key of `id`'s counter.
    pub fn key(&self, id: &str) -> String {
        self.inner.key(id)
    }

    /// Adds `by` to `id`'s counter now (`INCRBY`, and `ZINCRBY` into the ranking if there is
    /// one); returns the new value.
    pub async fn incr(&self, id: &str, by: i64) -> Result<i64, CacheError> {
        let inner = &*self.inner;
        let value = inner
            .redis
            .query(cmd("INCRBY").arg(inner.key(id)).arg(by))
            .await?;
        if let Some(ranking) = &inner.ranking {
            // `as`: a ranking's scores are doubles.
            #[allow(clippy::cast_precision_loss)]
            ranking.incr(&id_part(id), by as f64).await?;
        }
        Ok(value)
    }

    /// Adds `by` to `id`'s counter: batched when the counter batches (it returns once the
    /// add is pending, waiting only while a full batch is being sent), else [`incr`](Self::incr)
    /// with its error logged.
    pub async fn add(&self, id: &str, by: i64) {
        let Some(batch) = &self.inner.batch else {
            if let Err(e) = self.incr(id, by).await {
                tracing::debug!(counter = &*self.inner.name, "counter increment failed: {e}");
            }
            return;
        };
        let mut pending = Arc::clone(&batch.pending).lock_owned().await;
        let key = self.inner.key(id);
        *pending.sums.entry(key.into_boxed_str()).or_insert(0) += by;
        pending.calls += 1;
        if pending.calls >= batch.max_calls {
            // The send runs on its own, holding the lock: a dropped caller loses nothing, and
            // no second batch starts before this one is answered.
            let send = self.inner.sender();
            self.inner.redis.spawner().spawn(async move {
                let _ = send.send(pending).await;
            });
        }
    }

    /// Sends what is pending now and waits for the answer; an error when some of it could
    /// not be sent (it stays pending) or its fate is unknown (it was dropped).
    pub async fn flush(&self) -> Result<(), CacheError> {
        let Some(batch) = &self.inner.batch else {
            return Ok(());
        };
        let guard = Arc::clone(&batch.pending).lock_owned().await;
        self.inner.sender().send(guard).await
    }

    /// Adds pending in process, not yet sent.
    pub async fn pending(&self) -> u64 {
        match &self.inner.batch {
            Some(batch) => batch.pending.lock().await.calls,
            None => 0,
        }
    }

    /// `id`'s value in Redis (0 when it has none); pending adds are not in it.
    pub async fn get(&self, id: &str) -> Result<i64, CacheError> {
        let value: Option<i64> = self.inner.redis.query(cmd("GET").arg(self.key(id))).await?;
        Ok(value.unwrap_or(0))
    }
}

impl Inner {
    fn key(&self, id: &str) -> String {
        format!("{}{{{}:{}}}", self.prefix, self.name, id_part(id))
    }

    fn sender(&self) -> Sender {
        Sender {
            redis: self.redis.clone(),
            name: self.name.clone(),
            ranking: self.ranking.as_ref().map(|r| Arc::clone(&r.key)),
            key_start: format!("{}{{{}:", self.prefix, self.name).len(),
            metrics: self
                .batch
                .as_ref()
                .map(|b| Arc::clone(&b.metrics))
                .unwrap_or_else(|| Arc::new(BatchMetrics::new(self.name.clone()))),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: send what is pending, in the background.
        if let Some(batch) = &self.batch {
            let pending = Arc::clone(&batch.pending);
            let send = self.sender();
            self.redis.spawner().spawn(async move {
                let guard = pending.lock_owned().await;
                let _ = send.send(guard).await;
            });
        }
    }
}

/// What sending a batch needs, apart from the counter (which may be gone).
struct Sender {
    redis: Redis,
    name: SharedString,
    ranking: Option<Arc<str>>,
    /// Where the id starts in a key, for the ranking's member.
    key_start: usize,
    metrics: Arc<BatchMetrics>,
}

impl Sender {
    /// Sends the pending sums, one pipeline per hash slot, holding the lock until every
    /// answer is in: sums that were not sent go back to pending, those whose fate is unknown
    /// are dropped.
    async fn send(&self, mut pending: OwnedMutexGuard<Pending>) -> Result<(), CacheError> {
        if pending.sums.is_empty() {
            pending.calls = 0;
            return Ok(());
        }
        let sums = std::mem::take(&mut pending.sums);
        let calls = std::mem::take(&mut pending.calls);
        let mut by_slot: HashMap<u16, Vec<(Box<str>, i64)>> = HashMap::new();
        for (key, sum) in sums {
            if sum != 0 {
                by_slot
                    .entry(key_slot(key.as_bytes()))
                    .or_default()
                    .push((key, sum));
            }
        }
        let sends = by_slot.into_values().map(|group| async move {
            let mut pipeline = pipe();
            for (key, sum) in &group {
                pipeline.cmd("INCRBY").arg(&**key).arg(*sum).ignore();
            }
            let result = self.redis.query_pipeline::<Value>(&pipeline).await;
            (group, result)
        });
        let mut outcome = Ok(());
        let mut ranked: Vec<(Box<str>, i64)> = Vec::new();
        for (group, result) in futures_util::future::join_all(sends).await {
            match result {
                Ok(_) => {
                    self.metrics.batch(BatchResult::Ok);
                    ranked.extend(group);
                }
                Err(e) if not_sent(&e) => {
                    self.metrics.batch(BatchResult::Retained);
                    for (key, sum) in group {
                        *pending.sums.entry(key).or_insert(0) += sum;
                    }
                    pending.calls = pending.calls.max(calls);
                    outcome = Err(e);
                }
                Err(e) => {
                    self.metrics.batch(BatchResult::Lost);
                    tracing::warn!(
                        counter = &*self.name,
                        keys = group.len(),
                        "counter batch dropped, its fate unknown ({e}); not resent, to never count twice"
                    );
                    outcome = Err(e);
                }
            }
        }
        if let Some(ranking) = &self.ranking
            && !ranked.is_empty()
        {
            let mut pipeline = pipe();
            for (key, sum) in &ranked {
                let id = key.get(self.key_start..key.len() - 1).unwrap_or(key);
                // `as`: a ranking's scores are doubles.
                #[allow(clippy::cast_precision_loss)]
                pipeline
                    .cmd("ZINCRBY")
                    .arg(&**ranking)
                    .arg(*sum as f64)
                    .arg(id)
                    .ignore();
            }
            if let Err(e) = self.redis.query_pipeline::<Value>(&pipeline).await {
                tracing::warn!(counter = &*self.name, "ranking update failed: {e}");
                outcome = outcome.and(Err(e));
            }
        }
        drop(pending);
        outcome
    }
}

/// Whether a failed command certainly did not reach Redis, so resending it counts once.
fn not_sent(e: &CacheError) -> bool {
    matches!(e, CacheError::CircuitOpen | CacheError::Unavailable)
}

#[derive(Clone, Copy)]
enum BatchResult {
    Ok = 0,
    Retained = 1,
    Lost = 2,
}

struct BatchMetrics {
    name: SharedString,
    handles: Lazy<[MetricCounter; 3]>,
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl BatchMetrics {
    fn new(name: SharedString) -> Self {
        Self {
            name,
            handles: Lazy::new(),
        }
    }

    fn batch(&self, result: BatchResult) {
        self.handles.with(
            |r| {
                r.describe_counter(
                    KeyName::from_const_str(BATCHES),
                    Some(Unit::Count),
                    SharedString::const_str(
                        "Counter batches sent to Redis: ok, retained (not sent), lost (fate unknown).",
                    ),
                );
                ["ok", "retained", "lost"].map(|result| {
                    let labels = vec![
                        Label::new("counter", self.name.clone()),
                        Label::from_static_parts("result", result),
                    ];
                    r.register_counter(&Key::from_parts(BATCHES, labels), &METADATA)
                })
            },
            |h| h[result as usize].increment(1),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_keep_the_hash_tag_intact() {
        assert!(validate_name("counter", "views").is_ok());
        assert!(validate_name("counter", "a b").is_err());
        assert!(validate_prefix("cnt:").is_ok());
        assert!(validate_prefix("{x}").is_err());
        assert_eq!(id_part("item:42"), "item:42");
        assert_eq!(id_part(&"z".repeat(300)).len(), 65);
    }
}
