//! In-process single-flight: concurrent misses of one key run the body once.
//!
//! The first caller to miss becomes the leader and holds a guard; later callers get a
//! receiver that wakes when the guard drops, whether the leader finished, failed, panicked
//! or was cancelled. The map is locked only to join or leave, never across an `await`, and
//! callers of different keys never wait on each other.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use tokio::sync::watch;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<()>>>,
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
        self.flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}
