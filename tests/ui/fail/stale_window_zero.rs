use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60, stale = 0, fail_safe)]
async fn item(id: u64) -> u64 {
    id
}

fn main() {
    let _ = item;
}
