//! Pattern arguments key on the names they bind, in order; `skip` names a bound name; a name
//! bound by a pattern can hold the cache; Actix's extractors with public fields destructure too.

use actix_web::web;
use cached_runtime::{Cache, redis_cache};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Page {
    page: u32,
    lang: String,
}

struct Ctx {
    cache: Cache,
}

#[redis_cache(prefix = "pat.tuple", ttl = 60)]
async fn tuple((a, b): (u64, u64)) -> u64 {
    a + b
}

#[redis_cache(prefix = "pat.ref", ttl = 60)]
async fn reference(&(a, ref b): &(u8, String)) -> String {
    format!("{a}{b}")
}

#[redis_cache(prefix = "pat.skip", ttl = 60, skip(ctx), cache = ctx.cache)]
async fn skip_bound((ctx, id): (&Ctx, u64)) -> u64 {
    let _ = ctx;
    id
}

#[redis_cache(prefix = "pat.wild", ttl = 60)]
async fn wildcard(_: u64, id: u64) -> u64 {
    id
}

#[redis_cache(prefix = "pat.actix", ttl = 60, key = "{q}:{lang}")]
async fn actix(
    web::Query(q): web::Query<Page>,
    web::Json(lang): web::Json<String>,
) -> web::Json<u32> {
    let _ = lang;
    web::Json(q.page)
}

fn main() {
    let cache = Cache::in_memory();
    let _ = (tuple, reference, wildcard, actix);
    let _ = skip_bound((
        &Ctx {
            cache: cache.clone(),
        },
        1,
    ));
    let _ = tuple_key(&cache, &1, &2);
    let _ = reference_key(&cache, &1, "b");
    let _ = skip_bound_key(&cache, &1);
    let _ = actix_key(
        &cache,
        &Page {
            page: 1,
            lang: String::new(),
        },
        "en",
    );
}
