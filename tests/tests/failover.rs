//! Failover under load: a steady stream of cached calls while the primary that owns the hot
//! keys is killed (`SIGKILL`). No call may fail or return a wrong value, and hits must resume
//! once a replica has been promoted. Each test prints how long that took.
//!
//! Each test starts its own cluster or Sentinel setup: the shared ones must keep their
//! topology.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cached_runtime::{Cache, shape::Plain};
use tests::{
    fixtures::policy,
    topology::{LocalCluster, LocalSentinel},
    wait_for,
};

/// How long hits may take to come back after the promotion before the test gives up.
const RESUME_WITHIN: Duration = Duration::from_secs(30);

/// What the load saw.
#[derive(Default)]
struct Load {
    calls: AtomicU64,
    wrong: AtomicU64,
    /// When each call that was answered from Redis finished.
    hits: Mutex<Vec<Instant>>,
}

/// Calls the cached function for `keys` round and round until `stop`; a call is a hit when
/// the body did not run.
fn start_load(
    cache: Cache,
    ids: Vec<u64>,
    stop: Arc<AtomicBool>,
) -> (Arc<Load>, tokio::task::JoinHandle<()>) {
    let load = Arc::new(Load::default());
    let seen = Arc::clone(&load);
    let task = tokio::spawn(async move {
        let policy = policy("hot");
        while !stop.load(Ordering::Relaxed) {
            for &id in &ids {
                let key = cache.key("hot").arg(&id).build().expect("valid key");
                let ran = AtomicBool::new(false);
                let value: u64 = cache
                    .get_or_fill::<Plain, _, _>(&key, &policy, async {
                        ran.store(true, Ordering::Relaxed);
                        id * 3
                    })
                    .await;
                seen.calls.fetch_add(1, Ordering::Relaxed);
                if value != id * 3 {
                    seen.wrong.fetch_add(1, Ordering::Relaxed);
                }
                if !ran.load(Ordering::Relaxed) {
                    seen.hits.lock().expect("not poisoned").push(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (load, task)
}

/// Waits (bounded) for the first hit after `since`; returns how long after `since` it came.
async fn first_hit_after(load: &Load, since: Instant) -> Duration {
    wait_for(RESUME_WITHIN, || async {
        let hits = load.hits.lock().expect("not poisoned");
        match hits.iter().find(|&&t| t > since) {
            Some(at) => Ok(*at - since),
            None => Err(format!("no hit since the promotion, {} before", hits.len())),
        }
    })
    .await
}

/// After the promotion: waits for the first hit, stops the load, prints the figures and
/// checks that no call returned a wrong value.
async fn conclude(
    topology: &str,
    cache: &Cache,
    load: &Load,
    stop: &AtomicBool,
    task: tokio::task::JoinHandle<()>,
    killed_at: Instant,
    promoted_at: Instant,
) {
    let resumed = first_hit_after(load, promoted_at).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("the load ran to the end");
    let calls = load.calls.load(Ordering::Relaxed);
    let wrong = load.wrong.load(Ordering::Relaxed);
    eprintln!(
        "{topology} failover: {calls} calls, {wrong} failed, promotion {:.2} s after the kill, \
         first hit {:.3} s after the promotion; {} calls ran their body on an error",
        (promoted_at - killed_at).as_secs_f64(),
        resumed.as_secs_f64(),
        cache.stats().total.errors
    );
    assert_eq!(wrong, 0, "calls returned a wrong value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_of_the_hot_keys_fails_no_call_and_hits_resume_after_promotion() {
    let mut cluster = LocalCluster::start();
    // Production timeouts: the point is what a killed node costs.
    let cache = Cache::cluster(cluster.seeds())
        .build()
        .await
        .expect("connect");
    let probe = cache.key("hot").arg(&0u64).build().expect("valid key");
    let victim = cluster.primary_for(probe.as_str());
    let victim_port = cluster.node(victim).port();
    // Hot keys: the first 20 ids whose entries live on the victim.
    let ids: Vec<u64> = (0..)
        .filter(|id: &u64| {
            let key = cache.key("hot").arg(id).build().expect("valid key");
            cluster.primary_for(key.as_str()) == victim
        })
        .take(20)
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (load, task) = start_load(cache.clone(), ids, Arc::clone(&stop));
    // Warm: every hot key has been hit at least once, and the replica has them.
    let warm = Instant::now();
    first_hit_after(&load, warm).await;
    let _: () = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut cluster.node(victim).conn())
        .map(|_: i64| ())
        .expect("WAIT for the replica");

    let killed_at = Instant::now();
    cluster.kill(victim);
    // The promotion: a live node names another owner for the hot keys' slot.
    wait_for(RESUME_WITHIN, || async {
        let owner = cluster.node(cluster.primary_for(probe.as_str())).port();
        if owner == victim_port {
            Err("no replica was promoted")
        } else {
            Ok(())
        }
    })
    .await;
    let promoted_at = Instant::now();
    conclude(
        "cluster",
        &cache,
        &load,
        &stop,
        task,
        killed_at,
        promoted_at,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_fails_no_call_and_hits_resume_on_the_new_primary() {
    let mut setup = LocalSentinel::start();
    let cache = Cache::sentinel(tests::topology::MASTER_NAME, setup.sentinel_urls())
        .build()
        .await
        .expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let (load, task) = start_load(cache.clone(), (0..20).collect(), Arc::clone(&stop));
    first_hit_after(&load, Instant::now()).await;
    let _: () = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut setup.conn())
        .map(|_: i64| ())
        .expect("WAIT for the replica");

    let killed_at = Instant::now();
    let old = setup.kill_primary();
    wait_for(RESUME_WITHIN, || async {
        if setup.primary_port() == old {
            Err("the sentinels promoted no replica")
        } else {
            Ok(())
        }
    })
    .await;
    let promoted_at = Instant::now();
    conclude(
        "sentinel",
        &cache,
        &load,
        &stop,
        task,
        killed_at,
        promoted_at,
    )
    .await;
    // Writes go to the new primary: a fresh entry is stored there.
    let key = cache.key("hot").arg(&1000u64).build().expect("valid key");
    let policy = policy("hot");
    let _: u64 = cache
        .get_or_fill::<Plain, _, _>(&key, &policy, async { 7 })
        .await;
    tests::wait_until(Duration::from_secs(10), || {
        redis::cmd("EXISTS")
            .arg(key.as_str())
            .query::<bool>(&mut setup.conn())
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_manual_failover_writes_reach_the_new_primary_while_the_old_one_lives_on() {
    let setup = LocalSentinel::start();
    let cache = setup.cache_builder().build().await.expect("connect");
    let policy = policy("moved");
    let old = setup.primary_port();
    let _: u64 = cache
        .get_or_fill::<Plain, _, _>(
            &cache.key("moved").arg(&0u8).build().expect("valid key"),
            &policy,
            async { 1 },
        )
        .await;
    // The old primary stays up and becomes a replica: its connections are not dropped.
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(tests::topology::MASTER_NAME)
        .query(&mut setup.sentinel_conn())
        .expect("SENTINEL FAILOVER");
    tests::wait_until(RESUME_WITHIN, || setup.primary_port() != old).await;
    let new = setup.primary_port();
    // Every write from now on lands on the new primary.
    let mut id = 1u8;
    tests::wait_until_async(RESUME_WITHIN, || {
        id += 1;
        let key = cache.key("moved").arg(&id).build().expect("valid key");
        let cache = cache.clone();
        let policy = policy.clone();
        let mut conn = setup.conn_to(new);
        async move {
            let _: u64 = cache
                .get_or_fill::<Plain, _, _>(&key, &policy, async { 2 })
                .await;
            redis::cmd("EXISTS")
                .arg(key.as_str())
                .query::<bool>(&mut conn)
                .unwrap_or(false)
        }
    })
    .await;
    for id in 100..120u8 {
        let key = cache.key("moved").arg(&id).build().expect("valid key");
        let _: u64 = cache
            .get_or_fill::<Plain, _, _>(&key, &policy, async { 3 })
            .await;
        let stored: bool = redis::cmd("EXISTS")
            .arg(key.as_str())
            .query(&mut setup.conn_to(new))
            .expect("EXISTS");
        assert!(stored, "entry {id} did not reach the new primary");
    }
}

/// Clients subscribed to a channel on any of the setup's sentinels.
fn sentinel_subscribers(setup: &LocalSentinel) -> usize {
    setup
        .sentinel_urls()
        .iter()
        .map(|url| {
            let mut conn = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .expect("connect to a sentinel");
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut conn)
                .expect("CLIENT LIST");
            clients.lines().filter(|l| l.contains(" sub=1 ")).count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_sentinel_cache_ends_its_failover_listener() {
    let setup = LocalSentinel::start();
    let cache = setup.cache_builder().build().await.expect("connect");
    tests::wait_until(RESUME_WITHIN, || sentinel_subscribers(&setup) == 1).await;
    drop(cache);
    tests::wait_until(RESUME_WITHIN, || sentinel_subscribers(&setup) == 0).await;
}
