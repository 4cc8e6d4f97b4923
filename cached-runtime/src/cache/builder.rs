//! The cache's configuration: its own options, and the connection it runs on (made from the
//! connection options here, or shared, given as a [`Redis`]).

use std::{fmt, time::Duration};

use crate::{
    cache::Cache,
    cache::near::NearConfig,
    connection::{
        Redis, RedisBuilder,
        config::{Lookup, MAX_WAIT, env_flag, env_num, validate_name},
    },
    error::CacheError,
};

/// The longest TTL accepted anywhere: ten years. Redis rejects far larger ones, and an entry
/// meant to outlive that is not a cache entry.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Everything a [`Cache`] is built from. Start with [`Cache::builder`], [`Cache::cluster`],
/// [`Cache::sentinel`], [`CacheBuilder::from_env`], or [`Cache::on`] for a cache on a
/// connection shared with other primitives.
///
/// The defaults suit a request path: a cache that cannot answer quickly is skipped, not waited
/// for. The connection's own settings (URL, topology, pool, timeouts, breaker) are those of
/// [`RedisBuilder`], with the same methods and environment variables here; a cache built
/// [`on`](Cache::on) a shared connection takes that connection's and refuses them.
///
/// | setting | default | environment variable |
/// |---|---|---|
/// | the connection's settings | see [`RedisBuilder`] | `REDIS_URL`, `REDIS_CLUSTER_NODES`, `REDIS_SENTINEL_*`, `REDIS_CACHE_CONNECTIONS`, `REDIS_CACHE_POOL_*`, `REDIS_CACHE_*_TIMEOUT_MS`, `REDIS_CACHE_BREAKER_*`, `REDIS_TLS_*`, `REDIS_SENTINEL_MASTER_TLS` |
/// | key namespace | empty | `REDIS_CACHE_NAMESPACE` |
/// | null-marker TTL | 60 s | `REDIS_CACHE_NULL_TTL_SECS` |
/// | largest value stored | 1 MiB | `REDIS_CACHE_MAX_VALUE_BYTES` |
/// | in-process single-flight of misses | on | `REDIS_CACHE_SINGLE_FLIGHT` (`true`/`false`/`1`/`0`) |
/// | longest wait for another caller's fill | 5000 ms | `REDIS_CACHE_FILL_WAIT_MS` |
/// | the `cache` label of metrics and spans | `default`, `default-2`, … | `REDIS_CACHE_NAME` |
/// | near cache: entries kept in process memory (0: off; see [`near_cache`](Self::near_cache)) | 0 | `REDIS_CACHE_NEAR_ENTRIES` |
/// | near cache: bound on the bytes it holds | none | `REDIS_CACHE_NEAR_BYTES` |
/// | near cache: longest time an entry is kept locally | the entry's Redis TTL | `REDIS_CACHE_NEAR_TTL_SECS` |
#[derive(Clone)]
pub struct CacheBuilder {
    pub(crate) connection: Connection,
    pub(crate) namespace: String,
    pub(crate) null_ttl: Duration,
    pub(crate) max_value_bytes: usize,
    pub(crate) single_flight: bool,
    pub(crate) fill_wait: Duration,
    /// Background refreshes running at once, at most (`cache/refresh.rs`).
    pub(crate) max_refreshes: usize,
    pub(crate) name: Option<String>,
    pub(crate) near: NearConfig,
}

/// Where a cache's connection comes from.
#[derive(Clone)]
pub(crate) enum Connection {
    /// Made by the cache from these settings.
    Own(Box<RedisBuilder>),
    /// Shared, built already; `refused` names a connection setting given anyway.
    Shared {
        redis: Redis,
        refused: Option<&'static str>,
    },
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CacheBuilder");
        match &self.connection {
            Connection::Own(b) => d.field("connection", b),
            Connection::Shared { redis, .. } => d.field("connection", redis),
        };
        d.field("namespace", &self.namespace)
            .field("null_ttl", &self.null_ttl)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("single_flight", &self.single_flight)
            .field("fill_wait", &self.fill_wait)
            .field("max_refreshes", &self.max_refreshes)
            .field("name", &self.name)
            .field("near", &self.near)
            .finish()
    }
}

impl CacheBuilder {
    fn with(connection: Connection) -> Self {
        Self {
            connection,
            namespace: String::new(),
            null_ttl: Duration::from_secs(60),
            max_value_bytes: 1 << 20,
            single_flight: true,
            fill_wait: Duration::from_secs(5),
            max_refreshes: crate::cache::stale::DEFAULT_MAX_REFRESHES,
            name: None,
            near: NearConfig {
                max_entries: 0,
                max_bytes: None,
                ttl: None,
            },
        }
    }

    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self::with(Connection::Own(Box::new(RedisBuilder::new(url))))
    }

    pub(crate) fn cluster<I>(nodes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::with(Connection::Own(Box::new(RedisBuilder::cluster(nodes))))
    }

    pub(crate) fn sentinel<I>(master: impl Into<String>, sentinels: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::with(Connection::Own(Box::new(RedisBuilder::sentinel(
            master, sentinels,
        ))))
    }

    pub(crate) fn on(redis: &Redis) -> Self {
        Self::with(Connection::Shared {
            redis: redis.clone(),
            refused: None,
        })
    }

    /// Applies a connection setting: to the settings this cache connects with, or refused on
    /// a shared connection (named at build time).
    fn connection_setting(
        mut self,
        name: &'static str,
        set: impl FnOnce(RedisBuilder) -> RedisBuilder,
    ) -> Self {
        match &mut self.connection {
            Connection::Own(b) => {
                let taken = std::mem::replace(&mut **b, RedisBuilder::new(""));
                **b = set(taken);
            }
            Connection::Shared { refused, .. } => {
                refused.get_or_insert(name);
            }
        }
        self
    }

    /// A builder from the variables in the table above (and [`RedisBuilder::from_env`]'s): a
    /// cluster when `REDIS_CLUSTER_NODES` is set, Sentinel when `REDIS_SENTINEL_MASTER` is,
    /// otherwise the one Redis at `REDIS_URL`. Unset variables keep their defaults, malformed
    /// ones (or two topologies at once) are an error naming the variable.
    pub fn from_env() -> Result<Self, CacheError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(lookup: impl Lookup) -> Result<Self, CacheError> {
        let mut b = Self::with(Connection::Own(Box::new(RedisBuilder::from_lookup(
            &lookup,
        )?)));
        if let Some(ns) = lookup("REDIS_CACHE_NAMESPACE") {
            b = b.namespace(ns);
        }
        if let Some(s) = env_num(&lookup, "REDIS_CACHE_NULL_TTL_SECS")? {
            b = b.null_ttl(Duration::from_secs(s));
        }
        if let Some(n) = env_num(&lookup, "REDIS_CACHE_MAX_VALUE_BYTES")? {
            b = b.max_value_bytes(n);
        }
        if let Some(on) = env_flag(&lookup, "REDIS_CACHE_SINGLE_FLIGHT")? {
            b = b.single_flight(on);
        }
        if let Some(ms) = env_num(&lookup, "REDIS_CACHE_FILL_WAIT_MS")? {
            b = b.fill_wait(Duration::from_millis(ms));
        }
        if let Some(name) = lookup("REDIS_CACHE_NAME") {
            b = b.name(name);
        }
        if let Some(n) = env_num(&lookup, "REDIS_CACHE_NEAR_ENTRIES")? {
            b = b.near_cache(n);
        }
        if let Some(n) = env_num(&lookup, "REDIS_CACHE_NEAR_BYTES")? {
            b = b.near_cache_bytes(n);
        }
        if let Some(s) = env_num(&lookup, "REDIS_CACHE_NEAR_TTL_SECS")? {
            b = b.near_ttl(Duration::from_secs(s));
        }
        Ok(b)
    }

    /// The Sentinel-managed primary's username (if any) and password, when it needs them
    /// ([`RedisBuilder::sentinel_master_auth`]).
    pub fn sentinel_master_auth(
        self,
        username: Option<String>,
        password: impl Into<String>,
    ) -> Self {
        let password = password.into();
        self.connection_setting("sentinel_master_auth", |b| {
            b.sentinel_master_auth(username, password)
        })
    }

    /// Verifies the servers' TLS certificates against the CA in this PEM file
    /// ([`RedisBuilder::tls_ca_file`]).
    pub fn tls_ca_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        let path = path.into();
        self.connection_setting("tls_ca_file", |b| b.tls_ca_file(path))
    }

    /// Verifies the servers' TLS certificates against these PEM CA certificates
    /// ([`RedisBuilder::tls_ca_pem`]).
    pub fn tls_ca_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        let pem = pem.into();
        self.connection_setting("tls_ca_pem", |b| b.tls_ca_pem(pem))
    }

    /// A client certificate chain and key for mutual TLS, PEM files
    /// ([`RedisBuilder::tls_client_cert_files`]).
    pub fn tls_client_cert_files(
        self,
        cert_chain: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        let (cert_chain, key) = (cert_chain.into(), key.into());
        self.connection_setting("tls_client_cert_files", |b| {
            b.tls_client_cert_files(cert_chain, key)
        })
    }

    /// A client certificate chain and key for mutual TLS, PEM bytes
    /// ([`RedisBuilder::tls_client_cert_pem`]).
    pub fn tls_client_cert_pem(
        self,
        cert_chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        let (cert_chain, key) = (cert_chain.into(), key.into());
        self.connection_setting("tls_client_cert_pem", |b| {
            b.tls_client_cert_pem(cert_chain, key)
        })
    }

    /// **For tests only**: accepts a certificate for another host name
    /// ([`RedisBuilder::danger_accept_invalid_hostnames_for_testing_only`]).
    pub fn danger_accept_invalid_hostnames_for_testing_only(self) -> Self {
        self.connection_setting("danger_accept_invalid_hostnames_for_testing_only", |b| {
            b.danger_accept_invalid_hostnames_for_testing_only()
        })
    }

    /// Sentinel: whether the primary speaks TLS ([`RedisBuilder::sentinel_primary_tls`]).
    pub fn sentinel_primary_tls(self, tls: bool) -> Self {
        self.connection_setting("sentinel_primary_tls", |b| b.sentinel_primary_tls(tls))
    }

    /// Rotating credentials, read on every new connection
    /// ([`RedisBuilder::credentials_provider`]).
    pub fn credentials_provider(
        self,
        provider: impl crate::connection::CredentialsProvider,
    ) -> Self {
        self.connection_setting("credentials_provider", |b| b.credentials_provider(provider))
    }

    /// How many multiplexed connections the cached path spreads its commands over
    /// ([`RedisBuilder::connections`]).
    pub fn connections(self, n: usize) -> Self {
        self.connection_setting("connections", |b| b.connections(n))
    }

    /// The bb8 pool's maximum size ([`RedisBuilder::max_size`]).
    pub fn max_size(self, n: u32) -> Self {
        self.connection_setting("max_size", |b| b.max_size(n))
    }

    /// Spare connections bb8 keeps open ([`RedisBuilder::min_idle`]).
    pub fn min_idle(self, n: u32) -> Self {
        self.connection_setting("min_idle", |b| b.min_idle(n))
    }

    /// Bound on establishing (and checking out) a connection
    /// ([`RedisBuilder::connect_timeout`]).
    pub fn connect_timeout(self, t: Duration) -> Self {
        self.connection_setting("connect_timeout", |b| b.connect_timeout(t))
    }

    /// Bound on each Redis command; a command that takes longer counts as a failure and the
    /// cached function runs its body instead ([`RedisBuilder::command_timeout`]).
    pub fn command_timeout(self, t: Duration) -> Self {
        self.connection_setting("command_timeout", |b| b.command_timeout(t))
    }

    /// Opens the circuit of a node after `threshold` failure events within the breaker's
    /// window (0 disables it) and probes it again after `cooldown`. While open, cached calls
    /// of keys on that node run their bodies at once ([`RedisBuilder::circuit_breaker`]).
    pub fn circuit_breaker(self, threshold: u32, cooldown: Duration) -> Self {
        self.connection_setting("circuit_breaker", |b| {
            b.circuit_breaker(threshold, cooldown)
        })
    }

    /// How far back the breaker counts failure events ([`RedisBuilder::breaker_window`]).
    pub fn breaker_window(self, window: Duration) -> Self {
        self.connection_setting("breaker_window", |b| b.breaker_window(window))
    }

    /// Text put before every key, e.g. `"shop:"`, so several applications can share a server.
    /// Invalidation never touches keys outside it.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// TTL of the marker stored for an absent result (`None`, `Ok(None)`).
    pub fn null_ttl(mut self, t: Duration) -> Self {
        self.null_ttl = t;
        self
    }

    /// Encoded values larger than this are returned to the caller but not stored.
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    /// Concurrent misses of one key in this process run the body once; the other callers
    /// wait for that fill (at most [`fill_wait`](Self::fill_wait)) and read its result. On by
    /// default.
    pub fn single_flight(mut self, on: bool) -> Self {
        self.single_flight = on;
        self
    }

    /// How long a caller waits for another caller's fill of the same key (in this process or,
    /// with a `lock`, in another) before it runs the body itself.
    pub fn fill_wait(mut self, wait: Duration) -> Self {
        self.fill_wait = wait;
        self
    }

    /// How many background refreshes (stale-while-revalidate, soft timeouts, early refresh;
    /// see [`Policy::stale_window`](crate::Policy::stale_window)) run at once, at most (64 by
    /// default); past it, callers get the stale value and no refresh starts until one ends.
    pub fn max_refreshes(mut self, n: usize) -> Self {
        self.max_refreshes = n;
        self
    }

    /// The `cache` label of this cache's metrics and spans (1 to 64 characters, no control
    /// characters), so two caches in one process report apart; see
    /// [`telemetry`](crate::telemetry). Unnamed caches are `default`, then `default-2`, ….
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Keeps up to `max_entries` entries in this process's memory, in front of Redis (0, the
    /// default, turns it off): a hit there sends no Redis command at all.
    ///
    /// Redis keeps it coherent: the cache asks the server to report every change to a key of
    /// its namespace (server-assisted client-side caching, `CLIENT TRACKING … BCAST`, one
    /// tracking connection per primary), so a write, delete, expiry or eviction by any client
    /// (this library in any process, `redis-cli`, another program, a `FLUSHDB`) evicts the key
    /// here within a round trip. While tracking is not established (at start, after the
    /// connection was lost, after a cluster failover) the near cache is empty and every call
    /// reads Redis. Redis 6 or later is needed; with an older server the near cache stays off
    /// and one warning says so.
    ///
    /// Entries hold decoded values, so a hit is a lookup and a `clone` of the value: it
    /// applies to functions whose value type is `Clone + Send + Sync + 'static` (others read
    /// Redis as before), unless they opt out with `near = false`. Eviction is S3-FIFO by
    /// entries (and bytes, see [`near_cache_bytes`](Self::near_cache_bytes)); an entry
    /// never outlives the TTL it has in Redis, nor [`near_ttl`](Self::near_ttl).
    pub fn near_cache(mut self, max_entries: u64) -> Self {
        self.near.max_entries = max_entries;
        self
    }

    /// Also bounds the near cache by size: the sum over its entries of the key's length and
    /// the stored entry's length (its JSON with the envelope), a measure of the memory the
    /// decoded values take rather than an exact count.
    pub fn near_cache_bytes(mut self, max_bytes: u64) -> Self {
        self.near.max_bytes = Some(max_bytes);
        self
    }

    /// The longest an entry stays in the near cache, whatever its Redis TTL: a bound on
    /// staleness should an invalidation ever be lost unnoticed.
    pub fn near_ttl(mut self, ttl: Duration) -> Self {
        self.near.ttl = Some(ttl);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), CacheError> {
        let bad = |m: &str| Err(CacheError::Config(m.to_owned()));
        if self.namespace.contains(['{', '}']) {
            // In a Redis Cluster a `{…}` hash tag decides a key's slot: one in the namespace
            // would put every entry on one shard.
            return bad(
                "the namespace must not contain `{` or `}`: in Redis Cluster a hash tag in it would put every key on one shard",
            );
        }
        match &self.connection {
            Connection::Own(b) => b.validate()?,
            Connection::Shared {
                refused: Some(setting),
                ..
            } => {
                return Err(CacheError::Config(format!(
                    "`{setting}` is a connection setting, and this cache runs on a shared connection: set it on the connection's RedisBuilder"
                )));
            }
            Connection::Shared { .. } => {}
        }
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if self.near.max_bytes == Some(0) {
            return bad("the near cache's byte bound must be at least 1");
        }
        if self.near.ttl.is_some_and(|t| t.is_zero() || t > MAX_TTL) {
            return bad("the near cache's ttl must be greater than zero and at most ten years");
        }
        if self.fill_wait.is_zero() {
            return bad(
                "timeouts, the breaker window and cool-down and the fill wait must be greater than zero",
            );
        }
        if self.fill_wait > MAX_WAIT {
            return bad(
                "timeouts, the breaker window and cool-down and the fill wait must be at most one hour",
            );
        }
        if self.null_ttl.as_secs() == 0 {
            return bad("the null ttl must be at least one second");
        }
        if self.null_ttl > MAX_TTL {
            return bad("the null ttl must be at most ten years");
        }
        Ok(())
    }

    /// Connects, pings and returns the cache; fails with an error that says what to check when
    /// Redis is not reachable. On a shared connection it does not connect again.
    pub async fn build(self) -> Result<Cache, CacheError> {
        Cache::connect(self).await
    }

    /// Returns the cache without waiting for Redis: connections are made in the background on
    /// first use, and until Redis answers every cached call runs its body.
    ///
    /// Must be called within a Tokio runtime (which runs the background connects); outside
    /// one it returns an error.
    pub fn build_lazy(self) -> Result<Cache, CacheError> {
        Cache::lazy(self)
    }

    /// [`Cache::in_memory`] with this builder's namespace, null TTL, value size, single-flight
    /// and fill-wait settings; the connection settings are not used.
    pub fn build_in_memory(self) -> Result<Cache, CacheError> {
        Cache::memory(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(b: &CacheBuilder) -> &RedisBuilder {
        match &b.connection {
            Connection::Own(b) => b,
            Connection::Shared { .. } => panic!("not its own connection"),
        }
    }

    #[test]
    fn environment_overrides_defaults_and_rejects_garbage() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let b = CacheBuilder::from_lookup(env(&[
            ("REDIS_URL", "redis://10.0.0.1:7000"),
            ("REDIS_CACHE_COMMAND_TIMEOUT_MS", "80"),
            ("REDIS_CACHE_NAMESPACE", "shop:"),
        ]))
        .expect("valid environment");
        assert_eq!(own(&b).url, "redis://10.0.0.1:7000");
        assert_eq!(own(&b).command_timeout, Duration::from_millis(80));
        assert_eq!(b.namespace, "shop:");
        assert_eq!(own(&b).connect_timeout, Duration::from_millis(500));

        let err = CacheBuilder::from_lookup(env(&[("REDIS_CACHE_POOL_MAX_SIZE", "lots")]))
            .expect_err("garbage rejected");
        assert!(
            err.to_string().contains("REDIS_CACHE_POOL_MAX_SIZE"),
            "{err}"
        );
    }

    #[test]
    fn booleans_accept_true_false_one_zero_and_nothing_else() {
        let flag = |v: &'static str| {
            CacheBuilder::from_lookup(move |k: &str| {
                (k == "REDIS_CACHE_SINGLE_FLIGHT").then(|| v.to_owned())
            })
        };
        for (v, on) in [
            ("true", true),
            ("FALSE", false),
            ("1", true),
            (" 0 ", false),
        ] {
            assert_eq!(flag(v).expect(v).single_flight, on, "{v}");
        }
        let err = flag("yes please").expect_err("not a boolean");
        assert!(
            err.to_string().contains("REDIS_CACHE_SINGLE_FLIGHT"),
            "{err}"
        );
    }

    #[test]
    fn namespaces_with_braces_and_empty_topologies_are_rejected() {
        assert!(
            CacheBuilder::new("redis://x")
                .namespace("{t}:")
                .validate()
                .is_err()
        );
        assert!(
            CacheBuilder::new("redis://x")
                .namespace("a}b")
                .validate()
                .is_err()
        );
        assert!(
            CacheBuilder::cluster(Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(CacheBuilder::cluster(["redis://a:1"]).validate().is_ok());
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let b = CacheBuilder::new("redis://:hunter2@localhost");
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
