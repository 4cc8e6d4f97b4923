use actix_web::{HttpRequest, Responder};
use cached_runtime::ratelimit::{RateLimiter, rate_limit};

#[rate_limit(limiter = limiter)]
async fn hello(limiter: &RateLimiter, req: HttpRequest) -> impl Responder {
    let _ = (limiter, req);
    "hello"
}

fn main() {}
