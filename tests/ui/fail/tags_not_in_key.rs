use cached_runtime::redis_cache;

// The entry's key leaves `user` out, so its tag could differ between calls that share it.
#[redis_cache(prefix = "page", ttl = 60, skip(user), tags = ["user:{user}"])]
async fn page(user: u64, page: u32) -> u32 {
    page + user as u32
}

fn main() {}
