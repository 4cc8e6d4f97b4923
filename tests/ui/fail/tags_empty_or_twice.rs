use cached_runtime::redis_cache;

#[redis_cache(prefix = "page", ttl = 60, tags = ["item:{id}", "", "item:{id}"])]
async fn page(id: u64) -> u64 {
    id
}

#[redis_cache(prefix = "none", ttl = 60, tags = [])]
async fn none(id: u64) -> u64 {
    id
}

fn main() {}
