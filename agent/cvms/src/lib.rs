//! The agent's link to the computation management service (CVMS): the
//! agent dials out and keeps one bidirectional `cvms.Service/Process`
//! stream (agent-api.md §6), on which it receives manifests, stop and state
//! requests, and sends run, stop and state responses. The log forwarder
//! opens a second stream with the same settings for logs and events.
//!
//! - [`settings`]: [`CvmsSettings`] from `AGENT_CVM_GRPC_*` / `AGENT_CVM_ID`
//!   or from code.
//! - [`connect`](mod@connect): [`connect()`] to a tonic `Channel`
//!   (plaintext, TLS, mTLS), the `job-id` and `connection-type` metadata,
//!   and [`open_process`].
//! - [`reassembly`]: [`Reassembler`] for manifests sent as `RunReqChunks`.
//! - [`link`]: [`spawn_link`], the reconnecting control stream with its
//!   bounded send queue.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use cocos_cvms::{CvmsSettings, LinkConfig, spawn_link};
//!
//! let settings = CvmsSettings::from_env()?.unwrap_or_else(|| CvmsSettings::new("localhost:7001", "vm-1"));
//! let (link, mut incoming) = spawn_link(settings, LinkConfig::default());
//! while let Some(msg) = incoming.recv().await {
//!     println!("{msg:?}");
//! }
//! link.shutdown();
//! # Ok(()) }
//! ```

pub mod connect;
pub mod link;
pub mod reassembly;
pub mod settings;

pub use connect::{
    CONNECTION_TYPE_METADATA, ConnectError, JOB_ID_METADATA, LOG_FORWARDER_CONNECTION_TYPE,
    connect, endpoint, open_process,
};
pub use link::{LinkConfig, LinkHandle, LinkStatus, spawn_link};
pub use reassembly::{Reassembler, ReassemblyError, ReassemblyLimits};
pub use settings::{CvmsSettings, Security, SettingsError};
