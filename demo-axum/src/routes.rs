//! The handlers, written the way axum handlers are (extractor patterns, `State`, `Json`), each
//! read cached by the attribute on the handler itself; writers invalidate through the
//! companion functions the attribute generates.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, header::AUTHORIZATION},
    middleware::map_response,
    routing::get,
};
use cached_runtime::{Cache, Counts, redis_cache};
use serde::{Deserialize, Serialize};

use crate::{
    db::{Db, Item, PAGE_SIZE},
    error::{ApiError, json_errors},
};

/// The prefix of `GET /items` entries; must equal the `prefix` in its attribute.
pub const LIST_PREFIX: &str = "items";
/// The tag every `GET /items` entry carries; must equal the `tags` in its attribute.
pub const LIST_TAG: &str = "list";
/// The highest page number accepted.
pub const MAX_PAGE: u32 = 1000;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct App {
    db: Arc<Db>,
    /// The cache the handlers' `#[redis_cache(cache = app.cache)]` use.
    pub cache: Cache,
}

impl App {
    pub(crate) fn new(db: Arc<Db>, cache: Cache) -> Self {
        Self { db, cache }
    }

    /// Runs `f` on the database on a blocking thread.
    async fn db<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&Db) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ApiError::internal(&e)),
            Err(e) => Err(ApiError::internal(&e)),
        }
    }

    /// SQL statements run for requests since start.
    pub fn db_queries(&self) -> u64 {
        self.db.queries()
    }
}

/// The routes, with every error answered as JSON.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/items/{id}", get(item).put(update_item))
        .route("/items", get(list_items))
        .route("/me/picks", get(picks))
        .route("/stats", get(stats))
        .route("/healthz", get(healthz))
        .merge(crate::session::router(&app.cache))
        .fallback(not_found)
        .layer(map_response(json_errors))
        .with_state(app)
}

/// `GET /items/{id}`: the item, revalidated: it carries an `ETag` and `X-Cache`, and a request
/// with `If-None-Match: <that tag>` gets `304 Not Modified` from the cache, decoding nothing.
#[redis_cache(prefix = "item", ttl = 600, skip(app), cache = app.cache, revalidate)]
pub async fn item(State(app): State<App>, Path(id): Path<u64>) -> Result<Json<Item>, ApiError> {
    let found = app.db(move |db| db.get(id)).await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("item {id} not found")))
}

/// The query of `GET /items`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only this category; every item when absent.
    pub category: Option<String>,
    /// 1-based page number.
    #[serde(default = "first_page")]
    pub page: u32,
}

fn first_page() -> u32 {
    1
}

/// `GET /items?category=…&page=…`: one page, keyed on the two fields the pattern binds.
#[redis_cache(prefix = "items", ttl = 60, skip(app), cache = app.cache, tags = ["list"])]
pub async fn list_items(
    State(app): State<App>,
    Query(ListQuery { category, page }): Query<ListQuery>,
) -> Result<Json<Vec<Item>>, ApiError> {
    if page == 0 || page > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "page must be between 1 and {MAX_PAGE}"
        )));
    }
    let items = app.db(move |db| db.list(category.as_deref(), page)).await?;
    Ok(Json(items))
}

/// The body of `PUT /items/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemUpdate {
    /// New name, not empty.
    pub name: String,
    /// New price in cents.
    pub price_cents: u64,
}

/// `PUT /items/{id}`: renames and reprices the item; drops its entry (through the companion
/// of [`item`], so a revalidation gets the new `ETag`) and every cached list.
pub async fn update_item(
    State(app): State<App>,
    Path(id): Path<u64>,
    Json(update): Json<ItemUpdate>,
) -> Result<Json<Item>, ApiError> {
    let name = update.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::BadRequest("name must not be empty".to_owned()));
    }
    let price = update.price_cents;
    let updated = app.db(move |db| db.update(id, &name, price)).await?;
    let Some(updated) = updated else {
        return Err(ApiError::NotFound(format!("item {id} not found")));
    };
    // The write has happened: a failed invalidation is logged (and retried by the cache),
    // and the stale entries expire with their TTL.
    if let Err(e) = item_invalidate(&app.cache, &id).await {
        tracing::warn!(id, error = %e, "cannot invalidate the cached item");
    }
    // Every cached list carries the tag `list`: one command, however many pages are cached.
    if let Err(e) = app.cache.invalidate_tags([LIST_TAG]).await {
        tracing::warn!(error = %e, "cannot invalidate the cached lists");
    }
    Ok(Json(updated))
}

/// The caller's picks.
#[derive(Debug, Serialize, Deserialize)]
pub struct Picks {
    /// Who asked.
    pub user: String,
    /// A few items of the category this user likes.
    pub items: Vec<Item>,
}

/// `GET /me/picks` with `Authorization: Bearer <name>`: items chosen for the caller. The
/// result depends on the header, so the header is in the key (`vary`): each caller has their
/// own entry, and no caller is ever served another's. Revalidated with `no-cache`: clients
/// ask every time and get a `304` while their entry is unchanged.
#[redis_cache(
    prefix = "picks",
    ttl = 60,
    skip(app),
    cache = app.cache,
    vary(headers = ["authorization"]),
    revalidate = "private, no-cache"
)]
pub async fn picks(State(app): State<App>, headers: HeaderMap) -> Result<Json<Picks>, ApiError> {
    let user = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= 64)
        .ok_or(ApiError::Unauthorized)?
        .to_owned();
    // Any stable choice will do: the first letter picks the category.
    let categories = ["books", "games", "music", "tools"];
    let category = categories[usize::from(user.as_bytes()[0]) % categories.len()];
    let mut items = app.db(move |db| db.list(Some(category), 1)).await?;
    items.truncate(3.min(PAGE_SIZE as usize));
    Ok(Json(Picks { user, items }))
}

/// The body of `GET /stats`.
#[derive(Debug, Serialize)]
pub struct StatsBody {
    /// SQL statements run for requests.
    pub db_queries: u64,
    /// The cache's counters.
    pub cache: Counts,
}

/// `GET /stats`.
pub async fn stats(State(app): State<App>) -> Json<StatsBody> {
    Json(StatsBody {
        db_queries: app.db_queries(),
        cache: app.cache.stats().total,
    })
}

/// The body of `GET /healthz`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `up` or `down`: the service serves uncached while Redis is down.
    pub redis: &'static str,
}

/// `GET /healthz`.
pub async fn healthz(State(app): State<App>) -> Result<Json<Health>, ApiError> {
    let db = Arc::clone(&app.db);
    tokio::task::spawn_blocking(move || db.ping())
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    let redis = if app.cache.ping().await.is_ok() {
        "up"
    } else {
        "down"
    };
    Ok(Json(Health { redis }))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
