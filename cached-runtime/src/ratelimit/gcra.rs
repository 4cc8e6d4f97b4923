//! GCRA: the script Redis runs (`gcra.lua`), its reply, and the same step in Rust for the
//! in-process fallback.

use std::time::Duration;

use super::Limit;

/// The decision script: see `gcra.lua` for its keys, arguments and reply.
pub(crate) const SCRIPT: &str = include_str!("gcra.lua");

/// One limit's state after a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitState {
    remaining: u64,
    reset: Duration,
    retry_after: Option<Duration>,
}

impl LimitState {
    pub(crate) fn new(remaining: u64, reset: Duration, retry_after: Option<Duration>) -> Self {
        Self {
            remaining,
            reset,
            retry_after,
        }
    }

    /// Requests of cost 1 this limit admits now.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// How long until this limit is whole again (admits `burst + 1` at once).
    pub fn reset(&self) -> Duration {
        self.reset
    }

    /// When this limit refused the request: how long until it would admit it.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether this limit refused the request.
    pub fn refused(&self) -> bool {
        self.retry_after.is_some()
    }
}

/// What the script answered.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) allowed: bool,
    /// Redis's clock when it decided, since the Unix epoch.
    pub(crate) at: Duration,
    pub(crate) states: Vec<LimitState>,
}

impl Reply {
    /// Reads the script's integers; `None` when they are not what the script returns for
    /// `limits` limits (another script under the same name, say).
    pub(crate) fn parse(values: &[i64], limits: usize) -> Option<Self> {
        let (head, rest) = values.split_at_checked(3)?;
        if rest.len() != limits * 3 {
            return None;
        }
        let micros = |v: i64| u64::try_from(v).ok();
        let at = Duration::from_secs(micros(head[1])?) + Duration::from_micros(micros(head[2])?);
        let states = rest
            .chunks_exact(3)
            .map(|c| {
                let retry = micros(c[2])?;
                Some(LimitState::new(
                    micros(c[0])?,
                    Duration::from_micros(micros(c[1])?),
                    (retry > 0).then(|| Duration::from_micros(retry)),
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            allowed: head[0] == 1,
            at,
            states,
        })
    }
}

/// One decision on `tats` (theoretical arrival times in µs of the same clock as `now`; 0 for
/// none), as the script takes it: allowed only when every limit admits `cost`, and then every
/// limit is charged.
pub(crate) fn step(
    tats: &mut [u64],
    now: u64,
    cost: u64,
    limits: &[Limit],
) -> (bool, Vec<LimitState>) {
    let charge = |limit: &Limit| cost.saturating_mul(limit.interval_us());
    let start: Vec<u64> = tats.iter().map(|&t| t.max(now)).collect();
    let allowed = limits
        .iter()
        .zip(&start)
        .all(|(l, &t)| t.saturating_add(charge(l)) - now <= l.capacity_us());
    let states = limits
        .iter()
        .zip(start)
        .zip(tats.iter_mut())
        .map(|((limit, mut t), stored)| {
            let charged = t.saturating_add(charge(limit));
            let over = (charged - now).saturating_sub(limit.capacity_us());
            if allowed && cost > 0 {
                t = charged;
                *stored = t;
            }
            let ahead = t - now;
            LimitState::new(
                (limit.capacity_us().saturating_sub(ahead)) / limit.interval_us(),
                Duration::from_micros(ahead),
                (over > 0).then(|| Duration::from_micros(over)),
            )
        })
        .collect();
    (allowed, states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_client_gets_burst_plus_one_then_one_per_interval() {
        let limits = [Limit::per_second(10).burst(2)];
        let mut tats = [0];
        let now = 1_000_000;
        for expect_remaining in [2, 1, 0] {
            let (allowed, states) = step(&mut tats, now, 1, &limits);
            assert!(allowed);
            assert_eq!(states[0].remaining(), expect_remaining);
        }
        let (allowed, states) = step(&mut tats, now, 1, &limits);
        assert!(!allowed);
        assert_eq!(states[0].retry_after(), Some(Duration::from_millis(100)));
        assert_eq!(states[0].reset(), Duration::from_millis(300));
        // One interval later exactly one more.
        assert!(step(&mut tats, now + 100_000, 1, &limits).0);
        assert!(!step(&mut tats, now + 100_000, 1, &limits).0);
    }

    #[test]
    fn a_denied_request_charges_no_limit() {
        let limits = [
            Limit::per_second(10).burst(5),
            Limit::per_minute(2).burst(1),
        ];
        let mut tats = [0, 0];
        let now = 5_000_000;
        assert!(step(&mut tats, now, 1, &limits).0);
        assert!(step(&mut tats, now, 1, &limits).0);
        let before = tats;
        let (allowed, states) = step(&mut tats, now, 1, &limits);
        assert!(!allowed);
        assert_eq!(tats, before, "nothing charged");
        assert!(!states[0].refused());
        assert!(states[1].refused());
        assert_eq!(states[0].remaining(), 4);
    }

    #[test]
    fn replies_parse_only_in_the_scripts_shape() {
        let reply = Reply::parse(&[1, 1_700_000_000, 250, 3, 400, 0], 1).expect("valid");
        assert!(reply.allowed);
        assert_eq!(reply.at, Duration::new(1_700_000_000, 250_000));
        assert_eq!(reply.states[0].remaining(), 3);
        assert!(Reply::parse(&[1, 0, 0, 3, 400], 1).is_none());
        assert!(Reply::parse(&[1, 0, 0, -3, 400, 0], 1).is_none());
    }
}
