//! The [`Runner`] (one run at a time, Stop) and its gRPC service on a Unix
//! socket ([`serve`]).

use crate::config::RunnerConfig;
use crate::error::{RunError, RunnerError};
use crate::output::{OutputSink, RunOutput};
use crate::process::RunControl;
use crate::run::{Request, RunContext, execute};
use crate::user::RunUser;
use crate::wasm::WasmRuntime;
use cocos_proto::runner::computation_runner_server::{ComputationRunner, ComputationRunnerServer};
use cocos_proto::runner::{RunRequest, RunResponse, StopRequest, StopResponse};
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request as GrpcRequest, Response, Status};

/// `RunResponse.error` for a Run while another is active.
pub const ALREADY_RUNNING: &str = "computation already running";
/// How long Stop waits for the run to be torn down.
const STOP_WAIT: Duration = Duration::from_secs(60);

struct Active {
    serial: u64,
    id: String,
    cancel: CancellationToken,
    done: watch::Receiver<bool>,
}

struct Inner {
    config: Arc<RunnerConfig>,
    user: RunUser,
    sink: Arc<dyn OutputSink>,
    wasm: Arc<WasmRuntime>,
    active: Mutex<Option<Active>>,
    serial: Mutex<u64>,
}

impl Inner {
    fn active(&self) -> MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs algorithms, one at a time. Cheap to clone (shared state).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use cocos_runner::{MemorySink, Runner, RunnerConfig};
/// use cocos_proto::runner::RunRequest;
/// use std::sync::Arc;
///
/// let runner = Runner::new(RunnerConfig::default(), Arc::new(MemorySink::new()))?;
/// let response = runner
///     .run(RunRequest {
///         computation_id: "c1".into(),
///         algo_type: "bin".into(),
///         algorithm_path: "/cocos/algo".into(),
///         datasets_dir: "/cocos/datasets".into(),
///         results_dir: "/cocos/results".into(),
///         ..Default::default()
///     })
///     .await?;
/// assert_eq!(response.error, "");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

/// Clears the active run and signals its end when the run task finishes,
/// even by panic.
struct Finish {
    inner: Arc<Inner>,
    serial: u64,
    done: watch::Sender<bool>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let mut active = self.inner.active();
        if active.as_ref().is_some_and(|a| a.serial == self.serial) {
            *active = None;
        }
        drop(active);
        let _ = self.done.send(true);
    }
}

impl Runner {
    /// A runner with `config`, sending output to `sink`. Resolves the run
    /// user and sets up the wasm engine.
    pub fn new(config: RunnerConfig, sink: Arc<dyn OutputSink>) -> Result<Self, RunnerError> {
        let user = RunUser::resolve(&config.run_user)?;
        tracing::info!(user = user.name, uid = %user.uid, gid = %user.gid, switch = user.switch, "run user");
        let wasm = Arc::new(WasmRuntime::new()?);
        Ok(Self {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                user,
                sink,
                wasm,
                active: Mutex::new(None),
                serial: Mutex::new(0),
            }),
        })
    }

    /// The identity algorithms run as.
    pub fn run_user(&self) -> &RunUser {
        &self.inner.user
    }

    /// Runs `req` to its end. Invalid requests are `INVALID_ARGUMENT`; every
    /// other failure, and a Run while another is active, is
    /// `RunResponse.error`.
    ///
    /// The run goes on in its own task; if the caller goes away (the RPC is
    /// cancelled) the run is stopped, since nobody would get its result.
    pub async fn run(&self, req: RunRequest) -> Result<RunResponse, Status> {
        let request = Request::from_proto(req).map_err(Status::invalid_argument)?;
        let id = request.id.clone();
        let cancel = CancellationToken::new();
        let (done_tx, done_rx) = watch::channel(false);
        let serial = {
            let mut serial = self
                .inner
                .serial
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *serial += 1;
            *serial
        };
        {
            let mut active = self.inner.active();
            if let Some(current) = active.as_ref() {
                tracing::warn!(
                    computation_id = id,
                    running = current.id,
                    "{ALREADY_RUNNING}"
                );
                return Ok(RunResponse {
                    computation_id: id,
                    error: ALREADY_RUNNING.to_owned(),
                    exit_code: -1,
                });
            }
            *active = Some(Active {
                serial,
                id: id.clone(),
                cancel: cancel.clone(),
                done: done_rx,
            });
        }
        let config = self.inner.config.clone();
        let ctx = RunContext {
            out: Arc::new(RunOutput::new(
                &id,
                self.inner.sink.clone(),
                Duration::from_millis(config.stderr_event_interval_ms),
            )),
            ctl: RunControl {
                deadline: tokio::time::Instant::now() + config.run_timeout(),
                timeout_secs: config.run_timeout_secs,
                cancel: cancel.clone(),
            },
            config,
            user: self.inner.user.clone(),
            request,
            wasm: self.inner.wasm.clone(),
        };
        let finish = Finish {
            inner: self.inner.clone(),
            serial,
            done: done_tx,
        };
        tracing::info!(
            computation_id = id,
            algo_type = %ctx.request.algo_type,
            algorithm = %ctx.request.algorithm.display(),
            "run started"
        );
        let task = tokio::spawn(async move {
            let _finish = finish;
            let result = execute(&ctx).await;
            ctx.out.finish();
            result
        });
        let guard = cancel.drop_guard();
        let joined = task.await;
        guard.disarm();
        let result = joined
            .unwrap_or_else(|err| Err(RunError::Internal(format!("the run task failed: {err}"))));
        let response = match result {
            Ok(()) => {
                tracing::info!(computation_id = id, "run succeeded");
                RunResponse {
                    computation_id: id,
                    error: String::new(),
                    exit_code: 0,
                }
            }
            Err(err) => {
                tracing::warn!(computation_id = id, error = %err, "run failed");
                RunResponse {
                    computation_id: id,
                    exit_code: err.exit_code(),
                    error: err.to_string(),
                }
            }
        };
        Ok(response)
    }

    /// Stops the run of `computation_id` (any run when it is empty) and
    /// waits until it is torn down: its processes killed, its container or
    /// wasm instance gone. False when no such run was active.
    pub async fn stop(&self, computation_id: &str) -> bool {
        let (cancel, mut done) = {
            let active = self.inner.active();
            match active.as_ref() {
                Some(a) if computation_id.is_empty() || a.id == computation_id => {
                    (a.cancel.clone(), a.done.clone())
                }
                Some(a) => {
                    tracing::warn!(
                        requested = computation_id,
                        running = a.id,
                        "stop of a computation that is not running"
                    );
                    return false;
                }
                None => return false,
            }
        };
        tracing::info!(computation_id, "stopping the run");
        cancel.cancel();
        if tokio::time::timeout(STOP_WAIT, done.wait_for(|d| *d))
            .await
            .is_err()
        {
            tracing::warn!(
                computation_id,
                "the run did not end within {STOP_WAIT:?} of Stop"
            );
        }
        true
    }

    /// The gRPC service of this runner.
    pub fn into_service(self) -> ComputationRunnerServer<Self> {
        ComputationRunnerServer::new(self)
    }
}

#[tonic::async_trait]
impl ComputationRunner for Runner {
    async fn run(&self, request: GrpcRequest<RunRequest>) -> Result<Response<RunResponse>, Status> {
        Runner::run(self, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop(
        &self,
        request: GrpcRequest<StopRequest>,
    ) -> Result<Response<StopResponse>, Status> {
        let stopped = Runner::stop(self, &request.into_inner().computation_id).await;
        Ok(Response::new(StopResponse { stopped }))
    }
}

/// Binds the gRPC Unix socket at `path`: a stale socket there is removed
/// first (anything else is an error), and the socket gets `mode`.
pub fn bind_socket(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, RunnerError> {
    let io = |what| {
        let path = path.to_path_buf();
        move |source| RunnerError::Io { what, path, source }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io("remove stale socket"))?
        }
        Ok(_) => return Err(RunnerError::NotASocket(path.to_path_buf())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io("stat")(err)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io("bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod"))?;
    Ok(listener)
}

/// Serves the runner's gRPC interface on the Unix socket `socket_path`
/// until `shutdown` completes; then stops the active run, if any. At start,
/// kills what a previous runner left running as the run user (see
/// [`RunnerConfig::sweep_user_processes`]).
pub async fn serve_with_shutdown(
    config: RunnerConfig,
    socket_path: &Path,
    output: Arc<dyn OutputSink>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunnerError> {
    let mode = config.socket_mode;
    let sweep = config.sweep_user_processes;
    let runner = Runner::new(config, output)?;
    if sweep && runner.run_user().switch {
        // A runner that died (crash, SIGKILL) left its algorithm running.
        crate::process::sweep_user(runner.run_user().uid).await;
    }
    let listener = bind_socket(socket_path, mode)?;
    tracing::info!(socket = %socket_path.display(), mode = format!("{mode:o}"), "runner listening");
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    // The server drains in-flight calls before it returns: stop the active
    // run first, so that its Run answers ("computation stopped") at once.
    let stopper = runner.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("runner shutting down");
        stopper.stop("").await;
    };
    let result = tonic::transport::Server::builder()
        .add_service(runner.clone().into_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    runner.stop("").await;
    let _ = std::fs::remove_file(socket_path);
    result.map_err(RunnerError::from)
}

/// Serves the runner's gRPC interface on the Unix socket `socket_path`
/// (mode from `config.socket_mode`, 0600 by default) until the process
/// gets SIGTERM or SIGINT.
pub async fn serve(
    config: RunnerConfig,
    socket_path: &Path,
    output: Arc<dyn OutputSink>,
) -> Result<(), RunnerError> {
    serve_with_shutdown(config, socket_path, output, termination()).await
}

async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(%err, "cannot watch for SIGTERM/SIGINT; serving until killed");
            std::future::pending::<()>().await;
        }
    }
}
