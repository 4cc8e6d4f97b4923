//! Every option, in every accepted form.

use std::{sync::Arc, time::Duration};

use cached_runtime::{Cache, redis_cache};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
}

#[derive(Serialize, Deserialize)]
struct Query {
    page: u32,
    filter: Filter,
}

#[derive(Serialize, Deserialize)]
struct Filter {
    r#type: String,
}

struct Db;

const ITEM_TTL: Duration = Duration::from_secs(600);

#[redis_cache(
    prefix = "all",
    ttl = 600,
    null_ttl = 30,
    jitter = 60,
    skip(db, _trace),
    version = 3,
    lock = true
)]
async fn all(db: &Db, id: u64, _trace: u64) -> Option<Item> {
    let _ = db;
    Some(Item { id })
}

#[redis_cache(
    prefix = "durations",
    ttl = ITEM_TTL,
    null_ttl = Duration::from_secs(30),
    jitter = Duration::ZERO,
    lock = Duration::from_millis(500),
)]
async fn durations(id: u64) -> Option<Item> {
    Some(Item { id })
}

#[redis_cache(prefix = "skip_all", ttl = 1, skip_all, lock = 3)]
async fn skip_all(db: &Db, (a, b): (u64, u64), _: u8) -> u64 {
    let _ = db;
    a + b
}

#[redis_cache(
    prefix = "template",
    ttl = 60,
    key = "v2:{id}:{q.page}/x:{q.filter.type}:@{pair.1}"
)]
async fn template(id: u64, q: Query, pair: (u8, String), _ignored: Db) -> String {
    format!("{id}{}{}", q.page, pair.1)
}

#[redis_cache(prefix = "template_const", ttl = 60, key = "all", lock = false)]
async fn template_const(id: u64) -> u64 {
    id
}

#[redis_cache(prefix = "raw", ttl = 60, key = "{r#type}")]
async fn raw(r#type: u8) -> u8 {
    r#type
}

#[redis_cache(prefix = "cache.owned", ttl = 60, cache = cache, skip(cache))]
async fn cache_owned(cache: Cache, id: u64) -> u64 {
    let _ = cache;
    id
}

#[redis_cache(prefix = "cache.ref", ttl = 60, cache = cache, skip(cache))]
async fn cache_ref(cache: &Cache, id: u64) -> u64 {
    let _ = cache;
    id
}

#[redis_cache(prefix = "cache.arc", ttl = 60, cache = cache, skip(cache))]
async fn cache_arc(cache: Arc<Cache>, id: u64) -> u64 {
    let _ = cache;
    id
}

#[redis_cache(prefix = "cache.data", ttl = 60, cache = cache, skip(cache))]
async fn cache_data(cache: actix_web::web::Data<Cache>, id: u64) -> u64 {
    let _ = cache;
    id
}

#[redis_cache(prefix = "cache.static", ttl = 60, cache = shared())]
async fn cache_static(id: u64) -> u64 {
    id
}

fn shared() -> &'static Cache {
    unimplemented!("only compiled")
}

#[redis_cache(prefix = "trailing", ttl = 60)]
async fn trailing_comma() -> u64 {
    1
}

/// A facade crate that re-exports the runtime: `crate = "…"` names it.
mod facade {
    pub use ::cached_runtime::*;
}

#[redis_cache(prefix = "facade", ttl = 60, crate = "facade")]
async fn through_facade(id: u64) -> u64 {
    id
}

#[redis_cache(prefix = "facade.path", ttl = 60, crate = facade)]
async fn through_facade_path(id: u64) -> u64 {
    id
}

/// `shape = …` overrides the selected shape: here `None` is stored as a value.
#[redis_cache(prefix = "shape", ttl = 60, shape = cached_runtime::shape::Plain)]
async fn none_as_value(id: u64) -> Option<u64> {
    Some(id)
}

/// An alias of `Option` is an `Option`: shapes are selected by type, not by name.
type Maybe<T> = Option<T>;

#[redis_cache(prefix = "alias", ttl = 60)]
async fn maybe(id: u64) -> Maybe<u64> {
    Some(id)
}

/// A value the near cache can keep (`Clone`), kept out of it.
#[derive(Clone, Serialize, Deserialize)]
struct Fresh {
    at: u64,
}

#[redis_cache(prefix = "fresh", ttl = 5, near = false)]
async fn fresh(id: u64) -> Fresh {
    Fresh { at: id }
}

#[redis_cache(prefix = "near", ttl = 5, near = true)]
async fn near(id: u64) -> Option<Fresh> {
    Some(Fresh { at: id })
}

fn main() {
    let _ = (fresh, near);
    let _ = (through_facade, through_facade_path, none_as_value, maybe);
    let _ = skip_all_key;
    let _ = (all, durations, skip_all, template, template_const, raw);
    let _ = (
        cache_owned,
        cache_ref,
        cache_arc,
        cache_data,
        cache_static,
        trailing_comma,
    );
}
