//! A bound on the CPU-heavy computations of `GET /fib/{n}`: a few run at once on blocking
//! threads, a bounded number of requests wait for a turn, and the rest are refused with 503
//! instead of piling up threads. Concurrent requests for the same `n` are one computation
//! already (the cache's single-flight, Redis up or down); this bounds distinct ones.

use std::{
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Slots for computations, and the queue in front of them.
#[derive(Debug)]
pub struct ComputeLimit {
    slots: Arc<Semaphore>,
    size: u32,
    queued: AtomicUsize,
    max_queued: usize,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    running: AtomicUsize,
    computed: AtomicU64,
}

/// What `/stats` shows of the limit.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ComputeStats {
    /// Computations finished since start.
    pub computed: u64,
    /// Computations running now.
    pub running: usize,
    /// Requests waiting for a slot now.
    pub queued: usize,
    /// Computations allowed at once.
    pub limit: u32,
    /// Requests allowed to wait.
    pub queue_limit: usize,
}

/// A request's place in the queue, given back when it gets a slot or is dropped (the client
/// went away), so an abandoned request never holds a place.
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks a computation as running for as long as its closure runs, panics included.
struct Running(Arc<Counts>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every slot, held: no computation starts until it is dropped.
#[derive(Debug)]
pub struct Paused {
    _slots: OwnedSemaphorePermit,
}

impl ComputeLimit {
    /// At most `running` computations at once and `queued` requests waiting.
    pub(crate) fn new(running: NonZeroUsize, queued: usize) -> Self {
        // More slots than a semaphore holds would be no bound at all.
        let size = u32::try_from(running.get())
            .unwrap_or(u32::MAX)
            .min(1 << 20);
        Self {
            slots: Arc::new(Semaphore::new(size as usize)),
            size,
            queued: AtomicUsize::new(0),
            max_queued: queued,
            counts: Arc::default(),
        }
    }

    /// Runs `f` on a blocking thread once a slot is free; `ApiError::Busy` (503) at once
    /// when the queue is full. The slot is held until `f` returns, even if the request is
    /// dropped meanwhile, so the bound holds for the threads, not only for the requests.
    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let slot = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(ApiError::Busy(
                        "too many computations waiting; retry shortly".to_owned(),
                    ));
                }
                let place = Place(&self.queued);
                let slot = Arc::clone(&self.slots)
                    .acquire_owned()
                    .await
                    .map_err(|e| ApiError::internal("compute slots closed", &e))?;
                drop(place);
                slot
            }
        };
        let counts = Arc::clone(&self.counts);
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            counts.running.fetch_add(1, Ordering::AcqRel);
            let running = Running(counts);
            let result = f();
            running.0.computed.fetch_add(1, Ordering::AcqRel);
            result
        });
        task.await
            .map_err(|e| ApiError::internal("computation failed", &e))
    }

    /// Takes every slot: computations running finish, no new one starts (requests queue, and
    /// beyond the queue get 503) until the returned guard is dropped. For maintenance and
    /// for tests that need requests to wait.
    pub async fn pause(&self) -> Paused {
        let slots = Arc::clone(&self.slots)
            .acquire_many_owned(self.size)
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"));
        Paused { _slots: slots }
    }

    /// The counts `/stats` shows.
    pub fn stats(&self) -> ComputeStats {
        ComputeStats {
            computed: self.counts.computed.load(Ordering::Acquire),
            running: self.counts.running.load(Ordering::Acquire),
            queued: self.queued.load(Ordering::Acquire),
            limit: self.size,
            queue_limit: self.max_queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::pin, task::Poll};

    use super::*;

    fn limit(running: usize, queued: usize) -> ComputeLimit {
        ComputeLimit::new(NonZeroUsize::new(running).expect("nonzero"), queued)
    }

    /// Polls `f` once.
    async fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        let mut f = Some(f);
        std::future::poll_fn(move |cx| {
            let f = f.take().expect("polled once");
            Poll::Ready(f.poll(cx))
        })
        .await
    }

    #[tokio::test]
    async fn beyond_the_queue_requests_are_refused_and_a_dropped_request_leaves_its_place() {
        let l = limit(1, 1);
        let paused = l.pause().await;
        let mut first = pin!(l.run(|| 1));
        assert!(poll_once(first.as_mut()).await.is_pending());
        assert_eq!(l.stats().queued, 1);
        let refused = l.run(|| 2).await;
        assert!(matches!(refused, Err(ApiError::Busy(_))), "{refused:?}");
        assert_eq!(l.stats().queued, 1, "a refused request takes no place");
        drop(paused);
        assert_eq!(first.await.expect("runs once a slot frees"), 1);
        assert_eq!(l.stats().queued, 0);

        // Cancelled while queued: the place is given back.
        let paused = l.pause().await;
        {
            let mut dropped = pin!(l.run(|| 3));
            assert!(poll_once(dropped.as_mut()).await.is_pending());
            assert_eq!(l.stats().queued, 1);
        }
        assert_eq!(l.stats().queued, 0);
        drop(paused);
        assert_eq!(l.run(|| 4).await.expect("a free slot"), 4);
        assert_eq!(l.stats().computed, 2);
        assert_eq!(l.stats().running, 0);
    }
}
