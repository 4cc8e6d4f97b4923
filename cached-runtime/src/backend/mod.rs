//! The seam between the cache and where its entries live.
//!
//! [`Store`] is the only type the cache logic talks to: typed operations (get, set with a TTL,
//! lock and unlock, delete keys, delete by pattern, ping) dispatched by enum to a backend, with
//! the circuit breaker around the ones on the request path. Nothing above this module names
//! the Redis driver. Invalidations and lock releases bypass the breaker: they must not be
//! skipped because reads have been failing.

mod cluster;
pub(crate) mod redis;
mod sentinel;
#[cfg(feature = "tls")]
mod tls;
pub(crate) mod tracking;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use self::redis::{Fault, RedisStore};
use crate::{
    breaker::Breaker,
    config::CacheBuilder,
    error::CacheError,
    memory::MemoryStore,
    spawn::Spawner,
    telemetry::{CacheMetrics, Op, OpResult},
};

/// How many keys one `SCAN` step asks for during invalidation.
const SCAN_COUNT: usize = 1000;

/// One `SCAN` step of an invalidation: `SCAN cursor MATCH pattern COUNT` [`SCAN_COUNT`].
fn scan_step(cursor: u64, pattern: &str) -> ::redis::Cmd {
    let mut scan = ::redis::cmd("SCAN");
    scan.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    scan
}

pub(crate) enum Backend {
    Redis(Arc<RedisStore>),
    Memory(Box<MemoryStore>),
}

pub(crate) struct Store {
    backend: Backend,
    breaker: Arc<Breaker>,
}

impl Store {
    pub(crate) fn redis(config: &CacheBuilder, spawner: Spawner) -> Result<Self, CacheError> {
        let breaker = Arc::new(Breaker::new(
            config.breaker_threshold,
            config.breaker_window,
            config.breaker_cooldown,
        ));
        let redis = RedisStore::new(config, Arc::clone(&breaker), spawner)?;
        Ok(Self {
            backend: Backend::Redis(redis),
            breaker,
        })
    }

    pub(crate) fn memory() -> Self {
        Self {
            backend: Backend::Memory(Box::default()),
            breaker: Arc::new(Breaker::new(
                0,
                Duration::from_secs(1),
                Duration::from_secs(1),
            )),
        }
    }

    /// Starts the near cache's tracking connections; `None` for a cache in memory, which has
    /// no other process to stay coherent with.
    pub(crate) fn track(
        &self,
        config: &CacheBuilder,
        near: &Arc<crate::local::NearCache>,
        client_name: &str,
    ) -> Result<Option<Arc<tracking::Tracker>>, CacheError> {
        match &self.backend {
            Backend::Redis(r) => tracking::start(r, config, near, client_name).map(Some),
            Backend::Memory(_) => Ok(None),
        }
    }

    /// Where entries live, for logs: the redacted URL, or `memory`.
    pub(crate) fn describe(&self) -> &str {
        match &self.backend {
            Backend::Redis(r) => r.url(),
            Backend::Memory(_) => "memory",
        }
    }

    pub(crate) async fn connect_all(&self) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis(r) => r.connect_all().await,
            Backend::Memory(_) => Ok(()),
        }
    }

    pub(crate) fn connect_in_background(&self) {
        if let Backend::Redis(r) = &self.backend {
            r.connect_in_background();
        }
    }

    /// Whether the circuit is open now, and how often it has opened.
    pub(crate) fn circuit(&self) -> (bool, u64) {
        (self.breaker.is_open(), self.breaker.times_opened())
    }

    /// Connections retired as broken or half-open.
    pub(crate) fn retired(&self) -> u64 {
        match &self.backend {
            Backend::Redis(r) => r.retired(),
            Backend::Memory(_) => 0,
        }
    }

    /// Where the breaker's transitions and the command timings are reported.
    pub(crate) fn observe(&self, telemetry: Arc<CacheMetrics>) {
        self.breaker.observe(telemetry);
    }

    /// Times one command sent to Redis (`db.client.operation.duration`); one that found no
    /// connection was not sent and is not timed.
    async fn timed<T>(
        &self,
        name: Op,
        op: impl Future<Output = Result<T, Fault>>,
    ) -> Result<T, Fault> {
        let started = Instant::now();
        let result = op.await;
        let how = match &result {
            Ok(_) => OpResult::Ok,
            Err(Fault::Command(_)) => OpResult::Reply,
            Err(Fault::Timeout { .. }) => OpResult::Timeout,
            Err(Fault::Broken { .. }) => OpResult::Connection,
            Err(Fault::NoConnection) => return result,
        };
        if let Some(t) = self.breaker.telemetry() {
            t.operation(name, how, started.elapsed());
        }
        result
    }

    /// Runs a request-path operation unless the circuit is open, and tells the breaker how it
    /// went.
    async fn guarded<T>(
        &self,
        name: Op,
        redis: &RedisStore,
        op: impl Future<Output = Result<T, Fault>>,
    ) -> Result<T, CacheError> {
        let Some(permit) = self.breaker.permit() else {
            return Err(CacheError::CircuitOpen);
        };
        let fault = match self.timed(name, op).await {
            Ok(value) => {
                self.breaker.success(permit);
                return Ok(value);
            }
            Err(f) => f,
        };
        match &fault {
            // Redis answered: it is reachable.
            Fault::Command(_) => self.breaker.success(permit),
            Fault::NoConnection => self.breaker.inconclusive(permit),
            Fault::Timeout { event } | Fault::Broken { event, .. } => {
                if self.breaker.failure(permit, *event) {
                    redis.reconnect_all();
                }
            }
        }
        Err(fault.into_error(redis.command_timeout()))
    }

    /// Runs an operation that must not be skipped by the breaker (bounded by the command
    /// timeout all the same).
    pub(crate) async fn unguarded<T>(
        &self,
        name: Op,
        redis: &RedisStore,
        op: impl Future<Output = Result<T, Fault>>,
    ) -> Result<T, CacheError> {
        self.timed(name, op)
            .await
            .map_err(|f| f.into_error(redis.command_timeout()))
    }

    #[inline]
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match &self.backend {
            Backend::Redis(r) => {
                let mut cmd = ::redis::cmd("GET");
                cmd.arg(key);
                self.guarded(Op::Get, r, r.query(&cmd)).await
            }
            Backend::Memory(m) => Ok(m.get(key)),
        }
    }

    /// `GET` and `PTTL` in one round trip: the entry and how long Redis keeps it from now
    /// (`None`: no expiry). For the near cache, whose copy must not outlive the entry.
    pub(crate) async fn get_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<Duration>)>, CacheError> {
        match &self.backend {
            Backend::Redis(r) => {
                let mut pipe = ::redis::pipe();
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
                let (bytes, ttl): (Option<Vec<u8>>, i64) =
                    self.guarded(Op::Get, r, r.query_pipe(&pipe)).await?;
                // -1: no expiry; -2: it expired right after the GET, so nothing to keep.
                let ttl = match ttl {
                    -1 => None,
                    ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
                };
                Ok(bytes.map(|b| (b, ttl)))
            }
            Backend::Memory(m) => Ok(m
                .get(key)
                .map(|b| (b, m.ttl_ms(key).map(Duration::from_millis)))),
        }
    }

    pub(crate) async fn set_ex(
        &self,
        key: &str,
        value: &[u8],
        secs: u64,
    ) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis(r) => {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(key).arg(value).arg("EX").arg(secs);
                self.guarded(Op::Set, r, r.query::<()>(&cmd)).await
            }
            Backend::Memory(m) => {
                m.set_ex(key, value, secs);
                Ok(())
            }
        }
    }

    /// [`Store::set_ex`] for writers: not skipped by the breaker.
    pub(crate) async fn write(&self, key: &str, value: &[u8], secs: u64) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis(r) => {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(key).arg(value).arg("EX").arg(secs);
                self.unguarded(Op::Set, r, r.query::<()>(&cmd)).await
            }
            Backend::Memory(m) => {
                m.set_ex(key, value, secs);
                Ok(())
            }
        }
    }

    /// `SET key token NX PX ms`: whether this caller took the lock.
    pub(crate) async fn lock(&self, key: &str, token: &str, ms: u64) -> Result<bool, CacheError> {
        match &self.backend {
            Backend::Redis(r) => {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(key).arg(token).arg("NX").arg("PX").arg(ms);
                let reply: Option<String> = self.guarded(Op::Lock, r, r.query(&cmd)).await?;
                Ok(reply.is_some())
            }
            Backend::Memory(m) => Ok(m.set_nx_px(key, token.as_bytes(), ms)),
        }
    }

    /// Releases the lock only if it still holds `token`.
    pub(crate) async fn unlock(&self, key: &str, token: &str) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis(r) => self
                .unguarded(Op::Unlock, r, r.unlock(key, token))
                .await
                .map(drop),
            Backend::Memory(m) => {
                m.delete_if_eq(key, token.as_bytes());
                Ok(())
            }
        }
    }

    /// Releases the lock synchronously where the backend can (in memory); `false` when it
    /// needs a round trip.
    pub(crate) fn unlock_now(&self, key: &str, token: &str) -> bool {
        match &self.backend {
            Backend::Redis(_) => false,
            Backend::Memory(m) => {
                m.delete_if_eq(key, token.as_bytes());
                true
            }
        }
    }

    /// Deletes `keys` (`UNLINK`); returns how many existed.
    pub(crate) async fn delete(&self, keys: &[&str]) -> Result<u64, CacheError> {
        if keys.is_empty() {
            return Ok(0);
        }
        match &self.backend {
            Backend::Redis(r) => {
                let mut cmd = ::redis::cmd("UNLINK");
                cmd.arg(keys);
                self.unguarded(Op::Unlink, r, r.query(&cmd)).await
            }
            Backend::Memory(m) => Ok(m.delete(keys)),
        }
    }

    /// Deletes every key matching the glob `pattern`, in `SCAN` + `UNLINK` batches that
    /// never block the server. Returns how many keys were deleted.
    pub(crate) async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError> {
        let r = match &self.backend {
            Backend::Redis(r) => r,
            Backend::Memory(m) => return Ok(m.delete_matching(pattern)),
        };
        if r.is_cluster() {
            return cluster::delete_matching(self, r, pattern).await;
        }
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let scan = scan_step(cursor, pattern);
            let (next, keys): (u64, Vec<String>) =
                self.unguarded(Op::Scan, r, r.query(&scan)).await?;
            if !keys.is_empty() {
                let mut unlink = ::redis::cmd("UNLINK");
                unlink.arg(&keys);
                deleted += self
                    .unguarded(Op::Unlink, r, r.query::<u64>(&unlink))
                    .await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// `PING`, bounded by the command timeout; not subject to the breaker.
    pub(crate) async fn ping(&self) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis(r) => {
                let _: String = self
                    .unguarded(Op::Ping, r, r.query(&::redis::cmd("PING")))
                    .await?;
                Ok(())
            }
            Backend::Memory(_) => Ok(()),
        }
    }
}
