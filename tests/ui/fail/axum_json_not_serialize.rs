use axum::{Json, extract::Path, http::StatusCode};
use cached_runtime::redis_cache;

struct Item {
    id: u64,
}

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(Path(id): Path<u64>) -> Result<Json<Item>, StatusCode> {
    Ok(Json(Item { id }))
}

fn main() {
    let _ = item;
}
