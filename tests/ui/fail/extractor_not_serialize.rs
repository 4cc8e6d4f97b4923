use actix_web::web;
use cached_runtime::redis_cache;

#[derive(serde::Deserialize)]
struct Params {
    page: u32,
}

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(query: web::Query<Params>) -> u32 {
    query.page
}

fn main() {
    let _ = item;
}
