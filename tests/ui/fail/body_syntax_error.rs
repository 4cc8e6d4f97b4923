use cached_runtime::redis_cache;

#[redis_cache(prefix = "body", ttl = 60)]
async fn body(id: u64) -> u64 {
    let x = ;
    id
}

fn main() {}
