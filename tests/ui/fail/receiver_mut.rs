use cached_runtime::redis_cache;

struct Counter {
    n: u64,
}

impl Counter {
    #[redis_cache(prefix = "counter", ttl = 60, skip(self))]
    async fn bump(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

fn main() {}
