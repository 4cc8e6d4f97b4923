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
/// | `skip(state, req)` | Arguments left out of the key. |
/// | `skip_all` | Every argument left out of the key: one entry per function. |
/// | `key = "{id}:{lang}"` | A key template: the part after `prefix:`. `{name}` is an argument, `{q.page}` or `{path.0}` a field of one; arguments the template does not name are left out, so `skip` is not needed (and not allowed) with it. Placeholders need text between them, and the text may not use a character the key encoding reserves (whitespace and `% , ( ) = ~ ! # * ? [ ] \ { } "`) except `:`. |
/// | `cache = expr` | The cache to use instead of the one installed with `cached_runtime::install`: a `Cache`, `&Cache`, `Arc<Cache>` or `web::Data<Cache>`, evaluated on each call before the body runs, so it may use the arguments (`cache = state.cache`, `cache = self.cache`). |
/// | `version = 2` | Entries written under another version are misses: bump it when the cached type changes shape. |
/// | `lock = true` | Across processes, one caller fills a missing entry under a Redis lock (`SET NX PX`, released only by its owner) while the others poll for its value. `lock = true` holds the lock at most 10 s; `lock = 3` or `lock = Duration::from_millis(500)` sets that TTL. Waiters give up and run the body themselves after the lock TTL, so a crashed holder blocks nobody for longer. In-process single-flight needs no option: it is on for every cache unless turned off there. |
///
/// An unknown, repeated or malformed option is a compile error that lists the valid ones.
///
/// # Return types
///
/// The shape is chosen from how the return type is written:
///
/// | return type | stored |
/// |---|---|
/// | `T` | every result |
/// | `Option<T>` | `Some` as the value, `None` as the null marker (with `null_ttl`) |
/// | `Result<T, E>`, or an alias whose name ends in `Result` (`io::Result<T>`, `AppResult<T>`) | `Ok` only; `Err` is returned as is and never stored |
/// | `Result<Option<T>, E>` | `Ok(Some)` as the value, `Ok(None)` as the null marker, `Err` never |
/// | `web::Json<T>` | `T` |
/// | `Result<web::Json<T>, E>` | `Ok` only, as `T` |
/// | `Option<web::Json<T>>` | `Some` as `T`, `None` as the null marker |
/// | `Result<Option<web::Json<T>>, E>` | `Ok(Some)` as `T`, `Ok(None)` as the null marker, `Err` never |
///
/// Only these names are recognized: an alias of another kind (`type Maybe<T> = Option<T>`)
/// is cached as a plain `T`, so its `None` is stored as a value for the full `ttl` rather
/// than as the null marker.
///
/// `T` must implement `serde::Serialize` and `serde::Deserialize` (owned); when it does not,
/// the error points at the return type. The `web::Json` shapes need the `actix` feature of
/// `cached-runtime`. `()` and `impl Trait` returns are compile errors: there is nothing to
/// store, or nothing to decode into.
///
/// # Keys
///
/// `{namespace}{prefix}:{arguments}`: each key argument encoded as the `cached_runtime::key`
/// module documents, joined by `:`, in the order of the signature (or laid into the `key`
/// template). The same key can be built by hand to invalidate exactly one entry:
/// `cache.key("item").arg(&id).build()`.
///
/// - `self` is never part of the key, whatever its type: a method caches as if it were a
///   free function of its other arguments. Put what distinguishes instances into an argument,
///   or into the prefix.
/// - Key arguments need `serde::Serialize`; when one lacks it, the error points at it and
///   suggests `skip(...)`.
/// - Actix extractors `web::Path<T>`, `web::Query<T>`, `web::Json<T>` and `web::Form<T>` key
///   on the value they hold (recognized by the names `Path`, `Query`, `Json`, `Form` with one
///   type parameter).
/// - `web::Data<_>`, `web::ThinData<_>`, `web::ReqData<_>`, `HttpRequest`, `HttpResponse`
///   and `web::Payload` are never serialized silently: not skipped, they are a compile error.
/// - An argument bound by a pattern (`(a, b): (u8, u8)`, `_: T`) cannot be keyed: bind it to
///   a name, or use `skip_all` or `key`.
///
/// # Where it applies
///
/// Free functions, associated functions and methods (also trait methods with a default
/// body), generic functions, lifetimes and `where` clauses, any visibility, doc comments,
/// `#[cfg]` and other attributes, `#[actix_web::get("/...")]` stacked above or below. Not
/// `const fn`, `extern fn`, functions that are not `async`, or declarations without a body.
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
/// the attribute emits (the two `__cached…` names are hygienic: the body cannot see them)
///
/// ```text
/// pub async fn item(id: u64, path: web::Path<String>) -> Option<Item> {
///     static __CACHED_POLICY: ::cached_runtime::__private::Policy =
///         ::cached_runtime::__private::Policy::__from_macro("item", 600, 0, 0, 0);
///     let __cached_call = ::cached_runtime::__private::Call::new(&__CACHED_POLICY)
///         .key_arg(&id)
///         .key_arg(&*path);
///     ::cached_runtime::__private::Returns::<::cached_runtime::__private::Optional, Option<Item>>::new()
///         .run(__cached_call, async move { body })
///         .await
/// }
/// ```
///
/// With `cache = expr` the call starts with `Call::with_cache(&(expr), &__CACHED_POLICY)`;
/// with `key = "v1:{id}"` the parts are `.literal("v1:").key_value(&id)`.
#[proc_macro_attribute]
pub fn redis_cache(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::redis_cache(args.into(), item.into()).into()
}
