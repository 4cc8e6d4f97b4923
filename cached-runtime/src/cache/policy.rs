//! The options of one cached function (prefix, TTLs, jitter, version and lock), and the
//! record of where each macro-cached function is, so two functions declaring one prefix are
//! reported.

use std::{
    borrow::Cow,
    fmt,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    cache::builder::MAX_TTL, cache::key::validate_prefix, cache::stats::Counters, error::CacheError,
};

/// The longest lock a fill may hold: a body that needs longer should not be cached this way.
const MAX_LOCK: Duration = Duration::from_secs(3600);

/// The options of one cached function.
#[derive(Clone, Debug)]
pub struct Policy {
    pub(crate) prefix: Cow<'static, str>,
    pub(crate) ttl: u64,
    pub(crate) null_ttl: Option<u64>,
    pub(crate) jitter: u64,
    pub(crate) version: u32,
    pub(crate) lock_ms: Option<u64>,
    /// Whether calls may use the cache's near cache.
    pub(crate) near: bool,
    /// Serving stale on purpose (`cache/stale.rs`); off when `None`.
    pub(crate) stale: Option<crate::cache::stale::Stale>,
    /// The counters of the first cache that used this policy, so its calls skip the lookup by
    /// prefix (a lock and a reference count on every call otherwise).
    pub(crate) counters: CountersSlot,
}

/// `(cache id, counters)`; set once.
#[derive(Clone, Default)]
pub(crate) struct CountersSlot(pub(crate) OnceLock<(u64, Arc<Counters>)>);

impl fmt::Debug for CountersSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountersSlot")
    }
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
            near: true,
            stale: None,
            counters: CountersSlot::default(),
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

    /// Whether calls may be answered from the cache's near cache
    /// ([`CacheBuilder::near_cache`](crate::CacheBuilder::near_cache)); on by default. Off,
    /// every call reads Redis: for values that must be read fresh from Redis each time.
    pub fn near(mut self, on: bool) -> Self {
        self.near = on;
        self
    }

    /// For the macro's `near = false`.
    pub(crate) const fn with_near(mut self, on: bool) -> Self {
        self.near = on;
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// For the macro, which has validated every value at compile time. `null_ttl` 0 means the
    /// cache's default.
    pub(crate) const fn from_macro(
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
            near: true,
            stale: None,
            counters: CountersSlot(OnceLock::new()),
        }
    }

    /// The lock TTL in milliseconds, validated by the macro.
    pub(crate) const fn with_lock_ms(mut self, lock_ms: u64) -> Self {
        self.lock_ms = Some(lock_ms);
        self
    }

    /// Fills a missing entry under a Redis lock held at most `ttl`, so across processes one
    /// caller runs the body while the others wait for its value (at most `ttl`).
    pub fn lock(mut self, ttl: Duration) -> Result<Self, CacheError> {
        match u64::try_from(ttl.as_millis()) {
            Ok(ms) if ms > 0 && ttl <= MAX_LOCK => {
                self.lock_ms = Some(ms);
                Ok(self)
            }
            _ => Err(CacheError::Config(
                "a lock ttl must be at least 1 ms and at most one hour".to_owned(),
            )),
        }
    }
}

fn nonzero_secs(ttl: Duration) -> Result<u64, CacheError> {
    match ttl.as_secs() {
        0 => Err(CacheError::ZeroTtl),
        _ if ttl > MAX_TTL => Err(CacheError::Config(format!(
            "a cache ttl of {ttl:?} is over the ten-year limit"
        ))),
        s => Ok(s),
    }
}

/// Where a `#[redis_cache]` function is defined: one `static` per annotated function.
///
/// On its first call a function registers its prefix; when another function registered the
/// same prefix before, an error naming both is logged once, since the two would share or
/// overwrite each other's entries.
#[derive(Debug)]
pub struct Site {
    module: &'static str,
    function: &'static str,
    registered: AtomicBool,
}

/// Every site registered in this process, with its prefix.
static SITES: Mutex<Vec<(&'static str, &'static Site)>> = Mutex::new(Vec::new());

impl Site {
    pub(crate) const fn new(module: &'static str, function: &'static str) -> Self {
        Self {
            module,
            function,
            registered: AtomicBool::new(false),
        }
    }

    /// Registers this site under `prefix` on its first call: one atomic load afterwards.
    #[inline]
    pub(crate) fn register(&'static self, prefix: &'static str) {
        if !self.registered.load(Ordering::Acquire) {
            self.register_slow(prefix, &SITES);
        }
    }

    #[cold]
    fn register_slow(
        &'static self,
        prefix: &'static str,
        sites: &Mutex<Vec<(&'static str, &'static Site)>>,
    ) -> Option<&'static Site> {
        // A poisoned registry still holds every site pushed before the panic.
        let mut sites = sites.lock().unwrap_or_else(PoisonError::into_inner);
        if self.registered.swap(true, Ordering::AcqRel) {
            return None;
        }
        let other = sites
            .iter()
            .find(|(p, site)| *p == prefix && !std::ptr::eq(*site, self))
            .map(|(_, site)| *site);
        sites.push((prefix, self));
        if let Some(other) = other {
            tracing::error!(
                prefix,
                first = %other,
                second = %self,
                "two #[redis_cache] functions declare the prefix {prefix:?}: `{other}` and `{self}`; they share or overwrite each other's entries, give each its own prefix"
            );
        }
        other
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.module, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_function_with_the_same_prefix_is_reported_once_with_the_first() {
        static A: Site = Site::new("app::items", "item");
        static B: Site = Site::new("app::admin", "item_again");
        static C: Site = Site::new("app::users", "user");
        let sites = Mutex::new(Vec::new());
        assert!(A.register_slow("item", &sites).is_none());
        assert!(C.register_slow("user", &sites).is_none());
        let other = B.register_slow("item", &sites).expect("the clash is found");
        assert_eq!(other.to_string(), "app::items::item");
        assert!(B.register_slow("item", &sites).is_none(), "reported once");
    }
}
