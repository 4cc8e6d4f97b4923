//! The demo's rate limits, view counter and `GET /items/popular`, over real HTTP against a
//! private redis-server.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tests::{fixtures::demo::ActixDemo, wait_until_async};

/// The Actix demo with `limits` as its `API_RATE_LIMIT`.
async fn demo(limits: &str) -> ActixDemo {
    ActixDemo::start(|config| {
        config.api_limits = demo_app::limits::parse_limits(limits).expect("valid limits");
    })
    .await
}

/// `GET {path}` on the demo.
async fn get(demo: &ActixDemo, path: &str) -> reqwest::Response {
    demo.client
        .get(demo.url(path))
        .send()
        .await
        .expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_429_with_the_fields_past_the_limit_and_health_is_exempt() {
    let demo = demo("3/60s+2").await;
    for left in [2, 1, 0] {
        let ok = get(&demo, "/items/1").await;
        assert_eq!(ok.status(), StatusCode::OK);
        let field = ok.headers()["ratelimit"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(
            field.starts_with(&format!("\"3/60s+2\";r={left};")),
            "{field}"
        );
        assert_eq!(ok.headers()["ratelimit-policy"], r#""3/60s+2";q=5;w=60"#);
    }
    let refused = get(&demo, "/items/2").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = refused.json().await.expect("a problem body");
    assert_eq!(body["status"], 429);
    assert_eq!(body["violated-policies"], serde_json::json!(["3/60s+2"]));
    for _ in 0..5 {
        let health = get(&demo, "/healthz").await;
        assert_eq!(health.status(), StatusCode::OK);
        assert!(health.headers().get("ratelimit").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_counted_cache_hits_included_and_ranked_in_popular() {
    let demo = demo("off").await;
    for (id, views) in [(2, 3), (3, 1), (5, 2)] {
        for _ in 0..views {
            assert_eq!(
                get(&demo, &format!("/items/{id}")).await.status(),
                StatusCode::OK
            );
        }
    }
    // Missing items count nothing.
    assert_eq!(
        get(&demo, "/items/99999").await.status(),
        StatusCode::NOT_FOUND
    );
    // Batched: sent within 500 ms. Waiting on Redis first keeps the 10 s cache of the list
    // from holding an earlier, shorter one.
    let mut conn = demo.redis.conn();
    wait_until_async(Duration::from_secs(10), || {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg("demo:{popular}")
            .arg("3")
            .query(&mut conn)
            .expect("ZSCORE");
        async move { score == Some(1.0) }
    })
    .await;
    let popular: Value = get(&demo, "/items/popular")
        .await
        .json()
        .await
        .expect("JSON");
    let listed: Vec<(u64, u64)> = popular
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().expect("id"),
                p["views"].as_u64().expect("views"),
            )
        })
        .collect();
    assert_eq!(listed, [(2, 3), (5, 2), (3, 1)]);
    assert!(popular[0]["name"].is_string(), "{popular}");
    let views: Option<u64> = redis::cmd("GET")
        .arg("demo:{views:2}")
        .query(&mut conn)
        .expect("GET");
    assert_eq!(views, Some(3));
}
