//! A circuit breaker in front of Redis.
//!
//! After `threshold` consecutive availability failures (timeouts, dropped or missing
//! connections) the circuit opens: for `cooldown` no command is sent and cached calls run
//! their bodies at once. Then one command goes through as a probe; its success closes the
//! circuit, its failure opens it for another `cooldown`.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

pub(crate) struct Breaker {
    threshold: u32,
    cooldown_ms: u64,
    consecutive: AtomicU32,
    // Milliseconds since `epoch` until which the circuit is open; 0 while closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    opened: AtomicU64,
    epoch: OnceLock<Instant>,
    metric: metrics::Counter,
}

/// What the breaker says about one command.
#[derive(Debug, PartialEq)]
pub(crate) enum Permit {
    /// Send it.
    Go,
    /// Send it as the probe of a half-open circuit.
    Probe,
    /// Don't: the circuit is open.
    Refused,
}

impl Breaker {
    /// `threshold` 0 disables the breaker.
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown_ms: u64::try_from(cooldown.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            epoch: OnceLock::new(),
            metric: metrics::counter!("redis_cache_circuit_opened_total"),
        }
    }

    fn now_ms(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    pub(crate) fn permit(&self) -> Permit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Permit::Go;
        }
        if self.now_ms() < until || self.probing.swap(true, Ordering::AcqRel) {
            return Permit::Refused;
        }
        Permit::Probe
    }

    pub(crate) fn success(&self, permit: &Permit) {
        // Read first: a store on every command would bounce this line between cores.
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if *permit == Permit::Probe {
            self.open_until.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            tracing::info!("redis answers again: cache circuit closed");
        }
    }

    /// Records an availability failure (not a command error such as a wrong type).
    pub(crate) fn failure(&self, permit: &Permit) {
        if self.threshold == 0 {
            return;
        }
        let reopen_at = self.now_ms().saturating_add(self.cooldown_ms);
        if *permit == Permit::Probe {
            self.open_until.store(reopen_at, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            tracing::debug!("redis probe failed: cache circuit stays open");
            return;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold
            && self
                .open_until
                .compare_exchange(0, reopen_at, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.opened.fetch_add(1, Ordering::Relaxed);
            self.metric.increment(1);
            tracing::warn!(
                failures = n,
                cooldown_ms = self.cooldown_ms,
                "redis failing: cache circuit opened, calls run uncached"
            );
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

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_probe() {
        let b = Breaker::new(3, Duration::from_millis(1));
        for _ in 0..2 {
            let p = b.permit();
            assert_eq!(p, Permit::Go);
            b.failure(&p);
        }
        assert!(!b.is_open());
        b.failure(&b.permit());
        assert!(b.is_open());
        assert_eq!(b.times_opened(), 1);
        // Wait out the 1 ms cooldown without a sleep-based assertion.
        let probe = loop {
            match b.permit() {
                Permit::Refused => std::thread::yield_now(),
                p => break p,
            }
        };
        assert_eq!(probe, Permit::Probe);
        assert_eq!(b.permit(), Permit::Refused, "only one probe at a time");
        b.success(&probe);
        assert!(!b.is_open());
        assert_eq!(b.permit(), Permit::Go);
    }

    #[test]
    fn a_failed_probe_reopens_and_a_zero_threshold_never_opens() {
        let b = Breaker::new(1, Duration::from_secs(3600));
        b.failure(&b.permit());
        assert_eq!(b.permit(), Permit::Refused);
        let off = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            off.failure(&off.permit());
        }
        assert!(!off.is_open());
    }
}
