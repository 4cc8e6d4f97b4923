// A request left out of the key may carry the caller's identity: a warning (an error here).
#![deny(deprecated)]

use actix_web::{HttpRequest, web};
use cached_runtime::redis_cache;

#[redis_cache(prefix = "me", ttl = 60, skip(req))]
async fn me(req: HttpRequest, id: web::Path<u64>) -> web::Json<String> {
    let user = req.headers().get("authorization").map(|v| v.len());
    web::Json(format!("{id} {user:?}"))
}

fn main() {
    let _ = me;
}
