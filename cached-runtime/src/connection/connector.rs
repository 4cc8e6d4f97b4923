//! How connections are made, per topology: a URL (plain or TLS), a cluster's seed nodes, or
//! the primary the sentinels name; and the bb8 manager that makes and checks them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bb8_redis::RedisConnectionManager;
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, RedisError, Value,
    cluster::{ClusterClient, ClusterClientBuilder},
    io::tcp::{TcpSettings, socket2::TcpKeepalive},
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};

use tokio::sync::watch;

use super::{
    config::{RedisBuilder, Topology},
    link::Link,
};
use crate::error::CacheError;

/// How new connections are made.
pub(crate) enum Connector {
    /// A plain URL, through bb8-redis's manager.
    Url(RedisConnectionManager),
    /// A `rediss://` URL, with this crate's own TLS setup.
    #[cfg(feature = "tls")]
    Tls(super::tls::Connector),
    /// The client of the shared connections, and one that never retries, for scripts.
    Cluster {
        shared: Box<ClusterClient>,
        scripts: Box<ClusterClient>,
    },
    /// Asks the sentinels for the primary on every connect, so a reconnect after a failover
    /// finds the new one. The client needs `&mut` for its lookups.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The connector, plus a flag through which a slot tells bb8 a connection broke.
pub(crate) struct Manager {
    pub(crate) connector: Connector,
    pub(crate) response_timeout: Duration,
    /// The pool's topology epoch, stamped on each connection made.
    pub(crate) topology: watch::Receiver<u64>,
}

pub(crate) struct Conn {
    pub(crate) conn: Link,
    pub(crate) broken: Arc<AtomicBool>,
    /// The pool's topology epoch when it was made.
    pub(crate) epoch: u64,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        // Read before asking where to connect: a change during the connect makes it stale.
        let epoch = *self.topology.borrow();
        let conn = match &self.connector {
            Connector::Url(inner) => {
                let mut conn = inner.connect().await?;
                conn.set_response_timeout(self.response_timeout);
                Link::Single(conn)
            }
            #[cfg(feature = "tls")]
            Connector::Tls(tls) => Link::Single(tls.connect(self.response_timeout).await?),
            Connector::Cluster { shared, .. } => {
                Link::Cluster(shared.get_async_connection().await?)
            }
            Connector::Sentinel(client) => {
                let config =
                    AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout));
                let conn = client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await?;
                Link::Single(conn)
            }
        };
        Ok(Conn {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
            epoch,
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        if let Connector::Sentinel(_) = self.connector {
            // A pooled connection to a primary demoted by a failover still answers PING;
            // ROLE tells it apart (same round trip).
            let role = redis::cmd("ROLE")
                .query_async::<Vec<Value>>(&mut conn.conn)
                .await;
            return match role {
                Ok(role) => match role.first() {
                    Some(Value::BulkString(r)) if r == b"master" => Ok(()),
                    _ => Err(RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                        "no longer the primary",
                    ))),
                },
                // A user whose ACL refuses ROLE: the server answered, which is all we can tell;
                // a demoted primary then shows itself by its READONLY replies.
                Err(e) if is_refused(&e) => Ok(()),
                Err(e) => Err(e),
            };
        }
        answers(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken.load(Ordering::Acquire)
    }
}

/// Whether Redis refused the command to this user (`NOPERM`): an answer all the same, so the
/// connection works.
pub(crate) fn is_refused(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
}

/// The command a `NOPERM` reply names (`… to run the 'cluster|slots' command`), as it is
/// typed (`CLUSTER SLOTS`).
pub(crate) fn refused_command(e: &RedisError) -> Option<String> {
    let detail = e.detail()?;
    let start = detail.find('\'')? + 1;
    let len = detail[start..].find('\'')?;
    Some(
        detail[start..start + len]
            .replace('|', " ")
            .to_ascii_uppercase(),
    )
}

/// Whether the server behind `conn` answers: `PING`, or any reply to it when the user's ACL
/// refuses `PING` (`NOPERM` comes from the server too).
pub(crate) async fn answers<C: redis::aio::ConnectionLike>(conn: &mut C) -> Result<(), RedisError> {
    match redis::cmd("PING").query_async::<Value>(conn).await {
        Ok(_) => Ok(()),
        Err(e) if is_refused(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn invalid(url: &str, e: &RedisError) -> CacheError {
    CacheError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// A cluster node's or a sentinel's URL: plain `redis://` only.
pub(crate) fn node_info(raw: &str, shown: &str) -> Result<redis::ConnectionInfo, CacheError> {
    if raw.starts_with("rediss://") {
        return Err(CacheError::InvalidUrl {
            url: shown.to_owned(),
            reason:
                "rediss:// is supported for a single Redis only, not yet for Cluster or Sentinel"
                    .to_owned(),
        });
    }
    raw.into_connection_info().map_err(|e| invalid(shown, &e))
}

/// A client that asks `sentinels` for `master`'s primary and connects to it with the
/// primary's own `(username, password)` and `protocol`.
pub(crate) fn sentinel_client(
    master: &str,
    sentinels: &[String],
    (username, password): (Option<&str>, Option<&str>),
    protocol: redis::ProtocolVersion,
    url: &str,
) -> Result<SentinelClient, CacheError> {
    let tcp = || TcpSettings::default().set_keepalive(keepalive());
    let infos = sentinels
        .iter()
        .map(|n| node_info(n, url).map(|i| i.set_tcp_settings(tcp())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut redis = redis::RedisConnectionInfo::default().set_protocol(protocol);
    if let Some(u) = username {
        redis = redis.set_username(u);
    }
    if let Some(p) = password {
        redis = redis.set_password(p);
    }
    let node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(redis)
        .set_tcp_settings(tcp());
    SentinelClient::build(
        infos,
        master.to_owned(),
        Some(node),
        SentinelServerType::Master,
    )
    .map_err(|e| invalid(url, &e))
}

/// The connection info of one server at `config.url`, and whether it is `rediss://` (the
/// info then has the `redis` scheme: TLS is this crate's own).
pub(crate) fn standalone_info(
    config: &RedisBuilder,
    url: &str,
) -> Result<(redis::ConnectionInfo, bool), CacheError> {
    let tls_url = config.url.starts_with("rediss://");
    if tls_url && !cfg!(feature = "tls") {
        return Err(CacheError::InvalidUrl {
            url: url.to_owned(),
            reason: "rediss:// needs the `tls` feature of cached-runtime".to_owned(),
        });
    }
    let plain = config
        .url
        .strip_prefix("rediss://")
        .map_or_else(|| config.url.clone(), |rest| format!("redis://{rest}"));
    let info = plain
        .as_str()
        .into_connection_info()
        .map_err(|e| invalid(url, &e))?
        .set_tcp_settings(TcpSettings::default().set_keepalive(keepalive()));
    Ok((info, tls_url))
}

/// Keepalive probes find a peer that vanished without a word (a failed-over host).
pub(crate) fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
}

/// The connector for one server at `config.url`, plain or TLS.
fn standalone(config: &RedisBuilder, url: &str) -> Result<Connector, CacheError> {
    let (info, tls_url) = standalone_info(config, url)?;
    #[cfg(feature = "tls")]
    if tls_url {
        let tls = super::tls::Connector::new(&info, keepalive()).map_err(|reason| {
            CacheError::InvalidUrl {
                url: url.to_owned(),
                reason,
            }
        })?;
        return Ok(Connector::Tls(tls));
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls_url;
    Ok(Connector::Url(
        RedisConnectionManager::new(info).map_err(|e| invalid(url, &e))?,
    ))
}

impl Connector {
    /// The connector for `config`'s topology; `url` is its redacted description.
    pub(crate) fn new(config: &RedisBuilder, url: &str) -> Result<Self, CacheError> {
        let tcp = || TcpSettings::default().set_keepalive(keepalive());
        let connector = match &config.topology {
            Topology::Standalone => standalone(config, url)?,
            Topology::Cluster { nodes } => {
                let infos = nodes
                    .iter()
                    .map(|n| node_info(n, url).map(|i| i.set_tcp_settings(tcp())))
                    .collect::<Result<Vec<_>, _>>()?;
                let client = |retries| {
                    ClusterClientBuilder::new(infos.clone())
                        .connection_timeout(config.connect_timeout)
                        .response_timeout(config.command_timeout)
                        .retries(retries)
                        .tcp_settings(tcp())
                        .build()
                        .map_err(|e| invalid(url, &e))
                };
                Connector::Cluster {
                    // A command is bounded by the command timeout, retries included; a
                    // redirect after a failover needs one or two.
                    shared: Box::new(client(2)?),
                    // redis-rs re-sends a command after an I/O error or a timeout, when it
                    // may have run already: scripts go through a client that never does,
                    // and `Pool::eval` retries only the replies that prove it did not run.
                    scripts: Box::new(client(0)?),
                }
            }
            Topology::Sentinel {
                master,
                sentinels,
                username,
                password,
            } => {
                let client = sentinel_client(
                    master,
                    sentinels,
                    (username.as_deref(), password.as_deref()),
                    redis::ProtocolVersion::RESP2,
                    url,
                )?;
                Connector::Sentinel(tokio::sync::Mutex::new(client))
            }
        };
        Ok(connector)
    }
}
