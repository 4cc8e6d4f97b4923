//! The near cache: entries kept in this process's memory, in front of Redis, and kept
//! coherent by Redis itself.
//!
//! Redis tells this process about every change to a key of the namespace through
//! server-assisted client-side caching (`CLIENT TRACKING … BCAST PREFIX {namespace}`, on one
//! tracking connection per primary, see [`Redis::track`](crate::connection::Redis::track)): a `SET`, `DEL`
//! or `UNLINK` by any client, an expiry, an eviction, a `FLUSHDB`. Each such message evicts
//! the key here. While the tracking connections are not all up (at start, after a connection
//! was lost, after the cluster changed) the near cache is empty and bypassed: every call reads
//! Redis, as without it.
//!
//! Entries hold decoded values (`Arc<dyn Any>` of the function's value type, cloned out on a
//! hit), so a hit costs a hash lookup and a clone, no decode; revalidating HTTP handlers keep
//! the stored bytes, which they serve as they are. An entry never outlives the Redis TTL it was
//! read or written with, nor the configured near-cache TTL.
//!
//! Two races are closed here:
//! - **A fill that read an old value while an invalidation arrived.** A call takes a
//!   [`Ticket`] before it reads Redis: the generation (bumped on every flush) and the epoch
//!   of the key's stripe (bumped by every invalidation of a key in it). It inserts only if
//!   both are unchanged, and checks once more after inserting, undoing the insert if an
//!   invalidation slipped in between (the invalidation bumps before it removes).
//! - **This process's own write.** A fill that keeps its result sends its `SET` on the
//!   tracking connection itself, which has `NOLOOP`: Redis reports a change of a key to it
//!   unless the last change of that key in the batch it reports was its own. So its own
//!   write is not echoed back to evict the value just stored, while a write by anyone else
//!   after it (even one Redis processes in the same event-loop pass) still is.

use std::{
    any::Any,
    hash::BuildHasher,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    Cache,
    fill::Landed,
    key::Key,
    mode::{self, Mode},
    policy::Policy,
    tags::{Stamp, is_tag_key},
};
use crate::connection::TrackingListener;
use quick_cache::{DefaultHashBuilder, Weighter, sync::Cache as Store};
use serde::Serialize;
use tokio::sync::watch;

/// Stripes of invalidation epochs: an invalidation of one key refuses inserts of the keys
/// that share its stripe while it is in flight (rarely another key's).
const STRIPES: usize = 4096;

/// What a near-cache entry holds.
#[derive(Clone)]
pub(crate) struct Slot {
    /// The decoded value (or the stored bytes, for revalidating handlers); `None` for the
    /// null marker.
    pub(crate) value: Option<Arc<dyn Any + Send + Sync>>,
    expires: Instant,
    /// For a fail-safe function: until when it may be served stale while Redis cannot be
    /// reached (`cache/stale.rs`).
    stale_until: Option<Instant>,
    weight: u32,
    /// `expires` is the Redis entry's fresh end and its function refreshes early: a hit
    /// near that end may start the refresh (`cache/stale.rs`).
    early: bool,
    /// The versions of the entry's tags it was read or filled with (`cache/tags.rs`).
    pub(crate) tags: Option<Arc<Stamp>>,
}

impl Slot {
    /// The Redis entry's fresh end, when its function refreshes early.
    #[inline]
    pub(crate) fn early_expiry(&self) -> Option<Instant> {
        self.early.then_some(self.expires)
    }
}

/// What a function's slot keeps besides its value.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Keep {
    /// How long past its fresh TTL it may be served stale while Redis cannot be reached (a
    /// fail-safe function's window).
    pub(crate) window: Option<Duration>,
    /// Its function refreshes early.
    pub(crate) early: bool,
}

#[derive(Clone)]
struct Weigh;

impl Weighter<Box<str>, Slot> for Weigh {
    fn weight(&self, _key: &Box<str>, slot: &Slot) -> u64 {
        u64::from(slot.weight)
    }
}

/// The near cache's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NearConfig {
    pub(crate) max_entries: u64,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) ttl: Option<Duration>,
}

/// A snapshot of the near cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NearStats {
    /// Entries held now.
    pub entries: u64,
    /// Their weight: entries, or the share of the byte bound they use when one is set.
    pub weight: u64,
    /// The bound on `weight`.
    pub capacity: u64,
    /// Whether the near cache answers calls now (every tracking connection is up).
    pub serving: bool,
    /// Invalidation messages received from Redis (keys changed by any client).
    pub invalidations: u64,
    /// Times the near cache was emptied: tracking lost or re-established, a `FLUSHDB`, a
    /// pattern invalidation.
    pub flushes: u64,
}

/// A call's permission to insert what it reads or writes, if nothing invalidated the key
/// meanwhile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    generation: u64,
    stripe: usize,
    epoch: u64,
}

pub(crate) struct NearCache {
    store: Store<Box<str>, Slot, Weigh>,
    hasher: DefaultHashBuilder,
    epochs: Box<[AtomicU64]>,
    /// Bumped by every flush; a ticket of an older generation inserts nothing.
    generation: AtomicU64,
    serving: AtomicBool,
    /// `serving`, for waiters.
    ready: watch::Sender<bool>,
    config: NearConfig,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    /// Bumped by every invalidation of a tag key (`cache/tags.rs`).
    tag_epoch: AtomicU64,
}

impl NearCache {
    pub(crate) fn new(config: NearConfig) -> Self {
        let items = usize::try_from(config.max_entries).unwrap_or(usize::MAX);
        Self {
            store: Store::with_weighter(items, config.max_entries.max(1), Weigh),
            hasher: DefaultHashBuilder::default(),
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            generation: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            ready: watch::Sender::new(false),
            config,
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            tag_epoch: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: &str) -> usize {
        // STRIPES is a power of two.
        (self.hasher.hash_one(key) as usize) & (STRIPES - 1)
    }

    /// The live entry for `key`, if the near cache is serving.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Slot> {
        if !self.serving.load(Ordering::Acquire) {
            return None;
        }
        let slot = self.store.get(key)?;
        let now = Instant::now();
        if slot.expires <= now {
            // A slot that may still be served stale stays until its window ends.
            if slot.stale_until.is_none_or(|until| until <= now) {
                self.store.remove_if(key, |s| s.expires == slot.expires);
            }
            return None;
        }
        Some(slot)
    }

    /// The entry for `key` kept for stale service (a fail-safe function's), serving or not,
    /// while its window lasts: for a call that cannot read Redis.
    pub(crate) fn get_stale(&self, key: &str) -> Option<Slot> {
        let slot = self.store.get(key)?;
        slot.stale_until
            .is_some_and(|until| until > Instant::now())
            .then_some(slot)
    }

    /// A tag's version as last read, serving or not (a stale answer kept through an outage
    /// is checked against it); `None` once evicted.
    pub(crate) fn tag_version(&self, tag: &str) -> Option<Slot> {
        self.store
            .get(tag)
            .filter(|slot| slot.expires > Instant::now())
    }

    /// A ticket for a call about to read Redis; `None` while not serving.
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        let generation = self.generation.load(Ordering::SeqCst);
        if !self.serving.load(Ordering::SeqCst) {
            return None;
        }
        let stripe = self.stripe(key);
        Some(Ticket {
            generation,
            stripe,
            epoch: self.epochs[stripe].load(Ordering::SeqCst),
        })
    }

    fn valid(&self, ticket: Ticket) -> bool {
        self.serving.load(Ordering::SeqCst)
            && self.generation.load(Ordering::SeqCst) == ticket.generation
            && self.epochs[ticket.stripe].load(Ordering::SeqCst) == ticket.epoch
    }

    /// Inserts what a call read from or wrote to Redis (`None`: the null marker), unless the
    /// key (or everything) was invalidated since its ticket was taken.
    pub(crate) fn insert(
        &self,
        key: &str,
        ticket: Ticket,
        value: Option<Arc<dyn Any + Send + Sync>>,
        landed: Landed,
    ) {
        self.insert_kept(key, ticket, value, landed, Keep::default());
    }

    /// [`insert`](Self::insert), kept for stale service `keep.window` past the fresh TTL
    /// Redis gave (a fail-safe function's; `None`: not kept past it), and marked for early
    /// refresh when `keep.early` and its expiry is that TTL's end.
    pub(crate) fn insert_kept(
        &self,
        key: &str,
        ticket: Ticket,
        value: Option<Arc<dyn Any + Send + Sync>>,
        landed: Landed,
        keep: Keep,
    ) {
        if !self.valid(ticket) {
            return;
        }
        let Landed {
            since,
            ttl,
            bytes,
            tags,
        } = landed;
        let ttl = match (ttl, self.config.ttl) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(Duration::from_secs(365 * 24 * 3600)),
        };
        let expires = since + ttl;
        // The Redis entry's own end: the fresh TTL it was read with, plus the window.
        let stale_until = keep.window.zip(landed.ttl).map(|(w, t)| since + t + w);
        // Not for a null marker (no window), nor when the near cache's own TTL ends the slot
        // first: Redis decides then.
        let early = keep.early && value.is_some() && landed.ttl == Some(ttl);
        let slot = Slot {
            value,
            expires,
            stale_until,
            weight: self.weight(key.len() + bytes),
            early,
            tags,
        };
        self.store.insert(key.into(), slot);
        // An invalidation bumps before it removes: seen here, or its removal comes after
        // this insert.
        if !self.valid(ticket) {
            self.store.remove_if(key, |s| s.expires == expires);
        }
    }

    /// An entry's weight: 1, or its share of the byte bound scaled to the entry bound, so one
    /// weight capacity enforces both.
    fn weight(&self, bytes: usize) -> u32 {
        let Some(max_bytes) = self.config.max_bytes else {
            return 1;
        };
        let scaled = (bytes as u128 * u128::from(self.config.max_entries))
            .div_ceil(u128::from(max_bytes.max(1)));
        u32::try_from(scaled.max(1)).unwrap_or(u32::MAX)
    }

    /// Evicts `key` now: this process invalidated it.
    pub(crate) fn evict(&self, key: &str) {
        if is_tag_key(key) {
            self.tag_epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.epochs[self.stripe(key)].fetch_add(1, Ordering::SeqCst);
        self.store.remove(key);
    }

    /// Evicts every key `covers` accepts, and refuses every outstanding ticket.
    pub(crate) fn evict_where(&self, covers: impl Fn(&str) -> bool) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.store.retain(|k, _| !covers(k));
    }

    /// An invalidation from Redis: `None` is a flush of everything (`FLUSHDB`, `FLUSHALL`).
    pub(crate) fn invalidated(&self, key: Option<&[u8]>) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        let Some(key) = key else {
            self.flush();
            return;
        };
        // Keys this crate writes are UTF-8; other keys are never held here.
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        self.evict(key);
    }

    /// Empties the near cache and refuses every outstanding ticket.
    pub(crate) fn flush(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.store.clear();
    }

    fn stop(&self) {
        self.serving.store(false, Ordering::SeqCst);
        self.ready.send_replace(false);
        // Fail-safe functions keep their entries for stale service until tracking is back
        // (which empties everything), and the tag versions those entries are checked
        // against; nothing else kept can be trusted.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.store.retain(|key, slot| {
            slot.stale_until.is_some_and(|until| until > now) || is_tag_key(key)
        });
    }

    /// Every tracking connection is up: serve, from empty.
    fn serve(&self) {
        self.flush();
        self.serving.store(true, Ordering::SeqCst);
        self.ready.send_replace(true);
    }

    /// How many tag keys were invalidated so far: read before Redis is, by a tagged call.
    pub(crate) fn tag_epoch(&self) -> u64 {
        self.tag_epoch.load(Ordering::SeqCst)
    }

    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Waits until the near cache serves, at most `timeout`.
    pub(crate) async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|serving| *serving))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(crate) fn stats(&self) -> NearStats {
        NearStats {
            entries: self.store.len() as u64,
            weight: self.store.weight(),
            capacity: self.store.capacity(),
            serving: self.is_serving(),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

impl Cache {
    /// The one decision whether a call uses the near cache: the cache has one, the policy
    /// allows it (`near = false` opts out), no `bypass`/`refresh` scope is active and no
    /// invalidation of the key is pending.
    #[inline]
    pub(crate) fn near_for(&self, key: &Key, policy: &Policy) -> Option<&NearCache> {
        let inner = &*self.inner;
        let near = inner.near.as_deref()?;
        (policy.near && mode::current() == Mode::Normal && !inner.pending.covers(key.as_str()))
            .then_some(near)
    }
}

impl TrackingListener for NearCache {
    /// Tracking is down: nothing kept can be trusted, and nothing is kept until it is back.
    fn stop(&self) {
        NearCache::stop(self);
    }

    fn start(&self) {
        self.serve();
    }

    fn invalidated(&self, key: Option<&[u8]>) {
        NearCache::invalidated(self, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(max_entries: u64) -> NearCache {
        let near = NearCache::new(NearConfig {
            max_entries,
            max_bytes: None,
            ttl: None,
        });
        near.serve();
        near
    }

    fn value(v: u64) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(v))
    }

    fn read(near: &NearCache, key: &str) -> Option<u64> {
        near.get(key)
            .and_then(|s| s.value)
            .and_then(|v| v.downcast_ref::<u64>().copied())
    }

    /// Read at `since`, kept by Redis for a minute from then.
    fn landed(since: Instant) -> Landed {
        Landed {
            since,
            ttl: Some(Duration::from_secs(60)),
            bytes: 8,
            tags: None,
        }
    }

    #[test]
    fn an_invalidation_during_a_read_keeps_its_value_out() {
        let near = near(10);
        let ticket = near.ticket("k").expect("serving");
        near.invalidated(Some(b"k"));
        near.insert("k", ticket, value(1), landed(Instant::now()));
        assert_eq!(read(&near, "k"), None);
        let ticket = near.ticket("k").expect("serving");
        near.insert("k", ticket, value(2), landed(Instant::now()));
        assert_eq!(read(&near, "k"), Some(2));
    }

    #[test]
    fn a_flush_or_a_lost_session_refuses_outstanding_tickets_and_stops_serving() {
        let near = near(10);
        let ticket = near.ticket("k").expect("serving");
        near.invalidated(None);
        near.insert("k", ticket, value(1), landed(Instant::now()));
        assert_eq!(read(&near, "k"), None);
        near.stop();
        assert!(near.ticket("k").is_none() && !near.is_serving());
        near.serve();
        assert!(near.is_serving());
        near.stop();
        assert!(!near.is_serving());
    }

    #[test]
    fn an_entry_expires_with_the_ttl_it_was_read_with() {
        let near = near(10);
        let ticket = near.ticket("k").expect("serving");
        let long_ago = Instant::now() - Duration::from_secs(120);
        near.insert("k", ticket, value(1), landed(long_ago));
        assert_eq!(read(&near, "k"), None);
    }

    #[test]
    fn both_bounds_hold_with_one_weight_capacity() {
        let near = NearCache::new(NearConfig {
            max_entries: 100,
            max_bytes: Some(1000),
            ttl: None,
        });
        assert_eq!(near.weight(10), 1);
        assert_eq!(near.weight(100), 10);
        assert_eq!(near.weight(0), 1);
    }
}
