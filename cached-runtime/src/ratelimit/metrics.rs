//! A limiter's series, registered as the cache's are (see [`telemetry`](crate::telemetry)).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `redis_ratelimit_decisions_total` | counter | `limiter`, `result`, `decided_by` | decisions: `result` is `allowed` or `denied`; `decided_by` is `redis` (the script), `local` (a client refused in process until its retry time, no round trip), `fallback` (the in-process limiter, Redis unavailable, fail-open) or `unavailable` (refused, Redis unavailable, fail-closed) |
//! | `redis_ratelimit_redis_unavailable_total` | counter | `limiter`, `policy` | decisions Redis could not make, by the policy that decided instead: `fail_open` or `fail_closed` |

use metrics::{Counter, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};

use super::DecidedBy;
use crate::telemetry::Lazy;

/// Decisions: counter, labels `limiter`, `result`, `decided_by`.
pub const DECISIONS: &str = "redis_ratelimit_decisions_total";
/// Decisions Redis could not make: counter, labels `limiter`, `policy`.
pub const REDIS_UNAVAILABLE: &str = "redis_ratelimit_redis_unavailable_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

const BY: [DecidedBy; 4] = [
    DecidedBy::Redis,
    DecidedBy::Local,
    DecidedBy::Fallback,
    DecidedBy::Unavailable,
];

struct Handles {
    /// By `decided_by` then allowed (0) or denied (1).
    decisions: [[Counter; 2]; 4],
    unavailable: Counter,
}

pub(crate) struct LimiterMetrics {
    name: SharedString,
    policy: &'static str,
    handles: Lazy<Handles>,
}

impl LimiterMetrics {
    pub(crate) fn new(name: SharedString, fail_open: bool) -> Self {
        let metrics = Self {
            name,
            policy: if fail_open {
                "fail_open"
            } else {
                "fail_closed"
            },
            handles: Lazy::new(),
        };
        // Registered now, so every series reads 0 before its first decision.
        metrics.with(|_| ());
        metrics
    }

    fn with<T>(&self, f: impl FnOnce(&Handles) -> T) -> T {
        self.handles.with(|r| self.register(r), f)
    }

    fn register(&self, r: &dyn Recorder) -> Handles {
        r.describe_counter(
            KeyName::from_const_str(DECISIONS),
            Some(Unit::Count),
            SharedString::const_str("Rate-limit decisions by result and by what decided them."),
        );
        r.describe_counter(
            KeyName::from_const_str(REDIS_UNAVAILABLE),
            Some(Unit::Count),
            SharedString::const_str(
                "Rate-limit decisions Redis could not make, by the policy that decided instead.",
            ),
        );
        let limiter = || Label::new("limiter", self.name.clone());
        let decisions = BY.map(|by| {
            ["allowed", "denied"].map(|result| {
                let labels = vec![
                    limiter(),
                    Label::from_static_parts("result", result),
                    Label::from_static_parts("decided_by", by.label()),
                ];
                r.register_counter(&Key::from_parts(DECISIONS, labels), &METADATA)
            })
        });
        let labels = vec![limiter(), Label::from_static_parts("policy", self.policy)];
        Handles {
            decisions,
            unavailable: r.register_counter(&Key::from_parts(REDIS_UNAVAILABLE, labels), &METADATA),
        }
    }

    /// One decision.
    pub(crate) fn decision(&self, by: DecidedBy, allowed: bool) {
        self.with(|h| {
            h.decisions[by as usize][usize::from(!allowed)].increment(1);
            if matches!(by, DecidedBy::Fallback | DecidedBy::Unavailable) {
                h.unavailable.increment(1);
            }
        });
    }
}
