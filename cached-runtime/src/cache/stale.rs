//! Serving stale on purpose: a stale window after the TTL, fail-safe, stale-while-revalidate,
//! soft and hard timeouts for the body, early refresh.
//!
//! An entry of a policy with a stale window lives in Redis for its TTL plus the window.
//! Whether it is fresh is read from Redis alone, never from a clock of this machine compared
//! with another's: the `PTTL` that comes with the `GET`, minus the window. Above zero it is
//! fresh (and the near cache keeps it only for that remainder); at or below, it is stale but
//! still usable, until Redis expires it at the window's end.
//!
//! What a stale entry is used for, in [`Cache::read`](super::Cache::read):
//! - **stale-while-revalidate**: answered at once, and refreshed in the background
//!   (`cache/refresh.rs`), once per key at a time in this process and across processes (the
//!   fill lock);
//! - **soft timeout**: the body runs in the background; the caller waits for it at most the
//!   soft timeout, then gets the stale value while the body finishes and stores its result;
//! - **fail-safe**: the body runs as on a miss; when it errors or panics, the stale value is
//!   the answer, and the entry is left as it was; with a throttle, the key's next calls get
//!   the stale value without running the body for that long.
//!
//! An entry the read path rejects (one that does not decode, or that another rule of the read
//! path refuses) is absent, never stale.

use std::{
    any::Any,
    collections::{HashMap, HashSet},
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    cache::{
        Cache,
        fill::Landed,
        key::{Key, KeyTag},
        near::{Keep, NearCache},
        policy::Policy,
        read::View,
        refresh::{Detach, Why},
        shape::{Entry, Shape},
        stats::{Counters, StaleReason},
    },
    error::CacheError,
};

/// Background refreshes one cache runs at most at once, by default.
pub(crate) const DEFAULT_MAX_REFRESHES: usize = 64;

/// Keys throttled or deferred at once beyond this many trigger a sweep of the expired ones.
const SWEEP_AT: usize = 1024;

/// XFetch's `beta`: above 1 favours earlier refreshes.
const XFETCH_BETA: f64 = 1.0;

/// The most `-ln(u)` of a draw reaches (u is at least 2^-53): farther from expiry than this
/// many times `delta * beta`, XFetch cannot fire, and no draw is taken.
const XFETCH_REACH: f64 = 37.0;

/// One function's stale options; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stale {
    /// How long after its TTL an entry may be served stale, in seconds.
    pub(crate) window: u64,
    pub(crate) fail_safe: bool,
    /// After a fail-safe answer, how long the key's calls get the stale value without running
    /// the body; 0: no throttle.
    pub(crate) throttle_ms: u64,
    pub(crate) while_revalidate: bool,
    /// 0: none.
    pub(crate) soft_timeout_ms: u64,
    /// 0: none.
    pub(crate) hard_timeout_ms: u64,
    pub(crate) early: bool,
}

impl Stale {
    pub(crate) fn soft_timeout(&self) -> Option<Duration> {
        (self.soft_timeout_ms > 0).then(|| Duration::from_millis(self.soft_timeout_ms))
    }

    pub(crate) fn hard_timeout(&self) -> Option<Duration> {
        (self.hard_timeout_ms > 0).then(|| Duration::from_millis(self.hard_timeout_ms))
    }

    /// Whether a stale entry may be answered without running the body in the caller.
    pub(crate) fn background(&self) -> bool {
        self.while_revalidate || self.soft_timeout_ms > 0
    }
}

impl Policy {
    fn stale_mut(&mut self) -> &mut Stale {
        self.stale.get_or_insert_with(Stale::default)
    }

    /// Keeps entries in Redis for `window` after their TTL, so they can be served stale
    /// (whole seconds, at least one); what they are served for is set by
    /// [`fail_safe`](Self::fail_safe), [`stale_while_revalidate`](Self::stale_while_revalidate)
    /// and [`soft_timeout`](Self::soft_timeout). Without one of those, a stale entry is a
    /// miss, as without a window.
    pub fn stale_window(mut self, window: Duration) -> Result<Self, CacheError> {
        match window.as_secs() {
            0 => Err(CacheError::Config(
                "a stale window must be at least one second".to_owned(),
            )),
            s if window > crate::cache::builder::MAX_TTL => Err(CacheError::Config(format!(
                "a stale window of {s} s is over the ten-year limit"
            ))),
            s => {
                self.stale_mut().window = s;
                Ok(self)
            }
        }
    }

    /// When the body errors or panics, answers with the stale value (within the stale
    /// window) instead, and leaves the entry as it was.
    pub fn fail_safe(mut self, on: bool) -> Self {
        self.stale_mut().fail_safe = on;
        self
    }

    /// After a fail-safe answer, the key's calls in this process get the stale value without
    /// running the body for `throttle`, so a failing database is not called on every request.
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        let stale = self.stale_mut();
        stale.fail_safe = true;
        stale.throttle_ms = u64::try_from(throttle.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// After the TTL, answers with the stale value at once and refreshes the entry in the
    /// background, once per key at a time across processes. The body must be able to run in
    /// the background: [`Cache::get_or_refresh`](crate::Cache::get_or_refresh).
    pub fn stale_while_revalidate(mut self, on: bool) -> Self {
        self.stale_mut().while_revalidate = on;
        self
    }

    /// With a stale value, waits at most `timeout` for the body, then answers stale while the
    /// body finishes in the background and stores its result
    /// ([`Cache::get_or_refresh`](crate::Cache::get_or_refresh)).
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.stale_mut().soft_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// A body running in the background is abandoned (dropped, its lock released, nothing
    /// stored) after `timeout`.
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.stale_mut().hard_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Refreshes hot entries in the background shortly before their TTL ends, chosen at
    /// random with XFetch (the closer the expiry and the slower the last body, the likelier),
    /// so no caller waits and processes rarely refresh together
    /// ([`Cache::get_or_refresh`](crate::Cache::get_or_refresh)).
    pub fn early_refresh(mut self, on: bool) -> Self {
        self.stale_mut().early = on;
        self
    }

    /// For the macro's `stale…` options.
    pub(crate) const fn with_stale(mut self, stale: Stale) -> Self {
        self.stale = Some(stale);
        self
    }

    /// The window in seconds (0 without one): added to every TTL written.
    pub(crate) fn stale_window_secs(&self) -> u64 {
        self.stale.map_or(0, |s| s.window)
    }

    /// The options when a window makes them apply.
    pub(crate) fn stale_options(&self) -> Option<&Stale> {
        self.stale.as_ref().filter(|s| s.window > 0)
    }
}

/// How fresh an entry `GET` found is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Fresh, and chosen for an early refresh.
    Early,
    /// Past its TTL, within its window.
    Stale,
}

/// Judges an entry by the `PTTL` read with it, and narrows `landed` to its fresh remainder
/// (the near cache keeps it no longer).
pub(crate) fn judge(stale: &Stale, counters: &Counters, landed: &mut Option<Landed>) -> Freshness {
    let Some(landed) = landed else {
        return Freshness::Fresh;
    };
    // No expiry: written without one, always fresh.
    let Some(ttl) = landed.ttl else {
        return Freshness::Fresh;
    };
    let window = Duration::from_secs(stale.window);
    let Some(remaining) = ttl.checked_sub(window).filter(|r| !r.is_zero()) else {
        return Freshness::Stale;
    };
    landed.ttl = Some(remaining);
    if stale.early && xfetch(counters.last_fill(), remaining) {
        return Freshness::Early;
    }
    Freshness::Fresh
}

/// How long past its fresh TTL the near cache keeps a function's entry for stale service
/// while Redis cannot be reached: its window, when it is fail-safe.
pub(crate) fn near_window(policy: &Policy) -> Option<Duration> {
    policy
        .stale_options()
        .filter(|s| s.fail_safe)
        .map(|s| Duration::from_secs(s.window))
}

/// What the near cache keeps of a function's slots besides the value: the window of a
/// fail-safe function, and whether it refreshes early.
pub(crate) fn near_keep(policy: &Policy) -> Keep {
    Keep {
        window: near_window(policy),
        early: policy.stale_options().is_some_and(|s| s.early),
    }
}

/// Whether a near-cache hit on a slot whose fresh end is `expires` starts an early refresh
/// (with the time left), by the same XFetch rule as on a Redis hit, a draw taken only near
/// the end.
pub(crate) fn early_near(counters: &Counters, expires: Instant) -> Option<Duration> {
    let left = expires.saturating_duration_since(Instant::now());
    xfetch(counters.last_fill(), left).then_some(left)
}

/// Whether an entry found `now` from its fresh end under the refresh's lock was rewritten
/// since its early refresh was decided `left` from it: what is left only shrinks unless the
/// entry is written again, so past the midpoint between `left` and a full TTL it was (far
/// above the slack of either measurement).
pub(crate) fn rewritten(policy: &Policy, left: Duration, now: Duration) -> bool {
    let full = Duration::from_secs(policy.ttl);
    now > left && (now - left) * 2 > full.saturating_sub(left)
}

/// A fail-safe function's answer from the near cache's stale copy, for a call that could not
/// read Redis.
pub(crate) fn near_stale<S, R, V>(
    near: Option<&NearCache>,
    key: &Key,
    policy: &Policy,
    view: &V,
) -> Option<V::Out>
where
    S: Shape<R>,
    V: View<S, R>,
{
    near_window(policy)?;
    let near = near?;
    let slot = near.get_stale(key.as_str())?;
    // A tag invalidated since it was kept ends its stale service too.
    if !super::tags::near_current(near, key, &slot) {
        return None;
    }
    view.near(&slot.value)
}

/// How long ago a stale entry was written, in seconds, from its `PTTL` alone: its TTL plus
/// the window, less what is left. Known only without jitter (which the entry does not
/// record).
pub(crate) fn age(policy: &Policy, landed: Option<&Landed>) -> Option<u64> {
    let left = landed?.ttl?;
    if policy.jitter != 0 {
        return None;
    }
    let lived = Duration::from_secs(policy.ttl + policy.stale_window_secs());
    Some(lived.saturating_sub(left).as_secs())
}

/// What an HTTP response says about serving stale: `Cache-Control` directives for a function
/// that serves stale, `X-Cache: STALE` and `Age` for a response that was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StaleHttp {
    /// The window in seconds; 0: no directives.
    pub(crate) window: u64,
    pub(crate) while_revalidate: bool,
    pub(crate) if_error: bool,
    /// This response was stale.
    pub(crate) served: bool,
    pub(crate) age: Option<u64>,
}

impl StaleHttp {
    /// The directives of `policy`'s stale options.
    pub(crate) fn of(policy: &Policy) -> Self {
        match policy.stale_options() {
            Some(s) => Self {
                window: s.window,
                while_revalidate: s.while_revalidate,
                if_error: s.fail_safe,
                ..Self::default()
            },
            None => Self::default(),
        }
    }

    /// `stale-while-revalidate` and `stale-if-error` (RFC 5861), each with the window, after
    /// the `Cache-Control` directives in `out`.
    pub(crate) fn directives(&self, out: &mut String) {
        if self.window == 0 {
            return;
        }
        for (on, name) in [
            (self.while_revalidate, "stale-while-revalidate="),
            (self.if_error, "stale-if-error="),
        ] {
            if on {
                out.push_str(", ");
                out.push_str(name);
                out.push_str(&self.window.to_string());
            }
        }
    }
}

/// XFetch (Vattani et al., VLDB 2015): refresh now when `delta * beta * -ln(u)` reaches the
/// time left, `delta` being how long the body takes.
fn xfetch(delta: Duration, remaining: Duration) -> bool {
    if delta.is_zero() {
        return false;
    }
    let (scale, remaining) = (delta.as_secs_f64() * XFETCH_BETA, remaining.as_secs_f64());
    if scale * XFETCH_REACH < remaining {
        return false;
    }
    // In (0, 1]: ln is finite.
    let u = 1.0 - fastrand::f64();
    scale * -u.ln() >= remaining
}

/// What the read path does with a stale entry, when not the fill.
pub(crate) enum StaleStep<O> {
    /// Answer with it, for this reason.
    Stale(StaleReason),
    /// The body finished in time (a soft timeout): its answer.
    Filled(O),
}

impl Cache {
    /// What to do with a stale entry before a fill would run: answer with it (throttled
    /// after a fail-safe answer, or refreshing in the background), or the background body's
    /// answer that came within the soft timeout; `None`: fill as on a miss.
    pub(crate) async fn stale_step<S, R, V>(
        &self,
        key: &Key,
        policy: &Policy,
        view: &V,
        options: &Stale,
        detach: Option<&(dyn Detach<R> + Sync)>,
    ) -> Option<StaleStep<V::Out>>
    where
        S: Shape<R>,
        V: View<S, R>,
    {
        if options.fail_safe && self.inner.stale.throttled(key) {
            return Some(StaleStep::Stale(StaleReason::Throttle));
        }
        if !options.background() {
            return None;
        }
        // A body that cannot leave the caller is run by it, as on a miss.
        let detach = detach?;
        let rx = detach.detach(self, key, policy, V::VALIDATED, Why::Stale);
        if options.while_revalidate {
            return Some(StaleStep::Stale(StaleReason::Revalidate));
        }
        // Already refreshing here or elsewhere (no receiver, or the refresh found the lock
        // taken and dropped its sender): the stale answer now.
        let (Some(soft), Some(rx)) = (options.soft_timeout(), rx) else {
            return Some(StaleStep::Stale(StaleReason::SoftTimeout));
        };
        match tokio::time::timeout(soft, rx).await {
            Ok(Ok((result, entry))) => {
                if options.fail_safe && matches!(S::entry(&result), Entry::Skip) {
                    self.inner.stale.throttle(key, options);
                    return Some(StaleStep::Stale(StaleReason::FailSafe));
                }
                Some(StaleStep::Filled(view.filled(result, entry, false).0))
            }
            _ => Some(StaleStep::Stale(StaleReason::SoftTimeout)),
        }
    }

    /// The stale answer instead of a body's error or panic: counted, logged, and the key
    /// throttled when the policy says so.
    pub(crate) fn fail_safe<O>(
        &self,
        key: &Key,
        counters: &Counters,
        options: &Stale,
        stale: O,
        panic: Option<&(dyn Any + Send)>,
    ) -> O {
        counters.stale_served(StaleReason::FailSafe);
        self.inner.stale.throttle(key, options);
        match panic {
            Some(panic) => tracing::warn!(
                key = %KeyTag(key),
                panic = panic_message(panic),
                "the body panicked; answering with the stale value (fail-safe)"
            ),
            None => {
                tracing::debug!(key = %KeyTag(key), "the body failed; answering with the stale value (fail-safe)")
            }
        }
        stale
    }
}

/// A cache's state for stale entries: keys throttled after a fail-safe answer, keys being
/// refreshed in the background, and the bound on refreshes.
pub(crate) struct StaleState {
    throttled: Mutex<HashMap<Box<str>, Instant>>,
    /// Keys another process was found refreshing: no attempt here until then.
    deferred: Mutex<HashMap<Box<str>, Instant>>,
    refreshing: Arc<Mutex<HashSet<Box<str>>>>,
    permits: Arc<Semaphore>,
}

impl StaleState {
    pub(crate) fn new(max_refreshes: usize) -> Self {
        Self {
            throttled: Mutex::default(),
            deferred: Mutex::default(),
            refreshing: Arc::default(),
            permits: Arc::new(Semaphore::new(max_refreshes)),
        }
    }

    /// Whether the key's calls are to be answered stale without running the body now.
    pub(crate) fn throttled(&self, key: &Key) -> bool {
        active(&self.throttled, key)
    }

    /// After a fail-safe answer: throttles the key for `stale.throttle_ms`.
    pub(crate) fn throttle(&self, key: &Key, stale: &Stale) {
        if stale.throttle_ms > 0 {
            until(
                &self.throttled,
                key,
                Duration::from_millis(stale.throttle_ms),
            );
        }
    }

    /// Whether another process was found refreshing the key a moment ago.
    pub(crate) fn deferred(&self, key: &Key) -> bool {
        active(&self.deferred, key)
    }

    /// Another process holds the key's fill lock: leave the refresh to it for a while.
    pub(crate) fn defer(&self, key: &Key) {
        until(&self.deferred, key, crate::cache::refresh::DEFER);
    }

    /// A body stored a result: the key is no longer throttled.
    pub(crate) fn recovered(&self, key: &str) {
        let mut map = self
            .throttled
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !map.is_empty() {
            map.remove(key);
        }
    }

    /// Claims the key's one background refresh in this process, and a slot under the bound;
    /// `None` when it is being refreshed already or the bound is reached.
    pub(crate) fn claim(&self, key: &Key) -> Option<Claim> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        let mut set = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !set.insert(key.as_str().into()) {
            return None;
        }
        Some(Claim {
            refreshing: Arc::clone(&self.refreshing),
            key: key.as_str().into(),
            _permit: permit,
        })
    }

    /// Background refreshes running now.
    pub(crate) fn running(&self) -> usize {
        self.refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Whether `key` is in `map` with a time still ahead; an expired one is removed.
fn active(map: &Mutex<HashMap<Box<str>, Instant>>, key: &Key) -> bool {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if map.is_empty() {
        return false;
    }
    match map.get(key.as_str()) {
        Some(until) if *until > Instant::now() => true,
        Some(_) => {
            map.remove(key.as_str());
            false
        }
        None => false,
    }
}

/// Puts `key` in `map` until `for_` from now, sweeping expired keys when it is large.
fn until(map: &Mutex<HashMap<Box<str>, Instant>>, key: &Key, for_: Duration) {
    let now = Instant::now();
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= SWEEP_AT {
        map.retain(|_, until| *until > now);
    }
    map.insert(key.as_str().into(), now + for_);
}

/// A key's background refresh in this process, and its slot: released when dropped (the
/// refresh finished, failed, panicked or was dropped unpolled).
pub(crate) struct Claim {
    refreshing: Arc<Mutex<HashSet<Box<str>>>>,
    key: Box<str>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// A future whose panic is returned instead of unwinding (boxed: only stale paths pay).
pub(crate) struct Caught<F>(Pin<Box<F>>);

impl<F: Future> Caught<F> {
    pub(crate) fn new(future: F) -> Self {
        Self(Box::pin(future))
    }
}

impl<F: Future> Future for Caught<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A panic's message, for the log.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(ttl: Duration) -> Option<Landed> {
        Some(Landed {
            since: Instant::now(),
            ttl: Some(ttl),
            bytes: 1,
            tags: None,
        })
    }

    #[test]
    fn freshness_is_the_pttl_minus_the_window() {
        let stale = Stale {
            window: 10,
            ..Stale::default()
        };
        let counters = Counters::new(metrics::SharedString::const_str("test"), "p");
        let mut fresh = landed(Duration::from_secs(15));
        assert_eq!(judge(&stale, &counters, &mut fresh), Freshness::Fresh);
        assert_eq!(fresh.and_then(|l| l.ttl), Some(Duration::from_secs(5)));
        let mut old = landed(Duration::from_secs(10));
        assert_eq!(judge(&stale, &counters, &mut old), Freshness::Stale);
        let mut older = landed(Duration::from_secs(3));
        assert_eq!(judge(&stale, &counters, &mut older), Freshness::Stale);
    }

    #[test]
    fn xfetch_fires_near_expiry_for_a_slow_body_and_never_without_one() {
        assert!(!xfetch(Duration::ZERO, Duration::from_millis(1)));
        // With a body as slow as an hour, 10 ms before expiry is practically certain.
        assert!((0..100).any(|_| xfetch(Duration::from_secs(3600), Duration::from_millis(10))));
        // A 1 ms body, an hour before expiry: -ln(u) would have to reach 3.6e6.
        assert!(!(0..1000).any(|_| xfetch(Duration::from_millis(1), Duration::from_secs(3600))));
    }

    #[test]
    fn an_early_refresh_is_skipped_only_for_an_entry_written_again() {
        let policy = Policy::new("p", Duration::from_secs(60)).expect("a policy");
        let ms = Duration::from_millis;
        // Time passed, or the first read was measured a little short: not written again.
        assert!(!rewritten(&policy, ms(500), ms(400)));
        assert!(!rewritten(&policy, ms(500), ms(510)));
        // A full TTL again.
        assert!(rewritten(&policy, ms(500), Duration::from_secs(60)));
        assert!(rewritten(&policy, ms(500), Duration::from_secs(45)));
    }

    #[test]
    fn a_claim_is_one_per_key_and_released_on_drop() {
        let state = StaleState::new(1);
        let key = crate::cache::key::KeyBuilder::new("", "k")
            .build()
            .expect("a key");
        let other = crate::cache::key::KeyBuilder::new("", "other")
            .build()
            .expect("a key");
        let claim = state.claim(&key).expect("the first claim");
        assert!(state.claim(&key).is_none(), "one refresh per key");
        assert!(state.claim(&other).is_none(), "bounded");
        drop(claim);
        assert_eq!(state.running(), 0);
        assert!(state.claim(&key).is_some());
    }

    #[tokio::test]
    async fn a_panic_is_caught_and_its_message_kept() {
        let caught = Caught::new(async { panic!("boom") }).await;
        let panic: Box<dyn Any + Send> = match caught {
            Ok(()) => unreachable!("it panics"),
            Err(p) => p,
        };
        assert_eq!(panic_message(&*panic), "boom");
    }
}
