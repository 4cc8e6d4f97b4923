//! What `#[redis_cache]` expands to calls. Not a public API: it changes with the macro.

use std::{future::Future, ops::Deref, time::Duration};

use serde::Serialize;

pub use crate::cache::handle::AsCache;
pub use crate::cache::policy::{Policy, Site};
pub use crate::cache::shape::select::{
    Level0, Level1, Level2, Level3, Probe, Remote, Selected, Uncacheable,
};
pub use crate::cache::shape::{Fallible, FallibleOptional, Optional, Plain, Shape};
pub use crate::cache::{Cache, key::Key};
pub use crate::error::CacheError;
pub use crate::web::extract::{
    KeyFor, KeyLevel0, KeyLevel1, KeyLevel2, KeyProbe, MustSkip, RiskLevel0, RiskLevel1, RiskProbe,
    SharedState, SkipSharedState, SkipWholeRequest, WholeRequest,
};
pub use crate::web::http::{Conditional, HttpPolicy, JsonResponse, Revalidated};
pub use serde::Serialize as SerializeTrait;
pub use serde::de::DeserializeOwned;

use crate::{
    cache::Cache as CacheHandle,
    cache::global,
    cache::key::{self, KeyBuilder},
};

/// Fails the build with the rule's message when `prefix` is not a valid prefix.
pub const fn check_prefix(prefix: &str) {
    if let Some(message) = key::prefix_error(prefix) {
        panic!("{}", message);
    }
}

/// Fails the build with the rule's message when `name` cannot be a header name in `vary`.
pub const fn check_header_name(name: &str) {
    if let Some(message) = crate::cache::vary::header_name_error(name) {
        panic!("{}", message);
    }
}

/// Fails the build with the rule's message when `value` is not a `revalidate` policy.
pub const fn check_cache_control(value: &str) {
    if let Some(message) = crate::web::http::cache_control_error(value) {
        panic!("{}", message);
    }
}

/// Fails the build with the rule's message when `template` is not a valid key template.
pub const fn check_template(template: &str) {
    if let Some(message) = key::template_error(template) {
        panic!("{}", message);
    }
}

/// The policy of a macro-cached function; every value was validated at compile time.
/// `null_ttl` 0 means the cache's default.
pub const fn policy(
    prefix: &'static str,
    ttl: u64,
    null_ttl: u64,
    jitter: u64,
    version: u32,
) -> Policy {
    Policy::from_macro(prefix, ttl, null_ttl, jitter, version)
}

/// `policy` with the `lock` option: the lock TTL in milliseconds.
pub const fn with_lock(policy: Policy, lock_ms: u64) -> Policy {
    policy.with_lock_ms(lock_ms)
}

/// `policy` with the `stale…`, `fail_safe…`, `soft_timeout`, `hard_timeout` and
/// `early_refresh` options: the window in seconds, durations in milliseconds (0: unset).
#[allow(clippy::too_many_arguments)] // one per attribute option, all validated by the macro
pub const fn with_stale(
    policy: Policy,
    window: u64,
    fail_safe: bool,
    throttle_ms: u64,
    while_revalidate: bool,
    soft_timeout_ms: u64,
    hard_timeout_ms: u64,
    early: bool,
) -> Policy {
    // The macro has validated every value at compile time.
    policy.with_stale(crate::cache::stale::Stale {
        window,
        fail_safe,
        throttle_ms,
        while_revalidate,
        soft_timeout_ms,
        hard_timeout_ms,
        early,
    })
}

/// `policy` with the `near` option.
pub const fn with_near(policy: Policy, on: bool) -> Policy {
    policy.with_near(on)
}

/// What a revalidating function answers beside its response.
pub const fn http_policy(cache_control: &'static str, vary: &'static str) -> HttpPolicy {
    HttpPolicy::new(cache_control, vary)
}

/// The site of `function` in `module` (`module_path!()`).
pub const fn site(module: &'static str, function: &'static str) -> Site {
    Site::new(module, function)
}

/// One call of a cached function: the cache, the policy and the key being built.
#[derive(Debug)]
pub struct Call {
    cache: Option<(CacheHandle, KeyBuilder)>,
    policy: &'static Policy,
}

impl Call {
    /// A call on the installed default cache (uncached when none is installed).
    #[inline]
    pub fn new(policy: &'static Policy, site: &'static Site) -> Self {
        site.register(policy.prefix());
        Self::start(global::default_or_warn(), policy)
    }

    /// A call on a cache named by the `cache = …` option.
    #[inline]
    pub fn with_cache(cache: &impl AsCache, policy: &'static Policy, site: &'static Site) -> Self {
        site.register(policy.prefix());
        Self::start(Some(cache.as_cache().clone()), policy)
    }

    /// The key of one call, for the companion functions (`item_key`, `item_invalidate`).
    pub fn companion(cache: &CacheHandle, policy: &'static Policy) -> Self {
        Self::start(Some(cache.clone()), policy)
    }

    fn start(cache: Option<CacheHandle>, policy: &'static Policy) -> Self {
        Self {
            cache: cache.map(|c| {
                // The macro checked the prefix at compile time.
                let mut key = KeyBuilder::unchecked(c.namespace(), policy.prefix());
                key.push_marker(policy.version, None);
                (c, key)
            }),
            policy,
        }
    }

    /// Tells a generic function's instantiations apart: the names of the type parameters that
    /// reach its return type or a skipped argument go into the version segment.
    #[inline]
    pub fn types(mut self, names: &[&'static str]) -> Self {
        if let Some((_, key)) = &mut self.cache {
            key.push_marker(self.policy.version, Some(key::type_hash(names)));
        }
        self
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

    /// Starts one of the `tags = [...]` templates.
    #[inline]
    pub fn tag(mut self) -> Self {
        if let Some((_, key)) = &mut self.cache {
            key.push_tag_start();
        }
        self
    }

    /// Appends a tag template's literal text.
    #[inline]
    pub fn tag_literal(mut self, text: &'static str) -> Self {
        if let Some((_, key)) = &mut self.cache {
            key.push_tag_literal(text);
        }
        self
    }

    /// Appends a tag template's argument.
    #[inline]
    pub fn tag_value<T: KeyArg + ?Sized>(mut self, value: &T) -> Self {
        if let Some((_, key)) = &mut self.cache {
            key.push_tag_value(value);
        }
        self
    }

    /// Invalidates the tags of the finished key (the `{name}_invalidate_tags` companion).
    pub async fn invalidate_tags(self) -> Result<u64, CacheError> {
        let Some((cache, key)) = self.cache else {
            return Err(CacheError::Config("no cache".to_owned()));
        };
        let key = key.build()?;
        let namespace = cache.namespace();
        let texts = key.tags.keys().iter().filter_map(|t| {
            t.strip_prefix(namespace)?
                .strip_prefix(crate::cache::tags::TAG_MARK)
        });
        cache.invalidate_tags(texts).await
    }

    /// Appends the segment of `vary(source = [headers])`: a hash of those headers' values.
    #[inline]
    pub fn vary<V: crate::cache::vary::VarySource + ?Sized>(
        mut self,
        source: &V,
        headers: &'static [&'static str],
    ) -> Self {
        if let Some((_, key)) = &mut self.cache
            && !headers.is_empty()
        {
            key.push_arg(crate::cache::vary::segment(source, headers).as_str());
        }
        self
    }

    /// Deletes every entry of the finished key, whatever the headers `vary` adds to it
    /// (companion functions of a function with `vary`): `SCAN` + `UNLINK` of `{key}:*`.
    pub async fn invalidate_variants(self) -> Result<u64, CacheError> {
        let Some((cache, key)) = self.cache else {
            return Err(CacheError::Config("no cache".to_owned()));
        };
        let key = key.build()?;
        let relative = key
            .as_str()
            .strip_prefix(cache.namespace())
            .unwrap_or(key.as_str());
        let mut pattern = String::with_capacity(relative.len() + 2);
        crate::cache::key::glob_escape(relative, &mut pattern);
        // `prefix:` alone when the key has no argument before the vary segments.
        if !pattern.ends_with(':') {
            pattern.push(':');
        }
        pattern.push('*');
        cache.invalidate_pattern(&pattern).await
    }

    /// The finished key (companion functions).
    pub fn key(self) -> Result<Key, CacheError> {
        match self.cache {
            Some((_, key)) => key.build(),
            None => Err(CacheError::Config("no cache".to_owned())),
        }
    }

    /// Deletes the entry of the finished key (companion functions).
    pub async fn invalidate(self) -> Result<bool, CacheError> {
        match self.cache {
            Some((cache, key)) => cache.invalidate(&key.build()?).await,
            None => Err(CacheError::Config("no cache".to_owned())),
        }
    }

    /// The revalidating path of `revalidate`: [`Cache::respond`](crate::Cache), or just
    /// `body` when there is no cache or no key.
    pub async fn revalidate<S, R, F>(
        self,
        conditional: Conditional,
        http: &'static HttpPolicy,
        body: F,
    ) -> Revalidated<R>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let Some((cache, key)) = self.cache else {
            return Revalidated::uncached(body.await, http);
        };
        match key.build() {
            Ok(key) => {
                cache
                    .respond::<S, R, F>(&key, self.policy, &conditional, http, body)
                    .await
            }
            Err(e) => {
                cache.key_failed(self.policy, &e);
                Revalidated::uncached(body.await, http)
            }
        }
    }

    /// Runs the cache-aside path without the near cache (a value type that is not `Clone`),
    /// or just `body` when there is no cache or no key.
    pub async fn run<S, R, F>(self, body: F) -> R
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let Some((cache, key)) = self.cache else {
            return body.await;
        };
        match key.build() {
            Ok(key) => {
                cache
                    .get_or_fill_remote::<S, R, F>(&key, self.policy, body)
                    .await
            }
            Err(e) => {
                cache.key_failed(self.policy, &e);
                body.await
            }
        }
    }

    /// [`Call::run_near`] with a body that may move to the background (the options
    /// `stale_while_revalidate`, `soft_timeout`, `early_refresh`): `Send + 'static`.
    pub async fn run_refresh<S, R, F>(self, body: F) -> R
    where
        S: Shape<R> + 'static,
        S::Value: Clone + Send + Sync + 'static,
        R: Send + 'static,
        F: Future<Output = R> + Send + 'static,
    {
        let Some((cache, key)) = self.cache else {
            return body.await;
        };
        match key.build() {
            Ok(key) => {
                cache
                    .get_or_refresh::<S, R, F>(&key, self.policy, body)
                    .await
            }
            Err(e) => {
                cache.key_failed(self.policy, &e);
                body.await
            }
        }
    }

    /// Runs the cache-aside path, near cache included, or just `body` when there is no cache
    /// or no key.
    pub async fn run_near<S, R, F>(self, body: F) -> R
    where
        S: Shape<R>,
        S::Value: Clone + Send + Sync + 'static,
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

/// A companion's `vary` source, selected like [`KeyProbe`]: a source that is not a
/// [`VarySource`](crate::cache::vary::VarySource) adds nothing here, as the getter already fails to
/// compile with the error about it.
#[derive(Debug)]
pub struct VaryProbe<'a, V: ?Sized>(pub &'a V);

/// A [`VarySource`](crate::cache::vary::VarySource): its segment.
pub trait VaryLevel1 {
    /// [`Call::vary`].
    fn __cached_vary(&self, call: Call, headers: &'static [&'static str]) -> Call;
}

/// Anything else: nothing (the getter reports it).
pub trait VaryLevel0 {
    /// Returns `call` unchanged.
    fn __cached_vary(&self, call: Call, headers: &'static [&'static str]) -> Call;
}

impl<V: crate::cache::vary::VarySource + ?Sized> VaryLevel1 for &VaryProbe<'_, V> {
    #[inline]
    fn __cached_vary(&self, call: Call, headers: &'static [&'static str]) -> Call {
        call.vary(self.0, headers)
    }
}

impl<V: ?Sized> VaryLevel0 for VaryProbe<'_, V> {
    #[inline]
    fn __cached_vary(&self, call: Call, _headers: &'static [&'static str]) -> Call {
        call
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

impl<S, R> Selected<S, R>
where
    S: Shape<R>,
    S::Value: Clone + Send + Sync + 'static,
{
    /// Runs the cache-aside path with the near cache: [`Call::run_near`].
    ///
    /// A value that cannot be cloned into the near cache derefs to [`Remote::run`]. When `S`
    /// does not fit `R` at all (the value is not `Serialize` or `DeserializeOwned`), method
    /// lookup derefs on to [`Uncacheable::run`], whose bound fails with one error about the
    /// return type, instead of one error per unsatisfied bound inside the runtime.
    #[inline]
    pub fn run<F: Future<Output = R>>(
        &self,
        call: Call,
        body: F,
    ) -> impl Future<Output = R> + use<S, R, F> {
        call.run_near::<S, R, F>(body)
    }
}

impl<S, R> Selected<S, R>
where
    S: Shape<R> + 'static,
    S::Value: Clone + Send + Sync + 'static,
    R: Send + 'static,
{
    /// Runs the cache-aside path with a body that may move to the background:
    /// [`Call::run_refresh`]. The body of a function with `stale_while_revalidate`,
    /// `soft_timeout` or `early_refresh` must be `Send + 'static` (owned arguments).
    #[inline]
    pub fn run_refresh<F: Future<Output = R> + Send + 'static>(
        &self,
        call: Call,
        body: F,
    ) -> impl Future<Output = R> + use<S, R, F> {
        call.run_refresh::<S, R, F>(body)
    }
}

impl<S: Shape<R>, R> Remote<S, R> {
    /// Runs the cache-aside path without the near cache: [`Call::run`].
    #[inline]
    pub fn run<F: Future<Output = R>>(
        &self,
        call: Call,
        body: F,
    ) -> impl Future<Output = R> + use<S, R, F> {
        call.run::<S, R, F>(body)
    }
}

impl<S: Shape<R>, R> Selected<S, R> {
    /// Runs the revalidating path: [`Call::revalidate`], after
    /// [`check_json_response`](Self::check_json_response).
    #[inline]
    pub fn revalidate<F: Future<Output = R>>(
        self,
        call: Call,
        conditional: Conditional,
        http: &'static HttpPolicy,
        body: F,
    ) -> impl Future<Output = Revalidated<R>> {
        call.revalidate::<S, R, F>(conditional, http, body)
    }
}

impl<S, R> Selected<S, R> {
    /// Fails the build, once and with [`JsonResponse`]'s error, unless the shape's value is
    /// the JSON body of the response. The expansion calls it before
    /// [`revalidate`](Self::revalidate).
    #[inline]
    pub fn check_json_response(&self)
    where
        S: JsonResponse,
    {
    }
}

impl<S, R> Deref for Selected<S, R> {
    type Target = Remote<S, R>;
    fn deref(&self) -> &Remote<S, R> {
        &self.remote
    }
}

impl<S, R> Deref for Remote<S, R> {
    type Target = Uncacheable<S, R>;
    fn deref(&self) -> &Uncacheable<S, R> {
        &self.fallback
    }
}

impl<S, R> Uncacheable<S, R> {
    /// Never compiles: the bound fails with the error of [`CacheableReturn`].
    pub fn run<F: Future<Output = R>>(&self, _call: Call, body: F) -> F
    where
        R: CacheableReturn,
    {
        body
    }
}

impl<S, R> Uncacheable<S, R> {
    /// Never compiles: the bound fails with the error of [`CacheableReturn`].
    pub async fn revalidate<F: Future<Output = R>>(
        &self,
        _call: Call,
        _conditional: Conditional,
        http: &'static HttpPolicy,
        body: F,
    ) -> Revalidated<R>
    where
        R: CacheableReturn,
    {
        Revalidated::uncached(body.await, http)
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

/// Whole seconds of a `stale = <Duration>` option; zero fails the build.
pub const fn stale_secs(window: Duration) -> u64 {
    match window.as_secs() {
        0 => panic!("#[redis_cache]: `stale` must be at least 1 second"),
        s => s,
    }
}

/// Milliseconds of a `fail_safe_throttle`, `soft_timeout` or `hard_timeout` option given as a
/// `Duration`; zero fails the build.
pub const fn stale_ms(duration: Duration) -> u64 {
    let ms = duration.as_millis();
    if ms == 0 {
        panic!("#[redis_cache]: a stale option's duration must be at least 1 millisecond");
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

/// The shape module, for `shape = …` paths in generated code.
pub use crate::web::shape as shapes;
