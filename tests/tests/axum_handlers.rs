//! `#[redis_cache]` on axum handlers against a real redis-server: `Json` returns are stored as
//! their inner value, extractors key on the value they hold, pattern arguments key on the
//! names they bind (in order), and a bound `State` is skipped by its name and can hold the
//! cache.

#![deny(warnings, clippy::all)]

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use cached_runtime::{Cache, redis_cache};
use redis::Commands;
use serde::{Deserialize, Serialize};
use tests::{
    RedisServer,
    fixtures::{Item, item_in},
};

#[derive(Serialize, Deserialize)]
struct Page {
    page: u32,
    lang: String,
}

#[derive(Clone)]
struct App {
    cache: Cache,
    runs: Arc<AtomicUsize>,
}

impl App {
    async fn new(server: &RedisServer) -> Self {
        App {
            cache: server.cache().await,
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

#[redis_cache(prefix = "ax.item", ttl = 600, skip(app), cache = app.cache)]
async fn item(
    State(app): State<App>,
    Path((id, lang)): Path<(u64, String)>,
) -> Result<Json<Item>, StatusCode> {
    app.runs.fetch_add(1, Ordering::SeqCst);
    if id == 0 {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(Json(item_in(id, &lang)))
}

#[tokio::test]
async fn a_pattern_argument_keys_on_the_names_it_binds_in_order() {
    let server = RedisServer::start();
    let app = App::new(&server).await;
    let call = |id: u64, lang: &str| item(State(app.clone()), Path((id, lang.to_owned())));
    let first = call(7, "en").await.expect("found");
    let again = call(7, "en").await.expect("found");
    assert_eq!(first.0, again.0);
    assert_eq!(app.runs(), 1, "the second call is a hit");
    // `id` then `lang`, as bound; the state is skipped by its bound name.
    let key = item_key(&app.cache, &7, "en").expect("a key");
    assert_eq!(key.as_str(), "ax.item:7:en");
    let stored: String = server.conn().get(key.as_str()).expect("GET");
    assert!(
        stored.ends_with(r#"{"id":7,"name":"item 7 (en)"}"#),
        "the Json's value is stored: {stored}"
    );

    let _ = call(7, "fr").await.expect("found");
    let _ = call(8, "en").await.expect("found");
    assert_eq!(app.runs(), 3, "every bound value tells calls apart");
    assert!(item_invalidate(&app.cache, &7, "fr").await.expect("UNLINK"));
}

#[tokio::test]
async fn an_error_of_a_json_handler_is_never_stored() {
    let server = RedisServer::start();
    let app = App::new(&server).await;
    for _ in 0..2 {
        let found = item(State(app.clone()), Path((0, "en".to_owned()))).await;
        assert_eq!(found.err(), Some(StatusCode::NOT_FOUND));
    }
    assert_eq!(app.runs(), 2);
    let exists: bool = server.conn().exists("ax.item:0:en").expect("EXISTS");
    assert!(!exists);
}

#[redis_cache(prefix = "ax.page", ttl = 600, key = "{page}", cache = app.cache)]
async fn page(State(app): State<App>, Query(Page { page, .. }): Query<Page>) -> Json<Vec<u32>> {
    app.runs.fetch_add(1, Ordering::SeqCst);
    Json(vec![page])
}

#[tokio::test]
async fn a_struct_pattern_keys_only_on_the_fields_the_body_can_see() {
    let server = RedisServer::start();
    let app = App::new(&server).await;
    let call = |page_no: u32, lang: &str| {
        page(
            State(app.clone()),
            Query(Page {
                page: page_no,
                lang: lang.to_owned(),
            }),
        )
    };
    assert_eq!(call(2, "en").await.0, [2]);
    // `lang` is not bound, so the body cannot depend on it: one entry serves both.
    assert_eq!(call(2, "fr").await.0, [2]);
    assert_eq!(app.runs(), 1);
    assert_eq!(call(3, "fr").await.0, [3]);
    assert_eq!(app.runs(), 2);
    assert_eq!(
        page_key(&app.cache, &3).expect("a key").as_str(),
        "ax.page:3"
    );
}

#[redis_cache(prefix = "ax.whole", ttl = 600, cache = app.cache, skip(app))]
async fn whole(app: State<App>, path: Path<u64>, query: Query<Page>) -> Json<Item> {
    app.runs.fetch_add(1, Ordering::SeqCst);
    Json(item_in(*path, &query.lang))
}

#[tokio::test]
async fn an_extractor_keys_on_the_value_it_holds() {
    let server = RedisServer::start();
    let app = App::new(&server).await;
    let call = |id: u64| {
        whole(
            State(app.clone()),
            Path(id),
            Query(Page {
                page: 1,
                lang: "de".to_owned(),
            }),
        )
    };
    assert_eq!(call(5).await.0.id, 5);
    assert_eq!(call(5).await.0.id, 5);
    assert_eq!(app.runs(), 1);
    let exists: bool = server
        .conn()
        .exists("ax.whole:5:(page=1,lang=de)")
        .expect("EXISTS");
    assert!(exists, "keyed on the path's u64 and the query's struct");
}
