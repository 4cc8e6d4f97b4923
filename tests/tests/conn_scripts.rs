//! "A script is never run twice by one call": a script whose request reached Redis but whose
//! reply was lost (the connection dropped, or the reply never came within the timeout) fails
//! the call and is not sent again, on one server and on a cluster (whose client retries
//! other commands on its own); only `NOSCRIPT`, which means it did not run, is retried.
//!
//! A [`Cutter`] proxy delivers the request and keeps the reply back, then resets the
//! connection. On the cluster the proxy stands in front of one primary, which announces the
//! proxy's port (`cluster-announce-port`), so the cluster client reaches that node through it.

use std::time::Duration;

use cached_runtime::connection::{Redis, RedisBuilder, Script, cmd};
use redis::Value;
use tests::{
    GENEROUS_TIMEOUT, RedisServer, cutter::Cutter, topology::LocalCluster, wait_until,
    wait_until_async,
};

const INCR: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

/// Where the counter lives, and how the test reads it and flushes scripts without the proxy.
struct Target {
    /// A direct connection to the node that owns the counter.
    node: Box<dyn Fn() -> redis::Connection + Send + Sync>,
    key: &'static str,
}

impl Target {
    fn counter(&self) -> i64 {
        redis::cmd("GET")
            .arg(self.key)
            .query::<Option<i64>>(&mut (self.node)())
            .expect("GET the counter")
            .unwrap_or(0)
    }

    fn script_flush(&self) {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut (self.node)())
            .expect("SCRIPT FLUSH");
    }
}

/// Waits until `redis` reaches the counter's node again (after a cut), without a script.
async fn reconnected(redis: &Redis, key: &str) {
    wait_until_async(Duration::from_secs(20), || async {
        redis
            .query::<Option<i64>>(cmd("GET").arg(key))
            .await
            .is_ok()
    })
    .await;
}

/// The request is delivered, the reply lost, the connection reset: the call fails, the
/// counter moved by exactly one. Then `SCRIPT FLUSH` and a call: it runs once.
async fn a_script_whose_connection_drops_after_the_request_runs_once(
    redis: &Redis,
    cutter: &Cutter,
    target: &Target,
) {
    let script = Script::new(INCR);
    let start = target.counter();
    let n: i64 = redis
        .eval(&script, &[target.key], 1)
        .await
        .expect("EVALSHA");
    assert_eq!(n, start + 1);

    cutter.hold();
    let call = {
        let (redis, script, key) = (redis.clone(), script.clone(), target.key);
        tokio::spawn(async move { redis.eval::<i64, _, _>(&script, &[key], 1).await })
    };
    // The script ran on the server; its reply is held back.
    wait_until(GENEROUS_TIMEOUT, || target.counter() == start + 2).await;
    cutter.cut();
    let result = call.await.expect("the call ends");
    assert!(
        result.is_err(),
        "a call whose reply was lost returned {result:?}: it was sent again"
    );
    reconnected(redis, target.key).await;
    assert_eq!(
        target.counter(),
        start + 2,
        "the script ran twice for one call"
    );

    // NOSCRIPT: loaded and run once more, which is safe since it did not run.
    target.script_flush();
    let n: i64 = redis
        .eval(&script, &[target.key], 1)
        .await
        .expect("EVALSHA after SCRIPT FLUSH");
    assert_eq!(n, start + 3);
    assert_eq!(
        target.counter(),
        start + 3,
        "the script ran twice after NOSCRIPT"
    );
}

/// The request is delivered and the reply never comes: the call times out and the script is
/// not sent again.
async fn a_script_whose_reply_times_out_runs_once(redis: &Redis, cutter: &Cutter, target: &Target) {
    let script = Script::new(INCR);
    let start = target.counter();
    let n: i64 = redis
        .eval(&script, &[target.key], 1)
        .await
        .expect("EVALSHA");
    assert_eq!(n, start + 1);
    cutter.hold();
    let result = redis.eval::<i64, _, _>(&script, &[target.key], 1).await;
    assert!(result.is_err(), "a call with no reply returned {result:?}");
    cutter.cut();
    reconnected(redis, target.key).await;
    assert_eq!(
        target.counter(),
        start + 2,
        "the script ran twice for one call"
    );
}

fn short(redis: RedisBuilder) -> RedisBuilder {
    redis
        .command_timeout(Duration::from_millis(500))
        .connect_timeout(GENEROUS_TIMEOUT)
}

fn generous(redis: RedisBuilder) -> RedisBuilder {
    redis
        .command_timeout(GENEROUS_TIMEOUT)
        .connect_timeout(GENEROUS_TIMEOUT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_server_a_script_is_never_run_twice_by_one_call() {
    let server = RedisServer::start();
    let cutter = Cutter::start(server.addr());
    let url = server.url();
    let target = Target {
        node: Box::new(move || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .expect("connect to the server")
        }),
        key: "counter",
    };
    let redis = generous(Redis::builder(cutter.url()))
        .build()
        .await
        .expect("connect through the proxy");
    a_script_whose_connection_drops_after_the_request_runs_once(&redis, &cutter, &target).await;
    let redis = short(Redis::builder(cutter.url()))
        .build()
        .await
        .expect("connect through the proxy");
    a_script_whose_reply_times_out_runs_once(&redis, &cutter, &target).await;
}

/// `CLUSTER SLOTS` as node `index` sees it: (first slot, primary's port) pairs.
fn primaries_seen_by(cluster: &LocalCluster, index: usize) -> Vec<(i64, i64)> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut cluster.node(index).conn())
        .expect("CLUSTER SLOTS");
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(2))
            else {
                return None;
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                return None;
            };
            Some((*start, *port))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_script_is_never_run_twice_by_one_call() {
    // Its own cluster: one node will announce another port.
    let cluster = LocalCluster::start();
    let key = "counter";
    let owner = cluster.primary_for(key);
    let cutter = Cutter::start(cluster.node(owner).addr());
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("cluster-announce-port")
        .arg(cutter.port())
        .query(&mut cluster.node(owner).conn())
        .expect("CONFIG SET cluster-announce-port");
    // Every node names the proxy as the owner's address.
    let proxy_port = i64::from(cutter.port());
    let owner_port = i64::from(cluster.node(owner).port());
    wait_until(Duration::from_secs(30), || {
        (0..6).all(|i| {
            let seen = primaries_seen_by(&cluster, i);
            seen.iter().any(|&(_, p)| p == proxy_port) && seen.iter().all(|&(_, p)| p != owner_port)
        })
    })
    .await;

    let addr = cluster.node(owner).addr();
    let target = Target {
        node: Box::new(move || {
            redis::Client::open(format!("redis://{addr}"))
                .and_then(|c| c.get_connection())
                .expect("connect to the owner")
        }),
        key,
    };
    let redis = generous(Redis::cluster(cluster.seeds()))
        .build()
        .await
        .expect("connect to the cluster");
    a_script_whose_connection_drops_after_the_request_runs_once(&redis, &cutter, &target).await;
    let redis = short(Redis::cluster(cluster.seeds()))
        .build()
        .await
        .expect("connect to the cluster");
    a_script_whose_reply_times_out_runs_once(&redis, &cutter, &target).await;
}
