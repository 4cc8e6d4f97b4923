use actix_web::{HttpRequest, HttpResponse};
use cached_runtime::ratelimit::{RateLimiter, rate_limit};

#[rate_limit(limiter = limiter, burst = 5)]
async fn hello(limiter: &RateLimiter, req: HttpRequest) -> HttpResponse {
    let _ = (limiter, req);
    HttpResponse::Ok().finish()
}

fn main() {}
