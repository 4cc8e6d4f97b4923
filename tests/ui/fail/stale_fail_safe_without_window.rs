use cached_runtime::redis_cache;

// Fail-safe serves entries past their ttl: it needs the window they are kept for.
#[redis_cache(prefix = "item", ttl = 60, fail_safe)]
async fn item(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {
    let _ = item;
}
