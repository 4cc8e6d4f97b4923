use axum::http::HeaderMap;
use cached_runtime::redis_cache;

#[redis_cache(prefix = "me", ttl = 60, vary(headers = ["Authorization", "x tenant"]))]
async fn me(headers: HeaderMap) -> u64 {
    headers.len() as u64
}

fn main() {
    let _ = me;
}
