//! The shared state, the app, and starting and stopping the server.

use std::{
    collections::BTreeSet,
    io,
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use actix_web::{
    App, HttpServer,
    dev::ServerHandle,
    middleware::{ErrorHandlers, from_fn},
    web,
};
use cached_runtime::{Cache, redact_url};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;

use crate::{
    compute::ComputeLimit,
    config::Config,
    db::Db,
    error::{ApiError, StartError, ensure_json_body},
    jobs::Jobs,
    limits::{self, Limits},
    metrics, routes,
};

/// What every handler shares. Its `Debug` output shows no secret (the admin token is
/// redacted).
#[derive(Debug)]
pub struct AppState {
    pub(crate) db: Arc<Db>,
    /// The cache the handlers' `#[redis_cache(cache = state.cache)]` use.
    pub cache: Cache,
    pub(crate) admin_token: Option<SecretString>,
    /// The categories that exist: a list query for another one is refused before it reaches
    /// the cache, so anonymous traffic cannot grow the cache with empty lists.
    categories: RwLock<BTreeSet<String>>,
    /// The bound on `/fib` computations.
    pub compute: ComputeLimit,
    /// Renders `GET /metrics`; `None` when the process has another recorder.
    pub(crate) metrics: Option<PrometheusHandle>,
    /// The reindex queue and its worker.
    pub jobs: Jobs,
}

impl AppState {
    /// Runs `f` on the database on a blocking thread.
    pub(crate) async fn db<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        F: FnOnce(&Db) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        if self.db.is_down() {
            return Err(ApiError::Busy("the database is unavailable".to_owned()));
        }
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

    /// Whether items of `category` exist (or have existed since start).
    pub(crate) fn knows_category(&self, category: &str) -> bool {
        self.categories
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(category)
    }

    /// The known categories, for an error message.
    pub(crate) fn known_categories(&self) -> Vec<String> {
        let known = self
            .categories
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        known.iter().cloned().collect()
    }

    /// Records a category a write has just used.
    pub(crate) fn learn_category(&self, category: &str) {
        if !self.knows_category(category) {
            self.categories
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(category.to_owned());
        }
    }
}

/// What start-up reads from the database.
#[derive(Debug)]
pub(crate) struct Survey {
    pub(crate) items: u64,
    pub(crate) categories: Vec<String>,
}

/// Reads the [`Survey`] on a blocking thread: the database lock may be held (by a writer, a
/// backup), and an async thread must not wait for it.
pub(crate) async fn survey(db: Arc<Db>) -> rusqlite::Result<Survey> {
    tokio::task::spawn_blocking(move || {
        Ok(Survey {
            items: db.count_items()?,
            categories: db.categories()?,
        })
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<io::Result<()>>,
    state: web::Data<AppState>,
    /// The metrics recorder's upkeep, stopped with the server.
    upkeep: Option<tokio::task::JoinHandle<()>>,
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
        if let Some(upkeep) = self.upkeep {
            upkeep.abort();
        }
        self.state.jobs.stop().await;
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
    config.validate()?;
    // Before the cache is built, so its series are registered with it from the start.
    let prometheus = metrics::prometheus();
    let path = config.database_path.clone();
    let database_error = |source| StartError::Database {
        path: config.database_path.display().to_string(),
        source,
    };
    let db = tokio::task::spawn_blocking(move || Db::open(&path))
        .await
        .map_err(|e| StartError::Config(format!("database setup panicked: {e}")))?
        .map_err(database_error)?;
    let db = Arc::new(db);
    let survey = survey(Arc::clone(&db)).await.map_err(database_error)?;
    // Lazy: the service starts and serves (uncached) while Redis is down, and picks it up
    // when it answers.
    let cache = config.cache.clone().build_lazy()?;
    let jobs = Jobs::start(
        config.queue_redis.clone(),
        Arc::clone(&db),
        config.reindex_delay,
    )
    .await?;
    let limits = web::Data::new(Limits::build(
        &cache,
        &config.api_limits,
        &config.trusted_proxies,
    )?);
    let state = web::Data::new(AppState {
        db,
        cache,
        admin_token: config.admin_token.clone(),
        categories: RwLock::new(survey.categories.into_iter().collect()),
        compute: ComputeLimit::new(config.fib_concurrency, config.fib_queue),
        metrics: prometheus.clone(),
        jobs,
    });
    let sessions = crate::session::SessionDemo::build(&state.cache)?;
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(limits.clone())
            .wrap(ErrorHandlers::new().default_handler(ensure_json_body))
            .wrap(from_fn(limits::count_views))
            // Outermost: a refused request costs nothing more, and its problem body is kept.
            .wrap(limits.middleware())
            // Before `/items/{id}`, which would take "popular" for an id.
            .service(limits::popular_items)
            .configure(routes::configure)
            // Last: its scope takes only the paths the routes above leave.
            .configure(|cfg| crate::session::configure(cfg, &sessions))
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
         ttl(item=600s list=60s fib=3600s) fib(concurrency={} queue={}) reindex(delay={:?}) cache={:?}",
        config.database_path.display(),
        survey.items,
        redact_url(&config.redis_url),
        if config.admin_token.is_some() {
            "enabled"
        } else {
            "disabled (ADMIN_TOKEN unset)"
        },
        config.fib_concurrency,
        config.fib_queue,
        config.reindex_delay,
        config.cache,
    );
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    let upkeep = prometheus.map(|handle| tokio::spawn(metrics::upkeep(handle)));
    if config.handle_signals {
        tokio::spawn(stop_on_signal(handle.clone()));
    }
    Ok(Running {
        addr,
        handle,
        task,
        state,
        upkeep,
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

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc::{RecvTimeoutError, channel},
        time::Duration,
    };

    use super::*;
    use crate::db::tests::TempDb;

    #[tokio::test(flavor = "current_thread")]
    async fn the_startup_survey_waits_for_the_database_off_the_async_thread() {
        let t = TempDb::new("survey");
        // Another thread holds the database until a task on this runtime's only thread tells
        // it to let go (or, if that task never gets to run, until a fallback much later).
        let (release, released) = channel::<()>();
        let (held_tx, held) = channel::<()>();
        let holder = {
            let db = Arc::clone(&t.db);
            std::thread::spawn(move || {
                let _lock = db.lock_for_test();
                held_tx.send(()).expect("the test waits");
                match released.recv_timeout(Duration::from_secs(20)) {
                    Ok(()) => "released by the task",
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                        "released by the fallback"
                    }
                }
            })
        };
        held.recv().expect("the holder took the lock");
        let task = tokio::spawn(async move {
            release.send(()).expect("the holder waits");
        });
        let survey = survey(Arc::clone(&t.db)).await.expect("the survey");
        task.await.expect("the task ran");
        assert_eq!(survey.items, crate::SEED_ITEMS as u64);
        assert_eq!(
            holder.join().unwrap_or("the holder panicked"),
            "released by the task",
            "the survey blocked the async thread while the database was locked"
        );
    }
}
