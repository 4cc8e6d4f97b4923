//! Serving stale over HTTP, through the attribute: a revalidating axum handler with
//! `stale` and `fail_safe` says so in `Cache-Control` (`stale-if-error`), and while its
//! database fails answers the stale entry marked `X-Cache: STALE` with an honest `Age`; a
//! plain function with `stale_while_revalidate` answers stale at once and refreshes.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use cached_runtime::{Cache, redis_cache};
use redis::Commands;
use tests::{
    RedisServer,
    fixtures::{Item, serve},
    wait_until,
};

#[derive(Clone)]
struct Db {
    cache: Cache,
    down: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
}

impl Db {
    fn read(&self, id: u64) -> Result<Item, StatusCode> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        Ok(Item {
            id,
            name: format!("item {id} v{}", self.runs.load(Ordering::SeqCst)),
        })
    }
}

#[redis_cache(prefix = "sh.item", ttl = 60, stale = 600, fail_safe, skip(db), cache = db.cache, revalidate)]
async fn item(State(db): State<Db>, Path(id): Path<u64>) -> Result<Json<Item>, StatusCode> {
    db.read(id).map(Json)
}

#[redis_cache(prefix = "sh.list", ttl = 60, stale = 600, stale_while_revalidate, skip(db), cache = db.cache)]
async fn list(db: Db, id: u64) -> Result<Item, String> {
    db.read(id).map_err(|s| s.to_string())
}

async fn start(db: Db) -> SocketAddr {
    serve(Router::new().route("/items/{id}", get(item)).with_state(db)).await
}

fn db(cache: Cache) -> Db {
    Db {
        cache,
        down: Arc::new(AtomicBool::new(false)),
        runs: Arc::new(AtomicUsize::new(0)),
    }
}

/// Leaves the entry in its stale window, 61 s after it was written (ttl 60 + window 600).
fn make_stale(server: &RedisServer, key: &str) {
    let set: bool = server.conn().pexpire(key, 599_000).expect("PEXPIRE");
    assert!(set, "the entry is in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_answers_its_stale_entry_marked_stale_with_its_age() {
    let server = RedisServer::start();
    let db = db(server.cache().await);
    let addr = start(db.clone()).await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/items/1");
    let first = http.get(&url).send().await.expect("GET");
    assert_eq!(first.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(header(&first, "x-cache").as_deref(), Some("MISS"));
    let control = header(&first, "cache-control").expect("cache-control");
    assert!(control.ends_with(", stale-if-error=600"), "{control}");
    let body = first.text().await.expect("body");

    let key = item_key(&db.cache, &1).expect("key");
    make_stale(&server, key.as_str());
    db.down.store(true, Ordering::SeqCst);
    let stale = http.get(&url).send().await.expect("GET");
    assert_eq!(stale.status(), 200, "the stale entry, not the error");
    assert_eq!(header(&stale, "x-cache").as_deref(), Some("STALE"));
    // Written 61 s before the PEXPIRE by the entry's own TTL, and not longer ago than now.
    let age: u64 = header(&stale, "age")
        .expect("age")
        .parse()
        .expect("seconds");
    assert!(age >= 61, "age {age}");
    assert_eq!(stale.text().await.expect("body"), body);
    assert_eq!(db.runs.load(Ordering::SeqCst), 2, "the body was tried");
    assert_eq!(db.cache.stats().total.fail_safe, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attribute_with_stale_while_revalidate_answers_stale_and_refreshes_once() {
    let server = RedisServer::start();
    let db = db(server.cache().await);
    let first = list(db.clone(), 1).await.expect("a value");
    let key = list_key(&db.cache, &1).expect("key");
    make_stale(&server, key.as_str());
    assert_eq!(
        list(db.clone(), 1).await,
        Ok(first.clone()),
        "stale at once"
    );
    wait_until(Duration::from_secs(20), || {
        db.cache.stats().total.refreshed == 1
    })
    .await;
    let fresh = list(db.clone(), 1).await.expect("a value");
    assert_ne!(fresh, first, "the refreshed value");
    assert_eq!(db.runs.load(Ordering::SeqCst), 2);
}
