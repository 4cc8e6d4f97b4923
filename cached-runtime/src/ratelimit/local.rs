//! What a limiter keeps in process: the clients Redis refused, until their retry time (so
//! they are refused again without a round trip), and the fallback limiter's state, used
//! while Redis cannot answer.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Mutex, OnceLock, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::{Limit, gcra::LimitState};

const SHARDS: usize = 16;

type Shard<V> = HashMap<Box<str>, V>;

/// A bounded map from client keys to `V`, in shards under their own locks. When a shard is
/// full, entries that no longer matter (`live` says which) are dropped first, then the
/// whole shard: forgetting a client errs towards admitting it, as an idle one would be.
pub(crate) struct Shards<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    per_shard: usize,
    /// Entries in all shards, kept under each shard's lock: an empty map is seen without
    /// hashing the key or taking a lock.
    len: AtomicUsize,
}

impl<V> Shards<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            len: AtomicUsize::new(0),
        }
    }

    /// Whether no shard holds an entry (as of the last change any shard saw).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Runs `f` on `key`'s shard.
    pub(crate) fn with<R>(&self, key: &str, f: impl FnOnce(&mut Shard<V>) -> R) -> R {
        // The index only picks a shard: truncating the hash is fine.
        #[allow(clippy::cast_possible_truncation)]
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        let mut shard = self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = shard.len();
        let result = f(&mut shard);
        let after = shard.len();
        if after > before {
            self.len.fetch_add(after - before, Ordering::AcqRel);
        } else if after < before {
            self.len.fetch_sub(before - after, Ordering::AcqRel);
        }
        result
    }

    /// Inserts `value` for `key`, making room first when the shard is full.
    pub(crate) fn insert(&self, key: &str, value: V, live: impl Fn(&V) -> bool) {
        let per_shard = self.per_shard;
        self.with(key, |shard| {
            if shard.len() >= per_shard && !shard.contains_key(key) {
                shard.retain(|_, v| live(v));
                if shard.len() >= per_shard {
                    shard.clear();
                }
            }
            shard.insert(key.into(), value);
        });
    }
}

/// A client Redis refused: refused again in process until `until`, for a cost of at least
/// `cost` (a smaller one may fit sooner).
#[derive(Clone, Debug)]
pub(crate) struct Denial {
    pub(crate) until: Instant,
    pub(crate) cost: u64,
    /// Per limit: what it had left, when it is whole again, and when it admits `cost`
    /// (limits that refused).
    pub(crate) limits: Box<[(u64, Instant, Option<Instant>)]>,
}

impl Denial {
    /// From Redis's refusal of `cost`, measured from `sent` (no later than Redis's clock
    /// when it decided, so the client is never refused past the time Redis named).
    pub(crate) fn new(sent: Instant, cost: u64, states: &[LimitState]) -> Option<Self> {
        let retry = states.iter().filter_map(LimitState::retry_after).max()?;
        Some(Self {
            until: sent + retry,
            cost,
            limits: states
                .iter()
                .map(|s| {
                    (
                        s.remaining(),
                        sent + s.reset(),
                        s.retry_after().map(|r| sent + r),
                    )
                })
                .collect(),
        })
    }

    /// The states this refusal stands for at `now`.
    pub(crate) fn states(&self, now: Instant) -> Vec<LimitState> {
        self.limits
            .iter()
            .map(|&(remaining, reset, retry)| {
                LimitState::new(
                    if retry.is_some() { 0 } else { remaining },
                    reset.saturating_duration_since(now),
                    retry.map(|r| {
                        r.saturating_duration_since(now)
                            .max(Duration::from_micros(1))
                    }),
                )
            })
            .collect()
    }
}

/// Microseconds on this process's monotonic clock, from 1 (0 reads as "no state").
pub(crate) fn now_us(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX) + 1
}

/// The fallback limiter: the same GCRA over this process's requests alone, each limit divided
/// by the number of processes sharing it. Its limits are approximate (a restart or an evicted
/// client starts afresh) and per process.
pub(crate) struct Fallback {
    limits: Vec<Limit>,
    tats: Shards<Vec<u64>>,
}

impl Fallback {
    pub(crate) fn new(limits: &[Limit], share: u64, capacity: usize) -> Self {
        let share = share.max(1);
        let limits = limits
            .iter()
            .map(|l| {
                Limit::new((l.rate() / share).max(1), l.period()).burst(l.burst_size() / share)
            })
            .collect();
        Self {
            limits,
            tats: Shards::new(capacity),
        }
    }

    /// Decides `cost` for `key` at `now`.
    pub(crate) fn decide(&self, key: &str, cost: u64, now: Instant) -> (bool, Vec<LimitState>) {
        let now = now_us(now);
        let n = self.limits.len();
        let per_shard = self.tats.per_shard;
        self.tats.with(key, |shard| {
            if shard.len() >= per_shard && !shard.contains_key(key) {
                // Idle clients (every arrival time passed) are as good as absent.
                shard.retain(|_, tats| tats.iter().any(|&t| t > now));
                if shard.len() >= per_shard {
                    shard.clear();
                }
            }
            let tats = shard.entry(key.into()).or_insert_with(|| vec![0; n]);
            super::gcra::step(tats, now, cost, &self.limits)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_shard_drops_dead_entries_before_live_ones() {
        let shards: Shards<u32> = Shards::new(SHARDS);
        // One entry per shard: any second key landing in a shard makes room first.
        for i in 0..200u32 {
            shards.insert(&i.to_string(), i, |v| v % 2 == 0);
        }
        let total: usize = shards
            .shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum();
        assert!(total <= SHARDS, "{total} entries kept");
    }

    #[test]
    fn the_fallback_divides_each_limit_by_the_share() {
        let fallback = Fallback::new(&[Limit::per_minute(100).burst(9)], 4, 1000);
        let now = Instant::now();
        let allowed = (0..10).filter(|_| fallback.decide("k", 1, now).0).count();
        // 100 / 4 = 25 a minute, burst 9 / 4 = 2: three at once.
        assert_eq!(allowed, 3);
        assert!(fallback.decide("other", 1, now).0);
    }

    #[test]
    fn a_denial_never_outlasts_the_retry_time_redis_named() {
        let sent = Instant::now();
        let states = [
            LimitState::new(0, Duration::from_secs(5), Some(Duration::from_secs(2))),
            LimitState::new(3, Duration::from_secs(1), None),
        ];
        let denial = Denial::new(sent, 1, &states).expect("refused");
        assert_eq!(denial.until, sent + Duration::from_secs(2));
        let later = denial.states(sent + Duration::from_secs(1));
        assert_eq!(later[0].retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(later[1].retry_after(), None);
        assert_eq!(later[1].remaining(), 3);
        assert!(Denial::new(sent, 1, &states[1..]).is_none());
    }
}
