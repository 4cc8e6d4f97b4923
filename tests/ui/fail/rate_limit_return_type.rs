use actix_web::HttpRequest;
use cached_runtime::ratelimit::{RateLimiter, rate_limit};

#[rate_limit(limiter = limiter)]
async fn hello(limiter: &RateLimiter, req: HttpRequest) -> String {
    let _ = (limiter, req);
    "hello".to_owned()
}

fn main() {}
