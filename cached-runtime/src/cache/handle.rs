//! Naming a cache: what the `cache = …` option of `#[redis_cache]` accepts.

// Spelled as the `cache = …` error quotes these impls (tests/ui).
use super::Cache as CacheHandle;

/// Accepts what a `cache = …` option may name.
#[diagnostic::on_unimplemented(
    message = "`cache = ...` needs a `cached_runtime::Cache`, found `{Self}`",
    label = "not a `Cache`",
    note = "name a `Cache`, a `&Cache`, an `Arc<Cache>` or a `web::Data<Cache>`, like `cache = state.cache`"
)]
pub trait AsCache {
    /// The cache.
    fn as_cache(&self) -> &CacheHandle;
}

impl AsCache for CacheHandle {
    fn as_cache(&self) -> &CacheHandle {
        self
    }
}

impl<T: AsCache + ?Sized> AsCache for &T {
    fn as_cache(&self) -> &CacheHandle {
        (**self).as_cache()
    }
}

impl AsCache for std::sync::Arc<CacheHandle> {
    fn as_cache(&self) -> &CacheHandle {
        self
    }
}
