//! The computation runner of the confidential VM's agent: it runs the
//! algorithm the agent has staged (an executable, a Python script, a
//! WebAssembly module or a Docker image archive) to its end, a time limit or
//! a Stop, and reports how it ended.
//!
//! The agent drives it over gRPC on a Unix socket (`runner.proto`,
//! [`cocos_proto::runner`]); [`serve`] serves that, and [`Runner`] is the
//! same service as a library. One run at a time.
//!
//! How algorithms are confined:
//! - `bin` and `python` run as the unprivileged run user
//!   ([`RunnerConfig::run_user`], `cocos-runner`) with no supplementary
//!   groups, in their own process group, with an environment of `PATH`,
//!   `HOME` (a per-run scratch directory), `LANG=C.UTF-8` and the egress
//!   proxy variables only; the datasets are theirs to read, not to change;
//!   the results directory is theirs. Stop and the time limit kill the whole
//!   process group, then every process left to the run user. See
//!   [`workspace`] for the file-system side.
//! - `wasm` runs in wasmtime under WASI preview 1 with `/datasets`
//!   (read-only) and `/results` (read-write), no environment, and limits on
//!   memory, time, output and results size ([`WasmLimits`]).
//! - `docker` loads the archive's one image into the Docker Engine and runs
//!   it with the datasets read-only and the results read-write, without
//!   network unless an egress proxy is configured.
//!
//! The algorithm's stdout and stderr go to an [`OutputSink`], in pieces of
//! at most 1 KiB; stderr also raises rate-limited "AlgorithmRun"/"Warning"
//! events.
//!
//! ```no_run
//! # async fn f() -> Result<(), cocos_runner::RunnerError> {
//! use cocos_runner::{LogSink, RunnerConfig, serve};
//! use std::sync::Arc;
//!
//! serve(RunnerConfig::default(), "/run/cocos/runner.sock".as_ref(), Arc::new(LogSink)).await
//! # }
//! ```

mod config;
mod docker;
mod error;
mod native;
mod output;
mod process;
mod run;
mod service;
mod user;
mod wasm;
pub mod workspace;

pub use config::{MAX_TIMEOUT_SECS, RunnerConfig, WasmLimits};
pub use docker::{CONTAINER_DATASETS, CONTAINER_RESULTS};
pub use error::{RunError, RunnerError};
pub use output::{
    EVENT_ALGORITHM_RUN, LogSink, MAX_PIECE, MemorySink, OutputRecord, OutputSink, STATUS_WARNING,
};
pub use run::AlgoType;
pub use service::{ALREADY_RUNNING, Runner, bind_socket, serve, serve_with_shutdown};
pub use user::RunUser;
pub use wasm::{GUEST_ARGV0, GUEST_DATASETS, GUEST_RESULTS};
