use cached_runtime::redis_cache;

const TTL_SECS: u64 = 600;

#[redis_cache(prefix = "item", ttl = TTL_SECS)]
async fn item(id: u64) -> u64 {
    id
}

fn main() {
    let _ = item;
}
