//! The demo's delayed jobs end to end: an update schedules its item's reindex (one per item
//! within the delay), the in-process worker runs it, a job whose item was deleted first is
//! dead, listed by the admin endpoint and requeued by it.

use std::{path::PathBuf, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{RedisServer, wait_until, wait_until_async};

const WITHIN: Duration = Duration::from_secs(20);
const TOKEN: &str = "queue-demo-admin-token";

struct Demo {
    _redis: RedisServer,
    running: Option<demo_app::Running>,
    base: String,
    client: reqwest::Client,
    db: PathBuf,
}

impl Demo {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let db = std::env::temp_dir().join(format!("queue-demo-{}.db", std::process::id()));
        let mut config = demo_app::Config::new(redis.url(), &db);
        config.bind = "127.0.0.1:0".to_owned();
        config.workers = Some(1);
        config.admin_token = Some(TOKEN.into());
        config.reindex_delay = Duration::from_millis(300);
        let running = demo_app::start(config).await.expect("start the demo");
        let base = format!("http://{}", running.addr());
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(WITHIN)
            .build()
            .expect("http client");
        Self {
            _redis: redis,
            running: Some(running),
            base,
            client,
            db,
        }
    }

    fn state(&self) -> &demo_app::AppState {
        self.running.as_ref().expect("running").state()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the demo answers");
        let status = response.status();
        let reindex = response
            .headers()
            .get("x-reindex")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, reindex, body)
    }

    async fn update(&self, id: u64, price: f64) -> String {
        let body = json!({"name": "Deluxe Ukulele", "price": price, "category": "music"});
        let (status, reindex, reply) = self
            .call(Method::PUT, &format!("/items/{id}"), Some(body), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reindex.expect("an x-reindex header")
    }

    async fn dead(&self) -> Value {
        let (status, _, body) = self
            .call(Method::GET, "/admin/jobs/dead", None, Some(TOKEN))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.db.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_schedule_one_reindex_per_item_and_dead_jobs_are_listed_and_requeued() {
    let mut demo = Demo::start().await;
    // Two updates within the delay: one reindex.
    let first = demo.update(7, 10.0).await;
    assert!(first.starts_with("scheduled; job="), "{first}");
    let second = demo.update(7, 12.5).await;
    let job = first.trim_start_matches("scheduled; job=");
    assert_eq!(second, format!("pending; job={job}"));
    wait_until(WITHIN, || demo.state().jobs.reindexed() == 1).await;

    // An item deleted before its reindex runs: the job is dead.
    let scheduled = demo.update(9, 3.0).await;
    let job: u64 = scheduled
        .trim_start_matches("scheduled; job=")
        .parse()
        .expect("a job id");
    let (status, _, _) = demo.call(Method::DELETE, "/items/9", None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let demo_ref = &demo;
    wait_until_async(WITHIN, || async move {
        demo_ref.dead().await["counts"]["dead"] == 1
    })
    .await;
    let listed = demo.dead().await;
    assert_eq!(listed["queue"], "reindex");
    assert_eq!(listed["reindexed"], 1);
    let dead = &listed["dead"][0];
    assert_eq!(dead["id"], job);
    assert_eq!(dead["item"], 9);
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["error"], "item 9 no longer exists");

    // Requeued, it runs again (and dies again: the item is still gone).
    let (status, _, body) = demo
        .call(
            Method::POST,
            &format!("/admin/jobs/dead/{job}/requeue"),
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &json!({"requeued": true}))
    );
    let (status, _, _) = demo
        .call(
            Method::POST,
            "/admin/jobs/dead/999999/requeue",
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    wait_until_async(WITHIN, || async move {
        let c = &demo_ref.dead().await["counts"];
        c["dead"] == 1 && c["waiting"] == 0 && c["running"] == 0 && c["delayed"] == 0
    })
    .await;

    // The admin endpoints want the token.
    let (status, _, _) = demo.call(Method::GET, "/admin/jobs/dead", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The queue's series are on /metrics.
    let (_, _, _) = demo.call(Method::GET, "/healthz", None, None).await;
    let metrics = demo
        .client
        .get(format!("{}/metrics", demo.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for series in [
        "redis_queue_pushed_total{queue=\"reindex\"} 2",
        "redis_queue_duplicates_total{queue=\"reindex\"} 1",
        "redis_queue_completed_total{queue=\"reindex\"} 1",
        "redis_queue_dead_total{queue=\"reindex\"} 2",
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }
    demo.running
        .take()
        .expect("running")
        .stop()
        .await
        .expect("stop");
}
