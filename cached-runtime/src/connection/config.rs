//! The connection layer's configuration: where Redis is, how many connections, the timeouts
//! and the breaker, with their environment variables.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use crate::error::CacheError;

/// The longest timeout, window or wait a builder accepts.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The URL used when neither code nor `REDIS_URL` names one.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Everything a [`Redis`](super::Redis) connection is built from. Start with
/// [`Redis::builder`](super::Redis::builder), [`Redis::cluster`](super::Redis::cluster),
/// [`Redis::sentinel`](super::Redis::sentinel) or [`RedisBuilder::from_env`].
///
/// The defaults suit a request path: a Redis that cannot answer quickly is skipped, not
/// waited for.
///
/// | setting | default | environment variable |
/// |---|---|---|
/// | URL of a single Redis | `redis://127.0.0.1:6379` | `REDIS_URL` |
/// | Redis Cluster seed nodes, comma-separated | none | `REDIS_CLUSTER_NODES` |
/// | Sentinel: the master's name and the sentinels, comma-separated | none | `REDIS_SENTINEL_MASTER`, `REDIS_SENTINEL_NODES` |
/// | Sentinel: the master's username and password, when it has them | none | `REDIS_SENTINEL_MASTER_USERNAME`, `REDIS_SENTINEL_MASTER_PASSWORD` |
/// | multiplexed connections shared by all callers | 1 | `REDIS_CACHE_CONNECTIONS` |
/// | pool max size | 4 | `REDIS_CACHE_POOL_MAX_SIZE` |
/// | pool min idle | 0 | `REDIS_CACHE_POOL_MIN_IDLE` |
/// | connect / checkout timeout | 500 ms | `REDIS_CACHE_CONNECT_TIMEOUT_MS` |
/// | per-command timeout | 250 ms | `REDIS_CACHE_COMMAND_TIMEOUT_MS` |
/// | failure events within the window that open a node's circuit breaker (0: never) | 5 | `REDIS_CACHE_BREAKER_THRESHOLD` |
/// | the circuit breaker's window | 10000 ms | `REDIS_CACHE_BREAKER_WINDOW_MS` |
/// | circuit breaker cool-down before a probe | 1000 ms | `REDIS_CACHE_BREAKER_COOLDOWN_MS` |
/// | the `cache` label of its metrics | `default`, `default-2`, … | `REDIS_CACHE_NAME` |
/// | TLS: a PEM file of the CA that signed the servers' certificates (default: the system's roots) | none | `REDIS_TLS_CA_FILE` |
/// | TLS: a client certificate chain and its private key, PEM files (mutual TLS) | none | `REDIS_TLS_CLIENT_CERT_FILE`, `REDIS_TLS_CLIENT_KEY_FILE` |
/// | Sentinel: whether the primary speaks TLS (default: as the sentinels' URLs say) | none | `REDIS_SENTINEL_MASTER_TLS` |
///
/// TLS is on for a role when its URLs are `rediss://`: the one server, every cluster node
/// (seeds and the nodes they name), the sentinels; the Sentinel-managed primary follows the
/// sentinels unless [`sentinel_primary_tls`](Self::sentinel_primary_tls) says otherwise.
#[derive(Clone)]
pub struct RedisBuilder {
    pub(crate) url: String,
    pub(crate) topology: Topology,
    pub(crate) connections: usize,
    pub(crate) max_size: u32,
    pub(crate) min_idle: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_window: Duration,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) name: Option<String>,
    pub(crate) tls: TlsOptions,
    /// Read on every new connection to a data node, instead of the URL's credentials.
    pub(crate) credentials: Option<Arc<dyn CredentialsProvider>>,
}

/// PEM data: a file, read when the connection is built, or the bytes themselves.
#[derive(Clone)]
pub(crate) enum Pem {
    File(PathBuf),
    Bytes(Arc<[u8]>),
}

impl Pem {
    /// The PEM's bytes; an unreadable file is an error naming it and `what` it holds.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn read(&self, what: &str) -> Result<Arc<[u8]>, String> {
        match self {
            Pem::Bytes(b) => Ok(Arc::clone(b)),
            Pem::File(path) => std::fs::read(path)
                .map(Arc::from)
                .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display())),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "{}", path.display()),
            // A key's bytes are secret: only their size is shown.
            Pem::Bytes(b) => write!(f, "<{} bytes of PEM>", b.len()),
        }
    }
}

/// How TLS connections are verified and authenticated; on or off per role by URL scheme.
#[derive(Clone, Default, Debug)]
pub(crate) struct TlsOptions {
    /// The CA that signed the servers' certificates; the system's roots when `None`.
    pub(crate) ca: Option<Pem>,
    /// A client certificate chain and its key (mutual TLS).
    pub(crate) client: Option<(Pem, Pem)>,
    /// Certificates are still checked, but not the name in them (tests only).
    pub(crate) accept_invalid_hostnames: bool,
    /// Sentinel: whether the primary speaks TLS; `None`: as the sentinels do.
    pub(crate) sentinel_primary: Option<bool>,
}

impl TlsOptions {
    pub(crate) fn has_options(&self) -> bool {
        self.ca.is_some() || self.client.is_some() || self.accept_invalid_hostnames
    }
}

/// A username (`None`: Redis's `default` user) and password to authenticate with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` for the `default` user.
    pub username: Option<String>,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Where rotating credentials come from: asked on every new connection to a data node (the
/// one server, each cluster node, the Sentinel-managed primary, tracking and blocking
/// connections), so a reconnect after a password change authenticates with the new one.
/// Connections already made stay authenticated.
///
/// Any `Fn() -> Credentials + Send + Sync` is one:
///
/// ```
/// use cached_runtime::{Credentials, RedisBuilder};
///
/// let builder = RedisBuilder::from_env().unwrap().credentials_provider(|| Credentials {
///     username: Some("app".to_owned()),
///     password: std::env::var("REDIS_PASSWORD").unwrap_or_default(),
/// });
/// ```
pub trait CredentialsProvider: Send + Sync + 'static {
    /// The credentials to authenticate a new connection with.
    fn credentials(&self) -> Credentials;
}

impl<F: Fn() -> Credentials + Send + Sync + 'static> CredentialsProvider for F {
    fn credentials(&self) -> Credentials {
        self()
    }
}

/// Which Redis deployment a connection talks to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server at [`RedisBuilder::url`].
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

impl fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBuilder")
            .field("redis", &self.topology.describe(&self.url))
            .field("connections", &self.connections)
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_window", &self.breaker_window)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("credentials_provider", &self.credentials.is_some())
            .finish()
    }
}

/// Reads an environment variable through `lookup`.
pub(crate) trait Lookup: Fn(&str) -> Option<String> {}
impl<F: Fn(&str) -> Option<String>> Lookup for F {}

/// A non-negative integer variable; malformed is an error naming it.
pub(crate) fn env_num<T: std::str::FromStr>(
    lookup: &impl Lookup,
    name: &str,
) -> Result<Option<T>, CacheError> {
    match lookup(name) {
        None => Ok(None),
        Some(v) => {
            v.trim().parse().map(Some).map_err(|_| {
                CacheError::Config(format!("{name}={v:?} is not a non-negative integer"))
            })
        }
    }
}

/// A boolean variable: `true`, `false`, `1` or `0`.
pub(crate) fn env_flag(lookup: &impl Lookup, name: &str) -> Result<Option<bool>, CacheError> {
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

impl RedisBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            topology: Topology::Standalone,
            connections: 1,
            max_size: 4,
            min_idle: 0,
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(250),
            breaker_threshold: 5,
            breaker_window: Duration::from_secs(10),
            breaker_cooldown: Duration::from_secs(1),
            name: None,
            tls: TlsOptions::default(),
            credentials: None,
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
        Self::from_lookup(&|name: &str| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(lookup: &impl Lookup) -> Result<Self, CacheError> {
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
        let conflict = |m: &str| Err(CacheError::Config(m.to_owned()));
        let mut b = match (list("REDIS_CLUSTER_NODES"), lookup("REDIS_SENTINEL_MASTER")) {
            (Some(_), Some(_)) => {
                return conflict(
                    "REDIS_CLUSTER_NODES and REDIS_SENTINEL_MASTER are both set: pick one topology",
                );
            }
            (Some(nodes), None) => {
                if url.is_some() {
                    return conflict(
                        "REDIS_URL and REDIS_CLUSTER_NODES are both set: pick one topology",
                    );
                }
                Self::cluster(nodes)
            }
            (None, Some(master)) => {
                if url.is_some() {
                    return conflict(
                        "REDIS_URL and REDIS_SENTINEL_MASTER are both set: pick one topology",
                    );
                }
                let Some(sentinels) = list("REDIS_SENTINEL_NODES") else {
                    return conflict(
                        "REDIS_SENTINEL_MASTER is set but REDIS_SENTINEL_NODES is not: list the sentinels",
                    );
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
        if let Some(n) = env_num(lookup, "REDIS_CACHE_CONNECTIONS")? {
            b.connections = n;
        }
        if let Some(n) = env_num(lookup, "REDIS_CACHE_POOL_MAX_SIZE")? {
            b.max_size = n;
        }
        if let Some(n) = env_num(lookup, "REDIS_CACHE_POOL_MIN_IDLE")? {
            b.min_idle = n;
        }
        if let Some(ms) = env_num(lookup, "REDIS_CACHE_CONNECT_TIMEOUT_MS")? {
            b.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = env_num(lookup, "REDIS_CACHE_COMMAND_TIMEOUT_MS")? {
            b.command_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = env_num(lookup, "REDIS_CACHE_BREAKER_THRESHOLD")? {
            b.breaker_threshold = n;
        }
        if let Some(ms) = env_num(lookup, "REDIS_CACHE_BREAKER_WINDOW_MS")? {
            b.breaker_window = Duration::from_millis(ms);
        }
        if let Some(ms) = env_num(lookup, "REDIS_CACHE_BREAKER_COOLDOWN_MS")? {
            b.breaker_cooldown = Duration::from_millis(ms);
        }
        if let Some(name) = lookup("REDIS_CACHE_NAME") {
            b.name = Some(name);
        }
        if let Some(ca) = lookup("REDIS_TLS_CA_FILE") {
            b = b.tls_ca_file(ca);
        }
        match (
            lookup("REDIS_TLS_CLIENT_CERT_FILE"),
            lookup("REDIS_TLS_CLIENT_KEY_FILE"),
        ) {
            (Some(cert), Some(key)) => b = b.tls_client_cert_files(cert, key),
            (None, None) => {}
            _ => {
                return conflict(
                    "REDIS_TLS_CLIENT_CERT_FILE and REDIS_TLS_CLIENT_KEY_FILE go together: set both or neither",
                );
            }
        }
        if let Some(on) = env_flag(lookup, "REDIS_SENTINEL_MASTER_TLS")? {
            b = b.sentinel_primary_tls(on);
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

    /// Verifies the servers' TLS certificates against the CA certificates in this PEM file
    /// (read when the connection is built) instead of the system's roots.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca = Some(Pem::File(path.into()));
        self
    }

    /// Verifies the servers' TLS certificates against these PEM-encoded CA certificates
    /// instead of the system's roots.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca = Some(Pem::Bytes(pem.into().into()));
        self
    }

    /// Presents this client certificate chain, with its private key, to servers that ask
    /// for one (mutual TLS); both PEM files are read when the connection is built.
    pub fn tls_client_cert_files(
        mut self,
        cert_chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.tls.client = Some((Pem::File(cert_chain.into()), Pem::File(key.into())));
        self
    }

    /// [`tls_client_cert_files`](Self::tls_client_cert_files) from PEM bytes.
    pub fn tls_client_cert_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some((
            Pem::Bytes(cert_chain.into().into()),
            Pem::Bytes(key.into().into()),
        ));
        self
    }

    /// **For tests only.** Accepts a server certificate that names another host, as long as
    /// a trusted CA signed it: anyone holding any certificate from that CA can then pose as
    /// the server. Never use it in production; fix the certificate's names instead.
    pub fn danger_accept_invalid_hostnames_for_testing_only(mut self) -> Self {
        self.tls.accept_invalid_hostnames = true;
        self
    }

    /// Sentinel: whether the primary speaks TLS, when it differs from the sentinels (whose
    /// URLs say whether they do). No effect on other topologies.
    pub fn sentinel_primary_tls(mut self, tls: bool) -> Self {
        self.tls.sentinel_primary = Some(tls);
        self
    }

    /// Reads the data nodes' credentials from `provider` on every new connection, instead of
    /// from the URLs (a rotating password). See [`CredentialsProvider`].
    pub fn credentials_provider(mut self, provider: impl CredentialsProvider) -> Self {
        self.credentials = Some(Arc::new(provider));
        self
    }

    /// How many multiplexed connections commands are spread over.
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

    /// Bound on each Redis command; a command that takes longer fails with
    /// [`CacheError::Timeout`] and counts as a failure of its node.
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    /// Opens a node's circuit after `threshold` failure events within the breaker's window
    /// (0 disables it) and probes that node again after `cooldown`. While a node's circuit is
    /// open, commands for it fail at once with [`CacheError::CircuitOpen`]; other nodes are
    /// not affected.
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

    /// The `cache` label of this connection's metrics (1 to 64 characters, no control
    /// characters); see [`telemetry`](crate::telemetry).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), CacheError> {
        let bad = |m: &str| Err(CacheError::Config(m.to_owned()));
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
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if self.connections == 0 {
            return bad("connections must be at least 1");
        }
        if usize::try_from(self.max_size).map_or(true, |m| m < self.connections) {
            return bad("pool max size must be at least the number of connections");
        }
        if self.min_idle > self.max_size {
            return bad("pool min idle must not exceed the pool max size");
        }
        let all = [
            self.connect_timeout,
            self.command_timeout,
            self.breaker_window,
            self.breaker_cooldown,
        ];
        if all.iter().any(Duration::is_zero) {
            return bad(
                "timeouts, the breaker window and cool-down and the fill wait must be greater than zero",
            );
        }
        if all.iter().any(|t| *t > MAX_WAIT) {
            return bad(
                "timeouts, the breaker window and cool-down and the fill wait must be at most one hour",
            );
        }
        Ok(())
    }

    /// Connects, pings and returns the connection; fails with an error that says what to check
    /// when Redis is not reachable.
    pub async fn build(self) -> Result<super::Redis, CacheError> {
        super::Redis::connect(self).await
    }

    /// Returns the connection without waiting for Redis: connections are made in the
    /// background, and until Redis answers every command fails fast with
    /// [`CacheError::Unavailable`].
    ///
    /// Must be called within a Tokio runtime (which runs the background connects); outside
    /// one it returns an error.
    pub fn build_lazy(self) -> Result<super::Redis, CacheError> {
        super::Redis::lazy(self)
    }
}

/// A metrics name: 1 to 64 characters without control characters.
pub(crate) fn validate_name(name: &str) -> Result<(), CacheError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(CacheError::Config(
            "the cache name must be 1 to 64 characters without control characters".to_owned(),
        ));
    }
    Ok(())
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

    fn env(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> + use<> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

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
    fn the_environment_picks_cluster_or_sentinel_and_refuses_two_topologies() {
        let b = RedisBuilder::from_lookup(&env(&[(
            "REDIS_CLUSTER_NODES",
            "redis://a:7000, redis://b:7001,",
        )]))
        .expect("cluster");
        assert!(
            matches!(&b.topology, Topology::Cluster { nodes } if nodes == &["redis://a:7000", "redis://b:7001"])
        );
        let b = RedisBuilder::from_lookup(&env(&[
            ("REDIS_SENTINEL_MASTER", "mymaster"),
            ("REDIS_SENTINEL_NODES", "redis://s1:26379,redis://s2:26379"),
            ("REDIS_SENTINEL_MASTER_PASSWORD", "hunter2"),
        ]))
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
            assert!(
                RedisBuilder::from_lookup(&env(pairs)).is_err(),
                "{conflict:?} accepted"
            );
        }
    }

    #[test]
    fn the_environment_sets_tls_files_and_refuses_half_a_client_certificate() {
        let b = RedisBuilder::from_lookup(&env(&[
            ("REDIS_CLUSTER_NODES", "rediss://a:7000"),
            ("REDIS_TLS_CA_FILE", "/etc/redis/ca.pem"),
            ("REDIS_TLS_CLIENT_CERT_FILE", "/etc/redis/client.pem"),
            ("REDIS_TLS_CLIENT_KEY_FILE", "/etc/redis/client.key"),
        ]))
        .expect("cluster over TLS");
        assert!(matches!(&b.tls.ca, Some(Pem::File(p)) if p.ends_with("ca.pem")));
        assert!(b.tls.client.is_some());
        let b = RedisBuilder::from_lookup(&env(&[
            ("REDIS_SENTINEL_MASTER", "m"),
            ("REDIS_SENTINEL_NODES", "rediss://s:26380"),
            ("REDIS_SENTINEL_MASTER_TLS", "false"),
        ]))
        .expect("sentinel");
        assert_eq!(b.tls.sentinel_primary, Some(false));
        for half in [
            &[("REDIS_TLS_CLIENT_CERT_FILE", "/c.pem")][..],
            &[("REDIS_TLS_CLIENT_KEY_FILE", "/c.key")][..],
            &[("REDIS_SENTINEL_MASTER_TLS", "maybe")][..],
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(half.to_vec().into_boxed_slice());
            assert!(
                RedisBuilder::from_lookup(&env(pairs)).is_err(),
                "{half:?} accepted"
            );
        }
    }

    #[test]
    fn empty_topologies_are_rejected() {
        assert!(
            RedisBuilder::cluster(Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(
            RedisBuilder::sentinel("m", Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(
            RedisBuilder::sentinel(" ", ["redis://s:1"])
                .validate()
                .is_err()
        );
        assert!(RedisBuilder::cluster(["redis://a:1"]).validate().is_ok());
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let b = RedisBuilder::new("redis://:hunter2@localhost");
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
