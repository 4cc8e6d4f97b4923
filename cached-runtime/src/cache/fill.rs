//! The miss path: coalesce with a fill of the same key under way in this process, or lead
//! one (under the cross-process lock when the policy asks for it), store the result and hand
//! it to the followers.
//!
//! Every call is counted under exactly one outcome, where it returns.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::Span;

use crate::{
    cache::codec,
    cache::flight::{Join, LeaderGuard, Published, Waited},
    cache::key::{Key, KeyTag},
    cache::policy::Policy,
    cache::report::{self, Wait},
    cache::shape::{Entry, Shape},
    cache::stats::{Counters, Outcome},
    cache::tags::Stamp,
    cache::{Cache, Lookup},
};

/// Why the body is about to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The `GET` found nothing usable; `stale` when an unusable entry is there.
    Miss { stale: bool },
    /// The cache could not be read: compute and share, but do not store.
    Failed,
    /// A `refresh` scope: compute and store without reading first.
    Refresh,
}

impl Source {
    /// The outcome of a call that runs the body for this reason.
    fn outcome(self) -> Outcome {
        match self {
            Source::Miss { .. } => Outcome::Miss,
            Source::Failed => Outcome::Error,
            Source::Refresh => Outcome::Bypass,
        }
    }

    fn stale(self) -> bool {
        matches!(self, Source::Miss { stale: true })
    }
}

/// A computed result's stored form.
struct Encoded {
    bytes: Published,
    ttl: u64,
    /// The stale window included in `ttl` (values only).
    window: u64,
    /// Within the size limit.
    storable: bool,
}

/// The cross-process fill lock, released (compare-and-delete of this caller's token) when
/// dropped while armed: by the holder when it is done, or in the background when its future is
/// dropped mid-fill.
///
/// It is armed *before* the `SET NX` that takes the lock is sent: a call dropped while that
/// request is in flight (or whose request failed ambiguously, a timeout) may hold the lock
/// without knowing it, and releasing a lock held by another token is a no-op.
pub(crate) struct LockGuard {
    /// A background handle: a release left to the runtime does not keep refreshes running.
    cache: Cache,
    key: String,
    token: String,
    /// Whether this caller may hold the lock, so dropping must release it.
    armed: bool,
}

impl LockGuard {
    /// Takes the fill lock of `key` if it is free, without waiting (a background refresh):
    /// `None` when another caller holds it or Redis failed (then released when dropped).
    pub(crate) async fn try_take(cache: &Cache, key: &Key, lock_ms: u64) -> Option<Self> {
        let mut lock = LockGuard {
            cache: Cache::background(Arc::clone(&cache.inner)),
            key: key.lock_key(),
            token: format!("{:032x}", fastrand::u128(..)),
            armed: true,
        };
        match cache
            .inner
            .store
            .lock(&lock.key, &lock.token, lock_ms)
            .await
        {
            Ok(true) => Some(lock),
            Ok(false) => {
                lock.armed = false;
                None
            }
            Err(_) => None,
        }
    }

    pub(crate) async fn release(mut self, counters: &Counters) {
        if let Err(e) = self.cache.inner.store.unlock(&self.key, &self.token).await {
            self.cache.failed(counters, "EVALSHA", &e);
        }
        // Disarmed only once the release was answered: one cancelled midway is redone by drop.
        self.armed = false;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed || self.cache.inner.store.unlock_now(&self.key, &self.token) {
            return;
        }
        // Without a runtime the lock expires with its TTL.
        let Some(spawner) = &self.cache.inner.spawner else {
            return;
        };
        let cache = self.cache.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        spawner.spawn(async move {
            if let Err(e) = cache.inner.store.unlock(&key, &token).await {
                tracing::debug!(error = %e, "cannot release an abandoned cache lock; it expires with its ttl");
            }
        });
    }
}

/// One miss being served: what every step of the miss path needs, borrowed once.
pub(crate) struct Fill<'a> {
    pub(crate) cache: &'a Cache,
    pub(crate) key: &'a Key,
    pub(crate) policy: &'a Policy,
    pub(crate) counters: &'a Counters,
    /// The call's `cache.get` span.
    pub(crate) span: &'a Span,
    /// Receives the stored form of the returned result, when it has one (an HTTP response
    /// serves it, and its validator, as is); given, values are stored with a validator.
    pub(crate) entry: Option<&'a EntrySlot>,
    /// Given when the near cache will keep the result: told whether and for how long.
    pub(crate) landing: Option<&'a Landing>,
}

/// Where a [`Fill`] leaves the entry its result stands for.
pub(crate) type EntrySlot = std::sync::OnceLock<Published>;

/// Where a call with the near cache learns that its result is what Redis holds (read there,
/// or stored there by this call), and for how long.
pub(crate) type Landing = std::sync::OnceLock<Landed>;

/// What the near cache needs to keep a result.
#[derive(Clone, Debug)]
pub(crate) struct Landed {
    /// Taken before the command was sent: the TTL counts from no later than this.
    pub(crate) since: Instant,
    /// How long Redis keeps it; `None`: no expiry.
    pub(crate) ttl: Option<Duration>,
    /// Its stored size.
    pub(crate) bytes: usize,
    /// The versions of its tags it was read or stored with (`cache/tags.rs`).
    pub(crate) tags: Option<Arc<Stamp>>,
}

impl Fill<'_> {
    /// Counts the call's one outcome, and records it on its span.
    fn outcome(&self, outcome: Outcome) {
        self.counters.outcome(outcome);
        report::record_outcome(self.span, outcome);
    }

    /// Runs the body, timed.
    async fn body<R, F: Future<Output = R>>(&self, body: F) -> R {
        let started = Instant::now();
        let result = body.await;
        self.counters.fill_time(started);
        result
    }

    /// Coalesces with a fill of the key under way (or just finished) in this process, or
    /// leads one. `seq` was read before the `GET`.
    pub(crate) async fn run<S, R, F>(self, seq: u64, source: Source, body: F) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let inner = &*self.cache.inner;
        if !inner.single_flight {
            return self.lead::<S, R, F>(source, None, body).await;
        }
        // A leader under the lock may wait for another process as long as the lock lives.
        let wait = inner.fill_wait
            + self
                .policy
                .lock_ms
                .map_or(Duration::ZERO, Duration::from_millis);
        loop {
            let published = match inner.flights.join(self.key.as_str(), seq) {
                Join::Leader(guard) => {
                    return self.lead::<S, R, F>(source, Some(guard), body).await;
                }
                Join::Recent(published) => published,
                Join::Follower(rx) => {
                    let started = Instant::now();
                    let waited = inner.flights.wait(rx, wait).await;
                    self.counters.wait_time(Wait::Flight, started);
                    match waited {
                        Waited::Published(published) => published,
                        // The leader stored nothing shareable or was dropped: one of us leads
                        // now.
                        Waited::Abandoned => continue,
                        Waited::TimedOut => {
                            tracing::debug!(key = %KeyTag(self.key), "another caller's fill is taking too long, running the body");
                            self.outcome(source.outcome());
                            return self.body(body).await;
                        }
                    }
                }
            };
            let adopted =
                self.cache
                    .decode::<S, R>(&published, self.policy, self.counters, self.key);
            if let Some((result, _)) = adopted {
                self.outcome(Outcome::Coalesced);
                self.keep(&published);
                return result;
            }
            self.outcome(source.outcome());
            return self.body(body).await;
        }
    }

    async fn lead<S, R, F>(&self, source: Source, guard: Option<LeaderGuard<'_>>, body: F) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        if let (Source::Miss { stale }, Some(lock_ms)) = (source, self.policy.lock_ms) {
            // Boxed: the lock path's state is most of the size of a call's future, which every
            // call (hit or miss) moves several times on its way down; only locked fills pay
            // for the box.
            return Box::pin(self.locked::<S, R, F>(stale, lock_ms, guard, body)).await;
        }
        self.outcome(source.outcome());
        self.compute::<S, R, F>(source, guard, body).await
    }

    /// Runs the body, stores its result (unless Redis is failing or the key was invalidated
    /// meanwhile) and publishes it to the followers.
    pub(crate) async fn compute<S, R, F>(
        &self,
        source: Source,
        guard: Option<LeaderGuard<'_>>,
        body: F,
    ) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        // The tags' versions are taken before the body runs: an invalidation after this
        // point leaves what it stores unservable. Not taken: nothing is stored.
        let stamp = match source {
            Source::Failed => None,
            _ => {
                // The tag keys outlive the entry's stale window too.
                let policy = self.policy;
                let ttl = policy.ttl + policy.jitter + policy.stale_window_secs();
                self.cache.stamp_tags(self.key, ttl, self.counters).await
            }
        };
        let source = if stamp.is_some() {
            source
        } else {
            Source::Failed
        };
        let result = self.body(body).await;
        let Some(encoded) = self.encode::<S, R>(&result) else {
            // Nothing to share (an `Err`, or a value that does not encode): dropping the guard
            // hands the fill to one follower.
            drop(guard);
            if source.stale() {
                self.remove_stale().await;
            }
            return result;
        };
        let invalidated = || guard.as_ref().is_some_and(LeaderGuard::invalidated);
        if source != Source::Failed && encoded.storable && !invalidated() {
            let stored = self.store_entry(&encoded, stamp.flatten()).await;
            // An invalidation that raced our SET may have run before it reached Redis.
            if stored && invalidated() {
                let _ = self.cache.inner.store.delete(self.key.as_str()).await;
            }
        } else if source.stale() && !encoded.storable {
            self.remove_stale().await;
        }
        self.keep(&encoded.bytes);
        if let Some(guard) = guard {
            guard.publish(encoded.bytes);
        }
        result
    }

    /// What a lookup during a locked fill found another process to have stored: counted as
    /// coalesced and handed to this process's followers too.
    fn adopt<R>(
        &self,
        result: R,
        bytes: Vec<u8>,
        landed: Option<Landed>,
        guard: Option<LeaderGuard<'_>>,
    ) -> R {
        self.outcome(Outcome::Coalesced);
        self.land(landed);
        let bytes: Published = bytes.into();
        self.keep(&bytes);
        if let Some(guard) = guard {
            guard.publish(bytes);
        }
        result
    }

    /// Reads the key again (with its TTL when the near cache will keep what it finds).
    async fn lookup<S: Shape<R>, R>(&self) -> Lookup<R> {
        self.cache
            .lookup::<S, R>(
                self.key,
                self.policy,
                self.counters,
                self.span,
                self.landing.is_some(),
            )
            .await
    }

    fn land(&self, landed: Option<Landed>) {
        if let (Some(landing), Some(landed)) = (self.landing, landed) {
            let _ = landing.set(landed);
        }
    }

    fn keep(&self, bytes: &Published) {
        if let Some(slot) = self.entry {
            let _ = slot.set(Arc::clone(bytes));
        }
    }

    /// Fills under a Redis lock (`SET NX PX`), so one process in the fleet runs the body; the
    /// others poll the cache until the value appears, the lock frees up, or the lock's TTL has
    /// passed, after which they run the body themselves.
    async fn locked<S, R, F>(
        &self,
        stale: bool,
        lock_ms: u64,
        guard: Option<LeaderGuard<'_>>,
        body: F,
    ) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let (cache, counters) = (self.cache, self.counters);
        let mut lock = LockGuard {
            cache: Cache::background(Arc::clone(&cache.inner)),
            key: self.key.lock_key(),
            token: format!("{:032x}", fastrand::u128(..)),
            armed: false,
        };
        let deadline = Instant::now() + Duration::from_millis(lock_ms);
        let mut backoff = Duration::from_millis(5);
        let mut stale = stale;
        // Set once another process was found holding the lock: the wait ends where this
        // function decides what to do.
        let mut waiting_since: Option<Instant> = None;
        let waited = |since: Option<Instant>| {
            if let Some(started) = since {
                counters.wait_time(Wait::Lock, started);
            }
        };
        loop {
            // Armed before the request is sent: from here a drop releases whatever it took.
            lock.armed = true;
            match cache
                .inner
                .store
                .lock(&lock.key, &lock.token, lock_ms)
                .await
            {
                Ok(true) => {
                    waited(waiting_since);
                    let held = lock;
                    // Another process may have filled it between our miss and our lock.
                    let source = match self.lookup::<S, R>().await {
                        Lookup::Hit {
                            result,
                            bytes,
                            landed,
                            ..
                        } => {
                            let result = self.adopt(result, bytes, landed, guard);
                            held.release(counters).await;
                            return result;
                        }
                        Lookup::Miss { stale } => Source::Miss { stale },
                        Lookup::Failed => Source::Failed,
                    };
                    self.outcome(source.outcome());
                    let result = self.compute::<S, R, F>(source, guard, body).await;
                    held.release(counters).await;
                    return result;
                }
                Ok(false) => {
                    // Another caller holds it: nothing of ours to release.
                    lock.armed = false;
                    waiting_since.get_or_insert_with(Instant::now);
                }
                // Ambiguous (a timeout may have taken the lock): it stays armed, and is
                // released when this call ends.
                Err(e) => {
                    waited(waiting_since);
                    cache.failed(counters, "SET NX", &e);
                    self.outcome(Outcome::Error);
                    return self.compute::<S, R, F>(Source::Failed, guard, body).await;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
            match self.lookup::<S, R>().await {
                Lookup::Hit {
                    result,
                    bytes,
                    landed,
                    ..
                } => {
                    waited(waiting_since);
                    return self.adopt(result, bytes, landed, guard);
                }
                Lookup::Failed => {
                    waited(waiting_since);
                    self.outcome(Outcome::Error);
                    return self.compute::<S, R, F>(Source::Failed, guard, body).await;
                }
                Lookup::Miss { stale: s } => stale = s,
            }
        }
        waited(waiting_since);
        tracing::debug!(key = %KeyTag(self.key), "cache lock still held after its ttl, running the body");
        let source = Source::Miss { stale };
        self.outcome(source.outcome());
        self.compute::<S, R, F>(source, guard, body).await
    }

    /// The stored form of a result, or `None` when there is nothing to store or share.
    fn encode<S: Shape<R>, R>(&self, result: &R) -> Option<Encoded> {
        let (inner, policy, counters) = (&*self.cache.inner, self.policy, self.counters);
        // Drawn first: a value's stored expiry (for `Cache-Control: max-age`) includes it.
        let jitter = match policy.jitter {
            0 => 0,
            j => fastrand::u64(0..=j),
        };
        let (bytes, ttl) = match S::entry(result) {
            // A revalidating handler's entry carries its validator and expiry.
            Entry::Value(v) => match match self.entry {
                Some(_) => codec::encode_validated(v, policy.version, policy.ttl + jitter),
                None => codec::encode_value(v, policy.version),
            } {
                Ok(bytes) => (bytes, policy.ttl),
                Err(e) => {
                    counters.encode_failures(1);
                    let prefix = self.key.prefix();
                    match counters.warnings.admit() {
                        Some(suppressed) => tracing::warn!(
                            prefix,
                            error = %e,
                            suppressed,
                            "cannot encode the result as JSON, not cached"
                        ),
                        None => {
                            tracing::debug!(prefix, error = %e, "cannot encode the result as JSON, not cached")
                        }
                    }
                    return None;
                }
            },
            Entry::Absent => (
                codec::encode_null(policy.version),
                policy.null_ttl.unwrap_or(inner.null_ttl),
            ),
            Entry::Skip => return None,
        };
        let storable = bytes.len() <= inner.max_value_bytes;
        if !storable {
            counters.oversized(1);
            tracing::debug!(key = %KeyTag(self.key), bytes = bytes.len(), "result larger than max_value_bytes, not cached");
        }
        // A stale window keeps a value that much longer; its freshness is judged by it.
        let window = match S::entry(result) {
            Entry::Value(_) => policy.stale_window_secs(),
            _ => 0,
        };
        let ttl = ttl + jitter + window;
        Some(Encoded {
            bytes: bytes.into(),
            ttl,
            window,
            storable,
        })
    }

    /// `SET … EX`; whether it was stored.
    async fn store_entry(&self, encoded: &Encoded, tags: Option<Arc<Stamp>>) -> bool {
        let inner = &*self.cache.inner;
        let versions = tags.as_deref().map(|s| &*s.versions);
        let Some(bytes) = Cache::tagged_form(self.key, &encoded.bytes, versions) else {
            return false;
        };
        // The near cache keeps this result: the write goes on the key's tracking connection,
        // whose NOLOOP keeps Redis from reporting it back to evict what is kept, while a
        // write by anyone after it is still reported. Only with single-flight, which makes
        // this the one fill of the key in the process: two unreported writes of one key from
        // here could be kept in the opposite order to the one Redis applied them in.
        if let (Some(_), Some(tracker), true) = (self.landing, &inner.tracker, inner.single_flight)
        {
            let since = Instant::now();
            match tracker.set(self.key.as_str(), &bytes, encoded.ttl).await {
                Ok(()) => {
                    self.counters.stores(1);
                    self.stored();
                    self.land(Some(Landed {
                        since,
                        // The near cache keeps it while it is fresh.
                        ttl: Some(Duration::from_secs(encoded.ttl - encoded.window)),
                        bytes: bytes.len(),
                        tags,
                    }));
                    return true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "near cache write failed; writing through the data connection, not kept locally");
                }
            }
        }
        match inner
            .store
            .set_ex(self.key.as_str(), &bytes, encoded.ttl)
            .await
        {
            Ok(()) => {
                self.counters.stores(1);
                self.stored();
                true
            }
            Err(e) => {
                self.cache.failed(self.counters, "SET", &e);
                false
            }
        }
    }

    /// A result was stored: a key throttled after a fail-safe answer is not any more.
    fn stored(&self) {
        if self.policy.stale.is_some() {
            self.cache.inner.stale.recovered(self.key.as_str());
        }
    }

    /// Deletes an unusable entry that no fresh value is about to replace.
    async fn remove_stale(&self) {
        if let Err(e) = self.cache.inner.store.delete(self.key.as_str()).await {
            self.cache.failed(self.counters, "UNLINK", &e);
        }
    }
}
