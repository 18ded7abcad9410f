//! How the ingress secures an accepted TCP connection: the [`Handshake`]
//! seam, with TLS/mTLS by rustls ([`RustlsHandshake`]) and plaintext
//! ([`PlainHandshake`]).
//!
//! Attested TLS is not implemented here; it plugs in at this seam, in one of
//! two ways: a rustls [`ServerConfig`] with its own certificate resolver
//! (`ServerConfig::cert_resolver`) wrapped in [`RustlsHandshake::new`], or,
//! for a protocol that adds steps after the TLS handshake (exported
//! authenticators, RFC 9261), an own implementation of [`Handshake`] given
//! as [`super::Security::Custom`].

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::pem::{self, PemError, PemSource};

/// The one application protocol the ingress carries: gRPC over HTTP/2.
/// gRPC clients refuse a TLS connection that did not negotiate it.
pub const ALPN_H2: &[u8] = b"h2";

/// A connection after its handshake, ready to be spliced to the agent.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ClientStream for T {}

/// The boxed future a [`Handshake`] returns.
pub type HandshakeFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<Box<dyn ClientStream>>> + Send + 'a>>;

/// Turns an accepted TCP connection into a secured byte stream. The ingress
/// bounds the whole call with its handshake timeout; an error refuses the
/// connection (and is logged with the peer's address).
pub trait Handshake: Send + Sync + 'static {
    /// Runs the handshake on `tcp`.
    fn handshake(&self, tcp: TcpStream) -> HandshakeFuture<'_>;

    /// A short name for logs, e.g. `TLS` or `mTLS`.
    fn name(&self) -> &'static str;
}

/// TLS (and mTLS when the config verifies clients) terminated by rustls.
pub struct RustlsHandshake {
    acceptor: tokio_rustls::TlsAcceptor,
    name: &'static str,
}

impl RustlsHandshake {
    /// Wraps a rustls server configuration. Any configuration works,
    /// including one with a custom certificate resolver; for the ingress it
    /// should offer ALPN [`ALPN_H2`], as [`server_config`] does. `name` is
    /// what logs call it (`TLS`, `mTLS`, ...).
    pub fn new(config: Arc<ServerConfig>, name: &'static str) -> Self {
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            name,
        }
    }
}

impl fmt::Debug for RustlsHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Handshake for RustlsHandshake {
    fn handshake(&self, tcp: TcpStream) -> HandshakeFuture<'_> {
        let accept = self.acceptor.accept(tcp);
        Box::pin(async move {
            let tls = accept.await?;
            let stream: Box<dyn ClientStream> = Box::new(tls);
            Ok(stream)
        })
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// No handshake: the TCP connection as it is (h2c). Only for development.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainHandshake;

impl Handshake for PlainHandshake {
    fn handshake(&self, tcp: TcpStream) -> HandshakeFuture<'_> {
        Box::pin(async move {
            let stream: Box<dyn ClientStream> = Box::new(tcp);
            Ok(stream)
        })
    }

    fn name(&self) -> &'static str {
        "plaintext"
    }
}

/// The ingress's certificate, key and (for mTLS) client CA.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server certificate chain, leaf first.
    pub cert: PemSource,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PemSource,
    /// When set, clients must present a certificate that chains to one of
    /// these CA certificates (mTLS).
    pub client_ca: Option<PemSource>,
}

/// A TLS configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A certificate or key could not be read or parsed.
    #[error("ingress TLS {0}")]
    Pem(#[from] PemError),
    /// The certificate is not a usable X.509 certificate.
    #[error("ingress TLS cert ({origin}): {source}")]
    Certificate {
        /// Path of the certificate, or `inline PEM`.
        origin: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error("ingress TLS key ({origin}): {source}")]
    Key {
        /// Path of the key, or `inline PEM`.
        origin: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The key is not the certificate's.
    #[error("ingress TLS key ({key}) does not match the certificate ({cert})")]
    KeyMismatch {
        /// Path of the certificate, or `inline PEM`.
        cert: String,
        /// Path of the key, or `inline PEM`.
        key: String,
    },
    /// A client CA certificate cannot serve as a trust anchor.
    #[error("ingress TLS client_ca ({origin}): {reason}")]
    ClientCa {
        /// Path of the CA file, or `inline PEM`.
        origin: String,
        /// Why it was refused.
        reason: String,
    },
    /// rustls refused the protocol versions (cannot happen with the ring
    /// provider; kept so that the error is not lost if it ever does).
    #[error("ingress TLS: {0}")]
    Rustls(#[source] rustls::Error),
}

/// The rustls server configuration for `files`: the ring provider, TLS 1.3
/// and 1.2 only (1.3 preferred, as rustls does when both sides offer it),
/// ALPN `h2`, and client certificates required and verified against
/// `client_ca` when it is set.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = pem::load_certificates("cert", &files.cert)?;
    let key = pem::load_private_key("key", &files.key)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsConfigError::Rustls)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsConfigError::KeyMismatch {
            cert: files.cert.origin(),
            key: files.key.origin(),
        },
        e @ rustls::Error::InvalidCertificate(_) => TlsConfigError::Certificate {
            origin: files.cert.origin(),
            source: e,
        },
        e => TlsConfigError::Key {
            origin: files.key.origin(),
            source: e,
        },
    })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn client_verifier(
    ca: &PemSource,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsConfigError> {
    let refused = |reason: String| TlsConfigError::ClientCa {
        origin: ca.origin(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in pem::load_certificates("client_ca", ca)?
        .into_iter()
        .enumerate()
    {
        roots
            .add(cert)
            .map_err(|e| refused(format!("certificate {}: {e}", i + 1)))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| refused(e.to_string()))
}
