//! A Redis user whose ACL refuses commands the connection layer would like to send (`PING`
//! above all): the cache still builds and serves hits, because a `NOPERM` reply proves the
//! server answered; and a refusal that does stop the build names the refused command.

use std::{sync::atomic::AtomicUsize, time::Duration};

use cached_runtime::{Cache, CacheBuilder, ErrorKind};
use tests::{
    GENEROUS_TIMEOUT, RedisServer,
    fixtures::value,
    topology::{LocalCluster, TestRedis, Topology},
};

/// `ACL SETUSER` on one node, as the default (all-powerful) user.
fn set_user(conn: &mut redis::Connection, name: &str, rules: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(name)
        .arg(rules)
        .query(conn)
        .expect("ACL SETUSER");
}

/// `redis://127.0.0.1:port` as `redis://user:pw@127.0.0.1:port`.
fn with_user(url: &str, user: &str) -> String {
    url.replacen("redis://", &format!("redis://{user}:pw@"), 1)
}

fn generous(builder: CacheBuilder) -> CacheBuilder {
    builder
        .command_timeout(GENEROUS_TIMEOUT)
        .connect_timeout(GENEROUS_TIMEOUT)
}

/// Fills ids `0..n` through `admin`, then reads them through `cache`: every read must be a
/// hit with the right value, and no body may run.
async fn hits_what_admin_stored(admin: &Cache, cache: &Cache, n: u64) {
    let runs = AtomicUsize::new(0);
    for id in 0..n {
        assert_eq!(value(admin, id, &runs).await, id * 10);
    }
    let before = cache.stats().total.hits;
    let none = AtomicUsize::new(0);
    for id in 0..n {
        assert_eq!(value(cache, id, &none).await, id * 10, "a wrong value");
    }
    let stats = cache.stats();
    assert_eq!(
        none.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a body ran: {stats:?}"
    );
    assert_eq!(stats.total.hits - before, n, "{stats:?}");
    assert_eq!(stats.total.errors, 0, "{stats:?}");
}

#[tokio::test]
async fn a_user_refused_ping_builds_a_cache_that_serves_hits_on_one_server() {
    let server = RedisServer::start();
    set_user(
        &mut server.conn(),
        "app",
        &["on", ">pw", "~*", "&*", "+@all", "-ping"],
    );
    let url = with_user(&server.url(), "app");
    let cache = generous(Cache::builder(url))
        .build()
        .await
        .expect("a user refused only PING can build a cache");
    let admin = server.cache().await;
    hits_what_admin_stored(&admin, &cache, 20).await;
    // Its own fills work too: a miss is stored, then hit.
    let runs = AtomicUsize::new(0);
    assert_eq!(value(&cache, 100, &runs).await, 1000);
    assert_eq!(value(&cache, 100, &runs).await, 1000);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_read_only_user_builds_a_cache_that_serves_hits() {
    let server = RedisServer::start();
    set_user(
        &mut server.conn(),
        "reader",
        &["on", ">pw", "~*", "&*", "+@read"],
    );
    let url = with_user(&server.url(), "reader");
    let cache = generous(Cache::builder(url))
        .build()
        .await
        .expect("a read-only user can build a cache");
    let admin = server.cache().await;
    hits_what_admin_stored(&admin, &cache, 20).await;
}

#[tokio::test]
async fn a_user_refused_ping_builds_a_cache_that_serves_hits_on_a_cluster() {
    let redis = TestRedis::start(Topology::Cluster);
    let cluster = LocalCluster::shared();
    for i in 0..6 {
        set_user(
            &mut cluster.node(i).conn(),
            "app",
            &["on", ">pw", "~*", "&*", "+@all", "-ping"],
        );
    }
    let seeds: Vec<String> = cluster
        .seeds()
        .iter()
        .map(|s| with_user(s, "app"))
        .collect();
    let cache = generous(Cache::cluster(seeds))
        .build()
        .await
        .expect("a user refused only PING can build a cluster cache");
    let admin = redis.cache().await;
    hits_what_admin_stored(&admin, &cache, 30).await;
}

#[tokio::test]
async fn a_refused_command_the_build_needs_is_named_in_the_error() {
    let redis = TestRedis::start(Topology::Cluster);
    let cluster = LocalCluster::shared();
    // Without `CLUSTER SLOTS` no client can learn the cluster's shape.
    for i in 0..6 {
        set_user(
            &mut cluster.node(i).conn(),
            "blind",
            &["on", ">pw", "~*", "&*", "+@all", "-cluster"],
        );
    }
    let seeds: Vec<String> = cluster
        .seeds()
        .iter()
        .map(|s| with_user(s, "blind"))
        .collect();
    let error = generous(Cache::cluster(seeds))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("a cluster client cannot work without CLUSTER SLOTS");
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::Config, "{text}");
    assert!(
        text.contains("NOPERM") && text.to_ascii_lowercase().contains("cluster"),
        "the error names the refused command and the ACL: {text}"
    );
    drop(redis);
}
