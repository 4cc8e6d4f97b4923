//! Opening one connection to one server, the same way for every topology and every user of
//! the layer (the pool, scripts, tracking, blocking connections, the failover listener): TCP
//! with keepalive (or a unix socket), TLS when the server's role asks for it, then the Redis
//! handshake with the role's credentials, read from the provider on every connect if there
//! is one.
//!
//! A Redis Cluster connection makes its node connections itself, on nodes it learns from
//! `CLUSTER SLOTS` and redirects; [`Node`] is the connection type it is given, so every one of
//! them is dialled here too (see [`ClusterDial`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::FutureExt;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    io::tcp::socket2,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::{CredentialsProvider, RedisBuilder};
use crate::error::CacheError;

/// A byte stream to a server: TCP, TLS over TCP, or a unix socket.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Where a server listens.
#[derive(Clone, Debug)]
pub(crate) enum Addr {
    Tcp(String, u16),
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl Addr {
    /// The address of `info`, which came from a URL.
    pub(crate) fn of(info: &ConnectionInfo) -> Result<Self, String> {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) => Ok(Addr::Tcp(host.clone(), *port)),
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Ok(Addr::Unix(path.clone())),
            _ => Err("unsupported address".to_owned()),
        }
    }
}

/// How connections to the servers of one role (data nodes, or sentinels) are opened.
pub(crate) struct Dialer {
    #[cfg(feature = "tls")]
    tls: Option<Arc<super::tls::Tls>>,
    credentials: Option<Arc<dyn CredentialsProvider>>,
    /// Bound on TCP, TLS and the Redis handshake together.
    connect_timeout: Duration,
}

impl Dialer {
    /// Over TLS when `tls`, with `config`'s TLS options; credentials from `credentials` when
    /// given, else from the URLs.
    pub(crate) fn new(
        config: &RedisBuilder,
        tls: bool,
        credentials: Option<Arc<dyn CredentialsProvider>>,
    ) -> Result<Self, String> {
        #[cfg(feature = "tls")]
        let tls = if tls {
            Some(Arc::new(super::tls::Tls::new(&config.tls)?))
        } else {
            None
        };
        #[cfg(not(feature = "tls"))]
        if tls {
            return Err("rediss:// needs the `tls` feature of cached-runtime".to_owned());
        }
        Ok(Self {
            #[cfg(feature = "tls")]
            tls,
            credentials,
            connect_timeout: config.connect_timeout,
        })
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// `redis` with the provider's current credentials, if there is a provider.
    fn settings(&self, redis: &redis::RedisConnectionInfo) -> redis::RedisConnectionInfo {
        let Some(provider) = &self.credentials else {
            return redis.clone();
        };
        let now = provider.credentials();
        let mut out = redis::RedisConnectionInfo::default()
            .set_db(redis.db())
            .set_protocol(redis.protocol())
            .set_password(now.password);
        if let Some(user) = now.username {
            out = out.set_username(user);
        }
        out
    }

    /// A connected stream to `addr`: TLS-wrapped when this role uses TLS.
    pub(crate) async fn stream(&self, addr: &Addr) -> RedisResult<Box<dyn Io>> {
        let (host, port) = match addr {
            Addr::Tcp(host, port) => (host, *port),
            #[cfg(unix)]
            Addr::Unix(path) => return Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        };
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive())?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            // A plaintext server never answers a ClientHello: the handshake gets part of the
            // connect bound, so the error says so before the connect as a whole times out.
            let handshake = tokio::time::timeout(self.connect_timeout * 3 / 4, tls.wrap(host, tcp));
            return match handshake.await {
                Ok(Ok(stream)) => Ok(Box::new(stream)),
                Ok(Err(e)) => Err(tls_error(host, port, &e).unwrap_or_else(|| e.into())),
                Err(_) => Err(RedisError::from((
                    ErrorKind::Io,
                    TLS_FAILED,
                    format!(
                        "with {host}:{port}: no answer to the TLS handshake (is this a \
                         plaintext port behind rediss://?)"
                    ),
                ))),
            };
        }
        Ok(Box::new(tcp))
    }

    /// A multiplexed connection to `addr`, authenticated and set up as `redis` says (with
    /// the provider's credentials instead, if any), its driver spawned.
    pub(crate) async fn connect(
        &self,
        addr: &Addr,
        redis: &redis::RedisConnectionInfo,
        config: AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let connect = async {
            let stream = self.stream(addr).await?;
            #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
            let (mut conn, driver) =
                MultiplexedConnection::new_with_config(&self.settings(redis), stream, config)
                    .await?;
            tokio::spawn(driver);
            #[cfg(feature = "tls")]
            if self.tls.is_some() {
                // The server refuses our certificate (or its absence) only after the
                // handshake: one round trip here makes that a connect error that says so.
                super::connector::answers(&mut conn).await?;
            }
            Ok(conn)
        };
        #[cfg(feature = "tls")]
        let connect = async {
            match connect.await {
                Err(e) if self.tls.is_some() => Err(match addr {
                    Addr::Tcp(host, port) => tls_error(host, *port, &e).unwrap_or(e),
                    #[cfg(unix)]
                    Addr::Unix(_) => e,
                }),
                other => other,
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }

    /// A RESP2 pub/sub connection to `addr` (the failover listener's).
    pub(crate) async fn pubsub(
        &self,
        addr: &Addr,
        redis: &redis::RedisConnectionInfo,
    ) -> RedisResult<redis::aio::PubSub> {
        let connect = async {
            let stream = self.stream(addr).await?;
            redis::aio::PubSub::new(&self.settings(redis), stream).await
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }
}

/// Marks a failed TLS handshake, for [`is_tls_failure`].
const TLS_FAILED: &str = "TLS handshake failed";

/// The rustls error somewhere in `e`'s chain, if any.
#[cfg(feature = "tls")]
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        // redis-rs keeps an I/O error as `Arc<dyn Error>`, whose own `source` skips it.
        let e = match e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            Some(shared) => &**shared as &(dyn std::error::Error + 'static),
            None => e,
        };
        if let Some(found) = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        }) {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// A failed TLS setup with `host:port`, saying what rustls found; `None` when `e` is not
/// a TLS failure. With TLS 1.3 the server's verdict on our certificate arrives after the
/// handshake, on the first read: that counts too.
#[cfg(feature = "tls")]
fn tls_error(host: &str, port: u16, e: &(dyn std::error::Error + 'static)) -> Option<RedisError> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    let hint = match rustls_cause(e)? {
        Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "the server's certificate is for another host name"
        }
        Tls::InvalidCertificate(Cert::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA (check the TLS CA)"
        }
        Tls::InvalidCertificate(_) => "the server's certificate is not acceptable",
        Tls::InvalidMessage(_) => {
            "the server did not answer in TLS (is this a plaintext port behind rediss://?)"
        }
        Tls::AlertReceived(Alert::CertificateRequired | Alert::HandshakeFailure) => {
            "the server requires a client certificate (set one: REDIS_TLS_CLIENT_CERT_FILE)"
        }
        Tls::AlertReceived(
            Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown,
        ) => "the server does not accept our client certificate",
        _ => "see the cause",
    };
    Some(RedisError::from((
        ErrorKind::Io,
        TLS_FAILED,
        format!("with {host}:{port}: {hint}: {e}"),
    )))
}

/// Whether `e` is a failed TLS handshake.
pub(crate) fn is_tls_failure(e: &RedisError) -> bool {
    e.to_string().contains(TLS_FAILED)
}

/// Keepalive probes find a peer that vanished without a word (a failed-over host).
pub(crate) fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
}

/// Whether all of `urls` are `rediss://` (`Some(true)`) or none is (`Some(false)`); `None`
/// when they mix.
pub(crate) fn all_tls(urls: &[String]) -> Option<bool> {
    let tls = |u: &String| u.starts_with("rediss://");
    if urls.iter().all(tls) {
        Some(true)
    } else if urls.iter().any(tls) {
        None
    } else {
        Some(false)
    }
}

/// A URL of the configuration, `rediss://` read as `redis://` (TLS is the dialer's), as
/// redis-rs parses it; errors name `shown`, the redacted description.
pub(crate) fn parse_url(raw: &str, shown: &str) -> Result<ConnectionInfo, CacheError> {
    let plain = raw
        .strip_prefix("rediss://")
        .map_or_else(|| raw.to_owned(), |rest| format!("redis://{rest}"));
    plain
        .as_str()
        .into_connection_info()
        .map_err(|e| CacheError::InvalidUrl {
            url: shown.to_owned(),
            reason: e.to_string(),
        })
}

/// A server's address and settings, from its URL.
#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) addr: Addr,
    pub(crate) redis: redis::RedisConnectionInfo,
}

impl Server {
    pub(crate) fn parse(raw: &str, shown: &str) -> Result<Self, CacheError> {
        let info = parse_url(raw, shown)?;
        let addr = Addr::of(&info).map_err(|reason| CacheError::InvalidUrl {
            url: shown.to_owned(),
            reason,
        })?;
        Ok(Self {
            addr,
            redis: info.redis_settings().clone(),
        })
    }
}

// ---- cluster nodes ----------------------------------------------------------------------

/// redis-rs opens a cluster's node connections through [`Connect`](redis::cluster_async::Connect),
/// a static function given only the node's `ConnectionInfo`. So each cluster client's dialer
/// is registered here under an id, and the client carries the id in place of a username; a
/// [`Node`] connect looks the dialer up and authenticates with the real credentials.
static CLUSTERS: LazyLock<Mutex<HashMap<u64, Weak<ClusterDial>>>> = LazyLock::new(Mutex::default);
static NEXT_CLUSTER: AtomicU64 = AtomicU64::new(1);

/// Stands for a username in the cluster client's settings; never sent to a server.
const MARK: &str = "\u{0}cached-runtime-cluster:";

/// How one cluster client's node connections are made: the dialer and the nodes' settings
/// (credentials, protocol) from the seed URLs.
pub(crate) struct ClusterDial {
    id: u64,
    dialer: Dialer,
    redis: redis::RedisConnectionInfo,
}

impl ClusterDial {
    /// Registers a dialer for cluster nodes; it stays reachable while the returned handle
    /// lives.
    pub(crate) fn register(dialer: Dialer, redis: redis::RedisConnectionInfo) -> Arc<Self> {
        let id = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let dial = Arc::new(Self { id, dialer, redis });
        let mut clusters = CLUSTERS.lock().unwrap_or_else(PoisonError::into_inner);
        clusters.retain(|_, d| d.strong_count() > 0);
        clusters.insert(id, Arc::downgrade(&dial));
        dial
    }

    /// The dialer and the nodes' settings, for connections of this crate's own to a node.
    pub(crate) fn parts(&self) -> (&Dialer, &redis::RedisConnectionInfo) {
        (&self.dialer, &self.redis)
    }

    /// The username that names this dialer to [`Node`]'s connect.
    pub(crate) fn mark(&self) -> String {
        format!("{MARK}{}", self.id)
    }

    fn find(username: Option<&str>) -> RedisResult<Arc<Self>> {
        let id = username
            .and_then(|u| u.strip_prefix(MARK))
            .and_then(|id| id.parse::<u64>().ok());
        let found = id.and_then(|id| {
            CLUSTERS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .and_then(Weak::upgrade)
        });
        found.ok_or_else(|| {
            RedisError::from((
                ErrorKind::Client,
                "the cluster connection's settings are gone (its cache was dropped)",
            ))
        })
    }
}

impl Drop for ClusterDial {
    fn drop(&mut self) {
        CLUSTERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// One cluster node connection, opened by this crate's dialer.
#[derive(Clone)]
pub(crate) struct Node(MultiplexedConnection);

impl ConnectionLike for Node {
    #[inline]
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl redis::cluster_async::Connect for Node {
    fn connect_with_config<'a, T>(info: T, config: AsyncConnectionConfig) -> RedisFuture<'a, Self>
    where
        T: IntoConnectionInfo + Send + 'a,
    {
        async move {
            let info = info.into_connection_info()?;
            let dial = ClusterDial::find(info.redis_settings().username())?;
            let ConnectionAddr::Tcp(host, port) = info.addr() else {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "a cluster node has no host and port",
                )));
            };
            let redis = dial
                .redis
                .clone()
                .set_protocol(info.redis_settings().protocol());
            let conn = dial
                .dialer
                .connect(&Addr::Tcp(host.clone(), *port), &redis, config)
                .await?;
            Ok(Node(conn))
        }
        .boxed()
    }
}

/// The cluster connection type of this crate.
pub(crate) type ClusterConnection = redis::cluster_async::ClusterConnection<Node>;
