use axum::{extract::Path, http::HeaderMap};
use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(headers: HeaderMap, Path(id): Path<u64>) -> u64 {
    let _ = headers;
    id
}

fn main() {
    let _ = item;
}
