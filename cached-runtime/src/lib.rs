//! Cache-aside for async Rust functions over Redis.
//!
//! `#[redis_cache(prefix = "item", ttl = 600)]` on an `async fn` builds a key from the
//! arguments, `GET`s it, and returns the stored value on a hit without running the body; on a
//! miss it runs the body, stores the result for `ttl` seconds and returns it. Absent results
//! (`None`, `Ok(None)`) are stored as a null marker with a short TTL of their own, so lookups
//! of missing ids stop reaching the database. Redis failing or slow never fails a call: the
//! body runs, within a bounded time, and the failure is counted and logged.
//!
//! ```no_run
//! use std::time::Duration;
//! use cached_runtime::{Cache, Policy, shape::Optional};
//!
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Item { id: u64 }
//! # async fn load(id: u64) -> Option<Item> { None }
//! # async fn demo() -> Result<(), cached_runtime::CacheError> {
//! let cache = Cache::builder("redis://127.0.0.1:6379")
//!     .namespace("shop:")
//!     .command_timeout(Duration::from_millis(100))
//!     .build()
//!     .await?;
//! cached_runtime::install(cache.clone());
//!
//! // What the macro does for `async fn item(id: u64) -> Option<Item>`:
//! let policy = Policy::new("item", Duration::from_secs(600))?;
//! let key = cache.key("item").arg(&42u64).build()?;
//! let item = cache.get_or_fill::<Optional, _, _>(&key, &policy, load(42)).await;
//!
//! // After an update, drop exactly that entry, or the whole prefix.
//! cache.invalidate(&key).await?;
//! cache.invalidate_prefix("item").await?;
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! `{namespace}{prefix}:{arguments}`; the [`key`] module documents the exact encoding.
//!
//! # Values
//!
//! JSON behind a short versioned header; see the [`codec`](crate#values) notes: a value that
//! does not decode is a miss, counted in [`Stats`], and is overwritten.
//!
//! # Connections
//!
//! A bb8 pool of multiplexed connections: bb8 connects, checks and recycles them, while the
//! cached path sends every caller's commands over one shared multiplexed connection leased from
//! it (see [`CacheBuilder::connections`]) instead of checking one out per command, so
//! concurrent calls are pipelined. Broken, half-open and failed-over connections are retired
//! and replaced in the background; a circuit breaker skips Redis while it keeps failing.
//!
//! # Near cache
//!
//! [`CacheBuilder::near_cache`] keeps decoded values in process memory in front of Redis: a
//! hit there sends no command. Redis keeps every process's copy coherent through
//! server-assisted client-side caching (`CLIENT TRACKING … BCAST`, one connection per
//! primary): any change to a key, by anyone, evicts it; while tracking is down the near cache
//! is empty and bypassed. [`Cache::sync_near`] waits for invalidations already sent, and
//! [`NearStats`] reports it.
//!
//! # Metrics and tracing
//!
//! Counters and latencies go to the `metrics` facade (the crate installs no recorder) and each
//! call runs in a `cache.get` span; [`telemetry`] lists every series with its labels, and the
//! histogram bucket presets. [`Cache::stats`] reads the same counters in process.
//!
//! # Web frameworks
//!
//! With the `actix` or `axum` feature, handlers returning `Json<T>` are cached on the handler
//! itself, extractors key on the value they hold, and `#[redis_cache(revalidate)]` answers
//! HTTP revalidation from the cache ([`http`]: `ETag`, `304`, `Cache-Control`, `X-Cache`).
//! `vary(req = ["authorization"])` keys on request headers ([`VarySource`]).
//!
//! # Sessions
//!
//! With `session-actix` or `session-tower`, [`session::Sessions`] is a session store for
//! actix-session and tower-sessions on these connections: no lost updates between concurrent
//! requests, sliding expiry written once per fraction of the idle timeout, an absolute
//! lifetime, renewal without a gap, and "log out everywhere".
//!
//! # Without Redis
//!
//! [`Cache::in_memory`] behaves the same within one process, for tests and development.
//! [`bypass`] and [`refresh`] switch the cache off, or force a recomputation, for the cached
//! calls made inside a future.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
pub mod connection;
#[cfg(feature = "ratelimit")]
pub mod counter;
mod error;
#[cfg(feature = "queue")]
pub mod queue;
#[cfg(feature = "ratelimit")]
pub mod ratelimit;
#[cfg(any(feature = "session-actix", feature = "session-tower"))]
pub mod session;
mod spawn;
pub mod telemetry;
mod warn;
mod web;

pub use cache::key;
pub use web::{http, shape};

#[doc(hidden)]
pub mod __private;

pub use cache::Cache;
pub use cache::builder::CacheBuilder;
pub use cache::global::{install, installed};
pub use cache::key::{Key, KeyBuilder};
pub use cache::mode::{bypass, refresh};
pub use cache::near::NearStats;
pub use cache::policy::Policy;
pub use cache::stats::{Counts, Stats};
pub use cache::tags::{TagBuilder, TagStats};
pub use cache::vary::VarySource;
pub use connection::{Credentials, CredentialsProvider, Redis, RedisBuilder};
pub use connection::{DEFAULT_URL, redact_url};
pub use error::{BoxError, CacheError, ErrorKind};

#[doc(inline)]
pub use cached_macro::redis_cache;
#[cfg(feature = "ratelimit")]
#[doc(inline)]
pub use ratelimit::rate_limit;
