//! axum handlers: the `Json` shapes, extractors keyed on their inner value, pattern arguments
//! keyed on the names they bind, state skipped by its bound name, and every handler's future
//! `Send`, as `Router::route` requires.

use std::future::Future;

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use cached_runtime::{Cache, redis_cache};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
}

#[derive(Serialize, Deserialize)]
struct Page {
    page: u32,
    lang: String,
}

#[derive(Clone)]
struct App {
    cache: Cache,
}

fn assert_send<F: Future + Send>(f: F) -> F {
    f
}

#[redis_cache(prefix = "ax.json", ttl = 60)]
async fn json(Path(id): Path<u64>) -> Json<Item> {
    Json(Item { id })
}

#[redis_cache(prefix = "ax.fallible", ttl = 60, skip(state), cache = state.cache)]
async fn fallible(
    State(state): State<App>,
    Path((id, lang)): Path<(u64, String)>,
) -> Result<Json<Item>, StatusCode> {
    let _ = (&state, lang);
    Ok(Json(Item { id }))
}

#[redis_cache(prefix = "ax.optional", ttl = 60)]
async fn optional(Query(page): Query<Page>) -> Option<Json<Item>> {
    (page.page > 0).then(|| Json(Item { id: 1 }))
}

#[redis_cache(prefix = "ax.fallible_optional", ttl = 60, skip(app))]
async fn fallible_optional(
    State(app): State<App>,
    query: Query<Page>,
) -> Result<Option<Json<Item>>, StatusCode> {
    let _ = (&app, &query.lang);
    Ok(Some(Json(Item { id: 2 })))
}

/// A struct pattern keys on the fields it binds; the rest is invisible to the body.
#[redis_cache(prefix = "ax.fields", ttl = 60, key = "{page}")]
async fn fields(Query(Page { page, .. }): Query<Page>) -> Json<u32> {
    Json(page)
}

#[redis_cache(prefix = "ax.form", ttl = 60, skip(state))]
async fn form(State(state): State<App>, Form(page): Form<Page>) -> Result<Json<Item>, StatusCode> {
    let _ = state;
    Ok(Json(Item {
        id: u64::from(page.page),
    }))
}

#[redis_cache(prefix = "ax.body", ttl = 60, cache = app.cache, skip(app))]
async fn body(State(app): State<App>, Json(page): Json<Page>) -> Json<Item> {
    let _ = app;
    Json(Item {
        id: u64::from(page.page),
    })
}

#[redis_cache(prefix = "ax.whole", ttl = 60)]
async fn whole(path: Path<u64>, query: Query<Page>) -> Json<Item> {
    let _ = &query.lang;
    Json(Item { id: *path })
}

fn main() {
    let app = App {
        cache: Cache::in_memory(),
    };
    let _ = assert_send(json(Path(1)));
    let _ = assert_send(fallible(State(app.clone()), Path((1, String::new()))));
    let _: Router = Router::new()
        .route("/json/{id}", get(json))
        .route("/fallible/{id}/{lang}", get(fallible))
        .route("/fields", get(fields))
        .route("/form", post(form))
        .route("/body", post(body))
        .route("/whole/{id}", get(whole))
        .with_state(app.clone());
    // axum answers no `Option`: these shapes serve functions a handler calls.
    let _ = assert_send(fallible_optional(
        State(app.clone()),
        Query(Page {
            page: 1,
            lang: String::new(),
        }),
    ));
    let _ = assert_send(optional(Query(Page {
        page: 1,
        lang: String::new(),
    })));
    // Companions take the bound names' types.
    let _ = json_key(&app.cache, &1u64);
    let _ = fallible_key(&app.cache, &1u64, "en");
    let _ = fields_key(&app.cache, &3u32);
    let _ = whole_key(
        &app.cache,
        &1u64,
        &Page {
            page: 1,
            lang: String::new(),
        },
    );
}
