use cached_runtime::redis_cache;

// A body refreshed in the background cannot borrow the caller's arguments.
#[redis_cache(prefix = "item", ttl = 60, stale = 600, stale_while_revalidate)]
async fn item(name: &str) -> u64 {
    name.len() as u64
}

fn main() {
    let _ = item;
}
