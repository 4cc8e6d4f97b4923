use axum::extract::{Path, State};
use cached_runtime::redis_cache;

#[derive(Clone, serde::Serialize)]
struct App;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(state: State<App>, Path(id): Path<u64>) -> u64 {
    let _ = state;
    id
}

fn main() {
    let _ = item;
}
