//! The read path: every cached call goes through [`Cache::read`], a plain
//! [`get_or_fill`](Cache::get_or_fill) and a revalidating HTTP handler alike.
//!
//! bypass or pending invalidation → the near cache ([`Cache::near_for`] decides whether the
//! call uses it) → Redis: one `GET` (with `PTTL` in the same round trip when the near cache
//! will keep what it finds) → the call's [`View`] interprets the entry → on a miss, the fill
//! ([`Fill::run`]), whose result the view turns into the answer. An entry past its TTL within
//! its stale window (`stale.rs`) is answered stale, refreshed in the background, or held as
//! the fail-safe answer while the fill runs.
//!
//! A view is what differs between callers: a function's value decoded from JSON, or an HTTP
//! response served from the stored JSON as it is (no decode) with its validator. Outcomes,
//! counters, spans, the near cache's tickets and the fill are the same code for both.

use std::{any::Any, future::Future, sync::Arc, time::Instant};

use tracing::Span;

use super::{
    Cache,
    codec::{self, Decoded},
    fill::{EntrySlot, Fill, Landed, Landing, Source},
    flight::Published,
    key::{Key, KeyTag},
    mode::{self, Mode},
    policy::Policy,
    refresh::{Detach, Why},
    report,
    shape::{Entry, Shape},
    stale::{self, Caught, Freshness, StaleStep},
    stats::{Counters, Outcome, StaleReason},
    tags,
};
use crate::error::CacheError;

/// What a near-cache slot holds: the view's form of a value, or `None` for the null marker.
pub(crate) type Kept = Option<Arc<dyn Any + Send + Sync>>;

/// How one kind of call sees an entry.
pub(crate) trait View<S: Shape<R>, R> {
    /// What the call returns.
    type Out;
    /// Whether values are stored with a validator and the stored entry is handed back by the
    /// fill (an HTTP response serves it as it is).
    const VALIDATED: bool;

    /// The answer from a near-cache slot; `None` when it does not fit this view (another
    /// function's value under a clashing prefix): Redis is read instead.
    fn near(&self, kept: &Kept) -> Option<Self::Out>;

    /// The answer from a stored entry, whether it was the null marker, and what the near
    /// cache keeps of it when `keep`; `None` when the entry is unusable (counted here when it
    /// does not decode), which makes the call a miss that replaces it.
    fn stored(
        &self,
        bytes: Vec<u8>,
        call: &Call<'_>,
        keep: bool,
    ) -> Option<(Self::Out, bool, Option<Kept>)>;

    /// The answer for a result the fill produced (`entry`: its stored form, for a validated
    /// view), and what the near cache keeps of it when `keep`.
    fn filled(&self, result: R, entry: Option<Published>, keep: bool) -> (Self::Out, Option<Kept>);

    /// The answer for a result computed without the cache.
    fn uncached(&self, result: R) -> Self::Out;

    /// A stored answer given stale on purpose (`cache/stale.rs`), `age` seconds past its
    /// write when known: marked for a view that says so (an HTTP response).
    fn stale(&self, out: Self::Out, _age: Option<u64>) -> Self::Out {
        out
    }
}

/// What every step of a read needs to know about the call.
pub(crate) struct Call<'a> {
    pub(crate) key: &'a Key,
    pub(crate) policy: &'a Policy,
    pub(crate) counters: &'a Counters,
}

/// What one `GET` found.
pub(crate) enum Found {
    /// An entry, and what the near cache needs to keep it (when it asked).
    Entry {
        bytes: Vec<u8>,
        landed: Option<Landed>,
    },
    Missing,
    /// Counted and logged already.
    Failed,
}

/// A function's values, decoded from their JSON; kept decoded in the near cache.
pub(crate) struct Values;

/// [`Values`] for value types that cannot be cloned out of the near cache: never kept there.
pub(crate) struct RemoteValues;

/// Decodes an entry into the function's result (`None`: unusable, counted).
pub(crate) fn decode<S: Shape<R>, R>(bytes: &[u8], call: &Call<'_>) -> Option<(R, bool)> {
    match codec::decode::<S::Value>(bytes, call.policy.version) {
        Ok(Decoded::Value(v)) => S::from_hit(Some(v)).map(|r| (r, false)),
        // `None` from a shape that cannot be absent: replace the marker.
        Ok(Decoded::Null) => S::from_hit(None).map(|r| (r, true)),
        Err(e) => {
            call.counters.decode_failures(1);
            tracing::debug!(key = %KeyTag(call.key), error = %e, "unusable cache entry, treated as a miss");
            tracing::trace!(key = %call.key, "unusable cache entry");
            None
        }
    }
}

/// What the near cache keeps of a result: its value cloned, `None` for an absence, nothing
/// for an error.
fn keep_value<S, R>(result: &R) -> Option<Kept>
where
    S: Shape<R>,
    S::Value: Clone + Send + Sync + 'static,
{
    match S::entry(result) {
        Entry::Value(v) => Some(Some(Arc::new(v.clone()))),
        Entry::Absent => Some(None),
        Entry::Skip => None,
    }
}

impl<S, R> View<S, R> for Values
where
    S: Shape<R>,
    S::Value: Clone + Send + Sync + 'static,
{
    type Out = R;
    const VALIDATED: bool = false;

    #[inline]
    fn near(&self, kept: &Kept) -> Option<R> {
        match kept {
            Some(value) => S::from_hit(Some(value.downcast_ref::<S::Value>()?.clone())),
            None => S::from_hit(None),
        }
    }

    fn stored(
        &self,
        bytes: Vec<u8>,
        call: &Call<'_>,
        keep: bool,
    ) -> Option<(R, bool, Option<Kept>)> {
        let (result, null) = decode::<S, R>(&bytes, call)?;
        let kept = if keep {
            keep_value::<S, R>(&result)
        } else {
            None
        };
        Some((result, null, kept))
    }

    fn filled(&self, result: R, _entry: Option<Published>, keep: bool) -> (R, Option<Kept>) {
        let kept = if keep {
            keep_value::<S, R>(&result)
        } else {
            None
        };
        (result, kept)
    }

    fn uncached(&self, result: R) -> R {
        result
    }
}

impl<S: Shape<R>, R> View<S, R> for RemoteValues {
    type Out = R;
    const VALIDATED: bool = false;

    fn near(&self, _kept: &Kept) -> Option<R> {
        None
    }

    fn stored(
        &self,
        bytes: Vec<u8>,
        call: &Call<'_>,
        _keep: bool,
    ) -> Option<(R, bool, Option<Kept>)> {
        decode::<S, R>(&bytes, call).map(|(result, null)| (result, null, None))
    }

    fn filled(&self, result: R, _entry: Option<Published>, _keep: bool) -> (R, Option<Kept>) {
        (result, None)
    }

    fn uncached(&self, result: R) -> R {
        result
    }
}

/// How a read may use the near cache and Redis.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReadOptions {
    /// The view can keep values in the near cache.
    pub(crate) near: bool,
    /// Recompute and replace without reading first (`Cache-Control: no-cache` on a request).
    pub(crate) refresh: bool,
}

impl ReadOptions {
    /// A call's read: the near cache where the view allows, nothing forced.
    pub(crate) const NEAR: Self = Self {
        near: true,
        refresh: false,
    };
}

impl Cache {
    /// The one read path; see the module docs. `detach`: the body, when it can be moved to
    /// the background (stale-while-revalidate, soft timeouts, early refresh).
    #[allow(clippy::too_many_arguments)] // each is one part of the call; a struct would only rename them
    pub(crate) async fn read<S, R, F, V>(
        &self,
        key: &Key,
        policy: &Policy,
        view: &V,
        options: ReadOptions,
        body: F,
        detach: Option<&(dyn Detach<R> + Sync)>,
        span: &Span,
    ) -> V::Out
    where
        S: Shape<R>,
        F: Future<Output = R>,
        V: View<S, R>,
    {
        let inner = &*self.inner;
        let counters = self.counters(policy);
        let outcome = |o: Outcome| {
            counters.outcome(o);
            report::record_outcome(span, o);
        };
        let mode = mode::current();
        if mode == Mode::Bypass || inner.pending.covers(key.as_str()) || self.tag_pending(key) {
            outcome(Outcome::Bypass);
            return view.uncached(body.await);
        }
        let refresh = options.refresh || mode == Mode::Refresh;
        let near = if options.near && !refresh {
            self.near_for(key, policy)
        } else {
            None
        };
        if let Some(slot) = near.and_then(|n| {
            n.get(key.as_str())
                .filter(|slot| tags::near_current(n, key, slot))
        }) && let Some(out) = view.near(&slot.value)
        {
            outcome(if slot.value.is_some() {
                Outcome::NearHit
            } else {
                Outcome::NearNullHit
            });
            // Early refresh from the near cache: one comparison unless the function has it.
            if let (Some(expires), Some(detach)) = (slot.early_expiry(), detach)
                && let Some(left) = stale::early_near(&counters, expires)
            {
                let _ = detach.detach(self, key, policy, V::VALIDATED, Why::Early { left });
            }
            return out;
        }
        // Taken before Redis is read: an invalidation arriving meanwhile refuses the insert.
        let ticket = near.and_then(|n| n.ticket(key.as_str()));
        let keep = |kept: Kept, landed: Landed| {
            if let (Some(near), Some(ticket)) = (near, ticket) {
                tags::keep(near, key, ticket, kept, landed, stale::near_keep(policy));
            }
        };
        let call = Call {
            key,
            policy,
            counters: &counters,
        };
        let seq = inner.flights.seq();
        let stale_options = policy.stale_options();
        // A stale entry's answer, kept while the cache decides what to do with it.
        let mut stale = None;
        let mut stale_age = None;
        let source = if refresh {
            Source::Refresh
        } else {
            let with_ttl = ticket.is_some() || stale_options.is_some();
            match self.get(key, &counters, span, with_ttl).await {
                Found::Entry { bytes, mut landed } => {
                    match view.stored(bytes, &call, ticket.is_some()) {
                        Some((out, null, kept)) => {
                            // A null marker has no stale window.
                            let fresh = match stale_options {
                                Some(s) if !null => stale::judge(s, &counters, &mut landed),
                                _ => Freshness::Fresh,
                            };
                            if fresh == Freshness::Stale {
                                stale = Some(out);
                                stale_age = stale::age(policy, landed.as_ref());
                                Source::Miss { stale: false }
                            } else {
                                outcome(if null { Outcome::NullHit } else { Outcome::Hit });
                                // Narrowed to the fresh remainder by `judge`.
                                let left = landed.as_ref().and_then(|l| l.ttl).unwrap_or_default();
                                if let (Some(kept), Some(landed)) = (kept, landed) {
                                    keep(kept, landed);
                                }
                                if let (Freshness::Early, Some(detach)) = (fresh, detach) {
                                    let why = Why::Early { left };
                                    let _ = detach.detach(self, key, policy, V::VALIDATED, why);
                                }
                                return out;
                            }
                        }
                        None => Source::Miss { stale: true },
                    }
                }
                Found::Missing => Source::Miss { stale: false },
                Found::Failed => {
                    // Fail-safe: the near cache's copy, stale, rather than the body.
                    if let Some(out) = stale::near_stale::<S, R, V>(near, key, policy, view) {
                        counters.stale_served(StaleReason::Unreachable);
                        outcome(Outcome::Stale);
                        return view.stale(out, None);
                    }
                    Source::Failed
                }
            }
        };
        let mut stale = stale.zip(stale_options);
        if let Some(options) = stale_options.filter(|_| stale.is_some())
            && let Some(step) = self
                .stale_step::<S, R, V>(key, policy, view, options, detach)
                .await
        {
            let (answer, o) = match step {
                StaleStep::Stale(reason) => (
                    stale.take().map(|(out, _)| {
                        counters.stale_served(reason);
                        view.stale(out, stale_age)
                    }),
                    Outcome::Stale,
                ),
                StaleStep::Filled(out) => (Some(out), Outcome::Miss),
            };
            if let Some(answer) = answer {
                outcome(o);
                return answer;
            }
        }
        let entry = EntrySlot::new();
        let landing = Landing::new();
        let fill = Fill {
            cache: self,
            key,
            policy,
            counters: &counters,
            span,
            entry: V::VALIDATED.then_some(&entry),
            landing: ticket.is_some().then_some(&landing),
        };
        let run = fill.run::<S, R, F>(seq, source, body);
        let result = match stale {
            // Fail-safe: a failing or panicking body gets the stale answer instead.
            Some((stale, options)) if options.fail_safe => match Caught::new(run).await {
                Ok(result) if !matches!(S::entry(&result), Entry::Skip) => result,
                Ok(_) => {
                    let stale = view.stale(stale, stale_age);
                    return self.fail_safe(key, &counters, options, stale, None);
                }
                Err(panic) => {
                    let stale = view.stale(stale, stale_age);
                    return self.fail_safe(key, &counters, options, stale, Some(&*panic));
                }
            },
            _ => run.await,
        };
        let landed = landing.get().cloned();
        let (out, kept) = view.filled(result, entry.into_inner(), landed.is_some());
        if let (Some(kept), Some(landed)) = (kept, landed) {
            keep(kept, landed);
        }
        out
    }

    /// One `GET` (with `PTTL` in the same round trip when `with_ttl`: a near-cache copy must not
    /// outlive the entry), timed on the span; a failure is counted and logged here.
    pub(crate) async fn get(
        &self,
        key: &Key,
        counters: &Counters,
        span: &Span,
        with_ttl: bool,
    ) -> Found {
        if !key.tags.is_empty() {
            return self.get_tagged(key, counters, span, with_ttl).await;
        }
        let store = &self.inner.store;
        let timer = crate::telemetry::span_timer(span);
        // The clock is read only when the near cache will keep what is found.
        let since = with_ttl.then(Instant::now);
        let (got, ttl) = if with_ttl {
            match store.get_with_ttl(key.as_str()).await {
                Ok(Some((bytes, ttl))) => (Ok(Some(bytes)), ttl),
                Ok(None) => (Ok(None), None),
                Err(e) => (Err(e), None),
            }
        } else {
            (store.get(key.as_str()).await, None)
        };
        // Only where a command was sent: not skipped by the circuit, not without a connection.
        record_get_ms(span, timer, &got);
        match got {
            Ok(Some(bytes)) => Found::Entry {
                landed: since.map(|since| Landed {
                    since,
                    ttl,
                    bytes: bytes.len(),
                    tags: None,
                }),
                bytes,
            },
            Ok(None) => Found::Missing,
            Err(e) => {
                self.failed(counters, "GET", &e);
                Found::Failed
            }
        }
    }
}

/// Records a `GET` timed from `timer` on the call's span, where a command was sent: not
/// skipped by the circuit, not without a connection.
pub(crate) fn record_get_ms<T>(span: &Span, timer: Option<Instant>, got: &Result<T, CacheError>) {
    if let Some(started) = timer
        && !matches!(got, Err(CacheError::CircuitOpen | CacheError::Unavailable))
    {
        span.record("redis_ms", started.elapsed().as_secs_f64() * 1e3);
    }
}
