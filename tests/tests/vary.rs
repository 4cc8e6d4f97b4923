//! `vary(...)` against a real redis-server: the named request headers are part of the key, so
//! one caller's entry is never served to another, and the companion invalidation drops the
//! entries of every caller.

#![deny(warnings, clippy::all)]

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use actix_web::{HttpRequest, test::TestRequest, web};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, header::AUTHORIZATION},
};
use cached_runtime::{Cache, redis_cache};
use redis::Commands;
use tests::RedisServer;

#[derive(Clone)]
struct App {
    cache: Cache,
    runs: Arc<AtomicUsize>,
}

/// A handler whose result depends on the caller, read from a header.
#[redis_cache(prefix = "me.order", ttl = 600, skip(app), cache = app.cache, vary(headers = ["authorization"]))]
async fn my_order(State(app): State<App>, headers: HeaderMap, Path(id): Path<u64>) -> Json<String> {
    app.runs.fetch_add(1, Ordering::SeqCst);
    let user = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous");
    Json(format!("order {id} of {user}"))
}

fn as_user(user: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(user) = user {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(user).expect("a header value"),
        );
    }
    headers.insert("x-request-id", HeaderValue::from_static("ignored"));
    headers
}

#[tokio::test]
async fn a_varied_header_keeps_each_callers_entry_apart() {
    let server = RedisServer::start();
    let app = App {
        cache: server.cache().await,
        runs: Arc::new(AtomicUsize::new(0)),
    };
    let call = |user: Option<&str>| my_order(State(app.clone()), as_user(user), Path(1));
    assert_eq!(call(Some("alice")).await.0, "order 1 of alice");
    assert_eq!(call(Some("bob")).await.0, "order 1 of bob");
    assert_eq!(call(None).await.0, "order 1 of anonymous");
    assert_eq!(app.runs.load(Ordering::SeqCst), 3, "one entry per caller");
    assert_eq!(call(Some("alice")).await.0, "order 1 of alice");
    assert_eq!(call(Some("bob")).await.0, "order 1 of bob");
    assert_eq!(call(None).await.0, "order 1 of anonymous");
    assert_eq!(
        app.runs.load(Ordering::SeqCst),
        3,
        "each caller hits its own"
    );

    // The key holds a hash of the header, never the credential itself.
    let key = my_order_key(&app.cache, &1, &as_user(Some("alice"))).expect("a key");
    let (prefix, hash) = key.as_str().rsplit_once(':').expect("a vary segment");
    assert_eq!(prefix, "me.order:1");
    assert_eq!(hash.len(), 32);
    assert!(!key.as_str().contains("alice"));
    let exists: bool = server.conn().exists(key.as_str()).expect("EXISTS");
    assert!(exists);

    // An update drops every caller's entry of that order, and no other order's.
    let _ = my_order(State(app.clone()), as_user(Some("alice")), Path(2)).await;
    assert!(my_order_invalidate(&app.cache, &1).await.expect("SCAN"));
    let keys: Vec<String> = server.conn().keys("me.order:*").expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("me.order:2:"));
    let _ = call(Some("bob")).await;
    assert_eq!(app.runs.load(Ordering::SeqCst), 5);
}

#[redis_cache(prefix = "me.lang", ttl = 600, cache = cache.get_ref(), skip(cache), vary(req = ["accept-language", "authorization"]))]
async fn greeting(cache: web::Data<Cache>, req: HttpRequest) -> web::Json<String> {
    let _ = cache;
    let lang = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("en");
    web::Json(format!("hello in {lang}"))
}

#[tokio::test]
async fn an_actix_request_varies_on_every_named_header() {
    let server = RedisServer::start();
    let cache = web::Data::new(server.cache().await);
    let request = |lang: &str| {
        TestRequest::default()
            .insert_header(("accept-language", lang))
            .to_http_request()
    };
    assert_eq!(
        greeting(cache.clone(), request("de")).await.0,
        "hello in de"
    );
    assert_eq!(
        greeting(cache.clone(), request("fr")).await.0,
        "hello in fr"
    );
    assert_eq!(
        greeting(cache.clone(), request("de")).await.0,
        "hello in de"
    );
    let keys: Vec<String> = server.conn().keys("me.lang:*").expect("KEYS");
    assert_eq!(keys.len(), 2, "{keys:?}");
    // Without arguments before it, the vary segment is the first.
    let key = greeting_key(&cache, &request("fr")).expect("a key");
    assert!(
        keys.contains(&key.as_str().to_owned()),
        "{key:?} in {keys:?}"
    );
}
