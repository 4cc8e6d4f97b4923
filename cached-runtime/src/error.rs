//! The crate's one error type, with no driver type in its public surface.

use std::{error::Error as StdError, fmt, time::Duration};

/// The source of an error from the Redis client or the value encoder, boxed so no dependency's
/// type is part of this crate's API.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What can go wrong when building a [`Cache`](crate::Cache) or calling it directly.
///
/// The cached path of `#[redis_cache]` never returns these: it fails open and counts them.
/// Match on [`CacheError::kind`] rather than on variants when deciding what to do.
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
        source: BoxError,
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
    /// The connection broke while a command was under way.
    #[error("redis connection failed")]
    Connection(#[source] BoxError),
    /// Redis answered a command with an error.
    #[error("redis answered with an error{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Command {
        /// The server's error code (`READONLY`, `WRONGTYPE`, …), when it sent one.
        code: Option<String>,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// No connection is available right now (the pool is reconnecting).
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
    Encode(#[source] BoxError),
}

/// What kind of failure a [`CacheError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration, URL, prefix or a TTL is invalid: fix the code or the environment.
    Config,
    /// Redis could not be reached, timed out, or the connection broke.
    Unavailable,
    /// The circuit breaker is open: Redis is skipped for a while.
    CircuitOpen,
    /// Redis answered with an error.
    Command,
    /// A key argument or a value could not be encoded.
    Encode,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "configuration",
            Self::Unavailable => "unavailable",
            Self::CircuitOpen => "circuit open",
            Self::Command => "command",
            Self::Encode => "encode",
        })
    }
}

impl CacheError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidUrl { .. } | Self::Config(_) | Self::InvalidPrefix(_) | Self::ZeroTtl => {
                ErrorKind::Config
            }
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Timeout(_)
            | Self::Connection(_)
            | Self::Unavailable => ErrorKind::Unavailable,
            Self::CircuitOpen => ErrorKind::CircuitOpen,
            Self::Command { code, .. } if code.as_deref().is_some_and(is_failover_code) => {
                ErrorKind::Unavailable
            }
            Self::Command { .. } => ErrorKind::Command,
            Self::KeyArgument(_) | Self::Encode(_) => ErrorKind::Encode,
        }
    }

    /// Whether trying again later may succeed (Redis unreachable, slow, failing over, or the
    /// circuit open), as opposed to a mistake that repeats every time.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::CircuitOpen)
    }

    /// The server's error code (`READONLY`, `WRONGTYPE`, …) when Redis answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Command { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Replies that mean the node cannot serve us now (a demoted primary, a replica still
/// loading, a primary cut off from its replicas): reconnecting is the cure.
pub(crate) fn is_failover_code(code: &str) -> bool {
    matches!(code, "READONLY" | "LOADING" | "MASTERDOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_tell_transient_failures_from_mistakes() {
        assert!(CacheError::Timeout(Duration::from_millis(5)).is_transient());
        assert!(CacheError::CircuitOpen.is_transient());
        assert!(!CacheError::ZeroTtl.is_transient());
        let readonly = CacheError::Command {
            code: Some("READONLY".into()),
            source: "demoted".into(),
        };
        assert!(readonly.is_transient());
        assert_eq!(readonly.code(), Some("READONLY"));
        assert_eq!(
            readonly.to_string(),
            "redis answered with an error (READONLY)"
        );
        let wrongtype = CacheError::Command {
            code: Some("WRONGTYPE".into()),
            source: "list".into(),
        };
        assert_eq!(wrongtype.kind(), ErrorKind::Command);
    }
}
