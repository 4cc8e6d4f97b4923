//! The Redis backend: a bb8 pool and a few shared multiplexed connections, to one server, to
//! the primary Sentinel names, or to a whole Redis Cluster.
//!
//! The three differ only in how a connection is made ([`Connector`]) and what it is
//! ([`Link`]): a cluster connection is one handle that routes each command to the shard that
//! owns its key and pipelines per node; a Sentinel connection is a plain connection to the
//! primary the sentinels name at the moment it is made. Everything below treats them alike.
//!
//! bb8 owns connection life: it connects with a timeout, checks a connection with `PING` when
//! it is handed out, closes connections that broke or outlived `max_lifetime`, and reaps idle
//! ones. The cached path does not check a connection out per command, which would forfeit
//! pipelining: each of a few *slots* leases one multiplexed connection from bb8 and every
//! caller sends on a clone of it, so concurrent commands share its pipeline. A lease ends:
//! - when the connection breaks (an I/O error, a dropped connection, or a `READONLY`,
//!   `LOADING` or `MASTERDOWN` reply): it goes back to bb8 marked broken, so bb8 closes it;
//! - after [`RETIRE_AFTER_TIMEOUTS`] consecutive timeouts, the sign of a half-open connection
//!   (a failover, a silent load balancer) that no error will ever reveal;
//! - after the lease time, healthy: it returns to bb8, which recycles it, and the slot takes a
//!   freshly checked one.
//!
//! A slot is refilled in the background, with back-off, by a task that holds the slot's
//! refill flag in a guard (a task dropped at shutdown or by a panic frees the flag). Until
//! then callers fail fast and run their bodies.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use bb8::{ErrorSink, Pool, PooledConnection, RunError};
use bb8_redis::RedisConnectionManager;
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    io::tcp::{TcpSettings, socket2::TcpKeepalive},
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};
use tokio::sync::watch;

use crate::{
    breaker::Breaker,
    config::{CacheBuilder, Topology},
    error::{CacheError, is_failover_code},
    spawn::Spawner,
};

/// Consecutive timeouts after which a connection is presumed half-open and replaced.
pub(crate) const RETIRE_AFTER_TIMEOUTS: u32 = 3;

/// How long a slot keeps a healthy connection before handing it back to bb8.
const LEASE: Duration = Duration::from_secs(30);

/// bb8 closes connections older than this when they come back.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

type Pooled = PooledConnection<'static, Manager>;

/// A command that did not succeed, as the layers above need to know it.
#[derive(Debug)]
pub(crate) enum Fault {
    /// No answer within the command timeout. `event`: the first timeout of its connection
    /// since its last success.
    Timeout { event: bool },
    /// The connection is unusable and was retired. `event`: this caller retired it.
    Broken { event: bool, error: RedisError },
    /// No connection yet: one is being made.
    NoConnection,
    /// Redis answered with an error; the connection is fine.
    Command(RedisError),
}

impl Fault {
    pub(crate) fn into_error(self, command_timeout: Duration) -> CacheError {
        match self {
            Fault::Timeout { .. } => CacheError::Timeout(command_timeout),
            Fault::NoConnection => CacheError::Unavailable,
            Fault::Broken { error, .. } | Fault::Command(error) => match error.code() {
                Some(code) => CacheError::Command {
                    code: Some(code.to_owned()),
                    source: Box::new(error),
                },
                None if error.kind() == redis::ErrorKind::Io => {
                    CacheError::Connection(Box::new(error))
                }
                None => CacheError::Command {
                    code: None,
                    source: Box::new(error),
                },
            },
        }
    }
}

/// One shared, multiplexed connection: to a server, or to a whole cluster.
#[derive(Clone)]
pub(crate) enum Link {
    Single(MultiplexedConnection),
    /// Routes each command to the shard that owns its key; follows `MOVED` and `ASK`.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    #[inline]
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// How new connections are made.
enum Connector {
    /// A plain URL, through bb8-redis's manager.
    Url(RedisConnectionManager),
    /// A `rediss://` URL, with this crate's own TLS setup.
    #[cfg(feature = "tls")]
    Tls(super::tls::Connector),
    Cluster(ClusterClient),
    /// Asks the sentinels for the primary on every connect, so a reconnect after a failover
    /// finds the new one. The client needs `&mut` for its lookups.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The connector, plus a flag through which a slot tells bb8 a connection broke.
struct Manager {
    connector: Connector,
    response_timeout: Duration,
}

struct Conn {
    conn: Link,
    broken: Arc<AtomicBool>,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let conn = match &self.connector {
            Connector::Url(inner) => {
                let mut conn = inner.connect().await?;
                conn.set_response_timeout(self.response_timeout);
                Link::Single(conn)
            }
            #[cfg(feature = "tls")]
            Connector::Tls(tls) => Link::Single(tls.connect(self.response_timeout).await?),
            Connector::Cluster(client) => Link::Cluster(client.get_async_connection().await?),
            Connector::Sentinel(client) => {
                let config =
                    AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout));
                let conn = client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await?;
                Link::Single(conn)
            }
        };
        Ok(Conn {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        if let Connector::Sentinel(_) = self.connector {
            // A pooled connection to a primary demoted by a failover still answers PING;
            // ROLE tells it apart (same round trip).
            let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn.conn).await?;
            return match role.first() {
                Some(Value::BulkString(r)) if r == b"master" => Ok(()),
                _ => Err(RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                    "no longer the primary",
                ))),
            };
        }
        let _: String = redis::cmd("PING").query_async(&mut conn.conn).await?;
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken.load(Ordering::Acquire)
    }
}

pub(crate) struct RedisStore {
    kind: Kind,
    /// Dropped with the store, which ends background listeners.
    _closed: watch::Sender<()>,
    pool: Pool<Manager>,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    generation: AtomicU64,
    command_timeout: Duration,
    connect_timeout: Duration,
    last_connect_error: ConnectErrors,
    url: String,
    breaker: Arc<Breaker>,
    spawner: Spawner,
    retired: AtomicU64,
    unlock: redis::Script,
    this: Weak<RedisStore>,
}

#[derive(Default)]
struct Slot {
    conn: ArcSwapOption<Held>,
    refilling: AtomicBool,
    timeouts: AtomicU32,
}

struct Held {
    generation: u64,
    conn: Link,
    since: Instant,
    // Keeps the connection leased from bb8; dropping it hands it back (closed if `broken`).
    pooled: Pooled,
}

impl Held {
    fn mark_broken(&self) {
        self.pooled.broken.store(true, Ordering::Release);
    }
}

/// The connection errors bb8 meets. bb8's checkout keeps waiting for its background connect
/// until the connect timeout whatever happens to it; the refill stops waiting as soon as an
/// attempt fails, and explains it in words.
#[derive(Clone, Debug)]
struct ConnectErrors {
    last: Arc<Mutex<Option<RedisError>>>,
    seen: Arc<watch::Sender<u64>>,
}

impl Default for ConnectErrors {
    fn default() -> Self {
        Self {
            last: Arc::default(),
            seen: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl ErrorSink<RedisError> for ConnectErrors {
    fn sink(&self, error: RedisError) {
        tracing::debug!(error = %error, "redis connection attempt failed");
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        self.seen.send_modify(|n| *n += 1);
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

impl ConnectErrors {
    fn take(&self) -> Option<RedisError> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Clears a slot's refill flag however the refill ends: done, failed, cancelled or panicked.
struct RefillFlag {
    store: Weak<RedisStore>,
    index: usize,
}

impl Drop for RefillFlag {
    fn drop(&mut self) {
        if let Some(store) = self.store.upgrade() {
            store.slots[self.index]
                .refilling
                .store(false, Ordering::Release);
        }
    }
}

/// Which kind of deployment the connections reach.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Cluster,
}

/// Slots `start..=end` of a cluster and the primary that owns them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SlotRange {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// The slot a command was sent on, to judge its outcome.
struct Lease {
    index: usize,
    generation: u64,
}

/// `COMPARE_AND_DELETE`: releases a lock only while it still holds the caller's token.
const UNLOCK_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

fn invalid(url: &str, e: &RedisError) -> CacheError {
    CacheError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// A cluster node's or a sentinel's URL: plain `redis://` only.
pub(super) fn node_info(raw: &str, shown: &str) -> Result<redis::ConnectionInfo, CacheError> {
    if raw.starts_with("rediss://") {
        return Err(CacheError::InvalidUrl {
            url: shown.to_owned(),
            reason:
                "rediss:// is supported for a single Redis only, not yet for Cluster or Sentinel"
                    .to_owned(),
        });
    }
    raw.into_connection_info().map_err(|e| invalid(shown, &e))
}

/// A client that asks `sentinels` for `master`'s primary and connects to it with the
/// primary's own `(username, password)` and `protocol`.
pub(super) fn sentinel_client(
    master: &str,
    sentinels: &[String],
    (username, password): (Option<&str>, Option<&str>),
    protocol: redis::ProtocolVersion,
    url: &str,
) -> Result<SentinelClient, CacheError> {
    let tcp = || TcpSettings::default().set_keepalive(keepalive());
    let infos = sentinels
        .iter()
        .map(|n| node_info(n, url).map(|i| i.set_tcp_settings(tcp())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut redis = redis::RedisConnectionInfo::default().set_protocol(protocol);
    if let Some(u) = username {
        redis = redis.set_username(u);
    }
    if let Some(p) = password {
        redis = redis.set_password(p);
    }
    let node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(redis)
        .set_tcp_settings(tcp());
    SentinelClient::build(
        infos,
        master.to_owned(),
        Some(node),
        SentinelServerType::Master,
    )
    .map_err(|e| invalid(url, &e))
}

/// The connection info of one server at `config.url`, and whether it is `rediss://` (the
/// info then has the `redis` scheme: TLS is this crate's own).
pub(super) fn standalone_info(
    config: &CacheBuilder,
    url: &str,
) -> Result<(redis::ConnectionInfo, bool), CacheError> {
    let tls_url = config.url.starts_with("rediss://");
    if tls_url && !cfg!(feature = "tls") {
        return Err(CacheError::InvalidUrl {
            url: url.to_owned(),
            reason: "rediss:// needs the `tls` feature of cached-runtime".to_owned(),
        });
    }
    let plain = config
        .url
        .strip_prefix("rediss://")
        .map_or_else(|| config.url.clone(), |rest| format!("redis://{rest}"));
    let info = plain
        .as_str()
        .into_connection_info()
        .map_err(|e| invalid(url, &e))?
        .set_tcp_settings(TcpSettings::default().set_keepalive(keepalive()));
    Ok((info, tls_url))
}

/// Keepalive probes find a peer that vanished without a word (a failed-over host).
pub(super) fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
}

/// The connector for one server at `config.url`, plain or TLS.
fn standalone(config: &CacheBuilder, url: &str) -> Result<Connector, CacheError> {
    let (info, tls_url) = standalone_info(config, url)?;
    #[cfg(feature = "tls")]
    if tls_url {
        let tls = super::tls::Connector::new(&info, keepalive()).map_err(|reason| {
            CacheError::InvalidUrl {
                url: url.to_owned(),
                reason,
            }
        })?;
        return Ok(Connector::Tls(tls));
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls_url;
    Ok(Connector::Url(
        RedisConnectionManager::new(info).map_err(|e| invalid(url, &e))?,
    ))
}

impl RedisStore {
    pub(crate) fn new(
        config: &CacheBuilder,
        breaker: Arc<Breaker>,
        spawner: Spawner,
    ) -> Result<Arc<Self>, CacheError> {
        let url = config.topology.describe(&config.url);
        let tcp = || TcpSettings::default().set_keepalive(keepalive());
        let connector = match &config.topology {
            Topology::Standalone => standalone(config, &url)?,
            Topology::Cluster { nodes } => {
                let infos = nodes
                    .iter()
                    .map(|n| node_info(n, &url).map(|i| i.set_tcp_settings(tcp())))
                    .collect::<Result<Vec<_>, _>>()?;
                let client = ClusterClientBuilder::new(infos)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.command_timeout)
                    // A command is bounded by the command timeout, retries included; a
                    // redirect after a failover needs one or two.
                    .retries(2)
                    .tcp_settings(tcp())
                    .build()
                    .map_err(|e| invalid(&url, &e))?;
                Connector::Cluster(client)
            }
            Topology::Sentinel {
                master,
                sentinels,
                username,
                password,
            } => {
                let client = sentinel_client(
                    master,
                    sentinels,
                    (username.as_deref(), password.as_deref()),
                    redis::ProtocolVersion::RESP2,
                    &url,
                )?;
                Connector::Sentinel(tokio::sync::Mutex::new(client))
            }
        };
        let kind = match connector {
            Connector::Cluster(_) => Kind::Cluster,
            _ => Kind::Single,
        };
        let (closed, on_close) = watch::channel(());
        let watch = match &config.topology {
            Topology::Sentinel {
                master, sentinels, ..
            } => Some((
                master.clone(),
                sentinels
                    .iter()
                    .map(|n| node_info(n, &url))
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            _ => None,
        };
        let manager = Manager {
            connector,
            response_timeout: config.command_timeout,
        };
        let last_connect_error = ConnectErrors::default();
        let pool = Pool::builder()
            .max_size(config.max_size)
            .min_idle(Some(config.min_idle).filter(|&n| n > 0))
            .connection_timeout(config.connect_timeout)
            .max_lifetime(Some(MAX_LIFETIME))
            .test_on_check_out(true)
            // One attempt per checkout: the refill loop retries with back-off and counts each
            // failed attempt as a breaker event.
            .retry_connection(false)
            .error_sink(Box::new(last_connect_error.clone()))
            .build_unchecked(manager);
        let store = Arc::new_cyclic(|this| Self {
            kind,
            _closed: closed,
            pool,
            slots: (0..config.connections).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            command_timeout: config.command_timeout,
            connect_timeout: config.connect_timeout,
            last_connect_error,
            url,
            breaker,
            spawner,
            retired: AtomicU64::new(0),
            unlock: redis::Script::new(UNLOCK_SCRIPT),
            this: this.clone(),
        });
        if let Some((master, sentinels)) = watch {
            super::sentinel::watch_switches(
                Arc::downgrade(&store),
                sentinels,
                master,
                config.connect_timeout,
                on_close,
                &store.spawner,
            );
        }
        Ok(store)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Changes (to an error) when the store is dropped: background tasks end with it.
    pub(super) fn closed(&self) -> watch::Receiver<()> {
        self._closed.subscribe()
    }

    pub(super) fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Connections retired as broken or half-open so far.
    pub(crate) fn retired(&self) -> u64 {
        self.retired.load(Ordering::Relaxed)
    }

    /// Fills every slot now, explaining a failure in words a user can act on.
    pub(crate) async fn connect_all(&self) -> Result<(), CacheError> {
        for index in 0..self.slots.len() {
            self.fill(index).await?;
        }
        let pong: String = self
            .query(&redis::cmd("PING"))
            .await
            .map_err(|f| f.into_error(self.command_timeout))?;
        if pong != "PONG" {
            return Err(CacheError::Config(format!(
                "{} answered PING with {pong:?}: is it a redis server?",
                self.url
            )));
        }
        Ok(())
    }

    /// Starts filling every slot in the background.
    pub(crate) fn connect_in_background(&self) {
        for index in 0..self.slots.len() {
            self.refill(index);
        }
    }

    /// Retires every connection and makes new ones, so the probe after the circuit's
    /// cool-down finds a fresh connection rather than the one that failed.
    pub(crate) fn reconnect_all(&self) {
        for index in 0..self.slots.len() {
            if let Some(held) = self.slots[index].conn.swap(None) {
                held.mark_broken();
            }
            self.refill(index);
        }
    }

    /// Runs one command on a shared connection, bounded by the command timeout.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Fault> {
        let (lease, mut conn) = self.checkout()?;
        let result = cmd.query_async::<T>(&mut conn).await;
        self.judge(&lease, result)
    }

    /// Runs a pipeline on a shared connection (one round trip), bounded by the command
    /// timeout.
    pub(crate) async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Fault> {
        let (lease, mut conn) = self.checkout()?;
        let result = pipe.query_async::<T>(&mut conn).await;
        self.judge(&lease, result)
    }

    /// Releases `key` if it still holds `token` (`EVALSHA`, loading the script once).
    pub(crate) async fn unlock(&self, key: &str, token: &str) -> Result<bool, Fault> {
        let (lease, mut conn) = self.checkout()?;
        let result = self
            .unlock
            .key(key)
            .arg(token)
            .invoke_async::<i64>(&mut conn)
            .await;
        self.judge(&lease, result).map(|n| n > 0)
    }

    /// Whether this is a cluster, whose keys are spread over several primaries.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster)
    }

    /// Which primary owns which slots (`CLUSTER SLOTS`), sorted: two snapshots compare equal
    /// exactly when no slot changed hands between them.
    pub(crate) async fn slot_owners(&self) -> Result<Vec<SlotRange>, Fault> {
        let reply: Value = self.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        let bad = || {
            Fault::Command(RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected CLUSTER SLOTS reply",
            )))
        };
        let Value::Array(ranges) = reply else {
            return Err(bad());
        };
        let mut owners = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(bad());
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad());
            };
            let host = match primary.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => return Err(bad()),
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                return Err(bad());
            };
            owners.push(SlotRange {
                start: *start,
                end: *end,
                host,
                port: u16::try_from(*port).map_err(|_| bad())?,
            });
        }
        owners.sort();
        Ok(owners)
    }

    /// Runs `cmd` on the cluster node at `host:port` (a primary, for `SCAN`).
    pub(crate) async fn query_node<T: FromRedisValue>(
        &self,
        cmd: Cmd,
        host: &str,
        port: u16,
    ) -> Result<T, Fault> {
        let (lease, mut conn) = self.checkout()?;
        let Link::Cluster(conn) = &mut conn else {
            // One server: every command reaches the only node there is.
            let result = cmd.query_async::<T>(&mut conn).await;
            return self.judge(&lease, result);
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        });
        let result = conn
            .route_command(cmd, routing)
            .await
            .and_then(|v| T::from_redis_value(v).map_err(RedisError::from));
        self.judge(&lease, result)
    }

    fn checkout(&self) -> Result<(Lease, Link), Fault> {
        let index = if self.slots.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()
        };
        let slot = &self.slots[index];
        let guard = slot.conn.load();
        let Some(held) = guard.as_ref() else {
            drop(guard);
            self.refill(index);
            return Err(Fault::NoConnection);
        };
        if held.since.elapsed() >= LEASE {
            // Healthy but due: swap in a freshly checked connection, keep using this one.
            self.refill(index);
        }
        let lease = Lease {
            index,
            generation: held.generation,
        };
        Ok((lease, held.conn.clone()))
    }

    /// Classifies a command's outcome and retires the connection when it is the culprit.
    fn judge<T>(&self, lease: &Lease, result: RedisResult<T>) -> Result<T, Fault> {
        let slot = &self.slots[lease.index];
        let error = match result {
            Ok(value) => {
                // Read first: a store on every command would bounce this line between cores.
                if slot.timeouts.load(Ordering::Relaxed) != 0 {
                    slot.timeouts.store(0, Ordering::Relaxed);
                }
                return Ok(value);
            }
            Err(e) => e,
        };
        if error.is_timeout() {
            let n = slot.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
            if n == RETIRE_AFTER_TIMEOUTS {
                self.retire(lease, "stopped answering");
            }
            return Err(Fault::Timeout { event: n == 1 });
        }
        let failover = error.code().is_some_and(is_failover_code);
        if failover
            || error.is_io_error()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error()
        {
            let why = if failover {
                "answered with a failover error"
            } else {
                "broke"
            };
            let event = self.retire(lease, why);
            return Err(Fault::Broken { event, error });
        }
        Err(Fault::Command(error))
    }

    /// Empties the slot if it still holds the leased connection; returns whether this call
    /// did (so many callers on one dead connection make one event).
    fn retire(&self, lease: &Lease, why: &'static str) -> bool {
        let slot = &self.slots[lease.index];
        let current = slot.conn.load_full();
        let Some(held) = current.filter(|h| h.generation == lease.generation) else {
            return false;
        };
        let previous = slot.conn.compare_and_swap(&Some(Arc::clone(&held)), None);
        let won = previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, &held));
        if won {
            held.mark_broken();
            self.retired.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(url = %self.url, why, "redis connection retired; reconnecting in the background");
            self.refill(lease.index);
        }
        won
    }

    /// Starts (re)filling a slot in the background unless that is already under way; retries
    /// with back-off until it succeeds or the cache is dropped.
    fn refill(&self, index: usize) {
        if self.slots[index].refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let flag = RefillFlag {
            store: self.this.clone(),
            index,
        };
        let weak = self.this.clone();
        self.spawner.spawn(async move {
            let _flag = flag;
            let mut backoff = BACKOFF_MIN;
            loop {
                let Some(store) = weak.upgrade() else { return };
                match store.fill(index).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "redis reconnect attempt failed");
                        store.breaker.event();
                    }
                }
                drop(store);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    async fn fill(&self, index: usize) -> Result<(), CacheError> {
        let mut failures = self.last_connect_error.seen.subscribe();
        let checkout = tokio::select! {
            checkout = self.pool.get_owned() => checkout,
            // bb8 would keep waiting out the connect timeout after a refused connection.
            Ok(()) = failures.changed() => Err(RunError::TimedOut),
        };
        let pooled = match checkout {
            Ok(p) => p,
            Err(RunError::User(e)) => return Err(self.explain(e)),
            Err(RunError::TimedOut) => {
                return Err(match self.last_connect_error.take() {
                    Some(e) => self.explain(e),
                    None => CacheError::ConnectTimeout {
                        url: self.url.clone(),
                        timeout: self.connect_timeout,
                    },
                });
            }
        };
        let held = Held {
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            conn: pooled.conn.clone(),
            since: Instant::now(),
            pooled,
        };
        let slot = &self.slots[index];
        slot.timeouts.store(0, Ordering::Relaxed);
        // The lease it replaces (if any) goes back to bb8 once in-flight commands let go.
        slot.conn.store(Some(Arc::new(held)));
        tracing::debug!(url = %self.url, "redis connection ready");
        Ok(())
    }

    fn explain(&self, e: RedisError) -> CacheError {
        let code = e.code().unwrap_or_default();
        let hint = if e.is_connection_refusal() {
            "connection refused (is redis-server running and listening at this address?)"
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(code, "NOAUTH" | "WRONGPASS")
        {
            "authentication failed (check the user and password in the URL)"
        } else if e.is_timeout() {
            "the connection timed out (is the host reachable?)"
        } else if e.is_io_error() {
            "the connection failed (check the host and port in the URL)"
        } else {
            "the server rejected the connection"
        };
        CacheError::Connect {
            url: self.url.clone(),
            hint,
            source: Box::new(e),
        }
    }
}
