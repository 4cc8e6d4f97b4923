//! `#[redis_cache]` on Actix handlers against a real redis-server: `web::Json` returns are
//! stored as their inner value, extractors key on the value they hold, and state and requests
//! stay out of the key.

#![deny(warnings, clippy::all)]

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use actix_web::{HttpRequest, test::TestRequest, web};
use cached_runtime::{Cache, redis_cache};
use redis::Commands;
use serde::{Deserialize, Serialize};
use tests::{
    RedisServer,
    fixtures::{Item, item_in},
};

#[derive(Serialize, Deserialize)]
struct Params {
    lang: String,
}

struct AppState {
    cache: Cache,
    runs: AtomicUsize,
}

impl AppState {
    async fn new(server: &RedisServer) -> web::Data<AppState> {
        let cache = Cache::builder(server.url())
            .command_timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("connect to the test redis-server");
        web::Data::new(AppState {
            cache,
            runs: AtomicUsize::new(0),
        })
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

#[redis_cache(prefix = "handler.item", ttl = 600, cache = state.cache, skip(state), vary(req = []))]
async fn get_item(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<u64>,
    params: web::Query<Params>,
) -> web::Json<Item> {
    state.runs.fetch_add(1, Ordering::SeqCst);
    let _ = req;
    web::Json(item_in(*id, &params.lang))
}

#[redis_cache(prefix = "handler.find", ttl = 600, null_ttl = 9, key = "{id}", cache = state.cache)]
async fn find_item(
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<Option<web::Json<Item>>, actix_web::Error> {
    state.runs.fetch_add(1, Ordering::SeqCst);
    Ok((*id < 100).then(|| web::Json(item_in(*id, "en"))))
}

#[tokio::test]
async fn a_json_handler_is_stored_as_its_value_and_keyed_on_its_extractors() {
    let server = RedisServer::start();
    let state = AppState::new(&server).await;
    let call = |lang: &str| {
        get_item(
            state.clone(),
            TestRequest::default().to_http_request(),
            web::Path::from(7),
            web::Query(Params {
                lang: lang.to_owned(),
            }),
        )
    };
    let first = call("en").await.into_inner();
    let second = call("en").await.into_inner();
    assert_eq!(first, second);
    assert_eq!(state.runs(), 1, "another request, the same entry");
    assert!(
        server
            .conn()
            .exists::<_, bool>("handler.item:7:(lang=en)")
            .expect("EXISTS")
    );

    call("fr").await;
    assert_eq!(state.runs(), 2);
    // The companion takes what the extractors hold, and builds the key the handler read.
    let fr = Params {
        lang: "fr".to_owned(),
    };
    let key = get_item_key(&state.cache, &7, &fr).expect("a valid key");
    assert_eq!(key.as_str(), "handler.item:7:(lang=fr)");
    assert!(
        get_item_invalidate(&state.cache, &7, &fr)
            .await
            .expect("UNLINK")
    );
}

/// A user type named like an Actix one is keyed like any value: only traits decide.
#[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
struct Data<T> {
    inner: T,
}

/// A user type named like a `Result` is a plain value.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct SearchResult<T> {
    hits: Vec<T>,
}

#[redis_cache(prefix = "by.trait", ttl = 600, cache = cache, skip(cache))]
async fn search(cache: &Cache, q: Data<String>) -> SearchResult<String> {
    SearchResult {
        hits: vec![q.inner],
    }
}

#[tokio::test]
async fn shapes_and_extractors_are_chosen_by_traits_not_names() {
    let server = RedisServer::start();
    let state = AppState::new(&server).await;
    let q = Data {
        inner: "lamp".to_owned(),
    };
    let hits = search(&state.cache, q.clone()).await;
    assert_eq!(hits.hits, ["lamp"]);
    assert!(
        server
            .conn()
            .exists::<_, bool>("by.trait:(inner=lamp)")
            .expect("EXISTS")
    );
}

#[tokio::test]
async fn an_absent_json_result_is_a_null_marker() {
    let server = RedisServer::start();
    let state = AppState::new(&server).await;
    for _ in 0..2 {
        let found = find_item(state.clone(), web::Path::from(404)).await;
        assert!(matches!(found, Ok(None)));
    }
    assert_eq!(state.runs(), 1);
    let ttl: i64 = server.conn().ttl("handler.find:404").expect("TTL");
    assert!(ttl > 0 && ttl <= 9, "null marker TTL {ttl}");

    for _ in 0..2 {
        let found = find_item(state.clone(), web::Path::from(1)).await;
        assert_eq!(
            found
                .ok()
                .flatten()
                .map(web::Json::into_inner)
                .map(|i| i.id),
            Some(1)
        );
    }
    assert_eq!(state.runs(), 2);
}
