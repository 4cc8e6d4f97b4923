use cached_runtime::redis_cache;

#[redis_cache(prefix = "item", ttl = 60, key = "{id}*{lang}")]
async fn item(id: u64, lang: String) -> String {
    format!("{id}{lang}")
}

fn main() {
    let _ = item;
}
