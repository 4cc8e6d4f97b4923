//! In-process single-flight: concurrent misses of one key run the body once.
//!
//! The first caller to miss becomes the leader and holds a guard; later callers get a
//! receiver that wakes when the guard drops, whether the leader finished, failed, panicked
//! or was cancelled. The map is locked only to join or leave, never across an `await`, and
//! callers of different keys never wait on each other.

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::watch;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<()>>>,
    // Fills finished so far: a caller whose miss is older than the last finished fill
    // re-reads the cache before leading, instead of filling the same key a second time.
    finished: AtomicU64,
}

pub(crate) enum Flight<'a> {
    Leader(LeaderGuard<'a>),
    Follower(watch::Receiver<()>),
}

pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: String,
    // Dropped after the entry leaves the map: every follower's `changed()` then returns.
    _done: watch::Sender<()>,
}

impl Flights {
    /// Read before the `GET`; compare with [`Flights::finished_since`] after joining.
    pub(crate) fn epoch(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// Whether any fill finished after `epoch` was read.
    pub(crate) fn finished_since(&self, epoch: u64) -> bool {
        self.finished.load(Ordering::Acquire) != epoch
    }

    pub(crate) fn join(&self, key: &str) -> Flight<'_> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(key) {
            return Flight::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        map.insert(key.to_owned(), rx);
        Flight::Leader(LeaderGuard {
            flights: self,
            key: key.to_owned(),
            _done: tx,
        })
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.flights.finished.fetch_add(1, Ordering::Release);
        map.remove(&self.key);
    }
}
