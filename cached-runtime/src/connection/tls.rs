//! The TLS client every `rediss://` connection of this crate goes through: rustls with the
//! ring provider passed explicitly, verifying against the system's roots or a given CA, with
//! an optional client certificate. No process-wide crypto provider is installed, so an
//! application that uses another provider (or none) elsewhere is unaffected.

use std::{io, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::config::TlsOptions;

/// A TLS client configuration, built once per connection setup and shared by its connects.
pub(crate) struct Tls {
    connector: TlsConnector,
}

impl Tls {
    /// The client `options` describe; an error says which part is wrong, never its bytes.
    pub(crate) fn new(options: &TlsOptions) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &options.ca {
            Some(ca) => {
                let pem = ca.read("TLS CA")?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert =
                        cert.map_err(|e| format!("the TLS CA ({ca:?}) is not valid PEM: {e}"))?;
                    roots.add(cert).map_err(|e| {
                        format!("the TLS CA ({ca:?}) holds an unusable certificate: {e}")
                    })?;
                }
                if roots.is_empty() {
                    return Err(format!("the TLS CA ({ca:?}) holds no certificate"));
                }
                roots
            }
            None => native_roots()?,
        };
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if options.accept_invalid_hostnames {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider)
                .build()
                .map_err(|e| format!("the TLS CA cannot verify certificates: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
        } else {
            builder.with_root_certificates(roots)
        };
        let config = match &options.client {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let chain_pem = chain.read("TLS client certificate")?;
                let chain_der = CertificateDer::pem_slice_iter(&chain_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        format!("the TLS client certificate ({chain:?}) is not valid PEM: {e}")
                    })?;
                if chain_der.is_empty() {
                    return Err(format!(
                        "the TLS client certificate ({chain:?}) holds no certificate"
                    ));
                }
                let key_pem = key.read("TLS client key")?;
                // The key's parse error says nothing of its bytes.
                let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    format!("the TLS client key ({key:?}) is not a PEM private key: {e}")
                })?;
                builder
                    .with_client_auth_cert(chain_der, key_der)
                    .map_err(|e| {
                        format!(
                            "the TLS client certificate ({chain:?}) and key ({key:?}) do not \
                             form a usable pair: {e}"
                        )
                    })?
            }
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the TLS handshake over `tcp` with the server that must be `host`.
    pub(crate) async fn wrap(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, tcp).await
    }
}

/// The system's trusted roots, as redis-rs would load them.
fn native_roots() -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A certificate the store rejects is one fewer root, as in redis-rs.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(match native.errors.first() {
            Some(e) => format!("no trusted root certificates could be loaded: {e}"),
            None => "no trusted root certificates were found (give the CA: REDIS_TLS_CA_FILE)"
                .to_owned(),
        });
    }
    Ok(roots)
}

/// Verifies the chain and signatures like rustls, but accepts a certificate for any name:
/// [`danger_accept_invalid_hostnames_for_testing_only`](super::RedisBuilder::danger_accept_invalid_hostnames_for_testing_only).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
