//! The options of one cached function: prefix, TTLs, jitter, version and lock.

use std::{borrow::Cow, time::Duration};

use crate::{error::CacheError, key::validate_prefix};

/// The options of one cached function.
#[derive(Clone, Debug)]
pub struct Policy {
    pub(crate) prefix: Cow<'static, str>,
    pub(crate) ttl: u64,
    pub(crate) null_ttl: Option<u64>,
    pub(crate) jitter: u64,
    pub(crate) version: u32,
    pub(crate) lock_ms: Option<u64>,
}

impl Policy {
    /// Entries under `prefix` that live for `ttl` (at least one second).
    pub fn new(prefix: impl Into<Cow<'static, str>>, ttl: Duration) -> Result<Self, CacheError> {
        let prefix = prefix.into();
        validate_prefix(&prefix)?;
        Ok(Self {
            prefix,
            ttl: nonzero_secs(ttl)?,
            null_ttl: None,
            jitter: 0,
            version: 0,
            lock_ms: None,
        })
    }

    /// TTL of the null marker stored for absent results, instead of the cache's default.
    pub fn null_ttl(mut self, ttl: Duration) -> Result<Self, CacheError> {
        self.null_ttl = Some(nonzero_secs(ttl)?);
        Ok(self)
    }

    /// Adds a random `0..=jitter` seconds to every TTL, so entries filled together do not
    /// expire together.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter.as_secs();
        self
    }

    /// Entries written under another version are misses; bump it when the value type changes.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// For the macro, which has validated every value at compile time. `null_ttl` 0 means the
    /// cache's default.
    #[doc(hidden)]
    pub const fn __from_macro(
        prefix: &'static str,
        ttl: u64,
        null_ttl: u64,
        jitter: u64,
        version: u32,
    ) -> Self {
        Self {
            prefix: Cow::Borrowed(prefix),
            ttl,
            null_ttl: if null_ttl == 0 { None } else { Some(null_ttl) },
            jitter,
            version,
            lock_ms: None,
        }
    }

    /// For the macro's `lock` option: the lock TTL in milliseconds.
    #[doc(hidden)]
    pub const fn __with_lock(mut self, lock_ms: u64) -> Self {
        self.lock_ms = Some(lock_ms);
        self
    }

    /// Fills a missing entry under a Redis lock held at most `ttl`, so across processes one
    /// caller runs the body while the others wait for its value (at most `ttl`).
    pub fn lock(mut self, ttl: Duration) -> Result<Self, CacheError> {
        match u64::try_from(ttl.as_millis()) {
            Ok(ms) if ms > 0 => {
                self.lock_ms = Some(ms);
                Ok(self)
            }
            _ => Err(CacheError::Config(
                "a lock ttl must be at least 1 ms".to_owned(),
            )),
        }
    }
}

fn nonzero_secs(ttl: Duration) -> Result<u64, CacheError> {
    match ttl.as_secs() {
        0 => Err(CacheError::ZeroTtl),
        s => Ok(s),
    }
}
