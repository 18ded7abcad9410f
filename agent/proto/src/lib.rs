//! The wire schema of the agent's two external gRPC interfaces, as generated
//! Rust: [`agent`] (`agent.AgentService`: cocos-cli → ingress → agent) and
//! [`cvms`] (`cvms.Service/Process`: the agent's stream to the computation
//! management service), and the two VM-internal interfaces [`runner`] and
//! [`log`].
//!
//! The `.proto` files under `proto/` keep the names, types and field numbers
//! of the existing Go agent (agent-api.md §11), so that its CLI and its
//! management service interoperate with ours. The one addition is
//! `cvms.Algorithm.requirements_hash` (field 7), which older senders leave
//! empty.
//!
//! ```
//! use cocos_proto::cvms::{Algorithm, ComputationRunReq};
//! use prost::Message;
//!
//! let req = ComputationRunReq {
//!     id: "c1".into(),
//!     algorithm: Some(Algorithm { hash: vec![0; 32], ..Default::default() }),
//!     ..Default::default()
//! };
//! let bytes = req.encode_to_vec();
//! assert_eq!(ComputationRunReq::decode(bytes.as_slice()).unwrap(), req);
//! ```

// Generated code: its items carry the .proto comments, not rustdoc of ours.
#![allow(missing_docs)]

pub use prost;
pub use prost_types;
pub use tonic;

/// `agent.AgentService` and its messages (package `agent`).
pub mod agent {
    tonic::include_proto!("agent");
}

/// `cvms.Service` and its messages (package `cvms`).
// `ServerStreamMessage::RunReq` holds a whole manifest inline, as prost
// generates it; boxing it would change the generated API for little gain.
#[allow(clippy::large_enum_variant)]
pub mod cvms {
    tonic::include_proto!("cvms");
}

/// `runner.ComputationRunner` (agent → computation runner, on
/// `/run/cocos/runner.sock`; internal to the VM).
pub mod runner {
    tonic::include_proto!("runner");
}

/// `log.LogCollector` (every service → log forwarder, on
/// `/run/cocos/log.sock`; internal to the VM). Its messages are
/// [`cvms::AgentLog`] and [`cvms::AgentEvent`], relayed as they are.
pub mod log {
    tonic::include_proto!("log");
}

/// Paths of the `.proto` files, for tests that generate a second
/// implementation (e.g. Python's grpcio-tools) from the same schema.
pub mod files {
    /// Directory holding `agent/agent.proto` and `cvms/cvms.proto`.
    pub const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
}
