//! The cache handle and the hit path: one `GET` and a decode.

use std::{
    fmt,
    future::Future,
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::Either;
use sha2::Digest as _;
use tracing::{Instrument as _, Span};

use crate::{
    backend::Store,
    codec::{self, Decoded},
    config::CacheBuilder,
    error::CacheError,
    fill::{Fill, Source},
    flight::Flights,
    invalidate::Pending,
    key::{Key, KeyBuilder},
    mode::{self, Mode},
    policy::Policy,
    shape::Shape,
    spawn::Spawner,
    stats::{Counters, Outcome, Registry, Stats, WarnLimiter},
    telemetry::{self, CacheMetrics},
};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The counters of a call's prefix: borrowed from the policy when it caches them for this
/// cache, looked up otherwise.
pub(crate) enum CountersRef<'p> {
    Cached(&'p Counters),
    Looked(Arc<Counters>),
}

impl Deref for CountersRef<'_> {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        match self {
            CountersRef::Cached(c) => c,
            CountersRef::Looked(c) => c,
        }
    }
}

/// A handle to a Redis cache: cheap to clone, shared by every caller.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Tells caches apart in a policy's counters slot.
    pub(crate) id: u64,
    pub(crate) store: Store,
    pub(crate) namespace: String,
    pub(crate) null_ttl: u64,
    pub(crate) max_value_bytes: usize,
    pub(crate) stats: Registry,
    /// The `cache` label and the series that are not per prefix.
    pub(crate) telemetry: Arc<CacheMetrics>,
    /// Rate-limits the "Redis unavailable" warning.
    pub(crate) warnings: WarnLimiter,
    pub(crate) single_flight: bool,
    pub(crate) fill_wait: Duration,
    pub(crate) flights: Flights,
    pub(crate) pending: Pending,
    /// Runs background work (lock releases, invalidation retries); `None` for a cache that
    /// needs none (in memory).
    pub(crate) spawner: Option<Spawner>,
}

/// What one `GET` found.
pub(crate) enum Lookup<R> {
    /// A usable entry: the result, whether it was the null marker, and the stored bytes.
    Hit {
        result: R,
        null: bool,
        bytes: Vec<u8>,
    },
    /// Nothing usable; `stale` when something unusable must be replaced or deleted.
    Miss { stale: bool },
    /// The cache could not be read.
    Failed,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &&**self.inner.telemetry.name())
            .field("store", &self.inner.store.describe())
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// A key as debug logs show it: its prefix and a hash, never the argument values (they may be
/// personal data). The whole key is logged at trace level only.
pub(crate) struct KeyTag<'a>(pub(crate) &'a Key);

impl fmt::Display for KeyTag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Computed only when a log line is written; the same in every process.
        let digest = sha2::Sha256::digest(self.0.as_str().as_bytes());
        write!(f, "{}#", self.0.prefix())?;
        digest[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Cache {
    /// A builder for a cache at `url`: `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://…` (with the `tls` feature), or `redis+unix:///path/to.sock[?db=N&pass=…]`.
    pub fn builder(url: impl Into<String>) -> CacheBuilder {
        CacheBuilder::new(url)
    }

    /// A builder for a cache on a Redis Cluster, found through any of `nodes`
    /// (`redis://[user[:password]@]host:port`; one reachable node is enough, every primary is
    /// discovered from it).
    ///
    /// Every command goes to the shard that owns its key, and follows the cluster through
    /// resharding and failovers; prefix and pattern invalidation scan every primary. Keys,
    /// TTLs, null markers, single-flight, locks, the breaker and stats behave as on one
    /// Redis. The cluster has one database (no `/db` in the URLs) and `rediss://` is not
    /// supported for it yet.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cached_runtime::CacheError> {
    /// let cache = cached_runtime::Cache::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster<I>(nodes: I) -> CacheBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        CacheBuilder::cluster(nodes)
    }

    /// A builder for a cache on the primary that Redis Sentinel names `master_name`, asking
    /// `sentinels` (`redis://[user[:password]@]host:port` of each sentinel) where it is.
    ///
    /// After a failover (a `+switch-master` announcement, or a `READONLY` reply from a demoted
    /// node) the cache asks the sentinels again and reconnects to the new primary; no restart
    /// is needed. The primary's own password, when it has one, is set with
    /// [`CacheBuilder::sentinel_master_auth`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cached_runtime::CacheError> {
    /// let cache = cached_runtime::Cache::sentinel(
    ///     "mymaster",
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    /// )
    /// .build()
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn sentinel<I>(master_name: impl Into<String>, sentinels: I) -> CacheBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        CacheBuilder::sentinel(master_name, sentinels)
    }

    /// Builds from `REDIS_URL` and the `REDIS_CACHE_*` variables; see [`CacheBuilder`].
    pub async fn from_env() -> Result<Self, CacheError> {
        CacheBuilder::from_env()?.build().await
    }

    /// A cache kept in this process's memory, with the same behaviour as a Redis cache: TTLs,
    /// null markers, versions, single-flight, locks, prefix and pattern invalidation, stats.
    ///
    /// For unit tests of code that uses `#[redis_cache]`, and for development without Redis.
    /// It is **not shared between processes**: two instances of a service each have their
    /// own, and an invalidation in one does not reach the other.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use cached_runtime::{Cache, Policy, shape::Plain};
    ///
    /// let cache = Cache::in_memory();
    /// let policy = Policy::new("square", Duration::from_secs(60)).unwrap();
    /// let key = cache.key("square").arg(&7u64).build().unwrap();
    /// let first = cache.get_or_fill::<Plain, _, _>(&key, &policy, async { 49u64 }).await;
    /// let again = cache.get_or_fill::<Plain, _, _>(&key, &policy, async { unreachable!() }).await;
    /// assert_eq!((first, again), (49, 49));
    /// # }
    /// ```
    pub fn in_memory() -> Self {
        Self::assemble(
            &CacheBuilder::new("memory://"),
            Store::memory(),
            Spawner::capture().ok(),
        )
    }

    pub(crate) fn memory(config: CacheBuilder) -> Result<Self, CacheError> {
        config.validate()?;
        Ok(Self::assemble(
            &config,
            Store::memory(),
            Spawner::capture().ok(),
        ))
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
        config.validate()?;
        let spawner = Spawner::capture()?;
        let store = Store::redis(config, spawner.clone())?;
        Ok(Self::assemble(config, store, Some(spawner)))
    }

    fn assemble(config: &CacheBuilder, store: Store, spawner: Option<Spawner>) -> Self {
        // A finished fill answers callers whose GET raced it for as long as a GET can take.
        let keep = (config.command_timeout * 2).max(Duration::from_secs(1));
        let name = telemetry::cache_name(config.name.as_deref());
        let telemetry = Arc::new(CacheMetrics::new(name.clone()));
        store.observe(Arc::clone(&telemetry));
        Self {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                store,
                namespace: config.namespace.clone(),
                null_ttl: config.null_ttl.as_secs(),
                max_value_bytes: config.max_value_bytes,
                stats: Registry::new(name),
                telemetry,
                warnings: WarnLimiter::default(),
                single_flight: config.single_flight,
                fill_wait: config.fill_wait,
                flights: Flights::new(keep),
                pending: Pending::default(),
                spawner,
            }),
        }
    }

    /// The namespace put before every key.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The `cache` label of this cache's metrics and spans; see
    /// [`CacheBuilder::name`].
    pub fn name(&self) -> &str {
        self.inner.telemetry.name()
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
        let inner = &*self.inner;
        let mut stats = inner.stats.snapshot();
        (stats.circuit_open, stats.circuit_opened) = inner.store.circuit();
        stats.connections_retired = inner.store.retired();
        stats.waiting = inner.flights.waiting();
        stats.pending_invalidations = inner.pending.len();
        stats
    }

    /// Sends `PING`, bounded by the command timeout.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.inner.store.ping().await
    }

    /// Cache-aside: returns the stored result for `key`, or runs `body`, stores what it
    /// returns as `S` says, and returns it. Redis failing never fails the call, and
    /// concurrent misses of one key in this process run `body` once, Redis up or down.
    ///
    /// The call runs in a `cache.get` span (debug level), the body inside it; see
    /// [`telemetry`](crate::telemetry).
    pub fn get_or_fill<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        body: F,
    ) -> impl Future<Output = R>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let span = telemetry::call_span(&self.inner.telemetry, key);
        // Wrapping the call in its span moves the call's whole state once more (measurable
        // on a hit); only a span someone records needs it.
        if span.is_disabled() {
            Either::Left(self.get_or_fill_in::<S, R, F>(key, policy, body, span))
        } else {
            let entered = span.clone();
            Either::Right(
                self.get_or_fill_in::<S, R, F>(key, policy, body, span)
                    .instrument(entered),
            )
        }
    }

    async fn get_or_fill_in<S, R, F>(&self, key: &Key, policy: &Policy, body: F, span: Span) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let span = &span;
        let inner = &*self.inner;
        let counters = self.counters(policy);
        let mode = mode::current();
        if mode == Mode::Bypass || inner.pending.covers(key.as_str()) {
            counters.outcome(Outcome::Bypass);
            telemetry::record_outcome(span, Outcome::Bypass);
            return body.await;
        }
        let seq = inner.flights.seq();
        let source = if mode == Mode::Refresh {
            Source::Refresh
        } else {
            match self.lookup::<S, R>(key, policy, &counters, span).await {
                Lookup::Hit { result, null, .. } => {
                    let outcome = if null { Outcome::NullHit } else { Outcome::Hit };
                    counters.outcome(outcome);
                    telemetry::record_outcome(span, outcome);
                    return result;
                }
                Lookup::Miss { stale } => Source::Miss { stale },
                Lookup::Failed => Source::Failed,
            }
        };
        let fill = Fill {
            cache: self,
            key,
            policy,
            counters: &counters,
            span,
            entry: None,
        };
        fill.run::<S, R, F>(seq, source, body).await
    }

    /// The counters of `policy`'s prefix: one load and a compare when the policy caches them.
    #[inline]
    pub(crate) fn counters<'p>(&self, policy: &'p Policy) -> CountersRef<'p> {
        let inner = &*self.inner;
        if let Some((id, counters)) = policy.counters.0.get()
            && *id == inner.id
        {
            return CountersRef::Cached(counters);
        }
        let counters = inner.stats.prefix(policy.prefix());
        // The first cache to use a policy keeps the fast path; others look up.
        let _ = policy.counters.0.set((inner.id, Arc::clone(&counters)));
        CountersRef::Looked(counters)
    }

    /// One `GET` and decode: the whole hit path.
    pub(crate) async fn lookup<S: Shape<R>, R>(
        &self,
        key: &Key,
        policy: &Policy,
        counters: &Counters,
        span: &Span,
    ) -> Lookup<R> {
        let timer = telemetry::span_timer(span);
        let got = self.inner.store.get(key.as_str()).await;
        // Only where a command was sent: not skipped by the circuit, not without a connection.
        if let Some(started) = timer
            && !matches!(got, Err(CacheError::CircuitOpen | CacheError::Unavailable))
        {
            span.record("redis_ms", started.elapsed().as_secs_f64() * 1e3);
        }
        let bytes = match got {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Lookup::Miss { stale: false },
            Err(e) => {
                self.failed(counters, "GET", &e);
                return Lookup::Failed;
            }
        };
        match self.decode::<S, R>(&bytes, policy, counters, key) {
            Some((result, null)) => Lookup::Hit {
                result,
                null,
                bytes,
            },
            None => Lookup::Miss { stale: true },
        }
    }

    /// The result an entry stands for, and whether it was the null marker; `None` when it is
    /// unusable (counted when it does not decode).
    pub(crate) fn decode<S: Shape<R>, R>(
        &self,
        bytes: &[u8],
        policy: &Policy,
        counters: &Counters,
        key: &Key,
    ) -> Option<(R, bool)> {
        match codec::decode::<S::Value>(bytes, policy.version) {
            Ok(Decoded::Value(v)) => S::from_hit(Some(v)).map(|r| (r, false)),
            // `None` from a shape that cannot be absent: replace the marker.
            Ok(Decoded::Null) => S::from_hit(None).map(|r| (r, true)),
            Err(e) => {
                counters.decode_failures(1);
                tracing::debug!(key = %KeyTag(key), error = %e, "unusable cache entry, treated as a miss");
                tracing::trace!(key = %key, "unusable cache entry");
                None
            }
        }
    }

    /// Counts and logs (rate-limited) a Redis command that failed.
    pub(crate) fn failed(&self, counters: &Counters, op: &'static str, error: &CacheError) {
        counters.redis_errors(1);
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

    /// Counts and logs (rate-limited per prefix) a key that could not be built; the call runs
    /// uncached.
    pub(crate) fn key_failed(&self, policy: &Policy, error: &CacheError) {
        let counters = self.inner.stats.prefix(policy.prefix());
        counters.outcome(Outcome::Error);
        match counters.warnings.admit() {
            Some(suppressed) => tracing::warn!(
                prefix = policy.prefix(),
                error = %error,
                suppressed,
                "cannot build the cache key, running uncached"
            ),
            None => tracing::debug!(
                prefix = policy.prefix(),
                error = %error,
                "cannot build the cache key, running uncached"
            ),
        }
    }
}
