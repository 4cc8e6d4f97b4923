//! What `vary` does to the response, over real HTTP: with `revalidate` the cache builds the
//! response and names the headers in `Vary`; without it the handler's own response is
//! returned as it is (no `Vary` added), while each caller still gets their own entry. The
//! README says exactly this.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::{Json, Router, extract::State, http::HeaderMap, routing::get};
use cached_runtime::{Cache, redis_cache};
use tests::{RedisServer, fixtures::serve};

static RUNS: AtomicUsize = AtomicUsize::new(0);

fn caller(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

#[redis_cache(prefix = "vh.revalidated", ttl = 60, skip(cache), cache = cache, revalidate, vary(headers = ["authorization"]))]
async fn revalidated(State(cache): State<Cache>, headers: HeaderMap) -> Json<String> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Json(caller(&headers))
}

#[redis_cache(prefix = "vh.plain", ttl = 60, skip(cache), cache = cache, vary(headers = ["authorization"]))]
async fn plain(State(cache): State<Cache>, headers: HeaderMap) -> Json<String> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    Json(caller(&headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_names_its_headers_in_the_response_only_when_the_cache_builds_it() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let app = Router::new()
        .route("/revalidated", get(revalidated))
        .route("/plain", get(plain))
        .with_state(cache);
    let addr = serve(app).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str, who: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}{path}"))
                .header("authorization", who)
                .send()
                .await
                .expect("request")
        }
    };
    for (path, vary) in [("/revalidated", Some("authorization")), ("/plain", None)] {
        let mut bodies = Vec::new();
        for who in ["alice", "bob", "alice"] {
            let response = get(path, who).await;
            assert_eq!(
                response
                    .headers()
                    .get("vary")
                    .map(|v| v.to_str().expect("ascii")),
                vary,
                "{path}"
            );
            bodies.push(response.text().await.expect("body"));
        }
        // Each caller has their own entry either way.
        assert_eq!(bodies, ["\"alice\"", "\"bob\"", "\"alice\""], "{path}");
    }
    assert_eq!(RUNS.load(Ordering::SeqCst), 4, "two callers, two paths");
}
