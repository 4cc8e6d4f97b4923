//! The near cache (issue 12) against real Redis: hits answered from process memory, kept
//! coherent by server-assisted client-side caching (`CLIENT TRACKING … BCAST`).
//!
//! Two caches built apart (each with its own connections and tracking connection) stand for
//! two processes. Which tier answered a read is told by the cache's own counters (`near_hits`
//! against `hits`) and, where a test promises that no command was sent, by Redis itself
//! (`INFO commandstats`, `INFO stats`). Writes from "another process" are followed by
//! `sync_near`, which returns once every invalidation Redis sent before it has been applied,
//! or by a bounded wait: no test sleeps and hopes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use cached_runtime::{
    Cache, CacheBuilder, Key, Policy,
    shape::{Optional, Plain},
};
use redis::{Commands, ConnectionLike};
use tests::{
    RedisServer,
    fixtures::{entry, policy, policy_with_ttl},
    topology::{LocalCluster, TestRedis, Topology},
    topology_suite, wait_until, wait_until_async,
};
use tokio::sync::Notify;

/// The namespace every cache of these tests tracks (`BCAST PREFIX near:`).
const NS: &str = "near:";

/// How long a cache may take to establish tracking, and any other bounded wait: generous,
/// because a busy CI machine is slow; a passing run never waits this long.
const WITHIN: Duration = Duration::from_secs(15);

/// A cache named `name` in the namespace [`NS`] with a near cache of `entries`, once its near
/// cache serves.
async fn near(builder: CacheBuilder, name: &str, entries: u64) -> Cache {
    let cache = builder
        .name(name)
        .namespace(NS)
        .near_cache(entries)
        .build()
        .await
        .expect("connect");
    assert!(
        cache.near_ready(WITHIN).await,
        "cache {name}: the near cache is not serving {WITHIN:?} after the build"
    );
    cache
}

/// Which tier answered one read, and with what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// From process memory (a local hit): no Redis command.
    Local(u64),
    /// From a Redis hit.
    Redis(u64),
    /// The body ran.
    Body(u64),
    /// None of these moved (a bug in the counters, or a bypass).
    Other(u64),
}

/// Reads `key` through `cache` (whose body, if it runs, returns `fresh`) and says which tier
/// answered. Only for a cache no other task reads concurrently.
async fn answer(cache: &Cache, key: &Key, p: &Policy, fresh: u64) -> Answer {
    let before = cache.stats().total;
    let ran = AtomicUsize::new(0);
    let got = cache
        .get_or_fill::<Plain, u64, _>(key, p, async {
            ran.fetch_add(1, Ordering::SeqCst);
            fresh
        })
        .await;
    let after = cache.stats().total;
    if ran.load(Ordering::SeqCst) > 0 {
        Answer::Body(got)
    } else if after.near_hits == before.near_hits + 1 && after.hits == before.hits {
        Answer::Local(got)
    } else if after.hits == before.hits + 1 && after.near_hits == before.near_hits {
        Answer::Redis(got)
    } else {
        Answer::Other(got)
    }
}

/// Reads `key` until the near cache answers it: a Redis hit first (which stores it locally),
/// then a local hit with the same value. Panics when the second read is not local.
///
/// Syncs first: an invalidation of the key still on its way (from the write that stored it)
/// would rightly keep the first read's copy out of the near cache.
async fn warm(cache: &Cache, key: &Key, p: &Policy, expected: u64) {
    cache.sync_near().await.expect("sync_near");
    let first = answer(cache, key, p, u64::MAX).await;
    assert!(
        matches!(first, Answer::Redis(v) | Answer::Local(v) if v == expected),
        "{}: warming {key} got {first:?}, expected {expected}",
        cache.name()
    );
    let second = answer(cache, key, p, u64::MAX).await;
    assert_eq!(
        second,
        Answer::Local(expected),
        "{}: the second read of {key} was not answered from the near cache",
        cache.name()
    );
}

fn local_flushes(cache: &Cache) -> u64 {
    cache.stats().near.expect("a near cache").flushes
}

fn local_serving(cache: &Cache) -> bool {
    cache.stats().near.is_some_and(|l| l.serving)
}

/// A `field:value` (or `field=value` inside a `cmdstat_…` line) from `INFO section`.
fn info(conn: &mut impl ConnectionLike, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query(conn)
        .expect("INFO from the test connection")
}

fn info_u64(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map_or(0, |v| v.trim().parse().expect("a number in INFO"))
}

/// How many times the server ran `command` (0 before the first time).
fn command_calls(conn: &mut impl ConnectionLike, command: &str) -> u64 {
    let stats = info(conn, "commandstats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

/// Key lookups by any command (`keyspace_hits + keyspace_misses`).
fn key_lookups(conn: &mut impl ConnectionLike) -> u64 {
    let stats = info(conn, "stats");
    info_u64(&stats, "keyspace_hits") + info_u64(&stats, "keyspace_misses")
}

/// Clients whose command waits (here: writes postponed by `CLIENT PAUSE … WRITE`).
fn blocked_clients(conn: &mut impl ConnectionLike) -> u64 {
    info_u64(&info(conn, "clients"), "blocked_clients")
}

/// The id of the connection named `name` in `CLIENT LIST`, if exactly one has it.
fn client_id(conn: &mut impl ConnectionLike, name: &str) -> Option<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .expect("CLIENT LIST");
    let ids: Vec<u64> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == format!("name={name}")))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .and_then(|id| id.parse().ok())
        })
        .collect();
    match ids.as_slice() {
        [id] => Some(*id),
        _ => None,
    }
}

/// `FLUSHDB` on every primary, from a plain connection (not through any cache).
fn flushdb_everywhere(redis: &TestRedis) {
    match redis.topology() {
        Topology::Cluster => {
            let cluster = LocalCluster::shared();
            for port in cluster.primary_ports() {
                let _: () = redis::cmd("FLUSHDB")
                    .query(&mut cluster.node_on(port).conn())
                    .expect("FLUSHDB");
            }
        }
        _ => {
            let _: () = redis::cmd("FLUSHDB")
                .query(&mut redis.conn())
                .expect("FLUSHDB");
        }
    }
}

/// `count` keys under `prefix`; on the cluster, asserts they are spread over all three
/// primaries (so every tracking connection is exercised).
fn spread_keys(redis: &TestRedis, cache: &Cache, prefix: &str, count: u64) -> Vec<Key> {
    let keys: Vec<Key> = (0..count)
        .map(|id| cache.key(prefix).arg(&id).build().expect("valid key"))
        .collect();
    if redis.topology() == Topology::Cluster {
        let cluster = LocalCluster::shared();
        let owners: std::collections::BTreeSet<usize> = keys
            .iter()
            .map(|k| cluster.primary_for(k.as_str()))
            .collect();
        assert_eq!(owners.len(), 3, "{count} keys all hashed to {owners:?}");
    }
    keys
}

// 1. A warm key is answered from process memory the second time, without a Redis command.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_key_read_again_is_answered_from_process_memory_without_a_redis_command() {
    let server = RedisServer::start();
    let a = near(server.cache_builder(), "a", 1000).await;
    let p = policy("warm");
    let key = a.key("warm").arg(&1u8).build().expect("valid key");
    let mut conn = server.conn();
    // Warm in Redis, written by another process.
    let _: () = conn.set_ex(key.as_str(), entry(7), 600).expect("SET");
    // Its invalidation applied: the first read's copy is not refused because of it.
    a.sync_near().await.expect("sync_near");

    let (gets, lookups) = (command_calls(&mut conn, "get"), key_lookups(&mut conn));
    assert_eq!(answer(&a, &key, &p, 0).await, Answer::Redis(7));
    // The measurement sees a read that reaches Redis (a GET, and a PTTL beside it for the
    // near cache's copy).
    assert_eq!(command_calls(&mut conn, "get"), gets + 1);
    assert!(key_lookups(&mut conn) > lookups);

    let (gets, lookups) = (command_calls(&mut conn, "get"), key_lookups(&mut conn));
    assert_eq!(answer(&a, &key, &p, 0).await, Answer::Local(7));
    assert_eq!(
        command_calls(&mut conn, "get"),
        gets,
        "a local hit sent a GET"
    );
    assert_eq!(
        key_lookups(&mut conn),
        lookups,
        "a local hit looked a key up in Redis"
    );
    let total = a.stats().total;
    assert_eq!((total.near_hits, total.hits, total.misses), (1, 1, 0));
    assert_eq!(a.stats().near.expect("a near cache").entries, 1);
}

// 2, 5, 12. Coherence between two caches, on one server and on the cluster.

async fn an_update_through_one_cache_reaches_the_others_near_cache_after_sync_local(
    redis: TestRedis,
) {
    let a = near(redis.cache_builder(), "a", 1000).await;
    let b = near(redis.cache_builder(), "b", 1000).await;
    let p = policy("upd");
    let keys = spread_keys(&redis, &a, "upd", 30);
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(answer(&a, key, &p, id).await, Answer::Body(id));
        warm(&b, key, &p, id).await;
    }
    // Half through write-through, half through invalidate-then-fill.
    for (id, key) in (0u64..).zip(&keys) {
        if id % 2 == 0 {
            a.set(key, &(id + 1000), &p).await.expect("SET");
        } else {
            assert!(a.invalidate(key).await.expect("invalidate"));
            assert_eq!(
                answer(&a, key, &p, id + 1000).await,
                Answer::Body(id + 1000)
            );
        }
    }
    b.sync_near().await.expect("sync_near");
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(
            answer(&b, key, &p, u64::MAX).await,
            Answer::Redis(id + 1000),
            "b's read of {key} after the update and sync_near"
        );
        assert_eq!(
            answer(&b, key, &p, u64::MAX).await,
            Answer::Local(id + 1000)
        );
    }
}

async fn an_update_through_one_cache_reaches_the_others_near_cache_within_a_bounded_wait(
    redis: TestRedis,
) {
    let a = near(redis.cache_builder(), "a", 1000).await;
    let b = near(redis.cache_builder(), "b", 1000).await;
    let p = policy("upd");
    let keys = spread_keys(&redis, &a, "upd", 30);
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(answer(&a, key, &p, id).await, Answer::Body(id));
        warm(&b, key, &p, id).await;
    }
    for (id, key) in (0u64..).zip(&keys) {
        a.set(key, &(id + 1000), &p).await.expect("SET");
    }
    for (id, key) in (0u64..).zip(&keys) {
        // Old until the invalidation arrives, then new for good.
        let seen_new = AtomicBool::new(false);
        wait_until_async(WITHIN, || async {
            let got = b
                .get_or_fill::<Plain, u64, _>(key, &p, async { u64::MAX })
                .await;
            assert!(
                got == id + 1000 || (got == id && !seen_new.load(Ordering::SeqCst)),
                "b read {got} for {key} (old {id}, new {})",
                id + 1000
            );
            seen_new.fetch_or(got == id + 1000, Ordering::SeqCst);
            seen_new.load(Ordering::SeqCst)
        })
        .await;
    }
    for (id, key) in (0u64..).zip(&keys) {
        let got = answer(&b, key, &p, u64::MAX).await;
        assert!(
            matches!(got, Answer::Local(v) | Answer::Redis(v) if v == id + 1000),
            "{key}: {got:?}"
        );
    }
}

async fn after_flushdb_the_next_read_of_every_key_runs_the_body(redis: TestRedis) {
    let a = near(redis.cache_builder(), "a", 1000).await;
    let b = near(redis.cache_builder(), "b", 1000).await;
    let p = policy("flush");
    let keys = spread_keys(&redis, &a, "flush", 30);
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(answer(&a, key, &p, id).await, Answer::Body(id));
        warm(&b, key, &p, id).await;
    }
    flushdb_everywhere(&redis);
    b.sync_near().await.expect("sync_near");
    for (id, key) in (0u64..).zip(&keys) {
        assert_eq!(
            answer(&b, key, &p, id + 1000).await,
            Answer::Body(id + 1000),
            "b's read of {key} after FLUSHDB"
        );
    }
}

topology_suite!(standalone, cluster, sentinel;
    an_update_through_one_cache_reaches_the_others_near_cache_after_sync_local,
    an_update_through_one_cache_reaches_the_others_near_cache_within_a_bounded_wait,
    after_flushdb_the_next_read_of_every_key_runs_the_body,
);

// 3. Raw writes from a client that is not a cache.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_set_from_a_plain_client_replaces_the_value_in_the_near_cache() {
    let server = RedisServer::start();
    let a = near(server.cache_builder(), "a", 1000).await;
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("raw");
    let key = a.key("raw").arg(&1u8).build().expect("valid key");
    assert_eq!(answer(&a, &key, &p, 1).await, Answer::Body(1));
    warm(&b, &key, &p, 1).await;
    let mut conn = server.conn();
    let _: () = conn.set_ex(key.as_str(), entry(2), 600).expect("SET");
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Redis(2));
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Local(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_del_or_unlink_makes_the_next_read_run_the_body() {
    let server = RedisServer::start();
    let a = near(server.cache_builder(), "a", 1000).await;
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("raw");
    let mut conn = server.conn();
    for (id, command) in [(1u64, "DEL"), (2, "UNLINK")] {
        let key = a.key("raw").arg(&id).build().expect("valid key");
        assert_eq!(answer(&a, &key, &p, id).await, Answer::Body(id));
        warm(&b, &key, &p, id).await;
        let deleted: u64 = redis::cmd(command)
            .arg(key.as_str())
            .query(&mut conn)
            .expect(command);
        assert_eq!(deleted, 1);
        b.sync_near().await.expect("sync_near");
        assert_eq!(
            answer(&b, &key, &p, id + 100).await,
            Answer::Body(id + 100),
            "b's read after {command}"
        );
    }
}

// 4. Expiry in Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_expired_in_redis_is_not_served_from_the_near_cache() {
    let server = RedisServer::start();
    let a = near(server.cache_builder(), "a", 1000).await;
    let b = near(server.cache_builder(), "b", 1000).await;
    let short = policy_with_ttl("exp", 1);
    let key = a.key("exp").arg(&1u8).build().expect("valid key");
    assert_eq!(answer(&a, &key, &short, 1).await, Answer::Body(1));
    warm(&b, &key, &short, 1).await;
    let runs = AtomicUsize::new(0);
    wait_until_async(WITHIN, || async {
        let got = b
            .get_or_fill::<Plain, u64, _>(&key, &short, async {
                runs.fetch_add(1, Ordering::SeqCst);
                2
            })
            .await;
        let ran = runs.load(Ordering::SeqCst) > 0;
        assert_eq!(got, if ran { 2 } else { 1 });
        ran
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

// 6. A lost tracking connection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_tracking_connection_is_killed_a_cache_never_serves_the_old_value_and_turns_local_again()
 {
    let server = RedisServer::start();
    let a = near(server.cache_builder(), "a", 1000).await;
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("kill");
    let key = a.key("kill").arg(&1u8).build().expect("valid key");
    assert_eq!(answer(&a, &key, &p, 1).await, Answer::Body(1));
    warm(&b, &key, &p, 1).await;

    let mut conn = server.conn();
    let tracking = client_id(&mut conn, "redis-cache-tracking-b")
        .expect("one connection named redis-cache-tracking-b in CLIENT LIST");
    let flushes = local_flushes(&b);
    let killed: u64 = redis::cmd("CLIENT")
        .arg(&["KILL", "ID", &tracking.to_string()])
        .query(&mut conn)
        .expect("CLIENT KILL");
    assert_eq!(killed, 1);
    // Nobody can tell b about this write.
    let _: () = conn.set_ex(key.as_str(), entry(2), 600).expect("SET");
    wait_until(WITHIN, || !local_serving(&b) || local_flushes(&b) > flushes).await;
    for _ in 0..5 {
        let got = answer(&b, &key, &p, u64::MAX).await;
        assert!(
            matches!(got, Answer::Redis(2) | Answer::Local(2)),
            "after losing tracking b answered {got:?}"
        );
    }
    assert!(
        b.near_ready(WITHIN).await,
        "tracking did not come back within {WITHIN:?}"
    );
    let again = client_id(&mut conn, "redis-cache-tracking-b")
        .expect("one connection named redis-cache-tracking-b after the reconnect");
    assert_ne!(
        again, tracking,
        "the killed tracking connection is still listed"
    );
    let first = answer(&b, &key, &p, u64::MAX).await;
    assert!(
        matches!(first, Answer::Redis(2) | Answer::Local(2)),
        "{first:?}"
    );
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Local(2));
    // And the new tracking connection carries invalidations.
    let _: () = conn.set_ex(key.as_str(), entry(3), 600).expect("SET");
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Redis(3));
}

// 7. Capacity.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_of_100_entries_holds_at_most_100_and_every_read_returns_its_own_keys_value() {
    let server = RedisServer::start();
    let b = near(server.cache_builder(), "b", 100).await;
    let p = policy("cap");
    let keys: Vec<Key> = (0..1000u64)
        .map(|id| b.key("cap").arg(&id).build().expect("valid key"))
        .collect();
    let runs = AtomicUsize::new(0);
    for pass in 0..2 {
        for (id, key) in (0u64..).zip(&keys) {
            let got = b
                .get_or_fill::<Plain, u64, _>(key, &p, async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    id * 10
                })
                .await;
            assert_eq!(got, id * 10, "pass {pass}, key {key}");
            let local = b.stats().near.expect("a near cache");
            assert!(
                local.entries <= 100,
                "{} entries after {key}",
                local.entries
            );
        }
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1000,
        "a stored key ran its body"
    );
    let stats = b.stats();
    assert_eq!(stats.total.near_hits + stats.total.hits, 1000);
    let local = stats.near.expect("a near cache");
    assert!(
        (1..=100).contains(&local.entries),
        "{} entries",
        local.entries
    );
    // What it holds it serves.
    let last = keys.last().expect("keys");
    let got = answer(&b, last, &p, u64::MAX).await;
    assert!(
        matches!(got, Answer::Local(9990) | Answer::Redis(9990)),
        "{got:?}"
    );
    assert_eq!(answer(&b, last, &p, u64::MAX).await, Answer::Local(9990));
}

// 8. A fill racing a write from elsewhere.

/// Starts `cache`'s fill of `key` on its own task; its body waits for `release` and returns
/// `value`. Returns once the body runs (the fill's `GET` has missed).
async fn start_held_fill(
    cache: &Cache,
    key: &Key,
    p: &Policy,
    value: u64,
) -> (tokio::task::JoinHandle<u64>, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let task = {
        let (cache, key, p) = (cache.clone(), key.clone(), p.clone());
        let (release, started) = (Arc::clone(&release), Arc::clone(&started));
        tokio::spawn(async move {
            cache
                .get_or_fill::<Plain, u64, _>(&key, &p, async move {
                    started.notify_one();
                    release.notified().await;
                    value
                })
                .await
        })
    };
    tokio::time::timeout(WITHIN, started.notified())
        .await
        .expect("the held fill's body did not start");
    (task, release)
}

/// Decodes a raw plain `u64` entry.
fn stored(conn: &mut impl ConnectionLike, key: &Key) -> Option<u64> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(key.as_str())
        .query(conn)
        .expect("GET");
    raw.map(|r| {
        r.strip_prefix("rc1:0:v:")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} holds {r:?}"))
    })
}

/// B's body is held while A writes a newer value; then B's fill stores what it computed (a
/// fill's `SET` is unconditional: cache-aside, the last writer wins in Redis). Whatever Redis
/// holds at the end, after `sync_near` neither near cache may answer anything else: A must
/// not keep its newer value once B's `SET` replaced it, and once that value is deleted B must
/// not keep the value it computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_racing_another_caches_write_leaves_both_near_caches_agreeing_with_redis() {
    let server = RedisServer::start();
    let a = near(server.cache_builder(), "a", 1000).await;
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("race");
    let key = a.key("race").arg(&1u8).build().expect("valid key");
    let mut conn = server.conn();

    let (fill, release) = start_held_fill(&b, &key, &p, 1).await;
    a.set(&key, &2u64, &p).await.expect("SET");
    a.sync_near().await.expect("sync_near");
    warm(&a, &key, &p, 2).await;
    release.notify_one();
    assert_eq!(
        fill.await.expect("no panic"),
        1,
        "b's caller gets its body's value"
    );

    let in_redis = stored(&mut conn, &key).expect("the key exists");
    a.sync_near().await.expect("sync_near");
    b.sync_near().await.expect("sync_near");
    for cache in [&a, &b] {
        for _ in 0..2 {
            let got = answer(cache, &key, &p, u64::MAX).await;
            assert!(
                matches!(got, Answer::Local(v) | Answer::Redis(v) if v == in_redis),
                "{} answered {got:?} while Redis holds {in_redis}",
                cache.name()
            );
        }
    }
    // Now the value B computed is deleted elsewhere: B runs its body again.
    let _: u64 = conn.del(key.as_str()).expect("DEL");
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, 3).await, Answer::Body(3));
    a.sync_near().await.expect("sync_near");
    assert_eq!(answer(&a, &key, &p, u64::MAX).await, Answer::Redis(3));
}

/// The hardest interleaving for "own writes do not evict": B's fill `SET` and another
/// client's `DEL` of the same key run in one turn of Redis's event loop, so Redis sends B a
/// single invalidation for both (BCAST merges the keys of one turn). `CLIENT PAUSE … WRITE`
/// holds B's `SET`, then the `DEL`, and releases them in that order. Redis ends with no entry;
/// B's near cache must not keep the value its fill stored (that invalidation also answered
/// someone else's write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_landing_with_a_fills_own_set_is_not_hidden_by_the_fillers_near_cache() {
    let server = RedisServer::start();
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("merge");
    let key = b.key("merge").arg(&1u8).build().expect("valid key");
    let mut ctl = server.conn();

    let (fill, release) = start_held_fill(&b, &key, &p, 1).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .query(&mut ctl)
        .expect("CLIENT PAUSE");
    release.notify_one();
    wait_until(WITHIN, || blocked_clients(&mut ctl) == 1).await;
    let del = {
        let mut conn = server.conn();
        let key = key.as_str().to_owned();
        tokio::task::spawn_blocking(move || conn.del::<_, u64>(&key).expect("DEL"))
    };
    wait_until(WITHIN, || blocked_clients(&mut ctl) == 2).await;
    let invalidations = b.stats().near.expect("a near cache").invalidations;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut ctl)
        .expect("CLIENT UNPAUSE");
    assert_eq!(
        del.await.expect("no panic"),
        1,
        "the DEL did not run after the fill's SET"
    );
    assert_eq!(fill.await.expect("no panic"), 1);
    assert_eq!(stored(&mut ctl, &key), None);

    b.sync_near().await.expect("sync_near");
    let received = b.stats().near.expect("a near cache").invalidations - invalidations;
    assert_eq!(
        answer(&b, &key, &p, 2).await,
        Answer::Body(2),
        "b served a value that is no longer in Redis \
         ({received} invalidation(s) of the key arrived for the SET and the DEL)"
    );
}

// 9. Own writes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caches_own_fill_is_answered_locally_after_sync_local() {
    let server = RedisServer::start();
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("own");
    let key = b.key("own").arg(&1u8).build().expect("valid key");
    assert_eq!(answer(&b, &key, &p, 5).await, Answer::Body(5));
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Local(5));
    let total = b.stats().total;
    assert_eq!((total.near_hits, total.hits, total.misses), (1, 0, 1));
    // The next write from elsewhere still evicts it: only B's own SET is kept from being
    // reported back to B.
    let _: () = server
        .conn()
        .set_ex(key.as_str(), entry(6), 600)
        .expect("SET");
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Redis(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_result_is_answered_locally_as_a_local_null_hit() {
    let server = RedisServer::start();
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("none");
    let key = b.key("none").arg(&1u8).build().expect("valid key");
    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let got: Option<u64> = b
            .get_or_fill::<Optional, _, _>(&key, &p, async {
                runs.fetch_add(1, Ordering::SeqCst);
                None
            })
            .await;
        assert_eq!(got, None);
        b.sync_near().await.expect("sync_near");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let total = b.stats().total;
    assert_eq!(total.near_null_hits, 2, "{total:?}");
    assert_eq!(total.null_hits, 0, "{total:?}");
}

// 10. The near cache turned off per policy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_the_near_cache_off_reads_redis_every_time() {
    let server = RedisServer::start();
    let a = near(server.cache_builder(), "a", 1000).await;
    let off = policy("off").near(false);
    let key = a.key("off").arg(&1u8).build().expect("valid key");
    let mut conn = server.conn();
    assert_eq!(answer(&a, &key, &off, 1).await, Answer::Body(1));
    for _ in 0..3 {
        let gets = command_calls(&mut conn, "get");
        assert_eq!(answer(&a, &key, &off, u64::MAX).await, Answer::Redis(1));
        assert_eq!(command_calls(&mut conn, "get"), gets + 1);
        a.sync_near().await.expect("sync_near");
    }
    assert_eq!(a.stats().total.near_hits, 0);
    // The same cache answers locally for a policy that keeps the near cache on.
    let on = policy("on");
    let key = a.key("on").arg(&1u8).build().expect("valid key");
    assert_eq!(answer(&a, &key, &on, 1).await, Answer::Body(1));
    a.sync_near().await.expect("sync_near");
    assert_eq!(answer(&a, &key, &on, u64::MAX).await, Answer::Local(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_ready_is_false_for_a_cache_without_a_near_cache() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    assert!(!cache.near_ready(Duration::from_millis(200)).await);
    assert!(cache.stats().near.is_none_or(|l| !l.serving));
}

// 11. Redis without client tracking (HELLO unavailable, like Redis < 6).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_tracking_a_near_cache_answers_from_redis_and_is_never_ready() {
    let server = RedisServer::start_with_args(&["--rename-command", "HELLO", ""]);
    let mut conn = server.conn();
    let hello = redis::cmd("HELLO").arg(3).query::<redis::Value>(&mut conn);
    assert!(hello.is_err(), "HELLO still answers: {hello:?}");
    let a = server
        .cache_builder()
        .name("a")
        .namespace(NS)
        .near_cache(1000)
        .build()
        .await
        .expect("a near cache is optional: the build must not fail");
    assert!(!a.near_ready(Duration::from_secs(2)).await);
    let p = policy("old");
    let key = a.key("old").arg(&1u8).build().expect("valid key");
    assert_eq!(answer(&a, &key, &p, 1).await, Answer::Body(1));
    for _ in 0..3 {
        assert_eq!(answer(&a, &key, &p, u64::MAX).await, Answer::Redis(1));
    }
    let stats = a.stats();
    assert_eq!(stats.total.near_hits, 0);
    assert!(!local_serving(&a), "{:?}", stats.near);
    // Writes from elsewhere are seen at once (nothing local to go stale).
    let _: () = conn.set_ex(key.as_str(), entry(2), 600).expect("SET");
    assert_eq!(answer(&a, &key, &p, u64::MAX).await, Answer::Redis(2));
}

// 13. Cancellation.

/// The dropped call never produced a value; what it must not leave behind is state that
/// stops the near cache from filling or from honouring a later write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_its_body_runs_leaves_nothing_in_the_near_cache() {
    let server = RedisServer::start();
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("drop");
    let key = b.key("drop").arg(&1u8).build().expect("valid key");
    let started = Notify::new();
    let call = b.get_or_fill::<Plain, u64, _>(&key, &p, async {
        started.notify_one();
        std::future::pending::<()>().await;
        1
    });
    tokio::select! {
        got = call => panic!("the held call returned {got}"),
        () = started.notified() => {}
    }
    let mut conn = server.conn();
    let _: () = conn.set_ex(key.as_str(), entry(2), 600).expect("SET");
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Redis(2));
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Local(2));
    let _: u64 = conn.del(key.as_str()).expect("DEL");
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, 3).await, Answer::Body(3));
}

/// The call is dropped while its fill's `SET` waits in Redis (`CLIENT PAUSE … WRITE`); the
/// `SET` still runs, then another client's `SET`. B must answer that newer value, and a later
/// write must still evict: nothing the dropped call registered may swallow an invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_its_set_waits_leaves_no_stale_value_behind() {
    let server = RedisServer::start();
    let b = near(server.cache_builder(), "b", 1000).await;
    let p = policy("drop");
    let key = b.key("drop").arg(&2u8).build().expect("valid key");
    let mut ctl = server.conn();
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .query(&mut ctl)
        .expect("CLIENT PAUSE");
    let call = {
        let (b, key, p) = (b.clone(), key.clone(), p.clone());
        tokio::spawn(async move { b.get_or_fill::<Plain, u64, _>(&key, &p, async { 1 }).await })
    };
    wait_until(WITHIN, || blocked_clients(&mut ctl) == 1).await;
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    let set = {
        let mut conn = server.conn();
        let key = key.as_str().to_owned();
        tokio::task::spawn_blocking(move || {
            conn.set_ex::<_, _, ()>(&key, entry(2), 600).expect("SET")
        })
    };
    wait_until(WITHIN, || blocked_clients(&mut ctl) == 2).await;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut ctl)
        .expect("CLIENT UNPAUSE");
    set.await.expect("no panic");
    assert_eq!(stored(&mut ctl, &key), Some(2));

    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Redis(2));
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Local(2));
    let _: () = ctl.set_ex(key.as_str(), entry(3), 600).expect("SET");
    b.sync_near().await.expect("sync_near");
    assert_eq!(answer(&b, &key, &p, u64::MAX).await, Answer::Redis(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_bound_keeps_the_near_cache_within_its_bytes() {
    let server = RedisServer::start();
    let b = server
        .cache_builder()
        .name("b")
        .namespace(NS)
        .near_cache(1000)
        .near_cache_bytes(2000)
        .build()
        .await
        .expect("connect");
    assert!(b.near_ready(WITHIN).await, "the near cache is not serving");
    let p = policy("big");
    // Each entry weighs more than 100 bytes (its key and a 100-character JSON string).
    let big = |id: u64| format!("{id:0>100}");
    for id in 0..200u64 {
        let key = b.key("big").arg(&id).build().expect("valid key");
        let got: String = b
            .get_or_fill::<Plain, _, _>(&key, &p, async { big(id) })
            .await;
        assert_eq!(got, big(id));
    }
    let local = b.stats().near.expect("a near cache");
    assert!(local.weight <= local.capacity, "{local:?}");
    assert!(
        (1..=20).contains(&local.entries),
        "{} entries of over 100 bytes within 2000 bytes",
        local.entries
    );
}
