//! The future of a cached function is `Send` whenever its body's is, as a spawned task or an
//! axum handler needs.

use std::{future::Future, rc::Rc};

use cached_runtime::{Cache, redis_cache};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
}

fn assert_send<F: Future + Send>(f: F) -> F {
    f
}

#[redis_cache(prefix = "send", ttl = 60)]
async fn free(id: u64, name: String) -> Option<Item> {
    tokio::task::yield_now().await;
    let _ = name;
    Some(Item { id })
}

#[redis_cache(prefix = "send.cache", ttl = 60, cache = cache, skip(cache))]
async fn with_cache(cache: &Cache, id: u64) -> Result<Item, String> {
    let _ = cache;
    Ok(Item { id })
}

struct Repo;

impl Repo {
    #[redis_cache(prefix = "send.method", ttl = 60, skip(self))]
    async fn item(&self, id: u64) -> Item {
        Item { id }
    }
}

/// Not `Send` itself, and still cached: only its callers that need `Send` are limited.
#[redis_cache(prefix = "local", ttl = 60)]
async fn local(id: u64) -> u64 {
    let rc = Rc::new(id);
    tokio::task::yield_now().await;
    *rc
}

fn main() {
    let _ = assert_send(free(1, String::new()));
    let cache: Option<&Cache> = None;
    if let Some(cache) = cache {
        let _ = assert_send(with_cache(cache, 1));
    }
    let _ = assert_send(Repo.item(1));
    let _ = || tokio::spawn(free(1, String::new()));
    let _ = local(1);
}
