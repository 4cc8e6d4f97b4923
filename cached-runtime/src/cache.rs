//! The cache handle, the get-or-fill path and invalidation.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    codec::{self, Decoded},
    config::CacheBuilder,
    error::CacheError,
    flight::{Flight, Flights},
    key::{Key, KeyBuilder, glob_escape, validate_prefix},
    policy::Policy,
    shape::{Entry, Shape},
    stats::{Counters, Registry, Stats},
    store::Store,
};

/// How many keys one `SCAN` step asks for during invalidation.
const SCAN_COUNT: usize = 1000;

/// How often a failing Redis is reported at warn level; the failures in between go to debug.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A handle to a Redis cache: cheap to clone, shared by every caller.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    namespace: String,
    null_ttl: u64,
    max_value_bytes: usize,
    stats: Registry,
    warnings: WarnLimiter,
    single_flight: bool,
    fill_wait: Duration,
    flights: Flights,
}

/// What one `GET` found.
enum Lookup<R> {
    Hit(R),
    /// Nothing usable; `stale` when something unusable must be replaced or deleted.
    Miss {
        stale: bool,
    },
    /// Redis failed.
    Failed,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("url", &self.inner.store.url())
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A builder for a cache at `url`: `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://…` (with the `tls` feature), or `redis+unix:///path/to.sock[?db=N&pass=…]`.
    pub fn builder(url: impl Into<String>) -> CacheBuilder {
        CacheBuilder::new(url)
    }

    /// Builds from `REDIS_URL` and the `REDIS_CACHE_*` variables; see [`CacheBuilder`].
    pub async fn from_env() -> Result<Self, CacheError> {
        CacheBuilder::from_env()?.build().await
    }

    pub(crate) async fn connect(config: CacheBuilder) -> Result<Self, CacheError> {
        let cache = Self::new(&config)?;
        cache.inner.store.connect_all().await?;
        Ok(cache)
    }

    pub(crate) fn lazy(config: CacheBuilder) -> Result<Self, CacheError> {
        let cache = Self::new(&config)?;
        cache.inner.store.connect_in_background();
        Ok(cache)
    }

    fn new(config: &CacheBuilder) -> Result<Self, CacheError> {
        let store = Store::new(config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                namespace: config.namespace.clone(),
                null_ttl: config.null_ttl.as_secs(),
                max_value_bytes: config.max_value_bytes,
                stats: Registry::default(),
                warnings: WarnLimiter::default(),
                single_flight: config.single_flight,
                fill_wait: config.fill_wait,
                flights: Flights::default(),
            }),
        })
    }

    /// The namespace put before every key.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Starts a key under `prefix`, with this cache's namespace: the same key a function
    /// annotated `#[redis_cache(prefix = "…")]` reads for the same arguments.
    ///
    /// ```
    /// # async fn f(cache: cached_runtime::Cache) -> Result<(), cached_runtime::CacheError> {
    /// // The entry of `#[redis_cache(prefix = "item", ttl = 60)] async fn item(id: u64)`:
    /// let key = cache.key("item").arg(&42u64).build()?;
    /// cache.invalidate(&key).await?;
    /// # Ok(()) }
    /// ```
    pub fn key(&self, prefix: &str) -> KeyBuilder {
        KeyBuilder::new(&self.inner.namespace, prefix)
    }

    /// Counters of this cache, per prefix and in total.
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.stats.snapshot();
        (stats.circuit_open, stats.circuit_opened) = self.inner.store.circuit();
        stats
    }

    /// Sends `PING`, bounded by the command timeout.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.inner.store.ping().await
    }

    /// Cache-aside: returns the stored result for `key`, or runs `body`, stores what it
    /// returns as `S` says, and returns it. Redis failing never fails the call.
    pub async fn get_or_fill<S, R, F>(&self, key: &Key, policy: &Policy, body: F) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let counters = self.inner.stats.prefix(&policy.prefix);
        let epoch = self.inner.flights.epoch();
        match self.lookup::<S, R>(key, policy, &counters).await {
            Lookup::Hit(result) => result,
            Lookup::Failed => {
                counters.misses(1);
                // Redis is failing: do not spend a second timeout on storing.
                body.await
            }
            Lookup::Miss { stale } => {
                counters.misses(1);
                self.fill::<S, R, F>(key, policy, &counters, stale, epoch, body)
                    .await
            }
        }
    }

    /// One `GET` and decode: the whole hit path.
    async fn lookup<S: Shape<R>, R>(
        &self,
        key: &Key,
        policy: &Policy,
        counters: &Counters,
    ) -> Lookup<R> {
        let bytes = match self.inner.store.get(key.as_str()).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Lookup::Miss { stale: false },
            Err(e) => {
                self.failed(counters, "GET", &e);
                return Lookup::Failed;
            }
        };
        match codec::decode::<S::Value>(&bytes, policy.version) {
            Ok(Decoded::Value(v)) => match S::from_hit(Some(v)) {
                Some(result) => {
                    counters.hits(1);
                    Lookup::Hit(result)
                }
                None => Lookup::Miss { stale: true },
            },
            Ok(Decoded::Null) => match S::from_hit(None) {
                Some(result) => {
                    counters.null_hits(1);
                    Lookup::Hit(result)
                }
                // A null marker under a shape that cannot be absent: replace it.
                None => Lookup::Miss { stale: true },
            },
            Err(e) => {
                counters.decode_failures(1);
                tracing::debug!(key = %key, error = %e, "unusable cache entry, treated as a miss");
                Lookup::Miss { stale: true }
            }
        }
    }

    /// The miss path: coalesce with a fill already under way in this process, or lead one
    /// (under the cross-process lock when the policy asks for it).
    async fn fill<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        counters: &Counters,
        stale: bool,
        epoch: u64,
        body: F,
    ) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let inner = &*self.inner;
        let mut stale = stale;
        let _leader = if inner.single_flight {
            match inner.flights.join(key.as_str()) {
                Flight::Leader(guard) => {
                    // A fill that finished between our GET and now may have stored this key.
                    if inner.flights.finished_since(epoch) {
                        match self.lookup::<S, R>(key, policy, counters).await {
                            Lookup::Hit(result) => {
                                counters.coalesced(1);
                                return result;
                            }
                            Lookup::Failed => return body.await,
                            Lookup::Miss { stale: s } => stale = s,
                        }
                    }
                    Some(guard)
                }
                Flight::Follower(mut done) => {
                    // Woken when the leader finishes, fails, panics or is cancelled.
                    let _ = tokio::time::timeout(inner.fill_wait, done.changed()).await;
                    counters.coalesced(1);
                    return match self.lookup::<S, R>(key, policy, counters).await {
                        Lookup::Hit(result) => result,
                        Lookup::Failed => body.await,
                        // The leader stored nothing (an error, a panic, or Redis failing):
                        // compute our own result.
                        Lookup::Miss { stale } => {
                            self.compute::<S, R, F>(key, policy, counters, stale, body)
                                .await
                        }
                    };
                }
            }
        } else {
            None
        };
        match policy.lock_ms {
            Some(lock_ms) => {
                self.fill_locked::<S, R, F>(key, policy, counters, stale, lock_ms, body)
                    .await
            }
            None => {
                self.compute::<S, R, F>(key, policy, counters, stale, body)
                    .await
            }
        }
    }

    /// Runs the body and stores its result.
    async fn compute<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        counters: &Counters,
        stale: bool,
        body: F,
    ) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let result = body.await;
        self.store::<S, R>(key, policy, &result, counters, stale)
            .await;
        result
    }

    /// Fills under a Redis lock (`SET NX PX`), so one process in the fleet runs the body;
    /// the others poll the cache until the value appears, the lock frees up, or the lock's
    /// TTL has passed, after which they run the body themselves.
    async fn fill_locked<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        counters: &Counters,
        stale: bool,
        lock_ms: u64,
        body: F,
    ) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let store = &self.inner.store;
        let lock_key = format!("{key}#lock");
        let token = format!("{:032x}", fastrand::u128(..));
        let deadline = Instant::now() + Duration::from_millis(lock_ms);
        let mut backoff = Duration::from_millis(5);
        let mut stale = stale;
        loop {
            match store.lock(&lock_key, &token, lock_ms).await {
                Ok(true) => {
                    // Another process may have filled it between our miss and our lock.
                    let result = match self.lookup::<S, R>(key, policy, counters).await {
                        Lookup::Hit(result) => {
                            counters.coalesced(1);
                            result
                        }
                        Lookup::Miss { stale } => {
                            self.compute::<S, R, F>(key, policy, counters, stale, body)
                                .await
                        }
                        Lookup::Failed => body.await,
                    };
                    if let Err(e) = store.unlock(&lock_key, &token).await {
                        self.failed(counters, "EVAL", &e);
                    }
                    return result;
                }
                Ok(false) => {}
                Err(e) => {
                    self.failed(counters, "SET NX", &e);
                    return body.await;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
            match self.lookup::<S, R>(key, policy, counters).await {
                Lookup::Hit(result) => {
                    counters.coalesced(1);
                    return result;
                }
                Lookup::Failed => return body.await,
                Lookup::Miss { stale: s } => stale = s,
            }
        }
        tracing::debug!(key = %key, "cache lock still held after its ttl, running the body");
        self.compute::<S, R, F>(key, policy, counters, stale, body)
            .await
    }

    async fn store<S: Shape<R>, R>(
        &self,
        key: &Key,
        policy: &Policy,
        result: &R,
        counters: &Counters,
        stale: bool,
    ) {
        let inner = &*self.inner;
        let (bytes, ttl) = match S::entry(result) {
            Entry::Value(v) => match codec::encode_value(v, policy.version) {
                Ok(bytes) => (bytes, policy.ttl),
                Err(e) => {
                    counters.errors(1);
                    tracing::warn!(key = %key, error = %e, "cannot encode the result, not cached");
                    return self.remove_stale(key, counters, stale).await;
                }
            },
            Entry::Absent => (
                codec::encode_null(policy.version),
                policy.null_ttl.unwrap_or(inner.null_ttl),
            ),
            Entry::Skip => return self.remove_stale(key, counters, stale).await,
        };
        if bytes.len() > inner.max_value_bytes {
            counters.oversized(1);
            tracing::debug!(key = %key, bytes = bytes.len(), "result larger than max_value_bytes, not cached");
            return self.remove_stale(key, counters, stale).await;
        }
        let ttl = match policy.jitter {
            0 => ttl,
            j => ttl + fastrand::u64(0..=j),
        };
        match inner.store.set_ex(key.as_str(), &bytes, ttl).await {
            Ok(()) => counters.stores(1),
            Err(e) => self.failed(counters, "SET", &e),
        }
    }

    /// Deletes an unusable entry that no fresh value is about to replace.
    async fn remove_stale(&self, key: &Key, counters: &Counters, stale: bool) {
        if !stale {
            return;
        }
        if let Err(e) = self.inner.store.unlink(&[key.as_str().to_owned()]).await {
            self.failed(counters, "UNLINK", &e);
        }
    }

    fn failed(&self, counters: &Counters, op: &'static str, error: &CacheError) {
        counters.errors(1);
        match self.inner.warnings.admit() {
            Some(suppressed) => tracing::warn!(
                op,
                error = %error,
                suppressed,
                "redis cache unavailable, running uncached"
            ),
            None => {
                tracing::debug!(op, error = %error, "redis cache unavailable, running uncached")
            }
        }
    }

    /// Deletes exactly one entry. Returns whether it existed.
    pub async fn invalidate(&self, key: &Key) -> Result<bool, CacheError> {
        let n = self.inner.store.unlink(&[key.as_str().to_owned()]).await?;
        self.inner.stats.prefix(key.prefix()).invalidated(n);
        Ok(n > 0)
    }

    /// Deletes every entry under `prefix` (every argument tuple), in `SCAN` + `UNLINK`
    /// batches that never block the server. Returns how many keys were deleted.
    ///
    /// Only `{namespace}{prefix}:*` is touched: invalidating `user` leaves `user2` alone.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        validate_prefix(prefix)?;
        let mut pattern = String::with_capacity(self.inner.namespace.len() + prefix.len() + 2);
        glob_escape(&self.inner.namespace, &mut pattern);
        pattern.push_str(prefix);
        pattern.push_str(":*");
        let n = self.scan_unlink(&pattern).await?;
        self.inner.stats.prefix(prefix).invalidated(n);
        Ok(n)
    }

    /// Deletes every key of this cache's namespace matching the Redis glob `pattern` (`*`,
    /// `?`, `[…]`, `\` escapes), e.g. `item:*` or `user:42*`. Keys outside the namespace are
    /// never touched. Returns how many keys were deleted.
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        let mut full = String::with_capacity(self.inner.namespace.len() + pattern.len());
        glob_escape(&self.inner.namespace, &mut full);
        full.push_str(pattern);
        let n = self.scan_unlink(&full).await?;
        self.inner.stats.prefix("*").invalidated(n);
        Ok(n)
    }

    async fn scan_unlink(&self, pattern: &str) -> Result<u64, CacheError> {
        let store = &self.inner.store;
        let mut cursor = 0;
        let mut deleted = 0;
        loop {
            let (next, keys) = store.scan(cursor, pattern, SCAN_COUNT).await?;
            deleted += store.unlink(&keys).await?;
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// Admits one warning per [`WARN_EVERY`] and counts the rest.
#[derive(Default)]
struct WarnLimiter {
    // Milliseconds since `epoch` of the last warning, plus one (0: never warned).
    last: AtomicU64,
    suppressed: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl WarnLimiter {
    /// `Some(suppressed since the last warning)` when this failure may be logged at warn.
    fn admit(&self) -> Option<u64> {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Cache {
    /// Counts and logs a key that could not be built; the call runs uncached.
    pub(crate) fn key_failed(&self, policy: &Policy, error: &CacheError) {
        self.inner.stats.prefix(policy.prefix()).errors(1);
        tracing::warn!(prefix = policy.prefix(), error = %error, "cannot build the cache key, running uncached");
    }
}
