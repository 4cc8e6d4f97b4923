//! `vary` keys on request headers read from a request, its parts or its header map; `vary(x =
//! [])` says the result depends on none of them, which silences the warning a skipped request
//! gets. Warnings are errors here: none is expected.
#![deny(warnings)]

use actix_web::HttpRequest;
use axum::{
    Json,
    extract::{Path, Request, State},
    http::{HeaderMap, request::Parts},
};
use cached_runtime::{Cache, redis_cache};

#[derive(Clone)]
struct App {
    cache: Cache,
}

#[redis_cache(prefix = "v.headers", ttl = 60, skip(app), cache = app.cache, vary(headers = ["authorization", "accept-language"]))]
async fn headers(State(app): State<App>, headers: HeaderMap, Path(id): Path<u64>) -> Json<u64> {
    let _ = (app, headers);
    Json(id)
}

#[redis_cache(prefix = "v.none", ttl = 60, vary(req = []))]
async fn none(req: HttpRequest, id: u64) -> u64 {
    let _ = req.path();
    id
}

#[redis_cache(prefix = "v.template", ttl = 60, key = "{id}", vary(req = ["x-tenant"]))]
async fn template(req: Request, id: u64) -> u64 {
    let _ = req;
    id
}

#[redis_cache(prefix = "v.parts", ttl = 60, skip_all, vary(parts = ["cookie"]))]
async fn parts(parts: Parts) -> String {
    parts.uri.to_string()
}

fn main() {
    let cache = Cache::in_memory();
    let _ = (headers, none, template, parts);
    let _ = headers_key(&cache, &1, &HeaderMap::new());
    let _ = none_key(&cache, &1);
    let _ = template_invalidate(&cache, &1);
    let _ = parts_invalidate(&cache);
}
