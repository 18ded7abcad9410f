//! The ingress: the one listener reachable from outside the VM (TCP
//! `0.0.0.0:7002`), in front of the agent's gRPC server on a Unix socket.
//!
//! It is a layer-4 proxy: it terminates TLS (rustls, ring provider, TLS 1.2
//! minimum, ALPN `h2`) and splices the decrypted bytes to a fresh connection
//! to the agent's socket, both ways, with half-close. The HTTP/2 (gRPC)
//! stream passes through unmodified; nothing is parsed or buffered beyond a
//! copy buffer.
//!
//! Unlike the existing Go ingress it can be started again after a stop, and a
//! bad certificate, key or CA is an error returned by [`Ingress::start`], not
//! only a log line. Plaintext (h2c) needs both [`Security::Plaintext`] and
//! [`IngressConfig::allow_plaintext`]: a configuration that merely lacks a
//! certificate never falls back to plaintext.
//!
//! ```no_run
//! # async fn run() -> Result<(), cocos_proxy::ingress::IngressError> {
//! use cocos_proxy::PemSource;
//! use cocos_proxy::ingress::{Ingress, IngressConfig, Security, TlsFiles};
//!
//! let config = IngressConfig::new(Security::Tls(TlsFiles {
//!     cert: PemSource::Path("/etc/certs/cert.pem".into()),
//!     key: PemSource::Path("/etc/certs/key.pem".into()),
//!     client_ca: Some(PemSource::Path("/etc/certs/ca.pem".into())),
//! }));
//! let ingress = Ingress::start(config).await?;
//! // ... serve ...
//! ingress.stop().await;
//! # Ok(()) }
//! ```

mod handshake;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tracing::{debug, info, warn};

pub use handshake::{
    ALPN_H2, ClientStream, Handshake, HandshakeFuture, PlainHandshake, RustlsHandshake,
    TlsConfigError, TlsFiles, server_config,
};

use crate::PemSource;
use crate::env::{EnvError, Vars};
use crate::server::{ConnContext, Limits, Running, splice};

/// The port the existing agent's ingress listens on; the manager forwards a
/// host port to it (agent-api.md §1.2).
pub const DEFAULT_PORT: u16 = 7002;

/// The agent's gRPC socket (agent-api.md §1.1).
pub const DEFAULT_UPSTREAM: &str = "/run/cocos/agent.sock";

/// Bound on closing a client connection cleanly when the agent cannot be
/// reached (a client that does not read must not hold the slot).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the ingress secures client connections.
#[derive(Clone)]
pub enum Security {
    /// TLS with this certificate and key; mTLS when a client CA is given.
    Tls(TlsFiles),
    /// No encryption (h2c). Refused unless
    /// [`IngressConfig::allow_plaintext`] is set as well.
    Plaintext,
    /// Another handshake (the seam for attested TLS).
    Custom(Arc<dyn Handshake>),
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(files) => f.debug_tuple("Tls").field(files).finish(),
            Self::Plaintext => f.write_str("Plaintext"),
            Self::Custom(h) => write!(f, "Custom({})", h.name()),
        }
    }
}

/// Configuration of the ingress.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Where to listen (default `0.0.0.0:7002`).
    pub listen: SocketAddr,
    /// The agent's gRPC Unix socket (default `/run/cocos/agent.sock`).
    pub upstream: PathBuf,
    /// TLS, mTLS, plaintext or a custom handshake.
    pub security: Security,
    /// Must be `true` for [`Security::Plaintext`] to start (default false).
    pub allow_plaintext: bool,
    /// Connections served at once; further ones wait in the listen backlog
    /// (default 64).
    pub max_connections: usize,
    /// Time a client has to complete its handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// On stop, time open connections get to finish before they are closed
    /// (default 5 s, as the existing agent).
    pub shutdown_timeout: Duration,
}

impl IngressConfig {
    /// The defaults with `security`.
    pub fn new(security: Security) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            upstream: PathBuf::from(DEFAULT_UPSTREAM),
            security,
            allow_plaintext: false,
            max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl IngressConfig {
    /// The process environment; see [`from_lookup`](Self::from_lookup).
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The configuration from these variables, each optional (empty counts
    /// as unset; the defaults of [`IngressConfig::new`] otherwise):
    ///
    /// | variable | field |
    /// | --- | --- |
    /// | `COCOS_INGRESS_LISTEN` | `listen` (`0.0.0.0:7002`) |
    /// | `COCOS_INGRESS_UPSTREAM` | `upstream` (`/run/cocos/agent.sock`) |
    /// | `COCOS_INGRESS_CERT`, `COCOS_INGRESS_KEY` | [`Security::Tls`]: each a path or inline PEM ([`PemSource::from_config_value`]) |
    /// | `COCOS_INGRESS_CLIENT_CA` | `client_ca`: mTLS |
    /// | `COCOS_INGRESS_ALLOW_PLAINTEXT` | `allow_plaintext` (`true`/`false`) |
    /// | `COCOS_INGRESS_MAX_CONNECTIONS` | `max_connections` |
    /// | `COCOS_INGRESS_HANDSHAKE_TIMEOUT_SECS` | `handshake_timeout` |
    /// | `COCOS_INGRESS_SHUTDOWN_TIMEOUT_SECS` | `shutdown_timeout` |
    ///
    /// Without certificate and key the result is [`Security::Plaintext`],
    /// which [`Ingress::start`] refuses unless plaintext is allowed too. A
    /// certificate without a key (or the reverse), or a client CA without
    /// both, is an error.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let vars = Vars(get);
        let pem = |name: &str| {
            vars.get(name)
                .and_then(|v| PemSource::from_config_value(&v))
        };
        let security = match (
            pem("COCOS_INGRESS_CERT"),
            pem("COCOS_INGRESS_KEY"),
            pem("COCOS_INGRESS_CLIENT_CA"),
        ) {
            (Some(cert), Some(key), client_ca) => Security::Tls(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => Security::Plaintext,
            (Some(_), None, _) => {
                return Err(missing("COCOS_INGRESS_KEY", "set with COCOS_INGRESS_CERT"));
            }
            (None, Some(_), _) => {
                return Err(missing("COCOS_INGRESS_CERT", "set with COCOS_INGRESS_KEY"));
            }
            (None, None, Some(_)) => {
                return Err(missing(
                    "COCOS_INGRESS_CERT",
                    "mTLS (COCOS_INGRESS_CLIENT_CA) needs a certificate and key",
                ));
            }
        };
        let mut c = Self::new(security);
        if let Some(v) = vars.socket_addr("COCOS_INGRESS_LISTEN")? {
            c.listen = v;
        }
        if let Some(v) = vars.get("COCOS_INGRESS_UPSTREAM") {
            c.upstream = v.into();
        }
        if let Some(v) = vars.bool("COCOS_INGRESS_ALLOW_PLAINTEXT")? {
            c.allow_plaintext = v;
        }
        if let Some(v) = vars.count("COCOS_INGRESS_MAX_CONNECTIONS")? {
            c.max_connections = v;
        }
        if let Some(v) = vars.secs("COCOS_INGRESS_HANDSHAKE_TIMEOUT_SECS")? {
            c.handshake_timeout = v;
        }
        if let Some(v) = vars.secs("COCOS_INGRESS_SHUTDOWN_TIMEOUT_SECS")? {
            c.shutdown_timeout = v;
        }
        Ok(c)
    }
}

fn missing(name: &'static str, problem: &'static str) -> EnvError {
    EnvError {
        name,
        value: String::new(),
        problem,
    }
}

/// Why the ingress did not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The certificate, key or client CA is unusable.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// Plaintext was asked for without `allow_plaintext`.
    #[error("plaintext ingress refused: set allow_plaintext to serve without TLS")]
    PlaintextNotAllowed,
    /// `max_connections` is 0.
    #[error("ingress max_connections must be at least 1")]
    NoConnectionsAllowed,
    /// The listen address could not be bound.
    #[error("ingress cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for a termination signal failed ([`serve_ingress`]).
    #[error("cannot wait for a termination signal: {0}")]
    Signal(#[source] std::io::Error),
}

/// The ingress proxy. See the [module documentation](self).
#[derive(Debug)]
pub struct Ingress;

impl Ingress {
    /// Loads the certificates, binds the listener and starts serving.
    /// Every configuration error is returned here, before anything listens.
    pub async fn start(config: IngressConfig) -> Result<IngressHandle, IngressError> {
        if config.max_connections == 0 {
            return Err(IngressError::NoConnectionsAllowed);
        }
        let handshake: Arc<dyn Handshake> = match &config.security {
            Security::Tls(files) => {
                let name = if files.client_ca.is_some() {
                    "mTLS"
                } else {
                    "TLS"
                };
                Arc::new(RustlsHandshake::new(Arc::new(server_config(files)?), name))
            }
            Security::Plaintext if config.allow_plaintext => Arc::new(PlainHandshake),
            Security::Plaintext => return Err(IngressError::PlaintextNotAllowed),
            Security::Custom(h) => h.clone(),
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| IngressError::Bind {
                    addr: config.listen,
                    source,
                })?;

        let upstream = Arc::new(config.upstream.clone());
        let handshake_timeout = config.handshake_timeout;
        let mode = handshake.name();
        let limits = Limits {
            max_connections: config.max_connections,
            shutdown_timeout: config.shutdown_timeout,
        };
        let hs = handshake.clone();
        let running = Running::spawn("ingress", listener, limits, move |tcp, peer, cx| {
            serve_connection(
                tcp,
                peer,
                cx,
                hs.clone(),
                upstream.clone(),
                handshake_timeout,
            )
        })
        .map_err(|source| IngressError::Bind {
            addr: config.listen,
            source,
        })?;

        if matches!(config.security, Security::Plaintext) {
            warn!(
                addr = %running.local_addr(),
                "ingress serving PLAINTEXT (allow_plaintext is set): traffic to the agent is not encrypted"
            );
        }
        info!(
            addr = %running.local_addr(),
            upstream = %config.upstream.display(),
            mode,
            max_connections = config.max_connections,
            "ingress listening"
        );
        Ok(IngressHandle { running })
    }
}

/// A running ingress. Dropping it closes the listener and every connection
/// at once; [`IngressHandle::stop`] does so gracefully.
pub struct IngressHandle {
    running: Running,
}

impl fmt::Debug for IngressHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngressHandle")
            .field("local_addr", &self.running.local_addr())
            .finish_non_exhaustive()
    }
}

impl IngressHandle {
    /// The address listened on (the chosen port when port 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.running.open_connections()
    }

    /// Stops accepting, lets open connections finish for up to the shutdown
    /// timeout, then closes them. The port is free when this returns, so
    /// [`Ingress::start`] can be called again.
    pub async fn stop(mut self) {
        self.running.stop().await;
    }
}

/// Runs the ingress until SIGTERM or SIGINT, then stops it gracefully: the
/// entry point for a service binary.
pub async fn serve_ingress(config: IngressConfig) -> Result<(), IngressError> {
    let handle = Ingress::start(config).await?;
    let signal = crate::termination().await;
    handle.stop().await;
    signal.map_err(IngressError::Signal)
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    _cx: ConnContext,
    handshake: Arc<dyn Handshake>,
    upstream: Arc<PathBuf>,
    handshake_timeout: Duration,
) {
    // gRPC is many small frames; do not let Nagle hold them back.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    let mut client = match tokio::time::timeout(handshake_timeout, handshake.handshake(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            info!(%peer, mode = handshake.name(), "handshake refused: {e}");
            return;
        }
        Err(_) => {
            info!(%peer, mode = handshake.name(), timeout = ?handshake_timeout, "handshake timed out");
            return;
        }
    };
    let mut agent = match UnixStream::connect(upstream.as_path()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, upstream = %upstream.display(), "cannot reach the agent: {e}");
            // A clean close (TLS close_notify), so that the client sees the
            // end of the stream rather than a truncation.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown()).await;
            return;
        }
    };
    match splice(&mut client, &mut agent).await {
        Ok((up, down)) => {
            debug!(%peer, bytes_to_agent = up, bytes_to_client = down, "connection closed")
        }
        Err(e) => debug!(%peer, "connection ended: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_are_port_7002_and_the_agent_socket() {
        let c = IngressConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c.listen, "0.0.0.0:7002".parse::<SocketAddr>().unwrap());
        assert_eq!(c.upstream, PathBuf::from("/run/cocos/agent.sock"));
        assert!(matches!(c.security, Security::Plaintext));
        assert!(!c.allow_plaintext);
        assert_eq!(c.max_connections, 64);
    }

    #[test]
    fn certificate_key_and_client_ca_make_mtls() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let c = IngressConfig::from_lookup(lookup(&[
            ("COCOS_INGRESS_CERT", "/etc/certs/cert.pem"),
            ("COCOS_INGRESS_KEY", "/etc/certs/key.pem"),
            ("COCOS_INGRESS_CLIENT_CA", pem),
            ("COCOS_INGRESS_LISTEN", "127.0.0.1:7443"),
            ("COCOS_INGRESS_MAX_CONNECTIONS", "8"),
            ("COCOS_INGRESS_SHUTDOWN_TIMEOUT_SECS", "2"),
        ]))
        .unwrap();
        let Security::Tls(files) = &c.security else {
            panic!("{:?}", c.security)
        };
        assert_eq!(files.cert, PemSource::Path("/etc/certs/cert.pem".into()));
        assert_eq!(files.client_ca, Some(PemSource::Inline(pem.into())));
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.max_connections, 8);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
    }

    #[test]
    fn half_a_certificate_configuration_is_an_error() {
        let e =
            IngressConfig::from_lookup(lookup(&[("COCOS_INGRESS_CERT", "/c.pem")])).unwrap_err();
        assert_eq!(e.name, "COCOS_INGRESS_KEY");
        let e = IngressConfig::from_lookup(lookup(&[("COCOS_INGRESS_CLIENT_CA", "/ca.pem")]))
            .unwrap_err();
        assert_eq!(e.name, "COCOS_INGRESS_CERT");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = IngressConfig::from_lookup(lookup(&[("COCOS_INGRESS_ALLOW_PLAINTEXT", "yes")]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "COCOS_INGRESS_ALLOW_PLAINTEXT=\"yes\": expected true or false"
        );
        let e =
            IngressConfig::from_lookup(lookup(&[("COCOS_INGRESS_LISTEN", "7002")])).unwrap_err();
        assert_eq!(e.name, "COCOS_INGRESS_LISTEN");
    }
}
