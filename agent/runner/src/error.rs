//! Errors: [`RunnerError`] for starting the runner, [`RunError`] for one run.

use std::path::PathBuf;

/// Why the runner could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The configured run user is not in the user database.
    #[error("run user {0:?} not found in the user database")]
    UserNotFound(String),
    /// Looking the run user up failed.
    #[error("looking up run user {name:?}: {source}")]
    UserLookup {
        /// The user name.
        name: String,
        /// The lookup error.
        source: nix::Error,
    },
    /// The configured run user is root (uid 0): algorithms never run as root.
    #[error("run user {0:?} has uid 0; algorithms must not run as root")]
    RunUserIsRoot(String),
    /// Setting up the WebAssembly engine failed.
    #[error("wasm engine: {0}")]
    WasmEngine(String),
    /// A file-system operation on `path` failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Something other than a socket is in the way of the gRPC socket.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Why a run did not succeed. The `Display` text is what the consumer sees
/// in `RunResponse.error`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The algorithm exited with a non-zero status.
    #[error("algorithm exited with status {code}{}", tail_suffix(.stderr_tail))]
    Exited {
        /// The exit status.
        code: i32,
        /// The last line(s) of its stderr, bounded.
        stderr_tail: String,
    },
    /// The algorithm was killed by a signal it did not get from us.
    #[error("algorithm was killed by signal {signal} ({name}){}", tail_suffix(.stderr_tail))]
    Signaled {
        /// The signal number.
        signal: i32,
        /// The signal's name (SIGKILL, SIGSEGV, ...).
        name: String,
        /// The last line(s) of its stderr, bounded.
        stderr_tail: String,
    },
    /// The run took longer than its time limit.
    #[error("algorithm timed out after {0} s")]
    TimedOut(u64),
    /// `Stop` ended the run.
    #[error("computation stopped")]
    Stopped,
    /// A preparation step (directories, permissions, scratch space) failed.
    #[error("preparing the run: {what} {path}: {source}")]
    Prepare {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A step before the algorithm (venv, pip) failed.
    #[error("{step} failed: {detail}{}", tail_suffix(.stderr_tail))]
    Step {
        /// The step, e.g. "pip install -r requirements".
        step: &'static str,
        /// How it ended, e.g. "exit status 1".
        detail: String,
        /// The last line(s) of its stderr, bounded.
        stderr_tail: String,
    },
    /// The wasm module could not be loaded, linked or instantiated.
    #[error("wasm module: {0}")]
    WasmModule(String),
    /// The wasm module trapped.
    #[error("wasm trap: {0}")]
    WasmTrap(String),
    /// The wasm module tried to grow its memory past the limit.
    #[error("wasm memory limit of {0} bytes exceeded")]
    WasmMemoryLimit(u64),
    /// The wasm module wrote more than the output limit to stdout/stderr.
    #[error("wasm output limit of {0} bytes (stdout and stderr) exceeded")]
    WasmOutputLimit(u64),
    /// The results directory grew past the limit during a wasm run.
    #[error("results size limit of {0} bytes exceeded")]
    ResultsLimit(u64),
    /// The docker archive is not usable.
    #[error("docker archive: {0}")]
    DockerArchive(String),
    /// The runner itself failed (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
    /// The Docker Engine refused or failed a request.
    #[error("docker: {what}: {detail}")]
    Docker {
        /// The request, e.g. "loading the image".
        what: &'static str,
        /// The engine's error.
        detail: String,
    },
}

impl RunError {
    /// The value of `RunResponse.exit_code` for this failure: the status
    /// when the algorithm exited on its own, -1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exited { code, .. } => *code,
            _ => -1,
        }
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}
