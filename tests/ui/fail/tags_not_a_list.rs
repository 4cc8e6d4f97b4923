use cached_runtime::redis_cache;

#[redis_cache(prefix = "page", ttl = 60, tags = "category:{category}")]
async fn page(category: String) -> String {
    category
}

fn main() {}
