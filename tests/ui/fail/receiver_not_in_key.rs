use cached_runtime::redis_cache;

struct Repo {
    tenant: u32,
}

impl Repo {
    #[redis_cache(prefix = "repo", ttl = 60)]
    async fn item(&self, id: u64) -> u64 {
        id + u64::from(self.tenant)
    }
}

fn main() {}
