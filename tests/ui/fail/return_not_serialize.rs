use cached_runtime::redis_cache;

struct Item {
    id: u64,
}

#[redis_cache(prefix = "item", ttl = 60)]
async fn item(id: u64) -> Option<Item> {
    Some(Item { id })
}

fn main() {
    let _ = item;
}
