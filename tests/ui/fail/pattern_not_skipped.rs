use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item((a, b): (u64, u64)) -> u64 {
    a + b
}

fn main() {
    let _ = item;
}
