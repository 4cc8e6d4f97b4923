use cached_runtime::redis_cache;

struct Db;

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(db: &Db, id: u64) -> u64 {
    let _ = db;
    id
}

fn main() {
    let _ = item;
}
