//! Cache-aside on the connection layer: the [`Cache`] handle, and below it the read path,
//! fills, the near cache, keys, the stored format and invalidation.

pub(crate) mod builder;
pub(crate) mod codec;
pub(crate) mod fill;
pub(crate) mod flight;
pub(crate) mod global;
pub(crate) mod handle;
pub(crate) mod invalidate;
pub mod key;
pub(crate) mod mode;
pub(crate) mod near;
pub(crate) mod policy;
pub(crate) mod read;
pub(crate) mod refresh;
pub(crate) mod report;
pub(crate) mod shape;
pub(crate) mod shared;
pub(crate) mod stale;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod tags;
pub(crate) mod vary;

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
use tracing::{Instrument as _, Span};

use self::{
    builder::{CacheBuilder, Connection},
    fill::Landed,
    flight::Flights,
    invalidate::Pending,
    key::{Key, KeyBuilder},
    near::NearCache,
    policy::Policy,
    read::{Found, ReadOptions, RemoteValues, Values},
    shape::Shape,
    stats::{Counters, Outcome, Registry, Stats},
    store::Store,
};
use crate::{
    connection::{Redis, Tracking, TrackingListener},
    error::CacheError,
    spawn::Spawner,
    telemetry,
    warn::WarnLimiter,
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
///
/// Background refreshes end with the last handle: dropping it stops those still running
/// (their bodies are dropped, their locks released).
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
    /// Shared by the handles users hold; `None` in the cache's own background work, which
    /// must not keep its refreshes running.
    handles: Option<Arc<refresh::Handles>>,
}

pub(crate) struct Inner {
    /// Tells caches apart in a policy's counters slot.
    pub(crate) id: u64,
    pub(crate) store: Store,
    pub(crate) namespace: String,
    pub(crate) null_ttl: u64,
    pub(crate) max_value_bytes: usize,
    pub(crate) stats: Registry,
    /// The `cache` label of its metrics and spans.
    pub(crate) name: metrics::SharedString,
    /// Rate-limits the "Redis unavailable" warning.
    pub(crate) warnings: WarnLimiter,
    pub(crate) single_flight: bool,
    pub(crate) fill_wait: Duration,
    pub(crate) flights: Flights,
    pub(crate) pending: Pending,
    /// Runs background work (lock releases, invalidation retries); `None` for a cache that
    /// needs none (in memory).
    pub(crate) spawner: Option<Spawner>,
    /// The near cache, when configured on a Redis cache.
    pub(crate) near: Option<Arc<NearCache>>,
    /// Its tracking connections.
    pub(crate) tracker: Option<Arc<Tracking>>,
    /// Throttled keys and background refreshes (`stale.rs`, `refresh.rs`).
    pub(crate) stale: stale::StaleState,
    /// Tag invalidations and rejections.
    pub(crate) tags: tags::TagCounters,
}

/// What a fill's re-read found.
pub(crate) enum Lookup<R> {
    /// A usable entry: the result and the stored bytes.
    Hit {
        result: R,
        bytes: Vec<u8>,
        /// What the near cache may keep of it, when the lookup asked.
        landed: Option<Landed>,
    },
    /// Nothing usable; `stale` when something unusable must be replaced or deleted.
    Miss { stale: bool },
    /// The cache could not be read.
    Failed,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &&*self.inner.name)
            .field("store", &self.inner.store.describe())
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// `call(span)`, run inside `span` when the span is recorded. Wrapping a call in its span
/// moves the call's whole state once more (measurable on a hit); only a span someone records
/// needs it.
#[inline]
fn in_span<F: Future>(span: Span, call: impl FnOnce(Span) -> F) -> impl Future<Output = F::Output> {
    if span.is_disabled() {
        Either::Left(call(span))
    } else {
        let entered = span.clone();
        Either::Right(call(span).instrument(entered))
    }
}

impl Cache {
    /// A builder for a cache at `url`: `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://…` (with the `tls` feature), or `redis+unix:///path/to.sock[?db=N&pass=…]`.
    pub fn builder(url: impl Into<String>) -> CacheBuilder {
        CacheBuilder::new(url)
    }

    /// A builder for a cache on a connection that other primitives (or other caches) share:
    /// the connection's settings are its own, the cache's are set here.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cached_runtime::CacheError> {
    /// use cached_runtime::{Cache, connection::Redis};
    /// let redis = Redis::builder("redis://127.0.0.1:6379").build().await?;
    /// let items = Cache::on(&redis).namespace("items:").build().await?;
    /// let pages = Cache::on(&redis).namespace("pages:").name("pages").build().await?;
    /// # Ok(()) }
    /// ```
    pub fn on(redis: &Redis) -> CacheBuilder {
        CacheBuilder::on(redis)
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
        let config = CacheBuilder::new("memory://");
        let name = telemetry::cache_name(None);
        Self::assemble(&config, Store::memory(), Spawner::capture().ok(), name)
    }

    pub(crate) fn memory(config: CacheBuilder) -> Result<Self, CacheError> {
        config.validate()?;
        let name = telemetry::cache_name(config.name.as_deref());
        Ok(Self::assemble(
            &config,
            Store::memory(),
            Spawner::capture().ok(),
            name,
        ))
    }

    pub(crate) async fn connect(config: CacheBuilder) -> Result<Self, CacheError> {
        let own = matches!(config.connection, Connection::Own(_));
        let cache = Self::new(&config)?;
        if let (true, Some(redis)) = (own, cache.inner.store.connection()) {
            redis.connect_all().await?;
        }
        Ok(cache)
    }

    pub(crate) fn lazy(config: CacheBuilder) -> Result<Self, CacheError> {
        let own = matches!(config.connection, Connection::Own(_));
        let cache = Self::new(&config)?;
        if let (true, Some(redis)) = (own, cache.inner.store.connection()) {
            redis.connect_in_background();
        }
        Ok(cache)
    }

    fn new(config: &CacheBuilder) -> Result<Self, CacheError> {
        config.validate()?;
        let name = telemetry::cache_name(config.name.as_deref());
        let redis = match &config.connection {
            // Its own connection reports under the cache's name, as it always has.
            Connection::Own(b) => Redis::for_cache((**b).clone(), name.clone())?,
            Connection::Shared { redis, .. } => redis.clone(),
        };
        let spawner = redis.spawner().clone();
        Ok(Self::assemble(
            config,
            Store::redis(redis),
            Some(spawner),
            name,
        ))
    }

    fn assemble(
        config: &CacheBuilder,
        store: Store,
        spawner: Option<Spawner>,
        name: metrics::SharedString,
    ) -> Self {
        // A finished fill answers callers whose GET raced it for as long as a GET can take.
        let keep = (store::command_timeout(&store) * 2).max(Duration::from_secs(1));
        let (near, tracker) = Self::near_cache(config, &store, &name);
        Self {
            handles: Some(Arc::new(refresh::Handles::new())),
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                store,
                namespace: config.namespace.clone(),
                null_ttl: config.null_ttl.as_secs(),
                max_value_bytes: config.max_value_bytes,
                stats: Registry::new(name.clone()),
                name,
                warnings: WarnLimiter::default(),
                single_flight: config.single_flight,
                fill_wait: config.fill_wait,
                flights: Flights::new(keep),
                pending: Pending::default(),
                spawner,
                near,
                tracker,
                stale: stale::StaleState::new(config.max_refreshes),
                tags: tags::TagCounters::default(),
            }),
        }
    }

    /// The near cache and its tracking, when configured and the store is Redis.
    fn near_cache(
        config: &CacheBuilder,
        store: &Store,
        name: &str,
    ) -> (Option<Arc<NearCache>>, Option<Arc<Tracking>>) {
        if config.near.max_entries == 0 {
            return (None, None);
        }
        let near = Arc::new(NearCache::new(config.near));
        // A client name is one word of printable ASCII.
        let client_name: String = format!("redis-cache-tracking-{name}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let listener: std::sync::Weak<dyn TrackingListener> =
            Arc::downgrade(&(Arc::clone(&near) as Arc<dyn TrackingListener>));
        match store.track(&config.namespace, &client_name, listener) {
            Ok(Some(tracker)) => (Some(near), Some(tracker)),
            Ok(None) => (None, None),
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the near cache's tracking; running without the near cache");
                (None, None)
            }
        }
    }

    /// A handle for the cache's own background work (a refresh, a lock release, a retried
    /// invalidation): it keeps the cache's state, not its refreshes, alive.
    pub(crate) fn background(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            handles: None,
        }
    }

    /// The user handles' stop signal: resolves once the last of them is dropped. `None` for a
    /// background handle.
    pub(crate) fn handles(&self) -> Option<&refresh::Handles> {
        self.handles.as_deref()
    }

    /// The namespace put before every key.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The `cache` label of this cache's metrics and spans; see
    /// [`CacheBuilder::name`].
    pub fn name(&self) -> &str {
        &self.inner.name
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
        (
            stats.circuit_open,
            stats.circuit_opened,
            stats.connections_retired,
        ) = inner.store.health();
        stats.waiting = inner.flights.waiting();
        stats.refreshing = inner.stale.running() as u64;
        stats.pending_invalidations = inner.pending.len();
        stats.near = inner.near.as_ref().map(|n| n.stats());
        stats
    }

    /// Waits until the near cache answers calls (its tracking is established), at most
    /// `timeout`. `false` on timeout, or when this cache has no near cache.
    pub async fn near_ready(&self, timeout: Duration) -> bool {
        match &self.inner.near {
            Some(near) => near.ready(timeout).await,
            None => false,
        }
    }

    /// Returns once the near cache has applied every invalidation Redis sent before this call
    /// (one `PING` on each tracking connection): after another process's write has returned,
    /// a read that follows this sees it. Immediate without a near cache.
    pub async fn sync_near(&self) -> Result<(), CacheError> {
        match &self.inner.tracker {
            Some(tracker) => tracker.sync().await,
            None => Ok(()),
        }
    }

    /// Sends `PING`, bounded by the command timeout.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.inner.store.ping().await
    }

    /// Cache-aside: returns the stored result for `key`, or runs `body`, stores what it
    /// returns as `S` says, and returns it. Redis failing never fails the call, and
    /// concurrent misses of one key in this process run `body` once, Redis up or down.
    ///
    /// With a near cache ([`CacheBuilder::near_cache`]) a result read or stored here is kept
    /// in process memory too, and later calls get a clone of it without a Redis command,
    /// until Redis reports the key changed; the value type is cloned for that, hence the
    /// bounds. [`get_or_fill_remote`](Self::get_or_fill_remote) has none and always reads
    /// Redis.
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
        S::Value: Clone + Send + Sync + 'static,
        F: Future<Output = R>,
    {
        let span = report::call_span(&self.inner.name, key);
        in_span(span, move |span| async move {
            self.read::<S, R, F, Values>(key, policy, &Values, ReadOptions::NEAR, body, None, &span)
                .await
        })
    }

    /// [`get_or_fill`](Self::get_or_fill) with a body that can run in the background, which
    /// a policy's [`stale_while_revalidate`](Policy::stale_while_revalidate),
    /// [`soft_timeout`](Policy::soft_timeout) and [`early_refresh`](Policy::early_refresh)
    /// need: a stale or expiring entry is answered at once while the body refreshes it on
    /// the cache's runtime. Without those options it is `get_or_fill`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use cached_runtime::{Cache, Policy, shape::Plain};
    ///
    /// let cache = Cache::in_memory();
    /// let policy = Policy::new("price", Duration::from_secs(10))
    ///     .unwrap()
    ///     .stale_window(Duration::from_secs(300))
    ///     .unwrap()
    ///     .stale_while_revalidate(true)
    ///     .fail_safe(true);
    /// let key = cache.key("price").arg(&7u64).build().unwrap();
    /// let price = cache.get_or_refresh::<Plain, _, _>(&key, &policy, async { 49u64 }).await;
    /// assert_eq!(price, 49);
    /// # }
    /// ```
    pub fn get_or_refresh<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        body: F,
    ) -> impl Future<Output = R>
    where
        S: Shape<R> + 'static,
        S::Value: Clone + Send + Sync + 'static,
        R: Send + 'static,
        F: Future<Output = R> + Send + 'static,
    {
        let span = report::call_span(&self.inner.name, key);
        in_span(span, move |span| async move {
            let handoff = refresh::Handoff::<S, F>::new(body);
            let detach: &(dyn refresh::Detach<R> + Sync) = &handoff;
            self.read::<S, R, _, Values>(
                key,
                policy,
                &Values,
                ReadOptions::NEAR,
                handoff.inline(),
                Some(detach),
                &span,
            )
            .await
        })
    }

    /// [`get_or_fill`](Self::get_or_fill) without the near cache, for value types that are
    /// not `Clone`: every call reads Redis.
    pub fn get_or_fill_remote<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        body: F,
    ) -> impl Future<Output = R>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let span = report::call_span(&self.inner.name, key);
        let options = ReadOptions::default();
        in_span(span, move |span| async move {
            self.read::<S, R, F, RemoteValues>(
                key,
                policy,
                &RemoteValues,
                options,
                body,
                None,
                &span,
            )
            .await
        })
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

    /// Reads the key again during a fill (a locked fill's re-reads), decoded: the entry
    /// another caller stored, or why there is none. `keep`: with its TTL, for the near cache.
    pub(crate) async fn lookup<S: Shape<R>, R>(
        &self,
        key: &Key,
        policy: &Policy,
        counters: &Counters,
        span: &Span,
        keep: bool,
    ) -> Lookup<R> {
        let stale = policy.stale_options();
        match self.get(key, counters, span, keep || stale.is_some()).await {
            Found::Entry { bytes, mut landed } => {
                let call = read::Call {
                    key,
                    policy,
                    counters,
                };
                match read::decode::<S, R>(&bytes, &call) {
                    // A stale entry is not what a fill waits for; a null marker has no window.
                    Some((_, false))
                        if stale.is_some_and(|s| {
                            stale::judge(s, counters, &mut landed) == stale::Freshness::Stale
                        }) =>
                    {
                        Lookup::Miss { stale: false }
                    }
                    Some((result, _)) => Lookup::Hit {
                        result,
                        bytes,
                        landed,
                    },
                    None => Lookup::Miss { stale: true },
                }
            }
            Found::Missing => Lookup::Miss { stale: false },
            Found::Failed => Lookup::Failed,
        }
    }

    /// The result a published entry stands for, and whether it was the null marker; `None`
    /// when it is unusable (counted).
    pub(crate) fn decode<S: Shape<R>, R>(
        &self,
        bytes: &[u8],
        policy: &Policy,
        counters: &Counters,
        key: &Key,
    ) -> Option<(R, bool)> {
        let call = read::Call {
            key,
            policy,
            counters,
        };
        read::decode::<S, R>(bytes, &call)
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
