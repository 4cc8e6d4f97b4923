use std::time::Duration;

use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = Duration::from_millis(500))]
async fn item(id: u64) -> u64 {
    id
}

fn main() {
    let _ = item;
}
