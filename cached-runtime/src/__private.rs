//! What `#[redis_cache]` expands to calls. Not a public API: it changes with the macro.

use std::{future::Future, marker::PhantomData, ops::Deref, time::Duration};

use serde::Serialize;

pub use crate::policy::Policy;
pub use crate::shape::{Fallible, FallibleOptional, Optional, Plain, Shape};
#[cfg(feature = "actix")]
pub use crate::shape::{FallibleJson, FallibleOptionalJson, Json, OptionalJson};
pub use serde::Serialize as SerializeTrait;
pub use serde::de::DeserializeOwned;

use crate::{cache::Cache, global, key::KeyBuilder};

/// Accepts what a `cache = …` option may name.
#[diagnostic::on_unimplemented(
    message = "`cache = ...` needs a `cached_runtime::Cache`, found `{Self}`",
    label = "not a `Cache`",
    note = "name a `Cache`, a `&Cache`, an `Arc<Cache>` or a `web::Data<Cache>`, like `cache = state.cache`"
)]
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

/// A key argument: anything `Serialize`. Exists for the error when an argument is not.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of the cache key: it does not implement `serde::Serialize`",
    label = "this argument is part of the cache key",
    note = "leave it out of the key with `skip(...)` in #[redis_cache], or derive `serde::Serialize` for it"
)]
pub trait KeyArg: Serialize {}

impl<T: Serialize + ?Sized> KeyArg for T {}

impl Call {
    /// [`Call::arg`], for the macro: the bound names the argument in the error.
    #[inline]
    pub fn key_arg<T: KeyArg + ?Sized>(self, value: &T) -> Self {
        self.arg(value)
    }

    /// [`Call::value`], for the macro: the bound names the argument in the error.
    #[inline]
    pub fn key_value<T: KeyArg + ?Sized>(self, value: &T) -> Self {
        self.value(value)
    }
}

/// The cached path of a function returning `R` stored as shape `S`.
///
/// `Returns::<S, R>::new().run(call, body)` resolves to the inherent `run` when `S: Shape<R>`;
/// when it is not (the value is not `Serialize` or `DeserializeOwned`), method lookup derefs
/// to [`Uncacheable::run`], whose bound fails with one error about the return type, instead
/// of one error per unsatisfied bound inside the runtime.
#[derive(Debug)]
pub struct Returns<S, R> {
    fallback: Uncacheable<S, R>,
}

impl<S, R> Returns<S, R> {
    /// The shape `S` for a function returning `R`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            fallback: Uncacheable(PhantomData),
        }
    }
}

impl<S: Shape<R>, R> Returns<S, R> {
    /// Runs the cache-aside path: [`Call::run`].
    #[inline]
    pub fn run<F: Future<Output = R>>(self, call: Call, body: F) -> impl Future<Output = R> {
        call.run::<S, R, F>(body)
    }
}

impl<S, R> Deref for Returns<S, R> {
    type Target = Uncacheable<S, R>;
    fn deref(&self) -> &Uncacheable<S, R> {
        &self.fallback
    }
}

/// What [`Returns`] derefs to when its shape does not fit the return type.
#[derive(Debug)]
pub struct Uncacheable<S, R>(PhantomData<fn() -> (S, R)>);

impl<S, R> Uncacheable<S, R> {
    /// Never compiles: the bound fails with the error of [`CacheableReturn`].
    pub fn run<F: Future<Output = R>>(&self, _call: Call, body: F) -> F
    where
        R: CacheableReturn,
    {
        body
    }
}

/// Implemented by nothing: the error for a return type that cannot be cached.
#[diagnostic::on_unimplemented(
    message = "the return type `{Self}` cannot be cached",
    label = "the cached value must implement `serde::Serialize` and `serde::Deserialize`",
    note = "#[redis_cache] stores the value (inside `Option`, `Result` or `Json`) as JSON: derive both for it with `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait CacheableReturn {}

/// Whole seconds of a `ttl = <Duration>` option; zero fails the build.
pub const fn ttl_secs(ttl: Duration) -> u64 {
    match ttl.as_secs() {
        0 => panic!("#[redis_cache]: `ttl` must be at least 1 second"),
        s => s,
    }
}

/// Whole seconds of a `null_ttl = <Duration>` option; zero fails the build.
pub const fn null_ttl_secs(ttl: Duration) -> u64 {
    match ttl.as_secs() {
        0 => panic!("#[redis_cache]: `null_ttl` must be at least 1 second"),
        s => s,
    }
}

/// Milliseconds of a `lock = <Duration>` option; zero fails the build.
pub const fn lock_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_millis();
    if ms == 0 {
        panic!("#[redis_cache]: `lock` must be at least 1 millisecond");
    }
    if ms > u64::MAX as u128 {
        u64::MAX
    } else {
        ms as u64
    }
}

/// Whole seconds of a `jitter = <Duration>` option.
pub const fn jitter_secs(jitter: Duration) -> u64 {
    jitter.as_secs()
}

/// The shape type of an Actix return type, or an error saying which feature it needs.
#[cfg(feature = "actix")]
#[doc(hidden)]
#[macro_export]
macro_rules! __redis_cache_actix_shape {
    ($shape:ident) => {
        $crate::__private::$shape
    };
}

/// The shape type of an Actix return type, or an error saying which feature it needs.
#[cfg(not(feature = "actix"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __redis_cache_actix_shape {
    ($shape:ident) => {
        ::core::compile_error!(
            "#[redis_cache] on a function returning `web::Json` needs the `actix` feature of cached-runtime"
        )
    };
}

pub use crate::__redis_cache_actix_shape as actix_shape;
