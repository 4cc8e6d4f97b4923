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
//! One server (or Sentinel's primary) has one breaker. A cluster has one per primary, found by
//! the slot of the command's key in a snapshot of the slot map (`CLUSTER SLOTS`, refreshed by
//! the pool when a node fails), so a dead shard fails fast while the others go on; a command
//! whose slot or node is not known goes through a shared breaker. A node's failures are
//! events when they are the first since its last success, or come [`NODE_EVENT_SPACING`]
//! after its previous event: redis-rs reconnects a node by itself on each command sent to it,
//! so spaced failures stand for failed reconnects, and a burst of callers for one.
//!
//! Every transition is reported to the connection's [`CacheMetrics`] (state gauge and
//! transition counter): the state shown is the worst of all breakers (open, then half-open).

use std::{
    collections::VecDeque,
    ops::Deref,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use super::cluster::SlotRange;
use crate::telemetry::{CacheMetrics, Circuit};

/// Within this long after a node's failure event, its further failures are the same event.
pub(crate) const NODE_EVENT_SPACING: Duration = Duration::from_millis(100);

/// The breakers of one connection: the shared one, and on a cluster one per primary.
pub(crate) struct Breakers {
    /// One server, Sentinel's primary, or a cluster command whose node is not known.
    shared: Breaker,
    /// On a cluster: which primary owns which slots, each with its breaker.
    nodes: Option<ArcSwap<NodeMap>>,
    settings: Settings,
    reporter: Arc<Reporter>,
}

#[derive(Clone, Copy)]
struct Settings {
    threshold: u32,
    window: Duration,
    cooldown: Duration,
}

/// A snapshot of the slot map: slot ranges, sorted, and the node that owns each.
#[derive(Default)]
struct NodeMap {
    /// (first slot, last slot, index in `nodes`).
    ranges: Vec<(u16, u16, usize)>,
    nodes: Vec<Arc<Node>>,
}

/// A cluster primary, with its breaker and what judging its failures needs.
pub(crate) struct Node {
    host: String,
    port: u16,
    breaker: Breaker,
    /// Whether its last command failed: then only spaced failures are new events.
    failing: AtomicBool,
    /// When its last failure event was (ms since the breaker's epoch).
    last_event: AtomicU64,
}

impl Node {
    /// The command succeeded (or Redis answered it).
    #[inline]
    fn succeeded(&self) {
        // Read first: a store on every command would bounce this line between cores.
        if self.failing.load(Ordering::Relaxed) {
            self.failing.store(false, Ordering::Relaxed);
        }
    }

    /// A command to it failed for lack of Redis: whether that is a new event.
    fn failed(&self) -> bool {
        let now = self.breaker.now_ms();
        let first = !self.failing.swap(true, Ordering::AcqRel);
        let last = self.last_event.load(Ordering::Acquire);
        let spaced = now.saturating_sub(last) >= NODE_EVENT_SPACING.as_millis() as u64;
        (first || spaced)
            && self
                .last_event
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// The breaker a command goes through, from [`Breakers::for_slot`].
pub(crate) enum Target<'a> {
    Shared(&'a Breaker),
    Node(Arc<Node>),
}

impl Deref for Target<'_> {
    type Target = Breaker;

    #[inline]
    fn deref(&self) -> &Breaker {
        match self {
            Target::Shared(b) => b,
            Target::Node(n) => &n.breaker,
        }
    }
}

impl Target<'_> {
    /// The command succeeded, or Redis answered it.
    #[inline]
    pub(crate) fn succeeded(&self) {
        if let Target::Node(node) = self {
            node.succeeded();
        }
    }

    /// The command failed for lack of Redis; `event` is the pool's verdict for a connection of
    /// its own. Returns whether this failure is a new event.
    pub(crate) fn failed(&self, event: bool) -> bool {
        match self {
            Target::Shared(_) => event,
            Target::Node(node) => node.failed(),
        }
    }

    /// The node, when the command went to a known cluster primary.
    pub(crate) fn node(&self) -> Option<&Node> {
        match self {
            Target::Shared(_) => None,
            Target::Node(n) => Some(n),
        }
    }
}

impl Breakers {
    /// Breakers for one server (`cluster` false), or for a cluster's primaries once the slot
    /// map is known ([`Breakers::set_slots`]).
    pub(crate) fn new(threshold: u32, window: Duration, cooldown: Duration, cluster: bool) -> Self {
        let settings = Settings {
            threshold,
            window,
            cooldown,
        };
        let reporter = Arc::new(Reporter::default());
        Self {
            shared: Breaker::reporting(settings, Arc::clone(&reporter), None),
            nodes: cluster.then(|| ArcSwap::from_pointee(NodeMap::default())),
            settings,
            reporter,
        }
    }

    /// Whether commands are judged by their node's breaker (a cluster), so their slot matters.
    #[inline]
    pub(crate) fn by_node(&self) -> bool {
        self.nodes.is_some()
    }

    /// The breaker of the node that serves `slot` (`None`: no key, any node).
    #[inline]
    pub(crate) fn for_slot(&self, slot: Option<u16>) -> Target<'_> {
        let (Some(nodes), Some(slot)) = (&self.nodes, slot) else {
            return Target::Shared(&self.shared);
        };
        let map = nodes.load();
        let at = map.ranges.partition_point(|&(_, last, _)| last < slot);
        match map.ranges.get(at) {
            Some(&(first, _, node)) if first <= slot => Target::Node(Arc::clone(&map.nodes[node])),
            _ => Target::Shared(&self.shared),
        }
    }

    /// Takes in a new slot map: nodes already known keep their breakers, new ones get a
    /// closed one, and the breakers of nodes that own no slots any more are dropped.
    pub(crate) fn set_slots(&self, owners: &[SlotRange]) {
        let Some(nodes) = &self.nodes else {
            return;
        };
        let old = nodes.load_full();
        let mut map = NodeMap::default();
        for range in owners {
            let at = match map
                .nodes
                .iter()
                .position(|n| n.host == range.host && n.port == range.port)
            {
                Some(at) => at,
                None => {
                    let node = old
                        .nodes
                        .iter()
                        .find(|n| n.host == range.host && n.port == range.port)
                        .cloned()
                        .unwrap_or_else(|| {
                            let label = format!("{}:{}", range.host, range.port);
                            Arc::new(Node {
                                host: range.host.clone(),
                                port: range.port,
                                breaker: Breaker::reporting(
                                    self.settings,
                                    Arc::clone(&self.reporter),
                                    Some(label),
                                ),
                                failing: AtomicBool::new(false),
                                last_event: AtomicU64::new(0),
                            })
                        });
                    map.nodes.push(node);
                    map.nodes.len() - 1
                }
            };
            let (Ok(first), Ok(last)) = (u16::try_from(range.start), u16::try_from(range.end))
            else {
                continue;
            };
            map.ranges.push((first, last, at));
        }
        map.ranges.sort_unstable();
        nodes.store(Arc::new(map));
    }

    /// Whether every known node's circuit is open: the whole cluster is unreachable.
    pub(crate) fn all_nodes_open(&self) -> bool {
        self.nodes.as_ref().is_some_and(|nodes| {
            let map = nodes.load();
            !map.nodes.is_empty() && map.nodes.iter().all(|n| n.breaker.is_open())
        })
    }

    /// A failure no command carried (a failed reconnect of the whole connection).
    pub(crate) fn connection_event(&self) -> bool {
        self.shared.event()
    }

    /// Reports transitions through `telemetry`.
    pub(crate) fn observe(&self, telemetry: Arc<CacheMetrics>) {
        self.reporter.observe(telemetry);
    }

    /// Whether any circuit is open now, and how often circuits have opened.
    pub(crate) fn circuit(&self) -> (bool, u64) {
        (
            self.reporter.any_open(),
            self.reporter.opened.load(Ordering::Relaxed),
        )
    }
}

/// Where breakers report their transitions: one per connection, whose metrics show the worst
/// state of its breakers.
#[derive(Default)]
struct Reporter {
    telemetry: OnceLock<Arc<CacheMetrics>>,
    /// How many breakers are in each state (indexed by [`Circuit`]).
    in_state: [AtomicUsize; 3],
    /// How many times any of them opened.
    opened: AtomicU64,
}

impl Reporter {
    fn observe(&self, telemetry: Arc<CacheMetrics>) {
        let _ = self.telemetry.set(telemetry);
        self.show();
    }

    fn moved(&self, from: Circuit, to: Circuit) {
        self.in_state[to as usize].fetch_add(1, Ordering::AcqRel);
        self.in_state[from as usize].fetch_sub(1, Ordering::AcqRel);
        self.show();
    }

    fn any_open(&self) -> bool {
        self.in_state[Circuit::Open as usize].load(Ordering::Acquire) > 0
            || self.in_state[Circuit::HalfOpen as usize].load(Ordering::Acquire) > 0
    }

    fn show(&self) {
        let Some(t) = self.telemetry.get() else {
            return;
        };
        let count = |c: Circuit| self.in_state[c as usize].load(Ordering::Acquire);
        let worst = if count(Circuit::Open) > 0 {
            Circuit::Open
        } else if count(Circuit::HalfOpen) > 0 {
            Circuit::HalfOpen
        } else {
            Circuit::Closed
        };
        t.circuit(worst);
    }
}

fn circuit_of(raw: u8) -> Circuit {
    match raw {
        1 => Circuit::HalfOpen,
        2 => Circuit::Open,
        _ => Circuit::Closed,
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
    /// The state last reported (a [`Circuit`]).
    shown: AtomicU8,
    /// Where transitions are reported.
    reporter: Arc<Reporter>,
    /// The node, in logs (`None`: the one server, or any node).
    node: Option<String>,
}

impl Drop for Breaker {
    fn drop(&mut self) {
        // A node gone from the slot map no longer counts towards the state shown.
        let shown = circuit_of(self.shown.load(Ordering::Acquire));
        self.reporter.in_state[shown as usize].fetch_sub(1, Ordering::AcqRel);
        self.reporter.show();
    }
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
    /// A breaker of its own (`threshold` 0 disables it), for tests.
    #[cfg(test)]
    fn new(threshold: u32, window: Duration, cooldown: Duration) -> Self {
        let settings = Settings {
            threshold,
            window,
            cooldown,
        };
        Self::reporting(settings, Arc::new(Reporter::default()), None)
    }

    /// A breaker that reports to `reporter`, for `node` (in logs).
    fn reporting(settings: Settings, reporter: Arc<Reporter>, node: Option<String>) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        reporter.in_state[Circuit::Closed as usize].fetch_add(1, Ordering::AcqRel);
        Self {
            threshold: settings.threshold as usize,
            window_ms: ms(settings.window),
            cooldown_ms: ms(settings.cooldown),
            events: Mutex::new(VecDeque::new()),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            epoch: Instant::now(),
            shown: AtomicU8::new(Circuit::Closed as u8),
            reporter,
            node,
        }
    }

    /// Reports transitions through `telemetry`, for tests.
    #[cfg(test)]
    fn observe(&self, telemetry: Arc<CacheMetrics>) {
        self.reporter.observe(telemetry);
    }

    fn report(&self, to: Circuit) {
        let from = circuit_of(self.shown.swap(to as u8, Ordering::AcqRel));
        if from != to {
            self.reporter.moved(from, to);
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
                tracing::debug!(
                    node = self.node.as_deref().unwrap_or("any"),
                    "redis probe failed: cache circuit stays open"
                );
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
        self.reporter.opened.fetch_add(1, Ordering::Relaxed);
        self.report(Circuit::Open);
        tracing::warn!(
            failures = count,
            window_ms = self.window_ms,
            cooldown_ms = self.cooldown_ms,
            node = self.node.as_deref().unwrap_or("any"),
            "redis failing: cache circuit opened, calls run uncached"
        );
        true
    }

    fn close(&self) {
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            self.report(Circuit::Closed);
            tracing::info!(
                node = self.node.as_deref().unwrap_or("any"),
                "redis answers again: cache circuit closed"
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

    fn range(start: i64, end: i64, port: u16) -> SlotRange {
        SlotRange {
            start,
            end,
            host: "127.0.0.1".to_owned(),
            port,
        }
    }

    fn port_of(target: &Target<'_>) -> Option<u16> {
        target.node().map(|n| n.port)
    }

    #[test]
    fn a_slot_goes_through_its_owners_breaker_and_an_unknown_one_through_the_shared() {
        let b = Breakers::new(1, Duration::from_secs(60), Duration::from_secs(60), true);
        assert_eq!(port_of(&b.for_slot(Some(0))), None, "no map yet");
        b.set_slots(&[
            range(0, 5460, 7000),
            range(5461, 10922, 7001),
            range(10923, 16383, 7002),
        ]);
        assert_eq!(port_of(&b.for_slot(Some(0))), Some(7000));
        assert_eq!(port_of(&b.for_slot(Some(5460))), Some(7000));
        assert_eq!(port_of(&b.for_slot(Some(5461))), Some(7001));
        assert_eq!(port_of(&b.for_slot(Some(16383))), Some(7002));
        assert_eq!(port_of(&b.for_slot(None)), None);

        // One node's circuit opens: the others' stay closed.
        let dead = b.for_slot(Some(1));
        assert!(dead.failure(dead.permit().expect("closed"), dead.failed(true)));
        assert!(
            b.for_slot(Some(2)).permit().is_none(),
            "its slots fail fast"
        );
        assert!(b.for_slot(Some(6000)).permit().is_some());
        assert!(b.for_slot(None).permit().is_some());
        assert_eq!(b.circuit(), (true, 1));
        assert!(!b.all_nodes_open());

        // Its slots move to a new node with a closed breaker; the open one is dropped once
        // no command holds it.
        drop(dead);
        b.set_slots(&[
            range(0, 5460, 7003),
            range(5461, 10922, 7001),
            range(10923, 16383, 7002),
        ]);
        assert_eq!(port_of(&b.for_slot(Some(0))), Some(7003));
        assert!(b.for_slot(Some(0)).permit().is_some());
        assert_eq!(b.circuit(), (false, 1), "opened once, open no more");
    }

    #[test]
    fn the_state_shown_is_the_worst_of_the_nodes() {
        let b = Breakers::new(1, Duration::from_secs(60), Duration::from_millis(1), true);
        let telemetry = Arc::new(CacheMetrics::new(metrics::SharedString::const_str("b")));
        b.observe(Arc::clone(&telemetry));
        b.set_slots(&[range(0, 8191, 7000), range(8192, 16383, 7001)]);
        let (one, two) = (b.for_slot(Some(0)), b.for_slot(Some(9000)));
        assert!(one.event() && two.event());
        assert_eq!(telemetry.circuit_state(), Circuit::Open as u8);
        let probe = wait_for_probe(&one);
        one.success(probe);
        assert_eq!(
            telemetry.circuit_state(),
            Circuit::Open as u8,
            "one node is still open"
        );
        let probe = wait_for_probe(&two);
        assert_eq!(telemetry.circuit_state(), Circuit::HalfOpen as u8);
        two.success(probe);
        assert_eq!(telemetry.circuit_state(), Circuit::Closed as u8);
        assert!(two.event());
        drop((one, two));
        // The open node leaves the map: nothing is open any more.
        b.set_slots(&[range(0, 16383, 7000)]);
        assert_eq!(telemetry.circuit_state(), Circuit::Closed as u8);
        assert_eq!(b.circuit(), (false, 3));
    }

    #[test]
    fn a_burst_of_failures_of_one_node_is_one_event_and_a_success_ends_it() {
        let b = Breakers::new(2, Duration::from_secs(60), Duration::from_secs(60), true);
        b.set_slots(&[range(0, 16383, 7000)]);
        let node = b.for_slot(Some(0));
        assert!(node.failed(false), "the first failure is an event");
        for _ in 0..50 {
            assert!(!node.failed(true), "the same burst");
        }
        node.succeeded();
        // After a success the next failure would be a new event, unless it comes within the
        // spacing of the last one: then it is still the same trouble.
        let start = Instant::now();
        while start.elapsed() < NODE_EVENT_SPACING {
            std::thread::yield_now();
        }
        assert!(
            node.failed(false),
            "a failure after the spacing is a new event"
        );
    }
}
