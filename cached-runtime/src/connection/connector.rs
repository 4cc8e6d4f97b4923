//! How connections are made, per topology: one server, a cluster's seed nodes, or the primary
//! the sentinels name, each dialled by [`dial`](super::dial); and the bb8 manager that makes
//! and checks them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{
    AsyncConnectionConfig, RedisError, Value,
    cluster::{ClusterClient, ClusterClientBuilder},
};

use tokio::sync::watch;

use super::{
    config::{RedisBuilder, Topology},
    dial::{ClusterDial, Dialer, Node, Server, all_tls, parse_url},
    link::Link,
    sentinel::SentinelPrimary,
};
use crate::error::CacheError;

/// How new connections are made.
pub(crate) enum Connector {
    /// One server.
    Server { dialer: Dialer, server: Server },
    /// The client of the shared connections, and one that never retries, for scripts; the
    /// dialer of their nodes lives as long as they do.
    Cluster {
        shared: Box<ClusterClient>,
        scripts: Box<ClusterClient>,
        _dial: Arc<ClusterDial>,
    },
    /// Asks the sentinels for the primary on every connect, so a reconnect after a failover
    /// finds the new one.
    Sentinel(Arc<SentinelPrimary>),
}

/// Where a configuration's servers are and how each role is dialled: built once per
/// connection setup, from the URLs and the TLS and credentials options.
pub(crate) enum Deployment {
    Server {
        dialer: Dialer,
        server: Server,
    },
    Cluster {
        dial: Arc<ClusterDial>,
        /// The seeds, their credentials replaced by the dialer's mark.
        seeds: Vec<redis::ConnectionInfo>,
    },
    Sentinel(Arc<SentinelPrimary>),
}

impl Deployment {
    /// `shown`: the redacted description, for errors.
    pub(crate) fn new(config: &RedisBuilder, shown: &str) -> Result<Self, CacheError> {
        let invalid = |reason: String| CacheError::InvalidUrl {
            url: shown.to_owned(),
            reason,
        };
        let tls_unused = || {
            invalid(
                "TLS options are set, but no URL is rediss:// (TLS is on where the URLs say \
                 rediss://)"
                    .to_owned(),
            )
        };
        let provider = config.credentials.clone();
        match &config.topology {
            Topology::Standalone => {
                let tls = config.url.starts_with("rediss://");
                if !tls && config.tls.has_options() {
                    return Err(tls_unused());
                }
                let dialer = Dialer::new(config, tls, provider).map_err(invalid)?;
                Ok(Deployment::Server {
                    dialer,
                    server: Server::parse(&config.url, shown)?,
                })
            }
            Topology::Cluster { nodes } => {
                let Some(tls) = all_tls(nodes) else {
                    return Err(invalid(
                        "the cluster's seed URLs mix redis:// and rediss://: all nodes speak \
                         TLS or none does"
                            .to_owned(),
                    ));
                };
                if !tls && config.tls.has_options() {
                    return Err(tls_unused());
                }
                let dialer = Dialer::new(config, tls, provider).map_err(invalid)?;
                let infos = nodes
                    .iter()
                    .map(|n| parse_url(n, shown))
                    .collect::<Result<Vec<_>, _>>()?;
                let redis = infos
                    .first()
                    .map(|i| i.redis_settings().clone().set_db(0))
                    .unwrap_or_default();
                let dial = ClusterDial::register(dialer, redis);
                let marked = redis::RedisConnectionInfo::default().set_username(dial.mark());
                let seeds = infos
                    .into_iter()
                    .map(|i| i.set_redis_settings(marked.clone()))
                    .collect();
                Ok(Deployment::Cluster { dial, seeds })
            }
            Topology::Sentinel {
                master,
                sentinels,
                username,
                password,
            } => {
                let Some(tls) = all_tls(sentinels) else {
                    return Err(invalid(
                        "the sentinel URLs mix redis:// and rediss://: all sentinels speak \
                         TLS or none does"
                            .to_owned(),
                    ));
                };
                let primary_tls = config.tls.sentinel_primary.unwrap_or(tls);
                if !tls && !primary_tls && config.tls.has_options() {
                    return Err(tls_unused());
                }
                let mut primary = redis::RedisConnectionInfo::default();
                if let Some(u) = username {
                    primary = primary.set_username(u);
                }
                if let Some(p) = password {
                    primary = primary.set_password(p);
                }
                Ok(Deployment::Sentinel(Arc::new(SentinelPrimary {
                    master: master.clone(),
                    sentinels: sentinels
                        .iter()
                        .map(|s| Server::parse(s, shown))
                        .collect::<Result<_, _>>()?,
                    // The sentinels' credentials are their URLs'; a provider is the primary's.
                    to_sentinels: Dialer::new(config, tls, None).map_err(invalid)?,
                    to_primary: Dialer::new(config, primary_tls, provider).map_err(invalid)?,
                    primary,
                })))
            }
        }
    }
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
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout));
        let conn = match &self.connector {
            Connector::Server { dialer, server } => {
                Link::Single(dialer.connect(&server.addr, &server.redis, config).await?)
            }
            Connector::Cluster { shared, .. } => {
                Link::Cluster(shared.get_async_generic_connection::<Node>().await?)
            }
            Connector::Sentinel(primary) => Link::Single(
                primary
                    .connect(config, redis::ProtocolVersion::RESP2)
                    .await?,
            ),
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

impl Connector {
    /// The connector for `config`'s topology; `url` is its redacted description.
    pub(crate) fn new(config: &RedisBuilder, url: &str) -> Result<Self, CacheError> {
        let connector = match Deployment::new(config, url)? {
            Deployment::Cluster { dial, seeds } => {
                let client = |retries| {
                    ClusterClientBuilder::new(seeds.clone())
                        .username(dial.mark())
                        .connection_timeout(config.connect_timeout)
                        .response_timeout(config.command_timeout)
                        .retries(retries)
                        .build()
                        .map_err(|e| CacheError::InvalidUrl {
                            url: url.to_owned(),
                            reason: e.to_string(),
                        })
                };
                Connector::Cluster {
                    // A command is bounded by the command timeout, retries included; a
                    // redirect after a failover needs one or two.
                    shared: Box::new(client(2)?),
                    // redis-rs re-sends a command after an I/O error or a timeout, when it
                    // may have run already: scripts go through a client that never does,
                    // and `Pool::eval` retries only the replies that prove it did not run.
                    scripts: Box::new(client(0)?),
                    _dial: dial,
                }
            }
            Deployment::Sentinel(primary) => Connector::Sentinel(primary),
            Deployment::Server { dialer, server } => Connector::Server { dialer, server },
        };
        Ok(connector)
    }
}
