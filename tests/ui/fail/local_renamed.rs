use cached_runtime::redis_cache;

// `local` was renamed `near`: the error names the new spelling, on the old name.
#[redis_cache(prefix = "item", ttl = 60, local = false)]
async fn item(id: u64) -> u64 {
    id
}

fn main() {
    let _ = item;
}
