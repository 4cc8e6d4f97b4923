//! The `#[redis_cache]` attribute. Depend on `cached-runtime`, which re-exports it as
//! `cached_runtime::redis_cache` and holds everything the expansion calls.
//!
//! The pipeline: `args` parses the options and the function as written, `validate` checks
//! every rule in one place, `expand` emits the signature unchanged around one runtime call.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use proc_macro::TokenStream;

mod args;
mod expand;
mod rate_limit;
mod validate;

/// Cache-aside over Redis for an `async fn`: on a call, build a key from the arguments and
/// `GET` it; on a hit return the stored value without running the body; on a miss run the
/// body once, store its result for `ttl` seconds and return it.
///
/// ```
/// use cached_runtime::redis_cache;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Item { id: u64 }
/// # struct Db;
/// # impl Db { async fn item(&self, id: u64) -> Option<Item> { None } }
///
/// #[redis_cache(prefix = "item", ttl = 600, null_ttl = 30, skip(db))]
/// async fn item(db: &Db, id: u64) -> Option<Item> {
///     db.item(id).await
/// }
/// ```
///
/// A Redis that is down or slow never fails a call: the body runs and the failure is
/// counted and logged. The body's own errors and panics propagate unchanged.
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `prefix = "item"` | Required. The key prefix of this function's entries: non-empty, only ASCII letters, digits and `_ - . /`. Give every cached function its own. |
/// | `ttl = 600` | Required. How long entries live: whole seconds as an integer literal (at least 1), or any constant `Duration` expression (`ttl = ITEM_TTL`, `ttl = Duration::from_secs(600)`) that does not use `Self` or the function's generics; a `Duration` under one second fails the build. |
/// | `null_ttl = 30` | TTL of the null marker stored for absent results (`None`, `Ok(None)`), in the same forms as `ttl`; the cache's default when not given. |
/// | `jitter = 60` | Random extra seconds, `0..=jitter`, added to every TTL so entries filled together do not expire together. |
/// | `skip(state, pool)` | Arguments left out of the key. A request or header map left out warns: see `vary`. |
/// | `skip_all` | Every argument left out of the key: one entry per function. |
/// | `key = "{id}:{lang}"` | A key template: the part after `prefix:`. `{name}` is an argument, `{q.page}` or `{path.0}` a field of one, `{self.tenant}` a field of the receiver; arguments the template does not name are left out, so `skip` is not needed (and only `skip(self)` is allowed) with it. Two placeholders need a `:` between them (`{a}-{b}` is rejected: `("x-y", "z")` and `("x", "y-z")` would share a key), and the text may not use a character the key encoding reserves (whitespace and `% , ( ) = ~ ! # * ? [ ] \ { } "`) except `:`. The rule is `cached_runtime::key::template_error`, evaluated at compile time. |
/// | `cache = expr` | The cache to use instead of the one installed with `cached_runtime::install`: a `Cache`, `&Cache`, `Arc<Cache>` or `web::Data<Cache>`, evaluated on each call before the body runs, so it may use the arguments (`cache = state.cache`, `cache = self.cache`). |
/// | `version = 2` | Goes into the key (`item:=2:…`), so binaries of two versions keep their entries apart during a rolling deploy and each hits its own; bump it when the cached type changes shape. |
/// | `shape = cached_runtime::shape::Plain` | The shape to store the return type as, instead of the one selected from its type (below): any type implementing `cached_runtime::shape::Shape<R>`. |
/// | `companions = false` | No companion functions (below): needed in a trait `impl`, which may hold only the trait's items. |
/// | `crate = "facade::cache"` | The path of the runtime crate when it is renamed or re-exported, instead of `::cached_runtime`. |
/// | `vary(req = ["authorization"])` | Request headers the result depends on, read from the argument `req` (an Actix `HttpRequest`, or an axum `HeaderMap`, `Request` or `request::Parts`), go into the key as a hash of their values; the argument itself is left out. `vary(req = [])` says the result depends on none of its headers. Header names are lowercase; checked at compile time. See *Per-caller results* below. |
/// | `revalidate` | HTTP revalidation for an Actix or axum handler returning a framework's `Json<T>` (inside `Option`/`Result` or not): the response carries `ETag`, `Cache-Control` and `X-Cache: HIT\|MISS`, a matching `If-None-Match` gets `304 Not Modified` (no JSON decoded), and `Cache-Control: no-cache` on the request refreshes the entry. `revalidate = "public, max-age"` (or `"no-cache"`, …) replaces the default `Cache-Control: private, max-age=<seconds the entry has left>`. See *HTTP revalidation* below. |
/// | `near = false` | Never answered from the cache's near cache (`CacheBuilder::near_cache`; for a `Policy` built by hand, `Policy::near(false)`): every call reads Redis. Without it, a function whose value type is `Clone + Send + Sync + 'static` is answered from process memory when the cache has a near cache; other value types always read Redis. (`local`, its earlier name, is a compile error that says so.) |
/// | `stale = 600` | Keeps entries in Redis this long past their TTL (whole seconds, or a `Duration` expression), to be served stale by the options below; freshness is Redis's remaining TTL minus the window. Every option below needs it (a compile error says so). |
/// | `fail_safe` | When the body errors or panics, answers the stale value instead (within the window) and leaves the entry as it was; with the near cache, its entries also answer stale while Redis cannot be reached. |
/// | `fail_safe_throttle = 5` | `fail_safe`, and after a failure the key's calls get the stale value without running the body for this long. |
/// | `stale_while_revalidate` | After the TTL, answers the stale value at once and refreshes the entry in the background, once per key across processes (the fill lock). The body must be `Send + 'static` (owned arguments); not with `revalidate`. |
/// | `soft_timeout = Duration::from_millis(200)` | With a stale value, waits at most this long for the body, then answers stale while the body finishes in the background and stores its result. Same bounds as `stale_while_revalidate`. |
/// | `hard_timeout = 10` | A background body is dropped (nothing stored, its lock released) after this long; needs `stale_while_revalidate`, `soft_timeout` or `early_refresh`, and must be longer than `soft_timeout`. |
/// | `early_refresh` | Refreshes hot entries in the background shortly before their TTL ends, chosen at random (XFetch, weighted by the last body's duration). Same bounds as `stale_while_revalidate`. |
/// | `tags = ["category:{category}", "user:{user.id}"]` | Tags each entry carries, as templates with the `key` template's rules; a placeholder may name only what the key is made of. `cache.invalidate_tags(["category:books"])` drops every entry carrying a tag, of every function, with one command per tag (no scan), on one server and on a cluster; the companion `{name}_invalidate_tags(cache, args…)` drops the tags of one call. A warm read from the near cache sends nothing more; from Redis, the tags' versions come in the same round trip. See `Cache::invalidate_tags`. |
/// | `lock = true` | Across processes, one caller fills a missing entry under a Redis lock (`SET NX PX`, released only by its owner) while the others poll for its value. `lock = true` holds the lock at most 10 s; `lock = 3` or `lock = Duration::from_millis(500)` sets that TTL. Waiters give up and run the body themselves after the lock TTL, so a crashed holder blocks nobody for longer. In-process single-flight needs no option: it is on for every cache unless turned off there. |
///
/// An unknown, repeated or malformed option is a compile error that lists the valid ones.
///
/// # Return types
///
/// The shape is selected from the return type's *type*, through traits, not from how it is
/// spelled: aliases (`io::Result<T>`, `type Maybe<T> = Option<T>`) are what they alias, and a
/// user type named `SearchResult<T>` is a plain value.
///
/// | return type | stored |
/// |---|---|
/// | `T` | every result |
/// | `Option<T>` | `Some` as the value, `None` as the null marker (with `null_ttl`) |
/// | `Result<T, E>` | `Ok` only; `Err` is returned as is and never stored |
/// | `Result<Option<T>, E>` | `Ok(Some)` as the value, `Ok(None)` as the null marker, `Err` never |
/// | `web::Json<T>`, and inside `Option`/`Result` as above | `T` (the `actix` feature) |
/// | `axum::Json<T>`, and inside `Option`/`Result` as above | `T` (the `axum` feature) |
///
/// `T` must implement `serde::Serialize` and `serde::Deserialize` (owned); when it does not,
/// the error points at the return type. `()` and `impl Trait` returns are compile errors:
/// there is nothing to store, or nothing to decode into. `shape = …` overrides the selection.
///
/// # Keys
///
/// ```text
/// {namespace}{prefix}:{arguments}                      version 0, not generic
/// {namespace}{prefix}:={version}:{arguments}           version ≥ 1
/// {namespace}{prefix}:={version}.{types}:{arguments}   generic
/// ```
///
/// Each key argument is encoded as the `cached_runtime::key` module documents, joined by `:`
/// in signature order (or laid into the `key` template). `cache.invalidate_prefix("item")`
/// deletes the entries of every version.
///
/// - **Receivers.** A method says what `self` contributes: `skip(self)` shares entries
///   across instances (your explicit choice), or a template names the fields that tell
///   instances apart (`key = "{self.tenant}:{id}"`); otherwise it is a compile error on the
///   receiver. `&mut self` is a compile error: a hit skips the body and its mutation.
/// - **Generics.** Every type parameter that reaches the return type or an argument left out
///   of the key (and `Self`, with `skip(self)`) is named in the version segment, by a hash of
///   its `std::any::type_name`: `get::<User>(1)` and `get::<Order>(1)` never share an entry.
///   `type_name` may change between compiler releases; then such entries are missed once,
///   never misread.
/// - Key arguments need `serde::Serialize`; when one lacks it, the error points at it and
///   suggests `skip(...)`. A framework extractor (Actix's `web::Path<T>`, `web::Query<T>`,
///   `web::Json<T>`, `web::Form<T>`; axum's `Path<T>`, `Query<T>`, `Json<T>`, `Form<T>`) is
///   keyed on the value it holds, recognised by its type. Request context (`State<S>`,
///   `Extension<T>`, `web::Data<T>`, `HttpRequest`, `HeaderMap`, `Request`) must be skipped:
///   the error on it says so.
/// - An argument bound by a pattern is keyed on the names the pattern binds, in order:
///   `Path((id, lang)): Path<(u64, String)>` on `id` and `lang`, `Query(Page { page, .. })`
///   on `page` (the fields it does not bind are invisible to the body), `_: T` on nothing.
///   `skip(state)` skips a bound name, as for `State(state): State<App>`, and
///   `cache = state.cache` may use one. (Actix's `web::Path` has a private field: bind it to
///   a name; `web::Query(q)`, `web::Json(body)` and `web::Form(f)` destructure.)
/// - Two functions declaring one prefix in a process: the second to be called logs an error
///   naming both.
///
/// # Per-caller results
///
/// A handler that reads the caller from the request (a token, a cookie, a tenant header) and
/// leaves the request out of the key serves the first caller's result to everyone. `vary`
/// puts what the result depends on into the key; leaving a request or header map out of the
/// key without it is a warning on that argument (a `deprecated` note, as a stable attribute
/// macro can emit no other warning).
///
/// ```text
/// // Wrong: every caller gets the orders of whoever called first (and a warning says so).
/// #[redis_cache(prefix = "my.orders", ttl = 60, skip(headers))]
/// async fn my_orders(headers: HeaderMap) -> Json<Vec<Order>> { orders_of(user(&headers)) }
///
/// // Right: one entry per `Authorization` value, hashed, so no credential reaches Redis.
/// #[redis_cache(prefix = "my.orders", ttl = 60, vary(headers = ["authorization"]))]
/// async fn my_orders(headers: HeaderMap) -> Json<Vec<Order>> { orders_of(user(&headers)) }
/// ```
///
/// The key gets one segment per `vary` argument: 32 hex digits of the SHA-256 of the
/// headers' names and values, absent, empty and repeated headers told apart. The companion
/// `{name}_key` then takes the request too; `{name}_invalidate` cannot know every caller's
/// headers and deletes the entries of all of them (`SCAN` + `UNLINK` of `{key}:*`). When the
/// caller is already an extracted value (`Extension(user): Extension<User>`), key on it
/// like any argument instead.
///
/// # HTTP revalidation
///
/// With `revalidate` the handler's signature changes in two ways, so that it can answer
/// `304` without producing its return type: it takes a
/// [`Conditional`](../cached_runtime/http/struct.Conditional.html) first (an extractor of the
/// request's `If-None-Match` and `Cache-Control`), and returns
/// [`Revalidated<R>`](../cached_runtime/http/struct.Revalidated.html) for the written `R`
/// (`IntoResponse` for axum, `Responder` for Actix). Route it as it is; call it directly with
/// `Conditional::default()`. The body and the companion functions are unchanged.
///
/// ```text
/// #[redis_cache(prefix = "item", ttl = 600, skip(app), cache = app.cache, revalidate)]
/// async fn item(State(app): State<App>, Path(id): Path<u64>) -> Result<Json<Item>, ApiError>
/// // becomes
/// async fn item(__cached_http: cached_runtime::http::Conditional, State(app): State<App>,
///     Path(id): Path<u64>) -> cached_runtime::http::Revalidated<Result<Json<Item>, ApiError>>
/// ```
///
/// A hit answers the stored JSON as the body, byte for byte, with the entity tag stored
/// beside it (the SHA-256 of that JSON, computed once when the entry was filled): the same
/// tag from every process, and `304` for it without decoding anything. A miss stores the
/// result and answers the stored form the same way, with the new tag. An `Err` or an absent
/// result is the handler's own response. `Cache-Control: no-cache` on the request recomputes
/// and replaces the entry (any client can ask for it; strip the header in front of the
/// service if that load matters). With `vary`, the response also says `Vary: <the headers>`.
///
/// # Companion functions
///
/// Next to `fn item` the attribute generates, with the same visibility and generics,
///
/// ```text
/// fn item_key(cache: &Cache, id: &u64) -> Result<Key, CacheError>
/// async fn item_invalidate(cache: &Cache, id: &u64) -> Result<bool, CacheError>
/// ```
///
/// and, with `tags`, `async fn item_invalidate_tags(cache: &Cache, id: &u64) -> Result<u64,
/// CacheError>`, which invalidates the tags of that call (every entry carrying one of them),
///
/// taking the key's arguments by reference (an extractor's inner value: `&u64` for a
/// `web::Path<u64>`; a name bound by a pattern by its type where the pattern shows it, `&u64`
/// for `Path(id): Path<u64>`, and any `Serialize` value where it does not), and `&self` first
/// when the key names `self` fields. A writer names the
/// function, never its prefix, argument order or version. In an `impl` block they are
/// associated functions (`Repo::item_key`); put `#[redis_cache]` above a routing attribute
/// (`#[get]`) so they stay module items; in a trait `impl` turn them off with
/// `companions = false`.
///
/// ```
/// use cached_runtime::{Cache, redis_cache};
///
/// #[redis_cache(prefix = "item", ttl = 600, cache = cache, skip(cache))]
/// async fn item(cache: &Cache, id: u64) -> Option<String> {
///     Some(format!("item {id}"))
/// }
///
/// struct Repo {
///     tenant: u32,
/// }
///
/// impl Repo {
///     #[redis_cache(prefix = "repo.item", ttl = 600, key = "{self.tenant}:{id}")]
///     async fn item(&self, id: u64) -> Option<String> {
///         Some(format!("{id} of {}", self.tenant))
///     }
/// }
///
/// # async fn update(cache: &Cache, repo: &Repo) -> Result<(), cached_runtime::CacheError> {
/// // After an update:
/// item_invalidate(cache, &42).await?;
/// repo.item_invalidate(cache, &42).await?;
/// assert_eq!(item_key(cache, &42)?.as_str(), format!("{}item:42", cache.namespace()));
/// # Ok(()) }
/// ```
///
/// # Where it applies
///
/// Free functions, associated functions and methods (also trait methods with a default
/// body; in a trait `impl`, with `companions = false`), generic functions, lifetimes and `where` clauses, any visibility, doc comments,
/// `#[cfg]` and other attributes, `#[actix_web::get("/...")]` stacked above or below. Not
/// `const fn`, `extern fn`, functions that are not `async` (a method rewritten by
/// `#[async_trait]` gets an error saying what to do instead), or declarations without a body.
/// The body is kept as tokens: a syntax error in it is reported as that syntax error.
/// The future is `Send` whenever the body's future is.
///
/// # Expansion
///
/// The signature is emitted as written; only the body changes, and it appears once, as an
/// `async move` block. The key is built from borrowed arguments before the body takes them.
/// For
///
/// ```text
/// #[redis_cache(prefix = "item", ttl = 600)]
/// pub async fn item(id: u64, path: web::Path<String>) -> Option<Item> { body }
/// ```
///
/// the attribute emits (the `__cached…` names are hygienic: the body cannot see them), besides
/// the companion functions,
///
/// ```text
/// pub async fn item(id: u64, path: web::Path<String>) -> Option<Item> {
///     const _: () = ::cached_runtime::__private::check_prefix("item");
///     use ::cached_runtime::__private::{KeyLevel0 as _, KeyLevel1 as _, Level0 as _, /* … */};
///     static __CACHED_POLICY: ::cached_runtime::__private::Policy =
///         ::cached_runtime::__private::policy("item", 600, 0, 0, 0);
///     static __CACHED_SITE: ::cached_runtime::__private::Site =
///         ::cached_runtime::__private::site(::core::module_path!(), "item");
///     let __cached_call = ::cached_runtime::__private::Call::new(&__CACHED_POLICY, &__CACHED_SITE)
///         .key_arg((&&::cached_runtime::__private::KeyProbe(&id)).__cached_key())
///         .key_arg((&&::cached_runtime::__private::KeyProbe(&path)).__cached_key());
///     let __cached_select = (&&&&::cached_runtime::__private::Probe::<Option<Item>>::NEW).__cached_select();
///     __cached_select.run(__cached_call, async move { body }).await
/// }
/// ```
///
/// With `cache = expr` the call starts with `Call::with_cache(&(expr), …)`; with
/// `key = "v1:{id}"` the parts are `.literal("v1:").key_value(…)` and the template is checked
/// by `const _: () = check_template("v1:{id}");`; a generic function adds
/// `.types(&[type_name::<T>()])`; `lock = 3` wraps the policy in `with_lock(…, 3000)` and
/// `near = false` in `with_near(…, false)`, both `const fn`s of `__private` like the rest.
#[proc_macro_attribute]
pub fn redis_cache(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::redis_cache(args.into(), item.into()).into()
}

/// Rate-limits a handler: before its body runs, the client is charged against a
/// `cached_runtime::ratelimit::RateLimiter`; a refused request gets the limiter's refusal
/// (`429` with a problem body, or `503` when the limiter fails closed) without running the
/// body, and an allowed one gets the `RateLimit` fields on its answer. Needs the runtime's
/// `ratelimit` feature (and `actix` or `axum` for their response types).
///
/// ```text
/// #[rate_limit(limiter = state.limiter)]
/// async fn search(state: web::Data<AppState>, req: HttpRequest, q: web::Query<Q>) -> HttpResponse {
///     …
/// }
///
/// #[rate_limit(limiter = state.limiter, key = user.id, cost = 5)]
/// async fn export(State(state): State<App>, user: User) -> Result<Response, AppError> {
///     …
/// }
/// ```
///
/// # Options
///
/// | option | meaning |
/// |---|---|
/// | `limiter = expr` | Required. The limiter: a `RateLimiter`, `&`, `Arc` or `web::Data` of one, evaluated on each call before the body runs (so it may use the arguments). |
/// | `key = expr` | The client key: anything `ToString` (a user id, an API token). Without it the client is read from the arguments: an Actix `HttpRequest`, or axum's `ConnectInfo<SocketAddr>` (and a `HeaderMap`, for the forwarded header behind the limiter's trusted proxies), found by type. |
/// | `cost = expr` | What a call costs, a `u64` (1 by default; a literal 0 is refused). |
/// | `crate = "path"` | The path of the runtime crate when it is renamed or re-exported, instead of `::cached_runtime`. |
///
/// # Return types
///
/// The return type answers the refusal, through `cached_runtime::ratelimit::LimitResponse`:
/// `HttpResponse` (Actix), `Response` (axum), a `Result` of one (the refusal is `Ok`, an
/// `Err` passes unchanged), or `Limited<T>` around any other responder (the body returns
/// `Limited::from(web::Json(item))`). An `impl Trait` return type cannot be named, and is
/// refused at compile time.
///
/// # Expansion
///
/// The signature is kept as written; the body becomes (the `__rl…` names are hygienic):
///
/// ```text
/// let __rl_limiter = ::cached_runtime::ratelimit::__macro::limiter(&(state.limiter));
/// let __rl_key = ::cached_runtime::ratelimit::__macro::client(
///     __rl_limiter, __macro::peer(&req), Some(__macro::headers(&req)));
/// let __rl_decision = __rl_limiter.check(&__rl_key, __macro::cost(1)).await;
/// if !__rl_decision.is_allowed() {
///     return <HttpResponse as __macro::LimitResponse>::refused(&__rl_decision);
/// }
/// let __rl_answer = __macro::pin_output::<HttpResponse, _>(async move { body }).await;
/// <HttpResponse as __macro::LimitResponse>::allowed(__rl_answer, &__rl_decision)
/// ```
#[proc_macro_attribute]
pub fn rate_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    rate_limit::rate_limit(args.into(), item.into()).into()
}
