use cached_runtime::redis_cache;

struct AppState {
    url: String,
}

#[redis_cache(prefix = "item", ttl = 60, cache = state.url, skip(state))]
async fn item(state: &AppState, id: u64) -> u64 {
    let _ = state;
    id
}

fn main() {
    let _ = item;
}
