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

use crate::env::{EnvError, Vars};
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

impl EgressConfig {
    /// The process environment; see [`from_lookup`](Self::from_lookup).
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The configuration from these variables, each optional (empty counts
    /// as unset; the [`Default`] otherwise):
    ///
    /// | variable | field |
    /// | --- | --- |
    /// | `COCOS_EGRESS_LISTEN` | `listen` (`127.0.0.1:3128`) |
    /// | `COCOS_PROXY_PORT` | the port of `listen` on 127.0.0.1, as the existing egress proxy reads it; `COCOS_EGRESS_LISTEN` wins |
    /// | `COCOS_EGRESS_ALLOW` | `allow`: patterns separated by commas or white space |
    /// | `COCOS_EGRESS_DIAL_TIMEOUT_SECS` | `dial_timeout` |
    /// | `COCOS_EGRESS_ALLOW_NON_LOOPBACK` | `allow_non_loopback` (`true`/`false`) |
    /// | `COCOS_EGRESS_MAX_CONNECTIONS` | `max_connections` |
    /// | `COCOS_EGRESS_SHUTDOWN_TIMEOUT_SECS` | `shutdown_timeout` |
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let vars = Vars(get);
        let mut c = Self::default();
        if let Some(port) = vars.port("COCOS_PROXY_PORT")? {
            c.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        }
        if let Some(v) = vars.socket_addr("COCOS_EGRESS_LISTEN")? {
            c.listen = v;
        }
        if let Some(v) = vars.get("COCOS_EGRESS_ALLOW") {
            c.allow = v
                .split(|ch: char| ch == ',' || ch.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = vars.secs("COCOS_EGRESS_DIAL_TIMEOUT_SECS")? {
            c.dial_timeout = v;
        }
        if let Some(v) = vars.bool("COCOS_EGRESS_ALLOW_NON_LOOPBACK")? {
            c.allow_non_loopback = v;
        }
        if let Some(v) = vars.count("COCOS_EGRESS_MAX_CONNECTIONS")? {
            c.max_connections = v;
        }
        if let Some(v) = vars.secs("COCOS_EGRESS_SHUTDOWN_TIMEOUT_SECS")? {
            c.shutdown_timeout = v;
        }
        Ok(c)
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
    fn defaults_are_localhost_3128_and_deny_all() {
        let c = EgressConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3128".parse::<SocketAddr>().unwrap());
        assert!(c.allow.is_empty());
        assert_eq!(c.dial_timeout, Duration::from_secs(10));
    }

    #[test]
    fn allow_list_splits_on_commas_and_white_space() {
        let c = EgressConfig::from_lookup(lookup(&[(
            "COCOS_EGRESS_ALLOW",
            "pypi.org, *.pythonhosted.org\n example.com:8443,,",
        )]))
        .unwrap();
        assert_eq!(
            c.allow,
            ["pypi.org", "*.pythonhosted.org", "example.com:8443"]
        );
    }

    #[test]
    fn the_go_proxy_port_variable_is_honoured_on_localhost() {
        let c = EgressConfig::from_lookup(lookup(&[("COCOS_PROXY_PORT", "3129")])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3129".parse::<SocketAddr>().unwrap());
        let c = EgressConfig::from_lookup(lookup(&[
            ("COCOS_PROXY_PORT", "3129"),
            ("COCOS_EGRESS_LISTEN", "127.0.0.2:4000"),
        ]))
        .unwrap();
        assert_eq!(c.listen, "127.0.0.2:4000".parse::<SocketAddr>().unwrap());
        let e = EgressConfig::from_lookup(lookup(&[("COCOS_PROXY_PORT", "0")])).unwrap_err();
        assert_eq!(e.name, "COCOS_PROXY_PORT");
    }
}
