use std::{future::Future, pin::Pin};

use cached_runtime::redis_cache;

// What `#[async_trait]` turns `async fn item(&self, id: u64) -> u64` into.
struct Repo;

impl Repo {
    #[redis_cache(prefix = "repo", ttl = 60, skip(self))]
    fn item<'life0, 'async_trait>(
        &'life0 self,
        id: u64,
    ) -> Pin<Box<dyn Future<Output = u64> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { id })
    }
}

fn main() {}
