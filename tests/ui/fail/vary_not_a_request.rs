use cached_runtime::redis_cache;

#[redis_cache(prefix = "me", ttl = 60, vary(id = ["authorization"]))]
async fn me(id: u64) -> u64 {
    id
}

fn main() {
    let _ = me;
}
