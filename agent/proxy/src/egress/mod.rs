//! The egress: an HTTP forward proxy on localhost through which the
//! agent and the algorithms reach the outside (`HTTP(S)_PROXY`), limited to
//! an [`Allowlist`].
//!
//! - `CONNECT host:port`: allowlist check, dial (bounded by
//!   [`EgressConfig::dial_timeout`]), `HTTP/1.1 200 Connection
//!   Established`, then bytes both ways with half-close. TLS stays
//!   end-to-end between the client and the server.
//! - Absolute-form HTTP/1.x (`GET http://host/path HTTP/1.1`): allowlist
//!   check, hop-by-hop headers removed, `Host` set from the request target,
//!   forwarded over a new connection; status, headers and body are streamed
//!   back as they come (no buffering of whole bodies). Redirects are
//!   returned to the client, never followed.
//! - Anything else is refused: origin-form requests (`GET /path`, this is
//!   not a web server) and `https://` in absolute form (a client uses
//!   CONNECT for https) get `400 Bad Request`.
//!
//! Status codes: `403 Forbidden` for a target not on the allowlist (logged
//! at WARN with the target), `502 Bad Gateway` when the target cannot be
//! resolved, refuses the connection or fails mid-request, `504 Gateway
//! Timeout` when the dial takes longer than the dial timeout.
//!
//! The listener must be a loopback address unless
//! [`EgressConfig::allow_non_loopback`] is set: the existing Go proxy
//! listened on every interface, making the VM an open proxy.

mod allow;
mod forward;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use allow::{Allowlist, DEFAULT_PORTS, Host, Pattern, PatternError, Target, TargetError};

use crate::server::{Limits, Running};

/// The port the existing egress proxy listens on (agent-api.md §1.3).
pub const DEFAULT_PORT: u16 = 3128;

/// Configuration of the egress proxy.
#[derive(Clone, Debug)]
pub struct EgressConfig {
    /// Where to listen (default `127.0.0.1:3128`). Must be a loopback
    /// address unless `allow_non_loopback` is set.
    pub listen: SocketAddr,
    /// Allowlist patterns (see [`Allowlist`]); empty denies everything.
    pub allow: Vec<String>,
    /// Bound on resolving and connecting to a target (default 10 s).
    pub dial_timeout: Duration,
    /// Permit a non-loopback listen address (default false).
    pub allow_non_loopback: bool,
    /// Client connections served at once, tunnels included (default 256).
    pub max_connections: usize,
    /// Time a client has to send a complete request head (default 30 s).
    pub header_read_timeout: Duration,
    /// On stop, time open connections get to finish (default 5 s).
    pub shutdown_timeout: Duration,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            allow: Vec::new(),
            dial_timeout: Duration::from_secs(10),
            allow_non_loopback: false,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Why the egress proxy did not start.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// An allowlist pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The listen address is not a loopback address.
    #[error(
        "egress listen address {0} is not a loopback address; set allow_non_loopback to listen there"
    )]
    NotLoopback(SocketAddr),
    /// `max_connections` is 0.
    #[error("egress max_connections must be at least 1")]
    NoConnectionsAllowed,
    /// The listen address could not be bound.
    #[error("egress cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for a termination signal failed ([`serve_egress`]).
    #[error("cannot wait for a termination signal: {0}")]
    Signal(#[source] std::io::Error),
}

/// The egress proxy. See the [module documentation](self).
#[derive(Debug)]
pub struct Egress;

impl Egress {
    /// Checks the configuration, binds the listener and starts serving.
    pub async fn start(config: EgressConfig) -> Result<EgressHandle, EgressError> {
        let allowlist = Allowlist::new(&config.allow)?;
        if !config.listen.ip().is_loopback() && !config.allow_non_loopback {
            return Err(EgressError::NotLoopback(config.listen));
        }
        if config.max_connections == 0 {
            return Err(EgressError::NoConnectionsAllowed);
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| EgressError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let settings = Arc::new(forward::Settings {
            allowlist,
            dial_timeout: config.dial_timeout,
            header_read_timeout: config.header_read_timeout,
        });
        let limits = Limits {
            max_connections: config.max_connections,
            shutdown_timeout: config.shutdown_timeout,
        };
        let running = Running::spawn("egress", listener, limits, move |tcp, peer, cx| {
            forward::serve_connection(tcp, peer, cx, settings.clone())
        })
        .map_err(|source| EgressError::Bind {
            addr: config.listen,
            source,
        })?;

        if !config.listen.ip().is_loopback() {
            warn!(addr = %running.local_addr(), "egress proxy listening on a non-loopback address");
        }
        if config.allow.is_empty() {
            warn!("egress allowlist is empty: every request will be refused");
        }
        info!(
            addr = %running.local_addr(),
            allow = ?config.allow,
            dial_timeout = ?config.dial_timeout,
            "egress proxy listening"
        );
        Ok(EgressHandle { running })
    }
}

/// A running egress proxy. Dropping it closes the listener and every
/// connection at once; [`EgressHandle::stop`] does so gracefully.
pub struct EgressHandle {
    running: Running,
}

impl fmt::Debug for EgressHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressHandle")
            .field("local_addr", &self.running.local_addr())
            .finish_non_exhaustive()
    }
}

impl EgressHandle {
    /// The address listened on (the chosen port when port 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// Stops accepting, lets open connections and tunnels finish for up to
    /// the shutdown timeout, then closes them.
    pub async fn stop(mut self) {
        self.running.stop().await;
    }
}

/// Runs the egress proxy until SIGTERM or SIGINT, then stops it gracefully:
/// the entry point for a service binary.
pub async fn serve_egress(config: EgressConfig) -> Result<(), EgressError> {
    let handle = Egress::start(config).await?;
    let signal = crate::termination().await;
    handle.stop().await;
    signal.map_err(EgressError::Signal)
}
