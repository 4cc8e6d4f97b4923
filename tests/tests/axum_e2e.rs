//! End to end: the axum example service, started in-process on a free loopback port against a
//! private redis-server and a fresh SQLite file, driven over real HTTP.
//!
//! Each test starts its own Redis, database and server, and waits for `/healthz` to report
//! Redis up (the cache is built lazily) before asserting cache behaviour.

use std::ops::Deref;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tests::fixtures::demo::AxumDemo;

/// The example (see [`AxumDemo`]), with the requests these tests make.
struct Demo(AxumDemo);

impl Deref for Demo {
    type Target = AxumDemo;

    fn deref(&self) -> &AxumDemo {
        &self.0
    }
}

/// One answer: status, the cache's headers, and the body as JSON (`Null` when empty).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    etag: Option<String>,
    x_cache: Option<String>,
    cache_control: Option<String>,
    vary: Option<String>,
    content_type: Option<String>,
    body: Value,
}

impl Demo {
    async fn start() -> Self {
        Self(AxumDemo::start(|_| ()).await)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("the demo answers");
        let get = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, cache_control, vary, content_type) = (
            get(header::ETAG),
            get(header::CACHE_CONTROL),
            get(header::VARY),
            get(header::CONTENT_TYPE),
        );
        let x_cache = get(header::HeaderName::from_static("x-cache"));
        let status = response.status();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {text:?}"))
        };
        Reply {
            status,
            etag,
            x_cache,
            cache_control,
            vary,
            content_type,
            body,
        }
    }

    async fn get(&self, path: &str, headers: &[(header::HeaderName, &str)]) -> Reply {
        self.call(Method::GET, path, headers, None).await
    }

    async fn db_queries(&self) -> u64 {
        let reply = self.get("/stats", &[]).await;
        reply.body["db_queries"].as_u64().expect("db_queries")
    }
}

#[tokio::test]
async fn an_item_read_is_revalidated_with_a_304_that_reaches_no_database() {
    let demo = Demo::start().await;
    let miss = demo.get("/items/7", &[]).await;
    assert_eq!(miss.status, StatusCode::OK, "{miss:?}");
    assert_eq!(miss.x_cache.as_deref(), Some("MISS"));
    assert_eq!(miss.body["id"], 7);
    assert_eq!(miss.content_type.as_deref(), Some("application/json"));
    let cache_control = miss.cache_control.as_deref().expect("Cache-Control");
    assert!(
        cache_control.starts_with("private, max-age="),
        "{cache_control}"
    );
    let etag = miss.etag.expect("an ETag");
    let queries = demo.db_queries().await;

    let hit = demo.get("/items/7", &[]).await;
    assert_eq!(hit.x_cache.as_deref(), Some("HIT"));
    assert_eq!(hit.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(hit.body, miss.body);

    let not_modified = demo
        .get("/items/7", &[(header::IF_NONE_MATCH, &etag)])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.body, Value::Null);
    assert_eq!(not_modified.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(
        demo.db_queries().await,
        queries,
        "hits and 304s query nothing"
    );
}

#[tokio::test]
async fn an_update_invalidates_so_the_old_etag_gets_the_new_item() {
    let demo = Demo::start().await;
    let before = demo.get("/items/3", &[]).await;
    let old = before.etag.expect("an ETag");
    let updated = demo
        .call(
            Method::PUT,
            "/items/3",
            &[],
            Some(r#"{"name": "Deluxe", "price_cents": 4200}"#),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    let after = demo.get("/items/3", &[(header::IF_NONE_MATCH, &old)]).await;
    assert_eq!(after.status, StatusCode::OK, "{after:?}");
    assert_eq!(after.x_cache.as_deref(), Some("MISS"));
    assert_eq!(after.body["name"], "Deluxe");
    assert_ne!(after.etag.as_deref(), Some(old.as_str()));
}

#[tokio::test]
async fn no_cache_recomputes_the_item_once() {
    let demo = Demo::start().await;
    let first = demo.get("/items/9", &[]).await;
    let queries = demo.db_queries().await;
    let refreshed = demo
        .get("/items/9", &[(header::CACHE_CONTROL, "no-cache")])
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.x_cache.as_deref(), Some("MISS"));
    assert_eq!(refreshed.etag, first.etag, "the same item, the same tag");
    assert_eq!(demo.db_queries().await, queries + 1);
    assert_eq!(
        demo.get("/items/9", &[]).await.x_cache.as_deref(),
        Some("HIT")
    );
}

#[tokio::test]
async fn lists_are_keyed_on_the_query_fields_and_dropped_by_an_update() {
    let demo = Demo::start().await;
    let books = demo.get("/items?category=books&page=1", &[]).await;
    assert_eq!(books.status, StatusCode::OK);
    let items = books.body.as_array().expect("a list");
    assert!(!items.is_empty() && items.iter().all(|i| i["category"] == "books"));
    let queries = demo.db_queries().await;
    let again = demo.get("/items?page=1&category=books", &[]).await;
    assert_eq!(again.body, books.body);
    assert_eq!(
        demo.db_queries().await,
        queries,
        "the same fields, one entry"
    );
    let games = demo.get("/items?category=games", &[]).await;
    assert_ne!(games.body, books.body);

    let first = items[0]["id"].as_u64().expect("an id");
    let renamed = json!({"name": "Renamed", "price_cents": 1}).to_string();
    let path = format!("/items/{first}");
    demo.call(Method::PUT, &path, &[], Some(&renamed)).await;
    let after = demo.get("/items?category=books&page=1", &[]).await;
    assert_eq!(after.body[0]["name"], "Renamed");
}

#[tokio::test]
async fn each_caller_gets_their_own_picks_and_a_304_for_them() {
    let demo = Demo::start().await;
    let as_user = |user: &'static str| [(header::AUTHORIZATION, user)];
    let alice = demo.get("/me/picks", &as_user("Bearer alice")).await;
    let bob = demo.get("/me/picks", &as_user("Bearer bob")).await;
    assert_eq!(alice.status, StatusCode::OK, "{alice:?}");
    assert_eq!(alice.body["user"], "alice");
    assert_eq!(bob.body["user"], "bob");
    assert_ne!(alice.etag, bob.etag);
    assert_eq!(alice.vary.as_deref(), Some("authorization"));
    assert_eq!(alice.cache_control.as_deref(), Some("private, no-cache"));

    let again = demo.get("/me/picks", &as_user("Bearer alice")).await;
    assert_eq!(again.x_cache.as_deref(), Some("HIT"));
    assert_eq!(again.body["user"], "alice");
    let etag = alice.etag.expect("an ETag");
    let mut headers = as_user("Bearer alice").to_vec();
    headers.push((header::IF_NONE_MATCH, &etag));
    let revalidated = demo.get("/me/picks", &headers).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    // Bob's request with Alice's tag is Bob's, not a 304 for Alice's entry.
    let mut headers = as_user("Bearer bob").to_vec();
    headers.push((header::IF_NONE_MATCH, &etag));
    let other = demo.get("/me/picks", &headers).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body["user"], "bob");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error() {
    let demo = Demo::start().await;
    let cases: [(Method, &str, Option<&str>, StatusCode); 7] = [
        (Method::GET, "/items/abc", None, StatusCode::BAD_REQUEST),
        (Method::GET, "/items/-1", None, StatusCode::BAD_REQUEST),
        (Method::GET, "/items/99999", None, StatusCode::NOT_FOUND),
        (
            Method::GET,
            "/items?page=zero",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/items?page=0", None, StatusCode::BAD_REQUEST),
        (
            Method::PUT,
            "/items/1",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/nowhere", None, StatusCode::NOT_FOUND),
    ];
    for (method, path, body, status) in cases {
        let reply = demo.call(method.clone(), path, &[], body).await;
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        let message = reply.body["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{method} {path}: {reply:?}");
    }
    let unknown_field = demo
        .call(
            Method::PUT,
            "/items/1",
            &[],
            Some(r#"{"name": "x", "price_cents": 1, "colour": "red"}"#),
        )
        .await;
    assert!(unknown_field.status.is_client_error(), "{unknown_field:?}");
    assert!(unknown_field.body["error"].is_string());
    let anonymous = demo.get("/me/picks", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.body["error"].is_string());
    let wrong_method = demo.call(Method::DELETE, "/items/1", &[], None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.body["error"].is_string());
}

#[tokio::test]
async fn the_service_stops_gracefully() {
    Demo::start().await.0.stop().await;
}
