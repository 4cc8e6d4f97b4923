use axum::{Json, extract::Path};
use cached_runtime::redis_cache;

#[redis_cache(prefix = "a", ttl = 60, revalidate = "Private, max-age")]
async fn upper(Path(id): Path<u64>) -> Json<u64> {
    Json(id)
}

#[redis_cache(prefix = "b", ttl = 60, revalidate = "public, private")]
async fn both(Path(id): Path<u64>) -> Json<u64> {
    Json(id)
}

#[redis_cache(prefix = "c", ttl = 60, revalidate = 60)]
async fn number(Path(id): Path<u64>) -> Json<u64> {
    Json(id)
}

fn main() {
    let _ = (upper, both, number);
}
