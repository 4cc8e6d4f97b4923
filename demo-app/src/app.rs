//! The shared state, the app, and starting and stopping the server.

use std::{io, net::SocketAddr, sync::Arc};

use actix_web::{App, HttpServer, dev::ServerHandle, middleware::ErrorHandlers, web};
use cached_runtime::{Cache, redact_url};

use crate::{
    config::Config,
    db::Db,
    error::{ApiError, StartError, ensure_json_body},
    routes,
};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub(crate) db: Arc<Db>,
    /// The cache the handlers' `#[redis_cache(cache = state.cache)]` use.
    pub cache: Cache,
    pub(crate) admin_token: Option<String>,
}

impl AppState {
    /// Runs `f` on the database on a blocking thread.
    pub(crate) async fn db<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&Db) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let db = Arc::clone(&self.db);
        Ok(web::block(move || f(&db)).await??)
    }

    /// Whether the database answers.
    pub(crate) async fn db_ping(&self) -> bool {
        let db = Arc::clone(&self.db);
        matches!(web::block(move || db.ping()).await, Ok(Ok(())))
    }

    /// SQL statements run for requests since start.
    pub fn db_queries(&self) -> u64 {
        self.db.queries()
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<io::Result<()>>,
    state: web::Data<AppState>,
}

impl Running {
    /// The address it listens on (the real port when `BIND` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state: the cache, for tests that check what it holds.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Waits until the server stops (on SIGINT/SIGTERM when signals are handled).
    pub async fn wait(self) -> io::Result<()> {
        let result = match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        };
        drop(self.state);
        tracing::info!("demo-app stopped");
        result
    }

    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub async fn stop(self) -> io::Result<()> {
        self.handle.stop(true).await;
        self.wait().await
    }
}

/// Opens (creating and seeding) the database, builds the cache without waiting for Redis,
/// binds, logs the effective configuration on one line, and starts serving in the background.
///
/// Must be called within a Tokio runtime (`#[actix_web::main]` or `#[tokio::main]`).
pub async fn start(config: Config) -> Result<Running, StartError> {
    let path = config.database_path.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&path))
        .await
        .map_err(|e| StartError::Config(format!("database setup panicked: {e}")))?
        .map_err(|source| StartError::Database {
            path: config.database_path.display().to_string(),
            source,
        })?;
    // Lazy: the service starts and serves (uncached) while Redis is down, and picks it up
    // when it answers.
    let cache = config.cache.clone().build_lazy()?;
    let state = web::Data::new(AppState {
        db: Arc::new(db),
        cache,
        admin_token: config.admin_token.clone(),
    });
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(ErrorHandlers::new().default_handler(ensure_json_body))
            .configure(routes::configure)
    })
    .shutdown_timeout(10);
    if let Some(n) = config.workers {
        server = server.workers(n);
    }
    // Actix's own handlers treat SIGINT as a forced stop; ours stop gracefully on both.
    server = server.disable_signals();
    let server = server
        .bind(&config.bind)
        .map_err(|source| StartError::Bind {
            bind: config.bind.clone(),
            source,
        })?;
    let addr = server.addrs().first().copied().ok_or_else(|| {
        StartError::Config(format!("BIND={:?} resolved to no address", config.bind))
    })?;
    tracing::info!(
        "demo-app listening on http://{addr} database={} items={} redis={} admin={} \
         ttl(item=600s list=60s fib=3600s) cache={:?}",
        config.database_path.display(),
        state.db.count_items().unwrap_or(0),
        redact_url(&config.redis_url),
        if config.admin_token.is_some() {
            "enabled"
        } else {
            "disabled (ADMIN_TOKEN unset)"
        },
        config.cache,
    );
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    if config.handle_signals {
        tokio::spawn(stop_on_signal(handle.clone()));
    }
    Ok(Running {
        addr,
        handle,
        task,
        state,
    })
}

/// Stops the server gracefully on the first SIGINT or SIGTERM: no new connections, requests in
/// flight finish (up to the shutdown timeout), then the app state and its Redis pool drop.
async fn stop_on_signal(handle: ServerHandle) {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let name = tokio::select! {
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => "SIGINT",
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGINT");
                return;
            }
        },
        () = terminate => "SIGTERM",
    };
    tracing::info!("{name} received: finishing requests in flight, then stopping");
    handle.stop(true).await;
}
