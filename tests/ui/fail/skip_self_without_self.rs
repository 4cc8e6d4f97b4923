use cached_runtime::redis_cache;

#[redis_cache(prefix = "free", ttl = 60, skip(self))]
async fn free(id: u64) -> u64 {
    id
}

fn main() {}
