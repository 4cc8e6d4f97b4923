//! The runtime against a real redis-server: connection errors, get-or-fill, values, null
//! markers, TTLs, invalidation and counters.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use cached_runtime::{
    Cache, CacheError, Policy,
    shape::{Fallible, FallibleOptional, Optional, Plain},
};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{Item, item, policy_with_ttl},
    free_port,
    topology::TestRedis,
    topology_suite, wait_until_async,
};

/// A loader that counts its runs.
struct Loader(AtomicUsize);

impl Loader {
    fn new() -> Self {
        Self(AtomicUsize::new(0))
    }
    async fn load(&self, id: u64) -> Option<Item> {
        self.0.fetch_add(1, Ordering::SeqCst);
        (id < 100).then(|| item(id))
    }
    fn runs(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn build_explains_a_refused_connection_without_the_password() {
    let url = format!("redis://:hunter2@127.0.0.1:{}", free_port());
    let err = Cache::builder(url)
        .build()
        .await
        .expect_err("nothing listens there");
    let msg = err.to_string();
    assert!(matches!(err, CacheError::Connect { .. }), "{err:?}");
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(msg.contains("is redis-server running"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

#[tokio::test]
async fn build_reports_a_server_that_does_not_answer_as_a_timeout() {
    let server = RedisServer::start();
    // A frozen server accepts the TCP connection but never answers.
    let status = std::process::Command::new("kill")
        .args(["-STOP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let err = server
        .cache_builder()
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect_err("a frozen server cannot be connected");
    assert!(matches!(err, CacheError::ConnectTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("did not answer within"), "{err}");
}

#[tokio::test]
async fn build_explains_a_missing_or_wrong_password() {
    let server = RedisServer::start_with(free_port(), &["--requirepass", "right"]);
    for url in [
        server.url(),
        format!("redis://:wrong@127.0.0.1:{}", server.port()),
    ] {
        let err = Cache::builder(url)
            .build()
            .await
            .expect_err("authentication must fail");
        let msg = err.to_string();
        assert!(msg.contains("check the user and password"), "{msg}");
        assert!(!msg.contains("wrong@"), "{msg}");
    }
    let ok = Cache::builder(format!("redis://:right@127.0.0.1:{}", server.port()))
        .build()
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn acl_users_databases_and_unix_sockets_are_reachable_by_url() {
    let server = RedisServer::start_with(
        free_port(),
        &[
            "--unixsocket",
            "{dir}/redis.sock",
            "--unixsocketperm",
            "700",
        ],
    );
    let mut conn = server.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">s3cret", "~*", "+@all"])
        .query(&mut conn)
        .expect("create an ACL user");
    let socket = server.dir().join("redis.sock");
    let urls = [
        (
            format!("redis://app:s3cret@127.0.0.1:{}/3", server.port()),
            3,
        ),
        (format!("redis+unix://{}?db=4", socket.display()), 4),
        (format!("unix://{}", socket.display()), 0),
    ];
    for (url, db) in urls {
        let cache = Cache::builder(url.clone())
            .build()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let key = cache.key("conn").arg(&db).build().expect("valid key");
        let n: u32 = cache
            .get_or_fill::<Plain, _, _>(&key, &policy_with_ttl("conn", 60), async { 7 })
            .await;
        assert_eq!(n, 7);
        let _: () = redis::cmd("SELECT")
            .arg(db)
            .query(&mut conn)
            .expect("select");
        let stored: Option<Vec<u8>> = conn.get(key.as_str()).expect("GET");
        assert!(stored.is_some(), "{url} did not write into db {db}");
    }
}

async fn a_hit_is_served_without_running_the_body(server: TestRedis) {
    let cache = server.cache().await;
    let loader = Loader::new();
    let p = policy_with_ttl("item", 600);
    let key = cache.key("item").arg(&7u64).build().expect("valid key");
    for _ in 0..3 {
        let got = cache
            .get_or_fill::<Optional, _, _>(&key, &p, loader.load(7))
            .await;
        assert_eq!(got, Some(item(7)));
    }
    assert_eq!(loader.runs(), 1);
    let stats = cache.stats();
    assert_eq!(stats.prefixes["item"].hits, 2);
    assert_eq!(stats.prefixes["item"].misses, 1);
    assert_eq!(stats.total.stores, 1);
}

async fn a_miss_stores_the_value_with_its_ttl_in_a_versioned_envelope(server: TestRedis) {
    let cache = server.cache().await;
    let key = cache.key("item").arg(&7u64).build().expect("valid key");
    cache
        .get_or_fill::<Plain, _, _>(&key, &policy_with_ttl("item", 600), async { item(7) })
        .await;
    let mut conn = server.conn();
    assert_eq!(key.as_str(), "item:7");
    let ttl: i64 = conn.ttl(key.as_str()).expect("TTL");
    assert!((1..=600).contains(&ttl), "ttl {ttl}");
    let raw: String = conn.get(key.as_str()).expect("GET");
    assert_eq!(raw, r#"rc1:0:v:{"id":7,"name":"item 7"}"#);
}

async fn a_missing_id_is_cached_as_a_null_marker_with_the_null_ttl(server: TestRedis) {
    let cache = server
        .cache_builder()
        .null_ttl(Duration::from_secs(30))
        .build()
        .await
        .expect("connect");
    let loader = Loader::new();
    let p = policy_with_ttl("item", 600);
    let key = cache.key("item").arg(&404u64).build().expect("valid key");
    assert_eq!(
        cache
            .get_or_fill::<Optional, _, _>(&key, &p, loader.load(404))
            .await,
        None
    );
    assert_eq!(
        cache
            .get_or_fill::<Optional, _, _>(&key, &p, loader.load(404))
            .await,
        None
    );
    assert_eq!(loader.runs(), 1, "the second lookup reached the loader");
    assert_eq!(cache.stats().prefixes["item"].null_hits, 1);
    let mut conn = server.conn();
    let ttl: i64 = conn.ttl(key.as_str()).expect("TTL");
    assert!((1..=30).contains(&ttl), "null ttl {ttl}");

    // A per-function null TTL wins over the cache's.
    let short = policy_with_ttl("item", 600)
        .null_ttl(Duration::from_secs(5))
        .expect("valid");
    let key = cache.key("item").arg(&405u64).build().expect("valid key");
    cache
        .get_or_fill::<Optional, _, _>(&key, &short, loader.load(405))
        .await;
    let ttl: i64 = conn.ttl(key.as_str()).expect("TTL");
    assert!((1..=5).contains(&ttl), "per-function null ttl {ttl}");
}

async fn result_shapes_store_ok_and_never_err(server: TestRedis) {
    let cache = server.cache().await;
    let p = policy_with_ttl("res", 60);
    let runs = AtomicUsize::new(0);
    let key = cache.key("res").arg(&1u8).build().expect("valid key");
    for _ in 0..2 {
        let r: Result<u32, String> = cache
            .get_or_fill::<Fallible, _, _>(&key, &p, async {
                runs.fetch_add(1, Ordering::SeqCst);
                Err("database down".to_owned())
            })
            .await;
        assert_eq!(r, Err("database down".to_owned()));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "an Err was served from cache"
    );
    let mut conn = server.conn();
    let exists: bool = conn.exists(key.as_str()).expect("EXISTS");
    assert!(!exists, "an Err was stored");

    let key = cache.key("res").arg(&2u8).build().expect("valid key");
    for _ in 0..2 {
        let r: Result<Option<u32>, String> = cache
            .get_or_fill::<FallibleOptional, _, _>(&key, &p, async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            })
            .await;
        assert_eq!(r, Ok(None));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "Ok(None) was not null-cached"
    );
}

async fn a_null_marker_never_decodes_as_a_value_and_no_value_as_a_null_marker(server: TestRedis) {
    let cache = server.cache().await;
    let p = policy_with_ttl("mix", 60);
    let key = cache.key("mix").arg(&1u8).build().expect("valid key");
    // Write a null marker, then read the key through a shape that cannot represent absence.
    cache
        .get_or_fill::<Optional, Option<u32>, _>(&key, &p, async { None })
        .await;
    let runs = AtomicUsize::new(0);
    let v: Option<u32> = cache
        .get_or_fill::<Plain, _, _>(&key, &p, async {
            runs.fetch_add(1, Ordering::SeqCst);
            Some(5)
        })
        .await;
    assert_eq!(v, Some(5));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the null marker was read as a value"
    );
    // A stored JSON `null` value is a value: Optional returns it without counting a null hit.
    let key = cache.key("mix").arg(&2u8).build().expect("valid key");
    let mut conn = server.conn();
    let _: () = conn.set(key.as_str(), "rc1:0:v:null").expect("SET");
    let v: Option<Option<u32>> = cache
        .get_or_fill::<Optional, _, _>(&key, &p, async { Some(Some(9)) })
        .await;
    assert_eq!(v, Some(None));
    assert_eq!(cache.stats().prefixes["mix"].null_hits, 0);
}

async fn corrupt_foreign_and_stale_entries_are_counted_misses_that_get_overwritten(
    server: TestRedis,
) {
    let cache = server.cache().await;
    let mut conn = server.conn();
    let garbage: [&[u8]; 6] = [
        b"\xff\x00\x13garbage",
        b"rc1:0:v:{\"id\":7,\"na",
        b"rc1:0:v:{\"other\":true}",
        b"{\"id\":7,\"name\":\"item 7\"}",
        b"rc1:1:v:{\"id\":7,\"name\":\"old version\"}",
        b"rc1:0:",
    ];
    let p = policy_with_ttl("item", 60);
    for (i, bytes) in garbage.iter().enumerate() {
        let key = cache.key("item").arg(&i).build().expect("valid key");
        let _: () = conn.set(key.as_str(), *bytes).expect("SET");
        let got = cache
            .get_or_fill::<Plain, _, _>(&key, &p, async { item(7) })
            .await;
        assert_eq!(got, item(7));
        let raw: Vec<u8> = conn.get(key.as_str()).expect("GET");
        assert_eq!(
            raw, br#"rc1:0:v:{"id":7,"name":"item 7"}"#,
            "entry {i} not overwritten"
        );
    }
    assert_eq!(cache.stats().prefixes["item"].decode_failures, 6);

    // An unusable entry whose fill stores nothing (an Err) is deleted.
    let key = cache.key("item").arg(&"err").build().expect("valid key");
    let _: () = conn.set(key.as_str(), "junk").expect("SET");
    let r: Result<Item, ()> = cache
        .get_or_fill::<Fallible, _, _>(&key, &p, async { Err(()) })
        .await;
    assert_eq!(r, Err(()));
    let exists: bool = conn.exists(key.as_str()).expect("EXISTS");
    assert!(!exists, "the corrupt entry was left behind");
}

async fn a_new_version_ignores_entries_of_the_old_one(server: TestRedis) {
    let cache = server.cache().await;
    let key = cache.key("item").arg(&1u8).build().expect("valid key");
    let v1 = policy_with_ttl("item", 60);
    let v2 = policy_with_ttl("item", 60).version(2);
    let first: u32 = cache
        .get_or_fill::<Plain, _, _>(&key, &v1, async { 1 })
        .await;
    let second: u32 = cache
        .get_or_fill::<Plain, _, _>(&key, &v2, async { 2 })
        .await;
    let third: u32 = cache
        .get_or_fill::<Plain, _, _>(&key, &v2, async { 3 })
        .await;
    assert_eq!((first, second, third), (1, 2, 2));
}

#[tokio::test]
async fn zero_ttls_are_rejected_and_jitter_stays_within_bounds() {
    assert!(matches!(
        Policy::new("item", Duration::from_millis(999)),
        Err(CacheError::ZeroTtl)
    ));
    assert!(matches!(
        policy_with_ttl("item", 1).null_ttl(Duration::ZERO),
        Err(CacheError::ZeroTtl)
    ));
    assert!(
        Cache::builder("redis://127.0.0.1:1")
            .null_ttl(Duration::ZERO)
            .build_lazy()
            .is_err()
    );

    let server = RedisServer::start();
    let cache = server.cache().await;
    let p = policy_with_ttl("jit", 100).jitter(Duration::from_secs(50));
    let mut conn = server.conn();
    let mut ttls = Vec::new();
    for i in 0..40u32 {
        let key = cache.key("jit").arg(&i).build().expect("valid key");
        let _: u32 = cache
            .get_or_fill::<Plain, _, _>(&key, &p, async { i })
            .await;
        let ttl: i64 = conn.ttl(key.as_str()).expect("TTL");
        assert!((1..=150).contains(&ttl), "ttl {ttl}");
        ttls.push(ttl);
    }
    assert!(
        ttls.iter().any(|&t| t > 100),
        "jitter never added anything: {ttls:?}"
    );
}

async fn exact_invalidation_deletes_the_entry_a_getter_reads(server: TestRedis) {
    let cache = server.cache().await;
    let loader = Loader::new();
    let p = policy_with_ttl("item", 600);
    let key = |id: u64| cache.key("item").arg(&id).build().expect("valid key");
    for id in [1, 2] {
        cache
            .get_or_fill::<Optional, _, _>(&key(id), &p, loader.load(id))
            .await;
    }
    assert!(cache.invalidate(&key(1)).await.expect("UNLINK"));
    assert!(!cache.invalidate(&key(1)).await.expect("UNLINK"));
    for id in [1, 2] {
        cache
            .get_or_fill::<Optional, _, _>(&key(id), &p, loader.load(id))
            .await;
    }
    assert_eq!(loader.runs(), 3, "only item 1 is reloaded");
    assert_eq!(cache.stats().prefixes["item"].invalidated, 1);
}

async fn prefix_invalidation_deletes_100k_keys_and_nothing_else(server: TestRedis) {
    let cache = server
        .cache_builder()
        .namespace("app:")
        .build()
        .await
        .expect("connect");
    let mut conn = server.conn();
    let keys: Vec<String> = (0..100_000u32)
        .map(|i| {
            cache
                .key("user")
                .arg(&i)
                .build()
                .expect("valid key")
                .to_string()
        })
        .collect();
    server.set_all(&keys, "x");
    let survivors = [
        "app:user2:1",
        "app:users:1",
        "app:user",
        "other:user:1",
        "user:1",
        "app:item:1",
    ];
    for k in survivors {
        let _: () = conn.set(k, "keep").expect("SET");
    }
    let deleted = cache.invalidate_prefix("user").await.expect("invalidate");
    assert_eq!(deleted, 100_000);
    let left = server.keys("*");
    let mut expected: Vec<String> = survivors.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(cache.stats().prefixes["user"].invalidated, 100_000);
    assert!(matches!(
        cache.invalidate_prefix("us*").await,
        Err(CacheError::InvalidPrefix(_))
    ));
}

async fn invalidation_treats_glob_characters_in_keys_and_namespaces_literally(server: TestRedis) {
    // A namespace with glob characters must not widen the match.
    let cache = server
        .cache_builder()
        .namespace("t[1]*:")
        .build()
        .await
        .expect("connect");
    let mut conn = server.conn();
    let p = policy_with_ttl("q", 60);
    let args = [
        "a*b",
        "a?",
        "[x]",
        "back\\slash",
        "new\nline",
        "sp ace",
        "ü:ñ",
    ];
    for a in args {
        let key = cache.key("q").arg(&a).build().expect("valid key");
        let _: u8 = cache
            .get_or_fill::<Plain, _, _>(&key, &p, async { 1 })
            .await;
    }
    for k in ["t1x:q:a", "t]:q:1", "tx:q:1", "t[1]:q:1"] {
        let _: () = conn.set(k, "keep").expect("SET");
    }
    // Keys with glob characters in their arguments are matched by an escaped pattern.
    let key = cache.key("q").arg(&"a*b").build().expect("valid key");
    assert_eq!(key.as_str(), "t[1]*:q:a%2Ab");
    assert_eq!(cache.invalidate_pattern("q:a%2A*").await.expect("scan"), 1);
    assert_eq!(cache.invalidate_prefix("q").await.expect("scan"), 6);
    let left = server.keys("*");
    assert_eq!(left, ["t1x:q:a", "t[1]:q:1", "t]:q:1", "tx:q:1"]);
}

async fn pattern_invalidation_stays_inside_the_namespace(server: TestRedis) {
    let cache = server
        .cache_builder()
        .namespace("ns:")
        .build()
        .await
        .expect("connect");
    let mut conn = server.conn();
    for k in [
        "ns:item:1",
        "ns:item:2",
        "ns:list:1",
        "item:1",
        "other:item:1",
    ] {
        let _: () = conn.set(k, "x").expect("SET");
    }
    assert_eq!(cache.invalidate_pattern("*").await.expect("scan"), 3);
    let left = server.keys("*");
    assert_eq!(left, ["item:1", "other:item:1"]);
}

async fn two_prefixes_with_the_same_arguments_never_share_an_entry(server: TestRedis) {
    let cache = server.cache().await;
    let a = cache.key("a").arg(&1u8).build().expect("valid key");
    let b = cache.key("b").arg(&1u8).build().expect("valid key");
    let x: u32 = cache
        .get_or_fill::<Plain, _, _>(&a, &policy_with_ttl("a", 60), async { 1 })
        .await;
    let y: u32 = cache
        .get_or_fill::<Plain, _, _>(&b, &policy_with_ttl("b", 60), async { 2 })
        .await;
    assert_eq!((x, y), (1, 2));
}

async fn oversized_results_are_returned_but_not_stored(server: TestRedis) {
    let cache = server
        .cache_builder()
        .max_value_bytes(1024)
        .build()
        .await
        .expect("connect");
    let key = cache.key("big").build().expect("valid key");
    let big = "x".repeat(4096);
    let got: String = cache
        .get_or_fill::<Plain, _, _>(&key, &policy_with_ttl("big", 60), async { big.clone() })
        .await;
    assert_eq!(got, big);
    let mut conn = server.conn();
    let exists: bool = conn.exists(key.as_str()).expect("EXISTS");
    assert!(!exists);
    assert_eq!(cache.stats().prefixes["big"].oversized, 1);
}

#[tokio::test]
async fn calls_keep_working_uncached_when_redis_is_gone() {
    let mut server = RedisServer::start();
    let cache = server.cache().await;
    let loader = Loader::new();
    let p = policy_with_ttl("item", 60);
    let key = cache.key("item").arg(&1u64).build().expect("valid key");
    server.kill();
    for _ in 0..20 {
        let got = cache
            .get_or_fill::<Optional, _, _>(&key, &p, loader.load(1))
            .await;
        assert_eq!(got, Some(item(1)));
    }
    assert_eq!(loader.runs(), 20);
    assert!(cache.stats().prefixes["item"].errors >= 20);
    assert!(cache.ping().await.is_err());
}

#[tokio::test]
async fn a_lazy_cache_starts_without_redis_and_caches_once_it_appears() {
    let port = free_port();
    let cache = Cache::builder(format!("redis://127.0.0.1:{port}"))
        .build_lazy()
        .expect("valid config");
    let loader = Loader::new();
    let p = policy_with_ttl("item", 60);
    let key = cache.key("item").arg(&1u64).build().expect("valid key");
    assert_eq!(
        cache
            .get_or_fill::<Optional, _, _>(&key, &p, loader.load(1))
            .await,
        Some(item(1))
    );
    let _server = RedisServer::start_on(port);
    // Calls until one is answered from the cache.
    wait_until_async(Duration::from_secs(20), || async {
        let found = cache
            .get_or_fill::<Optional, _, _>(&key, &p, loader.load(1))
            .await;
        assert_eq!(found, Some(item(1)));
        cache.stats().total.hits > 0
    })
    .await;
}

topology_suite!(standalone, cluster;
    a_hit_is_served_without_running_the_body,
    a_miss_stores_the_value_with_its_ttl_in_a_versioned_envelope,
    a_missing_id_is_cached_as_a_null_marker_with_the_null_ttl,
    result_shapes_store_ok_and_never_err,
    a_null_marker_never_decodes_as_a_value_and_no_value_as_a_null_marker,
    corrupt_foreign_and_stale_entries_are_counted_misses_that_get_overwritten,
    a_new_version_ignores_entries_of_the_old_one,
    exact_invalidation_deletes_the_entry_a_getter_reads,
    prefix_invalidation_deletes_100k_keys_and_nothing_else,
    invalidation_treats_glob_characters_in_keys_and_namespaces_literally,
    pattern_invalidation_stays_inside_the_namespace,
    two_prefixes_with_the_same_arguments_never_share_an_entry,
    oversized_results_are_returned_but_not_stored,
);

topology_suite!(sentinel;
    a_hit_is_served_without_running_the_body,
    a_missing_id_is_cached_as_a_null_marker_with_the_null_ttl,
    exact_invalidation_deletes_the_entry_a_getter_reads,
    prefix_invalidation_deletes_100k_keys_and_nothing_else,
);
