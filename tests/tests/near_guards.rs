//! The near cache around its own writes, against a real redis-server: a fill whose result
//! the near cache keeps writes it on the tracking connection (`NOLOOP`), so Redis does not
//! report it back; a write that failed, or whose call was dropped, must leave nothing kept and
//! must not stop the next write by another client from evicting the key.

use std::time::Duration;

use cached_runtime::{Cache, shape::Plain};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{entry, policy},
};

const WAIT: Duration = Duration::from_secs(10);

/// The prefix of every key here; [`entry`] is a stored value of its policy (version 0), as
/// another process would write it.
const PREFIX: &str = "guard";

async fn read(cache: &Cache, key: &cached_runtime::Key, fallback: u64) -> u64 {
    cache
        .get_or_fill::<Plain, _, _>(key, &policy(PREFIX), async move { fallback })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_keeps_nothing_and_a_later_write_by_another_client_still_evicts() {
    let server = RedisServer::start();
    let mut admin = server.conn();
    // `writer` may do everything but SET for now: the fill's write fails with NOPERM.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "writer", "on", ">secret", "~*", "&*", "+@all", "-set",
        ])
        .query(&mut admin)
        .expect("acl");
    let url = format!("redis://writer:secret@127.0.0.1:{}", server.port());
    let cache = tests::cache_builder(url)
        .name("guarded")
        .near_cache(100)
        .build()
        .await
        .expect("cache");
    assert!(cache.near_ready(WAIT).await, "tracking established");
    let key = cache.key(PREFIX).arg(&1u64).build().expect("key");

    assert_eq!(read(&cache, &key, 1).await, 1, "a miss whose SET fails");
    assert_eq!(cache.stats().total.redis_errors, 1, "the SET failed");
    assert_eq!(cache.stats().near.expect("near cache").entries, 0);

    // Allowed to write again; nothing has touched the key in Redis since.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "writer", "+set"])
        .query(&mut admin)
        .expect("acl");
    assert_eq!(read(&cache, &key, 2).await, 2, "a miss whose SET succeeds");
    cache.sync_near().await.expect("sync");
    assert_eq!(read(&cache, &key, 99).await, 2, "kept locally");
    assert_eq!(cache.stats().total.near_hits, 1);

    // Another client replaces the value: its invalidation must evict the local copy.
    let _: () = admin.set(key.as_str(), entry(3)).expect("set");
    cache.sync_near().await.expect("sync");
    assert_eq!(
        read(&cache, &key, 99).await,
        3,
        "the write by another client did not evict the value this cache wrote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_its_write_is_in_flight_keeps_nothing_and_later_writes_evict() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .name("dropped")
        .near_cache(100)
        .build()
        .await
        .expect("cache");
    assert!(cache.near_ready(WAIT).await, "tracking established");
    let key = cache.key(PREFIX).arg(&2u64).build().expect("key");

    // The body freezes the server as it returns, so the call is dropped with its SET sent
    // and unanswered: the dangerous point.
    let policy = policy(PREFIX);
    let call = cache.get_or_fill::<Plain, _, _>(&key, &policy, async {
        server.freeze();
        1u64
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err(),
        "the call is still waiting for its SET when it is dropped"
    );
    server.thaw();
    assert!(cache.near_ready(WAIT).await, "tracking up after the pause");
    cache.sync_near().await.expect("sync");
    assert_eq!(
        cache.stats().near.expect("near cache").entries,
        0,
        "a dropped call keeps nothing in the near cache"
    );

    // The SET reached Redis after all: a read keeps it locally, and another client's write
    // then evicts it.
    assert_eq!(read(&cache, &key, 99).await, 1);
    assert_eq!(read(&cache, &key, 99).await, 1);
    assert_eq!(cache.stats().total.near_hits, 1);
    let mut admin = server.conn();
    let _: () = admin.set(key.as_str(), entry(3)).expect("set");
    cache.sync_near().await.expect("sync");
    assert_eq!(read(&cache, &key, 99).await, 3);
}
