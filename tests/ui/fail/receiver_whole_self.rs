use cached_runtime::redis_cache;

struct Repo;

impl Repo {
    #[redis_cache(prefix = "repo", ttl = 60, key = "{self}:{id}")]
    async fn item(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
