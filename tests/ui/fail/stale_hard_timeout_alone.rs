use cached_runtime::redis_cache;

// Nothing runs in the background for a hard timeout to bound.
#[redis_cache(prefix = "item", ttl = 60, stale = 600, fail_safe, hard_timeout = 5)]
async fn item(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {
    let _ = item;
}
