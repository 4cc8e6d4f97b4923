use cached_runtime::redis_cache;

#[redis_cache(prefix = "facade", ttl = 60, crate = "not a path")]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
