//! The cache's own series and span: the per-prefix counters and histograms, and the
//! `cache.get` span of a call. Their names and meanings are listed in
//! [`telemetry`](crate::telemetry), which stays a leaf below the cache.

use metrics::{Counter, Histogram, Label, Recorder, SharedString};

use crate::{
    cache::{
        key::{Key, KeyTag},
        stats::{Event, Outcome},
    },
    telemetry::{FILL_DURATION, REQUESTS, WAIT_DURATION, counter, describe, histogram},
};

/// Which kind of wait for another caller's fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// For a fill in this process.
    Flight,
    /// For another process holding the fill lock.
    Lock,
}

/// The counters of one prefix of one cache, registered together so each reads 0 before its
/// first increment.
pub(crate) struct PrefixHandles {
    pub(crate) outcomes: [Counter; 9],
    pub(crate) events: [Counter; 16],
}

fn prefix_labels(cache: &SharedString, prefix: &SharedString) -> Vec<Label> {
    vec![
        Label::new("cache", cache.clone()),
        Label::new("prefix", prefix.clone()),
    ]
}

impl PrefixHandles {
    pub(crate) fn register(r: &dyn Recorder, cache: &SharedString, prefix: &SharedString) -> Self {
        describe(r);
        let labels = || prefix_labels(cache, prefix);
        Self {
            outcomes: Outcome::ALL.map(|o| {
                let mut l = labels();
                l.push(Label::from_static_parts("outcome", o.label()));
                if let Some(tier) = o.tier() {
                    l.push(Label::from_static_parts("tier", tier));
                }
                counter(r, REQUESTS, l)
            }),
            events: Event::ALL.map(|e| {
                let mut l = labels();
                if let Some(reason) = e.reason() {
                    l.push(Label::from_static_parts("reason", reason));
                }
                counter(r, e.metric(), l)
            }),
        }
    }
}

/// A histogram of one prefix, registered on its first value (an empty histogram is a dozen
/// lines of zeros in an exposition).
pub(crate) fn prefix_histogram(
    r: &dyn Recorder,
    cache: &SharedString,
    prefix: &SharedString,
    wait: Option<Wait>,
) -> Histogram {
    describe(r);
    let mut labels = prefix_labels(cache, prefix);
    match wait {
        None => histogram(r, FILL_DURATION, labels),
        Some(wait) => {
            let value = match wait {
                Wait::Flight => "flight",
                Wait::Lock => "lock",
            };
            labels.push(Label::from_static_parts("wait", value));
            histogram(r, WAIT_DURATION, labels)
        }
    }
}

/// The span of one cached call; [`telemetry`](crate::telemetry#tracing) lists its fields.
#[inline]
pub(crate) fn call_span(cache: &str, key: &Key) -> tracing::Span {
    tracing::debug_span!(
        "cache.get",
        cache = cache,
        prefix = key.prefix(),
        key = %KeyTag(key),
        outcome = tracing::field::Empty,
        redis_ms = tracing::field::Empty,
    )
}

/// Records a call's outcome on its span.
#[inline]
pub(crate) fn record_outcome(span: &tracing::Span, outcome: Outcome) {
    span.record("outcome", outcome.label());
}
