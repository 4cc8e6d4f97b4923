use axum::extract::{Path, State};
use cached_runtime::redis_cache;

#[derive(Clone)]
struct App;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(State(app): State<App>, Path(id): Path<u64>) -> u64 {
    let _ = app;
    id
}

fn main() {
    let _ = item;
}
