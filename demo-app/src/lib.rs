//! The demo catalog service: actix-web 4 over an SQLite file, every read handler cached in
//! Redis with `#[redis_cache]`, its metrics at `GET /metrics` in the Prometheus format.
//!
//! The binary (`main.rs`) reads the environment ([`Config::from_env`]) and calls [`start`];
//! the end-to-end tests call [`start`] with a [`Config`] of their own, bound to port 0.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = demo_app::Config::new("redis://127.0.0.1:6379", "/tmp/catalog.db");
//! config.bind = "127.0.0.1:0".to_owned();
//! let running = demo_app::start(config).await?;
//! println!("listening on {}", running.addr());
//! running.stop().await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod app;
mod auth;
mod compute;
mod config;
mod db;
mod error;
mod jobs;
pub mod limits;
mod metrics;
pub mod model;
pub mod routes;
pub mod session;

pub use app::{AppState, Running, start};
pub use compute::{ComputeLimit, ComputeStats, Paused};
pub use config::{
    Config, DEFAULT_BIND, DEFAULT_CACHE_NAME, DEFAULT_DATABASE_PATH, DEFAULT_FIB_QUEUE,
    DEFAULT_NULL_TTL, DEFAULT_REINDEX_DELAY, MIN_ADMIN_TOKEN_CHARS,
};
pub use db::SEED_ITEMS;
pub use error::{ApiError, StartError};
pub use jobs::{Jobs, REINDEX_QUEUE, Reindex};
/// The admin token's type: `Debug` prints `[REDACTED]`, and it is zeroed when dropped.
pub use secrecy::SecretString;
