use cached_runtime::redis_cache;

const PREFIX: &str = "item";

#[redis_cache(prefix = PREFIX, ttl = 60)]
async fn item(id: u64) -> u64 {
    id
}

fn main() {
    let _ = item;
}
