//! A session store's series, registered as the cache's are (see [`telemetry`](crate::telemetry)).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `redis_session_loads_total` | counter | `store`, `result` | loads: `found`, `missing` (never existed, expired or past its absolute lifetime), `ended` (logged out or renewed), `corrupt` (a foreign or damaged value: a new session starts), `unavailable` (Redis could not answer) |
//! | `redis_session_writes_total` | counter | `store`, `kind` | writes sent: `create`, `update`, `replace`, `rotate`, `end`, `unpersisted` (Redis unavailable, policy `fresh`: not written) |
//! | `redis_session_expiry_refreshes_total` | counter | `store` | sliding-expiry writes made by loads (at most one per refresh fraction of the idle timeout) |
//! | `redis_session_conflicts_total` | counter | `store` | fields two concurrent requests both changed: the later write won |

use metrics::{Counter, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};

use crate::telemetry::Lazy;

/// Loads: counter, labels `store`, `result`.
pub const LOADS: &str = "redis_session_loads_total";
/// Writes: counter, labels `store`, `kind`.
pub const WRITES: &str = "redis_session_writes_total";
/// Sliding-expiry writes made by loads: counter, label `store`.
pub const EXPIRY_REFRESHES: &str = "redis_session_expiry_refreshes_total";
/// Fields changed by two concurrent requests: counter, label `store`.
pub const CONFLICTS: &str = "redis_session_conflicts_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// What a load found.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LoadResult {
    Found,
    Missing,
    Ended,
    Corrupt,
    Unavailable,
}

const LOAD_RESULTS: [&str; 5] = ["found", "missing", "ended", "corrupt", "unavailable"];

/// What a write did.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WriteKind {
    Create,
    Update,
    Replace,
    Rotate,
    End,
    Unpersisted,
}

const WRITE_KINDS: [&str; 6] = [
    "create",
    "update",
    "replace",
    "rotate",
    "end",
    "unpersisted",
];

struct Handles {
    loads: [Counter; 5],
    writes: [Counter; 6],
    refreshes: Counter,
    conflicts: Counter,
}

pub(crate) struct SessionMetrics {
    name: SharedString,
    handles: Lazy<Handles>,
}

impl SessionMetrics {
    pub(crate) fn new(name: SharedString) -> Self {
        let metrics = Self {
            name,
            handles: Lazy::new(),
        };
        // Registered now, so every series reads 0 before its first event.
        metrics.with(|_| ());
        metrics
    }

    fn with<T>(&self, f: impl FnOnce(&Handles) -> T) -> T {
        self.handles.with(|r| self.register(r), f)
    }

    fn register(&self, r: &dyn Recorder) -> Handles {
        for (name, help) in [
            (LOADS, "Session loads by result."),
            (WRITES, "Session writes by kind."),
            (
                EXPIRY_REFRESHES,
                "Sliding-expiry writes made by session loads.",
            ),
            (
                CONFLICTS,
                "Session fields changed by two concurrent requests (the later write won).",
            ),
        ] {
            r.describe_counter(
                KeyName::from_const_str(name),
                Some(Unit::Count),
                SharedString::const_str(help),
            );
        }
        let store = || Label::new("store", self.name.clone());
        let counter = |name: &'static str, extra: Option<(&'static str, &'static str)>| {
            let mut labels = vec![store()];
            if let Some((k, v)) = extra {
                labels.push(Label::from_static_parts(k, v));
            }
            r.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        Handles {
            loads: LOAD_RESULTS.map(|result| counter(LOADS, Some(("result", result)))),
            writes: WRITE_KINDS.map(|kind| counter(WRITES, Some(("kind", kind)))),
            refreshes: counter(EXPIRY_REFRESHES, None),
            conflicts: counter(CONFLICTS, None),
        }
    }

    pub(crate) fn load(&self, result: LoadResult) {
        self.with(|h| h.loads[result as usize].increment(1));
    }

    pub(crate) fn write(&self, kind: WriteKind) {
        self.with(|h| h.writes[kind as usize].increment(1));
    }

    pub(crate) fn refreshed(&self) {
        self.with(|h| h.refreshes.increment(1));
    }

    pub(crate) fn conflicts(&self, n: u64) {
        if n > 0 {
            self.with(|h| h.conflicts.increment(n));
        }
    }
}
