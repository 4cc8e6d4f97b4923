//! End to end: the real demo service, started in-process on a free loopback port against a
//! private redis-server and a fresh SQLite file, driven over HTTP with a real client.
//!
//! Every test starts its own Redis, database and server. With `build_lazy` the first calls
//! may run uncached until the connection is up, so each test waits for `/healthz` to report
//! Redis up before asserting cache behaviour. No sleeps stand in for a condition: waits poll
//! with a bounded deadline.

use std::ops::{Deref, DerefMut};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::fixtures::demo::{ActixDemo, DEADLINE, TempDb};

/// The demo (see [`ActixDemo`]), with the requests these tests make.
struct Demo(ActixDemo);

impl Deref for Demo {
    type Target = ActixDemo;

    fn deref(&self) -> &ActixDemo {
        &self.0
    }
}

impl DerefMut for Demo {
    fn deref_mut(&mut self) -> &mut ActixDemo {
        &mut self.0
    }
}

/// A response: status and JSON body (`Null` when empty).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Value,
    location: Option<String>,
}

impl Demo {
    /// Starts everything and waits until the service reports Redis up.
    async fn start(admin_token: Option<&str>) -> Self {
        Self::start_with(|config| {
            config.admin_token = admin_token.map(demo_app::SecretString::from);
        })
        .await
    }

    /// Starts everything with `adjust` applied to the configuration, and waits until the
    /// service reports Redis up.
    async fn start_with(adjust: impl FnOnce(&mut demo_app::Config)) -> Self {
        Self(ActixDemo::start(adjust).await)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        self.finish(path, request).await
    }

    async fn finish(&self, path: &str, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the demo answers");
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("read the body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {text:?}"))
        };
        Reply {
            status,
            body,
            location,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, None).await
    }

    async fn send(&self, method: Method, path: &str, body: Value) -> Reply {
        self.call(method, path, Some(&body.to_string()), None).await
    }

    async fn stats(&self) -> Value {
        let reply = self.get("/stats").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body
    }

    async fn db_queries(&self) -> u64 {
        self.stats().await["db_queries"]
            .as_u64()
            .expect("db_queries is a number")
    }

    /// Whether Redis holds `key`.
    fn redis_has(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<u64>(&mut self.redis.conn())
            .expect("EXISTS")
            == 1
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_get_is_served_from_the_cache_without_a_query() {
    let demo = Demo::start(None).await;
    let first = demo.get("/items/1").await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.body["id"], 1);
    assert!(first.body["name"].is_string() && first.body["category"].is_string());
    assert!(
        demo.redis_has("item:1"),
        "the miss stored the item under item:1"
    );

    let queries = demo.db_queries().await;
    let hits = demo.stats().await["cache"]["hits"].as_u64().expect("hits");
    let second = demo.get("/items/1").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, first.body);
    assert_eq!(
        demo.db_queries().await,
        queries,
        "a hit must not query the database"
    );
    assert_eq!(demo.stats().await["cache"]["hits"], hits + 1);

    // The slow computation is cached the same way.
    let fib = demo.get("/fib/20").await;
    assert_eq!(fib.body, json!({"n": 20, "value": 6765}));
    let again = demo.get("/fib/20").await;
    assert_eq!(again.body, fib.body);
    let stats = demo.stats().await;
    assert_eq!(stats["by_prefix"]["fib"]["hits"], 1, "{stats}");
    assert_eq!(stats["by_prefix"]["fib"]["misses"], 1, "{stats}");
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_id_is_a_json_404_and_its_absence_is_cached() {
    let demo = Demo::start(None).await;
    let first = demo.get("/items/999999").await;
    assert_eq!(first.status, StatusCode::NOT_FOUND);
    assert_eq!(first.body, json!({"error": "item 999999 not found"}));
    let ttl: i64 = redis::cmd("TTL")
        .arg("item:999999")
        .query(&mut demo.redis.conn())
        .expect("TTL");
    assert!(
        (1..=demo_app::DEFAULT_NULL_TTL.as_secs().cast_signed()).contains(&ttl),
        "the null marker lives for the null ttl, got {ttl}"
    );

    let queries = demo.db_queries().await;
    let second = demo.get("/items/999999").await;
    assert_eq!(second.status, StatusCode::NOT_FOUND);
    assert_eq!(
        second.body, first.body,
        "a cached absence keeps its JSON body"
    );
    assert_eq!(demo.db_queries().await, queries, "the null marker answered");
    assert_eq!(demo.stats().await["cache"]["null_hits"], 1);
    demo.stop().await;
}

fn item_body(name: &str, price: f64, category: &str) -> Value {
    json!({"name": name, "price": price, "category": category})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_returns_the_new_value() {
    let demo = Demo::start(None).await;
    let before = demo.get("/items/5").await;
    assert_eq!(before.status, StatusCode::OK);
    assert!(demo.redis_has("item:5"));

    let put = demo
        .send(
            Method::PUT,
            "/items/5",
            item_body("Renamed Lamp", 42.5, "lighting"),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{put:?}");
    let expected = json!({"id": 5, "name": "Renamed Lamp", "price": 42.5, "category": "lighting"});
    assert_eq!(put.body, expected);
    assert!(
        !demo.redis_has("item:5"),
        "the update dropped exactly item:5"
    );

    let after = demo.get("/items/5").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body, expected);

    let missing = demo
        .send(
            Method::PUT,
            "/items/999999",
            item_body("Ghost", 1.0, "books"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"error": "item 999999 not found"}));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_get_is_404() {
    let demo = Demo::start(None).await;
    assert_eq!(demo.get("/items/7").await.status, StatusCode::OK);
    assert!(demo.redis_has("item:7"));

    let deleted = demo.call(Method::DELETE, "/items/7", None, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);

    let after = demo.get("/items/7").await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);
    assert_eq!(after.body, json!({"error": "item 7 not found"}));

    let again = demo.call(Method::DELETE, "/items/7", None, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.body, json!({"error": "item 7 not found"}));
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_reflects_a_post_and_other_categories_stay_cached() {
    let demo = Demo::start(None).await;
    let books = demo.get("/items?category=books").await;
    assert_eq!(books.status, StatusCode::OK, "{books:?}");
    let total = books.body["total"].as_u64().expect("total");
    let last_page = total.div_ceil(20);
    let last = demo
        .get(&format!("/items?category=books&page={last_page}"))
        .await;
    assert_eq!(last.status, StatusCode::OK);
    let all = demo.get("/items").await;
    let all_total = all.body["total"].as_u64().expect("total");
    let tools = demo.get("/items?category=tools").await;
    assert_eq!(tools.status, StatusCode::OK);
    // The next id does not exist yet: its absence gets cached.
    let next_id = u64::try_from(demo_app::SEED_ITEMS).expect("fits") + 1;
    assert_eq!(
        demo.get(&format!("/items/{next_id}")).await.status,
        StatusCode::NOT_FOUND
    );

    let created = demo
        .send(
            Method::POST,
            "/items",
            item_body("Pocket Dictionary", 7.25, "books"),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.body["id"], next_id);
    assert_eq!(
        created.location.as_deref(),
        Some(&*format!("/items/{next_id}"))
    );

    let books_after = demo.get("/items?category=books").await;
    assert_eq!(
        books_after.body["total"],
        total + 1,
        "the category's lists were dropped"
    );
    let page = total / 20 + 1;
    let page_after = demo
        .get(&format!("/items?category=books&page={page}"))
        .await;
    let ids: Vec<&Value> = page_after.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert!(ids.contains(&&json!(next_id)), "{page_after:?}");
    assert_eq!(
        demo.get("/items").await.body["total"],
        all_total + 1,
        "the unfiltered list too"
    );
    // The created item's cached absence was dropped as well.
    assert_eq!(
        demo.get(&format!("/items/{next_id}")).await.body,
        created.body
    );

    let queries = demo.db_queries().await;
    assert_eq!(demo.get("/items?category=tools").await.body, tools.body);
    assert_eq!(
        demo.db_queries().await,
        queries,
        "another category's list stayed cached"
    );
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_invalidation_needs_the_token_and_deletes_what_it_says() {
    let token = "e2e-admin-token-0123";
    let demo = Demo::start(Some(token)).await;
    for path in [
        "/items/1",
        "/items/2",
        "/items/3",
        "/fib/10",
        "/items?category=games",
    ] {
        assert_eq!(demo.get(path).await.status, StatusCode::OK, "{path}");
    }
    let url = "/admin/cache/invalidate";
    let body = r#"{"prefix": "item"}"#;

    let none = demo.call(Method::POST, url, Some(body), None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{none:?}");
    assert!(none.body["error"].is_string());
    let wrong = demo
        .call(Method::POST, url, Some(body), Some("e2e-admin-token-012"))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let short = demo.call(Method::POST, url, Some(body), Some("e2e")).await;
    assert_eq!(short.status, StatusCode::UNAUTHORIZED);
    let garbage_without_token = demo.call(Method::POST, url, Some("{"), None).await;
    assert_eq!(
        garbage_without_token.status,
        StatusCode::UNAUTHORIZED,
        "the token is checked before the body"
    );
    assert!(
        demo.redis_has("item:1"),
        "nothing deleted without the token"
    );

    let by_prefix = demo.call(Method::POST, url, Some(body), Some(token)).await;
    assert_eq!(by_prefix.status, StatusCode::OK, "{by_prefix:?}");
    assert_eq!(by_prefix.body, json!({"deleted": 3}));
    for key in ["item:1", "item:2", "item:3"] {
        assert!(!demo.redis_has(key), "{key} deleted");
    }
    assert!(demo.redis_has("fib:10"), "other prefixes untouched");

    let by_pattern = demo
        .call(
            Method::POST,
            url,
            Some(r#"{"pattern": "fib:*"}"#),
            Some(token),
        )
        .await;
    assert_eq!(by_pattern.body, json!({"deleted": 1}));
    assert!(!demo.redis_has("fib:10"));
    let lists = demo
        .call(
            Method::POST,
            url,
            Some(r#"{"prefix": "items"}"#),
            Some(token),
        )
        .await;
    assert_eq!(
        lists.body,
        json!({"deleted": 1}),
        "item and items are distinct prefixes"
    );

    for bad in [
        "{}",
        r#"{"prefix": "item", "pattern": "item:*"}"#,
        r#"{"prefix": "it*m"}"#,
        r#"{"prefix": "users"}"#,
        r#"{"pattern": ""}"#,
        r#"{"prefixes": "item"}"#,
        "[",
    ] {
        let reply = demo.call(Method::POST, url, Some(bad), Some(token)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {reply:?}");
        assert!(reply.body["error"].is_string(), "{bad}: {reply:?}");
    }
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_is_404_while_no_token_is_configured() {
    let demo = Demo::start(None).await;
    let reply = demo
        .call(
            Method::POST,
            "/admin/cache/invalidate",
            Some(r#"{"prefix": "item"}"#),
            Some("anything"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.body,
        json!({"error": "admin endpoint disabled: set ADMIN_TOKEN to enable it"})
    );
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_400_json_naming_the_problem() {
    let demo = Demo::start(None).await;
    let items_before = demo.get("/items").await.body["total"].clone();
    let stats_before = demo.stats().await;

    let good = item_body("Kite", 12.0, "toys").to_string();
    let cases: Vec<(Method, &str, Option<String>, &str)> = vec![
        (Method::GET, "/items/abc", None, "abc"),
        (Method::GET, "/items/-1", None, "-1"),
        (Method::GET, "/items/1.5", None, "1.5"),
        (Method::GET, "/items?page=abc", None, "page"),
        (Method::GET, "/items?page=0", None, "page"),
        (Method::GET, "/items?category=Bad!", None, "category"),
        (Method::GET, "/items?category=", None, "category"),
        (Method::GET, "/items?colour=red", None, "colour"),
        (
            Method::GET,
            "/items?category=unicorns",
            None,
            "unknown category",
        ),
        (Method::GET, "/items?page=51", None, "page"),
        (
            Method::GET,
            "/items?category=books&page=99999",
            None,
            "page",
        ),
        (Method::GET, "/fib/41", None, "at most 40"),
        (Method::GET, "/fib/-3", None, "-3"),
        (
            Method::POST,
            "/items",
            Some("{\"name\": ".to_owned()),
            "JSON",
        ),
        (Method::POST, "/items", Some("not json".to_owned()), "JSON"),
        (
            Method::POST,
            "/items",
            Some(r#"{"name": "Kite", "price": 3}"#.to_owned()),
            "category",
        ),
        (
            Method::POST,
            "/items",
            Some(r#"{"price": 3, "category": "toys"}"#.to_owned()),
            "name",
        ),
        (
            Method::POST,
            "/items",
            Some(item_body("Kite", -1.0, "toys").to_string()),
            "price",
        ),
        (
            Method::POST,
            "/items",
            Some(item_body("Kite", 0.001, "toys").to_string()),
            "price",
        ),
        (
            Method::POST,
            "/items",
            Some(r#"{"name": "Kite", "price": "cheap", "category": "toys"}"#.to_owned()),
            "price must be a number",
        ),
        (
            Method::POST,
            "/items",
            Some(item_body("Kite", 1.0, "Toys & Games").to_string()),
            "category",
        ),
        (
            Method::POST,
            "/items",
            Some(item_body("   ", 1.0, "toys").to_string()),
            "name",
        ),
        (
            Method::POST,
            "/items",
            Some(r#"{"name": "Kite", "price": 1, "category": "toys", "id": 9}"#.to_owned()),
            "id",
        ),
        (Method::PUT, "/items/abc", Some(good.clone()), "abc"),
        (
            Method::PUT,
            "/items/1",
            Some(item_body("Kite", -5.0, "toys").to_string()),
            "price",
        ),
        (Method::PUT, "/items/1", Some("{".to_owned()), "JSON"),
        (Method::DELETE, "/items/abc", None, "abc"),
    ];
    for (method, path, body, names) in cases {
        let reply = demo.call(method.clone(), path, body.as_deref(), None).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body:?}: {reply:?}"
        );
        let error = reply.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} {body:?}: no JSON error: {reply:?}"));
        assert!(
            error.contains(names),
            "{method} {path} {body:?}: {error:?} should name {names:?}"
        );
    }

    // A body without a JSON content type is refused too (415, JSON).
    let reply = demo
        .client
        .post(format!("{}/items", demo.base))
        .body(good)
        .send()
        .await
        .expect("the demo answers");
    assert_eq!(reply.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Rejected while extracting: no query, no cache lookup, nothing written.
    let stats_after = demo.stats().await;
    assert_eq!(stats_after["db_queries"], stats_before["db_queries"]);
    assert_eq!(stats_after["cache"], stats_before["cache"]);
    assert_eq!(demo.get("/items").await.body["total"], items_before);
    assert_eq!(
        demo.get("/items/1").await.status,
        StatusCode::OK,
        "item 1 untouched"
    );
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_redis_down_and_reads_fall_back_to_the_database() {
    let mut demo = Demo::start(None).await;
    let cached = demo.get("/items/3").await;
    assert_eq!(cached.status, StatusCode::OK);
    assert!(demo.redis_has("item:3"));

    demo.redis.kill();
    demo.wait_for_redis("down").await;

    let queries = demo.db_queries().await;
    let read = demo.get("/items/3").await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(read.body, cached.body);
    assert_eq!(
        demo.db_queries().await,
        queries + 1,
        "served from the database"
    );
    assert_eq!(demo.get("/items/4").await.status, StatusCode::OK);
    assert_eq!(
        demo.get("/items?category=music").await.status,
        StatusCode::OK
    );
    assert_eq!(
        demo.get("/items/999999").await.status,
        StatusCode::NOT_FOUND
    );
    // Writes succeed too; only their invalidation is skipped (and logged).
    let put = demo
        .send(
            Method::PUT,
            "/items/4",
            item_body("Offline Edit", 3.0, "books"),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{put:?}");
    assert!(
        demo.stats().await["cache"]["errors"]
            .as_u64()
            .expect("errors")
            > 0
    );
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_matches_in_any_case() {
    let token = "case-insensitive-token";
    let demo = Demo::start(Some(token)).await;
    let url = format!("{}/admin/cache/invalidate", demo.base);
    for (authorization, expected) in [
        (format!("bearer {token}"), StatusCode::OK),
        (format!("BEARER  {token}"), StatusCode::OK),
        (format!("Bearer {token}"), StatusCode::OK),
        (format!("Basic {token}"), StatusCode::UNAUTHORIZED),
        (format!("Bearer{token}"), StatusCode::UNAUTHORIZED),
    ] {
        let request = demo
            .client
            .post(&url)
            .header("authorization", &authorization)
            .header("content-type", "application/json")
            .body(r#"{"prefix": "item"}"#);
        let reply = demo.finish(&url, request).await;
        assert_eq!(reply.status, expected, "{authorization:?}: {reply:?}");
    }
    demo.stop().await;
}

#[tokio::test]
async fn a_short_admin_token_stops_the_service_from_starting() {
    let db = TempDb::new();
    // Nothing listens on port 1: the cache is lazy, and the token is checked first anyway.
    let mut config = demo_app::Config::new("redis://127.0.0.1:1", db.path());
    config.bind = "127.0.0.1:0".to_owned();
    config.admin_token = Some("too-short".into());
    let err = demo_app::start(config)
        .await
        .expect_err("a 9-character token is refused");
    let message = err.to_string();
    assert!(
        message.contains("ADMIN_TOKEN") && message.contains("16"),
        "{message}"
    );
    assert!(
        !message.contains("too-short"),
        "the error shows the token: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_of_unknown_categories_are_refused_before_the_cache() {
    let demo = Demo::start(None).await;
    let before = demo.stats().await;
    for path in [
        "/items?category=unicorns",
        "/items?category=books2",
        "/items?category=books&page=51",
    ] {
        let reply = demo.get(path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {reply:?}");
    }
    let after = demo.stats().await;
    assert_eq!(after["cache"], before["cache"], "the cache was not asked");
    assert_eq!(after["db_queries"], before["db_queries"]);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("items:*")
        .query(&mut demo.redis.conn())
        .expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");

    // A category comes to exist with its first item.
    assert_eq!(
        demo.get("/items?category=kites").await.status,
        StatusCode::BAD_REQUEST
    );
    let created = demo
        .send(Method::POST, "/items", item_body("Box Kite", 19.0, "kites"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let kites = demo.get("/items?category=kites").await;
    assert_eq!(kites.status, StatusCode::OK, "{kites:?}");
    assert_eq!(kites.body["total"], 1);
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fib_with_redis_down_computes_once_for_concurrent_requests() {
    let mut demo = Demo::start(None).await;
    demo.redis.kill();
    demo.wait_for_redis("down").await;
    let state = demo.running.state();
    // Hold every computation slot, so all requests are in flight before the first computes.
    let paused = state.compute.pause().await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (demo.client.clone(), format!("{}/fib/27", demo.base));
            tokio::spawn(async move {
                let reply = client.get(url).send().await.expect("the demo answers");
                (reply.status(), reply.text().await.expect("a body"))
            })
        })
        .collect();
    tests::wait_until(DEADLINE, || {
        state.compute.stats().queued == 1 && state.cache.stats().waiting == 7
    })
    .await;
    drop(paused);
    for call in calls {
        let (status, body) = call.await.expect("no panic");
        assert_eq!(status, StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body, json!({"n": 27, "value": 196_418}));
    }
    assert_eq!(
        state.compute.stats().computed,
        1,
        "one computation for eight requests"
    );
    let stats = demo.stats().await;
    let fib = &stats["by_prefix"]["fib"];
    assert_eq!(
        (&fib["errors"], &fib["coalesced"]),
        (&json!(1), &json!(7)),
        "{stats}"
    );
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fib_computations_are_bounded_and_excess_requests_get_a_503() {
    let demo = Demo::start_with(|config| {
        config.fib_concurrency = std::num::NonZeroUsize::MIN;
        config.fib_queue = 1;
    })
    .await;
    let state = demo.running.state();
    let paused = state.compute.pause().await;
    let waiting = {
        let (client, url) = (demo.client.clone(), format!("{}/fib/20", demo.base));
        tokio::spawn(async move { client.get(url).send().await.expect("answers").status() })
    };
    tests::wait_until(DEADLINE, || state.compute.stats().queued == 1).await;
    let refused = demo
        .client
        .get(format!("{}/fib/21", demo.base))
        .send()
        .await
        .expect("the demo answers");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = refused.json().await.expect("a JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("retry")),
        "{body}"
    );
    let stats = demo.stats().await;
    assert_eq!(stats["fib"]["running"], 0, "{stats}");
    assert_eq!(stats["fib"]["queued"], 1, "{stats}");
    drop(paused);
    assert_eq!(waiting.await.expect("no panic"), StatusCode::OK);
    // The refusal was not cached: the same n computes once a slot is free.
    assert_eq!(
        demo.get("/fib/21").await.body,
        json!({"n": 21, "value": 10946})
    );
    demo.stop().await;
}

/// `/metrics`, parsed as Prometheus parses it.
async fn scrape(demo: &Demo) -> prometheus_parse::Scrape {
    let reply = demo
        .client
        .get(format!("{}/metrics", demo.base))
        .send()
        .await
        .expect("the demo answers");
    assert_eq!(reply.status(), StatusCode::OK);
    let content_type = reply
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = reply.text().await.expect("a body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
}

/// The one sample of `metric` whose labels include `labels`.
fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> &'a prometheus_parse::Value {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    &found[0].value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    // Its own cache label: other tests' demos in this process share the recorder.
    let demo = Demo::start_with(|config| {
        config.cache = config.cache.clone().name("e2e-metrics");
    })
    .await;
    for path in ["/items/1", "/items/1", "/items/999999", "/items/999999"] {
        demo.get(path).await;
    }
    assert_eq!(demo.get("/fib/20").await.status, StatusCode::OK);
    assert_eq!(demo.get("/fib/20").await.status, StatusCode::OK);

    let scrape = scrape(&demo).await;
    let cache = ("cache", "e2e-metrics");
    // No near cache in this demo: every hit is Redis's.
    let requests = |prefix: &str, outcome: &str| {
        let mut labels = vec![cache, ("prefix", prefix), ("outcome", outcome)];
        if matches!(outcome, "hit" | "null_hit") {
            labels.push(("tier", "redis"));
        }
        sample(&scrape, "redis_cache_requests_total", &labels).clone()
    };
    use prometheus_parse::Value::{Counter, Gauge, Histogram};
    assert_eq!(requests("item", "hit"), Counter(1.0));
    assert_eq!(requests("item", "null_hit"), Counter(1.0));
    assert_eq!(requests("item", "miss"), Counter(2.0));
    assert_eq!(requests("item", "error"), Counter(0.0));
    assert_eq!(requests("fib", "hit"), Counter(1.0));
    assert_eq!(requests("fib", "miss"), Counter(1.0));
    assert_eq!(
        sample(
            &scrape,
            "redis_cache_stores_total",
            &[cache, ("prefix", "item")]
        ),
        &Counter(2.0)
    );
    assert_eq!(
        sample(&scrape, "redis_cache_circuit_state", &[cache]),
        &Gauge(0.0)
    );
    // Six GETs, in the library's sub-millisecond buckets.
    let gets = sample(
        &scrape,
        "db_client_operation_duration_seconds",
        &[
            cache,
            ("db_system_name", "redis"),
            ("db_operation_name", "GET"),
        ],
    );
    let Histogram(buckets) = gets else {
        panic!("a histogram: {gets:?}")
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert!(
        bounds.contains(&0.0001) && bounds.contains(&0.25),
        "{bounds:?}"
    );
    assert_eq!(
        buckets.last().map(|b| (b.less_than, b.count)),
        Some((f64::INFINITY, 6.0))
    );
    let fills = sample(
        &scrape,
        "redis_cache_fill_duration_seconds",
        &[cache, ("prefix", "item")],
    );
    let Histogram(fills) = fills else {
        panic!("a histogram: {fills:?}")
    };
    assert_eq!(fills.last().map(|b| b.count), Some(2.0), "two bodies ran");
    assert!(
        scrape.docs.contains_key("redis_cache_requests_total"),
        "HELP lines"
    );

    // /stats agrees, and adds the ratio.
    let stats = demo.stats().await;
    assert_eq!(
        stats["by_prefix"]["item"]["hit_ratio"],
        json!(0.5),
        "{stats}"
    );
    assert_eq!(
        stats["by_prefix"]["fib"]["hit_ratio"],
        json!(0.5),
        "{stats}"
    );
    demo.stop().await;
}
