//! Every return shape that needs no Actix type, on free functions.

use cached_runtime::redis_cache;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
}

#[derive(Debug)]
struct NotFound;

type AppResult<T> = Result<T, NotFound>;

#[redis_cache(prefix = "plain", ttl = 60)]
async fn plain(id: u64) -> Item {
    Item { id }
}

#[redis_cache(prefix = "collection", ttl = 60)]
async fn collection(ids: Vec<u64>) -> Vec<Item> {
    ids.into_iter().map(|id| Item { id }).collect()
}

#[redis_cache(prefix = "optional", ttl = 60)]
async fn optional(id: u64) -> Option<Item> {
    Some(Item { id })
}

#[redis_cache(prefix = "optional.path", ttl = 60)]
async fn optional_by_path(id: u64) -> ::std::option::Option<Item> {
    None.or(Some(Item { id }))
}

#[redis_cache(prefix = "fallible", ttl = 60)]
async fn fallible(id: u64) -> Result<Item, NotFound> {
    if id == 0 {
        Err(NotFound)
    } else {
        Ok(Item { id })
    }
}

#[redis_cache(prefix = "fallible-alias", ttl = 60)]
async fn fallible_alias(id: u64) -> AppResult<Item> {
    Ok(Item { id })
}

#[redis_cache(prefix = "fallible_optional", ttl = 60)]
async fn fallible_optional(id: u64) -> Result<Option<Item>, NotFound> {
    Ok(Some(Item { id }))
}

#[redis_cache(prefix = "scalar", ttl = 60)]
async fn scalar(name: &str, flags: (bool, Option<char>)) -> String {
    format!("{name}{flags:?}")
}

fn main() {
    // No cache is installed: every call runs its body.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        assert_eq!(plain(1).await.id, 1);
        assert_eq!(collection(vec![1, 2]).await.len(), 2);
        assert_eq!(optional(2).await.map(|i| i.id), Some(2));
        assert_eq!(optional_by_path(2).await.map(|i| i.id), Some(2));
        assert!(fallible(0).await.is_err());
        assert_eq!(fallible_alias(3).await.map(|i| i.id).ok(), Some(3));
        assert!(matches!(
            fallible_optional(4).await,
            Ok(Some(Item { id: 4 }))
        ));
        assert_eq!(scalar("a", (true, None)).await, "a(true, None)");
    });
}
