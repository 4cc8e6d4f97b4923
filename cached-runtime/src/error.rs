//! The crate's one error type.

use std::time::Duration;

/// What can go wrong when building a [`Cache`](crate::Cache) or calling it directly.
///
/// The cached path of `#[redis_cache]` never returns these: it fails open and counts them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The URL does not parse or names an unsupported scheme.
    #[error("invalid redis url {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The server could not be reached or refused us.
    #[error("cannot connect to redis at {url}: {hint}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What to check, in words.
        hint: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// No connection within the configured time.
    #[error(
        "redis at {url} did not answer within {timeout:?} (is it overloaded, or the address wrong?)"
    )]
    ConnectTimeout {
        /// The URL, password redacted.
        url: String,
        /// The connection timeout in force.
        timeout: Duration,
    },
    /// A command did not complete within the command timeout.
    #[error("redis command timed out after {0:?}")]
    Timeout(Duration),
    /// A Redis command failed.
    #[error("redis command failed")]
    Redis(#[from] redis::RedisError),
    /// No connection is available right now (the pool is reconnecting or the circuit is open).
    #[error("no redis connection available")]
    Unavailable,
    /// The circuit breaker is open after repeated failures; Redis is not being called.
    #[error("redis circuit open after repeated failures")]
    CircuitOpen,
    /// An environment variable or builder value is out of range.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// A prefix is empty or has a character outside `[A-Za-z0-9_./-]`.
    #[error("invalid cache prefix {0:?}: use one or more of A-Z a-z 0-9 _ . / -")]
    InvalidPrefix(String),
    /// A TTL of zero would store an entry that never expires.
    #[error("a cache ttl must be at least one second")]
    ZeroTtl,
    /// A key argument's `Serialize` impl failed.
    #[error("cannot encode a key argument: {0}")]
    KeyArgument(String),
    /// A value's `Serialize` impl failed.
    #[error("cannot encode a cached value")]
    Encode(#[source] serde_json::Error),
}

impl CacheError {
    /// Whether this says Redis is unreachable or too slow (as opposed to rejecting one command).
    pub(crate) fn is_availability(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unavailable | Self::CircuitOpen => true,
            Self::Redis(e) => {
                e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
            }
            _ => false,
        }
    }
}
