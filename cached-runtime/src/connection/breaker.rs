//! Circuit breakers in front of Redis: one per node the commands go to.
//!
//! It counts failure *events*, not failed commands: a connection that broke or stopped
//! answering is one event however many commands were in flight on it, and a failed connect
//! attempt is one. `threshold` events within `window` open the circuit: for `cooldown` no
//! command is sent and cached calls run their bodies at once. Then one command goes through as
//! a probe; its success closes the circuit, its failure opens it for another `cooldown`. The
//! probe's permit is a guard: a probe whose future is dropped hands the probe to the next
//! caller instead of leaving the circuit open forever.
//!
//! Every transition is reported to the cache's [`CacheMetrics`] (state gauge and transition
//! counter), which the store also times its commands with.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::telemetry::{CacheMetrics, Circuit};

/// The breakers of one connection: one for the one server (or Sentinel's primary), and the
/// same one for every node of a cluster until it has a breaker per node.
pub(crate) struct Breakers {
    whole: Breaker,
}

impl Breakers {
    pub(crate) fn new(threshold: u32, window: Duration, cooldown: Duration) -> Self {
        Self {
            whole: Breaker::new(threshold, window, cooldown),
        }
    }

    /// The breaker of the node that serves `slot` (`None`: no key, any node).
    #[inline]
    pub(crate) fn for_slot(&self, _slot: Option<u16>) -> &Breaker {
        &self.whole
    }

    /// A failure no command carried (a failed reconnect of the whole connection).
    pub(crate) fn connection_event(&self) -> bool {
        self.whole.event()
    }

    /// Reports transitions, and lends the connection its command timings, through `telemetry`.
    pub(crate) fn observe(&self, telemetry: Arc<CacheMetrics>) {
        self.whole.observe(telemetry);
    }

    /// Whether any circuit is open now, and how often circuits have opened.
    pub(crate) fn circuit(&self) -> (bool, u64) {
        (self.whole.is_open(), self.whole.times_opened())
    }
}

pub(crate) struct Breaker {
    threshold: usize,
    window_ms: u64,
    cooldown_ms: u64,
    /// When the last `threshold` events happened (ms since `epoch`); only failures touch it.
    events: Mutex<VecDeque<u64>>,
    /// Milliseconds since `epoch` until which the circuit is open; 0 while closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    opened: AtomicU64,
    epoch: Instant,
    /// Where transitions (and the store's command timings) are reported; set once the cache
    /// that owns this breaker is assembled.
    telemetry: OnceLock<Arc<CacheMetrics>>,
}

/// Leave to send one command, from [`Breaker::permit`].
#[derive(Debug)]
pub(crate) enum Permit<'a> {
    /// The circuit is closed.
    Go,
    /// The probe of a half-open circuit.
    Probe(ProbeGuard<'a>),
}

/// Held by the one probing caller; dropping it unresolved (a cancelled probe) frees the probe.
#[derive(Debug)]
pub(crate) struct ProbeGuard<'a> {
    breaker: &'a Breaker,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        // Resolved or not, the probe is over; `open_until` says what happens next.
        self.breaker.probing.store(false, Ordering::Release);
        // A probe dropped unresolved leaves the circuit open (a resolved one has reported
        // already, and reporting the same state twice is a no-op).
        if self.breaker.is_open() {
            self.breaker.report(Circuit::Open);
        }
    }
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("open", &self.is_open())
            .field("opened", &self.times_opened())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// `threshold` 0 disables the breaker.
    pub(crate) fn new(threshold: u32, window: Duration, cooldown: Duration) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            threshold: threshold as usize,
            window_ms: ms(window),
            cooldown_ms: ms(cooldown),
            events: Mutex::new(VecDeque::new()),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            epoch: Instant::now(),
            telemetry: OnceLock::new(),
        }
    }

    /// Reports transitions, and lends the store its command timings, through `telemetry`.
    pub(crate) fn observe(&self, telemetry: Arc<CacheMetrics>) {
        let _ = self.telemetry.set(telemetry);
    }

    /// The cache's metrics, once it is assembled.
    #[inline]
    pub(crate) fn telemetry(&self) -> Option<&CacheMetrics> {
        self.telemetry.get().map(|t| &**t)
    }

    fn report(&self, to: Circuit) {
        if let Some(t) = self.telemetry() {
            t.circuit(to);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// `None` while the circuit is open and another caller probes (or the cool-down runs).
    #[inline]
    pub(crate) fn permit(&self) -> Option<Permit<'_>> {
        // The closed circuit costs one load.
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Permit::Go);
        }
        if self.now_ms() < until || self.probing.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.report(Circuit::HalfOpen);
        Some(Permit::Probe(ProbeGuard { breaker: self }))
    }

    /// The command succeeded (or Redis answered it with an error: it is reachable).
    #[inline]
    pub(crate) fn success(&self, permit: Permit<'_>) {
        if let Permit::Probe(_guard) = permit {
            self.close();
        }
    }

    /// The command failed for lack of Redis. `event` says whether this failure is a new event
    /// (the first failure of its connection) rather than one more command on a dead connection.
    /// Returns whether this call opened the circuit.
    pub(crate) fn failure(&self, permit: Permit<'_>, event: bool) -> bool {
        match permit {
            Permit::Probe(_guard) => {
                let reopen_at = self.now_ms().saturating_add(self.cooldown_ms);
                self.open_until.store(reopen_at, Ordering::Release);
                self.report(Circuit::Open);
                tracing::debug!("redis probe failed: cache circuit stays open");
                false
            }
            Permit::Go if event => self.event(),
            Permit::Go => false,
        }
    }

    /// A probe that found no connection to send on: not a verdict on Redis, so the next caller
    /// probes again (each such probe fails fast).
    pub(crate) fn inconclusive(&self, permit: Permit<'_>) {
        drop(permit);
    }

    /// Records a failure event that no command carried (a failed reconnect). Returns whether it
    /// opened the circuit.
    pub(crate) fn event(&self) -> bool {
        if self.threshold == 0 || self.open_until.load(Ordering::Acquire) != 0 {
            return false;
        }
        let now = self.now_ms();
        let count = {
            let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            events.push_back(now);
            while events.len() > self.threshold
                || events
                    .front()
                    .is_some_and(|&t| now.saturating_sub(t) > self.window_ms)
            {
                events.pop_front();
            }
            events.len()
        };
        if count < self.threshold {
            return false;
        }
        let reopen_at = now.saturating_add(self.cooldown_ms);
        if self
            .open_until
            .compare_exchange(0, reopen_at, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.report(Circuit::Open);
        tracing::warn!(
            failures = count,
            window_ms = self.window_ms,
            cooldown_ms = self.cooldown_ms,
            "redis failing: cache circuit opened, calls run uncached"
        );
        true
    }

    fn close(&self) {
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            self.report(Circuit::Closed);
            tracing::info!("redis answers again: cache circuit closed");
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    pub(crate) fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for_probe(b: &Breaker) -> Permit<'_> {
        // Wait out a 1 ms cool-down without a sleep-based assertion.
        loop {
            match b.permit() {
                None => std::thread::yield_now(),
                Some(p) => break p,
            }
        }
    }

    #[test]
    fn opens_after_threshold_events_in_the_window_and_closes_after_a_good_probe() {
        let b = Breaker::new(3, Duration::from_secs(60), Duration::from_millis(1));
        for _ in 0..2 {
            let p = b.permit().expect("closed");
            assert!(!b.failure(p, true));
        }
        // More failed commands on the same dead connection are not new events.
        for _ in 0..50 {
            let p = b.permit().expect("closed");
            assert!(!b.failure(p, false));
        }
        assert!(!b.is_open());
        assert!(b.failure(b.permit().expect("closed"), true));
        assert!(b.is_open());
        assert_eq!(b.times_opened(), 1);
        let probe = wait_for_probe(&b);
        assert!(matches!(probe, Permit::Probe(_)));
        assert!(b.permit().is_none(), "only one probe at a time");
        b.success(probe);
        assert!(!b.is_open());
        assert!(matches!(b.permit(), Some(Permit::Go)));
    }

    #[test]
    fn events_older_than_the_window_do_not_add_up() {
        let b = Breaker::new(2, Duration::from_millis(1), Duration::from_secs(60));
        assert!(!b.event());
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(5) {
            std::thread::yield_now();
        }
        assert!(!b.event(), "the first event left the window");
        assert!(b.event(), "two events within the window open it");
    }

    #[test]
    fn a_dropped_probe_hands_the_probe_to_the_next_caller() {
        let b = Breaker::new(1, Duration::from_secs(60), Duration::from_millis(1));
        let telemetry = Arc::new(CacheMetrics::new(metrics::SharedString::const_str("b")));
        b.observe(Arc::clone(&telemetry));
        assert!(b.event());
        let probe = wait_for_probe(&b);
        assert_eq!(telemetry.circuit_state(), Circuit::HalfOpen as u8);
        // The prober is cancelled at its await: its permit is dropped unresolved.
        drop(probe);
        assert_eq!(
            telemetry.circuit_state(),
            Circuit::Open as u8,
            "reported open again, not left half-open"
        );
        assert!(
            matches!(b.permit(), Some(Permit::Probe(_))),
            "the circuit must not stay open forever"
        );
    }

    #[test]
    fn every_transition_is_reported() {
        let b = Breaker::new(1, Duration::from_secs(60), Duration::from_millis(1));
        let telemetry = Arc::new(CacheMetrics::new(metrics::SharedString::const_str("b")));
        b.observe(Arc::clone(&telemetry));
        let state = || telemetry.circuit_state();
        assert_eq!(state(), Circuit::Closed as u8);
        assert!(b.event());
        assert_eq!(state(), Circuit::Open as u8);
        let probe = wait_for_probe(&b);
        assert_eq!(state(), Circuit::HalfOpen as u8);
        assert!(!b.failure(probe, true));
        assert_eq!(state(), Circuit::Open as u8);
        let probe = wait_for_probe(&b);
        b.success(probe);
        assert_eq!(state(), Circuit::Closed as u8);
    }

    #[test]
    fn a_failed_probe_reopens_and_a_zero_threshold_never_opens() {
        let b = Breaker::new(1, Duration::from_secs(60), Duration::from_millis(1));
        assert!(b.event());
        let probe = wait_for_probe(&b);
        assert!(!b.failure(probe, true));
        assert!(b.is_open());
        let off = Breaker::new(0, Duration::from_secs(60), Duration::from_secs(1));
        for _ in 0..100 {
            off.failure(off.permit().expect("never open"), true);
        }
        assert!(!off.is_open());
    }
}
