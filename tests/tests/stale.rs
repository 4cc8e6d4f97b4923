//! Serving stale on purpose, against a real server: fail-safe on a failing or panicking body,
//! the window's end, the throttle, stale-while-revalidate across two caches, soft and hard
//! timeouts, early refresh, background refreshes that fail, panic or outlive their cache, and
//! stale answers counted by why they were given.
//!
//! An entry is made stale by shortening its `PTTL` below the stale window with `PEXPIRE`, as
//! its TTL running out would, so no test sleeps through a TTL.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{Cache, Policy, key::Key, shape::Plain, telemetry};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{
        key,
        stale::{WINDOW, assert_unlocked, down, fallible, make_stale, read_fresh, stale_policy},
    },
    logs::Captured,
    recorder::TestRecorder,
    wait_until,
};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

async fn fill(cache: &Cache, key: &Key, policy: &Policy, value: u64) {
    let got = fallible(cache, key, policy, Ok(value), &AtomicUsize::new(0)).await;
    assert_eq!(got, Ok(value));
}

/// A call whose body fails, counting itself in `runs`.
async fn failing(
    cache: &Cache,
    key: &Key,
    policy: &Policy,
    runs: &AtomicUsize,
) -> Result<u64, String> {
    fallible(cache, key, policy, down(), runs).await
}

/// Stores 1 at `key` through a first call, then makes the entry stale.
async fn stale_one(server: &RedisServer, cache: &Cache, key: &Key, policy: &Policy) {
    let first = cache
        .get_or_refresh::<Plain, u64, _>(key, policy, async { 1 })
        .await;
    assert_eq!(first, 1);
    make_stale(server, key);
}

/// A private server, a cache on it, and key 1 of `policy`'s prefix holding a stale 1.
async fn start_stale(policy: &Policy) -> (RedisServer, Cache, Key) {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = key(&cache, policy.prefix(), 1);
    stale_one(&server, &cache, &key, policy).await;
    (server, cache, key)
}

/// After a background refresh of `key` failed: it is counted, nothing is left refreshing or
/// locked, the entry is left as it was, and the next call refreshes it again.
async fn assert_recovers_from_a_failed_refresh(
    server: &RedisServer,
    cache: &Cache,
    key: &Key,
    policy: &Policy,
) {
    wait_until(WAIT, || cache.stats().total.refresh_failures == 1).await;
    wait_until(WAIT, || cache.stats().refreshing == 0).await;
    assert_unlocked(server, key);
    let ttl: i64 = server.conn().pttl(key.as_str()).expect("PTTL");
    assert!(ttl > 0, "the entry is left as it was");
    // The next call answers stale and refreshes again; the entry is fresh after it.
    assert_eq!(
        cache
            .get_or_refresh::<Plain, u64, _>(key, policy, async { 2 })
            .await,
        1
    );
    wait_until(WAIT, || cache.stats().total.refreshed == 1).await;
    assert_eq!(read_fresh(cache, key, policy).await, 2);
}

#[tokio::test]
async fn a_failing_body_with_a_stale_entry_gets_the_stale_value_counted_and_the_entry_kept() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("fs").fail_safe(true);
    let key = key(&cache, "fs", 1);
    fill(&cache, &key, &policy, 7).await;
    make_stale(&server, &key);
    let runs = AtomicUsize::new(0);
    assert_eq!(failing(&cache, &key, &policy, &runs).await, Ok(7));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body was tried");
    let stats = cache.stats().total;
    assert_eq!(stats.fail_safe, 1, "{stats:?}");
    // A failed refresh neither deletes nor lengthens-then-shortens the entry: still there,
    // still stale, the same value.
    let ttl: i64 = server.conn().pttl(key.as_str()).expect("PTTL");
    assert!(ttl > 0 && ttl <= WINDOW.as_millis() as i64, "pttl {ttl}");
    assert_eq!(failing(&cache, &key, &policy, &runs).await, Ok(7));
    assert_eq!(cache.stats().total.fail_safe, 2);
}

#[tokio::test]
async fn a_failing_body_without_an_entry_gets_its_error() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("none").fail_safe(true);
    let runs = AtomicUsize::new(0);
    let got = failing(&cache, &key(&cache, "none", 1), &policy, &runs).await;
    assert_eq!(got, down());
    assert_eq!(cache.stats().total.fail_safe, 0);
}

#[tokio::test]
async fn past_the_window_a_failing_body_gets_its_error() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("past").fail_safe(true);
    let key = key(&cache, "past", 1);
    fill(&cache, &key, &policy, 7).await;
    // The window ends: Redis expires the entry.
    let _: bool = server.conn().pexpire(key.as_str(), 1).expect("PEXPIRE");
    wait_until(WAIT, || {
        !server
            .conn()
            .exists::<_, bool>(key.as_str())
            .expect("EXISTS")
    })
    .await;
    let runs = AtomicUsize::new(0);
    let got = failing(&cache, &key, &policy, &runs).await;
    assert_eq!(got, down());
}

#[tokio::test]
async fn a_fresh_entry_is_a_hit_and_a_stale_one_without_fail_safe_is_refilled() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("plain");
    let key = key(&cache, "plain", 1);
    fill(&cache, &key, &policy, 7).await;
    // Stored for the TTL plus the window.
    let ttl: i64 = server.conn().pttl(key.as_str()).expect("PTTL");
    assert!(ttl > WINDOW.as_millis() as i64, "pttl {ttl}");
    let again = cache
        .get_or_fill::<Plain, u64, _>(&key, &policy, async { unreachable!("fresh") })
        .await;
    assert_eq!(again, 7);
    make_stale(&server, &key);
    let runs = AtomicUsize::new(0);
    // Without fail-safe, stale is a miss, and the error is the answer.
    let got = failing(&cache, &key, &policy, &runs).await;
    assert_eq!(got, down());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_body_with_a_stale_entry_gets_the_stale_value_and_without_one_panics() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = Arc::new(stale_policy("panic").fail_safe(true));
    let stale_key = key(&cache, "panic", 1);
    fill(&cache, &stale_key, &policy, 7).await;
    make_stale(&server, &stale_key);
    let got = cache
        .get_or_fill::<Plain, u64, _>(&stale_key, &policy, async { panic!("the body panics") })
        .await;
    assert_eq!(got, 7);
    assert_eq!(cache.stats().total.fail_safe, 1);
    // Without a stale value the panic is the caller's.
    let (c, p) = (cache.clone(), Arc::clone(&policy));
    let cold = key(&cache, "panic", 2);
    let joined = tokio::spawn(async move {
        c.get_or_fill::<Plain, u64, _>(&cold, &p, async { panic!("the body panics") })
            .await
    })
    .await;
    assert!(joined.expect_err("it panicked").is_panic());
    // Nothing was left held: the key fills normally.
    let cold = key(&cache, "panic", 2);
    let got = cache
        .get_or_fill::<Plain, u64, _>(&cold, &policy, async { 9 })
        .await;
    assert_eq!(got, 9);
}

#[tokio::test]
async fn the_throttle_serves_stale_without_running_the_body_again() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("throttle").fail_safe_throttle(Duration::from_secs(3600));
    let key = key(&cache, "throttle", 1);
    fill(&cache, &key, &policy, 7).await;
    make_stale(&server, &key);
    let runs = AtomicUsize::new(0);
    for _ in 0..10 {
        assert_eq!(failing(&cache, &key, &policy, &runs).await, Ok(7));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the failing body ran once");
    let stats = cache.stats().total;
    assert_eq!((stats.fail_safe, stats.stale), (10, 9), "{stats:?}");
}

/// A body that waits for `gate` to open, counting its runs.
fn gated(
    runs: &Arc<AtomicUsize>,
    gate: &watch::Receiver<bool>,
    value: u64,
) -> impl Future<Output = u64> + Send + 'static {
    let (runs, mut gate) = (Arc::clone(runs), gate.clone());
    async move {
        runs.fetch_add(1, Ordering::SeqCst);
        let _ = gate.wait_for(|open| *open).await;
        value
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_under_200_callers_in_two_caches_runs_the_body_once() {
    let server = RedisServer::start();
    let caches = [server.cache().await, server.cache().await];
    let policy = Arc::new(stale_policy("swr").stale_while_revalidate(true));
    let key = key(&caches[0], "swr", 1);
    stale_one(&server, &caches[0], &key, &policy).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let cache = caches[i % 2].clone();
            let (key, policy) = (key.clone(), Arc::clone(&policy));
            let body = gated(&runs, &gate, 2);
            tokio::spawn(async move {
                cache
                    .get_or_refresh::<Plain, u64, _>(&key, &policy, body)
                    .await
            })
        })
        .collect();
    // Every caller gets the stale value while the refresh is held at the gate.
    for call in calls {
        assert_eq!(call.await.expect("no panic"), 1);
    }
    // One refresh runs its body, in one of the caches; the other gave way to its lock.
    wait_until(WAIT, || {
        caches
            .iter()
            .map(|c| c.stats().total.refreshes)
            .sum::<u64>()
            == 1
    })
    .await;
    open.send_replace(true);
    wait_until(WAIT, || {
        caches
            .iter()
            .map(|c| c.stats().total.refreshed)
            .sum::<u64>()
            == 1
            && caches.iter().all(|c| c.stats().refreshing == 0)
    })
    .await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one body run for the refresh"
    );
    let stale: u64 = caches.iter().map(|c| c.stats().total.stale).sum();
    assert_eq!(stale, 200);
    // The refreshed value is fresh now.
    assert_eq!(read_fresh(&caches[1], &key, &policy).await, 2);
    assert_unlocked(&server, &key);
}

#[tokio::test]
async fn past_the_soft_timeout_the_caller_gets_stale_and_the_background_store_lands() {
    let policy = stale_policy("soft").soft_timeout(Duration::from_millis(20));
    let (_server, cache, key) = start_stale(&policy).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&key, &policy, gated(&runs, &gate, 2))
        .await;
    assert_eq!(got, 1, "stale past the soft timeout");
    assert_eq!(cache.stats().total.stale, 1);
    open.send_replace(true);
    wait_until(WAIT, || cache.stats().total.refreshed == 1).await;
    assert_eq!(
        read_fresh(&cache, &key, &policy).await,
        2,
        "the background body's result was stored"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn within_the_soft_timeout_the_caller_gets_the_new_value() {
    // No test waits this long: the body answers at once.
    let policy = stale_policy("softok").soft_timeout(Duration::from_secs(3600));
    let (_server, cache, key) = start_stale(&policy).await;
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&key, &policy, async { 2 })
        .await;
    assert_eq!(got, 2);
    assert_eq!(cache.stats().total.stale, 0);
}

#[tokio::test]
async fn early_refresh_runs_the_body_before_expiry_while_every_caller_hits() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("early").early_refresh(true);
    let key = key(&cache, "early", 1);
    // A slow first body: XFetch weighs the time left against it.
    let first = cache
        .get_or_refresh::<Plain, u64, _>(&key, &policy, async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            1
        })
        .await;
    assert_eq!(first, 1);
    let runs = Arc::new(AtomicUsize::new(0));
    let window_ms = WINDOW.as_millis() as i64;
    let mut calls = 0;
    // 50 ms of freshness left against a 300 ms body: each call refreshes with p = 0.85.
    while cache.stats().total.early_refreshes == 0 && calls < 200 {
        let _: bool = server
            .conn()
            .pexpire(key.as_str(), window_ms + 50)
            .expect("PEXPIRE");
        let r = Arc::clone(&runs);
        let got = cache
            .get_or_refresh::<Plain, u64, _>(&key, &policy, async move {
                r.fetch_add(1, Ordering::SeqCst);
                2
            })
            .await;
        assert!(got == 1 || got == 2);
        calls += 1;
    }
    assert_eq!(
        cache.stats().total.early_refreshes,
        1,
        "after {calls} calls"
    );
    wait_until(WAIT, || cache.stats().total.refreshed == 1).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stats = cache.stats().total;
    // No caller waited for the body: every call but the first was a hit.
    assert_eq!((stats.misses, stats.hits), (1, calls), "{stats:?}");
}

#[tokio::test]
async fn a_panicking_refresh_is_counted_and_leaves_nothing_held() {
    let policy = stale_policy("rpanic").stale_while_revalidate(true);
    let (server, cache, key) = start_stale(&policy).await;
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&key, &policy, async { panic!("refresh panics") })
        .await;
    assert_eq!(got, 1);
    assert_recovers_from_a_failed_refresh(&server, &cache, &key, &policy).await;
}

#[tokio::test]
async fn a_refresh_past_its_hard_timeout_is_dropped_and_leaves_nothing_held() {
    let policy = stale_policy("hard")
        .stale_while_revalidate(true)
        .hard_timeout(Duration::from_millis(50));
    let (server, cache, key) = start_stale(&policy).await;
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&key, &policy, std::future::pending())
        .await;
    assert_eq!(got, 1);
    assert_recovers_from_a_failed_refresh(&server, &cache, &key, &policy).await;
}

#[tokio::test]
async fn a_stored_absence_has_no_stale_window() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let policy = stale_policy("absent")
        .null_ttl(Duration::from_secs(30))
        .expect("valid null ttl")
        .fail_safe(true);
    let key = key(&cache, "absent", 1);
    let got = cache
        .get_or_fill::<cached_runtime::shape::Optional, Option<u64>, _>(&key, &policy, async {
            None
        })
        .await;
    assert_eq!(got, None);
    let ttl: i64 = server.conn().pttl(key.as_str()).expect("PTTL");
    assert!(ttl > 0 && ttl <= 30_000, "pttl {ttl}");
    // And it is a null hit, not a stale one.
    let again = cache
        .get_or_fill::<cached_runtime::shape::Optional, Option<u64>, _>(&key, &policy, async {
            Some(1)
        })
        .await;
    assert_eq!(again, None);
    assert_eq!(cache.stats().total.null_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refreshes_are_bounded_and_a_stale_answer_does_not_wait_for_a_slot() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .max_refreshes(1)
        .build()
        .await
        .expect("cache");
    let policy = stale_policy("bound").stale_while_revalidate(true);
    let (a, b) = (key(&cache, "bound", 1), key(&cache, "bound", 2));
    for k in [&a, &b] {
        stale_one(&server, &cache, k, &policy).await;
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&a, &policy, gated(&runs, &gate, 2))
        .await;
    assert_eq!(got, 1);
    wait_until(WAIT, || cache.stats().total.refreshes == 1).await;
    // The one slot is taken: `b` is answered stale and no refresh starts for it.
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&b, &policy, gated(&runs, &gate, 2))
        .await;
    assert_eq!(got, 1);
    assert_eq!(cache.stats().refreshing, 1);
    open.send_replace(true);
    wait_until(WAIT, || cache.stats().refreshing == 0).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // With the slot free, `b` refreshes.
    let _ = cache
        .get_or_refresh::<Plain, u64, _>(&b, &policy, gated(&runs, &gate, 2))
        .await;
    wait_until(WAIT, || cache.stats().total.refreshed == 2).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_during_its_soft_timeout_leaves_the_refresh_to_finish_and_store() {
    let policy = Arc::new(stale_policy("dropped").soft_timeout(Duration::from_secs(3600)));
    let (server, cache, key) = start_stale(&policy).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let body = gated(&runs, &gate, 2);
    let (c, k, p) = (cache.clone(), key.clone(), Arc::clone(&policy));
    let caller = tokio::spawn(async move { c.get_or_refresh::<Plain, u64, _>(&k, &p, body).await });
    wait_until(WAIT, || runs.load(Ordering::SeqCst) == 1).await;
    caller.abort();
    assert!(caller.await.expect_err("aborted").is_cancelled());
    open.send_replace(true);
    wait_until(WAIT, || {
        let stats = cache.stats();
        stats.total.refreshed == 1 && stats.refreshing == 0
    })
    .await;
    assert_unlocked(&server, &key);
    assert_eq!(
        read_fresh(&cache, &key, &policy).await,
        2,
        "the refresh stored its result"
    );
}

/// Sets its flag when dropped: tells whether a body's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_cache_handle_stops_its_refreshes_and_releases_their_lock() {
    // No hard timeout: the refresh's lock lives 30 s, longer than any wait here.
    let policy = stale_policy("ends").stale_while_revalidate(true);
    let (server, cache, key) = start_stale(&policy).await;
    let other = cache.clone();
    let (started, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let body = {
        let (started, flag) = (Arc::clone(&started), DropFlag(Arc::clone(&dropped)));
        async move {
            let _flag = flag;
            started.store(true, Ordering::SeqCst);
            std::future::pending::<u64>().await
        }
    };
    let got = other
        .get_or_refresh::<Plain, u64, _>(&key, &policy, body)
        .await;
    assert_eq!(got, 1);
    wait_until(WAIT, || started.load(Ordering::SeqCst)).await;
    assert_eq!(cache.stats().refreshing, 1);
    let locked: bool = server.conn().exists(key.lock_key()).expect("EXISTS");
    assert!(locked, "the refresh holds the fill lock");
    assert!(!dropped.load(Ordering::SeqCst));
    drop(cache);
    drop(other);
    wait_until(WAIT, || dropped.load(Ordering::SeqCst)).await;
    wait_until(WAIT, || {
        !server
            .conn()
            .exists::<_, bool>(key.lock_key())
            .expect("EXISTS")
    })
    .await;
    // The entry is left as it was.
    let ttl: i64 = server.conn().pttl(key.as_str()).expect("PTTL");
    assert!(ttl > 0, "pttl {ttl}");
}

/// Captures this thread's warnings into `logs` while the guard lives (a current-thread
/// runtime runs the cache's tasks here).
fn capture_warnings(logs: &Captured) -> tracing::subscriber::DefaultGuard {
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_default(subscriber)
}

#[tokio::test(flavor = "current_thread")]
async fn a_panicking_refresh_is_counted_and_logged_with_its_message() {
    let logs = Captured::default();
    let _guard = capture_warnings(&logs);
    let policy = stale_policy("rlog").stale_while_revalidate(true);
    let (_server, cache, key) = start_stale(&policy).await;
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&key, &policy, async { panic!("the refresh body panics") })
        .await;
    assert_eq!(got, 1);
    wait_until(WAIT, || cache.stats().total.refresh_failures == 1).await;
    let text = logs.text();
    assert!(
        text.contains("background refresh panicked") && text.contains("the refresh body panics"),
        "{text}"
    );
    wait_until(WAIT, || cache.stats().refreshing == 0).await;
    assert_eq!(cache.stats().total.refreshed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stale_answer_is_counted_by_its_reason() {
    let recorder = TestRecorder::global();
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .name("stale-reasons")
        .build()
        .await
        .expect("cache");
    let runs = AtomicUsize::new(0);
    let counts = |prefix: &str| {
        cache
            .stats()
            .prefixes
            .get(prefix)
            .copied()
            .unwrap_or_default()
    };

    // Stale-while-revalidate.
    let swr = stale_policy("r-swr").stale_while_revalidate(true);
    let k = key(&cache, "r-swr", 1);
    fill(&cache, &k, &swr, 1).await;
    make_stale(&server, &k);
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&k, &swr, async { 2 })
        .await;
    assert_eq!(got, 1);
    // Past a soft timeout.
    let soft = stale_policy("r-soft").soft_timeout(Duration::from_millis(20));
    let k = key(&cache, "r-soft", 1);
    fill(&cache, &k, &soft, 1).await;
    make_stale(&server, &k);
    let (open, gate) = watch::channel(false);
    let got = cache
        .get_or_refresh::<Plain, u64, _>(&k, &soft, gated(&Arc::new(AtomicUsize::new(0)), &gate, 2))
        .await;
    assert_eq!(got, 1);
    open.send_replace(true);
    // A failing body, then the throttle.
    let safe = stale_policy("r-safe").fail_safe_throttle(Duration::from_secs(3600));
    let k = key(&cache, "r-safe", 1);
    fill(&cache, &k, &safe, 1).await;
    make_stale(&server, &k);
    for _ in 0..3 {
        assert_eq!(failing(&cache, &k, &safe, &runs).await, Ok(1));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "throttled after the first failure"
    );

    let reason = |prefix: &str, reason: &str| {
        recorder.counter(
            telemetry::STALE_SERVED,
            &[
                ("cache", "stale-reasons"),
                ("prefix", prefix),
                ("reason", reason),
            ],
        )
    };
    let c = counts("r-swr");
    assert_eq!(
        (c.stale_revalidate, c.stale_served(), c.stale),
        (1, 1, 1),
        "{c:?}"
    );
    assert_eq!(reason("r-swr", "revalidate"), Some(1));
    assert_eq!(reason("r-swr", "soft_timeout"), Some(0));
    let c = counts("r-soft");
    assert_eq!(
        (c.stale_soft_timeout, c.stale_served(), c.stale),
        (1, 1, 1),
        "{c:?}"
    );
    assert_eq!(reason("r-soft", "soft_timeout"), Some(1));
    let c = counts("r-safe");
    assert_eq!(
        (c.stale_fail_safe, c.stale_throttle, c.stale_served()),
        (1, 2, 3),
        "{c:?}"
    );
    // Every fail-safe answer, whatever its reason, in `fail_safe` too; the first one's call
    // ran the body (a miss), the throttled ones did not (stale).
    assert_eq!((c.fail_safe, c.misses, c.stale), (3, 2, 2), "{c:?}");
    assert_eq!(reason("r-safe", "fail_safe"), Some(1));
    assert_eq!(reason("r-safe", "throttle"), Some(2));
    assert_eq!(
        recorder.counter(
            telemetry::FAIL_SAFE,
            &[("cache", "stale-reasons"), ("prefix", "r-safe")]
        ),
        Some(3)
    );
    wait_until(WAIT, || cache.stats().refreshing == 0).await;
}
