//! The fill lock's guard exists before its `SET NX` is sent: a call that cannot know whether
//! it took the lock (dropped with the request in flight, or the request timed out) releases
//! it, instead of leaving every caller of the key in every process waiting out its TTL.

use std::time::Duration;

use cached_runtime::{Cache, Policy, shape::Plain};
use redis::Commands;
use tests::{RedisServer, fixtures::policy_with_ttl, wait_until};

/// How many `SET`s the server has run.
fn set_calls(admin: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(admin)
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_set:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Holds writes (the `SET NX`) in Redis while reads (the `GET` before it) go on.
fn pause_writes(admin: &mut redis::Connection, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query(admin)
        .expect("CLIENT PAUSE WRITE");
}

fn unpause(admin: &mut redis::Connection) {
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(admin)
        .expect("CLIENT UNPAUSE");
}

fn locked_policy() -> Policy {
    policy_with_ttl("guarded", 60)
        .lock(Duration::from_secs(60))
        .expect("lock ttl")
}

async fn cache(server: &RedisServer, command_timeout: Duration) -> Cache {
    server
        .cache_builder()
        .command_timeout(command_timeout)
        .build()
        .await
        .expect("connect")
}

/// Waits until the paused `SET NX` has run, then until its lock is gone.
async fn lock_released(admin: &mut redis::Connection, sets_before: u64, lock_key: &str) {
    wait_until(Duration::from_secs(10), || set_calls(admin) > sets_before).await;
    wait_until(Duration::from_secs(10), || {
        !admin.exists::<_, bool>(lock_key).expect("EXISTS")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_its_lock_request_is_in_flight_leaves_no_lock() {
    let server = RedisServer::start();
    let cache = cache(&server, Duration::from_secs(10)).await;
    let policy = locked_policy();
    let key = cache.key("guarded").arg(&1u64).build().expect("key");
    let mut admin = server.conn();
    let sets_before = set_calls(&mut admin);
    pause_writes(&mut admin, 10_000);
    // The GET misses at once; the SET NX then waits in Redis until the call is dropped.
    let call = cache.get_or_fill::<Plain, u64, _>(&key, &policy, async { 1 });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err(),
        "the call must still be waiting for its lock when it is dropped"
    );
    unpause(&mut admin);
    lock_released(&mut admin, sets_before, &key.lock_key()).await;
    // And the key is served normally afterwards.
    let again = cache
        .get_or_fill::<Plain, u64, _>(&key, &policy, async { 2 })
        .await;
    assert_eq!(again, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_request_that_timed_out_is_released_when_the_call_ends() {
    let server = RedisServer::start();
    let cache = cache(&server, Duration::from_millis(100)).await;
    let policy = locked_policy();
    let key = cache.key("guarded").arg(&2u64).build().expect("key");
    let mut admin = server.conn();
    let sets_before = set_calls(&mut admin);
    pause_writes(&mut admin, 10_000);
    // The SET NX times out: the call cannot know whether it took the lock, and runs its body.
    let value = cache
        .get_or_fill::<Plain, u64, _>(&key, &policy, async { 7 })
        .await;
    assert_eq!(value, 7);
    unpause(&mut admin);
    lock_released(&mut admin, sets_before, &key.lock_key()).await;
}
