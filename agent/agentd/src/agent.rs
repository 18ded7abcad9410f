//! The orchestrator: one computation at a time, driven by the state
//! machine, fed by the management service (or a manifest file) and by the
//! `AgentService` calls, running the algorithm through the runner.
//!
//! All state lives in one `Core` behind a mutex held only for short,
//! non-blocking steps (checks, renames, queueing messages), so that events
//! and control messages are queued in the order the transitions happen.
//! Long work — streaming uploads, extraction, the run, zipping — happens
//! outside it, tagged with the [generation](StateMachine::generation) it
//! began in; when it comes back after a `Stop`, it finds the generation
//! changed and touches nothing.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use cocos_auth::{AuthError, AuthMetadata, Authorization, Role, Rpc, Verifier};
use cocos_cvms::Reassembler;
use cocos_manifest::{AlgoType, Manifest};
use cocos_proto::cvms::{
    AgentStateRes, ClientStreamMessage, ComputationRunReq, RunResponse, ServerStreamMessage,
    StopComputationResponse, client_stream_message, server_stream_message,
};
use cocos_proto::runner::RunRequest;
use serde_json::json;
use tempfile::{NamedTempFile, TempDir};

use crate::config::Config;
use crate::error::ServiceError;
use crate::events::{Emitter, EventSink};
use crate::layout::{WorkDir, empty_trash};
use crate::peers::{AttestationProvider, ControlSink, Runner};
use crate::state::{
    Context, Event, EventStatus, InvalidTransition, State, StateMachine, Transition,
};
use crate::upload::Spooled;

/// The agent's peers.
#[derive(Clone)]
pub struct Services {
    /// The computation runner.
    pub runner: Arc<dyn Runner>,
    /// Where events go (the log forwarder).
    pub events: Arc<dyn EventSink>,
    /// The control stream to the management service.
    pub control: Arc<dyn ControlSink>,
    /// Attestation evidence; `None` until the attestation service lands.
    pub attestation: Option<Arc<dyn AttestationProvider>>,
}

/// A manifest as it arrives.
#[derive(Debug, Clone)]
pub enum ManifestSource {
    /// From the management stream (`runReq`, or reassembled chunks).
    Wire(Box<ComputationRunReq>),
    /// The JSON form (agent-api.md §2.2), e.g. a file on the environment
    /// share.
    Json(Vec<u8>),
}

/// What became of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    /// Valid; the agent now waits for the algorithm.
    Accepted {
        /// The computation id.
        computation_id: String,
    },
    /// Invalid; `error` names every bad field. The agent still waits for
    /// a manifest.
    Rejected {
        /// The id the manifest gave (may be empty).
        computation_id: String,
        /// Why.
        error: String,
    },
    /// Not in `ReceivingManifest`: ignored (a re-delivery after a
    /// reconnect, or a second computation while one is in progress).
    Ignored {
        /// The id the manifest gave.
        computation_id: String,
        /// Why.
        reason: String,
    },
}

/// Why the agent could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The work directory could not be prepared.
    #[error("preparing the work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest file could not be read.
    #[error("reading the manifest file {path}: {source}")]
    ManifestFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An event the state machine refused.
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Serving `AgentService`.
    #[error("serving AgentService on {address}: {message}")]
    Serve {
        /// The socket or address.
        address: String,
        /// Why.
        message: String,
    },
}

/// An authenticated call, tied to the computation it was made for.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The generation when it was authenticated.
    pub generation: u64,
    /// That computation's manifest.
    pub manifest: Arc<Manifest>,
    /// What the signature established.
    pub auth: Authorization,
}

impl Ticket {
    /// The dataset a signed `Data` request names; `None` for legacy
    /// signatures, whose dataset is known only from the stream.
    pub fn signed_resource(&self) -> Option<&str> {
        match &self.auth {
            Authorization::Signed { request, .. } if request.rpc == Rpc::Data => {
                Some(&request.resource)
            }
            _ => None,
        }
    }

    /// The payload hash the signature covers, if it is a signed request.
    pub fn signed_payload(&self) -> Option<[u8; 32]> {
        match &self.auth {
            Authorization::Signed { request, .. } => request.payload_sha3,
            Authorization::Legacy { .. } => None,
        }
    }
}

/// The algorithm as accepted, with what the runner needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedAlgorithm {
    /// Its type.
    pub algo_type: AlgoType,
    /// Its arguments, in order.
    pub args: Vec<String>,
    /// Whether requirements.txt was uploaded.
    pub requirements: bool,
}

/// A dataset ready to be moved into place.
#[derive(Debug)]
pub enum StagedDataset {
    /// A file.
    File(Spooled),
    /// An extracted zip: the directory `dir/d`.
    Extracted {
        /// The staging directory (removed when dropped).
        dir: TempDir,
    },
}

/// The result file a `Result` call streams.
#[derive(Debug, Clone)]
pub struct ResultFile {
    /// The zip.
    pub path: PathBuf,
    /// Its size (the `file-size` header).
    pub size: u64,
    /// The generation it belongs to.
    pub generation: u64,
    /// The consumer indices this caller's key is declared as.
    pub consumers: Vec<usize>,
}

#[derive(Debug)]
enum Outcome {
    Results { path: PathBuf, size: u64 },
    Failed(String),
}

struct Computation {
    manifest: Arc<Manifest>,
    verifier: Arc<Verifier>,
    algorithm: Option<AcceptedAlgorithm>,
    pending: BTreeSet<String>,
    outcome: Option<Outcome>,
    fetched: Vec<bool>,
}

struct Core {
    sm: StateMachine,
    computation: Option<Computation>,
}

impl Core {
    fn computation_id(&self) -> String {
        self.computation
            .as_ref()
            .map(|c| c.manifest.id.clone())
            .unwrap_or_default()
    }

    /// Fires `event` and queues the new state's event.
    fn fire(&mut self, emitter: &Emitter, event: Event) -> Result<Transition, InvalidTransition> {
        let ctx = Context {
            datasets_pending: self
                .computation
                .as_ref()
                .is_some_and(|c| !c.pending.is_empty()),
        };
        let t = self.sm.fire(event, ctx)?;
        let details = match self.computation.as_ref().and_then(|c| c.outcome.as_ref()) {
            Some(Outcome::Failed(e)) if t.to == State::Failed => Some(json!({ "error": e })),
            _ => None,
        };
        emitter.emit(
            &self.computation_id(),
            t.to.as_str(),
            t.to.entry_status(),
            details,
        );
        tracing::info!(from = %t.from, event = %t.event, to = %t.to, "state transition");
        Ok(t)
    }
}

struct Inner {
    config: Config,
    work: WorkDir,
    services: Services,
    emitter: Emitter,
    core: Mutex<Core>,
    reassembler: Mutex<Reassembler>,
}

/// The orchestrator; cheap to clone (all clones are the same agent).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state", &self.state())
            .field("work_dir", &self.inner.work.root())
            .finish()
    }
}

fn internal(e: InvalidTransition) -> ServiceError {
    ServiceError::Internal(format!("state machine: {e}"))
}

impl Agent {
    /// An agent in `Idle`, with a clean work directory (files a previous
    /// run of the agent left are discarded). Starts the event delivery
    /// task, so it must be called inside a tokio runtime.
    pub fn new(config: Config, services: Services) -> Result<Self, AgentError> {
        let work = WorkDir::new(config.work_dir.clone());
        let wd = |source| AgentError::WorkDir {
            path: config.work_dir.clone(),
            source,
        };
        // A previous agent process may have left a computation behind (it
        // restarted): its state is gone, so are its files.
        work.prepare().map_err(wd)?;
        work.discard(true).map_err(wd)?;
        match std::fs::remove_dir_all(work.trash()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(wd(e)),
        }
        work.prepare().map_err(wd)?;
        let emitter = Emitter::spawn(services.events.clone());
        let reassembler = Reassembler::new(config.caps.reassembly_limits());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                work,
                services,
                emitter,
                core: Mutex::new(Core {
                    sm: StateMachine::new(),
                    computation: None,
                }),
                reassembler: Mutex::new(reassembler),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.inner.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The work directory's layout.
    pub fn work_dir(&self) -> &WorkDir {
        &self.inner.work
    }

    /// The attestation provider, if any.
    pub fn attestation(&self) -> Option<&Arc<dyn AttestationProvider>> {
        self.inner.services.attestation.as_ref()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.lock().sm.state()
    }

    /// The current generation (advanced by every stop).
    pub fn generation(&self) -> u64 {
        self.lock().sm.generation()
    }

    /// The current computation's id, empty when none.
    pub fn computation_id(&self) -> String {
        self.lock().computation_id()
    }

    /// `Idle` → `ReceivingManifest`, then the manifest file if one is
    /// configured and present.
    pub async fn start(&self) -> Result<(), AgentError> {
        self.lock().fire(&self.inner.emitter, Event::Start)?;
        if let Some(path) = self.inner.config.manifest_file.clone() {
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let intake = self.submit_manifest(ManifestSource::Json(bytes));
                    tracing::info!(path = %path.display(), ?intake, "manifest file");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::info!(path = %path.display(), "no manifest file; waiting for the management service");
                }
                Err(source) => return Err(AgentError::ManifestFile { path, source }),
            }
        }
        Ok(())
    }

    fn control(&self, msg: client_stream_message::Message) {
        self.inner
            .services
            .control
            .send(ClientStreamMessage { message: Some(msg) });
    }

    /// Validates and, in `ReceivingManifest`, accepts a manifest. Sends
    /// `run_res` (empty error, or the field errors) unless the manifest is
    /// ignored.
    pub fn submit_manifest(&self, source: ManifestSource) -> Intake {
        let (computation_id, parsed) = match source {
            ManifestSource::Wire(req) => (req.id.clone(), Manifest::from_wire(&req)),
            ManifestSource::Json(bytes) => {
                let id = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("id")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                (id, Manifest::from_json(&bytes))
            }
        };
        let mut core = self.lock();
        let state = core.sm.state();
        if state != State::ReceivingManifest {
            let reason = format!(
                "already processing computation {:?} (state {state})",
                core.computation_id()
            );
            tracing::info!(computation_id, reason, "run request ignored");
            return Intake::Ignored {
                computation_id,
                reason,
            };
        }
        let manifest = match parsed {
            Ok(m) => m,
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(computation_id, error, "manifest refused");
                self.control(client_stream_message::Message::RunRes(RunResponse {
                    computation_id: computation_id.clone(),
                    error: error.clone(),
                }));
                return Intake::Rejected {
                    computation_id,
                    error,
                };
            }
        };
        let verifier = Verifier::new(
            manifest.id.clone(),
            manifest.declared_keys(),
            self.inner.config.auth_policy(),
        );
        let manifest = Arc::new(manifest);
        core.computation = Some(Computation {
            pending: manifest
                .datasets
                .iter()
                .map(|d| d.filename.clone())
                .collect(),
            fetched: vec![false; manifest.result_consumers.len()],
            manifest: manifest.clone(),
            verifier: Arc::new(verifier),
            algorithm: None,
            outcome: None,
        });
        if let Err(e) = core.fire(&self.inner.emitter, Event::ManifestReceived) {
            // Unreachable: the state was checked under this lock.
            core.computation = None;
            let error = e.to_string();
            return Intake::Rejected {
                computation_id,
                error,
            };
        }
        self.control(client_stream_message::Message::RunRes(RunResponse {
            computation_id: manifest.id.clone(),
            error: String::new(),
        }));
        Intake::Accepted {
            computation_id: manifest.id.clone(),
        }
    }

    /// Handles one message from the management service (`now` drives the
    /// chunk reassembly's 30 s idle timeout).
    pub async fn handle_server_message(&self, msg: ServerStreamMessage, now: Instant) {
        use server_stream_message::Message as M;
        match msg.message {
            Some(M::RunReqChunks(chunk)) => {
                let pushed = self
                    .inner
                    .reassembler
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(chunk, now);
                match pushed {
                    Ok(Some(req)) => {
                        self.submit_manifest(ManifestSource::Wire(Box::new(req)));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(computation_id = e.id(), error = %e, "manifest chunks refused");
                        if self.state() == State::ReceivingManifest {
                            self.control(client_stream_message::Message::RunRes(RunResponse {
                                computation_id: e.id().to_string(),
                                error: e.to_string(),
                            }));
                        }
                    }
                }
            }
            Some(M::RunReq(req)) => {
                self.submit_manifest(ManifestSource::Wire(Box::new(req)));
            }
            Some(M::StopComputation(s)) => {
                let res = self.stop(&s.computation_id).await;
                self.control(client_stream_message::Message::StopComputationRes(res));
            }
            Some(M::AgentStateReq(r)) => {
                let state = self.state().as_str().to_string();
                self.control(client_stream_message::Message::AgentStateRes(
                    AgentStateRes { id: r.id, state },
                ));
            }
            Some(M::DisconnectReq(d)) => {
                tracing::info!(id = %d.id, "disconnect request (handled by the link)");
            }
            None => tracing::warn!("management service sent a message of unknown type; ignored"),
        }
    }

    /// Drops partial chunked manifests idle for 30 s; returns their ids.
    pub fn expire_partial_manifests(&self, now: Instant) -> Vec<String> {
        let gone = self
            .inner
            .reassembler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire(now);
        for id in &gone {
            tracing::warn!(computation_id = %id, "partial manifest dropped: no chunk for 30 s");
        }
        gone
    }

    /// Stops the computation in any state: emits `Stopped`, returns to
    /// `ReceivingManifest`, removes the work files, and tells the runner to
    /// stop. A `computation_id` naming another computation than the
    /// current one is refused (in the response's message); an empty one
    /// stops whatever is current.
    pub async fn stop(&self, computation_id: &str) -> StopComputationResponse {
        let (current, bin) = {
            let mut core = self.lock();
            let current = core.computation_id();
            if core.computation.is_some() && !computation_id.is_empty() && computation_id != current
            {
                let message =
                    format!("computation {computation_id:?} is not the current one ({current:?})");
                tracing::warn!(message, "stop refused");
                return StopComputationResponse {
                    computation_id: computation_id.to_string(),
                    message,
                };
            }
            self.inner.emitter.emit(
                if current.is_empty() {
                    computation_id
                } else {
                    &current
                },
                "Stopped",
                EventStatus::Stopped,
                None,
            );
            if let Err(e) = core.fire(&self.inner.emitter, Event::Stop) {
                // Unreachable: Stop has a row for every state.
                return StopComputationResponse {
                    computation_id: computation_id.to_string(),
                    message: e.to_string(),
                };
            }
            core.computation = None;
            let bin = self.inner.work.discard(true);
            (current, bin)
        };
        let mut message = String::new();
        match bin {
            Ok(bin) => empty_trash(bin),
            Err(e) => {
                message = format!("removing the computation's files: {e}");
                tracing::error!(message);
            }
        }
        let timeout = Duration::from_secs(self.inner.config.runner_stop_timeout_secs);
        match tokio::time::timeout(timeout, self.inner.services.runner.stop(&current)).await {
            Ok(Ok(stopped)) => tracing::info!(stopped, "runner stop"),
            Ok(Err(e)) => tracing::warn!(error = %e.message(), "runner stop failed"),
            Err(_) => tracing::warn!(?timeout, "runner did not answer the stop in time"),
        }
        StopComputationResponse {
            computation_id: if current.is_empty() {
                computation_id.to_string()
            } else {
                current
            },
            message,
        }
    }

    // ------------------------------------------------ AgentService support

    /// Authenticates a call against the current computation's declared
    /// keys. Without a computation every call is out of state.
    pub fn authorize(&self, rpc: Rpc, metadata: &AuthMetadata) -> Result<Ticket, ServiceError> {
        let (generation, manifest, verifier) = {
            let core = self.lock();
            let c = core.computation.as_ref().ok_or(ServiceError::WrongState)?;
            (core.sm.generation(), c.manifest.clone(), c.verifier.clone())
        };
        let auth = verifier
            .verify(rpc, metadata, SystemTime::now())
            .map_err(|e| match e {
                AuthError::UndeclaredDataset(name) => ServiceError::UndeclaredDataset(name),
                e => ServiceError::Auth(e),
            })?;
        Ok(Ticket {
            generation,
            manifest,
            auth,
        })
    }

    /// The ticket's computation is still current and in `state`.
    pub fn check_state(&self, ticket: &Ticket, state: State) -> Result<(), ServiceError> {
        let core = self.lock();
        if core.sm.generation() != ticket.generation {
            return Err(ServiceError::Stopped);
        }
        if core.sm.state() != state {
            return Err(ServiceError::WrongState);
        }
        Ok(())
    }

    /// The checks for an upload of dataset `name`: declared, authorised for
    /// this signer, `ReceivingData`, not yet received.
    pub fn check_dataset(&self, ticket: &Ticket, name: &str) -> Result<(), ServiceError> {
        if !ticket.manifest.datasets.iter().any(|d| d.filename == name) {
            return Err(ServiceError::UndeclaredDataset(name.to_string()));
        }
        ticket.auth.check_dataset(name)?;
        self.check_state(ticket, State::ReceivingData)?;
        let core = self.lock();
        let pending = core
            .computation
            .as_ref()
            .is_some_and(|c| c.pending.contains(name));
        if !pending {
            return Err(ServiceError::DatasetAlreadyReceived(name.to_string()));
        }
        Ok(())
    }

    /// Moves an accepted algorithm (and requirements) into place and fires
    /// `AlgorithmReceived`; starts the run when no dataset is declared.
    pub fn commit_algorithm(
        &self,
        ticket: &Ticket,
        algorithm: Spooled,
        requirements: Option<Spooled>,
        accepted: AcceptedAlgorithm,
    ) -> Result<(), ServiceError> {
        let work = &self.inner.work;
        let start = {
            let mut core = self.lock();
            if core.sm.generation() != ticket.generation {
                return Err(ServiceError::Stopped);
            }
            if core.sm.state() != State::ReceivingAlgorithm {
                return Err(ServiceError::WrongState);
            }
            persist(algorithm.file, &work.algorithm(), 0o755)?;
            if let Some(r) = requirements
                && let Err(e) = persist(r.file, &work.requirements(), 0o644)
            {
                let _ = std::fs::remove_file(work.algorithm());
                return Err(e);
            }
            if let Some(c) = core.computation.as_mut() {
                c.algorithm = Some(accepted.clone());
            }
            let t = core
                .fire(&self.inner.emitter, Event::AlgorithmReceived)
                .map_err(internal)?;
            (t.to == State::Running).then(|| (core.computation_id(), t.generation))
        };
        if let Some((id, generation)) = start {
            self.spawn_run(generation, id, accepted);
        }
        Ok(())
    }

    /// Moves an accepted dataset into place; fires `DataReceived` and
    /// starts the run when it was the last one.
    pub fn commit_dataset(
        &self,
        ticket: &Ticket,
        name: &str,
        staged: StagedDataset,
    ) -> Result<(), ServiceError> {
        let dest = self.inner.work.dataset(name);
        let start = {
            let mut core = self.lock();
            if core.sm.generation() != ticket.generation {
                return Err(ServiceError::Stopped);
            }
            if core.sm.state() != State::ReceivingData {
                return Err(ServiceError::WrongState);
            }
            let Some(c) = core.computation.as_mut() else {
                return Err(ServiceError::WrongState);
            };
            if !c.pending.contains(name) {
                return Err(ServiceError::DatasetAlreadyReceived(name.to_string()));
            }
            match staged {
                StagedDataset::File(s) => persist(s.file, &dest, 0o644)?,
                StagedDataset::Extracted { dir } => std::fs::rename(dir.path().join("d"), &dest)
                    .map_err(|e| ServiceError::io("moving the extracted dataset into place", e))?,
            }
            c.pending.remove(name);
            let algorithm = c.algorithm.clone();
            tracing::info!(dataset = name, left = c.pending.len(), "dataset accepted");
            if c.pending.is_empty() {
                let t = core
                    .fire(&self.inner.emitter, Event::DataReceived)
                    .map_err(internal)?;
                algorithm.map(|a| (core.computation_id(), t.generation, a))
            } else {
                None
            }
        };
        if let Some((id, generation, algorithm)) = start {
            self.spawn_run(generation, id, algorithm);
        }
        Ok(())
    }

    /// The result for a consumer: the zip in `ConsumingResults` and
    /// `Complete`, the run's error in `Failed`, "not yet ready" before.
    pub fn open_result(&self, ticket: &Ticket) -> Result<ResultFile, ServiceError> {
        let consumers = consumer_indices(&ticket.manifest, &ticket.auth);
        if consumers.is_empty() {
            return Err(ServiceError::NotConsumer);
        }
        let core = self.lock();
        if core.sm.generation() != ticket.generation {
            return Err(ServiceError::Stopped);
        }
        let outcome = core.computation.as_ref().and_then(|c| c.outcome.as_ref());
        match (core.sm.state(), outcome) {
            (State::ConsumingResults | State::Complete, Some(Outcome::Results { path, size })) => {
                Ok(ResultFile {
                    path: path.clone(),
                    size: *size,
                    generation: ticket.generation,
                    consumers,
                })
            }
            (State::Failed, Some(Outcome::Failed(e))) => Err(ServiceError::RunFailed(e.clone())),
            _ => Err(ServiceError::ResultsNotReady),
        }
    }

    /// Records that these consumers received the whole result; fires
    /// `ResultsConsumed` once every declared consumer has.
    pub fn result_fetched(&self, generation: u64, consumers: &[usize]) {
        let mut core = self.lock();
        if core.sm.generation() != generation {
            return;
        }
        let Some(c) = core.computation.as_mut() else {
            return;
        };
        for &i in consumers {
            if let Some(f) = c.fetched.get_mut(i) {
                *f = true;
            }
        }
        let done = c.fetched.iter().all(|f| *f);
        let left = c.fetched.iter().filter(|f| !**f).count();
        tracing::info!(?consumers, left, "result fetched");
        if done
            && core.sm.state() == State::ConsumingResults
            && let Err(e) = core.fire(&self.inner.emitter, Event::ResultsConsumed)
        {
            tracing::error!(error = %e, "results consumed");
        }
    }

    /// Which consumers have fetched the result, by index.
    pub fn consumers_fetched(&self) -> Vec<bool> {
        self.lock()
            .computation
            .as_ref()
            .map(|c| c.fetched.clone())
            .unwrap_or_default()
    }

    // ----------------------------------------------------------- the run

    fn spawn_run(&self, generation: u64, computation_id: String, algorithm: AcceptedAlgorithm) {
        let agent = self.clone();
        tokio::spawn(async move {
            agent.run(generation, computation_id, algorithm).await;
        });
    }

    async fn run(&self, generation: u64, computation_id: String, algorithm: AcceptedAlgorithm) {
        let work = self.inner.work.clone();
        let fresh = tokio::task::spawn_blocking(move || work.fresh_results()).await;
        let results = match fresh {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return self.finish_run(generation, Err(format!("preparing results/: {e}")));
            }
            Err(e) => return self.finish_run(generation, Err(format!("preparing results/: {e}"))),
        };
        {
            let core = self.lock();
            if core.sm.generation() != generation {
                return;
            }
            self.inner
                .emitter
                .emit(&computation_id, "Running", EventStatus::InProgress, None);
        }
        let work = &self.inner.work;
        let request = RunRequest {
            computation_id: computation_id.clone(),
            algo_type: algorithm.algo_type.as_str().to_string(),
            algorithm_path: path_string(&work.algorithm()),
            requirements_path: if algorithm.requirements {
                path_string(&work.requirements())
            } else {
                String::new()
            },
            args: algorithm.args.clone(),
            datasets_dir: path_string(&work.datasets()),
            results_dir: path_string(&results),
        };
        let outcome = match self.inner.services.runner.run(request).await {
            Ok(r) if r.error.is_empty() => self.zip_results().await,
            Ok(r) => Err(r.error),
            Err(s) => Err(format!("computation runner: {}", s.message())),
        };
        self.finish_run(generation, outcome);
    }

    async fn zip_results(&self) -> Result<NamedTempFile, String> {
        let work = self.inner.work.clone();
        let zipped = tokio::task::spawn_blocking(move || -> Result<NamedTempFile, String> {
            let mut tmp = tempfile::Builder::new()
                .prefix("results-")
                .tempfile_in(work.staging())
                .map_err(|e| format!("zipping the results: {e}"))?;
            {
                let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                cocos_manifest::zip::write_dir(&work.results(), &mut w)
                    .map_err(|e| format!("zipping the results: {e}"))?;
                w.flush().map_err(|e| format!("zipping the results: {e}"))?;
            }
            Ok(tmp)
        })
        .await;
        zipped.unwrap_or_else(|e| Err(format!("zipping the results: {e}")))
    }

    fn finish_run(&self, generation: u64, outcome: Result<NamedTempFile, String>) {
        let work = &self.inner.work;
        let bin = {
            let mut core = self.lock();
            if core.sm.generation() != generation || core.sm.state() != State::Running {
                tracing::info!(
                    generation,
                    ok = outcome.is_ok(),
                    "a run of a stopped computation ended; its outcome is discarded"
                );
                return;
            }
            let id = core.computation_id();
            let stored = outcome.and_then(|tmp| {
                let path = work.result_zip();
                let file = tmp
                    .persist(&path)
                    .map_err(|e| format!("storing the results: {}", e.error))?;
                let size = file
                    .metadata()
                    .map_err(|e| format!("storing the results: {e}"))?
                    .len();
                Ok(Outcome::Results { path, size })
            });
            let (outcome, event, status, details) = match stored {
                Ok(o) => (o, Event::RunComplete, EventStatus::Completed, None),
                Err(e) => {
                    tracing::warn!(error = %e, "run failed");
                    let details = Some(json!({ "error": e }));
                    (
                        Outcome::Failed(e),
                        Event::RunFailed,
                        EventStatus::Failed,
                        details,
                    )
                }
            };
            let no_consumers = match core.computation.as_mut() {
                Some(c) => {
                    c.outcome = Some(outcome);
                    c.fetched.is_empty()
                }
                None => false,
            };
            self.inner.emitter.emit(&id, "Running", status, details);
            match core.fire(&self.inner.emitter, event) {
                Ok(t) if t.to == State::ConsumingResults && no_consumers => {
                    if let Err(e) = core.fire(&self.inner.emitter, Event::ResultsConsumed) {
                        tracing::error!(error = %e, "no consumers");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "run outcome"),
            }
            work.discard_inputs()
        };
        match bin {
            Ok(bin) => empty_trash(bin),
            Err(e) => tracing::error!(error = %e, "removing the run's inputs"),
        }
    }
}

fn path_string(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Renames a staged file into place with `mode`.
fn persist(file: NamedTempFile, dest: &std::path::Path, mode: u32) -> Result<(), ServiceError> {
    use std::os::unix::fs::PermissionsExt;
    let f = file
        .persist(dest)
        .map_err(|e| ServiceError::io("moving the upload into place", e.error))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| ServiceError::io("setting the upload's permissions", e))
}

/// Every consumer index whose declared key is the signer's (a key may be
/// declared for several consumers; one fetch counts for all of them).
fn consumer_indices(manifest: &Manifest, auth: &Authorization) -> Vec<usize> {
    let roles: &[Role] = match auth {
        Authorization::Signed { signer, .. } => std::slice::from_ref(signer),
        Authorization::Legacy { signers } => signers,
    };
    let mut keys = Vec::new();
    for r in roles {
        if let Role::Consumer { index } = r
            && let Some(k) = manifest.result_consumers.get(*index)
        {
            keys.push(&k.der);
        }
    }
    manifest
        .result_consumers
        .iter()
        .enumerate()
        .filter(|(_, k)| keys.contains(&&k.der))
        .map(|(i, _)| i)
        .collect()
}
