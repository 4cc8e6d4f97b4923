//! Configuration, from the environment or from code (the end-to-end tests).

use std::{fmt, num::NonZeroUsize, path::PathBuf, time::Duration};

use cached_runtime::{
    Cache, CacheBuilder, DEFAULT_URL, Redis, RedisBuilder,
    ratelimit::{Limit, TrustedProxies},
    redact_url,
};
use secrecy::SecretString;

use crate::error::StartError;

/// Where `BIND` defaults to.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Where `DATABASE_PATH` defaults to (relative to the working directory).
pub const DEFAULT_DATABASE_PATH: &str = "catalog.db";
/// The null-marker TTL when `REDIS_CACHE_NULL_TTL_SECS` is unset: a missing id is answered
/// from the cache for this long.
pub const DEFAULT_NULL_TTL: Duration = Duration::from_secs(30);
/// The shortest `ADMIN_TOKEN` the service starts with: a guessable token would make the admin
/// endpoint public.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;
/// The `cache` label of the demo's metrics when `REDIS_CACHE_NAME` is unset.
pub const DEFAULT_CACHE_NAME: &str = "catalog";
/// How many `GET /fib/{n}` requests may wait for a computation slot before more are refused
/// with 503, when `FIB_QUEUE` is unset.
pub const DEFAULT_FIB_QUEUE: usize = 64;
/// How long after an update its item is reindexed, when `REINDEX_DELAY_MS` is unset.
pub const DEFAULT_REINDEX_DELAY: Duration = Duration::from_secs(5);
/// The `cache` label of the reindex queue's connection metrics.
const QUEUE_CONNECTION_NAME: &str = "reindex-queue";

/// Everything the service is started with.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `BIND` | `127.0.0.1:8080` | listening address (`:0` picks a free port) |
/// | `DATABASE_PATH` | `catalog.db` | SQLite file, created and seeded when new |
/// | `ADMIN_TOKEN` | unset | bearer token of `POST /admin/cache/invalidate`, at least 16 characters; unset or empty disables it (404) |
/// | `REDIS_URL` | `redis://127.0.0.1:6379` | the cache; the service runs uncached while it is down |
/// | `REDIS_CACHE_NULL_TTL_SECS` | 30 | how long a missing id stays cached as absent |
/// | `REDIS_CACHE_NAME` | `catalog` | the `cache` label of the metrics |
/// | `REDIS_CACHE_*` | see [`CacheBuilder`] | timeouts, pool size, key namespace |
/// | `FIB_CONCURRENCY` | the number of cores | `/fib` computations running at once |
/// | `FIB_QUEUE` | 64 | `/fib` requests waiting for a computation slot; more get 503 |
/// | `REINDEX_DELAY_MS` | 5000 | how long after an update its item is reindexed (a delayed job on the Redis queue `reindex`, same Redis as the cache) |
/// | `API_RATE_LIMIT` | unset (no limit) | per-client limits, `RATE/PERIOD[+BURST]` comma-separated, like `100/60s+19,1000/1h`: see the `limits` module |
/// | `API_TRUSTED_PROXIES` | unset | proxies (addresses or networks, comma-separated) whose `X-Forwarded-For` names the client |
/// | `RUST_LOG` | `info` | log filter |
#[derive(Clone)]
pub struct Config {
    /// Listening address.
    pub bind: String,
    /// SQLite database file.
    pub database_path: PathBuf,
    /// Bearer token of the admin endpoint (at least [`MIN_ADMIN_TOKEN_CHARS`]); `None`
    /// disables it. Its `Debug` output is redacted.
    pub admin_token: Option<SecretString>,
    /// The Redis URL, kept for the startup log (shown redacted).
    pub redis_url: String,
    /// The cache's settings.
    pub cache: CacheBuilder,
    /// Actix worker threads; `None` is Actix's default (one per core).
    pub workers: Option<usize>,
    /// `/fib` computations running at once.
    pub fib_concurrency: NonZeroUsize,
    /// `/fib` requests waiting for a computation slot before more are refused.
    pub fib_queue: usize,
    /// The connection of the reindex queue (the cache's Redis, its own connections).
    pub queue_redis: RedisBuilder,
    /// How long after an update its item is reindexed.
    pub reindex_delay: Duration,
    /// Whether SIGINT/SIGTERM stop the server gracefully (off for in-process tests, which
    /// stop it with [`Running::stop`](crate::Running::stop)).
    pub handle_signals: bool,
    /// Per-client limits on the API (`API_RATE_LIMIT`); none: not limited.
    pub api_limits: Vec<Limit>,
    /// Proxies whose `X-Forwarded-For` names the client (`API_TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_path", &self.database_path)
            .field("admin_token", &self.admin_token)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("cache", &self.cache)
            .field("workers", &self.workers)
            .field("fib_concurrency", &self.fib_concurrency)
            .field("fib_queue", &self.fib_queue)
            .field("queue_redis", &self.queue_redis)
            .field("reindex_delay", &self.reindex_delay)
            .field("handle_signals", &self.handle_signals)
            .field("api_limits", &self.api_limits)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl Config {
    /// A configuration for `redis_url` and `database_path` with every other setting at its
    /// default, and signal handling off: what a test or an embedding program starts from.
    pub fn new(redis_url: impl Into<String>, database_path: impl Into<PathBuf>) -> Self {
        let redis_url = redis_url.into();
        Self {
            bind: DEFAULT_BIND.to_owned(),
            database_path: database_path.into(),
            admin_token: None,
            cache: Cache::builder(redis_url.as_str())
                .null_ttl(DEFAULT_NULL_TTL)
                .name(DEFAULT_CACHE_NAME),
            queue_redis: Redis::builder(redis_url.as_str()).name(QUEUE_CONNECTION_NAME),
            redis_url,
            workers: None,
            fib_concurrency: default_fib_concurrency(),
            fib_queue: DEFAULT_FIB_QUEUE,
            reindex_delay: DEFAULT_REINDEX_DELAY,
            handle_signals: false,
            api_limits: Vec::new(),
            trusted_proxies: TrustedProxies::none(),
        }
    }

    /// Reads the variables in the table above; a malformed one is an error naming it.
    pub fn from_env() -> Result<Self, StartError> {
        let var = |name: &str| std::env::var(name).ok();
        let mut cache = CacheBuilder::from_env()?;
        if var("REDIS_CACHE_NULL_TTL_SECS").is_none() {
            cache = cache.null_ttl(DEFAULT_NULL_TTL);
        }
        if var("REDIS_CACHE_NAME").is_none() {
            cache = cache.name(DEFAULT_CACHE_NAME);
        }
        let count = |name: &str| -> Result<Option<usize>, StartError> {
            var(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| {
                        StartError::Config(format!("{name}={v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let fib_concurrency = match count("FIB_CONCURRENCY")? {
            None => default_fib_concurrency(),
            Some(n) => NonZeroUsize::new(n)
                .ok_or_else(|| StartError::Config("FIB_CONCURRENCY must be at least 1".into()))?,
        };
        let config = Self {
            bind: var("BIND").unwrap_or_else(|| DEFAULT_BIND.to_owned()),
            database_path: var("DATABASE_PATH")
                .unwrap_or_else(|| DEFAULT_DATABASE_PATH.to_owned())
                .into(),
            admin_token: var("ADMIN_TOKEN")
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            redis_url: var("REDIS_URL").unwrap_or_else(|| DEFAULT_URL.to_owned()),
            cache,
            workers: None,
            fib_concurrency,
            fib_queue: count("FIB_QUEUE")?.unwrap_or(DEFAULT_FIB_QUEUE),
            queue_redis: RedisBuilder::from_env()?.name(QUEUE_CONNECTION_NAME),
            reindex_delay: match count("REINDEX_DELAY_MS")? {
                Some(ms) => Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)),
                None => DEFAULT_REINDEX_DELAY,
            },
            handle_signals: true,
            api_limits: crate::limits::parse_limits(&var("API_RATE_LIMIT").unwrap_or_default())
                .map_err(StartError::Config)?,
            trusted_proxies: match var("API_TRUSTED_PROXIES") {
                Some(list) => {
                    TrustedProxies::new(list.split(',').filter(|p| !p.trim().is_empty()))?
                }
                None => TrustedProxies::none(),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: the admin token's length.
    pub(crate) fn validate(&self) -> Result<(), StartError> {
        use secrecy::ExposeSecret as _;
        match &self.admin_token {
            Some(t) if t.expose_secret().chars().count() < MIN_ADMIN_TOKEN_CHARS => {
                Err(StartError::Config(format!(
                    "ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters \
                     (unset it to disable the admin endpoint)"
                )))
            }
            _ => Ok(()),
        }
    }
}

fn default_fib_concurrency() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_admin_token() {
        let mut config = Config::new("redis://:hunter2@127.0.0.1:6379", "x.db");
        config.admin_token = Some("correct-horse-battery-staple".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("correct-horse"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let mut config = Config::new("redis://127.0.0.1:6379", "x.db");
        config.admin_token = Some("short-token".into());
        let err = config.validate().expect_err("too short");
        assert!(err.to_string().contains("ADMIN_TOKEN"), "{err}");
        config.admin_token = Some("a-token-of-16-ch".into());
        config.validate().expect("16 characters are enough");
    }
}
