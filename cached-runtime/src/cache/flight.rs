//! In-process single-flight: concurrent misses of one key run the body once, whether or not
//! Redis answers.
//!
//! The first caller to miss leads: it holds a [`LeaderGuard`] and publishes the encoded
//! result to the callers that joined meanwhile, who decode it instead of running the body. A
//! leader dropped before publishing (cancelled, panicked, or with nothing to share, like an
//! `Err`) abandons the flight: its followers wake, and the first to rejoin leads the next
//! attempt while the others follow it, so they never all run the body at once.
//!
//! A finished fill stays in the map for a short while as `Done`: a caller whose `GET` missed
//! just before that fill stored its value finds it there instead of filling the key again. The
//! check is per key (a sequence number read before the `GET`), so a miss costs one `GET`
//! however many other keys are being filled.
//!
//! The map is locked only to join or leave, never across an `await`. A fill that nobody
//! joins costs one allocation (its flight) and three hashes of its key; the channel to
//! followers is made by the first follower.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// An entry's stored form, shared with followers.
pub(crate) type Published = Arc<[u8]>;

/// Entries kept beyond this many trigger a sweep of expired `Done` entries.
const SWEEP_AT_LEAST: usize = 256;

/// Larger results are not kept as `Done` (a late caller fills again instead), so the map
/// holds a few MiB at most between sweeps.
const DONE_MAX_BYTES: usize = 16 * 1024;

pub(crate) struct Flights {
    map: Mutex<Map>,
    /// Fills finished so far; read before a `GET`.
    finished: AtomicU64,
    /// How long a `Done` entry can answer callers whose `GET` started before it finished.
    keep: Duration,
    waiting: AtomicI64,
}

struct Map {
    /// foldhash, as the near cache's store: SipHash was a tenth of a miss's own instructions.
    entries: HashMap<Box<str>, Entry, foldhash::fast::RandomState>,
    sweep_at: usize,
}

enum Entry {
    Running(Arc<Flight>),
    Done {
        seq: u64,
        at: Instant,
        published: Published,
    },
}

pub(crate) struct Flight {
    /// Made by the first follower, under the map lock; the leader reads it after taking the
    /// lock to leave, so it sees every follower that joined.
    state: OnceLock<watch::Sender<State>>,
    /// Set by an invalidation of the key: the leader must not store what it computed.
    invalidated: AtomicBool,
}

#[derive(Clone)]
pub(crate) enum State {
    Running,
    Published(Published),
    Abandoned,
}

pub(crate) enum Join<'a> {
    Leader(LeaderGuard<'a>),
    Follower(watch::Receiver<State>),
    /// A fill of this key finished after the caller's `GET` started.
    Recent(Published),
}

/// What a follower's wait ended with.
pub(crate) enum Waited {
    Published(Published),
    /// The leader stored nothing shareable or was dropped: join again.
    Abandoned,
    TimedOut,
}

pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: &'a str,
    flight: Arc<Flight>,
    published: bool,
}

/// Counts a follower as waiting for as long as it waits, cancelled or not.
struct Waiting<'a>(&'a AtomicI64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Flights {
    pub(crate) fn new(keep: Duration) -> Self {
        Self {
            map: Mutex::new(Map {
                entries: HashMap::default(),
                sweep_at: SWEEP_AT_LEAST,
            }),
            finished: AtomicU64::new(0),
            keep,
            waiting: AtomicI64::new(0),
        }
    }

    /// Read before the `GET`; pass to [`Flights::join`].
    #[inline]
    pub(crate) fn seq(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// Callers waiting for another caller's fill right now.
    pub(crate) fn waiting(&self) -> u64 {
        u64::try_from(self.waiting.load(Ordering::Relaxed)).unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn join<'a>(&'a self, key: &'a str, seq: u64) -> Join<'a> {
        let mut map = self.lock();
        match map.entries.get(key) {
            Some(Entry::Running(flight)) => {
                let state = flight
                    .state
                    .get_or_init(|| watch::Sender::new(State::Running));
                return Join::Follower(state.subscribe());
            }
            Some(Entry::Done {
                seq: done,
                published,
                ..
            }) if *done > seq => return Join::Recent(Arc::clone(published)),
            _ => {}
        }
        if map.entries.len() >= map.sweep_at {
            let keep = self.keep;
            map.entries
                .retain(|_, e| !matches!(e, Entry::Done { at, .. } if at.elapsed() > keep));
            map.sweep_at = (map.entries.len() * 2).max(SWEEP_AT_LEAST);
        }
        let flight = Arc::new(Flight {
            state: OnceLock::new(),
            invalidated: AtomicBool::new(false),
        });
        map.entries
            .insert(key.into(), Entry::Running(Arc::clone(&flight)));
        Join::Leader(LeaderGuard {
            flights: self,
            key,
            flight,
            published: false,
        })
    }

    /// Waits for the leader, at most `limit`.
    pub(crate) async fn wait(&self, mut rx: watch::Receiver<State>, limit: Duration) -> Waited {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let settled =
            tokio::time::timeout(limit, rx.wait_for(|s| !matches!(s, State::Running))).await;
        match settled {
            Err(_) => Waited::TimedOut,
            // The sender is gone without a verdict: the same as abandoned.
            Ok(Err(_)) => Waited::Abandoned,
            Ok(Ok(state)) => match &*state {
                State::Published(p) => Waited::Published(Arc::clone(p)),
                _ => Waited::Abandoned,
            },
        }
    }

    /// Stops in-flight fills of `key` from storing, and forgets its finished fill, so no
    /// caller after an invalidation gets a value computed before it.
    pub(crate) fn invalidate(&self, key: &str) {
        let removed = self.lock().entries.remove(key);
        if let Some(Entry::Running(flight)) = removed {
            flight.invalidated.store(true, Ordering::Release);
        }
    }

    /// [`Flights::invalidate`] for every key `matches` accepts.
    pub(crate) fn invalidate_where(&self, matches: impl Fn(&str) -> bool) {
        self.lock().entries.retain(|key, entry| {
            if !matches(key) {
                return true;
            }
            if let Entry::Running(flight) = entry {
                flight.invalidated.store(true, Ordering::Release);
            }
            false
        });
    }
}

impl LeaderGuard<'_> {
    /// Whether the key was invalidated since this fill started.
    pub(crate) fn invalidated(&self) -> bool {
        self.flight.invalidated.load(Ordering::Acquire)
    }

    /// Hands the result to the followers and to callers that missed just before now.
    pub(crate) fn publish(mut self, published: Published) {
        self.published = true;
        let seq = self.flights.finished.fetch_add(1, Ordering::AcqRel) + 1;
        let mut map = self.flights.lock();
        let keep = !self.invalidated() && published.len() <= DONE_MAX_BYTES;
        match map.entries.get_mut(self.key) {
            Some(entry) if self.owns(entry) => {
                if keep {
                    *entry = Entry::Done {
                        seq,
                        at: Instant::now(),
                        published: Arc::clone(&published),
                    };
                } else {
                    map.entries.remove(self.key);
                }
            }
            _ => {}
        }
        drop(map);
        if let Some(state) = self.flight.state.get() {
            state.send_replace(State::Published(published));
        }
    }

    fn owns(&self, entry: &Entry) -> bool {
        matches!(entry, Entry::Running(f) if Arc::ptr_eq(f, &self.flight))
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let mut map = self.flights.lock();
        if map.entries.get(self.key).is_some_and(|e| self.owns(e)) {
            map.entries.remove(self.key);
        }
        drop(map);
        if let Some(state) = self.flight.state.get() {
            state.send_replace(State::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Published {
        Arc::from(s.as_bytes())
    }

    #[tokio::test]
    async fn followers_get_the_published_result() {
        let flights = Flights::new(Duration::from_secs(1));
        let Join::Leader(leader) = flights.join("k", flights.seq()) else {
            panic!("first caller leads")
        };
        let Join::Follower(rx) = flights.join("k", flights.seq()) else {
            panic!("second caller follows")
        };
        leader.publish(bytes("v"));
        match flights.wait(rx, Duration::from_secs(60)).await {
            Waited::Published(p) => assert_eq!(&*p, b"v"),
            _ => panic!("expected the published value"),
        }
        assert_eq!(flights.waiting(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_over_to_one_follower() {
        let flights = Flights::new(Duration::from_secs(1));
        let seq = flights.seq();
        let Join::Leader(leader) = flights.join("k", seq) else {
            panic!("first caller leads")
        };
        let followers: Vec<_> = (0..3)
            .map(|_| match flights.join("k", seq) {
                Join::Follower(rx) => rx,
                _ => panic!("later callers follow"),
            })
            .collect();
        drop(leader);
        let mut leaders = Vec::new();
        let mut still_following = 0;
        for rx in followers {
            assert!(matches!(
                flights.wait(rx, Duration::from_secs(60)).await,
                Waited::Abandoned
            ));
            match flights.join("k", seq) {
                Join::Leader(l) => leaders.push(l),
                Join::Follower(_) => still_following += 1,
                Join::Recent(_) => panic!("nothing was published"),
            }
        }
        assert_eq!(leaders.len(), 1, "exactly one follower takes over");
        assert_eq!(still_following, 2);
    }

    #[test]
    fn a_late_miss_finds_the_finished_fill_of_its_key_only() {
        let flights = Flights::new(Duration::from_secs(60));
        let before = flights.seq();
        let Join::Leader(a) = flights.join("a", before) else {
            panic!("leads")
        };
        a.publish(bytes("va"));
        assert!(matches!(flights.join("a", before), Join::Recent(p) if &*p == b"va"));
        // Another key's finished fill does not make `b` re-read anything.
        assert!(matches!(flights.join("b", before), Join::Leader(_)));
        // A caller whose GET started after the fill finished leads a new one.
        assert!(matches!(flights.join("a", flights.seq()), Join::Leader(_)));
    }

    #[test]
    fn an_invalidated_fill_is_not_served_to_later_callers() {
        let flights = Flights::new(Duration::from_secs(60));
        let before = flights.seq();
        let Join::Leader(leader) = flights.join("k", before) else {
            panic!("leads")
        };
        flights.invalidate("k");
        assert!(leader.invalidated());
        // A caller after the invalidation starts its own fill instead of following.
        let Join::Leader(next) = flights.join("k", before) else {
            panic!("a new fill after the invalidation")
        };
        leader.publish(bytes("old"));
        assert!(!next.invalidated());
        drop(next);
        assert!(matches!(flights.join("k", before), Join::Leader(_)));
    }
}
