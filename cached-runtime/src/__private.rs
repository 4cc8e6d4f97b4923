//! What `#[redis_cache]` expands to calls. Not a public API: it changes with the macro.

use std::future::Future;

use serde::Serialize;

pub use crate::cache::Policy;
pub use crate::shape::{Fallible, FallibleOptional, Optional, Plain, Shape};
#[cfg(feature = "actix")]
pub use crate::shape::{FallibleJson, FallibleOptionalJson, Json, OptionalJson};
pub use serde::Serialize as SerializeTrait;
pub use serde::de::DeserializeOwned;

use crate::{cache::Cache, global, key::KeyBuilder};

/// Accepts what a `cache = …` option may name.
pub trait AsCache {
    /// The cache.
    fn as_cache(&self) -> &Cache;
}

impl AsCache for Cache {
    fn as_cache(&self) -> &Cache {
        self
    }
}

impl<T: AsCache + ?Sized> AsCache for &T {
    fn as_cache(&self) -> &Cache {
        (**self).as_cache()
    }
}

impl AsCache for std::sync::Arc<Cache> {
    fn as_cache(&self) -> &Cache {
        self
    }
}

#[cfg(feature = "actix")]
impl AsCache for actix_web::web::Data<Cache> {
    fn as_cache(&self) -> &Cache {
        self
    }
}

/// One call of a cached function: the cache, the policy and the key being built.
#[derive(Debug)]
pub struct Call {
    cache: Option<(Cache, KeyBuilder)>,
    policy: &'static Policy,
}

impl Call {
    /// A call on the installed default cache (uncached when none is installed).
    pub fn new(policy: &'static Policy) -> Self {
        Self::start(global::default_or_warn(), policy)
    }

    /// A call on a cache named by the `cache = …` option.
    pub fn with_cache(cache: &impl AsCache, policy: &'static Policy) -> Self {
        Self::start(Some(cache.as_cache().clone()), policy)
    }

    fn start(cache: Option<Cache>, policy: &'static Policy) -> Self {
        Self {
            cache: cache.map(|c| {
                let key = c.key(policy.prefix());
                (c, key)
            }),
            policy,
        }
    }

    /// Appends a key argument after a `:`.
    #[inline]
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        if let Some((_, key)) = &mut self.cache {
            key.push_arg(value);
        }
        self
    }

    /// Appends a key template's argument.
    #[inline]
    pub fn value<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        if let Some((_, key)) = &mut self.cache {
            key.push_value(value);
        }
        self
    }

    /// Appends a key template's literal text.
    #[inline]
    pub fn literal(mut self, text: &'static str) -> Self {
        if let Some((_, key)) = &mut self.cache {
            key.push_literal(text);
        }
        self
    }

    /// Runs the cache-aside path, or just `body` when there is no cache or no key.
    pub async fn run<S, R, F>(self, body: F) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let Some((cache, key)) = self.cache else {
            return body.await;
        };
        match key.build() {
            Ok(key) => cache.get_or_fill::<S, R, F>(&key, self.policy, body).await,
            Err(e) => {
                cache.key_failed(self.policy, &e);
                body.await
            }
        }
    }
}
