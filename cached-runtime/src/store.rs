//! Everything that talks to Redis.
//!
//! bb8 owns connection life: it connects with a timeout, retries, checks a connection with
//! `PING` when it is handed out, and replaces broken ones. The cached path does not check a
//! connection out per command, which would forfeit pipelining: each of a few *slots* holds one
//! multiplexed connection checked out of bb8, and a command clones that handle (an `Arc` bump)
//! and sends on it, so all concurrent callers share its pipeline. A slot whose connection
//! breaks is emptied and refilled from bb8 in the background; until then callers fail fast
//! with [`CacheError::Unavailable`] and run their bodies.

use std::{
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bb8::{ErrorSink, Pool, PooledConnection, RunError};
use bb8_redis::RedisConnectionManager;
use redis::{FromRedisValue, aio::MultiplexedConnection};

use crate::{
    breaker::{Breaker, Permit},
    config::CacheBuilder,
    config::redact_url,
    error::CacheError,
};

type Pooled = PooledConnection<'static, RedisConnectionManager>;

pub(crate) struct Store {
    pool: Pool<RedisConnectionManager>,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    generation: AtomicU64,
    command_timeout: Duration,
    connect_timeout: Duration,
    last_connect_error: LastError,
    url: String,
    breaker: Breaker,
}

#[derive(Default)]
struct Slot {
    conn: RwLock<Option<Held>>,
    refreshing: AtomicBool,
}

struct Held {
    generation: u64,
    conn: MultiplexedConnection,
    // Keeps the connection checked out of bb8, so each slot has its own.
    _pooled: Pooled,
}

/// The last connection error bb8 met, to explain a checkout timeout in words.
#[derive(Clone, Debug, Default)]
struct LastError(Arc<Mutex<Option<redis::RedisError>>>);

impl ErrorSink<redis::RedisError> for LastError {
    fn sink(&self, error: redis::RedisError) {
        tracing::debug!(error = %error, "redis connection attempt failed");
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<redis::RedisError>> {
        Box::new(self.clone())
    }
}

impl LastError {
    fn take(&self) -> Option<redis::RedisError> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Store {
    pub(crate) fn new(config: &CacheBuilder) -> Result<Arc<Self>, CacheError> {
        config.validate()?;
        let url = redact_url(&config.url);
        #[cfg(feature = "tls")]
        if config.url.starts_with("rediss://") {
            // Fails only when the application installed its own provider, which then serves.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let manager = RedisConnectionManager::new(config.url.as_str()).map_err(|e| {
            CacheError::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            }
        })?;
        let last_connect_error = LastError::default();
        let pool = Pool::builder()
            .max_size(config.max_size)
            .min_idle(Some(config.min_idle).filter(|&n| n > 0))
            .connection_timeout(config.connect_timeout)
            .test_on_check_out(true)
            .error_sink(Box::new(last_connect_error.clone()))
            .build_unchecked(manager);
        Ok(Arc::new(Self {
            pool,
            slots: (0..config.connections).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            command_timeout: config.command_timeout,
            connect_timeout: config.connect_timeout,
            last_connect_error,
            url,
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
        }))
    }

    /// Fills every slot now, explaining a failure in words a user can act on.
    pub(crate) async fn connect_all(self: &Arc<Self>) -> Result<(), CacheError> {
        for slot in self.slots.iter() {
            self.fill(slot).await?;
        }
        let pong: String = self.run(&redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(CacheError::Config(format!(
                "{} answered PING with {pong:?}: is it a redis server?",
                self.url
            )));
        }
        Ok(())
    }

    /// Whether the circuit breaker is open now, and how often it has opened.
    pub(crate) fn circuit(&self) -> (bool, u64) {
        (self.breaker.is_open(), self.breaker.times_opened())
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Starts filling every slot in the background.
    pub(crate) fn connect_in_background(self: &Arc<Self>) {
        for index in 0..self.slots.len() {
            self.refill_in_background(index);
        }
    }

    /// Runs one command on a shared connection, bounded by the command timeout, unless the
    /// circuit is open.
    pub(crate) async fn run<T: FromRedisValue>(
        self: &Arc<Self>,
        cmd: &redis::Cmd,
    ) -> Result<T, CacheError> {
        let permit = self.breaker.permit();
        if permit == Permit::Refused {
            return Err(CacheError::CircuitOpen);
        }
        let result = self.send(cmd).await;
        match &result {
            Err(e) if e.is_availability() => self.breaker.failure(&permit),
            _ => self.breaker.success(&permit),
        }
        result
    }

    async fn send<T: FromRedisValue>(self: &Arc<Self>, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let index = self.pick();
        let slot = &self.slots[index];
        let (generation, mut conn) = self.connection(index)?;
        // The connection's own response timeout bounds the command: one timer, not two.
        match cmd.query_async::<T>(&mut conn).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_timeout() => Err(CacheError::Timeout(self.command_timeout)),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    slot.discard(generation);
                }
                Err(CacheError::Redis(e))
            }
        }
    }

    pub(crate) async fn get(self: &Arc<Self>, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    pub(crate) async fn set_ex(
        self: &Arc<Self>,
        key: &str,
        value: &[u8],
        secs: u64,
    ) -> Result<(), CacheError> {
        self.run(redis::cmd("SET").arg(key).arg(value).arg("EX").arg(secs))
            .await
    }

    /// `SET lock token NX PX ms`: whether this caller took the lock.
    pub(crate) async fn lock(
        self: &Arc<Self>,
        key: &str,
        token: &str,
        ms: u64,
    ) -> Result<bool, CacheError> {
        let reply: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await?;
        Ok(reply.is_some())
    }

    /// Releases the lock only if this caller still owns it.
    pub(crate) async fn unlock(self: &Arc<Self>, key: &str, token: &str) -> Result<(), CacheError> {
        const COMPARE_AND_DELETE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
             return redis.call('DEL', KEYS[1]) else return 0 end";
        let _: i64 = self
            .run(
                redis::cmd("EVAL")
                    .arg(COMPARE_AND_DELETE)
                    .arg(1)
                    .arg(key)
                    .arg(token),
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn unlink(self: &Arc<Self>, keys: &[String]) -> Result<u64, CacheError> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.run(redis::cmd("UNLINK").arg(keys)).await
    }

    pub(crate) async fn scan(
        self: &Arc<Self>,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), CacheError> {
        self.run(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count),
        )
        .await
    }

    pub(crate) async fn ping(self: &Arc<Self>) -> Result<(), CacheError> {
        let _: String = self.run(&redis::cmd("PING")).await?;
        Ok(())
    }

    fn pick(&self) -> usize {
        if self.slots.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()
        }
    }

    /// The slot's connection, or `Unavailable` at once while it is being (re)made.
    fn connection(
        self: &Arc<Self>,
        index: usize,
    ) -> Result<(u64, MultiplexedConnection), CacheError> {
        let slot = &self.slots[index];
        let held = slot.conn.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = held.as_ref() {
            return Ok((h.generation, h.conn.clone()));
        }
        drop(held);
        self.refill_in_background(index);
        Err(CacheError::Unavailable)
    }

    /// Starts refilling a slot unless that is already under way.
    pub(crate) fn refill_in_background(self: &Arc<Self>, index: usize) {
        let slot = &self.slots[index];
        if slot.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            slot.refreshing.store(false, Ordering::Release);
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let slot = &this.slots[index];
            if let Err(e) = this.fill(slot).await {
                tracing::debug!(error = %e, "redis reconnect attempt failed");
            }
            slot.refreshing.store(false, Ordering::Release);
        });
    }

    async fn fill(&self, slot: &Slot) -> Result<(), CacheError> {
        let pooled = match self.pool.get_owned().await {
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
        let mut conn = (*pooled).clone();
        conn.set_response_timeout(self.command_timeout);
        let held = Held {
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            conn,
            _pooled: pooled,
        };
        *slot.conn.write().unwrap_or_else(PoisonError::into_inner) = Some(held);
        tracing::debug!(url = %self.url, "redis connection ready");
        Ok(())
    }

    fn explain(&self, e: redis::RedisError) -> CacheError {
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
            source: e,
        }
    }
}

impl Slot {
    /// Empties the slot if it still holds the connection that failed.
    fn discard(&self, generation: u64) {
        let mut held = self.conn.write().unwrap_or_else(PoisonError::into_inner);
        if held.as_ref().is_some_and(|h| h.generation == generation) {
            *held = None;
            tracing::debug!("redis connection dropped; reconnecting in the background");
        }
    }
}
