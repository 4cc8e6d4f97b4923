//! The connection layer: Redis connections shared by every primitive of this crate (the
//! cache, and whatever else runs on the same Redis), knowing nothing of what they carry.
//!
//! A [`Redis`] is built from a URL ([`Redis::builder`]), a cluster's seed nodes
//! ([`Redis::cluster`]), Sentinel ([`Redis::sentinel`]) or the environment
//! ([`RedisBuilder::from_env`]). It offers:
//! - commands, pipelines and scripts ([`Redis::query`], [`Redis::query_pipeline`],
//!   [`Redis::eval`]), each bounded by the command timeout and routed by key: on a cluster
//!   to the shard that owns the key's slot (the keys of one pipeline or script must share a
//!   hash tag, as Redis Cluster requires);
//! - `SCAN` over every primary ([`Redis::delete_matching`]);
//! - the invalidation channel of server-assisted client-side caching ([`Redis::track`]);
//! - a circuit breaker per node, retirement of broken and half-open connections, and the
//!   `db.client.operation.duration` metric for every command sent.
//!
//! Several primitives can share one `Redis` (a clone is a handle to the same connections),
//! or use their own: a queue wants a Redis that never evicts, a cache one that does.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cached_runtime::CacheError> {
//! use cached_runtime::{Cache, connection::{Redis, cmd}};
//!
//! let redis = Redis::builder("redis://127.0.0.1:6379").build().await?;
//! let visits: u64 = redis.query(cmd("INCR").arg("visits")).await?;
//! // A cache on the same connections.
//! let cache = Cache::on(&redis).namespace("shop:").build().await?;
//! # Ok(()) }
//! ```

mod blocking;
mod breaker;
pub(crate) mod cluster;
pub(crate) mod config;
mod connector;
mod dial;
mod link;
mod pool;
mod scripts;
mod sentinel;
#[cfg(feature = "tls")]
mod tls;
pub(crate) mod tracking;

use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

pub use ::redis::{Cmd, FromRedisValue, Pipeline, Script, ToRedisArgs, Value, cmd, pipe};

pub use self::blocking::BlockingConnection;
pub use self::config::{Credentials, CredentialsProvider, DEFAULT_URL, RedisBuilder, redact_url};
pub use self::tracking::{Tracking, TrackingListener};
use self::{breaker::Breakers, link::Fault, pool::Pool};
use crate::{
    error::CacheError,
    spawn::Spawner,
    telemetry::{self, CacheMetrics, Op, OpResult},
};

/// Connections to one Redis deployment (a server, a cluster, or the primary Sentinel names),
/// shared by every caller: cheap to clone.
///
/// Every command is bounded by the command timeout; a node that keeps failing has its circuit
/// opened, and its commands fail fast with [`CacheError::CircuitOpen`] until a probe succeeds,
/// while the other nodes of a cluster go on. Broken and half-open connections are replaced in
/// the background.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Shared>,
}

struct Shared {
    pool: Arc<Pool>,
    breakers: Arc<Breakers>,
    metrics: Arc<CacheMetrics>,
    config: RedisBuilder,
    spawner: Spawner,
    url: String,
}

/// Whether the breaker may skip a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// On the request path: skipped (failing fast) while the node's circuit is open.
    Guarded,
    /// Must not be skipped because reads have been failing (invalidations, lock releases):
    /// bounded by the command timeout all the same.
    Always,
}

/// A snapshot of a connection's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Whether a circuit is open now.
    pub circuit_open: bool,
    /// How many times circuits have opened.
    pub circuit_opened: u64,
    /// Connections retired as broken or half-open.
    pub retired: u64,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("redis", &self.inner.url)
            .field("name", &&**self.inner.metrics.name())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A builder for a connection to one server at `url`:
    /// `redis://[user[:password]@]host[:port][/db]`, `rediss://…` (with the `tls` feature), or
    /// `redis+unix:///path/to.sock[?db=N&pass=…]`.
    pub fn builder(url: impl Into<String>) -> RedisBuilder {
        RedisBuilder::new(url)
    }

    /// A builder for a Redis Cluster, found through any of `nodes`
    /// (`redis://[user[:password]@]host:port`; one reachable node is enough, every primary is
    /// discovered from it). Each command goes to the shard that owns its key and follows the
    /// cluster through resharding and failovers.
    pub fn cluster<I>(nodes: I) -> RedisBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        RedisBuilder::cluster(nodes)
    }

    /// A builder for the primary that Redis Sentinel names `master_name`, asking `sentinels`
    /// (`redis://[user[:password]@]host:port` of each) where it is. After a failover every
    /// connection, the tracking channel's included, moves to the new primary.
    pub fn sentinel<I>(master_name: impl Into<String>, sentinels: I) -> RedisBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        RedisBuilder::sentinel(master_name, sentinels)
    }

    /// Builds from `REDIS_URL` (or `REDIS_CLUSTER_NODES`, `REDIS_SENTINEL_*`) and the
    /// connection variables; see [`RedisBuilder`].
    pub async fn from_env() -> Result<Self, CacheError> {
        RedisBuilder::from_env()?.build().await
    }

    pub(crate) async fn connect(config: RedisBuilder) -> Result<Self, CacheError> {
        let redis = Self::new(config, None)?;
        redis.inner.pool.connect_all().await?;
        Ok(redis)
    }

    pub(crate) fn lazy(config: RedisBuilder) -> Result<Self, CacheError> {
        let redis = Self::new(config, None)?;
        redis.inner.pool.connect_in_background();
        Ok(redis)
    }

    /// The connection of a cache that builds its own: its metrics carry the cache's name.
    pub(crate) fn for_cache(
        config: RedisBuilder,
        name: metrics::SharedString,
    ) -> Result<Self, CacheError> {
        Self::new(config, Some(name))
    }

    fn new(config: RedisBuilder, name: Option<metrics::SharedString>) -> Result<Self, CacheError> {
        config.validate()?;
        let spawner = Spawner::capture()?;
        let name = name.unwrap_or_else(|| telemetry::cache_name(config.name.as_deref()));
        let metrics = Arc::new(CacheMetrics::new(name));
        let breakers = Arc::new(Breakers::new(
            config.breaker_threshold,
            config.breaker_window,
            config.breaker_cooldown,
            matches!(config.topology, config::Topology::Cluster { .. }),
        ));
        breakers.observe(Arc::clone(&metrics));
        let pool = Pool::new(&config, Arc::clone(&breakers), spawner.clone())?;
        Ok(Self {
            inner: Arc::new(Shared {
                url: config.topology.describe(&config.url),
                pool,
                breakers,
                metrics,
                config,
                spawner,
            }),
        })
    }

    /// Fills every connection now; an error says what to check.
    pub(crate) async fn connect_all(&self) -> Result<(), CacheError> {
        self.inner.pool.connect_all().await
    }

    /// Starts making connections in the background.
    pub(crate) fn connect_in_background(&self) {
        self.inner.pool.connect_in_background();
    }

    /// Where this connects, for logs: the redacted URL or topology.
    pub fn describe(&self) -> &str {
        &self.inner.url
    }

    /// The `cache` label of this connection's metrics.
    pub fn name(&self) -> &str {
        self.inner.metrics.name()
    }

    /// Whether this is a Redis Cluster, whose keys are spread over several primaries.
    pub fn is_cluster(&self) -> bool {
        self.inner.pool.is_cluster()
    }

    /// The command timeout in force.
    pub fn command_timeout(&self) -> Duration {
        self.inner.config.command_timeout
    }

    /// Circuit state and retired connections.
    pub fn stats(&self) -> ConnectionStats {
        let (circuit_open, circuit_opened) = self.inner.breakers.circuit();
        ConnectionStats {
            circuit_open,
            circuit_opened,
            retired: self.inner.pool.retired(),
        }
    }

    pub(crate) fn config(&self) -> &RedisBuilder {
        &self.inner.config
    }

    pub(crate) fn spawner(&self) -> &Spawner {
        &self.inner.spawner
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.inner.pool
    }

    /// Runs one command, routed by its key, unless its node's circuit is open.
    ///
    /// ```no_run
    /// # async fn f(redis: cached_runtime::connection::Redis) -> Result<(), cached_runtime::CacheError> {
    /// use cached_runtime::connection::cmd;
    /// let _: () = redis.query(cmd("SET").arg("greeting").arg("hello").arg("EX").arg(60)).await?;
    /// let greeting: Option<String> = redis.query(&cmd("GET").arg("greeting")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, CacheError> {
        self.send(
            Op::of(cmd),
            Gate::Guarded,
            self.slot_for(cmd),
            self.inner.pool.query(cmd),
        )
        .await
    }

    /// Runs a pipeline in one round trip, unless its node's circuit is open. On a cluster its
    /// keys must share one hash slot (a `{tag}`).
    pub async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipeline: &Pipeline,
    ) -> Result<T, CacheError> {
        let slot = pipeline.cmd_iter().next().and_then(slot_of);
        self.send(
            Op::Pipeline,
            Gate::Guarded,
            slot,
            self.inner.pool.query_pipe(pipeline),
        )
        .await
    }

    /// Runs a script with its `keys` (`KEYS`, one argument each) and `args` (`ARGV`):
    /// `EVALSHA`, and only when Redis answers `NOSCRIPT` (it has not seen the script),
    /// `SCRIPT LOAD` and `EVALSHA` once more. No other failure is retried, so one call never
    /// runs a script twice. On a cluster the keys must share one hash slot (a `{tag}`).
    ///
    /// ```no_run
    /// # async fn f(redis: cached_runtime::connection::Redis) -> Result<(), cached_runtime::CacheError> {
    /// use cached_runtime::connection::Script;
    /// let script = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    /// let n: i64 = redis.eval(&script, &["hits"], 2).await?;
    /// # Ok(()) }
    /// ```
    pub async fn eval<T, K, A>(&self, script: &Script, keys: &[K], args: A) -> Result<T, CacheError>
    where
        T: FromRedisValue,
        K: ToRedisArgs,
        A: ToRedisArgs,
    {
        self.eval_gated(Op::Eval, Gate::Guarded, script, keys, args)
            .await
    }

    /// [`Redis::eval`] with the breaker's gate given.
    pub(crate) async fn eval_gated<T, K, A>(
        &self,
        op: Op,
        gate: Gate,
        script: &Script,
        keys: &[K],
        args: A,
    ) -> Result<T, CacheError>
    where
        T: FromRedisValue,
        K: ToRedisArgs,
        A: ToRedisArgs,
    {
        let mut evalsha = ::redis::cmd("EVALSHA");
        evalsha.arg(script.get_hash()).arg(keys.len());
        for key in keys {
            evalsha.arg(key);
        }
        evalsha.arg(args);
        let slot = self.slot_for(&evalsha);
        self.send(op, gate, slot, self.inner.pool.eval(&evalsha, script))
            .await
    }

    /// The slot whose breaker judges `cmd`: only a cluster's breakers are per node, so one
    /// server skips hashing the key.
    fn slot_for(&self, cmd: &Cmd) -> Option<u16> {
        if self.inner.breakers.by_node() {
            slot_of(cmd)
        } else {
            None
        }
    }

    /// Runs `cmd` (or a pipeline) as the layer's own callers do: timed, and gated by the
    /// breaker of `key`'s node when `gate` says so.
    pub(crate) async fn command<T: FromRedisValue>(
        &self,
        op: Op,
        gate: Gate,
        key: &str,
        cmd: &Cmd,
    ) -> Result<T, CacheError> {
        let slot = Some(cluster::key_slot(key.as_bytes()));
        self.send(op, gate, slot, self.inner.pool.query(cmd)).await
    }

    /// A pipeline whose keys share `key`'s slot, as [`Redis::command`].
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        op: Op,
        gate: Gate,
        key: &str,
        pipeline: &Pipeline,
    ) -> Result<T, CacheError> {
        let slot = Some(cluster::key_slot(key.as_bytes()));
        self.send(op, gate, slot, self.inner.pool.query_pipe(pipeline))
            .await
    }

    /// `PING`, bounded by the command timeout; not subject to the breaker.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let _: Value = self
            .send(
                Op::Ping,
                Gate::Always,
                None,
                self.inner.pool.query(&::redis::cmd("PING")),
            )
            .await?;
        Ok(())
    }

    /// Deletes every key matching the glob `pattern`, in `SCAN` + `UNLINK` batches that never
    /// block the server, on every primary of a cluster. Returns how many keys were deleted.
    /// Not subject to the breaker: a delete must not be skipped because reads failed.
    pub async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError> {
        cluster::delete_matching(self, pattern).await
    }

    /// Starts the invalidation channel of server-assisted client-side caching: one RESP3
    /// connection per primary with `CLIENT TRACKING ON BCAST [PREFIX prefix] NOLOOP`, whose
    /// messages go to `listener`, following the same topology as the data connections.
    /// It runs until the returned [`Tracking`] and every clone of this `Redis` are dropped.
    pub fn track(
        &self,
        prefix: Option<&str>,
        client_name: &str,
        listener: std::sync::Weak<dyn TrackingListener>,
    ) -> Result<Arc<Tracking>, CacheError> {
        tracking::start(self, prefix, client_name, listener)
    }

    /// Times one command sent to Redis (`db.client.operation.duration`) that started at
    /// `started`; one that found no connection was not sent and is not timed. (Not an async
    /// wrapper: that would move the command's future once more on every call.)
    fn timed<T>(&self, op: Op, started: Instant, result: &Result<T, Fault>) {
        let how = match result {
            Ok(_) => OpResult::Ok,
            Err(Fault::Command(_)) => OpResult::Reply,
            Err(Fault::Timeout { .. }) => OpResult::Timeout,
            Err(Fault::Broken { .. }) => OpResult::Connection,
            Err(Fault::NoConnection) => return,
        };
        self.inner.metrics.operation(op, how, started.elapsed());
    }

    /// Runs `run` as `gate` says: when guarded, unless the circuit of the node serving `slot`
    /// is open, telling that breaker how it went.
    #[inline]
    pub(crate) async fn send<T>(
        &self,
        op: Op,
        gate: Gate,
        slot: Option<u16>,
        run: impl Future<Output = Result<T, Fault>>,
    ) -> Result<T, CacheError> {
        let timeout = self.inner.config.command_timeout;
        if gate == Gate::Always {
            let started = Instant::now();
            let result = run.await;
            self.timed(op, started, &result);
            return result.map_err(|f| f.into_error(timeout));
        }
        let breaker = self.inner.breakers.for_slot(slot);
        let Some(permit) = breaker.permit() else {
            return Err(CacheError::CircuitOpen);
        };
        let started = Instant::now();
        let result = run.await;
        self.timed(op, started, &result);
        let fault = match result {
            Ok(value) => {
                breaker.succeeded();
                breaker.success(permit);
                return Ok(value);
            }
            Err(f) => f,
        };
        match &fault {
            // Redis answered: it is reachable.
            Fault::Command(_) => {
                breaker.succeeded();
                breaker.success(permit);
            }
            Fault::NoConnection => breaker.inconclusive(permit),
            Fault::Timeout { event } | Fault::Broken { event, .. } => {
                let event = breaker.failed(*event);
                let opened = breaker.failure(permit, event);
                let pool = &self.inner.pool;
                match breaker.node() {
                    // One node of a cluster: the others go on; its slots may have moved.
                    Some(_) if !(opened && self.inner.breakers.all_nodes_open()) => {
                        pool.refresh_slots();
                    }
                    _ if opened => pool.reconnect_all(),
                    _ => {}
                }
            }
        }
        Err(fault.into_error(timeout))
    }
}

/// The hash slot of a command's first key, which picks the breaker it goes through: the
/// second argument for most commands, the first declared key of a script, none for commands
/// that name no key. (A command whose first key is elsewhere is judged by that argument's
/// slot: only its node's breaker, never the result, depends on it.)
fn slot_of(cmd: &Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().map(|a| match a {
        ::redis::Arg::Simple(b) => b,
        _ => &[][..],
    });
    let name = args.next()?;
    const KEYLESS: [&[u8]; 24] = [
        b"PING",
        b"ECHO",
        b"SCAN",
        b"INFO",
        b"TIME",
        b"CLUSTER",
        b"SCRIPT",
        b"FUNCTION",
        b"CLIENT",
        b"CONFIG",
        b"DBSIZE",
        b"FLUSHDB",
        b"FLUSHALL",
        b"KEYS",
        b"RANDOMKEY",
        b"ROLE",
        b"SELECT",
        b"AUTH",
        b"HELLO",
        b"MULTI",
        b"EXEC",
        b"WAIT",
        b"PUBLISH",
        b"COMMAND",
    ];
    if KEYLESS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
        return None;
    }
    let scripted = [
        &b"EVALSHA"[..],
        b"EVAL",
        b"EVALSHA_RO",
        b"EVAL_RO",
        b"FCALL",
        b"FCALL_RO",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(name));
    let key = if scripted {
        let _body = args.next()?;
        let numkeys = args.next()?;
        if numkeys == b"0" {
            return None;
        }
        args.next()?
    } else {
        args.next()?
    };
    Some(cluster::key_slot(key))
}
