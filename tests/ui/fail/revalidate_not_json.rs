use axum::extract::Path;
use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60, revalidate)]
async fn item(Path(id): Path<u64>) -> String {
    id.to_string()
}

fn main() {
    let _ = item;
}
