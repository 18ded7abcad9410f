//! The confidential VM's network edges.
//!
//! - [`ingress`]: the one listener reachable from outside the VM (TCP
//!   7002). It terminates TLS or mTLS (rustls, ring) and splices the bytes to
//!   the agent's gRPC server on its Unix socket: a layer-4 proxy, so gRPC's
//!   HTTP/2 passes through unmodified. It is restartable, and a bad
//!   certificate is a start error.
//! - [`egress`]: an HTTP forward proxy on localhost (3128) for the agent and
//!   the algorithms, `CONNECT` and absolute-form HTTP/1, deny by default
//!   with an allowlist of `host[:port]` and `*.domain[:port]` patterns.
//!
//! Both share one accept loop: a bound on concurrent connections, and a
//! graceful stop (stop accepting, let open connections finish up to a
//! timeout, close the rest). [`ingress::serve_ingress`] and
//! [`egress::serve_egress`] run one until SIGTERM or SIGINT, for a service
//! binary; [`ingress::Ingress::start`] and [`egress::Egress::start`] return a
//! handle to stop it, for a caller that manages its lifetime.
//! [`ingress::IngressConfig::from_env`] and [`egress::EgressConfig::from_env`]
//! read the `COCOS_INGRESS_*` and `COCOS_EGRESS_*` variables.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cocos_proxy::egress::{EgressConfig, serve_egress};
//!
//! serve_egress(EgressConfig {
//!     allow: vec!["pypi.org".into(), "*.pythonhosted.org".into()],
//!     ..EgressConfig::default()
//! })
//! .await?;
//! # Ok(()) }
//! ```

pub mod egress;
mod env;
pub mod ingress;
pub mod pem;
mod server;

pub use env::EnvError;
pub use pem::{PemError, PemSource};

/// Waits for SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
async fn termination() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
