use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(id: u64) {
    let _ = id;
}

fn main() {
    let _ = item;
}
