//! The queue when Redis is frozen or killed, the eviction check at start, and what an idle
//! worker sends: each on a private server.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use cached_runtime::{
    Redis,
    queue::{EvictionCheck, Job, Queue},
};
use tests::{GENEROUS_TIMEOUT, RedisServer, wait_until, wait_until_async};

const WITHIN: Duration = Duration::from_secs(30);

/// A worker that records each job's number, behind `gate` when one is given.
fn recording_worker(
    q: &Queue<u32>,
    seen: &Arc<Mutex<Vec<u32>>>,
    gate: Option<Arc<AtomicBool>>,
) -> cached_runtime::queue::Worker {
    let seen = Arc::clone(seen);
    q.worker(move |job: Job<u32>| {
        let (seen, gate) = (Arc::clone(&seen), gate.clone());
        async move {
            if let Some(gate) = gate {
                while !gate.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seen.lock().expect("lock").push(*job.payload());
            Ok(())
        }
    })
    .concurrency(4)
    .idle_wait(Duration::from_millis(200))
    .error_backoff(Duration::from_millis(20), Duration::from_millis(200))
    .start()
    .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_frozen_redis_fails_visibly_and_the_worker_resumes_after() {
    let server = RedisServer::start();
    let redis = Redis::builder(server.url())
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("connect");
    let q: Queue<u32> = Queue::builder(&redis, "frozen")
        .build()
        .await
        .expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = recording_worker(&q, &seen, None);
    for n in 0..20 {
        q.push(&n).await.expect("push");
    }
    wait_until(WITHIN, || seen.lock().expect("lock").len() == 20).await;
    server.freeze();
    // The error is the caller's to handle; the push may still land when Redis wakes up
    // (a timeout cannot tell), which is what idempotency keys are for.
    let err = q.push(&99).await.expect_err("redis is frozen");
    assert!(err.is_transient(), "{err}");
    // The worker notices (its wait or take fails) and backs off.
    wait_until(WITHIN, || worker.stats().errors > 0).await;
    server.thaw();
    // Pushes go through again (once the breaker lets them), and the worker runs them.
    let mut n = 20;
    wait_until_async(WITHIN, || {
        let q = q.clone();
        async move { q.push(&n).await.is_ok() }
    })
    .await;
    n += 1;
    while n < 40 {
        q.push(&n).await.expect("push");
        n += 1;
    }
    let all: HashSet<u32> = (0..40).collect();
    wait_until(WITHIN, || {
        let ran: HashSet<u32> = seen.lock().expect("lock").iter().copied().collect();
        ran.is_superset(&all)
    })
    .await;
    let ran: Vec<u32> = seen.lock().expect("lock").clone();
    assert!(ran.iter().all(|n| all.contains(n) || *n == 99), "{ran:?}");
    let c = q.counts().await.expect("counts");
    assert_eq!((c.pending(), c.dead), (0, 0), "{c:?}");
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_in_an_append_only_redis_survive_its_kill_and_the_worker_reconnects() {
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut first = RedisServer::start_with_args(&aof);
    let redis = Redis::builder(first.url())
        .command_timeout(GENEROUS_TIMEOUT)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("connect");
    let q: Queue<u32> = Queue::builder(&redis, "restart")
        .build()
        .await
        .expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(AtomicBool::new(false));
    let worker = recording_worker(&q, &seen, Some(Arc::clone(&gate)));
    for n in 0..50 {
        q.push(&n).await.expect("push");
    }
    // Four jobs in hand, the rest waiting, when Redis dies.
    wait_until(WITHIN, || worker.stats().running == 4).await;
    first.kill();
    let err = q.push(&99).await.expect_err("redis is down");
    assert!(err.is_transient(), "{err}");
    let dir = first.dir().to_string_lossy().into_owned();
    let mut args = aof.to_vec();
    args.extend(["--dir", &dir]);
    let second = RedisServer::start_with(first.port(), &args);
    gate.store(true, Ordering::SeqCst);
    let mut n = 50;
    wait_until_async(WITHIN, || {
        let q = q.clone();
        async move { q.push(&n).await.is_ok() }
    })
    .await;
    n += 1;
    while n < 60 {
        q.push(&n).await.expect("push");
        n += 1;
    }
    let all: HashSet<u32> = (0..60).collect();
    wait_until(WITHIN, || {
        let ran: HashSet<u32> = seen.lock().expect("lock").iter().copied().collect();
        ran.is_superset(&all)
    })
    .await;
    wait_until_async(WITHIN, || {
        let q = q.clone();
        async move {
            q.counts()
                .await
                .is_ok_and(|c| c.pending() == 0 && c.dead == 0)
        }
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_keys_is_refused_unless_told_to_warn() {
    for (policy, refused) in [
        ("allkeys-lru", true),
        ("allkeys-lfu", true),
        ("allkeys-random", true),
        ("volatile-lru", false),
        ("noeviction", false),
    ] {
        let server = RedisServer::start_with_args(&["--maxmemory-policy", policy]);
        let redis = Redis::builder(server.url()).build().await.expect("connect");
        let built = Queue::<u32>::builder(&redis, "evict").build().await;
        match (refused, built) {
            (true, Err(e)) => {
                let text = e.to_string();
                assert!(
                    text.contains(policy) && text.contains("noeviction"),
                    "{text}"
                );
            }
            (false, Ok(_)) => {}
            (true, Ok(_)) => panic!("{policy}: a queue started on a redis that may evict"),
            (false, Err(e)) => panic!("{policy}: refused: {e}"),
        }
        let warned = Queue::<u32>::builder(&redis, "evict")
            .eviction_check(EvictionCheck::Warn)
            .build()
            .await;
        assert!(warned.is_ok(), "{policy}: {warned:?}");
    }
}

/// `calls` of each command in `INFO commandstats`.
fn command_calls(server: &RedisServer) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_sends_nothing_but_its_blocking_waits() {
    let server = RedisServer::start();
    let redis = Redis::builder(server.url()).build().await.expect("connect");
    let q: Queue<u32> = Queue::builder(&redis, "idle").build().await.expect("build");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let worker = recording_worker(&q, &seen, None);
    q.push(&1).await.expect("push");
    wait_until(WITHIN, || seen.lock().expect("lock").len() == 1).await;
    // Idle: its blocking wait times out every 200 ms and is sent again.
    let blpops =
        |calls: &std::collections::HashMap<String, u64>| calls.get("blpop").copied().unwrap_or(0);
    wait_until(WITHIN, || blpops(&command_calls(&server)) >= 2).await;
    let before = command_calls(&server);
    wait_until(WITHIN, || {
        blpops(&command_calls(&server)) >= blpops(&before) + 5
    })
    .await;
    let after = command_calls(&server);
    // The connection layer's own checks (PING) and this test's INFO aside, only BLPOP grew.
    let grew: Vec<(&String, u64)> = after
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "blpop" | "info" | "ping"))
        .filter_map(|(name, n)| {
            let was = before.get(name).copied().unwrap_or(0);
            (*n > was).then_some((name, n - was))
        })
        .collect();
    assert!(grew.is_empty(), "an idle worker sent {grew:?}");
    worker.shutdown(Duration::from_secs(5)).await;
}
