//! The Actix demo's item read, revalidated, over real HTTP: an `ETag` on the item, a `304`
//! for it that reaches no database, and a new tag after an update.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use reqwest::{StatusCode, header};
use tests::RedisServer;

#[tokio::test]
async fn the_demo_item_read_answers_304_until_the_item_changes() {
    let redis = RedisServer::start();
    let db =
        TempDb(std::env::temp_dir().join(format!("demo-revalidation-{}.db", std::process::id())));
    let mut config = demo_app::Config::new(redis.url(), &db.0);
    config.bind = "127.0.0.1:0".to_owned();
    config.workers = Some(1);
    let running = demo_app::start(config).await.expect("start the demo");
    let base = format!("http://{}", running.addr());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an http client");
    let start = Instant::now();
    while running.state().cache.ping().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "redis never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let get = |tag: Option<String>| {
        let mut request = client.get(format!("{base}/items/42"));
        if let Some(tag) = tag {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        request.send()
    };

    let first = get(None).await.expect("an answer");
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()[header::ETAG]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let queries = running.state().db_queries();
    let not_modified = get(Some(etag.clone())).await.expect("an answer");
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["x-cache"], "HIT");
    assert_eq!(not_modified.text().await.expect("a body"), "");
    assert_eq!(running.state().db_queries(), queries);

    let update = client
        .put(format!("{base}/items/42"))
        .json(&serde_json::json!({"name": "Deluxe Ukulele", "price": 129.5, "category": "music"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(update.status(), StatusCode::OK);
    let changed = get(Some(etag.clone())).await.expect("an answer");
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()[header::ETAG], etag.as_str());
    let body: serde_json::Value = changed.json().await.expect("JSON");
    assert_eq!(body["name"], "Deluxe Ukulele");
    running.stop().await.expect("a clean stop");
}

struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
