use actix_web::HttpRequest;
use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(req: HttpRequest, id: u64) -> u64 {
    let _ = req;
    id
}

fn main() {
    let _ = item;
}
