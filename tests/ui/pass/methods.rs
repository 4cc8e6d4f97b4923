//! Methods, associated and generic functions, lifetimes, where clauses, visibility and
//! attributes: the signature is kept as written.

use std::{fmt::Debug, sync::Arc};

use cached_runtime::{Cache, redis_cache};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
}

struct Repo {
    cache: Cache,
    offset: u64,
}

impl Repo {
    /// Shared across instances: `skip(self)`.
    #[redis_cache(prefix = "repo.item", ttl = 60, cache = self.cache, skip(self))]
    pub(crate) async fn item(&self, id: u64) -> Option<Item> {
        Some(Item {
            id: id + self.offset,
        })
    }

    /// Keyed on a field of `self`.
    #[redis_cache(prefix = "repo.owned", ttl = 60, key = "{self.offset}:{id}")]
    async fn owned(self: Arc<Self>, id: u64) -> Item {
        Item {
            id: id + self.offset,
        }
    }

    /// An associated function.
    #[redis_cache(prefix = "repo.assoc", ttl = 60)]
    async fn assoc(id: u64) -> Item {
        Item { id }
    }

    #[redis_cache(prefix = "repo.self_type", ttl = 60)]
    async fn with_self_type(
        id: u64,
    ) -> Result<Option<Item>, Box<dyn std::error::Error + Send + Sync>> {
        let _ = std::mem::size_of::<Self>();
        Ok(Some(Item { id }))
    }
}

trait Catalog {
    async fn name(&self, id: u64) -> String;

    /// A default method body can be cached.
    #[redis_cache(prefix = "catalog.title", ttl = 60, skip(self))]
    async fn title(&self, id: u64) -> String {
        self.name(id).await.to_uppercase()
    }
}

impl Catalog for Repo {
    /// A trait impl may hold only the trait's items: no companions.
    #[redis_cache(prefix = "catalog.name", ttl = 60, skip(self), companions = false)]
    async fn name(&self, id: u64) -> String {
        format!("item {id}")
    }
}

#[redis_cache(prefix = "generic", ttl = 60)]
async fn generic<K: Serialize + Send, V>(key: K, value: V) -> Vec<V>
where
    V: Serialize + DeserializeOwned + Clone,
{
    let _ = &key;
    vec![value.clone(), value]
}

#[redis_cache(prefix = "lifetimes", ttl = 60)]
async fn lifetimes<'a, 'b: 'a>(name: &'a str, tags: &'b [&'b str]) -> String
where
    'b: 'a,
{
    format!("{name}{}", tags.join(","))
}

#[redis_cache(prefix = "impl_arg", ttl = 60)]
async fn impl_arg(id: impl Serialize + Debug) -> String {
    format!("{id:?}")
}

/// Documented.
#[cfg(not(any()))]
#[allow(clippy::needless_return)]
#[redis_cache(prefix = "attrs", ttl = 60)]
pub(crate) async fn attrs(mut id: u64) -> u64 {
    #![allow(unused_mut)]
    id += 1;
    return id;
}

#[cfg(any())]
#[redis_cache(prefix = "attrs", ttl = 60)]
pub(crate) async fn attrs(id: u64) -> u64 {
    compile_error!("configured out")
}

#[redis_cache(prefix = "unsafe_fn", ttl = 60)]
async unsafe fn unsafe_fn(ptr: usize) -> u64 {
    ptr as u64
}

/// A type parameter that reaches the return type is named in the key.
#[redis_cache(prefix = "typed", ttl = 60)]
async fn typed<T: DeserializeOwned + Serialize + Default>(id: u64) -> Option<T> {
    let _ = id;
    Some(T::default())
}

fn main() {
    let _ = typed::<u8>;
    let _ = impl_arg(1u8);
    let _ = (
        Repo::item,
        Repo::owned,
        Repo::assoc,
        Repo::with_self_type,
    );
    let _ = (
        <Repo as Catalog>::title,
        generic::<u8, u8>,
        lifetimes,
        attrs,
        unsafe_fn,
    );
}
