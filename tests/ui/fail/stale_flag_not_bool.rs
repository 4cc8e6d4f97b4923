use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60, stale = 600, stale_while_revalidate = "yes")]
async fn item(id: u64) -> u64 {
    id
}

fn main() {
    let _ = item;
}
