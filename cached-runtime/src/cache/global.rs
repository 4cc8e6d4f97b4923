//! The process-wide default cache used by `#[redis_cache]` without a `cache = …` option.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::ArcSwapOption;

use crate::cache::Cache;

// Read on every call: a lock-free load rather than a lock word every thread writes.
static DEFAULT: ArcSwapOption<Cache> = ArcSwapOption::const_empty();
static WARNED: AtomicBool = AtomicBool::new(false);

/// Makes `cache` the default of every `#[redis_cache]` function that names no cache of its
/// own. Returns the cache installed before, if any.
pub fn install(cache: Cache) -> Option<Cache> {
    DEFAULT
        .swap(Some(Arc::new(cache)))
        .map(|previous| Cache::clone(&previous))
}

/// The installed default cache, if any.
pub fn installed() -> Option<Cache> {
    DEFAULT.load().as_deref().cloned()
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
