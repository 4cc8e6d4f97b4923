//! The seam between the cache and where its entries live.
//!
//! [`Store`] is the only type the cache logic talks to: typed operations (get, set with a TTL,
//! lock and unlock, delete keys, delete by pattern, ping) dispatched by enum to a backend: the
//! connection layer's [`Redis`], or memory. Nothing above this module names the Redis driver.
//! Reads, fills and lock attempts go through the breaker of the key's node; invalidations and
//! lock releases do not: they must not be skipped because reads have been failing.

pub(crate) mod memory;
mod tags;

use std::time::Duration;

use crate::{
    cache::store::memory::MemoryStore,
    connection::{Gate, Redis, Script, Tracking, TrackingListener},
    error::CacheError,
    telemetry::Op,
};

/// `COMPARE_AND_DELETE`: releases a lock only while it still holds the caller's token.
const UNLOCK_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

pub(crate) enum Backend {
    Redis { redis: Redis, unlock: Script },
    Memory(Box<MemoryStore>),
}

pub(crate) struct Store {
    backend: Backend,
}

impl Store {
    pub(crate) fn redis(redis: Redis) -> Self {
        Self {
            backend: Backend::Redis {
                redis,
                unlock: Script::new(UNLOCK_SCRIPT),
            },
        }
    }

    pub(crate) fn memory() -> Self {
        Self {
            backend: Backend::Memory(Box::default()),
        }
    }

    /// The connection, for a store in Redis.
    pub(crate) fn connection(&self) -> Option<&Redis> {
        match &self.backend {
            Backend::Redis { redis, .. } => Some(redis),
            Backend::Memory(_) => None,
        }
    }

    /// Starts an invalidation channel for the keys under `prefix`; `None` for a store in
    /// memory, which has no other process to stay coherent with.
    pub(crate) fn track(
        &self,
        prefix: &str,
        client_name: &str,
        listener: std::sync::Weak<dyn TrackingListener>,
    ) -> Result<Option<std::sync::Arc<Tracking>>, CacheError> {
        match &self.backend {
            Backend::Redis { redis, .. } => {
                redis.track(Some(prefix), client_name, listener).map(Some)
            }
            Backend::Memory(_) => Ok(None),
        }
    }

    /// Where entries live, for logs: the redacted URL, or `memory`.
    pub(crate) fn describe(&self) -> &str {
        match &self.backend {
            Backend::Redis { redis, .. } => redis.describe(),
            Backend::Memory(_) => "memory",
        }
    }

    /// Whether the circuit is open now, how often it has opened, and connections retired.
    pub(crate) fn health(&self) -> (bool, u64, u64) {
        match &self.backend {
            Backend::Redis { redis, .. } => {
                let s = redis.stats();
                (s.circuit_open, s.circuit_opened, s.retired)
            }
            Backend::Memory(_) => (false, 0, 0),
        }
    }

    #[inline]
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match &self.backend {
            Backend::Redis { redis, .. } => {
                let mut cmd = ::redis::cmd("GET");
                cmd.arg(key);
                redis.command(Op::Get, Gate::Guarded, key, &cmd).await
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
            Backend::Redis { redis, .. } => {
                let mut pipe = ::redis::pipe();
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
                let (bytes, ttl): (Option<Vec<u8>>, i64) =
                    redis.pipeline(Op::Get, Gate::Guarded, key, &pipe).await?;
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
            Backend::Redis { redis, .. } => {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(key).arg(value).arg("EX").arg(secs);
                redis.command(Op::Set, Gate::Guarded, key, &cmd).await
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
            Backend::Redis { redis, .. } => {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(key).arg(value).arg("EX").arg(secs);
                redis.command(Op::Set, Gate::Always, key, &cmd).await
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
            Backend::Redis { redis, .. } => {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(key).arg(token).arg("NX").arg("PX").arg(ms);
                let reply: Option<String> =
                    redis.command(Op::Lock, Gate::Guarded, key, &cmd).await?;
                Ok(reply.is_some())
            }
            Backend::Memory(m) => Ok(m.set_nx_px(key, token.as_bytes(), ms)),
        }
    }

    /// Releases the lock only if it still holds `token`.
    pub(crate) async fn unlock(&self, key: &str, token: &str) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis { redis, unlock } => redis
                .eval_gated::<i64, _, _>(Op::Unlock, Gate::Always, unlock, &[key], token)
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
            Backend::Redis { .. } => false,
            Backend::Memory(m) => {
                m.delete_if_eq(key, token.as_bytes());
                true
            }
        }
    }

    /// Deletes `key` (`UNLINK`); returns whether it existed.
    pub(crate) async fn delete(&self, key: &str) -> Result<u64, CacheError> {
        match &self.backend {
            Backend::Redis { redis, .. } => {
                let mut cmd = ::redis::cmd("UNLINK");
                cmd.arg(key);
                redis.command(Op::Unlink, Gate::Always, key, &cmd).await
            }
            Backend::Memory(m) => Ok(m.delete(&[key])),
        }
    }

    /// Deletes every key matching the glob `pattern`, in `SCAN` + `UNLINK` batches that
    /// never block the server. Returns how many keys were deleted.
    pub(crate) async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError> {
        match &self.backend {
            Backend::Redis { redis, .. } => redis.delete_matching(pattern).await,
            Backend::Memory(m) => Ok(m.delete_matching(pattern)),
        }
    }

    /// `PING`, bounded by the command timeout; not subject to the breaker.
    pub(crate) async fn ping(&self) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis { redis, .. } => redis.ping().await,
            Backend::Memory(_) => Ok(()),
        }
    }
}

/// How long a store's commands may take: the connection's command timeout.
pub(crate) fn command_timeout(store: &Store) -> Duration {
    store
        .connection()
        .map_or(Duration::from_millis(250), Redis::command_timeout)
}
