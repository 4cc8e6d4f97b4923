//! The demo's rate limits, view counter and `GET /items/popular`, over real HTTP against a
//! private redis-server.

use std::{path::PathBuf, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;
use tests::{RedisServer, wait_until_async};

/// A database file in the temp directory, removed on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("demo-limits-{name}-{}.db", std::process::id())))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

struct Demo {
    _redis: RedisServer,
    _db: TempDb,
    running: Option<demo_app::Running>,
    base: String,
    client: reqwest::Client,
}

impl Demo {
    async fn start(name: &str, api_limit: &str) -> Self {
        let redis = RedisServer::start();
        let db = TempDb::new(name);
        let mut config = demo_app::Config::new(redis.url(), &db.0);
        config.bind = "127.0.0.1:0".to_owned();
        config.workers = Some(1);
        config.api_limits = demo_app::limits::parse_limits(api_limit).expect("valid limits");
        let running = demo_app::start(config).await.expect("start the demo");
        let base = format!("http://{}", running.addr());
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("a client");
        let demo = Self {
            _redis: redis,
            _db: db,
            running: Some(running),
            base,
            client,
        };
        wait_until_async(Duration::from_secs(15), || async {
            let health = demo.get("/healthz").await;
            health
                .text()
                .await
                .expect("body")
                .contains(r#""redis":"up""#)
        })
        .await;
        demo
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("a response")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            drop(running);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_429_with_the_fields_past_the_limit_and_health_is_exempt() {
    let demo = Demo::start("limited", "3/60s+2").await;
    for left in [2, 1, 0] {
        let ok = demo.get("/items/1").await;
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
    let refused = demo.get("/items/2").await;
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
        let health = demo.get("/healthz").await;
        assert_eq!(health.status(), StatusCode::OK);
        assert!(health.headers().get("ratelimit").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_counted_cache_hits_included_and_ranked_in_popular() {
    let demo = Demo::start("popular", "off").await;
    for (id, views) in [(2, 3), (3, 1), (5, 2)] {
        for _ in 0..views {
            assert_eq!(
                demo.get(&format!("/items/{id}")).await.status(),
                StatusCode::OK
            );
        }
    }
    // Missing items count nothing.
    assert_eq!(
        demo.get("/items/99999").await.status(),
        StatusCode::NOT_FOUND
    );
    // Batched: sent within 500 ms. Waiting on Redis first keeps the 10 s cache of the list
    // from holding an earlier, shorter one.
    let mut conn = demo._redis.conn();
    wait_until_async(Duration::from_secs(10), || {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg("demo:{popular}")
            .arg("3")
            .query(&mut conn)
            .expect("ZSCORE");
        async move { score == Some(1.0) }
    })
    .await;
    let popular: Value = demo.get("/items/popular").await.json().await.expect("JSON");
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
