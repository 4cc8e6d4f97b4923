//! Background refreshes: a body moved off the caller (stale-while-revalidate, a soft
//! timeout, an early refresh) runs on the cache's runtime, stores its result and may hand it
//! back to a caller still waiting.
//!
//! One per key at a time: in this process by a [`Claim`], across processes by the fill lock,
//! taken without waiting (another process holding it is refreshing the key already), then
//! the key re-read under it: a stale entry another process has refreshed meanwhile, or an
//! early one written again since it was chosen, is left alone. Bounded by the cache's limit
//! on concurrent refreshes (past it, callers keep the stale value and no refresh starts) and
//! by the policy's hard timeout (else the lock's TTL: the policy's `lock`, or 30 s), after
//! which the body is dropped, so a refresh never outlives its lock. Every
//! piece of state a refresh takes is a guard: dropped at any `.await` (its runtime shutting
//! down, the hard timeout, the cache dropped), it releases the claim, the slot, the
//! single-flight and the lock. A panicking body is caught, counted and logged.
//!
//! Refreshes never outlive the cache: a refresh holds a background handle (the cache's
//! state, not one of its users' handles), and the last user handle dropped stops every
//! refresh still running ([`Handles`]), which drops its body and its guards.

use std::{
    future::Future,
    marker::PhantomData,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::{oneshot, watch};
use tracing::Span;

use crate::cache::{
    Cache, Lookup,
    fill::{EntrySlot, Fill, Landed, LockGuard, Source},
    flight::{Join, Published},
    key::{Key, KeyTag},
    policy::Policy,
    shape::{Entry, Shape},
    stale::{self, Caught, Claim, panic_message},
};

/// How long a process leaves a key alone after finding another one refreshing it.
pub(crate) const DEFER: Duration = Duration::from_secs(1);

/// The fill lock of a refresh without a lock or hard timeout of its own.
const REFRESH_LOCK: Duration = Duration::from_secs(30);

/// A body's result and the entry it was stored as (for a validated view).
pub(crate) type Reply<R> = (R, Option<Published>);

/// Why a refresh was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// A stale entry (stale-while-revalidate, or a soft timeout).
    Stale,
    /// A fresh entry chosen by XFetch, `left` from its fresh end when it was read.
    Early { left: Duration },
}

/// Shared by a cache's user handles: dropped with the last of them, it stops the cache's
/// background refreshes.
pub(crate) struct Handles {
    /// Never sent on: its receivers learn that it was dropped.
    stop: watch::Sender<()>,
}

impl Handles {
    pub(crate) fn new() -> Self {
        Self {
            stop: watch::Sender::new(()),
        }
    }

    /// Resolves once the last user handle is dropped.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            // Nothing is ever sent: this returns when the sender is dropped.
            while rx.changed().await.is_ok() {}
        }
    }
}

/// A body that the read path may move to the background, type-erased so the read path needs
/// no `Send + 'static` bounds.
pub(crate) trait Detach<R> {
    /// Starts the key's background refresh with the body; its result comes back on the
    /// receiver. `None` when none started (refreshing already, the bound reached, no runtime,
    /// the body taken).
    fn detach(
        &self,
        cache: &Cache,
        key: &Key,
        policy: &Policy,
        validated: bool,
        why: Why,
    ) -> Option<oneshot::Receiver<Reply<R>>>;
}

/// Holds a call's body until it either runs in the caller ([`Handoff::inline`]) or is moved
/// to the background.
pub(crate) struct Handoff<S, F> {
    body: Mutex<Option<F>>,
    _shape: PhantomData<fn() -> S>,
}

impl<S, F> Handoff<S, F> {
    pub(crate) fn new(body: F) -> Self {
        Self {
            body: Mutex::new(Some(body)),
            _shape: PhantomData,
        }
    }

    fn take(&self) -> Option<F> {
        self.body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The body, run by the caller.
    pub(crate) async fn inline<R>(&self) -> R
    where
        F: Future<Output = R>,
    {
        let body = self
            .take()
            .expect("the read path runs a body in the caller only when it did not detach it");
        body.await
    }
}

impl<S, R, F> Detach<R> for Handoff<S, F>
where
    S: Shape<R> + 'static,
    R: Send + 'static,
    F: Future<Output = R> + Send + 'static,
{
    fn detach(
        &self,
        cache: &Cache,
        key: &Key,
        policy: &Policy,
        validated: bool,
        why: Why,
    ) -> Option<oneshot::Receiver<Reply<R>>> {
        let inner = &*cache.inner;
        let spawner = inner.spawner.as_ref()?;
        // Only a user handle starts one: it ends when the last of them is dropped.
        let stopped = cache.handles()?.stopped();
        if inner.stale.deferred(key) {
            return None;
        }
        let claim = inner.stale.claim(key)?;
        let body = self.take()?;
        let (tx, rx) = oneshot::channel();
        let task = refresh::<S, R, F>(
            Task {
                cache: Cache::background(Arc::clone(&cache.inner)),
                key: key.clone(),
                policy: policy.clone(),
                validated,
                why,
            },
            body,
            tx,
            claim,
        );
        spawner.spawn(async move {
            tokio::select! {
                biased;
                () = stopped => {
                    tracing::debug!("background refresh stopped: its cache was dropped");
                }
                () = task => {}
            }
        });
        Some(rx)
    }
}

/// How long the refresh's fill lock lives: the hard timeout, else the policy's lock, else
/// [`REFRESH_LOCK`].
fn lock_ms(policy: &Policy) -> u64 {
    let hard = policy.stale.and_then(|s| s.hard_timeout());
    hard.map(|h| u64::try_from(h.as_millis()).unwrap_or(u64::MAX))
        .or(policy.lock_ms)
        .unwrap_or(REFRESH_LOCK.as_millis() as u64)
        .max(1)
}

/// What a refresh refreshes.
struct Task {
    cache: Cache,
    key: Key,
    policy: Policy,
    validated: bool,
    why: Why,
}

async fn refresh<S, R, F>(task: Task, body: F, reply: oneshot::Sender<Reply<R>>, _claim: Claim)
where
    S: Shape<R>,
    F: Future<Output = R>,
{
    let Task {
        cache,
        key,
        policy,
        validated,
        why,
    } = task;
    let counters = cache.counters(&policy);
    let stale = &cache.inner.stale;
    // Across processes: another one holding the lock is refreshing (or filling) the key.
    let Some(lock) = LockGuard::try_take(&cache, &key, lock_ms(&policy)).await else {
        tracing::trace!(key = %KeyTag(&key), "the key is being refreshed elsewhere");
        stale.defer(&key);
        return;
    };
    // Another process may have refreshed it between our read and our lock.
    let span = Span::none();
    let found = cache
        .lookup::<S, R>(&key, &policy, &counters, &span, false)
        .await;
    let done = match (why, found) {
        (Why::Stale, found) => !matches!(found, Lookup::Miss { .. }),
        (
            Why::Early { left },
            Lookup::Hit {
                landed: Some(Landed { ttl: Some(now), .. }),
                ..
            },
        ) => stale::rewritten(&policy, left, now),
        (Why::Early { .. }, _) => false,
    };
    if done {
        lock.release(&counters).await;
        return;
    }
    // In this process: a caller filling the key inline stores it already.
    let guard = match cache.inner.flights.join(key.as_str(), u64::MAX) {
        Join::Leader(guard) => guard,
        Join::Follower(_) | Join::Recent(_) => {
            lock.release(&counters).await;
            return;
        }
    };
    counters.refreshes(1);
    if matches!(why, Why::Early { .. }) {
        counters.early_refreshes(1);
    }
    let entry = EntrySlot::new();
    let span = Span::none();
    let fill = Fill {
        cache: &cache,
        key: &key,
        policy: &policy,
        counters: &counters,
        span: &span,
        entry: validated.then_some(&entry),
        landing: None,
    };
    let run = Caught::new(fill.compute::<S, R, F>(Source::Refresh, Some(guard), body));
    // Never past the lock: another process may take it then, and refresh alongside.
    let limit = Duration::from_millis(lock_ms(&policy));
    let done = tokio::time::timeout(limit, run).await.ok();
    match done {
        None => {
            counters.refresh_failures(1);
            throttle(&cache, &key, &policy);
            tracing::debug!(key = %KeyTag(&key), "background refresh abandoned after its hard timeout (or its lock's ttl)");
        }
        Some(Err(panic)) => {
            counters.refresh_failures(1);
            throttle(&cache, &key, &policy);
            tracing::warn!(
                key = %KeyTag(&key),
                panic = panic_message(&*panic),
                "background refresh panicked; the entry is left as it was"
            );
        }
        Some(Ok(result)) => {
            if matches!(S::entry(&result), Entry::Skip) {
                counters.refresh_failures(1);
                throttle(&cache, &key, &policy);
            } else {
                counters.refreshed(1);
                // The near cache's copy of the old value would start another early refresh
                // until Redis's invalidation of it arrives.
                if let (Why::Early { .. }, Some(near)) = (why, &cache.inner.near) {
                    near.evict(key.as_str());
                }
            }
            // The caller may have stopped waiting (soft timeout): then it is just dropped.
            let _ = reply.send((result, entry.into_inner()));
        }
    }
    lock.release(&counters).await;
}

/// A failed refresh throttles the key like a fail-safe answer: a failing database is not
/// called again on every request.
fn throttle(cache: &Cache, key: &Key, policy: &Policy) {
    if let Some(stale) = policy.stale_options().filter(|s| s.fail_safe) {
        cache.inner.stale.throttle(key, stale);
    }
}
