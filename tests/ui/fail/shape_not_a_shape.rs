use cached_runtime::redis_cache;

#[redis_cache(prefix = "shape", ttl = 60, shape = cached_runtime::shape::Optional)]
async fn plain(id: u64) -> u64 {
    id
}

fn main() {}
