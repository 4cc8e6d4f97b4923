//! Background work runs on the runtime the cache was built on, not on whichever runtime made
//! the call that needed it (that one may be a short-lived runtime about to shut down).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::runtime::Handle;

use crate::error::CacheError;

#[derive(Clone, Debug)]
pub(crate) struct Spawner {
    captured: Handle,
    /// Set once a task spawned on `captured` was dropped unpolled: that runtime is gone, and
    /// later work goes to the calling runtime instead.
    dead: Arc<AtomicBool>,
}

/// Marks the captured runtime dead if the task is dropped before its first poll.
struct FirstPoll(Option<Arc<AtomicBool>>);

impl FirstPoll {
    fn started(&mut self) {
        self.0 = None;
    }
}

impl Drop for FirstPoll {
    fn drop(&mut self) {
        if let Some(dead) = self.0.take() {
            dead.store(true, Ordering::Release);
        }
    }
}

impl Spawner {
    /// Captures the current runtime; outside one, an error instead of a panic.
    pub(crate) fn capture() -> Result<Self, CacheError> {
        let captured = Handle::try_current().map_err(|_| {
            CacheError::Config(
                "a cache must be built within a Tokio runtime (call it from async code)".to_owned(),
            )
        })?;
        Ok(Self {
            captured,
            dead: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Spawns `task`. When no runtime is left to run it, it is dropped, which is why every
    /// task keeps its state in guards that clean up on drop.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if !self.dead.load(Ordering::Acquire) {
            let mut first = FirstPoll(Some(Arc::clone(&self.dead)));
            self.captured.spawn(async move {
                first.started();
                task.await;
            });
        } else if let Ok(current) = Handle::try_current() {
            current.spawn(task);
        }
    }
}
