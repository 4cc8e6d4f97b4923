// Left out by `skip_all` or by a template, a header map warns as well (an error here).
#![deny(deprecated)]

use axum::{Json, extract::Path, http::HeaderMap};
use cached_runtime::redis_cache;

#[redis_cache(prefix = "me", ttl = 60, key = "{id}")]
async fn me(headers: HeaderMap, Path(id): Path<u64>) -> Json<String> {
    Json(format!("{id} {}", headers.len()))
}

fn main() {
    let _ = me;
}
