//! Configuration: the builder, its defaults and the environment variables.

use std::{fmt, time::Duration};

use crate::{cache::Cache, error::CacheError, local::LocalConfig};

/// The longest timeout, window or wait the builder accepts.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The longest TTL accepted anywhere: ten years. Redis rejects far larger ones, and an entry
/// meant to outlive that is not a cache entry.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The URL used when neither code nor `REDIS_URL` names one.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Everything a [`Cache`] is built from. Start with [`Cache::builder`] or
/// [`CacheBuilder::from_env`].
///
/// The defaults suit a request path: a cache that cannot answer quickly is skipped, not waited
/// for.
///
/// | setting | default | environment variable |
/// |---|---|---|
/// | URL of a single Redis | `redis://127.0.0.1:6379` | `REDIS_URL` |
/// | Redis Cluster seed nodes, comma-separated (see [`Cache::cluster`]) | none | `REDIS_CLUSTER_NODES` |
/// | Sentinel: the master's name and the sentinels, comma-separated (see [`Cache::sentinel`]) | none | `REDIS_SENTINEL_MASTER`, `REDIS_SENTINEL_NODES` |
/// | Sentinel: the master's username and password, when it has them | none | `REDIS_SENTINEL_MASTER_USERNAME`, `REDIS_SENTINEL_MASTER_PASSWORD` |
/// | multiplexed connections shared by all callers | 1 | `REDIS_CACHE_CONNECTIONS` |
/// | pool max size | 4 | `REDIS_CACHE_POOL_MAX_SIZE` |
/// | pool min idle | 0 | `REDIS_CACHE_POOL_MIN_IDLE` |
/// | connect / checkout timeout | 500 ms | `REDIS_CACHE_CONNECT_TIMEOUT_MS` |
/// | per-command timeout | 250 ms | `REDIS_CACHE_COMMAND_TIMEOUT_MS` |
/// | key namespace | empty | `REDIS_CACHE_NAMESPACE` |
/// | null-marker TTL | 60 s | `REDIS_CACHE_NULL_TTL_SECS` |
/// | largest value stored | 1 MiB | `REDIS_CACHE_MAX_VALUE_BYTES` |
/// | failure events within the window that open the circuit breaker (0: never) | 5 | `REDIS_CACHE_BREAKER_THRESHOLD` |
/// | the circuit breaker's window | 10000 ms | `REDIS_CACHE_BREAKER_WINDOW_MS` |
/// | circuit breaker cool-down before a probe | 1000 ms | `REDIS_CACHE_BREAKER_COOLDOWN_MS` |
/// | in-process single-flight of misses | on | `REDIS_CACHE_SINGLE_FLIGHT` (`true`/`false`/`1`/`0`) |
/// | longest wait for another caller's fill | 5000 ms | `REDIS_CACHE_FILL_WAIT_MS` |
/// | the `cache` label of metrics and spans | `default`, `default-2`, … | `REDIS_CACHE_NAME` |
/// | near cache: entries kept in process memory (0: off; see [`local_cache`](Self::local_cache)) | 0 | `REDIS_CACHE_LOCAL_ENTRIES` |
/// | near cache: bound on the bytes it holds | none | `REDIS_CACHE_LOCAL_BYTES` |
/// | near cache: longest time an entry is kept locally | the entry's Redis TTL | `REDIS_CACHE_LOCAL_TTL_SECS` |
#[derive(Clone)]
pub struct CacheBuilder {
    pub(crate) url: String,
    pub(crate) topology: Topology,
    pub(crate) connections: usize,
    pub(crate) max_size: u32,
    pub(crate) min_idle: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) namespace: String,
    pub(crate) null_ttl: Duration,
    pub(crate) max_value_bytes: usize,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_window: Duration,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) single_flight: bool,
    pub(crate) fill_wait: Duration,
    pub(crate) name: Option<String>,
    pub(crate) local: LocalConfig,
}

/// Which Redis deployment a cache talks to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server at [`CacheBuilder::url`].
    Standalone,
    /// A Redis Cluster, found through any of these seed URLs.
    Cluster { nodes: Vec<String> },
    /// The current primary of `master`, as the sentinels name it.
    Sentinel {
        master: String,
        sentinels: Vec<String>,
        /// The primary's own credentials (the sentinels' are in their URLs).
        username: Option<String>,
        password: Option<String>,
    },
}

impl Topology {
    /// The topology for logs and `Debug`, passwords redacted.
    pub(crate) fn describe(&self, url: &str) -> String {
        let join = |urls: &[String]| {
            urls.iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Topology::Standalone => redact_url(url),
            Topology::Cluster { nodes } => format!("cluster {}", join(nodes)),
            Topology::Sentinel {
                master, sentinels, ..
            } => format!("sentinel master {master:?} via {}", join(sentinels)),
        }
    }
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("redis", &self.topology.describe(&self.url))
            .field("connections", &self.connections)
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("namespace", &self.namespace)
            .field("null_ttl", &self.null_ttl)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_window", &self.breaker_window)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("single_flight", &self.single_flight)
            .field("fill_wait", &self.fill_wait)
            .field("name", &self.name)
            .field("local", &self.local)
            .finish()
    }
}

impl CacheBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            topology: Topology::Standalone,
            connections: 1,
            max_size: 4,
            min_idle: 0,
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(250),
            namespace: String::new(),
            null_ttl: Duration::from_secs(60),
            max_value_bytes: 1 << 20,
            breaker_threshold: 5,
            breaker_window: Duration::from_secs(10),
            breaker_cooldown: Duration::from_secs(1),
            single_flight: true,
            fill_wait: Duration::from_secs(5),
            name: None,
            local: LocalConfig {
                max_entries: 0,
                max_bytes: None,
                ttl: None,
            },
        }
    }

    pub(crate) fn cluster<I>(nodes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut b = Self::new(nodes.first().cloned().unwrap_or_default());
        b.topology = Topology::Cluster { nodes };
        b
    }

    pub(crate) fn sentinel<I>(master: impl Into<String>, sentinels: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let sentinels: Vec<String> = sentinels.into_iter().map(Into::into).collect();
        let mut b = Self::new(sentinels.first().cloned().unwrap_or_default());
        b.topology = Topology::Sentinel {
            master: master.into(),
            sentinels,
            username: None,
            password: None,
        };
        b
    }

    /// A builder from the variables in the table above: a cluster when `REDIS_CLUSTER_NODES`
    /// is set, Sentinel when `REDIS_SENTINEL_MASTER` is, otherwise the one Redis at
    /// `REDIS_URL`. Unset variables keep their defaults, malformed ones (or two topologies at
    /// once) are an error naming the variable.
    pub fn from_env() -> Result<Self, CacheError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CacheError> {
        fn num<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<T>, CacheError> {
            match lookup(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    CacheError::Config(format!("{name}={v:?} is not a non-negative integer"))
                }),
            }
        }
        fn flag(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<bool>, CacheError> {
            match lookup(name) {
                None => Ok(None),
                Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" => Ok(Some(true)),
                    "0" | "false" => Ok(Some(false)),
                    _ => Err(CacheError::Config(format!(
                        "{name}={v:?} is not a boolean (true, false, 1 or 0)"
                    ))),
                },
            }
        }
        let list = |name: &str| {
            lookup(name).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        };
        let url = lookup("REDIS_URL");
        let mut b = match (list("REDIS_CLUSTER_NODES"), lookup("REDIS_SENTINEL_MASTER")) {
            (Some(_), Some(_)) => {
                return Err(CacheError::Config(
                    "REDIS_CLUSTER_NODES and REDIS_SENTINEL_MASTER are both set: pick one topology"
                        .to_owned(),
                ));
            }
            (Some(nodes), None) => {
                if url.is_some() {
                    return Err(CacheError::Config(
                        "REDIS_URL and REDIS_CLUSTER_NODES are both set: pick one topology"
                            .to_owned(),
                    ));
                }
                Self::cluster(nodes)
            }
            (None, Some(master)) => {
                if url.is_some() {
                    return Err(CacheError::Config(
                        "REDIS_URL and REDIS_SENTINEL_MASTER are both set: pick one topology"
                            .to_owned(),
                    ));
                }
                let Some(sentinels) = list("REDIS_SENTINEL_NODES") else {
                    return Err(CacheError::Config(
                        "REDIS_SENTINEL_MASTER is set but REDIS_SENTINEL_NODES is not: list the sentinels"
                            .to_owned(),
                    ));
                };
                let b = Self::sentinel(master.trim(), sentinels);
                match lookup("REDIS_SENTINEL_MASTER_PASSWORD") {
                    Some(pw) => {
                        b.sentinel_master_auth(lookup("REDIS_SENTINEL_MASTER_USERNAME"), pw)
                    }
                    None => b,
                }
            }
            (None, None) => Self::new(url.unwrap_or_else(|| DEFAULT_URL.to_owned())),
        };
        if let Some(n) = num(&lookup, "REDIS_CACHE_CONNECTIONS")? {
            b = b.connections(n);
        }
        if let Some(n) = num(&lookup, "REDIS_CACHE_POOL_MAX_SIZE")? {
            b = b.max_size(n);
        }
        if let Some(n) = num(&lookup, "REDIS_CACHE_POOL_MIN_IDLE")? {
            b = b.min_idle(n);
        }
        if let Some(ms) = num(&lookup, "REDIS_CACHE_CONNECT_TIMEOUT_MS")? {
            b = b.connect_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = num(&lookup, "REDIS_CACHE_COMMAND_TIMEOUT_MS")? {
            b = b.command_timeout(Duration::from_millis(ms));
        }
        if let Some(ns) = lookup("REDIS_CACHE_NAMESPACE") {
            b = b.namespace(ns);
        }
        if let Some(s) = num(&lookup, "REDIS_CACHE_NULL_TTL_SECS")? {
            b = b.null_ttl(Duration::from_secs(s));
        }
        if let Some(n) = num(&lookup, "REDIS_CACHE_MAX_VALUE_BYTES")? {
            b = b.max_value_bytes(n);
        }
        if let Some(n) = num(&lookup, "REDIS_CACHE_BREAKER_THRESHOLD")? {
            b.breaker_threshold = n;
        }
        if let Some(ms) = num(&lookup, "REDIS_CACHE_BREAKER_WINDOW_MS")? {
            b.breaker_window = Duration::from_millis(ms);
        }
        if let Some(ms) = num(&lookup, "REDIS_CACHE_BREAKER_COOLDOWN_MS")? {
            b.breaker_cooldown = Duration::from_millis(ms);
        }
        if let Some(on) = flag(&lookup, "REDIS_CACHE_SINGLE_FLIGHT")? {
            b = b.single_flight(on);
        }
        if let Some(ms) = num(&lookup, "REDIS_CACHE_FILL_WAIT_MS")? {
            b = b.fill_wait(Duration::from_millis(ms));
        }
        if let Some(name) = lookup("REDIS_CACHE_NAME") {
            b = b.name(name);
        }
        if let Some(n) = num(&lookup, "REDIS_CACHE_LOCAL_ENTRIES")? {
            b = b.local_cache(n);
        }
        if let Some(n) = num(&lookup, "REDIS_CACHE_LOCAL_BYTES")? {
            b = b.local_cache_bytes(n);
        }
        if let Some(s) = num(&lookup, "REDIS_CACHE_LOCAL_TTL_SECS")? {
            b = b.local_ttl(Duration::from_secs(s));
        }
        Ok(b)
    }

    /// The Sentinel-managed primary's username (if any) and password, when it needs them.
    /// Credentials in the sentinel URLs are the sentinels' own. No effect on other topologies.
    pub fn sentinel_master_auth(
        mut self,
        username: Option<String>,
        password: impl Into<String>,
    ) -> Self {
        if let Topology::Sentinel {
            username: u,
            password: p,
            ..
        } = &mut self.topology
        {
            *u = username;
            *p = Some(password.into());
        }
        self
    }

    /// How many multiplexed connections the cached path spreads its commands over.
    ///
    /// Each one pipelines every concurrent caller's commands; one is usually fastest, a
    /// second helps only when a single connection's reader saturates a core.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// The bb8 pool's maximum size; at least [`connections`](Self::connections).
    pub fn max_size(mut self, n: u32) -> Self {
        self.max_size = n;
        self
    }

    /// Spare connections bb8 keeps open beside the ones in use.
    pub fn min_idle(mut self, n: u32) -> Self {
        self.min_idle = n;
        self
    }

    /// Bound on establishing (and checking out) a connection.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Bound on each Redis command; a command that takes longer counts as a failure and the
    /// cached function runs its body instead.
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
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

    /// Opens the circuit after `threshold` failure events within the breaker's window (0
    /// disables it) and probes Redis again after `cooldown`. While open, cached calls run their
    /// bodies at once.
    ///
    /// An event is a connection that broke or stopped answering (however many commands were in
    /// flight on it) or a failed reconnect: 64 callers on one dropped connection are one event.
    pub fn circuit_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = threshold;
        self.breaker_cooldown = cooldown;
        self
    }

    /// How far back the breaker counts failure events (10 s by default): `threshold` events
    /// further apart than this never open the circuit.
    pub fn breaker_window(mut self, window: Duration) -> Self {
        self.breaker_window = window;
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
    /// Redis as before), unless they opt out with `local = false`. Eviction is S3-FIFO by
    /// entries (and bytes, see [`local_cache_bytes`](Self::local_cache_bytes)); an entry
    /// never outlives the TTL it has in Redis, nor [`local_ttl`](Self::local_ttl).
    pub fn local_cache(mut self, max_entries: u64) -> Self {
        self.local.max_entries = max_entries;
        self
    }

    /// Also bounds the near cache by size: the sum over its entries of the key's length and
    /// the stored entry's length (its JSON with the envelope), a measure of the memory the
    /// decoded values take rather than an exact count.
    pub fn local_cache_bytes(mut self, max_bytes: u64) -> Self {
        self.local.max_bytes = Some(max_bytes);
        self
    }

    /// The longest an entry stays in the near cache, whatever its Redis TTL: a bound on
    /// staleness should an invalidation ever be lost unnoticed.
    pub fn local_ttl(mut self, ttl: Duration) -> Self {
        self.local.ttl = Some(ttl);
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
        match &self.topology {
            Topology::Standalone => {}
            Topology::Cluster { nodes } if nodes.is_empty() => {
                return bad("a cluster needs at least one seed node URL");
            }
            Topology::Sentinel { sentinels, .. } if sentinels.is_empty() => {
                return bad("Sentinel needs at least one sentinel URL");
            }
            Topology::Sentinel { master, .. } if master.trim().is_empty() => {
                return bad("Sentinel needs the master's name");
            }
            Topology::Cluster { .. } | Topology::Sentinel { .. } => {}
        }
        if let Some(name) = &self.name
            && (name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control))
        {
            return bad("the cache name must be 1 to 64 characters without control characters");
        }
        if self.connections == 0 {
            return bad("connections must be at least 1");
        }
        if self.local.max_bytes == Some(0) {
            return bad("the near cache's byte bound must be at least 1");
        }
        if self.local.ttl.is_some_and(|t| t.is_zero() || t > MAX_TTL) {
            return bad(
                "the near cache's local ttl must be greater than zero and at most ten years",
            );
        }
        if usize::try_from(self.max_size).map_or(true, |m| m < self.connections) {
            return bad("pool max size must be at least the number of connections");
        }
        if self.min_idle > self.max_size {
            return bad("pool min idle must not exceed the pool max size");
        }
        let all_timeouts = [
            self.connect_timeout,
            self.command_timeout,
            self.breaker_window,
            self.breaker_cooldown,
            self.fill_wait,
        ];
        if all_timeouts.iter().any(Duration::is_zero) {
            return bad(
                "timeouts, the breaker window and cool-down and the fill wait must be greater than zero",
            );
        }
        if all_timeouts.iter().any(|t| *t > MAX_WAIT) {
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
    /// Redis is not reachable.
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
    /// and fill-wait settings; the URL and connection settings are not used.
    pub fn build_in_memory(self) -> Result<Cache, CacheError> {
        Cache::memory(self)
    }
}

/// The URL with any password (and a unix socket's `pass` parameter) replaced by `***`.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<unparseable url>".to_owned();
    };
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = url.set_password(Some("***"));
    }
    if url
        .query_pairs()
        .any(|(k, _)| k == "pass" || k == "password")
    {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "pass" || k == "password" {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        for raw in [
            "redis://:s3cret@127.0.0.1:6379/2",
            "redis://app:s3cret@cache.internal:6380",
            "rediss://app:s3cret@cache.internal",
            "redis+unix:///run/redis.sock?db=1&pass=s3cret",
            "unix:///run/redis.sock?pass=s3cret",
        ] {
            let shown = redact_url(raw);
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
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
        assert_eq!(b.url, "redis://10.0.0.1:7000");
        assert_eq!(b.command_timeout, Duration::from_millis(80));
        assert_eq!(b.namespace, "shop:");
        assert_eq!(b.connect_timeout, Duration::from_millis(500));

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
    fn the_environment_picks_cluster_or_sentinel_and_refuses_two_topologies() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            CacheBuilder::from_lookup(move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        let b =
            env(&[("REDIS_CLUSTER_NODES", "redis://a:7000, redis://b:7001,")]).expect("cluster");
        assert!(
            matches!(&b.topology, Topology::Cluster { nodes } if nodes == &["redis://a:7000", "redis://b:7001"])
        );
        let b = env(&[
            ("REDIS_SENTINEL_MASTER", "mymaster"),
            ("REDIS_SENTINEL_NODES", "redis://s1:26379,redis://s2:26379"),
            ("REDIS_SENTINEL_MASTER_PASSWORD", "hunter2"),
        ])
        .expect("sentinel");
        let Topology::Sentinel {
            master,
            sentinels,
            password,
            ..
        } = &b.topology
        else {
            panic!("not sentinel: {b:?}");
        };
        assert_eq!((master.as_str(), sentinels.len()), ("mymaster", 2));
        assert_eq!(password.as_deref(), Some("hunter2"));
        assert!(!format!("{b:?}").contains("hunter2"));
        for conflict in [
            &[
                ("REDIS_CLUSTER_NODES", "redis://a:1"),
                ("REDIS_SENTINEL_MASTER", "m"),
            ][..],
            &[
                ("REDIS_CLUSTER_NODES", "redis://a:1"),
                ("REDIS_URL", "redis://b:2"),
            ][..],
            &[("REDIS_SENTINEL_MASTER", "m")][..],
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(conflict.to_vec().into_boxed_slice());
            assert!(env(pairs).is_err(), "{conflict:?} accepted");
        }
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
        assert!(
            CacheBuilder::sentinel("m", Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(
            CacheBuilder::sentinel(" ", ["redis://s:1"])
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
