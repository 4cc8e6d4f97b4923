use actix_web::{HttpRequest, HttpResponse};
use cached_runtime::{Cache, ratelimit::rate_limit};

#[rate_limit(limiter = cache)]
async fn hello(cache: &Cache, req: HttpRequest) -> HttpResponse {
    let _ = (cache, req);
    HttpResponse::Ok().finish()
}

fn main() {}
