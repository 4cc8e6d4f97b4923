//! Configuration, from the environment or from code (the end-to-end tests).

use std::{fmt, path::PathBuf, time::Duration};

use cached_runtime::{Cache, CacheBuilder, DEFAULT_URL, redact_url};

use crate::error::StartError;

/// Where `BIND` defaults to.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Where `DATABASE_PATH` defaults to (relative to the working directory).
pub const DEFAULT_DATABASE_PATH: &str = "catalog.db";
/// The null-marker TTL when `REDIS_CACHE_NULL_TTL_SECS` is unset: a missing id is answered
/// from the cache for this long.
pub const DEFAULT_NULL_TTL: Duration = Duration::from_secs(30);

/// Everything the service is started with.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `BIND` | `127.0.0.1:8080` | listening address (`:0` picks a free port) |
/// | `DATABASE_PATH` | `catalog.db` | SQLite file, created and seeded when new |
/// | `ADMIN_TOKEN` | unset | bearer token of `POST /admin/cache/invalidate`; unset or empty disables it (404) |
/// | `REDIS_URL` | `redis://127.0.0.1:6379` | the cache; the service runs uncached while it is down |
/// | `REDIS_CACHE_NULL_TTL_SECS` | 30 | how long a missing id stays cached as absent |
/// | `REDIS_CACHE_*` | see [`CacheBuilder`] | timeouts, pool size, key namespace |
/// | `RUST_LOG` | `info` | log filter |
#[derive(Clone)]
pub struct Config {
    /// Listening address.
    pub bind: String,
    /// SQLite database file.
    pub database_path: PathBuf,
    /// Bearer token of the admin endpoint; `None` disables it.
    pub admin_token: Option<String>,
    /// The Redis URL, kept for the startup log (shown redacted).
    pub redis_url: String,
    /// The cache's settings.
    pub cache: CacheBuilder,
    /// Actix worker threads; `None` is Actix's default (one per core).
    pub workers: Option<usize>,
    /// Whether SIGINT/SIGTERM stop the server gracefully (off for in-process tests, which
    /// stop it with [`Running::stop`](crate::Running::stop)).
    pub handle_signals: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_path", &self.database_path)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("cache", &self.cache)
            .field("workers", &self.workers)
            .field("handle_signals", &self.handle_signals)
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
            cache: Cache::builder(redis_url.as_str()).null_ttl(DEFAULT_NULL_TTL),
            redis_url,
            workers: None,
            handle_signals: false,
        }
    }

    /// Reads the variables in the table above; a malformed one is an error naming it.
    pub fn from_env() -> Result<Self, StartError> {
        let var = |name: &str| std::env::var(name).ok();
        let mut cache = CacheBuilder::from_env()?;
        if var("REDIS_CACHE_NULL_TTL_SECS").is_none() {
            cache = cache.null_ttl(DEFAULT_NULL_TTL);
        }
        Ok(Self {
            bind: var("BIND").unwrap_or_else(|| DEFAULT_BIND.to_owned()),
            database_path: var("DATABASE_PATH")
                .unwrap_or_else(|| DEFAULT_DATABASE_PATH.to_owned())
                .into(),
            admin_token: var("ADMIN_TOKEN").filter(|t| !t.is_empty()),
            redis_url: var("REDIS_URL").unwrap_or_else(|| DEFAULT_URL.to_owned()),
            cache,
            workers: None,
            handle_signals: true,
        })
    }
}
