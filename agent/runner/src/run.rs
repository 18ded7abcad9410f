//! One run: the checked request, its context, and the steps common to all
//! algorithm types.

use crate::config::RunnerConfig;
use crate::error::RunError;
use crate::output::RunOutput;
use crate::process::RunControl;
use crate::user::RunUser;
use crate::wasm::WasmRuntime;
use crate::workspace::{Scratch, hand_over_results, lock_down_datasets};
use crate::{docker, native, wasm};
use cocos_proto::runner::RunRequest;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The kind of algorithm, from `RunRequest.algo_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgoType {
    /// An executable (`"bin"`, also `"binary"` as the old proto comment
    /// spelled it; an empty type means `bin` too).
    Bin,
    /// A Python script (`"python"`), run in a fresh venv.
    Python,
    /// A WASI preview 1 module (`"wasm"`), run by wasmtime.
    Wasm,
    /// A `docker save` archive (`"docker"`), run by the Docker Engine.
    Docker,
}

impl AlgoType {
    /// Parses a wire name; `None` for an unsupported one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "" | "bin" | "binary" => Some(Self::Bin),
            "python" => Some(Self::Python),
            "wasm" => Some(Self::Wasm),
            "docker" => Some(Self::Docker),
            _ => None,
        }
    }
}

impl fmt::Display for AlgoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bin => "bin",
            Self::Python => "python",
            Self::Wasm => "wasm",
            Self::Docker => "docker",
        })
    }
}

/// A `RunRequest` whose fields have been checked.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) id: String,
    pub(crate) algo_type: AlgoType,
    pub(crate) algorithm: PathBuf,
    pub(crate) requirements: Option<PathBuf>,
    pub(crate) args: Vec<String>,
    pub(crate) datasets: PathBuf,
    pub(crate) results: PathBuf,
    /// The algorithm's working directory: the parent of `results`.
    pub(crate) workdir: PathBuf,
}

/// Checks a path from the request: non-empty, absolute, without `..`.
fn checked_path(value: &str, name: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err(format!("{name} is required"));
    }
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(format!("{name} must be an absolute path: {value}"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{name} must not contain '..': {value}"));
    }
    Ok(path)
}

impl Request {
    /// Checks `req`; the error is the gRPC INVALID_ARGUMENT message.
    pub(crate) fn from_proto(req: RunRequest) -> Result<Self, String> {
        if req.algorithm_path.is_empty() {
            return Err("algorithm path is required".to_owned());
        }
        let algo_type = AlgoType::parse(&req.algo_type)
            .ok_or_else(|| format!("unsupported algorithm type: {}", req.algo_type))?;
        let algorithm = checked_path(&req.algorithm_path, "algorithm path")?;
        let requirements = if req.requirements_path.is_empty() {
            None
        } else {
            Some(checked_path(&req.requirements_path, "requirements path")?)
        };
        let datasets = checked_path(&req.datasets_dir, "datasets directory")?;
        let results = checked_path(&req.results_dir, "results directory")?;
        if datasets.starts_with(&results) || results.starts_with(&datasets) {
            return Err("the datasets and results directories must be apart".to_owned());
        }
        let workdir = results
            .parent()
            .filter(|p| *p != Path::new("/"))
            .ok_or("the results directory must not be / or directly under it")?
            .to_path_buf();
        Ok(Self {
            id: req.computation_id,
            algo_type,
            algorithm,
            requirements,
            args: req.args,
            datasets,
            results,
            workdir,
        })
    }
}

/// Everything a run needs.
pub(crate) struct RunContext {
    pub(crate) config: Arc<RunnerConfig>,
    pub(crate) user: RunUser,
    pub(crate) out: Arc<RunOutput>,
    pub(crate) ctl: RunControl,
    pub(crate) request: Request,
    pub(crate) wasm: Arc<WasmRuntime>,
}

/// Prepares the directories and runs the algorithm.
pub(crate) async fn execute(ctx: &RunContext) -> Result<(), RunError> {
    let request = &ctx.request;
    lock_down_datasets(&request.datasets, &ctx.user)?;
    hand_over_results(&request.results, &ctx.user)?;
    match request.algo_type {
        AlgoType::Bin | AlgoType::Python => {
            let scratch = Scratch::create(ctx.config.scratch_dir.as_deref(), &ctx.user)?;
            let result = if request.algo_type == AlgoType::Bin {
                native::run_bin(ctx, &scratch).await
            } else {
                native::run_python(ctx, &scratch).await
            };
            scratch.remove();
            result
        }
        AlgoType::Wasm => wasm::run_wasm(ctx, &ctx.wasm).await,
        AlgoType::Docker => docker::run_docker(ctx).await,
    }
}
