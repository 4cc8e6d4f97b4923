//! Actix handlers: the `web::Json` shapes, extractors keyed on their inner value, state and
//! requests skipped, and `#[get]` stacked above and below.

use actix_web::{HttpRequest, get, web};
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

#[derive(Serialize, Deserialize)]
struct NewItem {
    name: String,
}

struct AppState {
    cache: Cache,
}

#[redis_cache(prefix = "json", ttl = 60)]
async fn json(path: web::Path<u64>) -> web::Json<Item> {
    web::Json(Item { id: *path })
}

#[redis_cache(prefix = "fallible_json", ttl = 60, vary(req = []))]
async fn fallible_json(
    req: HttpRequest,
    path: web::Path<(u64, String)>,
    query: web::Query<Page>,
) -> actix_web::Result<web::Json<Item>> {
    let _ = (req.path(), &path.1, query.page);
    Ok(web::Json(Item { id: path.0 }))
}

#[redis_cache(prefix = "optional_json", ttl = 60, cache = state.cache, skip(state))]
async fn optional_json(
    state: web::Data<AppState>,
    body: web::Json<NewItem>,
) -> Option<web::Json<Item>> {
    let _ = &state;
    (!body.name.is_empty()).then(|| web::Json(Item { id: 1 }))
}

#[redis_cache(prefix = "fallible_optional_json", ttl = 60, skip_all)]
async fn fallible_optional_json(
    form: web::Form<NewItem>,
) -> Result<Option<web::Json<Item>>, actix_web::Error> {
    Ok(form.name.parse().ok().map(|id| web::Json(Item { id })))
}

#[get("/items/{id}")]
#[redis_cache(prefix = "handler.below", ttl = 60, key = "{id}:{q.lang}", cache = cache.get_ref())]
async fn handler_below(
    id: web::Path<u64>,
    q: web::Query<Page>,
    cache: web::Data<Cache>,
) -> Option<web::Json<Item>> {
    let _ = (&q.lang, &cache);
    Some(web::Json(Item { id: *id }))
}

#[redis_cache(prefix = "handler.above", ttl = 60, key = "{path.0}:{path.1}")]
#[get("/pairs/{a}/{b}")]
async fn handler_above(path: web::Path<(u64, String)>) -> web::Json<Item> {
    web::Json(Item { id: path.0 })
}

fn main() {
    let _ = (json, fallible_json, optional_json, fallible_optional_json);
    let _ = actix_web::App::new()
        .service(handler_below)
        .service(handler_above);
}
