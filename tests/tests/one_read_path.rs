//! One read path: a plain cached function and a revalidating HTTP handler go through the same
//! lookup (near cache, Redis, validate or decode, fill), so one scripted sequence of calls
//! ends in the same outcomes, counters and metric series for both.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use axum::Json;
use cached_runtime::{Cache, http::Conditional, redis_cache};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{Item, item},
    recorder::TestRecorder,
};

static PLAIN_RUNS: AtomicUsize = AtomicUsize::new(0);
static HTTP_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Ids above 100 are absent.
fn find(id: u64) -> Option<Json<Item>> {
    (id <= 100).then(|| Json(item(id)))
}

#[redis_cache(prefix = "same.plain", ttl = 60, cache = cache, skip(cache))]
async fn plain(cache: &Cache, id: u64) -> Option<Json<Item>> {
    PLAIN_RUNS.fetch_add(1, Ordering::SeqCst);
    find(id)
}

#[redis_cache(prefix = "same.http", ttl = 60, cache = cache, skip(cache), revalidate)]
async fn http(cache: &Cache, id: u64) -> Option<Json<Item>> {
    HTTP_RUNS.fetch_add(1, Ordering::SeqCst);
    find(id)
}

/// The same step, through the plain function or the handler.
async fn call(cache: &Cache, handler: bool, id: u64) {
    if handler {
        let _ = http(Conditional::default(), cache, id).await;
    } else {
        let _ = plain(cache, id).await;
    }
}

/// The scripted sequence on a cache without a near cache: miss, hit, null miss, null hit, a
/// corrupt entry, a bypass.
async fn through_redis(
    server: &RedisServer,
    cache: &Cache,
    handler: bool,
    key_of: impl Fn(u64) -> String,
) {
    call(cache, handler, 1).await;
    call(cache, handler, 1).await;
    call(cache, handler, 101).await;
    call(cache, handler, 101).await;
    let mut conn = server.conn();
    let _: () = conn.set(key_of(2), "garbage").expect("SET");
    call(cache, handler, 2).await;
    cached_runtime::bypass(call(cache, handler, 1)).await;
}

/// The same entries through a near cache: read from Redis and kept, then served locally.
async fn through_near(cache: &Cache, handler: bool) {
    for id in [1, 101] {
        call(cache, handler, id).await;
        cache.sync_near().await.expect("sync");
        call(cache, handler, id).await;
    }
}

/// A metric series: its name, its labels and its counter value.
type Series = (String, Vec<(String, String)>, Option<u64>);

/// Every series of `cache` and `prefix`, with its counter value, the prefix label blanked so
/// two prefixes compare.
fn series(recorder: &TestRecorder, cache: &str, prefix: &str) -> Vec<Series> {
    let mut all: Vec<_> = recorder
        .all_series(&[("cache", cache), ("prefix", prefix)])
        .into_iter()
        .map(|(name, labels)| {
            let refs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let value = recorder.counter(&name, &refs);
            let blanked = labels
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "prefix" {
                            "*".to_owned()
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect();
            (name, blanked, value)
        })
        .collect();
    all.sort();
    all
}

type Fields = (u64, u64, u64, u64, u64, u64, u64, u64, u64, u64);

fn fields(c: &cached_runtime::Counts) -> Fields {
    (
        c.hits,
        c.null_hits,
        c.near_hits,
        c.near_null_hits,
        c.misses,
        c.bypasses,
        c.errors,
        c.decode_failures,
        c.stores,
        c.calls(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_function_and_a_revalidating_handler_end_the_same_way() {
    let recorder = TestRecorder::global();
    let mut server = RedisServer::start();
    let remote = server
        .cache_builder()
        .name("same")
        .circuit_breaker(0, Duration::from_secs(1))
        .build()
        .await
        .expect("connect");
    let near = server
        .cache_builder()
        .name("same-near")
        .near_cache(100)
        .build()
        .await
        .expect("connect");
    assert!(
        near.near_ready(Duration::from_secs(10)).await,
        "near cache up"
    );
    let key = |prefix: &'static str| {
        let cache = remote.clone();
        move |id: u64| {
            cache
                .key(prefix)
                .arg(&id)
                .build()
                .expect("key")
                .as_str()
                .to_owned()
        }
    };
    through_redis(&server, &remote, false, key("same.plain")).await;
    through_redis(&server, &remote, true, key("same.http")).await;
    through_near(&near, false).await;
    through_near(&near, true).await;
    // Redis gone: an error for each.
    server.kill();
    call(&remote, false, 3).await;
    call(&remote, true, 3).await;

    for cache in [&remote, &near] {
        let stats = cache.stats();
        let (p, h) = (&stats.prefixes["same.plain"], &stats.prefixes["same.http"]);
        assert_eq!(
            fields(p),
            fields(h),
            "{}: plain {p:?}\nhttp {h:?}",
            cache.name()
        );
    }
    // And the sequence went where it says.
    let p = fields(&remote.stats().prefixes["same.plain"]);
    assert_eq!(p, (1, 1, 0, 0, 3, 1, 1, 1, 3, 7), "{p:?}");
    let p = fields(&near.stats().prefixes["same.plain"]);
    assert_eq!(p, (1, 1, 1, 1, 0, 0, 0, 0, 0, 4), "{p:?}");
    assert_eq!(
        PLAIN_RUNS.load(Ordering::SeqCst),
        HTTP_RUNS.load(Ordering::SeqCst)
    );

    // The same metric series, label for label, with the same values.
    for cache in ["same", "same-near"] {
        let (ps, hs) = (
            series(recorder, cache, "same.plain"),
            series(recorder, cache, "same.http"),
        );
        assert!(!ps.is_empty(), "no series recorded for {cache}");
        assert_eq!(ps, hs, "{cache}");
    }
}
