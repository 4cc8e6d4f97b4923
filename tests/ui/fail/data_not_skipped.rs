use actix_web::web;
use cached_runtime::redis_cache;

struct AppState;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(state: web::Data<AppState>, id: u64) -> u64 {
    let _ = state;
    id
}

fn main() {
    let _ = item;
}
