//! The agent: the orchestrator of one computation inside the confidential
//! VM (seed 001, agent-api.md §3-§4). It takes the manifest from the
//! computation management service (or a JSON file), authenticates and
//! streams the algorithm and datasets to disk, has the computation runner
//! run the algorithm, and serves the zipped results to every declared
//! consumer.
//!
//! - [`state`]: the state machine as an explicit transition table.
//! - [`agent`]: [`Agent`], the orchestrator (manifest intake, commits,
//!   the run, per-consumer completion, stop).
//! - [`service`]: `agent.AgentService` ([`AgentGrpc`]).
//! - [`server`]: serving it, and [`run`], the whole process.
//! - [`peers`]: the runner, control stream and attestation seams;
//!   [`events`]: the event sink and ordered emitter.
//! - [`config`], [`layout`] (the work directory), [`error`] (statuses).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let config = cocos_agentd::Config::from_env()?;
//! cocos_agentd::run(config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```

pub mod agent;
pub mod config;
pub mod error;
pub mod events;
pub mod layout;
pub mod peers;
pub mod server;
pub mod service;
pub mod state;
pub mod upload;

pub use agent::{Agent, AgentError, Intake, ManifestSource, Services};
pub use config::{Caps, Config, Listen};
pub use error::ServiceError;
pub use events::{Emitter, EventSink, LogCollectorSink};
pub use peers::{
    AttestationProvider, ControlSink, GrpcRunner, NO_ATTESTATION_PROVIDER, NoControl, Runner,
    unix_channel,
};
pub use server::{run, run_with, serve, serve_tcp, serve_unix};
pub use service::AgentGrpc;
pub use state::{Event, EventStatus, State, StateMachine};
