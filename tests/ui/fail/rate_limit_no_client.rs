use actix_web::{HttpResponse, web};
use cached_runtime::ratelimit::{RateLimiter, rate_limit};

#[rate_limit(limiter = limiter)]
async fn item(limiter: &RateLimiter, id: web::Path<u64>) -> HttpResponse {
    let _ = limiter;
    HttpResponse::Ok().body(id.to_string())
}

fn main() {}
