//! The job queue on one server and on the cluster: push and take, priorities, delayed jobs,
//! idempotency keys, leases and fencing, retries and dead letters, graceful shutdown, and
//! every key of a queue in one slot.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, SystemTime},
};

use cached_runtime::queue::{Job, JobError, JobId, JobState, PushOptions, Pushed, Queue, Settled};
use serde::{Deserialize, Serialize};
use tests::{queue::QueueRedis, queue_suite, wait_until, wait_until_async};
use tokio::sync::Notify;

const WITHIN: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Mail {
    to: String,
    n: u32,
}

fn mail(n: u32) -> Mail {
    Mail {
        to: format!("user{n}@example.com"),
        n,
    }
}

async fn queue(redis: &QueueRedis, name: &str) -> Queue<Mail> {
    Queue::builder(&redis.redis().await, name)
        .build()
        .await
        .expect("build the queue")
}

queue_suite!(standalone, cluster;
    a_pushed_job_is_taken_once_and_gone_once_acked,
    higher_priorities_are_taken_first_then_push_order,
    a_delayed_job_is_not_taken_before_it_is_due_nor_twice_by_concurrent_takers,
    a_second_push_with_an_idempotency_key_within_its_window_is_a_no_op,
    a_job_whose_lease_ran_out_is_taken_again_and_the_stale_ack_is_rejected,
    a_dropped_lease_hands_its_job_back,
    failed_jobs_are_retried_with_backoff_then_dead_and_can_be_requeued,
    a_permanent_error_or_an_undecodable_payload_is_dead_at_once,
    a_worker_runs_every_job_and_a_delayed_one_once_it_is_due,
    a_handler_panic_fails_the_attempt_and_the_worker_goes_on,
    shutdown_finishes_jobs_within_the_deadline_and_hands_back_the_rest,
    completed_jobs_are_kept_bounded_by_count,
);

async fn a_pushed_job_is_taken_once_and_gone_once_acked(redis: QueueRedis) {
    let q = queue(&redis, "basic").await;
    let id = q.push(&mail(1)).await.expect("push");
    assert_eq!(q.state(id).await.expect("state"), Some(JobState::Waiting));
    let lease = q
        .take(Duration::from_secs(30))
        .await
        .expect("take")
        .expect("a runnable job");
    assert_eq!(lease.job().id(), id);
    assert_eq!(lease.job().payload(), &mail(1));
    assert_eq!(lease.job().attempt(), 1);
    assert_eq!(q.state(id).await.expect("state"), Some(JobState::Running));
    assert!(
        q.take(Duration::from_secs(30))
            .await
            .expect("take")
            .is_none()
    );
    assert_eq!(lease.ack().await.expect("ack"), Settled::Completed);
    assert_eq!(q.state(id).await.expect("state"), None);
    let counts = q.counts().await.expect("counts");
    assert_eq!(counts.pending(), 0, "{counts:?}");
    assert_eq!(counts.dead, 0);
    // Nothing of the job is left but the id counters.
    let left = redis.keys("queue:{basic}:*");
    assert_eq!(
        left,
        ["queue:{basic}:fence", "queue:{basic}:ids"],
        "{left:?}"
    );
}

async fn higher_priorities_are_taken_first_then_push_order(redis: QueueRedis) {
    let q = queue(&redis, "prio").await;
    let mut pushed = Vec::new();
    for (n, priority) in [(1, 0), (2, 5), (3, 0), (4, 15), (5, 5)] {
        let options = PushOptions::new().priority(priority);
        pushed.push(q.push_with(&mail(n), &options).await.expect("push"));
    }
    let mut order = Vec::new();
    while let Some(lease) = q.take(Duration::from_secs(30)).await.expect("take") {
        order.push(lease.job().payload().n);
        lease.ack().await.expect("ack");
    }
    assert_eq!(order, [4, 2, 5, 1, 3]);
    let err = q
        .push_with(&mail(6), &PushOptions::new().priority(16))
        .await
        .expect_err("priority 16 is above the maximum");
    assert!(err.to_string().contains("maximum"), "{err}");
}

async fn a_delayed_job_is_not_taken_before_it_is_due_nor_twice_by_concurrent_takers(
    redis: QueueRedis,
) {
    let q = queue(&redis, "delayed").await;
    let delay = Duration::from_millis(400);
    let pushed_at = SystemTime::now();
    let id = q
        .push_with(&mail(1), &PushOptions::new().delay(delay))
        .await
        .expect("push")
        .id();
    assert_eq!(q.state(id).await.expect("state"), Some(JobState::Delayed));
    // Eight takers race for it from before it is due until one has it.
    let taken = Arc::new(Mutex::new(Vec::new()));
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let (q, taken) = (q.clone(), Arc::clone(&taken));
            tokio::spawn(async move {
                loop {
                    if let Some(lease) = q.take(Duration::from_secs(30)).await.expect("take") {
                        taken
                            .lock()
                            .expect("lock")
                            .push((lease.job().id(), SystemTime::now()));
                        lease.ack().await.expect("ack");
                    }
                    if !taken.lock().expect("lock").is_empty() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    for t in takers {
        t.await.expect("taker");
    }
    let taken = taken.lock().expect("lock").clone();
    assert_eq!(taken.len(), 1, "taken more than once: {taken:?}");
    assert_eq!(taken[0].0, id);
    let waited = taken[0]
        .1
        .duration_since(pushed_at)
        .expect("taken after the push");
    assert!(
        waited >= delay,
        "taken {waited:?} after the push, before its delay {delay:?}"
    );
    // A due time in the past is runnable at once.
    let past = SystemTime::now() - Duration::from_secs(60);
    let id = q
        .push_with(&mail(2), &PushOptions::new().at(past))
        .await
        .expect("push")
        .id();
    assert_eq!(q.state(id).await.expect("state"), Some(JobState::Waiting));
}

async fn a_second_push_with_an_idempotency_key_within_its_window_is_a_no_op(redis: QueueRedis) {
    let q = queue(&redis, "idem").await;
    let window = Duration::from_millis(300);
    let options = PushOptions::new().idempotency_key("welcome:7", window);
    let first = q.push_with(&mail(7), &options).await.expect("push");
    assert!(matches!(first, Pushed::Queued(_)), "{first:?}");
    let again = q.push_with(&mail(7), &options).await.expect("push");
    assert_eq!(again, Pushed::Duplicate(first.id()));
    // Another key is another job.
    let other = q
        .push_with(
            &mail(8),
            &PushOptions::new().idempotency_key("welcome:8", window),
        )
        .await
        .expect("push");
    assert!(!other.is_duplicate());
    assert_eq!(q.counts().await.expect("counts").waiting, 2);
    // Once the window has passed, the key pushes a new job.
    let later = Arc::new(Mutex::new(None));
    wait_until_async(WITHIN, || {
        let (q, options, later) = (q.clone(), options.clone(), Arc::clone(&later));
        async move {
            let pushed = q.push_with(&mail(7), &options).await.expect("push");
            *later.lock().expect("lock") = Some(pushed);
            !pushed.is_duplicate()
        }
    })
    .await;
    let later = later.lock().expect("lock").expect("pushed");
    assert_ne!(later.id(), first.id());
    assert_eq!(q.counts().await.expect("counts").waiting, 3);
}

async fn a_job_whose_lease_ran_out_is_taken_again_and_the_stale_ack_is_rejected(redis: QueueRedis) {
    let recorder = tests::recorder::TestRecorder::global();
    // One name per topology: the two run at once and share the recorder.
    let name = if redis.is_cluster() {
        "fencing-c"
    } else {
        "fencing-s"
    };
    let q = queue(&redis, name).await;
    let labels = [("queue", name)];
    let stale_before = recorder
        .counter("redis_queue_stale_acks_total", &labels)
        .unwrap_or(0);
    let id = q.push(&mail(1)).await.expect("push");
    let lease = Duration::from_millis(200);
    let first = q.take(lease).await.expect("take").expect("the job");
    // The first holder stalls past its lease: another taker gets the job.
    let second = Arc::new(Mutex::new(None));
    wait_until_async(WITHIN, || {
        let (q, second) = (q.clone(), Arc::clone(&second));
        async move {
            match q.take(Duration::from_secs(30)).await.expect("take") {
                Some(l) => {
                    *second.lock().expect("lock") = Some(l);
                    true
                }
                None => false,
            }
        }
    })
    .await;
    let second = second.lock().expect("lock").take().expect("taken again");
    assert_eq!(second.job().id(), id);
    assert_eq!(second.job().attempt(), 2);
    // The stalled holder wakes up: its ack is rejected, the job stays with the second.
    assert!(!first.job().lease_lost());
    assert_eq!(first.ack().await.expect("ack"), Settled::Rejected);
    assert_eq!(q.state(id).await.expect("state"), Some(JobState::Running));
    assert_eq!(second.ack().await.expect("ack"), Settled::Completed);
    assert_eq!(q.state(id).await.expect("state"), None);
    let stale = recorder
        .counter("redis_queue_stale_acks_total", &labels)
        .unwrap_or(0);
    assert_eq!(stale - stale_before, 1);
    assert!(
        recorder
            .counter("redis_queue_lease_expired_total", &labels)
            .unwrap_or(0)
            >= 1
    );
}

async fn a_dropped_lease_hands_its_job_back(redis: QueueRedis) {
    let q = queue(&redis, "dropped").await;
    let id = q.push(&mail(1)).await.expect("push");
    let lease = q
        .take(Duration::from_secs(60))
        .await
        .expect("take")
        .expect("the job");
    drop(lease);
    // Handed back in the background, runnable at once (not after the 60 s lease).
    wait_until_async(WITHIN, || {
        let q = q.clone();
        async move { q.state(id).await.expect("state") == Some(JobState::Waiting) }
    })
    .await;
    let again = q
        .take(Duration::from_secs(60))
        .await
        .expect("take")
        .expect("the job");
    assert_eq!(again.job().id(), id);
    assert_eq!(
        again.job().attempt(),
        1,
        "a hand-back does not count as an attempt"
    );
    again.ack().await.expect("ack");
}

async fn failed_jobs_are_retried_with_backoff_then_dead_and_can_be_requeued(redis: QueueRedis) {
    let q: Queue<Mail> = Queue::builder(&redis.redis().await, "retries")
        .max_attempts(3)
        .build()
        .await
        .expect("build");
    let attempts = Arc::new(AtomicU32::new(0));
    let healthy = Arc::new(AtomicBool::new(false));
    let (a, h) = (Arc::clone(&attempts), Arc::clone(&healthy));
    let worker = q
        .worker(move |job: Job<Mail>| {
            let (a, h) = (Arc::clone(&a), Arc::clone(&h));
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                if h.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(JobError::retry(format!(
                        "smtp down for {}",
                        job.payload().to
                    )))
                }
            }
        })
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(80))
        .idle_wait(Duration::from_millis(200))
        .start()
        .expect("start");
    let id = q.push(&mail(3)).await.expect("push");
    wait_until_async(WITHIN, || {
        let q = q.clone();
        async move { q.state(id).await.expect("state") == Some(JobState::Dead) }
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let dead = q.dead(0, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].payload.as_ref().expect("decodes"), &mail(3));
    assert_eq!(dead[0].error, "smtp down for user3@example.com");
    // Dead in Redis first; the worker counts it once the script's reply is in.
    wait_until(WITHIN, || worker.stats().dead == 1).await;
    let stats = worker.stats();
    assert_eq!((stats.retried, stats.dead), (2, 1), "{stats:?}");
    // Requeued, it runs again with fresh attempts, and now completes.
    healthy.store(true, Ordering::SeqCst);
    assert!(q.requeue_dead(id).await.expect("requeue"));
    assert!(
        !q.requeue_dead(id).await.expect("requeue"),
        "no longer dead"
    );
    wait_until(WITHIN, || worker.stats().completed == 1).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    let counts = q.counts().await.expect("counts");
    assert_eq!((counts.pending(), counts.dead), (0, 0), "{counts:?}");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_permanent_error_or_an_undecodable_payload_is_dead_at_once(redis: QueueRedis) {
    let r = redis.redis().await;
    let q: Queue<Mail> = Queue::builder(&r, "permanent")
        .build()
        .await
        .expect("build");
    let worker = q
        .worker(|job: Job<Mail>| async move {
            Err(JobError::permanent(format!(
                "no such mailbox: {}",
                job.payload().to
            )))
        })
        .start()
        .expect("start");
    let id = q.push(&mail(1)).await.expect("push");
    // A producer of another type pushes what this queue's `Mail` cannot decode.
    let other: Queue<u64> = Queue::builder(&r, "permanent")
        .build()
        .await
        .expect("build");
    let garbage = other.push(&7).await.expect("push");
    wait_until_async(WITHIN, || {
        let q = q.clone();
        async move { q.counts().await.expect("counts").dead == 2 }
    })
    .await;
    let dead = q.dead(0, 10).await.expect("dead letters");
    let by_id = |id: JobId| dead.iter().find(|d| d.id == id).expect("listed");
    assert_eq!(by_id(id).attempts, 1);
    assert_eq!(by_id(id).error, "no such mailbox: user1@example.com");
    assert!(by_id(garbage).payload.is_err());
    assert!(
        by_id(garbage).error.contains("does not decode"),
        "{}",
        by_id(garbage).error
    );
    assert!(q.delete_dead(garbage).await.expect("delete"));
    assert_eq!(q.state(garbage).await.expect("state"), None);
    assert_eq!(q.dead(0, 10).await.expect("dead letters").len(), 1);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_worker_runs_every_job_and_a_delayed_one_once_it_is_due(redis: QueueRedis) {
    let q = queue(&redis, "worker").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let worker = q
        .worker(move |job: Job<Mail>| {
            let s = Arc::clone(&s);
            async move {
                s.lock()
                    .expect("lock")
                    .push((job.payload().n, SystemTime::now()));
                Ok(())
            }
        })
        .concurrency(4)
        .start()
        .expect("start");
    for n in 0..200 {
        q.push(&mail(n)).await.expect("push");
    }
    wait_until(WITHIN, || seen.lock().expect("lock").len() == 200).await;
    // Idle now; a delayed job wakes it at its due time, not before.
    let delay = Duration::from_millis(300);
    let pushed_at = SystemTime::now();
    q.push_with(&mail(1000), &PushOptions::new().delay(delay))
        .await
        .expect("push");
    wait_until(WITHIN, || seen.lock().expect("lock").len() == 201).await;
    let seen = seen.lock().expect("lock").clone();
    let ns: HashSet<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(ns.len(), 201, "every job ran exactly once");
    let (_, ran_at) = seen
        .iter()
        .find(|(n, _)| *n == 1000)
        .expect("the delayed job ran");
    let waited = ran_at.duration_since(pushed_at).expect("after the push");
    assert!(
        waited >= delay,
        "ran {waited:?} after the push, before its delay"
    );
    // The handler has run; its ack is counted once it is answered.
    wait_until(WITHIN, || worker.stats().completed == 201).await;
    let stats = worker.stats();
    assert_eq!((stats.taken, stats.completed), (201, 201), "{stats:?}");
    let report = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.finished, report.handed_back), (0, 0));
}

async fn a_handler_panic_fails_the_attempt_and_the_worker_goes_on(redis: QueueRedis) {
    let q: Queue<Mail> = Queue::builder(&redis.redis().await, "panics")
        .max_attempts(2)
        .build()
        .await
        .expect("build");
    let worker = q
        .worker(|job: Job<Mail>| async move {
            assert!(job.payload().n != 13, "unlucky job");
            Ok(())
        })
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(10))
        .start()
        .expect("start");
    let unlucky = q.push(&mail(13)).await.expect("push");
    for n in 0..5 {
        q.push(&mail(n)).await.expect("push");
    }
    wait_until(WITHIN, || {
        let s = worker.stats();
        s.completed == 5 && s.dead == 1
    })
    .await;
    let dead = q.dead(0, 10).await.expect("dead letters");
    assert_eq!(dead[0].id, unlucky);
    assert!(
        dead[0].error.contains("panicked: unlucky job"),
        "{}",
        dead[0].error
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn shutdown_finishes_jobs_within_the_deadline_and_hands_back_the_rest(redis: QueueRedis) {
    let q = queue(&redis, "shutdown").await;
    let release_quick = Arc::new(Notify::new());
    let started = Arc::new(AtomicU32::new(0));
    let (r, st) = (Arc::clone(&release_quick), Arc::clone(&started));
    let worker = q
        .worker(move |job: Job<Mail>| {
            let (r, st) = (Arc::clone(&r), Arc::clone(&st));
            async move {
                let released = r.notified();
                st.fetch_add(1, Ordering::SeqCst);
                if job.payload().n == 1 {
                    released.await;
                } else {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
        .concurrency(2)
        .start()
        .expect("start");
    let quick = q.push(&mail(1)).await.expect("push");
    let stuck = q.push(&mail(2)).await.expect("push");
    wait_until(WITHIN, || started.load(Ordering::SeqCst) == 2).await;
    let deadline = Duration::from_millis(500);
    let shutdown = tokio::spawn(worker.shutdown(deadline));
    // Stopped taking: a job pushed now stays waiting.
    let later = q.push(&mail(3)).await.expect("push");
    release_quick.notify_waiters();
    let report = shutdown.await.expect("shutdown");
    assert_eq!((report.finished, report.handed_back), (1, 1), "{report:?}");
    assert_eq!(q.state(quick).await.expect("state"), None, "completed");
    assert_eq!(
        q.state(stuck).await.expect("state"),
        Some(JobState::Waiting)
    );
    assert_eq!(
        q.state(later).await.expect("state"),
        Some(JobState::Waiting)
    );
    let again = q
        .take(Duration::from_secs(30))
        .await
        .expect("take")
        .expect("a job");
    assert_eq!(again.job().id(), stuck);
    assert_eq!(
        again.job().attempt(),
        1,
        "a hand-back does not count as an attempt"
    );
    again.ack().await.expect("ack");
}

async fn completed_jobs_are_kept_bounded_by_count(redis: QueueRedis) {
    let q: Queue<Mail> = Queue::builder(&redis.redis().await, "kept")
        .keep_completed(3, Duration::ZERO)
        .build()
        .await
        .expect("build");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(q.push(&mail(n)).await.expect("push"));
    }
    while let Some(lease) = q.take(Duration::from_secs(30)).await.expect("take") {
        lease.ack().await.expect("ack");
    }
    assert_eq!(q.counts().await.expect("counts").completed, 3);
    let mut states = Vec::new();
    for id in &ids {
        states.push(q.state(*id).await.expect("state"));
    }
    assert_eq!(
        states,
        [
            None,
            None,
            Some(JobState::Completed),
            Some(JobState::Completed),
            Some(JobState::Completed)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_every_key_of_a_queue_is_in_one_slot_on_one_primary() {
    let redis = QueueRedis::start(tests::topology::Topology::Cluster);
    let q: Queue<Mail> = Queue::builder(&redis.redis().await, "slots")
        .keep_completed(10, Duration::ZERO)
        .build()
        .await
        .expect("build");
    q.push_with(
        &mail(1),
        &PushOptions::new().idempotency_key("k", Duration::from_secs(60)),
    )
    .await
    .expect("push");
    q.push_with(&mail(2), &PushOptions::new().delay(Duration::from_secs(60)))
        .await
        .expect("push");
    q.push(&mail(3)).await.expect("push");
    let lease = q
        .take(Duration::from_secs(30))
        .await
        .expect("take")
        .expect("a job");
    lease.ack().await.expect("ack");
    let _held = q
        .take(Duration::from_secs(30))
        .await
        .expect("take")
        .expect("a job");
    let keys = redis.keys("queue:{slots}:*");
    // wait, delayed, active, done, jobs, ids, fence, idem, idem-exp
    assert_eq!(keys.len(), 9, "{keys:?}");
    let mut conn = redis.conn();
    let slots: HashSet<i64> = keys
        .iter()
        .map(|k| {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(k)
                .query(&mut conn)
                .expect("CLUSTER KEYSLOT")
        })
        .collect();
    assert_eq!(slots.len(), 1, "{keys:?} span slots {slots:?}");
    let cluster = tests::topology::LocalCluster::shared();
    let holders: HashSet<u16> = cluster
        .primary_ports()
        .into_iter()
        .filter(|port| {
            let found: Vec<String> = redis::cmd("KEYS")
                .arg("queue:{slots}:*")
                .query(&mut cluster.node_on(*port).conn())
                .expect("KEYS (test inspection only)");
            !found.is_empty()
        })
        .collect();
    assert_eq!(
        holders.len(),
        1,
        "the queue's keys are on primaries {holders:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_queues_on_every_primary_run_side_by_side() {
    let redis = QueueRedis::start(tests::topology::Topology::Cluster);
    let r = redis.redis().await;
    let cluster = tests::topology::LocalCluster::shared();
    // Names whose hash tags land on each of the three primaries.
    let mut names: Vec<String> = Vec::new();
    let mut owners = HashSet::new();
    for i in 0..200 {
        let name = format!("spread-{i}");
        let owner = cluster
            .node(cluster.primary_for(&format!("{{{name}}}")))
            .port();
        if owners.insert(owner) {
            names.push(name);
        }
        if owners.len() == 3 {
            break;
        }
    }
    assert_eq!(names.len(), 3, "no names on every primary: {owners:?}");
    let done = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for name in &names {
        let q: Queue<Mail> = Queue::builder(&r, name.as_str())
            .build()
            .await
            .expect("build");
        let d = Arc::clone(&done);
        workers.push(
            q.worker(move |_job: Job<Mail>| {
                let d = Arc::clone(&d);
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .concurrency(2)
            .start()
            .expect("start"),
        );
        for n in 0..50 {
            q.push(&mail(n)).await.expect("push");
        }
    }
    wait_until(WITHIN, || done.load(Ordering::SeqCst) == 150).await;
    for w in workers {
        w.shutdown(Duration::from_secs(5)).await;
    }
}
