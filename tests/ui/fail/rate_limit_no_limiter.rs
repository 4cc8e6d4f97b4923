use actix_web::{HttpRequest, HttpResponse};
use cached_runtime::ratelimit::rate_limit;

#[rate_limit(cost = 2)]
async fn hello(req: HttpRequest) -> HttpResponse {
    let _ = (limiter, req);
    HttpResponse::Ok().finish()
}

fn main() {}
