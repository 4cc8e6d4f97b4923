//! The demo through a database outage (issue 20), over real HTTP: a cached item and a cached
//! page past their TTL are answered stale while every database query fails, an item never
//! cached gets the database's error, and the demo recovers when the database is back.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tests::{fixtures::demo::ActixDemo, wait_until_async};

const TOKEN: &str = "stale-demo-admin-token";

async fn get(demo: &ActixDemo, path: &str) -> Response {
    demo.client
        .get(demo.url(path))
        .send()
        .await
        .expect("the demo answers")
}

async fn json_of(reply: Response) -> Value {
    reply.json().await.expect("JSON")
}

async fn database(demo: &ActixDemo, down: bool) {
    let reply = demo
        .client
        .post(demo.url("/admin/db/outage"))
        .bearer_auth(TOKEN)
        .json(&json!({ "down": down }))
        .send()
        .await
        .expect("the demo answers");
    assert_eq!(reply.status(), StatusCode::NO_CONTENT, "{reply:?}");
}

/// Moves every cached entry past its TTL and into its stale window (the item's is an hour,
/// the list's five minutes), as time would.
fn age_entries(demo: &ActixDemo) {
    let mut conn = demo.redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    let mut aged = 0;
    for key in keys.iter().filter(|k| !k.contains("#tag:")) {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).expect("PTTL");
        if ttl > 0 {
            let _: i64 = redis::cmd("PEXPIRE")
                .arg(key)
                .arg(200_000)
                .query(&mut conn)
                .expect("PEXPIRE");
            aged += 1;
        }
    }
    assert!(aged >= 2, "the item and the page are in Redis: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_and_pages_are_answered_stale_through_a_database_outage() {
    let demo = ActixDemo::start(|config| config.admin_token = Some(TOKEN.into())).await;
    let item = get(&demo, "/items/1").await;
    assert_eq!(item.status(), StatusCode::OK);
    let item = json_of(item).await;
    let page = get(&demo, "/items?page=1").await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = json_of(page).await;

    age_entries(&demo);
    database(&demo, true).await;

    let stale = get(&demo, "/items/1").await;
    assert_eq!(stale.status(), StatusCode::OK, "the item is fail-safe");
    assert_eq!(
        stale.headers().get("x-cache").map(|v| v.to_str().ok()),
        Some(Some("STALE")),
        "{stale:?}"
    );
    assert!(stale.headers().contains_key("age"), "{stale:?}");
    assert_eq!(json_of(stale).await, item);
    for _ in 0..3 {
        let stale = get(&demo, "/items?page=1").await;
        assert_eq!(stale.status(), StatusCode::OK, "the page is served stale");
        assert_eq!(json_of(stale).await, page);
    }
    let never = get(&demo, "/items/2").await;
    assert_eq!(
        never.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "an item never cached has nothing to fall back on"
    );

    database(&demo, false).await;
    // The throttle lets the database alone for a few seconds; then the item is fresh again.
    wait_until_async(std::time::Duration::from_secs(30), || async {
        let reply = get(&demo, "/items/1").await;
        reply.status() == StatusCode::OK
            && reply.headers().get("x-cache").and_then(|v| v.to_str().ok()) != Some("STALE")
    })
    .await;
    assert_eq!(json_of(get(&demo, "/items/2").await).await["id"], 2);
    demo.stop().await;
}
