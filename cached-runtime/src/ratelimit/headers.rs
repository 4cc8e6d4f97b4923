//! The response fields of a decision, as draft-ietf-httpapi-ratelimit-headers-11 writes
//! them, and the problem body of a refusal (RFC 9457).
//!
//! - `RateLimit-Policy: "per-minute";q=119;w=60, "per-hour";q=1000;w=3600`: each limit's name,
//!   its quota `q` (`rate + burst`, the most admitted in any one period) and window `w` (the
//!   period in seconds, rounded up). The same on every response.
//! - `RateLimit: "per-minute";r=7;t=12`: on an allowed response, for each limit, `r` requests
//!   left now and `t` seconds (rounded up) until it is whole again. On a refusal only the
//!   limits that refused are listed, with `r=0` and `t` the seconds until the request would
//!   be admitted.
//! - `Retry-After` (refusals only): the latest `t` of the refusing limits, so it is never
//!   earlier than the end of any window the `RateLimit` field announces.
//!
//! A refusal is `429 Too Many Requests` with the `quota-exceeded` problem type; a refusal
//! because Redis could not answer (fail-closed) is `503 Service Unavailable` with the
//! `temporary-reduced-capacity` problem type, `Retry-After: 1` and no `RateLimit` field.

use std::fmt::Write as _;

use super::{DecidedBy, Decision, Limit, limit::ceil_secs};

/// `RateLimit-Policy`.
pub const POLICY: &str = "ratelimit-policy";
/// `RateLimit`.
pub const RATELIMIT: &str = "ratelimit";
/// The problem body's media type.
pub const PROBLEM_JSON: &str = "application/problem+json";

const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
const REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";

/// The `RateLimit-Policy` value of `limits` named `names`.
pub(crate) fn policy_field(limits: &[Limit], names: &[String]) -> String {
    let mut out = String::new();
    for (i, (limit, name)) in limits.iter().zip(names).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "\"{name}\";q={};w={}",
            limit.quota(),
            limit.window_secs()
        );
    }
    out
}

/// The response fields of one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields<'d> {
    /// `RateLimit-Policy`.
    pub policy: &'d str,
    /// `RateLimit`, unless the limiter could not reach Redis and refused.
    pub ratelimit: Option<String>,
    /// `Retry-After` in seconds, on refusals.
    pub retry_after: Option<u64>,
}

impl Decision {
    /// The fields to send with the response to this decision's request.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            policy: &self.policies().header,
            ratelimit: self.ratelimit_field(),
            retry_after: self.retry_after_secs(),
        }
    }

    /// `Retry-After` in whole seconds (at least 1), on refusals.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after().map(|d| ceil_secs(d).max(1))
    }

    /// The `RateLimit` field; `None` when there is nothing to announce.
    pub(crate) fn ratelimit_field(&self) -> Option<String> {
        if self.decided_by() == DecidedBy::Unavailable {
            return None;
        }
        let names = &self.policies().names;
        // Written on every response: pushed, not formatted.
        let mut out = String::with_capacity(names.iter().map(|n| n.len() + 32).sum());
        let mut digits = itoa::Buffer::new();
        let refused = !self.is_allowed();
        for (name, state) in names.iter().zip(self.states()) {
            if refused && !state.refused() {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            let t = state.retry_after().unwrap_or(state.reset());
            let r = if refused { 0 } else { state.remaining() };
            out.push('"');
            out.push_str(name);
            out.push_str("\";r=");
            out.push_str(digits.format(r));
            out.push_str(";t=");
            out.push_str(digits.format(ceil_secs(t)));
        }
        // A refused cost above capacity has no retry time: nothing to announce.
        (!out.is_empty()).then_some(out)
    }

    /// The status of a refusal: 429, or 503 when Redis could not answer and the limiter fails
    /// closed. `None` when allowed.
    pub fn refusal_status(&self) -> Option<u16> {
        match (self.is_allowed(), self.decided_by()) {
            (true, _) => None,
            (false, DecidedBy::Unavailable) => Some(503),
            (false, _) => Some(429),
        }
    }

    /// The problem body (`application/problem+json`) of a refusal; `None` when allowed.
    pub fn problem_body(&self) -> Option<String> {
        let status = self.refusal_status()?;
        let violated: Vec<&str> = self
            .policies()
            .names
            .iter()
            .zip(self.states())
            .filter(|(_, s)| s.refused())
            .map(|(n, _)| n.as_str())
            .collect();
        let (kind, title) = if status == 503 {
            (
                REDUCED_CAPACITY,
                "Request cannot be satisfied due to temporary server capacity constraints",
            )
        } else {
            (
                QUOTA_EXCEEDED,
                "Request cannot be satisfied as assigned quota has been exceeded",
            )
        };
        let detail = match self.retry_after() {
            Some(d) => format!("retry after {} s", ceil_secs(d).max(1)),
            None => "the request costs more than the quota ever allows".to_owned(),
        };
        let body = serde_json::json!({
            "type": kind,
            "title": title,
            "status": status,
            "detail": detail,
            "violated-policies": violated,
        });
        Some(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_field_lists_quota_and_window() {
        let limits = [Limit::per_minute(100).burst(19), Limit::per_hour(1000)];
        let names = vec!["per-minute".to_owned(), "1000-per-3600s".to_owned()];
        assert_eq!(
            policy_field(&limits, &names),
            r#""per-minute";q=119;w=60, "1000-per-3600s";q=1000;w=3600"#
        );
    }
}
