//! One limit: a rate per period with a burst, and what it means in microseconds (GCRA's
//! emission interval and tolerance).

use std::{borrow::Cow, fmt, time::Duration};

use crate::error::CacheError;

/// The longest period a limit may have: one year.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

/// A limit of `rate` requests per `period`, with a `burst` on top.
///
/// Decided by GCRA (the generic cell rate algorithm): requests are admitted one every
/// `period / rate` on average, and an idle client may send `burst + 1` at once. In **any**
/// window of length `period` (not only in windows aligned to a clock) at most `rate + burst`
/// requests are allowed, so there is no burst at a window edge: a fixed-window counter lets a
/// client send `2 × rate` across one.
///
/// ```
/// use std::time::Duration;
/// use cached_runtime::ratelimit::Limit;
///
/// // 100 a minute, 20 of them at once from idle: at most 119 in any minute.
/// let per_minute = Limit::per_minute(100).burst(19).name("per-minute");
/// // 1,000 an hour, evenly.
/// let per_hour = Limit::per_hour(1000);
/// let custom = Limit::new(5, Duration::from_secs(10));
/// ```
///
/// The period is divided into `rate` intervals of whole microseconds, rounded up: a limit whose
/// period does not divide evenly admits slightly fewer requests, never more.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Limit {
    rate: u64,
    period: Duration,
    burst: u64,
    name: Option<Cow<'static, str>>,
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Limit({})", self.policy_name())
    }
}

impl Limit {
    /// `rate` requests per `period`, no burst.
    pub const fn new(rate: u64, period: Duration) -> Self {
        Self {
            rate,
            period,
            burst: 0,
            name: None,
        }
    }

    /// `rate` requests a second.
    pub const fn per_second(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(1))
    }

    /// `rate` requests a minute.
    pub const fn per_minute(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(60))
    }

    /// `rate` requests an hour.
    pub const fn per_hour(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(3600))
    }

    /// `rate` requests a day.
    pub const fn per_day(rate: u64) -> Self {
        Self::new(rate, Duration::from_secs(86_400))
    }

    /// Requests allowed on top of the rate: an idle client may send `burst + 1` at once, and
    /// at most `rate + burst` in any period.
    pub const fn burst(mut self, burst: u64) -> Self {
        self.burst = burst;
        self
    }

    /// The policy's name in the `RateLimit` and `RateLimit-Policy` response fields and in
    /// the problem body's `violated-policies`: printable ASCII without `"` or `\`, at most 64
    /// characters. By default `{rate}-per-{period}s` (`100-per-60s`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Requests per period.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Requests allowed on top of the rate.
    pub fn burst_size(&self) -> u64 {
        self.burst
    }

    /// The most requests allowed in any one period: `rate + burst`.
    pub fn quota(&self) -> u64 {
        self.rate.saturating_add(self.burst)
    }

    /// The name given, or `{rate}-per-{period}s`.
    pub fn policy_name(&self) -> Cow<'_, str> {
        match &self.name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("{}-per-{}s", self.rate, self.window_secs())),
        }
    }

    /// The period in whole seconds, rounded up, as the `w` of `RateLimit-Policy`.
    pub(crate) fn window_secs(&self) -> u64 {
        ceil_secs(self.period)
    }

    /// Microseconds between two admissions (GCRA's emission interval), rounded up.
    pub(crate) fn interval_us(&self) -> u64 {
        let period = u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX);
        period.div_ceil(self.rate.max(1))
    }

    /// How far ahead of now a client's theoretical arrival time may run, plus one interval:
    /// `(burst + 1) × interval`; a request conforms when its new arrival time is within this.
    pub(crate) fn capacity_us(&self) -> u64 {
        self.burst
            .saturating_add(1)
            .saturating_mul(self.interval_us())
    }

    /// The suffix of this limit's keys: distinct for distinct limits, so changing a limit
    /// starts it afresh rather than reading another limit's state.
    pub(crate) fn key_suffix(&self) -> String {
        format!("{}/{}us+{}", self.rate, self.period.as_micros(), self.burst)
    }

    pub(crate) fn validate(&self) -> Result<(), CacheError> {
        let bad = |m: String| Err(CacheError::Config(m));
        if self.rate == 0 {
            return bad(format!("limit {self:?}: the rate must be at least 1"));
        }
        if self.period < Duration::from_millis(1) || self.period > MAX_PERIOD {
            return bad(format!(
                "limit {self:?}: the period must be between 1 ms and one year"
            ));
        }
        if u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX) < self.rate {
            return bad(format!(
                "limit {self:?}: at most one request a microsecond (rate ≤ period in µs)"
            ));
        }
        // Lua numbers are doubles: keep every arrival time an exact integer.
        if self.capacity_us() > 1 << 50 {
            return bad(format!(
                "limit {self:?}: the burst is too large for the period"
            ));
        }
        if let Some(name) = &self.name
            && let Some(why) = policy_name_error(name)
        {
            return bad(format!("limit name {name:?}: {why}"));
        }
        Ok(())
    }
}

/// Why `name` cannot be a policy name in a structured-field string, if it cannot.
fn policy_name_error(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 64 {
        return Some("use 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Some("use printable ASCII without '\"' or '\\'");
    }
    None
}

/// Whole seconds, rounded up: a wait is never announced shorter than it is.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_up_and_capacity_counts_the_burst() {
        let l = Limit::per_minute(100).burst(19);
        assert_eq!(l.interval_us(), 600_000);
        assert_eq!(l.capacity_us(), 20 * 600_000);
        assert_eq!(l.quota(), 119);
        // 1 s / 3 = 333 333.33 µs: rounded up, so three take slightly more than a second.
        assert_eq!(Limit::per_second(3).interval_us(), 333_334);
        assert_eq!(Limit::new(1, Duration::from_millis(1500)).window_secs(), 2);
    }

    #[test]
    fn invalid_limits_are_rejected_with_the_reason() {
        assert!(Limit::per_second(0).validate().is_err());
        assert!(Limit::new(1, Duration::ZERO).validate().is_err());
        assert!(
            Limit::new(2_000_000, Duration::from_secs(1))
                .validate()
                .is_err()
        );
        let err = Limit::per_second(1)
            .name("a\"b")
            .validate()
            .expect_err("a quote");
        assert!(err.to_string().contains("printable ASCII"), "{err}");
        assert!(Limit::per_second(1).burst(u64::MAX).validate().is_err());
        assert!(Limit::per_hour(1000).burst(10).validate().is_ok());
    }

    #[test]
    fn default_names_say_rate_and_window() {
        assert_eq!(Limit::per_minute(100).policy_name(), "100-per-60s");
        assert_eq!(Limit::per_hour(5).name("hourly").policy_name(), "hourly");
    }
}
