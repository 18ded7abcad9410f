//! Serving `agent.AgentService` (with gRPC health, service `agent`, which
//! the Go CLI checks) on a Unix socket or a TCP address, and the whole
//! agent process ([`run`]).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocos_cvms::{LinkConfig, spawn_link};
use cocos_proto::agent::agent_service_server::AgentServiceServer;
use cocos_proto::cvms::ServerStreamMessage;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::agent::{Agent, AgentError, Services};
use crate::config::{Config, Listen};
use crate::events::LogCollectorSink;
use crate::peers::{ControlSink, GrpcRunner, NoControl, unix_channel};
use crate::service::AgentGrpc;

/// Largest gRPC message accepted: the CLI sends 1 MiB chunks; this leaves
/// room for framing and for other clients' larger chunks.
pub const MAX_MESSAGE: usize = 8 << 20;

async fn router(agent: &Agent) -> Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("agent", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_serving::<AgentServiceServer<AgentGrpc>>()
        .await;
    Server::builder().add_service(health).add_service(
        AgentServiceServer::new(AgentGrpc::new(agent.clone()))
            .max_decoding_message_size(MAX_MESSAGE),
    )
}

/// Serves the agent on the Unix socket `path` (a stale socket file is
/// replaced) until `shutdown` completes.
pub async fn serve_unix(
    agent: &Agent,
    path: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let err = |message: String| AgentError::Serve {
        address: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("removing the old socket: {e}"))),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    tracing::info!(socket = %path.display(), "AgentService listening");
    router(agent)
        .await
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| err(e.to_string()))
}

/// Serves the agent on a TCP listener until `shutdown` completes.
pub async fn serve_tcp(
    agent: &Agent,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%address, "AgentService listening (TCP)");
    router(agent)
        .await
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| AgentError::Serve {
            address,
            message: e.to_string(),
        })
}

/// Serves on `listen` until `shutdown` completes.
pub async fn serve(
    agent: &Agent,
    listen: &Listen,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    match listen {
        Listen::Unix(path) => serve_unix(agent, path, shutdown).await,
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(|e| AgentError::Serve {
                    address: addr.clone(),
                    message: e.to_string(),
                })?;
            serve_tcp(agent, listener, shutdown).await
        }
    }
}

/// Feeds the management service's messages to the agent, in order, and
/// drops idle partial manifests every 5 s; ends when the link closes.
pub async fn intake(agent: Agent, mut incoming: mpsc::Receiver<ServerStreamMessage>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            msg = incoming.recv() => match msg {
                Some(m) => agent.handle_server_message(m, Instant::now()).await,
                None => break,
            },
            _ = tick.tick() => {
                agent.expire_partial_manifests(Instant::now());
            }
        }
    }
}

/// The agent process: connects the runner and log-forwarder sockets and
/// the management service (when configured), starts the machine, takes
/// the manifest file (when configured), and serves until `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let (control, incoming, link): (Arc<dyn ControlSink>, _, _) = match config.cvms.clone() {
        Some(settings) => {
            let (link, incoming) = spawn_link(settings, LinkConfig::default());
            (Arc::new(link.clone()), Some(incoming), Some(link))
        }
        None => (Arc::new(NoControl), None, None),
    };
    let services = Services {
        runner: Arc::new(GrpcRunner::new(unix_channel(&config.runner_socket))),
        events: Arc::new(LogCollectorSink::new(unix_channel(&config.log_socket))),
        control,
        attestation: None,
    };
    let result = run_with(config, services, incoming, shutdown).await;
    if let Some(link) = link {
        link.shutdown();
    }
    result
}

/// [`run`] with the peers given (tests, or another wiring of them).
pub async fn run_with(
    config: Config,
    services: Services,
    incoming: Option<mpsc::Receiver<ServerStreamMessage>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let listen = config.listen.clone();
    let agent = Agent::new(config, services)?;
    agent.start().await?;
    let feeder = incoming.map(|rx| tokio::spawn(intake(agent.clone(), rx)));
    let served = serve(&agent, &listen, shutdown).await;
    if let Some(f) = feeder {
        f.abort();
    }
    served
}
