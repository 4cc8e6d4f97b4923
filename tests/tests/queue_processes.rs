//! Queue workers as real processes, killed (`SIGKILL`) at random points over 10,000 jobs and
//! stalled (`SIGSTOP`) past their lease, on one server and on the cluster.

use std::{collections::HashMap, time::Duration};

use cached_runtime::queue::{JobState, Queue, Settled};
use futures_util::future::join_all;
use redis::Commands as _;
use tests::{
    Signal,
    queue::{QueueRedis, WorkerProcess},
    queue_suite, wait_until_async,
};

const BINARY: &str = env!("CARGO_BIN_EXE_queue_worker");
const JOBS: u64 = 10_000;
const PROCESSES: usize = 3;
const CONCURRENCY: u64 = 8;
const KILLS: u64 = 6;

queue_suite!(standalone, cluster;
    workers_killed_at_random_points_lose_no_job_and_duplicates_stay_bounded,
    a_stalled_worker_process_cannot_ack_a_job_another_worker_took_over,
);

fn worker_args(redis: &QueueRedis, queue: &str, extra: &[&str]) -> Vec<String> {
    let mut args = redis.worker_args();
    args.extend(["--queue", queue].map(str::to_owned));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

async fn workers_killed_at_random_points_lose_no_job_and_duplicates_stay_bounded(
    redis: QueueRedis,
) {
    let name = "kills";
    let q: Queue<u64> = Queue::builder(&redis.redis().await, name)
        .build()
        .await
        .expect("build");
    let mut ids = Vec::new();
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(500) {
        let pushed = join_all(chunk.iter().map(|n| q.push(n))).await;
        ids.extend(pushed.into_iter().map(|p| p.expect("push").0));
    }
    let concurrency = CONCURRENCY.to_string();
    let args = worker_args(
        &redis,
        name,
        &[
            "--concurrency",
            &concurrency,
            "--lease-ms",
            "2000",
            "--keep",
            "20000",
        ],
    );
    let spawn = || {
        let w = WorkerProcess::spawn(BINARY, &args);
        w.expect_line("ready", Duration::from_secs(20));
        w
    };
    let mut workers: Vec<WorkerProcess> = (0..PROCESSES).map(|_| spawn()).collect();
    let q = &q;
    let counts = || async move { q.counts().await.expect("counts") };
    let mut kills = 0;
    while kills < KILLS {
        // A random point: after some more jobs completed.
        let target = counts().await.completed + fastrand::u64(100..900);
        wait_until_async(Duration::from_secs(120), || async move {
            let c = counts().await;
            c.completed >= target || c.pending() == 0
        })
        .await;
        if counts().await.pending() == 0 {
            break;
        }
        let victim = fastrand::usize(..workers.len());
        workers[victim].kill();
        kills += 1;
        workers[victim] = spawn();
    }
    wait_until_async(Duration::from_secs(180), || async move {
        counts().await.pending() == 0
    })
    .await;
    let c = counts().await;
    assert_eq!(c.dead, 0, "{c:?}");
    assert_eq!(c.completed, JOBS, "every job completed: {c:?}");
    let runs: HashMap<u64, u64> = redis
        .conn()
        .hgetall(format!("runs:{{{name}}}"))
        .expect("HGETALL runs");
    let missing: Vec<&u64> = ids.iter().filter(|id| !runs.contains_key(id)).collect();
    assert!(missing.is_empty(), "jobs never run: {missing:?}");
    assert_eq!(runs.len() as u64, JOBS);
    let duplicates = runs.values().sum::<u64>() - JOBS;
    // A kill can only repeat the jobs its process had in hand.
    assert!(
        duplicates <= kills * CONCURRENCY,
        "{duplicates} duplicate runs after {kills} kills of workers with {CONCURRENCY} slots"
    );
    println!("{kills} kills: {duplicates} duplicate runs of {JOBS} jobs");
    for id in ids.iter().step_by(997) {
        assert_eq!(
            q.state(cached_runtime::queue::JobId(*id))
                .await
                .expect("state"),
            Some(JobState::Completed)
        );
    }
}

async fn a_stalled_worker_process_cannot_ack_a_job_another_worker_took_over(redis: QueueRedis) {
    let name = "stalled";
    let q: Queue<u64> = Queue::builder(&redis.redis().await, name)
        .build()
        .await
        .expect("build");
    let args = worker_args(
        &redis,
        name,
        &["--mode", "stall", "--concurrency", "1", "--lease-ms", "500"],
    );
    let mut stalled = WorkerProcess::spawn(BINARY, &args);
    stalled.expect_line("ready", Duration::from_secs(20));
    let id = q.push(&42).await.expect("push");
    let started = stalled.expect_line("started", Duration::from_secs(20));
    assert_eq!(started, format!("started {id} 1"));
    // Frozen mid-job: it cannot extend its lease, which runs out; this process takes over.
    stalled.signal(Signal::SIGSTOP);
    let taken = &std::sync::Mutex::new(None);
    let q = &q;
    wait_until_async(Duration::from_secs(20), || async move {
        let lease = q.take(Duration::from_secs(60)).await.expect("take");
        let found = lease.is_some();
        *taken.lock().expect("lock") = lease;
        found
    })
    .await;
    let lease = taken.lock().expect("lock").take().expect("taken over");
    assert_eq!(lease.job().id(), id);
    assert_eq!(lease.job().attempt(), 2);
    assert_eq!(lease.ack().await.expect("ack"), Settled::Completed);
    // It wakes up and finishes: its ack is rejected, nothing changes.
    stalled.signal(Signal::SIGCONT);
    stalled.send("finish");
    stalled.expect_line("stats completed=0 rejected=1", Duration::from_secs(20));
    assert_eq!(q.state(id).await.expect("state"), None);
    let c = q.counts().await.expect("counts");
    assert_eq!((c.pending(), c.dead), (0, 0), "{c:?}");
}
