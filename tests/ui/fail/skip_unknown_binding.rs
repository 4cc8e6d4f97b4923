use axum::extract::{Path, State};
use cached_runtime::redis_cache;

#[derive(Clone)]
struct App;

#[redis_cache(prefix = "item", ttl = 60, skip(State))]
async fn item(State(app): State<App>, Path((id, lang)): Path<(u64, String)>) -> String {
    let _ = app;
    format!("{id}{lang}")
}

fn main() {
    let _ = item;
}
