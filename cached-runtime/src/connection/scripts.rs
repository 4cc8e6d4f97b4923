//! Scripts on a cluster, sent at most once per call unless Redis proves they did not run.
//!
//! redis-rs's cluster connection sends a command again by itself after an I/O error or a
//! timeout, when the request may have reached the node and run; for a script that increments
//! or enqueues, that runs it twice. So scripts go through a cluster connection of their own,
//! built with no retries (made on first use), and are sent again here only after a reply that
//! says they did not run: `NOSCRIPT` (loaded, then run), `MOVED` and `ASK` (sent where Redis
//! says), `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING` and `READONLY` (the node could
//! not serve it; after a pause). Anything else, a dropped connection or a timeout above all,
//! is the caller's error.

use std::time::Duration;

use super::dial::{ClusterConnection, Node};

use arc_swap::ArcSwapOption;

use crate::spawn::Spawner;
use redis::{
    Cmd, RedisError, RedisResult, Script, ServerErrorKind, Value,
    cluster::ClusterClient,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

/// Sends of one call at most: the first, one after `NOSCRIPT`, and a few redirections.
const ATTEMPTS: usize = 5;

/// First pause before sending again to a node that could not serve; doubles each time.
const PAUSE_MIN: Duration = Duration::from_millis(20);

/// The scripts' cluster connection (one per pool, shared by every caller).
pub(crate) struct Scripts {
    client: ClusterClient,
    conn: ArcSwapOption<ClusterConnection>,
    connecting: tokio::sync::Mutex<()>,
}

/// Where the next send goes.
enum Route {
    /// By the script's first key.
    Key,
    /// To the node a `MOVED` named.
    Moved(String, u16),
    /// To the node an `ASK` named, after `ASKING`.
    Ask(String, u16),
}

impl Scripts {
    /// `client` must be built with no retries.
    pub(crate) fn new(client: ClusterClient) -> Self {
        Self {
            client,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Drops the connection, so the next script makes a new one (the pool reconnects).
    pub(crate) fn reset(&self) {
        self.conn.store(None);
    }

    /// The connection, made now if there is none, within `connect_timeout`.
    pub(crate) async fn connection(
        &self,
        connect_timeout: Duration,
        spawner: &Spawner,
    ) -> RedisResult<ClusterConnection> {
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        let _one = self.connecting.lock().await;
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        // Made on the runtime the `Redis` was built on: the connection's driver task must
        // outlive the caller's runtime (an Actix worker's, which stops with its server).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let client = self.client.clone();
        spawner.spawn(async move {
            let _ = tx.send(client.get_async_generic_connection::<Node>().await);
        });
        let conn = tokio::time::timeout(connect_timeout, rx)
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| {
                RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            })??;
        self.conn.store(Some(std::sync::Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Runs `evalsha` (of `script`) on `conn`, from [`connection`](Self::connection), as
    /// the module docs say. The caller bounds it in time.
    pub(crate) async fn eval(
        mut conn: ClusterConnection,
        evalsha: &Cmd,
        script: &Script,
    ) -> RedisResult<Value> {
        let mut route = Route::Key;
        let mut loaded = false;
        let mut pause = PAUSE_MIN;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let reply = match &route {
                Route::Key => evalsha.query_async::<Value>(&mut conn).await,
                Route::Moved(host, port) => conn
                    .route_command(evalsha.clone(), by_address(host, *port))
                    .await
                    .and_then(Value::extract_error),
                Route::Ask(host, port) => {
                    let mut asking = redis::pipe();
                    asking.cmd("ASKING").add_command(evalsha.clone());
                    let node = SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    };
                    conn.route_pipeline(asking, 1, 1, node)
                        .await
                        .and_then(|replies| replies.into_iter().next().ok_or_else(no_reply))
                        .and_then(Value::extract_error)
                }
            };
            let error = match reply {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let redirect = error
                .redirect_node()
                .and_then(|(node, _)| node.rsplit_once(':'))
                .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)));
            match error.kind() {
                redis::ErrorKind::Server(ServerErrorKind::NoScript) if !loaded => {
                    // Loaded on every primary, so a redirected send finds it too.
                    script.load_async(&mut conn).await?;
                    loaded = true;
                }
                redis::ErrorKind::Server(ServerErrorKind::Moved) if redirect.is_some() => {
                    let (host, port) = redirect.unwrap_or_default();
                    route = Route::Moved(host, port);
                }
                redis::ErrorKind::Server(ServerErrorKind::Ask) if redirect.is_some() => {
                    let (host, port) = redirect.unwrap_or_default();
                    route = Route::Ask(host, port);
                }
                redis::ErrorKind::Server(
                    ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly,
                ) => {
                    // The client refreshes its slot map on these; route by key again.
                    route = Route::Key;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                _ => return Err(error),
            }
            last = Some(error);
        }
        Err(last.unwrap_or_else(no_reply))
    }
}

fn by_address(host: &str, port: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    })
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

fn no_reply() -> RedisError {
    RedisError::from((redis::ErrorKind::Client, "no reply to a redirected script"))
}
