//! A `metrics` recorder for tests: installed once per test binary, read back at any time
//! without resetting anything, so tests running in parallel (each with its own `cache`
//! label) do not disturb each other's values.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex, PoisonError, atomic::Ordering},
};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Every series registered, and the units described.
pub struct TestRecorder {
    registry: Registry<Key, AtomicStorage>,
    units: Mutex<HashMap<String, Option<Unit>>>,
}

impl std::fmt::Debug for TestRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRecorder").finish_non_exhaustive()
    }
}

static GLOBAL: LazyLock<TestRecorder> = LazyLock::new(|| TestRecorder {
    registry: Registry::atomic(),
    units: Mutex::default(),
});

/// A series' labels, as `(name, value)` pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl TestRecorder {
    /// The recorder of this process, installed as the global recorder on first use.
    ///
    /// Panics when another global recorder was installed first.
    pub fn global() -> &'static TestRecorder {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            metrics::set_global_recorder(&*GLOBAL)
                .unwrap_or_else(|_| panic!("another global recorder is installed"));
        });
        &GLOBAL
    }

    /// Whether `key` is `name` with exactly `labels`, in any order.
    fn is(key: &Key, name: &str, labels: Labels<'_>) -> bool {
        key.name() == name
            && key.labels().count() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
    }

    /// A counter with exactly these labels (in any order); `None` when not registered.
    pub fn counter(&self, name: &str, labels: Labels<'_>) -> Option<u64> {
        let mut found = None;
        self.registry.visit_counters(|k, c| {
            if Self::is(k, name, labels) {
                found = Some(c.load(Ordering::SeqCst));
            }
        });
        found
    }

    /// A gauge's value; `None` when not registered.
    pub fn gauge(&self, name: &str, labels: Labels<'_>) -> Option<f64> {
        let mut found = None;
        self.registry.visit_gauges(|k, g| {
            if Self::is(k, name, labels) {
                found = Some(f64::from_bits(g.load(Ordering::SeqCst)));
            }
        });
        found
    }

    /// A histogram's recorded values; `None` when not registered.
    pub fn histogram(&self, name: &str, labels: Labels<'_>) -> Option<Vec<f64>> {
        let mut found = None;
        self.registry.visit_histograms(|k, h| {
            if Self::is(k, name, labels) {
                found = Some(h.data());
            }
        });
        found
    }

    /// The label sets of every series named `name` (any kind) whose labels include `having`.
    pub fn series(&self, name: &str, having: Labels<'_>) -> Vec<Vec<(String, String)>> {
        let mut all = Vec::new();
        let mut visit = |key: &Key| {
            if key.name() != name {
                return;
            }
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            if having
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            {
                all.push(labels);
            }
        };
        self.registry.visit_counters(|k, _| visit(k));
        self.registry.visit_gauges(|k, _| visit(k));
        self.registry.visit_histograms(|k, _| visit(k));
        all.sort();
        all
    }

    /// Every series (name and labels) whose labels include `having`.
    pub fn all_series(&self, having: Labels<'_>) -> Vec<(String, Vec<(String, String)>)> {
        let mut names = Vec::new();
        let mut visit = |key: &Key| names.push(key.name().to_owned());
        self.registry.visit_counters(|k, _| visit(k));
        self.registry.visit_gauges(|k, _| visit(k));
        self.registry.visit_histograms(|k, _| visit(k));
        names.sort();
        names.dedup();
        names
            .into_iter()
            .flat_map(|n| {
                self.series(&n, having)
                    .into_iter()
                    .map(move |l| (n.clone(), l))
            })
            .collect()
    }

    /// The unit described for `name`, if it was described.
    pub fn unit(&self, name: &str) -> Option<Option<Unit>> {
        self.units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    fn describe(&self, key: &KeyName, unit: Option<Unit>) {
        self.units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.as_str().to_owned(), unit);
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(&key, unit);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(&key, unit);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(&key, unit);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}
