//! A cache's connection, for the primitives that run beside it (rate limits, counters) on
//! the same connections, breaker and metrics.

use crate::{cache::Cache, connection::Redis};

impl Cache {
    /// The Redis connection this cache runs on; `None` for a cache in memory.
    ///
    /// ```no_run
    /// # #[cfg(feature = "ratelimit")]
    /// # async fn demo(cache: cached_runtime::Cache) -> Result<(), cached_runtime::CacheError> {
    /// use cached_runtime::ratelimit::{Limit, RateLimiter};
    /// if let Some(redis) = cache.connection() {
    ///     let limiter = RateLimiter::on(redis, "api").limit(Limit::per_minute(100)).fail_open().build()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn connection(&self) -> Option<&Redis> {
        self.inner.store.connection()
    }
}
