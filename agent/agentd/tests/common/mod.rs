//! Test harness: an agent served on a Unix socket in a temporary
//! directory, with in-process fakes for the runner, the event sink and the
//! control stream, and a real tonic client that signs with cocos-auth.
//! Hashes and zips come from Python's hashlib and zipfile.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use cocos_agentd::*;
use cocos_auth::{
    AUTH_METADATA, CanonicalRequest, KeyType, LEGACY_SIGNATURE_METADATA, PrivateKey, Rpc,
    auth_metadata_value,
};
use cocos_proto::agent::agent_service_client::AgentServiceClient;
use cocos_proto::agent::{AlgoRequest, DataRequest, ResultRequest};
use cocos_proto::cvms::{
    AgentEvent, Algorithm, ClientStreamMessage, ComputationRunReq, Dataset, ResultConsumer,
    ServerStreamMessage, client_stream_message, server_stream_message,
};
use cocos_proto::runner::{RunRequest, RunResponse};
use tokio::sync::{Notify, oneshot};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub const COMPUTATION: &str = "comp-1";

// ------------------------------------------------------------ reference tools

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 not found: apt-get install -y python3");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// SHA3-256 by Python's hashlib.
pub fn sha3(bytes: &[u8]) -> [u8; 32] {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    let hex = python(
        "import hashlib,sys;print(hashlib.sha3_256(open(sys.argv[1],'rb').read()).hexdigest())",
        &[f.path().to_str().unwrap()],
    );
    hex::decode(hex.trim()).unwrap().try_into().unwrap()
}

/// A zip made by Python's zipfile from (name, content, unix mode) entries;
/// mode 0o120777 makes a symbolic link whose target is the content.
pub fn python_zip(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    let json: Vec<_> = entries
        .iter()
        .map(|(n, c, m)| serde_json::json!([n, hex::encode(c), m]))
        .collect();
    std::fs::write(&spec, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = dir.path().join("out.zip");
    python(
        r#"
import json, sys, zipfile
spec = json.load(open(sys.argv[1]))
with zipfile.ZipFile(sys.argv[2], 'w') as z:
    for name, content, mode in spec:
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = mode << 16
        z.writestr(info, bytes.fromhex(content))
"#,
        &[spec.to_str().unwrap(), out.to_str().unwrap()],
    );
    std::fs::read(out).unwrap()
}

/// The entries of a zip as Python's zipfile reads them, sorted by name.
pub fn python_unzip(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), zip).unwrap();
    let json = python(
        r#"
import json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
print(json.dumps(sorted([n, z.read(n).hex()] for n in z.namelist())))
"#,
        &[f.path().to_str().unwrap()],
    );
    let v: Vec<(String, String)> = serde_json::from_str(&json).unwrap();
    v.into_iter()
        .map(|(n, h)| (n, hex::decode(h).unwrap()))
        .collect()
}

// --------------------------------------------------------------------- fakes

/// What the runner should do.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Write these files into results/ and succeed.
    Succeed(Vec<(String, Vec<u8>)>),
    /// Return this error.
    Fail(String),
    /// Wait until the test releases it, then answer "stopped".
    Block,
}

/// What a run saw.
#[derive(Debug, Clone)]
pub struct RunSeen {
    pub request: RunRequest,
    pub algorithm: Vec<u8>,
    pub requirements: Option<Vec<u8>>,
    /// Every file under datasets/, relative path and content, sorted.
    pub datasets: Vec<(String, Vec<u8>)>,
}

pub struct FakeRunner {
    pub behaviour: Mutex<Behaviour>,
    pub runs: Mutex<Vec<RunSeen>>,
    pub stops: AtomicUsize,
    pub started: Notify,
    release: Mutex<Option<oneshot::Receiver<()>>>,
    release_tx: Mutex<Option<oneshot::Sender<()>>>,
}

impl FakeRunner {
    pub fn new(b: Behaviour) -> Arc<Self> {
        let (tx, rx) = oneshot::channel();
        Arc::new(Self {
            behaviour: Mutex::new(b),
            runs: Mutex::new(Vec::new()),
            stops: AtomicUsize::new(0),
            started: Notify::new(),
            release: Mutex::new(Some(rx)),
            release_tx: Mutex::new(Some(tx)),
        })
    }

    /// Lets a blocked run return.
    pub fn release(&self) {
        if let Some(tx) = self.release_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read(&p).unwrap()));
        }
    }
}

#[tonic::async_trait]
impl Runner for FakeRunner {
    async fn run(&self, request: RunRequest) -> Result<RunResponse, Status> {
        let mut datasets = Vec::new();
        walk(
            Path::new(&request.datasets_dir),
            Path::new(&request.datasets_dir),
            &mut datasets,
        );
        datasets.sort();
        let seen = RunSeen {
            algorithm: std::fs::read(&request.algorithm_path).unwrap(),
            requirements: (!request.requirements_path.is_empty())
                .then(|| std::fs::read(&request.requirements_path).unwrap()),
            datasets,
            request: request.clone(),
        };
        self.runs.lock().unwrap().push(seen);
        self.started.notify_one();
        let behaviour = self.behaviour.lock().unwrap().clone();
        let error = match behaviour {
            Behaviour::Succeed(files) => {
                for (name, content) in files {
                    let p = Path::new(&request.results_dir).join(name);
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(p, content).unwrap();
                }
                String::new()
            }
            Behaviour::Fail(e) => e,
            Behaviour::Block => {
                let rx = self.release.lock().unwrap().take();
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                "algorithm killed: stopped".to_string()
            }
        };
        Ok(RunResponse {
            computation_id: request.computation_id,
            error,
            exit_code: 0,
        })
    }

    async fn stop(&self, _computation_id: &str) -> Result<bool, Status> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }
}

#[derive(Default)]
pub struct Recorder<T> {
    pub items: Mutex<Vec<T>>,
}

impl<T: Clone> Recorder<T> {
    pub fn all(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl EventSink for Recorder<AgentEvent> {
    async fn send_event(&self, event: AgentEvent) -> Result<(), Status> {
        self.items.lock().unwrap().push(event);
        Ok(())
    }
}

impl ControlSink for Recorder<ClientStreamMessage> {
    fn send(&self, msg: ClientStreamMessage) {
        self.items.lock().unwrap().push(msg);
    }
}

// ------------------------------------------------------------------- parties

pub struct Parties {
    pub algo: Arc<PrivateKey>,
    pub iris: Arc<PrivateKey>,
    pub wine: Arc<PrivateKey>,
    pub alice: Arc<PrivateKey>,
    pub bob: Arc<PrivateKey>,
    pub stranger: Arc<PrivateKey>,
}

impl Parties {
    pub fn new() -> Self {
        let ed = || Arc::new(PrivateKey::generate(KeyType::Ed25519).unwrap());
        let ec = || Arc::new(PrivateKey::generate(KeyType::Ecdsa).unwrap());
        Self {
            algo: ec(),
            iris: ed(),
            wine: ed(),
            alice: ed(),
            bob: ec(),
            stranger: ed(),
        }
    }
}

pub fn der(k: &PrivateKey) -> Vec<u8> {
    k.public().to_spki_der().unwrap()
}

/// What the manifest declares: the algorithm and datasets (name, bytes,
/// decompress), with hashes from Python.
pub struct Plan {
    pub algorithm: Vec<u8>,
    pub requirements_hash: Option<[u8; 32]>,
    pub datasets: Vec<(String, Vec<u8>, bool)>,
}

impl Plan {
    pub fn simple() -> Self {
        Self {
            algorithm: b"#!/bin/sh\necho hello\n".to_vec(),
            requirements_hash: None,
            datasets: vec![
                ("iris.csv".into(), b"5.1,3.5,1.4,0.2\n".to_vec(), false),
                ("wine.csv".into(), b"7.4,0.7,0,1.9\n".to_vec(), false),
            ],
        }
    }

    pub fn manifest(&self, p: &Parties) -> ComputationRunReq {
        let dataset_keys = [&p.iris, &p.wine, &p.stranger, &p.alice];
        ComputationRunReq {
            id: COMPUTATION.into(),
            name: "test".into(),
            description: "agent tests".into(),
            datasets: self
                .datasets
                .iter()
                .enumerate()
                .map(|(i, (name, bytes, decompress))| Dataset {
                    hash: sha3(bytes).to_vec(),
                    user_key: der(dataset_keys[i % dataset_keys.len()]),
                    filename: name.clone(),
                    decompress: *decompress,
                    ..Default::default()
                })
                .collect(),
            algorithm: Some(Algorithm {
                hash: sha3(&self.algorithm).to_vec(),
                user_key: der(&p.algo),
                algo_type: "bin".into(),
                requirements_hash: self
                    .requirements_hash
                    .map(|h| h.to_vec())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            result_consumers: vec![
                ResultConsumer {
                    user_key: der(&p.alice),
                },
                ResultConsumer {
                    user_key: der(&p.bob),
                },
            ],
            agent_config: None,
        }
    }
}

// ------------------------------------------------------------------- fixture

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub agent: Agent,
    pub runner: Arc<FakeRunner>,
    pub events: Arc<Recorder<AgentEvent>>,
    pub control: Arc<Recorder<ClientStreamMessage>>,
    pub client: AgentServiceClient<Channel>,
    pub channel: Channel,
    pub parties: Parties,
    _shutdown: oneshot::Sender<()>,
}

pub fn small_caps() -> Caps {
    Caps {
        algorithm_bytes: 64 << 10,
        requirements_bytes: 4 << 10,
        dataset_bytes: 64 << 10,
        extract_entries: 8,
        extract_bytes: 64 << 10,
        ..Caps::default()
    }
}

impl Fixture {
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::start_with(behaviour, |_| {}).await
    }

    pub async fn start_with(behaviour: Behaviour, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let mut config = Config {
            work_dir: dir.path().join("cocos"),
            listen: Listen::Unix(socket.clone()),
            caps: small_caps(),
            ..Config::default()
        };
        tweak(&mut config);
        let runner = FakeRunner::new(behaviour);
        let events = Arc::new(Recorder::<AgentEvent>::default());
        let control = Arc::new(Recorder::<ClientStreamMessage>::default());
        let services = Services {
            runner: runner.clone(),
            events: events.clone(),
            control: control.clone(),
            attestation: None,
        };
        let agent = Agent::new(config, services).unwrap();
        agent.start().await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = agent.clone();
        let path = socket.clone();
        tokio::spawn(async move {
            serve_unix(&served, &path, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "agent socket never appeared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let channel = unix_channel(socket);
        Self {
            dir,
            agent,
            runner,
            events,
            control,
            client: AgentServiceClient::new(channel.clone()),
            channel,
            parties: Parties::new(),
            _shutdown: tx,
        }
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("cocos")
    }

    /// Sends the manifest as `runReq` on the management stream.
    pub async fn send_manifest(&self, req: ComputationRunReq) {
        self.agent
            .handle_server_message(
                ServerStreamMessage {
                    message: Some(server_stream_message::Message::RunReq(req)),
                },
                Instant::now(),
            )
            .await;
    }

    pub async fn wait_state(&self, state: State) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.agent.state() != state {
            assert!(
                Instant::now() < deadline,
                "state {} never reached (still {})",
                state,
                self.agent.state()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The event (type, status) pairs delivered so far, once the count
    /// reaches `n`.
    pub async fn events(&self, n: usize) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.events.all();
            if all.len() >= n {
                return all.into_iter().map(|e| (e.event_type, e.status)).collect();
            }
            assert!(
                Instant::now() < deadline,
                "only {} events: {all:?}",
                all.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn run_responses(&self) -> Vec<(String, String)> {
        self.control
            .all()
            .into_iter()
            .filter_map(|m| match m.message {
                Some(client_stream_message::Message::RunRes(r)) => {
                    Some((r.computation_id, r.error))
                }
                _ => None,
            })
            .collect()
    }

    /// Files under the staging directory (left-over partial uploads).
    pub fn staging_entries(&self) -> usize {
        std::fs::read_dir(self.work().join(".staging"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn accepted_datasets(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.work().join("datasets"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

// -------------------------------------------------------------------- client

/// A signed `cocos-auth` value.
pub fn signed(
    key: &PrivateKey,
    rpc: Rpc,
    resource: &str,
    payload: Option<[u8; 32]>,
    requirements: Option<[u8; 32]>,
) -> String {
    let req = CanonicalRequest::new(rpc, COMPUTATION, resource, payload, requirements).unwrap();
    auth_metadata_value(&req, key)
}

/// A signed value with an explicit timestamp (Unix ms).
pub fn signed_at(
    key: &PrivateKey,
    rpc: Rpc,
    resource: &str,
    payload: Option<[u8; 32]>,
    at_ms: u64,
) -> String {
    let mut req = CanonicalRequest::new(rpc, COMPUTATION, resource, payload, None).unwrap();
    req.timestamp_ms = at_ms;
    auth_metadata_value(&req, key)
}

pub fn now_ms() -> u64 {
    UNIX_EPOCH.elapsed().unwrap().as_millis() as u64
}

/// The Go CLI's legacy role-string signature.
pub fn legacy(key: &PrivateKey, role: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key.sign(role.as_bytes()))
}

pub enum Auth {
    Signed(String),
    Legacy(String),
    None,
}

fn with_auth<T>(mut req: tonic::Request<T>, auth: &Auth) -> tonic::Request<T> {
    match auth {
        Auth::Signed(v) => {
            req.metadata_mut()
                .insert(AUTH_METADATA, MetadataValue::try_from(v.as_str()).unwrap());
        }
        Auth::Legacy(v) => {
            req.metadata_mut().insert(
                LEGACY_SIGNATURE_METADATA,
                MetadataValue::try_from(v.as_str()).unwrap(),
            );
        }
        Auth::None => {}
    }
    req
}

/// Uploads an algorithm in 1 KiB chunks (requirements first, as the Go
/// CLI sends them) with extra metadata.
pub async fn algo(
    client: &mut AgentServiceClient<Channel>,
    auth: &Auth,
    algorithm: &[u8],
    requirements: Option<&[u8]>,
    extra: &[(&'static str, &str)],
) -> Result<(), Status> {
    let mut msgs = Vec::new();
    if let Some(r) = requirements {
        for c in r.chunks(1024) {
            msgs.push(AlgoRequest {
                algorithm: vec![],
                requirements: c.to_vec(),
            });
        }
    }
    for c in algorithm.chunks(1024) {
        msgs.push(AlgoRequest {
            algorithm: c.to_vec(),
            requirements: vec![],
        });
    }
    let mut req = with_auth(tonic::Request::new(futures::stream::iter(msgs)), auth);
    for (k, v) in extra {
        req.metadata_mut()
            .append(*k, MetadataValue::try_from(*v).unwrap());
    }
    client.algo(req).await.map(|_| ())
}

/// Signs and uploads the algorithm with its true hash.
pub async fn algo_signed(
    f: &mut Fixture,
    key_of: fn(&Parties) -> &PrivateKey,
    algorithm: &[u8],
) -> Result<(), Status> {
    let v = signed(
        key_of(&f.parties),
        Rpc::Algo,
        "",
        Some(sha3(algorithm)),
        None,
    );
    algo(&mut f.client, &Auth::Signed(v), algorithm, None, &[]).await
}

/// Uploads a dataset in 1 KiB chunks, the filename in every message.
pub async fn data(
    client: &mut AgentServiceClient<Channel>,
    auth: &Auth,
    filename: &str,
    bytes: &[u8],
    decompress: bool,
) -> Result<(), Status> {
    let msgs: Vec<DataRequest> = bytes
        .chunks(1024)
        .map(|c| DataRequest {
            dataset: c.to_vec(),
            filename: filename.into(),
        })
        .collect();
    let mut req = with_auth(tonic::Request::new(futures::stream::iter(msgs)), auth);
    if decompress {
        req.metadata_mut()
            .insert("decompress", MetadataValue::from_static("true"));
    }
    client.data(req).await.map(|_| ())
}

/// Signs (with `key`) and uploads dataset `filename`.
pub async fn data_signed(
    client: &mut AgentServiceClient<Channel>,
    key: &PrivateKey,
    filename: &str,
    bytes: &[u8],
    decompress: bool,
) -> Result<(), Status> {
    let v = signed(key, Rpc::Data, filename, Some(sha3(bytes)), None);
    data(client, &Auth::Signed(v), filename, bytes, decompress).await
}

/// Downloads the result: the `file-size` header and the bytes.
pub async fn result(
    client: &mut AgentServiceClient<Channel>,
    auth: &Auth,
) -> Result<(u64, Vec<u8>), Status> {
    let req = with_auth(tonic::Request::new(ResultRequest {}), auth);
    let response = client.result(req).await?;
    let size: u64 = response
        .metadata()
        .get("file-size")
        .expect("file-size header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut stream = response.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert!(chunk.file.len() <= 1 << 20);
        bytes.extend_from_slice(&chunk.file);
    }
    Ok((size, bytes))
}

pub async fn result_signed(
    client: &mut AgentServiceClient<Channel>,
    key: &PrivateKey,
) -> Result<(u64, Vec<u8>), Status> {
    let v = signed(key, Rpc::Result, "", None, None);
    result(client, &Auth::Signed(v)).await
}

#[track_caller]
pub fn assert_status(r: Result<impl std::fmt::Debug, Status>, code: Code, text: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} {text:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "status {s:?}");
            assert!(
                s.message().contains(text),
                "message {:?} does not contain {text:?}",
                s.message()
            );
        }
    }
}
