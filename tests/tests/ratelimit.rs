//! The rate limiter against real servers, one server and the cluster: exact limits under
//! concurrency from several processes, no burst at a window edge, several limits decided
//! together, refusals without round trips, `NOSCRIPT` recovered once, and the fail-open and
//! fail-closed policies with Redis frozen and killed.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cached_runtime::{
    Redis,
    connection::cmd,
    ratelimit::{DecidedBy, Decision, Limit, RateLimiter},
};
use tests::{
    deployment::Deployment, deployment_suite, recorder::TestRecorder, topology::Topology,
    wait_until_async,
};

fn limiter(redis: &Redis, name: &str, limits: &[Limit]) -> RateLimiter {
    limits
        .iter()
        .fold(RateLimiter::on(redis, name), |b, l| b.limit(l.clone()))
        .fail_closed()
        .build()
        .expect("a valid limiter")
}

/// Redis's clock, in microseconds since the epoch.
async fn redis_now(redis: &Redis) -> u64 {
    let (secs, micros): (u64, u64) = redis.query(&cmd("TIME")).await.expect("TIME");
    secs * 1_000_000 + micros
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).expect("fits")
}

/// The most of `times` (sorted, µs) that fall in any half-open span of `span` µs.
fn densest(times: &[u64], span: u64) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= span {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// 64 callers spread over 4 limiters on 4 connections (4 processes) hammer one client for
/// 1.6 periods: no span of one period ever admits more than `rate + burst`, and the first
/// period admits exactly that many.
async fn allowed_requests_in_any_period_never_exceed_rate_plus_burst_and_reach_it(d: Deployment) {
    let limit = Limit::per_second(20).burst(5);
    let period = micros(limit.period());
    let quota = usize::try_from(limit.quota()).expect("small");
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(limiter(
            &d.redis().await,
            "exact",
            std::slice::from_ref(&limit),
        ));
    }
    let allowed = Arc::new(Mutex::new(Vec::<u64>::new()));
    let first = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let limiter = limiters[i % 4].clone();
            let (allowed, first, done, offered) = (
                Arc::clone(&allowed),
                Arc::clone(&first),
                Arc::clone(&done),
                Arc::clone(&offered),
            );
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    assert!(started.elapsed() < Duration::from_secs(30), "ran too long");
                    offered.fetch_add(1, Ordering::Relaxed);
                    let decision = limiter.check("client", 1).await;
                    assert_ne!(
                        decision.decided_by(),
                        DecidedBy::Unavailable,
                        "{decision:?}"
                    );
                    if let Some(at) = decision.redis_time() {
                        let at = micros(at);
                        let start = first.fetch_min(at, Ordering::SeqCst).min(at);
                        if at >= start + period * 8 / 5 {
                            done.store(true, Ordering::Relaxed);
                        }
                        if decision.is_allowed() {
                            allowed
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(at);
                        }
                    }
                    if !decision.is_allowed() {
                        // Refused in process until the retry time: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("a caller panicked");
    }
    let mut times = allowed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    times.sort_unstable();
    let offered = offered.load(Ordering::Relaxed);
    assert!(
        offered > 2 * times.len() as u64,
        "offered {offered}, allowed {}",
        times.len()
    );
    assert!(
        densest(&times, period) <= quota,
        "{} admitted within one period, quota {quota}",
        densest(&times, period)
    );
    let first_period = times.iter().filter(|&&t| t < times[0] + period).count();
    assert_eq!(
        first_period, quota,
        "offered more, the first period admits the quota"
    );
}

/// Half a burst just before a clock second, half just after: a fixed window would admit the
/// rate twice within a few milliseconds; GCRA admits no more than its emission schedule.
async fn no_double_burst_across_a_window_edge(d: Deployment) {
    let redis = d.redis().await;
    let limit = Limit::per_second(20);
    let interval = micros(limit.period()) / limit.rate();
    let limiter = limiter(&redis, "edge", &[limit]);
    let burst = |limiter: RateLimiter| async move {
        let calls = (0..100).map(|_| {
            let limiter = limiter.clone();
            async move { limiter.check("client", 1).await }
        });
        futures_util::future::join_all(calls).await
    };
    // Late in a second of Redis's clock.
    wait_until_async(Duration::from_secs(10), || async {
        (900_000..950_000).contains(&(redis_now(&redis).await % 1_000_000))
    })
    .await;
    let before = burst(limiter.clone()).await;
    let first = before
        .iter()
        .filter(|d| d.is_allowed())
        .filter_map(Decision::redis_time)
        .map(micros)
        .min()
        .expect("the first request of an idle client is admitted");
    // Past the next second, and one interval after the first admission.
    let next_second = (first / 1_000_000 + 1) * 1_000_000;
    wait_until_async(Duration::from_secs(10), || async {
        redis_now(&redis).await >= next_second.max(first + interval)
    })
    .await;
    let after = burst(limiter).await;
    let admitted: Vec<u64> = before
        .iter()
        .chain(&after)
        .filter(|d| d.is_allowed())
        .map(|d| micros(d.redis_time().expect("Redis admitted it")))
        .collect();
    let last = admitted.iter().copied().max().expect("admitted some");
    let schedule = 1 + (last - first) / interval;
    assert!(
        admitted.len() as u64 <= schedule,
        "{} admitted in {} µs across a second boundary; GCRA allows {schedule}",
        admitted.len(),
        last - first
    );
    assert!(
        after.iter().any(Decision::is_allowed),
        "an interval later one more is admitted"
    );
    assert!(admitted.len() < 40, "a fixed window would have admitted 40");
}

/// 100 a second (burst 9) and 3 a minute (burst 2): the fourth request is refused by the
/// minute alone, and charged to neither.
async fn several_limits_are_decided_together_and_a_refusal_charges_none(d: Deployment) {
    let redis = d.redis().await;
    let fast = Limit::per_second(100).burst(9).name("fast");
    let slow = Limit::per_minute(3).burst(2).name("slow");
    let limiter = limiter(&redis, "multi", &[fast, slow]);
    for left in [2, 1, 0] {
        let decision = limiter.check("user:1", 1).await;
        assert!(decision.is_allowed(), "{decision:?}");
        assert_eq!(decision.remaining(), left);
    }
    let refused = limiter.check("user:1", 1).await;
    assert!(!refused.is_allowed());
    assert_eq!(refused.decided_by(), DecidedBy::Redis);
    let states: Vec<_> = refused
        .limits()
        .map(|(l, s)| (l.policy_name().into_owned(), *s))
        .collect();
    assert!(!states[0].1.refused(), "fast admits it");
    assert!(states[1].1.refused(), "slow refuses it");
    // A peek (cost 0) goes to Redis and charges nothing.
    let peek = limiter.check("user:1", 0).await;
    let fast_left = peek.limits().next().map(|(_, s)| s.remaining());
    assert!(fast_left >= Some(7), "the refusal charged fast: {peek:?}");
    // One hash tag for a client's keys: one slot on a cluster.
    let keys = limiter.keys("user:1");
    let tag = |k: &str| k[k.find('{').expect("{")..=k.find('}').expect("}")].to_owned();
    assert_eq!(tag(&keys[0]), tag(&keys[1]));
    assert_ne!(keys[0], keys[1]);
    // Another client is untouched.
    assert_eq!(limiter.check("user:2", 1).await.remaining(), 2);
}

/// Costs: a request that does not fit is refused, a smaller one may still fit, and one larger
/// than a limit ever admits is refused without a round trip and without a retry time.
async fn costs_are_charged_whole_or_not_at_all(d: Deployment) {
    let redis = d.redis().await;
    // One unit an hour comes back: nothing refills while the test runs.
    let limiter = limiter(&redis, "cost", &[Limit::per_hour(60).burst(4)]);
    let a = limiter.check("c", 3).await;
    assert!(a.is_allowed());
    assert_eq!(a.remaining(), 2);
    let b = limiter.check("c", 3).await;
    assert!(!b.is_allowed());
    let c = limiter.check("c", 2).await;
    assert!(c.is_allowed(), "a smaller cost fits: {c:?}");
    assert_eq!(c.decided_by(), DecidedBy::Redis);
    assert_eq!(c.remaining(), 0);
    let evalsha = d.calls("evalsha");
    let too_big = limiter.check("fresh", 6).await;
    assert!(!too_big.is_allowed());
    assert_eq!(too_big.decided_by(), DecidedBy::Local);
    assert_eq!(too_big.retry_after(), None);
    assert_eq!(d.calls("evalsha"), evalsha, "no round trip");
}

/// A client Redis refused is refused in process until the retry time Redis named: no
/// command; after it, Redis decides again.
async fn a_refused_client_costs_no_round_trip_until_its_retry_time(d: Deployment) {
    let recorder = TestRecorder::global();
    let redis = d.redis().await;
    // Its own series: the standalone and cluster runs of this test run side by side.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let name = &format!("local-{}", RUNS.fetch_add(1, Ordering::Relaxed));
    let limiter = limiter(&redis, name, &[Limit::per_second(1)]);
    let mut admitted = 0;
    let refused = loop {
        let decision = limiter.check("c", 1).await;
        assert_eq!(decision.decided_by(), DecidedBy::Redis);
        if !decision.is_allowed() {
            break decision;
        }
        admitted += 1;
    };
    let retry = refused.retry_after().expect("refused");
    let deadline = Instant::now() + retry;
    let evalsha = d.calls("evalsha");
    let mut local = 0;
    while Instant::now() + Duration::from_millis(10) < deadline && local < 1000 {
        let again = limiter.check("c", 1).await;
        assert!(!again.is_allowed());
        assert_eq!(again.decided_by(), DecidedBy::Local);
        assert!(again.retry_after().expect("refused") <= retry);
        local += 1;
    }
    assert!(local > 0);
    assert_eq!(
        d.calls("evalsha"),
        evalsha,
        "{local} refusals sent commands"
    );
    tokio::time::sleep_until(deadline.into()).await;
    let later = limiter.check("c", 1).await;
    assert_eq!(later.decided_by(), DecidedBy::Redis);
    assert!(later.is_allowed(), "{later:?}");
    let by = |result, by| {
        recorder
            .counter(
                "redis_ratelimit_decisions_total",
                &[("limiter", name), ("result", result), ("decided_by", by)],
            )
            .unwrap_or(0)
    };
    assert_eq!(by("denied", "local"), local);
    assert_eq!(by("allowed", "redis"), admitted + 1);
    assert_eq!(by("denied", "redis"), 1);
}

/// `SCRIPT FLUSH` between two decisions: the second gets `NOSCRIPT`, loads the script, runs
/// once, and is charged once.
async fn noscript_after_script_flush_is_recovered_without_double_counting(d: Deployment) {
    let redis = d.redis().await;
    let limiter = limiter(&redis, "noscript", &[Limit::per_hour(60).burst(9)]);
    assert_eq!(limiter.check("c", 1).await.remaining(), 9);
    let flushed: Vec<String> = d.on_every_primary(redis::cmd("SCRIPT").arg("FLUSH"));
    assert!(flushed.iter().all(|r| r == "OK"));
    let evalsha = d.calls("evalsha");
    let second = limiter.check("c", 1).await;
    assert_eq!(second.decided_by(), DecidedBy::Redis);
    assert!(second.is_allowed());
    assert_eq!(second.remaining(), 8, "charged exactly once");
    assert_eq!(
        d.calls("evalsha"),
        evalsha + 2,
        "EVALSHA, NOSCRIPT, EVALSHA again"
    );
    assert_eq!(limiter.check("c", 0).await.remaining(), 8);
}

deployment_suite!(standalone, cluster;
    allowed_requests_in_any_period_never_exceed_rate_plus_burst_and_reach_it,
    no_double_burst_across_a_window_edge,
    several_limits_are_decided_together_and_a_refusal_charges_none,
    costs_are_charged_whole_or_not_at_all,
    a_refused_client_costs_no_round_trip_until_its_retry_time,
    noscript_after_script_flush_is_recovered_without_double_counting,
);

/// How Redis fails in a test.
#[derive(Clone, Copy, Debug)]
enum Outage {
    Frozen,
    Killed,
}

async fn outage_limiter(d: &mut Deployment, name: &str, fail_open: bool) -> RateLimiter {
    let redis = d.redis_with_timeout(Duration::from_millis(200)).await;
    // Nothing refills while the test runs (one an hour).
    let builder = RateLimiter::on(&redis, name).limit(Limit::per_hour(60).burst(2));
    let builder = if fail_open {
        builder.fail_open()
    } else {
        builder.fail_closed()
    };
    builder.build().expect("a valid limiter")
}

fn unavailable(name: &str, policy: &str) -> u64 {
    TestRecorder::global()
        .counter(
            "redis_ratelimit_redis_unavailable_total",
            &[("limiter", name), ("policy", policy)],
        )
        .unwrap_or(0)
}

async fn fail_open_keeps_an_in_process_limit(outage: Outage) {
    TestRecorder::global();
    let mut d = Deployment::start(Topology::Standalone);
    let name = format!("open-{outage:?}");
    let limiter = outage_limiter(&mut d, &name, true).await;
    assert_eq!(
        limiter.check("warm", 1).await.decided_by(),
        DecidedBy::Redis
    );
    match outage {
        Outage::Frozen => d.server().freeze(),
        Outage::Killed => d.server().kill(),
    }
    // Through timeouts, then the open circuit: the fallback decides every time.
    let decisions: Vec<Decision> = {
        let mut out = Vec::new();
        for _ in 0..8 {
            out.push(limiter.check("c", 1).await);
        }
        out
    };
    assert!(
        decisions
            .iter()
            .all(|d| d.decided_by() == DecidedBy::Fallback),
        "{decisions:?}"
    );
    let admitted = decisions.iter().filter(|d| d.is_allowed()).count();
    assert_eq!(
        admitted, 3,
        "burst 2: three at once, then the in-process limit holds"
    );
    assert!(decisions[3].retry_after().is_some());
    assert_eq!(unavailable(&name, "fail_open"), 8);
    if let Outage::Frozen = outage {
        d.server().thaw();
        wait_until_async(Duration::from_secs(20), || async {
            limiter.check("after", 0).await.decided_by() == DecidedBy::Redis
        })
        .await;
    }
}

async fn fail_closed_refuses_while_redis_cannot_answer(outage: Outage) {
    TestRecorder::global();
    let mut d = Deployment::start(Topology::Standalone);
    let name = format!("closed-{outage:?}");
    let limiter = outage_limiter(&mut d, &name, false).await;
    assert!(limiter.check("c", 1).await.is_allowed());
    match outage {
        Outage::Frozen => d.server().freeze(),
        Outage::Killed => d.server().kill(),
    }
    for _ in 0..8 {
        let decision = limiter.check("c", 1).await;
        assert!(!decision.is_allowed());
        assert_eq!(decision.decided_by(), DecidedBy::Unavailable);
        assert_eq!(decision.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(decision.refusal_status(), Some(503));
    }
    assert_eq!(unavailable(&name, "fail_closed"), 8);
    if let Outage::Frozen = outage {
        d.server().thaw();
        wait_until_async(Duration::from_secs(20), || async {
            limiter.check("c", 1).await.decided_by() == DecidedBy::Redis
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_with_redis_frozen_keeps_an_in_process_limit() {
    fail_open_keeps_an_in_process_limit(Outage::Frozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_with_redis_killed_keeps_an_in_process_limit() {
    fail_open_keeps_an_in_process_limit(Outage::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_with_redis_frozen_refuses() {
    fail_closed_refuses_while_redis_cannot_answer(Outage::Frozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_with_redis_killed_refuses() {
    fail_closed_refuses_while_redis_cannot_answer(Outage::Killed).await;
}

#[tokio::test]
async fn a_limiter_must_say_what_happens_when_redis_cannot_answer() {
    let d = Deployment::start(Topology::Standalone);
    let redis = d.redis().await;
    let err = RateLimiter::on(&redis, "undecided")
        .limit(Limit::per_second(1))
        .build()
        .expect_err("no policy chosen");
    assert!(
        err.to_string().contains("fail_open() or fail_closed()"),
        "{err}"
    );
    let err = RateLimiter::on(&redis, "bad name!")
        .limit(Limit::per_second(1))
        .fail_open()
        .build()
        .expect_err("a space");
    assert!(err.to_string().contains("A-Z a-z 0-9"), "{err}");
    let err = RateLimiter::on(&redis, "twins")
        .limit(Limit::per_second(1))
        .limit(Limit::per_second(1).burst(3))
        .fail_open()
        .build()
        .expect_err("two limits share the default name");
    assert!(err.to_string().contains("name them apart"), "{err}");
}
