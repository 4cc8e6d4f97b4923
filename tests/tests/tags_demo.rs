//! The demo's writers invalidate by tag (issue 21): a `PUT` that moves an item to another
//! category drops the cached pages of the old and new category's lists and of the unfiltered
//! list with one command per tag, and sends no `SCAN`; the lists of other categories stay
//! cached.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::fixtures::demo::ActixDemo;

async fn get(demo: &ActixDemo, path: &str) -> Value {
    let reply = demo
        .client
        .get(demo.url(path))
        .send()
        .await
        .expect("the demo answers");
    assert_eq!(reply.status(), StatusCode::OK, "{path}: {reply:?}");
    reply.json().await.expect("JSON")
}

/// How many times `command` ran on the demo's Redis (`INFO commandstats`).
fn calls(demo: &ActixDemo, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut demo.redis.conn())
        .expect("INFO");
    let field = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&field))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_drops_the_lists_of_both_categories_by_tag_without_a_scan() {
    let demo = ActixDemo::start(|_| {}).await;
    let item = get(&demo, "/items/1").await;
    let from = item["category"].as_str().expect("a category").to_owned();
    let to = if from == "music" { "garden" } else { "music" };
    let other = if [from.as_str(), to].contains(&"tools") {
        "kitchen"
    } else {
        "tools"
    };
    let total = |page: &Value| page["total"].as_u64().expect("a total");
    let lists = [
        format!("/items?category={from}&page=1"),
        format!("/items?category={from}&page=2"),
        format!("/items?category={to}&page=1"),
        format!("/items?category={other}&page=1"),
        "/items?page=1".to_owned(),
    ];
    let mut before = Vec::new();
    for path in &lists {
        before.push(total(&get(&demo, path).await));
    }
    let scans = calls(&demo, "scan");
    let body = json!({"name": "Moved", "price": 3.5, "category": to});
    let put = demo
        .client
        .put(demo.url("/items/1"))
        .json(&body)
        .send()
        .await
        .expect("the demo answers");
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(calls(&demo, "scan"), scans, "no request path scans");

    let after: Vec<u64> = {
        let mut v = Vec::new();
        for path in &lists {
            v.push(total(&get(&demo, path).await));
        }
        v
    };
    assert_eq!(after[0], before[0] - 1, "the old category's first page");
    assert_eq!(after[1], before[1] - 1, "every page of it");
    assert_eq!(after[2], before[2] + 1, "the new category's");
    assert_eq!(after[3], before[3], "another category's");
    assert_eq!(after[4], before[4], "the unfiltered list's total");
    let first = get(&demo, "/items?page=1").await;
    assert_eq!(
        first["items"][0]["name"], "Moved",
        "the unfiltered list shows the update"
    );
    demo.stop().await;
}
