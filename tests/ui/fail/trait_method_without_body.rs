use cached_runtime::redis_cache;

trait Repo {
    #[redis_cache(prefix = "item", ttl = 60, skip(self))]
    async fn item(&self, id: u64) -> u64;
}

fn main() {
    let _ = <() as Repo>::item;
}

impl Repo for () {
    async fn item(&self, id: u64) -> u64 {
        id
    }
}
