use axum::http::HeaderMap;
use cached_runtime::redis_cache;

#[redis_cache(prefix = "a", ttl = 60, skip(headers), vary(headers = ["authorization"]))]
async fn skipped(headers: HeaderMap) -> u64 {
    headers.len() as u64
}

#[redis_cache(prefix = "b", ttl = 60, vary(req = ["authorization"]))]
async fn unknown(headers: HeaderMap) -> u64 {
    headers.len() as u64
}

#[redis_cache(prefix = "c", ttl = 60, vary(headers = ["cookie", "cookie"]))]
async fn twice(headers: HeaderMap) -> u64 {
    headers.len() as u64
}

fn main() {
    let _ = (skipped, unknown, twice);
}
