//! Per-call control of the cache for code that cannot pass options to a cached function: the
//! cached calls made inside a [`bypass`] or [`refresh`] scope skip the cache read.

use std::future::Future;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Normal,
    Bypass,
    Refresh,
}

tokio::task_local! {
    static MODE: Mode;
}

#[inline]
pub(crate) fn current() -> Mode {
    MODE.try_with(|m| *m).unwrap_or(Mode::Normal)
}

/// Runs `fut` with the cache switched off for every cached call it makes: bodies run, nothing
/// is read or stored. Counted as `bypasses`.
///
/// ```no_run
/// # async fn item(id: u64) -> Option<String> { None }
/// # async fn admin() {
/// // An admin view that must see the database, not the cache.
/// let fresh = cached_runtime::bypass(item(42)).await;
/// # }
/// ```
pub async fn bypass<F: Future>(fut: F) -> F::Output {
    MODE.scope(Mode::Bypass, fut).await
}

/// Runs `fut` so that every cached call it makes recomputes its value and stores it, without
/// reading the cache first (a forced refresh, e.g. for `Cache-Control: no-cache`). Concurrent
/// callers of the same key still share one computation. Counted as `bypasses`.
///
/// ```no_run
/// # async fn item(id: u64) -> Option<String> { None }
/// # async fn on_no_cache() {
/// let fresh = cached_runtime::refresh(item(42)).await;
/// # }
/// ```
pub async fn refresh<F: Future>(fut: F) -> F::Output {
    MODE.scope(Mode::Refresh, fut).await
}
