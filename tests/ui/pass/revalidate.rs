//! `revalidate` on axum and Actix handlers of every `Json` shape: the handler takes the
//! request's conditions and answers a `Revalidated` response; the axum future stays `Send`
//! (`Router::route` and `assert_send` check it), and `vary` works beside it.

use std::future::Future;

use actix_web::{get, web};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::get as axum_get,
};
use cached_runtime::{Cache, http::Conditional, redis_cache};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
}

#[derive(Clone)]
struct App {
    cache: Cache,
}

fn assert_send<F: Future + Send>(f: F) -> F {
    f
}

#[redis_cache(prefix = "rv.plain", ttl = 60, revalidate)]
async fn plain(Path(id): Path<u64>) -> Json<Item> {
    Json(Item { id })
}

#[redis_cache(prefix = "rv.state", ttl = 60, skip(app), cache = app.cache, revalidate = "public, max-age, must-revalidate")]
async fn with_state(State(app): State<App>, Path(id): Path<u64>) -> Result<Json<Item>, StatusCode> {
    let _ = app;
    Ok(Json(Item { id }))
}

#[redis_cache(prefix = "rv.vary", ttl = 60, revalidate = "no-cache", vary(headers = ["authorization"]))]
async fn per_user(headers: HeaderMap) -> Json<usize> {
    Json(headers.len())
}

#[redis_cache(prefix = "rv.actix", ttl = 60, revalidate)]
#[get("/items/{id}")]
async fn actix_item(id: web::Path<u64>) -> Option<web::Json<Item>> {
    Some(web::Json(Item { id: *id }))
}

#[get("/other/{id}")]
#[redis_cache(prefix = "rv.actix.below", ttl = 60, revalidate)]
async fn actix_below(id: web::Path<u64>) -> Result<Option<web::Json<Item>>, actix_web::Error> {
    Ok(Some(web::Json(Item { id: *id })))
}

fn main() {
    let app = App {
        cache: Cache::in_memory(),
    };
    let _ = assert_send(plain(Conditional::default(), Path(1)));
    let _ = assert_send(with_state(
        Conditional::default(),
        State(app.clone()),
        Path(1),
    ));
    let _ = assert_send(per_user(Conditional::default(), HeaderMap::new()));
    let _: Router = Router::new()
        .route("/plain/{id}", axum_get(plain))
        .route("/state/{id}", axum_get(with_state))
        .route("/me", axum_get(per_user))
        .with_state(app.clone());
    let _ = actix_web::App::new()
        .service(actix_item)
        .service(actix_below);
    // The companions are those of the function as written.
    let _ = plain_key(&app.cache, &1);
    let _ = with_state_invalidate(&app.cache, &1);
}
