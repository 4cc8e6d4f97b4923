//! The Actix demo's item read, revalidated, over real HTTP: an `ETag` on the item, a `304`
//! for it that reaches no database, and a new tag after an update.

use reqwest::{StatusCode, header};
use tests::fixtures::demo::ActixDemo;

#[tokio::test]
async fn the_demo_item_read_answers_304_until_the_item_changes() {
    let demo = ActixDemo::start(|_| ()).await;
    let (client, base, running) = (&demo.client, &demo.base, &demo.running);
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
    demo.stop().await;
}
