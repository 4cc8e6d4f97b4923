//! The pool: a bb8 pool and a few shared multiplexed connections, to one server, to the
//! primary Sentinel names, or to a whole Redis Cluster.
//!
//! The three differ only in how a connection is made ([`Connector`](super::connector)) and
//! what it is ([`Link`]): a cluster connection is one handle that routes each command to the
//! shard that owns its key and pipelines per node; a Sentinel connection is a plain connection
//! to the primary the sentinels name at the moment it is made. Everything here treats them
//! alike.
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
//!
//! A cluster connection reaches every node, so one node's failures (timeouts, I/O errors, a
//! redirection that could not be followed) do not retire it: they are judged by that node's
//! breaker, redis-rs reconnects the node by itself, and the slot map the breakers route by is
//! read again ([`Pool::refresh_slots`]). Only when every node's circuit is open is the whole
//! connection replaced.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use bb8::{ErrorSink, Pool as Bb8Pool, PooledConnection, RunError};
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, Script, Value,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};
use tokio::sync::watch;

use super::{
    breaker::Breakers,
    cluster::SlotRange,
    config::RedisBuilder,
    connector::{Connector, Manager, is_refused, refused_command},
    link::{Fault, Link},
    scripts::Scripts,
};
use crate::{
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

/// The connections to one deployment.
pub(crate) struct Pool {
    kind: Kind,
    /// Dropped with the store, which ends background listeners.
    _closed: watch::Sender<()>,
    /// Bumped whenever every connection is replaced (a failover announced, the circuit
    /// opened): connections made apart from the pool's (tracking) follow it.
    topology: watch::Sender<u64>,
    pool: Bb8Pool<Manager>,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    generation: AtomicU64,
    command_timeout: Duration,
    connect_timeout: Duration,
    last_connect_error: ConnectErrors,
    url: String,
    breakers: Arc<Breakers>,
    spawner: Spawner,
    retired: AtomicU64,
    /// On a cluster, the connection scripts go through (see [`Scripts`]).
    scripts: Option<Scripts>,
    /// On a cluster, the reads of the slot map for the per-node breakers.
    slot_map: Arc<SlotMapReads>,
    this: Weak<Pool>,
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

/// Least time between two reads of a cluster's slot map for the breakers.
const SLOTS_EVERY: Duration = Duration::from_secs(1);

/// When the slot map was read, and whether a read is wanted or under way.
struct SlotMapReads {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last read; 0: never.
    read_at: AtomicU64,
    wanted: AtomicBool,
    reading: AtomicBool,
}

impl SlotMapReads {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            read_at: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            reading: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// How long until another read is allowed.
    fn due_in(&self) -> Duration {
        let last = self.read_at.load(Ordering::Acquire);
        if last == 0 {
            return Duration::ZERO;
        }
        let every = u64::try_from(SLOTS_EVERY.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis((last + every).saturating_sub(self.now_ms()))
    }
}

/// Clears a flag on drop.
struct ReadingFlag<'a>(&'a AtomicBool);

impl Drop for ReadingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Clears a slot's refill flag however the refill ends: done, failed, cancelled or panicked.
struct RefillFlag {
    store: Weak<Pool>,
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

/// The slot a command was sent on, to judge its outcome.
struct Lease {
    index: usize,
    generation: u64,
}

impl Pool {
    pub(crate) fn new(
        config: &RedisBuilder,
        breakers: Arc<Breakers>,
        spawner: Spawner,
    ) -> Result<Arc<Self>, CacheError> {
        let url = config.topology.describe(&config.url);
        let connector = Connector::new(config, &url)?;
        let (kind, scripts) = match &connector {
            Connector::Cluster { scripts, .. } => {
                (Kind::Cluster, Some(Scripts::new((**scripts).clone())))
            }
            _ => (Kind::Single, None),
        };
        let (closed, on_close) = watch::channel(());
        let watch = match &connector {
            Connector::Sentinel(primary) => Some(Arc::clone(primary)),
            _ => None,
        };
        let topology = watch::Sender::new(0);
        let manager = Manager {
            connector,
            response_timeout: config.command_timeout,
            topology: topology.subscribe(),
        };
        let last_connect_error = ConnectErrors::default();
        let pool = Bb8Pool::builder()
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
            topology,
            pool,
            slots: (0..config.connections).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            command_timeout: config.command_timeout,
            connect_timeout: config.connect_timeout,
            last_connect_error,
            url,
            breakers,
            spawner,
            retired: AtomicU64::new(0),
            scripts,
            slot_map: Arc::new(SlotMapReads::new()),
            this: this.clone(),
        });
        if let Some(primary) = watch {
            super::sentinel::watch_switches(
                Arc::downgrade(&store),
                primary,
                on_close,
                &store.spawner,
            );
        }
        Ok(store)
    }

    /// Changes (to an error) when the store is dropped: background tasks end with it.
    pub(super) fn closed(&self) -> watch::Receiver<()> {
        self._closed.subscribe()
    }

    /// Changes when every connection is replaced ([`reconnect_all`](Self::reconnect_all)):
    /// whatever holds connections of its own to the deployment makes new ones then.
    pub(crate) fn topology(&self) -> watch::Receiver<u64> {
        self.topology.subscribe()
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
        if self.is_cluster() {
            self.load_slots().await;
        }
        let pong: String = match self.query(&redis::cmd("PING")).await {
            Ok(pong) => pong,
            // Only a Redis server refuses a command by ACL: nothing more to check.
            Err(Fault::Command(e)) if is_refused(&e) => return Ok(()),
            Err(f) => return Err(f.into_error(self.command_timeout)),
        };
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
        // First, so the tracking connections move at the same moment as these.
        self.topology.send_modify(|epoch| *epoch += 1);
        if let Some(scripts) = &self.scripts {
            scripts.reset();
        }
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

    /// Runs `evalsha` (of `script`); on `NOSCRIPT` only, loads the script and runs it once
    /// more (on a cluster, also after replies that prove it did not run: see [`Scripts`]).
    /// Bounded by the command timeout.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        evalsha: &Cmd,
        script: &Script,
    ) -> Result<T, Fault> {
        let (lease, mut conn) = self.checkout()?;
        // The cluster's and the `NOSCRIPT` paths are boxed: kept inline, their larger futures
        // would make every call's future larger, and it is moved at each layer above.
        if let Some(scripts) = &self.scripts {
            let result = Box::pin(self.eval_on_cluster(scripts, evalsha, script)).await;
            return self.judge(&lease, result);
        }
        let mut result = evalsha.query_async::<T>(&mut conn).await;
        if let Err(e) = &result
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            // NOSCRIPT: the script did not run; loading it and running it once is safe.
            result = Box::pin(async {
                match script.load_async(&mut conn).await {
                    Ok(_) => evalsha.query_async::<T>(&mut conn).await,
                    Err(e) => Err(e),
                }
            })
            .await;
        }
        self.judge(&lease, result)
    }

    /// [`Pool::eval`] on a cluster: through [`Scripts`], bounded by the command timeout.
    async fn eval_on_cluster<T: FromRedisValue>(
        &self,
        scripts: &Scripts,
        evalsha: &Cmd,
        script: &Script,
    ) -> RedisResult<T> {
        let conn = scripts
            .connection(self.connect_timeout, &self.spawner)
            .await?;
        let run = Scripts::eval(conn, evalsha, script);
        match tokio::time::timeout(self.command_timeout, run).await {
            Ok(reply) => reply.and_then(|v| T::from_redis_value(v).map_err(RedisError::from)),
            Err(_) => Err(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }

    /// Whether this is a cluster, whose keys are spread over several primaries.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster)
    }

    /// Which primary owns which slots (`CLUSTER SLOTS`), sorted: two snapshots compare equal
    /// exactly when no slot changed hands between them.
    pub(crate) async fn slot_owners(&self) -> Result<Vec<SlotRange>, Fault> {
        let reply: Value = self.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        super::cluster::parse_slots(reply).map_err(Fault::Command)
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
        let cluster = self.is_cluster();
        if error.is_timeout() {
            let n = slot.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
            // A cluster connection reaches every node: one that stopped answering is judged
            // by its own breaker, and its connection is redis-rs's to replace.
            if n == RETIRE_AFTER_TIMEOUTS && !cluster {
                self.retire(lease, "stopped answering");
            }
            return Err(Fault::Timeout { event: n == 1 });
        }
        // On a cluster, redis-rs follows redirections itself: one that reaches us means the
        // slot's owner could not be reached (a dead primary, its slots not yet taken over).
        let failover = error.code().is_some_and(|code| {
            is_failover_code(code) || (cluster && matches!(code, "MOVED" | "ASK" | "CLUSTERDOWN"))
        });
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
            // On a cluster, as for a timeout (redis-rs reconnects a node by itself).
            let event = cluster || self.retire(lease, why);
            return Err(Fault::Broken { event, error });
        }
        Err(Fault::Command(error))
    }

    /// Reads the slot map again in the background, for the per-node breakers: at once if it
    /// was not read within [`SLOTS_EVERY`], else when that much time has passed.
    pub(crate) fn refresh_slots(&self) {
        if !self.is_cluster() {
            return;
        }
        let state = Arc::clone(&self.slot_map);
        state.wanted.store(true, Ordering::Release);
        if state.reading.swap(true, Ordering::AcqRel) {
            // The running reader sees `wanted`.
            return;
        }
        let weak = self.this.clone();
        self.spawner.spawn(async move {
            loop {
                {
                    // Clears `reading` however this ends, dropped or not.
                    let _reading = ReadingFlag(&state.reading);
                    while state.wanted.load(Ordering::Acquire) {
                        let wait = state.due_in();
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        state.wanted.store(false, Ordering::Release);
                        let Some(store) = weak.upgrade() else { return };
                        store.load_slots().await;
                    }
                }
                // A request that came as the flag was cleared found it still taken.
                if !state.wanted.load(Ordering::Acquire)
                    || state.reading.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    /// Reads the slot map now (`CLUSTER SLOTS`) into the per-node breakers.
    async fn load_slots(&self) {
        match self.slot_owners().await {
            Ok(owners) => self.breakers.set_slots(&owners),
            Err(f) => tracing::debug!(error = ?f, "cluster slot map not read; trying later"),
        }
        self.slot_map
            .read_at
            .store(self.slot_map.now_ms(), Ordering::Release);
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
                        store.breakers.connection_event();
                    }
                }
                drop(store);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    async fn fill(&self, index: usize) -> Result<(), CacheError> {
        let pooled = self.checkout_fresh().await?;
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
        // A new cluster connection: the per-node breakers learn the slot map (again).
        self.refresh_slots();
        Ok(())
    }

    /// A connection from bb8 made since every connection was last replaced: an idle one from
    /// before may reach a primary that a failover is demoting, which answers as a primary
    /// for seconds, so it is closed instead.
    async fn checkout_fresh(&self) -> Result<Pooled, CacheError> {
        loop {
            let pooled = self.checkout_one().await?;
            if pooled.epoch == *self.topology.borrow() {
                return Ok(pooled);
            }
            pooled.broken.store(true, Ordering::Release);
        }
    }

    async fn checkout_one(&self) -> Result<Pooled, CacheError> {
        let mut failures = self.last_connect_error.seen.subscribe();
        let checkout = tokio::select! {
            checkout = self.pool.get_owned() => checkout,
            // bb8 would keep waiting out the connect timeout after a refused connection.
            Ok(()) = failures.changed() => Err(RunError::TimedOut),
        };
        match checkout {
            Ok(p) => Ok(p),
            Err(RunError::User(e)) => Err(self.explain(e)),
            Err(RunError::TimedOut) => Err(match self.last_connect_error.take() {
                Some(e) => self.explain(e),
                None => CacheError::ConnectTimeout {
                    url: self.url.clone(),
                    timeout: self.connect_timeout,
                },
            }),
        }
    }

    fn explain(&self, e: RedisError) -> CacheError {
        if is_refused(&e) {
            // A command the connection needs: saying which one tells the operator the fix.
            let command = refused_command(&e).unwrap_or_else(|| "a command".to_owned());
            return CacheError::Config(format!(
                "redis at {} refused `{command}` to this user (NOPERM), and connecting needs \
                 it: allow it in the user's ACL (`ACL SETUSER <user> +{}`)",
                self.url,
                command.to_ascii_lowercase().replace(' ', "|"),
            ));
        }
        let code = e.code().unwrap_or_default();
        let hint = if super::dial::is_tls_failure(&e) {
            "the TLS handshake failed (the cause says why: the CA, the certificate's host name, \
             a client certificate, or a port that does not speak TLS)"
        } else if e.is_connection_refusal() {
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
