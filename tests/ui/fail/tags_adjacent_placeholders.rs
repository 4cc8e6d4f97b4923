use cached_runtime::redis_cache;

// `("x-y", "z")` and `("x", "y-z")` would share one tag.
#[redis_cache(prefix = "pair", ttl = 60, tags = ["{a}-{b}"])]
async fn pair(a: String, b: String) -> String {
    a + &b
}

fn main() {}
