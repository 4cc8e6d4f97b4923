//! The handlers. Every read is cached by annotating the handler itself with `#[redis_cache]`;
//! every write invalidates what it changed through the companion functions the attribute
//! generates (`get_item_invalidate`, `list_items_key`), so no writer repeats a key layout.

use std::{
    collections::BTreeMap,
    future::{Ready, ready},
};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, delete, dev::Payload, get, http::header, post, put, web,
};
use cached_runtime::{Cache, CacheError, Counts, redis_cache};
use serde::{Deserialize, Serialize};

use crate::{
    app::AppState,
    auth::Admin,
    compute::ComputeStats,
    error::{ApiError, json_body_error, path_error, query_error},
    model::{Fib, FibN, Item, ItemInput, ItemPage, ListQuery, PAGE_SIZE},
};

/// The prefix of `GET /items/{id}` entries; must equal the `prefix` in its attribute.
pub const ITEM_PREFIX: &str = "item";
/// The prefix of `GET /items` entries; must equal the `prefix` in its attribute.
pub const LIST_PREFIX: &str = "items";
/// The prefix of `GET /fib/{n}` entries; must equal the `prefix` in its attribute.
pub const FIB_PREFIX: &str = "fib";
/// Every prefix the service caches under: what the admin endpoint accepts.
pub const PREFIXES: [&str; 3] = [ITEM_PREFIX, LIST_PREFIX, FIB_PREFIX];
/// Largest JSON body accepted.
pub const JSON_LIMIT: usize = 16 * 1024;

/// Registers the routes and the extractor configurations that turn bad input into 400 JSON.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_body_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .service(get_item)
    .service(list_items)
    .service(create_item)
    .service(update_item)
    .service(delete_item)
    .service(fib)
    .service(stats)
    .service(crate::metrics::metrics)
    .service(admin_invalidate)
    .service(admin_db_outage)
    .configure(crate::jobs::configure)
    .service(healthz);
}

/// `GET /items/{id}`: the item, or a 404 whose absence is cached too (the null marker; the
/// `{"error": …}` body is added by the app's `ErrorHandlers`). Revalidated: the item carries
/// an `ETag`, and `If-None-Match` with it gets a `304` straight from the cache.
///
/// Fail-safe: kept an hour past its TTL, an item whose read fails (the database down) is
/// answered from that stale entry (`X-Cache: STALE`, with its `Age`), and for 5 s after a
/// failure its calls do not try the database again; through a Redis outage, from the near
/// cache.
// Above `#[get]`, so the companions `get_item_key`/`get_item_invalidate` are module items.
#[redis_cache(
    prefix = "item",
    ttl = 600,
    stale = 3600,
    fail_safe_throttle = 5,
    skip(state),
    cache = state.cache,
    revalidate
)]
#[get("/items/{id}")]
async fn get_item(
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<Option<web::Json<Item>>, ApiError> {
    let id = id.into_inner();
    let item = state.db(move |db| db.get(id)).await?;
    Ok(item.map(web::Json))
}

/// `GET /items?category=…&page=…`: one page of items, keyed on the whole query (which only
/// names categories that exist and pages up to [`MAX_PAGE`](crate::model::MAX_PAGE)), and
/// tagged with its category, so a write drops every page of a list with one command.
///
/// Stale-while-revalidate: for 5 minutes past its TTL a page is answered at once from the
/// stale entry while one refresh (in the whole fleet, under the fill lock) reads it again;
/// fail-safe too, so a failing refresh leaves the stale page in place, and after a failure
/// the page's database query waits 5 s (the throttle) before it is tried again. A write's tag
/// invalidation ends that too: an invalidated page is never answered, fresh or stale.
#[redis_cache(
    prefix = "items",
    ttl = 60,
    stale = 300,
    stale_while_revalidate,
    fail_safe_throttle = 5,
    skip(state),
    cache = state.cache,
    tags = ["list:{query.category}"]
)]
#[get("/items")]
async fn list_items(
    state: web::Data<AppState>,
    query: ListQuery,
) -> Result<web::Json<ItemPage>, ApiError> {
    let ListQuery { category, page } = query;
    let filter = category.clone();
    let (items, total) = state.db(move |db| db.list(filter.as_deref(), page)).await?;
    Ok(web::Json(ItemPage {
        category,
        page,
        per_page: PAGE_SIZE,
        total,
        items,
    }))
}

/// `POST /items`: 201 with the new item; drops the lists it now belongs to.
#[post("/items")]
async fn create_item(
    state: web::Data<AppState>,
    body: web::Json<ItemInput>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner();
    let item = state.db(move |db| db.insert(&input)).await?;
    state.learn_category(&item.category);
    // The id is new, but a GET may have cached its absence before it existed.
    forget(&state.cache, item.id, &[&item.category]).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/items/{}", item.id)))
        .json(item))
}

/// `PUT /items/{id}`: replaces the item; drops its entry and the lists of its old and new
/// category, and schedules the item's reindex (a delayed job, see [`Jobs`](crate::Jobs)).
#[put("/items/{id}")]
async fn update_item(
    state: web::Data<AppState>,
    id: web::Path<u64>,
    body: web::Json<ItemInput>,
) -> Result<impl actix_web::Responder, ApiError> {
    let id = id.into_inner();
    let input = body.into_inner();
    let Some((old_category, item)) = state.db(move |db| db.update(id, &input)).await? else {
        return Err(ApiError::NotFound(format!("item {id} not found")));
    };
    state.learn_category(&item.category);
    forget(&state.cache, id, &[&old_category, &item.category]).await;
    // The update stands either way; `x-reindex` says whether its reindex is scheduled.
    let reindex = match state.jobs.schedule(id).await {
        Ok(pushed) if pushed.is_duplicate() => format!("pending; job={}", pushed.id()),
        Ok(pushed) => format!("scheduled; job={}", pushed.id()),
        Err(e) => {
            tracing::warn!(item = id, error = %e, "could not schedule the item's reindex");
            "failed".to_owned()
        }
    };
    Ok(actix_web::Responder::customize(web::Json(item)).insert_header(("x-reindex", reindex)))
}

/// `DELETE /items/{id}`: 204; drops its entry and its category's lists.
#[delete("/items/{id}")]
async fn delete_item(
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let Some(item) = state.db(move |db| db.delete(id)).await? else {
        return Err(ApiError::NotFound(format!("item {id} not found")));
    };
    forget(&state.cache, id, &[&item.category]).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Invalidates the entry of item `id` (exactly the key `get_item` reads, through its
/// companion) and every cached page of the lists of `categories` and of the unfiltered list:
/// one command per list's tag, however many pages are cached, no scan.
///
/// The write has already happened, so a Redis failure here does not fail the request: it is
/// logged, retried by the cache, and until then those entries are not read.
async fn forget(cache: &Cache, id: u64, categories: &[&str]) {
    if let Err(e) = get_item_invalidate(cache, &id).await {
        tracing::warn!(id, error = %e, "cannot invalidate the cached item; it expires with its ttl");
    }
    let mut lists: Vec<Option<&str>> = vec![None];
    for c in categories {
        if !lists.contains(&Some(c)) {
            lists.push(Some(c));
        }
    }
    let tags: Result<Vec<String>, CacheError> = lists
        .iter()
        .map(|category| list_tag(cache, *category))
        .collect();
    let result = match tags {
        Ok(tags) => cache.invalidate_tags(tags).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(?lists, error = %e, "cannot invalidate cached lists");
    }
}

/// The tag every cached page of one category's list carries (`None`: the unfiltered list):
/// `list_items`'s `list:{query.category}` for that category.
pub fn list_tag(cache: &Cache, category: Option<&str>) -> Result<String, CacheError> {
    cache.tag().literal("list:").value(&category).build()
}

/// The query of `GET /items` as an extractor: parsed and range-checked as [`ListQuery`]
/// deserializes, then checked against the categories that exist. Anything else is a 400
/// before the cache is asked, so anonymous requests cannot fill it with lists of made-up
/// categories.
impl FromRequest for ListQuery {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(list_query(req))
    }
}

fn list_query(req: &HttpRequest) -> Result<ListQuery, actix_web::Error> {
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| query_error(e, req))?
        .into_inner();
    let Some(category) = &query.category else {
        return Ok(query);
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("list query", &"application state is not registered"))?;
    if !state.knows_category(category) {
        return Err(ApiError::BadRequest(format!(
            "unknown category {category:?}; categories: {}",
            state.known_categories().join(", ")
        ))
        .into());
    }
    Ok(query)
}

/// The glob (relative to the namespace) matching every cached page of one category's list
/// (`None`: the unfiltered list) and nothing else.
///
/// `list_items` is keyed on its [`ListQuery`], which the key encoding writes as
/// `items:(category=…,page=N)` (see `cached_runtime::key`). The key of page 1 is built by the
/// library and only its page number is replaced by `*`; the encoding escapes every glob
/// character a category could hold, so the rest matches literally.
pub fn list_pattern(cache: &Cache, category: Option<&str>) -> Result<String, CacheError> {
    let page_1 = ListQuery {
        category: category.map(str::to_owned),
        page: 1,
    };
    let key = list_items_key(cache, &page_1)?;
    let relative = key
        .as_str()
        .strip_prefix(cache.namespace())
        .unwrap_or(key.as_str());
    let fixed = relative.strip_suffix("page=1)").ok_or_else(|| {
        CacheError::Config(format!(
            "list key {relative:?} does not end with the page (has the key encoding changed?)"
        ))
    })?;
    Ok(format!("{fixed}page=*)"))
}

/// `GET /fib/{n}`: the `n`th Fibonacci number by naive recursion on a blocking thread — the
/// deliberately slow computation the cache saves. Concurrent requests for one `n` compute it
/// once, also while Redis is down (single-flight); distinct computations are bounded by
/// [`ComputeLimit`](crate::ComputeLimit), 503 beyond its queue.
#[get("/fib/{n}")]
#[redis_cache(prefix = "fib", ttl = 3600, skip(state), cache = state.cache)]
async fn fib(state: web::Data<AppState>, n: web::Path<FibN>) -> Result<web::Json<Fib>, ApiError> {
    let n = n.into_inner().get();
    let value = state.compute.run(move || naive_fib(n)).await?;
    Ok(web::Json(Fib { n, value }))
}

fn naive_fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        naive_fib(n - 1) + naive_fib(n - 2)
    }
}

#[derive(Serialize)]
struct StatsBody {
    db_queries: u64,
    cache: WithRatio,
    by_prefix: BTreeMap<String, WithRatio>,
    fib: ComputeStats,
}

/// A prefix's counters and its hit ratio (`null` before the first call).
#[derive(Serialize)]
struct WithRatio {
    #[serde(flatten)]
    counts: Counts,
    hit_ratio: Option<f64>,
}

impl From<Counts> for WithRatio {
    fn from(counts: Counts) -> Self {
        Self {
            hit_ratio: counts.hit_ratio(),
            counts,
        }
    }
}

/// `GET /stats`: SQL statements run, the cache's counters and hit ratio in total and per
/// prefix, and the `/fib` computations.
#[get("/stats")]
async fn stats(state: web::Data<AppState>) -> web::Json<StatsBody> {
    let cache = state.cache.stats();
    web::Json(StatsBody {
        db_queries: state.db_queries(),
        cache: cache.total.into(),
        by_prefix: cache
            .prefixes
            .into_iter()
            .map(|(p, c)| (p, c.into()))
            .collect(),
        fib: state.compute.stats(),
    })
}

/// The body of `POST /admin/cache/invalidate`: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateRequest {
    /// Every entry of this prefix, e.g. `"item"`.
    prefix: Option<String>,
    /// Every key matching this Redis glob (within the namespace), e.g. `"item:1*"`.
    pattern: Option<String>,
}

#[derive(Serialize)]
struct Deleted {
    deleted: u64,
}

/// `POST /admin/cache/invalidate`: `{"prefix": "item"}` or `{"pattern": "item:*"}` →
/// `{"deleted": N}`. Needs `Authorization: Bearer $ADMIN_TOKEN` (401 otherwise); 404 while
/// `ADMIN_TOKEN` is unset. Only the service's own prefixes are accepted. Every invalidation
/// is logged at info with who asked (the peer address, and `Forwarded`/`X-Forwarded-For` when
/// present) and what it covered.
#[post("/admin/cache/invalidate")]
async fn admin_invalidate(
    _admin: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<InvalidateRequest>,
) -> Result<web::Json<Deleted>, ApiError> {
    let body = body.into_inner();
    let deleted = match &body {
        InvalidateRequest {
            prefix: Some(prefix),
            pattern: None,
        } if !PREFIXES.contains(&prefix.as_str()) => {
            return Err(ApiError::BadRequest(format!(
                "unknown prefix {prefix:?}; prefixes: {}",
                PREFIXES.join(", ")
            )));
        }
        InvalidateRequest {
            prefix: Some(prefix),
            pattern: None,
        } => state.cache.invalidate_prefix(prefix).await,
        InvalidateRequest {
            prefix: None,
            pattern: Some(pattern),
        } if !pattern.is_empty() => state.cache.invalidate_pattern(pattern).await,
        InvalidateRequest {
            prefix: None,
            pattern: Some(_),
        } => return Err(ApiError::BadRequest("pattern must not be empty".to_owned())),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of \"prefix\" or \"pattern\"".to_owned(),
            ));
        }
    };
    audit(&req, &body, &deleted);
    match deleted {
        Ok(deleted) => Ok(web::Json(Deleted { deleted })),
        Err(e @ CacheError::InvalidPrefix(_)) => Err(ApiError::BadRequest(e.to_string())),
        Err(e) => Err(ApiError::CacheUnavailable(e.to_string())),
    }
}

/// The body of `POST /admin/db/outage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageRequest {
    down: bool,
}

/// `POST /admin/db/outage`: `{"down": true}` makes every database query fail (503) until
/// `{"down": false}`, to watch the fail-safe items and stale lists answer through it. The
/// same `Authorization` as the cache invalidation.
#[post("/admin/db/outage")]
async fn admin_db_outage(
    _admin: Admin,
    state: web::Data<AppState>,
    body: web::Json<OutageRequest>,
) -> HttpResponse {
    state.db.set_down(body.down);
    tracing::warn!(down = body.down, "simulated database outage");
    HttpResponse::NoContent().finish()
}

/// Logs an admin invalidation: who (peer address, and the forwarded client when a proxy
/// says so), what, and how it went. Values are `Debug`-quoted, so a pattern cannot forge log
/// lines. The token is never logged.
fn audit(req: &HttpRequest, body: &InvalidateRequest, result: &Result<u64, CacheError>) {
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    // The client a proxy names, when one does (actix falls back to the peer otherwise).
    let proxied = ["forwarded", "x-forwarded-for"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    let info = req.connection_info();
    let forwarded = info
        .realip_remote_addr()
        .filter(|_| proxied)
        .map(str::to_owned);
    let (scope, target) = match body {
        InvalidateRequest {
            prefix: Some(p), ..
        } => ("prefix", p.as_str()),
        InvalidateRequest {
            pattern: Some(p), ..
        } => ("pattern", p.as_str()),
        _ => ("none", ""),
    };
    match result {
        Ok(deleted) => tracing::info!(
            peer,
            forwarded_for = ?forwarded,
            scope,
            target = ?target,
            deleted,
            "admin cache invalidation"
        ),
        Err(e) => tracing::warn!(
            peer,
            forwarded_for = ?forwarded,
            scope,
            target = ?target,
            error = %e,
            "admin cache invalidation failed"
        ),
    }
}

#[derive(Serialize)]
struct Health {
    redis: &'static str,
    db: &'static str,
}

/// `GET /healthz`: 200 `{"redis": "up"|"down", "db": "up"}` — Redis being down degrades
/// the service (uncached) but does not make it unhealthy; 503 when the database fails.
#[get("/healthz")]
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let redis = if state.cache.ping().await.is_ok() {
        "up"
    } else {
        "down"
    };
    let db = state.db_ping().await;
    let body = Health {
        redis,
        db: if db { "up" } else { "down" },
    };
    if db {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn list_pattern_matches_every_page_of_one_category_and_no_other() {
        // Lazy: nothing listens on port 1, and nothing needs to.
        let cache = Cache::builder("redis://127.0.0.1:1")
            .namespace("shop:")
            .build_lazy()
            .expect("a lazy cache");
        let books = list_pattern(&cache, Some("books")).expect("a pattern");
        assert_eq!(books, "items:(category=books,page=*)");
        assert_eq!(
            list_pattern(&cache, None).expect("a pattern"),
            "items:(category=~,page=*)"
        );
        // The keys `list_items` reads, relative to the namespace, fit the glob's shape.
        let (fixed, _) = books.split_once('*').expect("one wildcard");
        for (category, page, matches) in [("books", 12, true), ("books-2", 1, false)] {
            let query = ListQuery {
                category: Some(category.to_owned()),
                page,
            };
            let key = list_items_key(&cache, &query).expect("a key");
            let relative = key.as_str().strip_prefix("shop:").expect("namespaced");
            assert_eq!(
                relative.starts_with(fixed) && relative.ends_with(')'),
                matches,
                "{relative}"
            );
        }
    }

    #[test]
    fn naive_fib_matches_the_sequence() {
        let first: Vec<u64> = (0..10).map(naive_fib).collect();
        assert_eq!(first, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
    }
}
