//! A dead shard costs only its own keys: on a cluster the circuit breaker (and connection
//! retirement) is per node. One primary is killed or frozen and, with failover turned off,
//! stays dead; calls of keys on the two healthy shards must remain hits while the dead
//! shard's calls run their bodies, before and after that node's circuit opens.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use cached_runtime::{Cache, Policy, shape::Plain};
use redis::Value;
use tests::topology::LocalCluster;

fn policy() -> Policy {
    Policy::new("shard", Duration::from_secs(600)).expect("valid policy")
}

/// Calls `id`'s cached function; returns whether its body ran.
async fn call(cache: &Cache, id: u64) -> bool {
    let key = cache.key("shard").arg(&id).build().expect("valid key");
    let ran = AtomicUsize::new(0);
    let value: u64 = cache
        .get_or_fill::<Plain, _, _>(&key, &policy(), async {
            ran.fetch_add(1, Ordering::SeqCst);
            id * 7
        })
        .await;
    assert_eq!(value, id * 7, "a wrong value for {id}");
    ran.load(Ordering::SeqCst) > 0
}

fn config_set(node: &tests::RedisServer, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(&mut node.conn())
        .expect("CONFIG SET");
}

fn is_replica(node: &tests::RedisServer) -> bool {
    let role: Vec<Value> = redis::cmd("ROLE").query(&mut node.conn()).expect("ROLE");
    matches!(role.first(), Some(Value::BulkString(r)) if r == b"slave")
}

/// How the victim dies.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// `SIGKILL`: its connections are refused.
    Killed,
    /// `SIGSTOP`: it accepts connections and answers nothing; commands time out.
    Frozen,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_costs_only_its_own_keys() {
    a_dead_primary_costs_only_its_own_keys(Death::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_costs_only_its_own_keys() {
    a_dead_primary_costs_only_its_own_keys(Death::Frozen).await;
}

async fn a_dead_primary_costs_only_its_own_keys(death: Death) {
    // Its own cluster: a node dies. Healthy shards keep serving with part of the slots
    // uncovered, and no replica takes over, so the dead shard stays dead.
    let mut cluster = LocalCluster::start();
    for i in 0..6 {
        let node = cluster.node(i);
        config_set(node, "cluster-require-full-coverage", "no");
        if is_replica(node) {
            config_set(node, "cluster-replica-no-failover", "yes");
        }
    }
    let cache = cluster
        .cache_builder()
        // Short enough for a frozen node's calls to finish soon; healthy nodes answer in
        // well under it even on a loaded machine.
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("connect");

    // Ten keys on each primary, by the node that owns them.
    let mut shards: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for id in 0u64.. {
        let key = cache.key("shard").arg(&id).build().expect("valid key");
        let ids = shards.entry(cluster.primary_for(key.as_str())).or_default();
        if ids.len() < 10 {
            ids.push(id);
        }
        if shards.len() == 3 && shards.values().all(|ids| ids.len() == 10) {
            break;
        }
    }
    for ids in shards.values() {
        for &id in ids {
            assert!(call(&cache, id).await, "{id} was cached before the warm-up");
            assert!(
                !call(&cache, id).await,
                "{id} is not a hit after the warm-up"
            );
        }
    }

    let victim = *shards.keys().next().expect("three shards");
    match death {
        Death::Killed => cluster.kill(victim),
        Death::Frozen => cluster.node(victim).freeze(),
    }

    // Rounds over every key until the dead node's circuit opens, then ten more.
    let mut runs: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    let mut after_open = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while after_open < 10 {
        for (&node, ids) in &shards {
            for &id in ids {
                let ran = call(&cache, id).await;
                let (calls, ran_total) = runs.entry(node).or_default();
                *calls += 1;
                *ran_total += u64::from(ran);
                assert!(
                    node == victim || !ran,
                    "{death:?}: a call of a healthy shard ran its body: {runs:?}, {:?}",
                    cache.stats()
                );
            }
        }
        if cache.stats().circuit_open {
            after_open += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "the dead node's circuit did not open: {runs:?}"
            );
        }
    }
    let stats = cache.stats();
    eprintln!("{death:?}: calls and body runs per node: {runs:?}; {stats:?}");
    let (calls, ran) = runs[&victim];
    assert_eq!(ran, calls, "a call of the dead shard did not run its body");
    assert!(stats.circuit_opened >= 1, "{stats:?}");
}
