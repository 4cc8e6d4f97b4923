//! `rediss://` connections made by this crate: TCP, then TLS through rustls with the ring
//! provider passed explicitly, then the Redis handshake. No process-wide crypto provider is
//! installed, so an application that uses another provider (or none) elsewhere is unaffected.

use std::{io, sync::Arc, time::Duration};

use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, RedisResult,
    aio::MultiplexedConnection, io::tcp::socket2,
};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_rustls::TlsConnector;

pub(crate) struct Connector {
    host: String,
    port: u16,
    redis: RedisConnectionInfo,
    tls: TlsConnector,
    keepalive: socket2::TcpKeepalive,
}

impl Connector {
    /// For `info`, parsed from the URL with its `rediss` scheme read as `redis`.
    pub(crate) fn new(
        info: &ConnectionInfo,
        keepalive: socket2::TcpKeepalive,
    ) -> Result<Self, String> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err("a rediss url names a host and port".to_owned());
        };
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A certificate the store rejects is one fewer root, as in redis-rs.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(match native.errors.first() {
                Some(e) => format!("no trusted root certificates could be loaded: {e}"),
                None => "no trusted root certificates were found".to_owned(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            host: host.clone(),
            port: *port,
            redis: info.redis_settings().clone(),
            tls: TlsConnector::from(Arc::new(config)),
            keepalive,
        })
    }

    pub(crate) async fn connect(
        &self,
        response_timeout: Duration,
    ) -> RedisResult<MultiplexedConnection> {
        self.connect_with(AsyncConnectionConfig::new().set_response_timeout(Some(response_timeout)))
            .await
    }

    /// A connection with `config` (a push sender, for tracking).
    pub(crate) async fn connect_with(
        &self,
        config: AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&self.keepalive)?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = self.tls.connect(name, tcp).await?;
        let (conn, driver) =
            MultiplexedConnection::new_with_config(&self.redis, stream, config).await?;
        tokio::spawn(driver);
        Ok(conn)
    }
}
