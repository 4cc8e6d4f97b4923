use cached_runtime::redis_cache;

#[redis_cache(prefix = "page", ttl = 60, tags = ["category:{categry}"])]
async fn page(category: String, page: u32) -> String {
    format!("{category}{page}")
}

fn main() {}
