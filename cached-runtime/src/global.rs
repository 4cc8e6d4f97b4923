//! The process-wide default cache used by `#[redis_cache]` without a `cache = …` option.

use std::sync::{
    PoisonError, RwLock,
    atomic::{AtomicBool, Ordering},
};

use crate::cache::Cache;

static DEFAULT: RwLock<Option<Cache>> = RwLock::new(None);
static WARNED: AtomicBool = AtomicBool::new(false);

/// Makes `cache` the default of every `#[redis_cache]` function that names no cache of its
/// own. Returns the cache installed before, if any.
pub fn install(cache: Cache) -> Option<Cache> {
    DEFAULT
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(cache)
}

/// The installed default cache, if any.
pub fn installed() -> Option<Cache> {
    DEFAULT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The default cache; with none installed, warns once so the cause is visible, and callers
/// run uncached.
pub(crate) fn default_or_warn() -> Option<Cache> {
    let cache = installed();
    if cache.is_none() && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "#[redis_cache] called with no cache installed; running uncached \
             (call cached_runtime::install at startup)"
        );
    }
    cache
}
