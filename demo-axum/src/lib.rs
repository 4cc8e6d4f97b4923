//! The catalog on axum: a slice of the Actix demo (items by id and by category, updates, a
//! per-caller page) served by idiomatic axum handlers under `#[redis_cache]`, with HTTP
//! revalidation: item reads carry an `ETag`, and `If-None-Match` gets a `304` from the cache.
//!
//! | route | cached as |
//! |---|---|
//! | `GET /items/{id}` | `item:{id}`, 600 s, revalidated (`ETag`, `304`, `X-Cache`) |
//! | `GET /items?category=…&page=…` | `items:{category}:{page}`, 60 s |
//! | `PUT /items/{id}` | drops `item:{id}` and every list |
//! | `GET /me/picks` | `picks:{hash of Authorization}`, 60 s, `Vary: authorization` |
//! | `GET /stats`, `GET /healthz` | not cached |
//!
//! Every error, axum's own rejections included, is JSON: `{"error": "…"}`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = demo_axum::Config::new("redis://127.0.0.1:6379", "/tmp/catalog-axum.db");
//! config.bind = "127.0.0.1:0".to_owned();
//! let running = demo_axum::start(config).await?;
//! println!("listening on {}", running.addr());
//! running.stop().await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod db;
mod error;
pub mod routes;
pub mod session;

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc};

use cached_runtime::{Cache, CacheBuilder, redact_url};
use tokio::{sync::oneshot, task::JoinHandle};

pub use db::{Item, SEED_ITEMS};
pub use error::{ApiError, StartError};
pub use routes::App;

/// What the service is started with.
///
/// `demo-axum` reads `BIND` (default `127.0.0.1:8081`), `DATABASE_PATH` (`catalog-axum.db`),
/// `REDIS_URL` and the `REDIS_CACHE_*` variables of [`CacheBuilder::from_env`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address (`:0` picks a free port).
    pub bind: String,
    /// SQLite database file, created and seeded when new.
    pub database_path: PathBuf,
    /// The Redis URL, for the startup log (shown redacted).
    pub redis_url: String,
    /// The cache's settings.
    pub cache: CacheBuilder,
}

impl Config {
    /// A configuration for Redis at `redis_url` and the database at `database_path`.
    pub fn new(redis_url: &str, database_path: impl Into<PathBuf>) -> Self {
        Self {
            bind: "127.0.0.1:8081".to_owned(),
            database_path: database_path.into(),
            redis_url: redis_url.to_owned(),
            cache: Cache::builder(redis_url),
        }
    }

    /// From the environment.
    pub fn from_env() -> Result<Self, StartError> {
        let cache = CacheBuilder::from_env()?;
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| cached_runtime::DEFAULT_URL.to_owned());
        Ok(Self {
            bind: std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8081".to_owned()),
            database_path: std::env::var_os("DATABASE_PATH")
                .map_or_else(|| PathBuf::from("catalog-axum.db"), PathBuf::from),
            redis_url,
            cache,
        })
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    app: App,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state: the cache, for tests that check what it holds.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub async fn stop(self) -> io::Result<()> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Opens (creating and seeding) the database, builds the cache without waiting for Redis,
/// binds and serves in the background until [`Running::stop`].
pub async fn start(config: Config) -> Result<Running, StartError> {
    let path = config.database_path.clone();
    let db = tokio::task::spawn_blocking(move || db::Db::open(&path))
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
        .map_err(|e| StartError::Database(format!("{}: {e}", config.database_path.display())))?;
    // Lazy: the service serves (uncached) while Redis is down, and caches once it answers.
    let cache = config.cache.clone().build_lazy()?;
    let app = App::new(Arc::new(db), cache);
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(|source| StartError::Bind {
            bind: config.bind.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        bind: config.bind.clone(),
        source,
    })?;
    tracing::info!(
        "demo-axum listening on http://{addr} database={} redis={}",
        config.database_path.display(),
        redact_url(&config.redis_url)
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let router = routes::router(app.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running {
        addr,
        app,
        stop,
        task,
    })
}
