//! Invalidation and write-through, never silently lost.
//!
//! An invalidation first stops in-flight fills of what it covers from storing (they computed
//! before it), then deletes, bypassing the circuit breaker. One that fails (or whose future is
//! dropped before Redis answered) returns its error and is remembered: retried in the
//! background until it succeeds, and until then this process does not read the keys it covers
//! from the cache.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde::Serialize;

use crate::{
    cache::codec,
    cache::key::{Key, glob_escape, validate_prefix},
    cache::policy::Policy,
    cache::store::memory::glob_match,
    cache::{Cache, Inner},
    error::CacheError,
};

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What an invalidation covers, as full keys (namespace included).
#[derive(Clone, Debug)]
enum Scope {
    Key(String),
    /// `{namespace}{prefix}:`, and the `SCAN` pattern for it.
    Prefix {
        start: String,
        pattern: String,
    },
    /// A glob over full keys.
    Pattern(String),
}

impl Scope {
    /// Evicts what this covers from the near cache, and keeps out what calls under way read
    /// before now. Done before the delete and again once it is answered: a call that read
    /// the old entry in between cannot keep it here, before Redis's own report arrives.
    fn evict_near(&self, cache: &Cache) {
        let Some(near) = &cache.inner.near else {
            return;
        };
        match self {
            Scope::Key(key) => near.evict(key),
            other => near.evict_where(|key| other.covers(key)),
        }
    }

    fn covers(&self, key: &str) -> bool {
        match self {
            Scope::Key(k) => k == key,
            Scope::Prefix { start, .. } => key.starts_with(start.as_str()),
            Scope::Pattern(glob) => glob_match(glob.as_bytes(), key.as_bytes()),
        }
    }
}

/// Invalidations that failed and are being retried.
#[derive(Default)]
pub(crate) struct Pending {
    count: AtomicUsize,
    ops: Mutex<Vec<(u64, Scope)>>,
    next_id: AtomicU64,
    retrying: AtomicBool,
}

impl Pending {
    /// Whether a pending invalidation covers `key`; one load when there is none.
    #[inline]
    pub(crate) fn covers(&self, key: &str) -> bool {
        self.count.load(Ordering::Acquire) != 0 && self.covers_slow(key)
    }

    fn covers_slow(&self, key: &str) -> bool {
        self.lock().iter().any(|(_, scope)| scope.covers(key))
    }

    pub(crate) fn len(&self) -> u64 {
        self.count.load(Ordering::Acquire) as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Scope)>> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, scope: Scope) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut ops = self.lock();
        ops.push((id, scope));
        self.count.store(ops.len(), Ordering::Release);
    }

    fn remove(&self, id: u64) {
        let mut ops = self.lock();
        ops.retain(|(i, _)| *i != id);
        self.count.store(ops.len(), Ordering::Release);
    }

    fn snapshot(&self) -> Vec<(u64, Scope)> {
        self.lock().clone()
    }
}

/// An invalidation under way: unless completed, dropping it (a failure, or the caller's future
/// dropped) makes it pending and starts the retries.
struct InFlight<'a> {
    cache: &'a Cache,
    scope: Option<Scope>,
}

impl InFlight<'_> {
    fn done(mut self) {
        self.scope = None;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(scope) = self.scope.take() {
            self.cache.inner.pending.add(scope);
            self.cache.retry_pending();
        }
    }
}

/// Clears the retry flag however the retry task ends, unless disarmed.
struct RetryFlag {
    inner: Weak<Inner>,
    armed: bool,
}

impl RetryFlag {
    fn arm(&mut self, armed: bool) {
        self.armed = armed;
    }
}

impl Drop for RetryFlag {
    fn drop(&mut self) {
        if let (true, Some(inner)) = (self.armed, self.inner.upgrade()) {
            inner.pending.retrying.store(false, Ordering::Release);
        }
    }
}

impl Cache {
    /// Deletes exactly one entry. Returns whether it existed.
    ///
    /// On failure the error is returned *and* the deletion is retried in the background; until
    /// it succeeds, this process does not read that key from the cache.
    pub async fn invalidate(&self, key: &Key) -> Result<bool, CacheError> {
        let scope = Scope::Key(key.as_str().to_owned());
        let n = self.invalidate_scope(scope, key.prefix()).await?;
        Ok(n > 0)
    }

    /// Deletes every entry under `prefix` (every argument tuple), in `SCAN` + `UNLINK`
    /// batches that never block the server. Returns how many keys were deleted.
    ///
    /// Only `{namespace}{prefix}:*` is touched: invalidating `user` leaves `user2` alone.
    /// Failures are retried as for [`Cache::invalidate`].
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        validate_prefix(prefix)?;
        let namespace = &self.inner.namespace;
        let start = format!("{namespace}{prefix}:");
        let mut pattern = String::with_capacity(start.len() + 1);
        glob_escape(namespace, &mut pattern);
        pattern.push_str(prefix);
        pattern.push_str(":*");
        self.invalidate_scope(Scope::Prefix { start, pattern }, prefix)
            .await
    }

    /// Deletes every key of this cache's namespace matching the Redis glob `pattern` (`*`,
    /// `?`, `[…]`, `\` escapes), e.g. `item:*` or `user:42*`. Keys outside the namespace are
    /// never touched. Returns how many keys were deleted. Failures are retried as for
    /// [`Cache::invalidate`].
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        let mut full = String::with_capacity(self.inner.namespace.len() + pattern.len());
        glob_escape(&self.inner.namespace, &mut full);
        full.push_str(pattern);
        self.invalidate_scope(Scope::Pattern(full), "*").await
    }

    /// Write-through: stores `value` under `key` now (with the policy's TTL and version), so
    /// the next read gets it without running the body. Fills of the same key under way in this
    /// process do not overwrite it. When the write fails, the key is invalidated instead
    /// (retried in the background like [`Cache::invalidate`]) and the error returned.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &Key,
        value: &T,
        policy: &Policy,
    ) -> Result<(), CacheError> {
        let inner = &*self.inner;
        let bytes =
            codec::encode_value(value, policy.version).map_err(|e| CacheError::Encode(e.into()))?;
        if bytes.len() > inner.max_value_bytes {
            inner.stats.prefix(key.prefix()).oversized(1);
            self.invalidate(key).await?;
            return Ok(());
        }
        // Kept for the stale window too, like a fill's entry; its tag keys outlive it.
        let ttl = policy.ttl + policy.stale_window_secs();
        let bytes = match self.tag_written(key, bytes, ttl).await {
            Ok(bytes) => bytes,
            Err(e) => {
                self.invalidate(key).await?;
                return Err(e);
            }
        };
        inner.flights.invalidate(key.as_str());
        let scope = Scope::Key(key.as_str().to_owned());
        scope.evict_near(self);
        let write = InFlight {
            cache: self,
            scope: Some(scope.clone()),
        };
        let written = inner.store.write(key.as_str(), &bytes, ttl).await;
        scope.evict_near(self);
        written?;
        write.done();
        inner.stats.prefix(key.prefix()).stores(1);
        Ok(())
    }

    /// Deletes tag keys (`cache/tags.rs`), one command each, sent together; each failed one is
    /// remembered and retried as a key is.
    pub(crate) async fn invalidate_tag_keys(&self, keys: Vec<String>) -> Result<u64, CacheError> {
        let scopes: Vec<Scope> = keys.iter().cloned().map(Scope::Key).collect();
        scopes.iter().for_each(|s| s.evict_near(self));
        let attempts: Vec<InFlight<'_>> = scopes
            .iter()
            .map(|s| InFlight {
                cache: self,
                scope: Some(s.clone()),
            })
            .collect();
        let executed = self.inner.store.unlink_tags(&keys).await;
        scopes.iter().for_each(|s| s.evict_near(self));
        match executed {
            Ok(n) => {
                attempts.into_iter().for_each(InFlight::done);
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache tag invalidation failed; retrying in the background, and not reading what it covers until then");
                Err(e)
            }
        }
    }

    async fn invalidate_scope(&self, scope: Scope, stats_prefix: &str) -> Result<u64, CacheError> {
        let inner = &*self.inner;
        // Before the delete: no fill under way may store what it computed before it.
        match &scope {
            Scope::Key(key) => inner.flights.invalidate(key),
            other => inner.flights.invalidate_where(|key| other.covers(key)),
        }
        scope.evict_near(self);
        let attempt = InFlight {
            cache: self,
            scope: Some(scope.clone()),
        };
        let executed = self.execute(&scope).await;
        scope.evict_near(self);
        match executed {
            Ok(n) => {
                attempt.done();
                inner.stats.prefix(stats_prefix).invalidated(n);
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache invalidation failed; retrying in the background, and not reading what it covers until then");
                Err(e)
            }
        }
    }

    async fn execute(&self, scope: &Scope) -> Result<u64, CacheError> {
        let store = &self.inner.store;
        match scope {
            Scope::Key(key) => store.delete(key.as_str()).await,
            Scope::Prefix { pattern, .. } | Scope::Pattern(pattern) => {
                store.delete_matching(pattern).await
            }
        }
    }

    /// Starts the background retry of pending invalidations unless it runs already.
    fn retry_pending(&self) {
        let inner = &*self.inner;
        let Some(spawner) = &inner.spawner else {
            return;
        };
        if inner.pending.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut flag = RetryFlag {
            inner: Arc::downgrade(&self.inner),
            armed: true,
        };
        let weak = Arc::downgrade(&self.inner);
        spawner.spawn(async move {
            let mut backoff = RETRY_MIN;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let cache = Cache::background(inner);
                let ops = cache.inner.pending.snapshot();
                if ops.is_empty() {
                    // Hand the flag back, then make sure nothing slipped in meanwhile.
                    let pending = &cache.inner.pending;
                    pending.retrying.store(false, Ordering::Release);
                    flag.arm(false);
                    if pending.len() == 0 || pending.retrying.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    flag.arm(true);
                    continue;
                }
                for (id, scope) in ops {
                    match cache.execute(&scope).await {
                        Ok(n) => {
                            cache.inner.pending.remove(id);
                            tracing::info!(deleted = n, "pending cache invalidation done");
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "pending cache invalidation failed again");
                            break;
                        }
                    }
                }
                let any_left = cache.inner.pending.len() > 0;
                drop(cache);
                if any_left {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::error::ErrorKind;

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no json for this"))
        }
    }

    #[tokio::test]
    async fn a_value_that_does_not_encode_is_an_encode_error_with_its_reason() {
        let cache = Cache::in_memory();
        let policy = Policy::new("p", Duration::from_secs(60)).expect("a valid policy");
        let key = cache.key("p").arg(&1u8).build().expect("a valid key");
        let e = cache
            .set(&key, &Refuses, &policy)
            .await
            .expect_err("the value refused to serialize");
        assert_eq!(e.kind(), ErrorKind::Encode);
        assert_eq!(e.to_string(), "cannot encode a cached value");
        let reason = e.source().expect("the encoder's error").to_string();
        assert!(reason.contains("no json for this"), "{reason}");
    }
}
