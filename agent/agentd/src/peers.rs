//! The agent's peers behind small traits, so that tests plug in-process
//! fakes and production the generated gRPC clients:
//!
//! - [`Runner`]: the computation runner (`runner.ComputationRunner` on
//!   `/run/cocos/runner.sock`), [`GrpcRunner`];
//! - [`ControlSink`]: the control stream to the management service
//!   ([`cocos_cvms::LinkHandle`], or [`NoControl`] for a VM run without
//!   one);
//! - [`AttestationProvider`]: the seam for the next issue; none is
//!   configured yet.
//!
//! The event sink is in [`crate::events`].

use std::path::PathBuf;

use cocos_proto::agent::{AttestationRequest, AttestationTokenRequest};
use cocos_proto::cvms::ClientStreamMessage;
use cocos_proto::runner::computation_runner_client::ComputationRunnerClient;
use cocos_proto::runner::{RunRequest, RunResponse, StopRequest};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Runs the algorithm.
#[tonic::async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs to completion; `RunResponse.error` says how the algorithm
    /// failed, `Err` that the runner could not be asked.
    async fn run(&self, request: RunRequest) -> Result<RunResponse, tonic::Status>;
    /// Stops the run of `computation_id`; `true` when one was running.
    async fn stop(&self, computation_id: &str) -> Result<bool, tonic::Status>;
}

/// The runner service, reached with the generated client.
#[derive(Debug, Clone)]
pub struct GrpcRunner {
    client: ComputationRunnerClient<Channel>,
}

impl GrpcRunner {
    /// A runner over `channel` (e.g. [`unix_channel`] of
    /// `/run/cocos/runner.sock`).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: ComputationRunnerClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl Runner for GrpcRunner {
    async fn run(&self, request: RunRequest) -> Result<RunResponse, tonic::Status> {
        // No deadline here: the runner enforces the configured run timeout.
        Ok(self.client.clone().run(request).await?.into_inner())
    }

    async fn stop(&self, computation_id: &str) -> Result<bool, tonic::Status> {
        let req = StopRequest {
            computation_id: computation_id.to_string(),
        };
        Ok(self.client.clone().stop(req).await?.into_inner().stopped)
    }
}

/// Sends `run_res`, `agentStateRes` and `stopComputationRes` to the
/// management service. Must not block.
pub trait ControlSink: Send + Sync + 'static {
    /// Queues `msg`.
    fn send(&self, msg: ClientStreamMessage);
}

impl ControlSink for cocos_cvms::LinkHandle {
    fn send(&self, msg: ClientStreamMessage) {
        cocos_cvms::LinkHandle::send(self, msg);
    }
}

/// No management service: control messages are only logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoControl;

impl ControlSink for NoControl {
    fn send(&self, msg: ClientStreamMessage) {
        tracing::info!(message = ?msg.message, "no management service: control message not sent");
    }
}

/// The text of the attestation RPCs while no provider is configured.
pub const NO_ATTESTATION_PROVIDER: &str = "no attestation provider configured";

/// Produces attestation evidence (the next issue plugs the attestation
/// service in here). Nonce lengths are checked before these are called.
#[tonic::async_trait]
pub trait AttestationProvider: Send + Sync + 'static {
    /// Evidence for `AgentService.Attestation`.
    async fn attestation(&self, request: AttestationRequest) -> Result<Vec<u8>, tonic::Status>;
    /// The IMA measurement list and PCR10 (SHA-1 bank).
    async fn ima_measurements(&self) -> Result<(Vec<u8>, Vec<u8>), tonic::Status>;
    /// An Azure MAA token.
    async fn azure_token(&self, request: AttestationTokenRequest)
    -> Result<Vec<u8>, tonic::Status>;
}

/// A channel to a gRPC server on a Unix socket, connected lazily (and
/// re-connected) on use, so the agent starts before its peers do.
pub fn unix_channel(path: impl Into<PathBuf>) -> Channel {
    let path: PathBuf = path.into();
    // The URI is required by the API and never dialled.
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        },
    ))
}
