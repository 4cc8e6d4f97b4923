use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60)]
struct Item;

fn main() {
    let _ = Item;
}
