//! Shared by the networked tests: the binary, reference tools (openssl,
//! python3's hashlib), keys and a test PKI made with openssl, and an
//! in-test `agent.AgentService` that records what it receives.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use cocos_auth::{AuthMetadata, Authorization, DeclaredKey, Policy, PublicKey, Rpc, Verifier};
use cocos_proto::agent::agent_service_server::{AgentService, AgentServiceServer};
use cocos_proto::agent::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// 1 MiB: the CLI's chunk size (agent-api §3).
pub const MIB: usize = 1 << 20;

/// Runs cocos-cli in `dir` with no COCOS_* variables from the outside.
pub async fn cli(args: &[&str], dir: &Path) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cocos-cli"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("COCOS_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().await.unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a reference tool; a missing tool fails the test with the hint.
pub fn tool(program: &str, args: &[&str], dir: &Path) -> Output {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{program} is needed by this test ({e}); install it: apt-get install -y {program}"
            )
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        text(&out.stderr)
    );
    out
}

/// SHA3-256 of a file by Python's hashlib, as hex.
pub fn python_sha3(path: &Path) -> String {
    let out = tool(
        "python3",
        &[
            "-c",
            "import hashlib,sys;print(hashlib.sha3_256(open(sys.argv[1],'rb').read()).hexdigest())",
            path.to_str().unwrap(),
        ],
        Path::new("."),
    );
    text(&out.stdout).trim().to_string()
}

/// A key pair written by openssl: the private key's PEM path and the
/// public key (from `openssl pkey -pubout`, DER).
pub struct TestKey {
    pub private: PathBuf,
    pub public_pem: PathBuf,
    pub public_der: Vec<u8>,
}

impl TestKey {
    pub fn public(&self) -> PublicKey {
        PublicKey::from_spki_der(&self.public_der).unwrap()
    }
}

/// `kind`: ed25519, p256, p384 or rsa.
pub fn openssl_key(dir: &Path, name: &str, kind: &str) -> TestKey {
    let private = dir.join(format!("{name}.pem"));
    let p = private.to_str().unwrap();
    let algo: &[&str] = match kind {
        "ed25519" => &["-algorithm", "ed25519"],
        "p256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "rsa" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        other => panic!("key kind {other}"),
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(algo);
    args.extend_from_slice(&["-out", p]);
    tool("openssl", &args, dir);
    let public_pem = dir.join(format!("{name}.pub.pem"));
    tool(
        "openssl",
        &[
            "pkey",
            "-in",
            p,
            "-pubout",
            "-out",
            public_pem.to_str().unwrap(),
        ],
        dir,
    );
    let der = tool(
        "openssl",
        &["pkey", "-in", p, "-pubout", "-outform", "DER"],
        dir,
    )
    .stdout;
    TestKey {
        private,
        public_pem,
        public_der: der,
    }
}

/// A CA, a server certificate for `localhost` and 127.0.0.1, and a client
/// certificate, all made by openssl in `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl_leaf(dir: &Path, name: &str, cn: &str, ext: &str) {
    tool(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
        dir,
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
        dir,
    );
}

/// A CA named `ca.pem`/`ca.key` in `dir`.
pub fn openssl_ca(dir: &Path, cn: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
    dir.join("ca.pem")
}

pub fn openssl_pki(dir: &Path) -> Pki {
    let ca = openssl_ca(dir, "cocos test CA");
    openssl_leaf(
        dir,
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    openssl_leaf(
        dir,
        "client",
        "cocos test client",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    Pki {
        ca,
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// One call the test agent received.
#[derive(Debug, Clone)]
pub struct Call {
    pub rpc: Rpc,
    pub metadata: MetadataMap,
    /// Each message's fields in arrival order: (field, length).
    pub messages: Vec<(&'static str, usize)>,
    pub algorithm: Vec<u8>,
    pub requirements: Vec<u8>,
    pub dataset: Vec<u8>,
    pub filenames: Vec<String>,
}

impl Call {
    fn new(rpc: Rpc, metadata: MetadataMap) -> Self {
        Self {
            rpc,
            metadata,
            messages: Vec::new(),
            algorithm: Vec::new(),
            requirements: Vec::new(),
            dataset: Vec::new(),
            filenames: Vec::new(),
        }
    }

    pub fn values(&self, key: &str) -> Vec<String> {
        self.metadata
            .get_all(key)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// Authenticates the call as the agent would, against `keys`.
    pub fn verify(&self, computation: &str, keys: Vec<DeclaredKey>, legacy: bool) -> Authorization {
        let md = AuthMetadata {
            cocos_auth: self.values(cocos_auth::AUTH_METADATA),
            signature: self.values(cocos_auth::LEGACY_SIGNATURE_METADATA),
        };
        let policy = Policy {
            legacy,
            ..Policy::default()
        };
        Verifier::new(computation, keys, policy)
            .verify(self.rpc, &md, SystemTime::now())
            .unwrap_or_else(|e| panic!("the agent's verifier refuses the call: {e}"))
    }
}

/// What the test agent answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Every call fails with this status (after reading the upload).
    pub fail: Option<(tonic::Code, String)>,
    /// The result: chunks streamed in order.
    pub result: Vec<Vec<u8>>,
    /// The `file-size` header; none when absent.
    pub file_size: Option<String>,
}

#[derive(Clone)]
pub struct TestAgent {
    pub calls: Arc<Mutex<Vec<Call>>>,
    behaviour: Arc<Behaviour>,
}

impl TestAgent {
    fn fail(&self) -> Result<(), Status> {
        match &self.behaviour.fail {
            Some((code, msg)) => Err(Status::new(*code, msg.clone())),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl AgentService for TestAgent {
    async fn algo(
        &self,
        request: Request<Streaming<AlgoRequest>>,
    ) -> Result<Response<AlgoResponse>, Status> {
        let mut call = Call::new(Rpc::Algo, request.metadata().clone());
        let mut stream = request.into_inner();
        while let Some(m) = stream.message().await? {
            if !m.requirements.is_empty() {
                call.messages.push(("requirements", m.requirements.len()));
            }
            if !m.algorithm.is_empty() {
                call.messages.push(("algorithm", m.algorithm.len()));
            }
            call.requirements.extend_from_slice(&m.requirements);
            call.algorithm.extend_from_slice(&m.algorithm);
        }
        self.calls.lock().unwrap().push(call);
        self.fail()?;
        Ok(Response::new(AlgoResponse {}))
    }

    async fn data(
        &self,
        request: Request<Streaming<DataRequest>>,
    ) -> Result<Response<DataResponse>, Status> {
        let mut call = Call::new(Rpc::Data, request.metadata().clone());
        let mut stream = request.into_inner();
        while let Some(m) = stream.message().await? {
            call.messages.push(("dataset", m.dataset.len()));
            call.dataset.extend_from_slice(&m.dataset);
            call.filenames.push(m.filename);
        }
        self.calls.lock().unwrap().push(call);
        self.fail()?;
        Ok(Response::new(DataResponse {}))
    }

    type ResultStream = ReceiverStream<Result<ResultResponse, Status>>;

    async fn result(
        &self,
        request: Request<ResultRequest>,
    ) -> Result<Response<Self::ResultStream>, Status> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::new(Rpc::Result, request.metadata().clone()));
        self.fail()?;
        let (tx, rx) = mpsc::channel(4);
        let chunks = self.behaviour.result.clone();
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(Ok(ResultResponse { file: c })).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(ReceiverStream::new(rx));
        if let Some(size) = &self.behaviour.file_size {
            response
                .metadata_mut()
                .insert("file-size", size.parse().unwrap());
        }
        Ok(response)
    }

    type AttestationStream = ReceiverStream<Result<AttestationResponse, Status>>;

    async fn attestation(
        &self,
        _: Request<AttestationRequest>,
    ) -> Result<Response<Self::AttestationStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type IMAMeasurementsStream = ReceiverStream<Result<ImaMeasurementsResponse, Status>>;

    async fn ima_measurements(
        &self,
        _: Request<ImaMeasurementsRequest>,
    ) -> Result<Response<Self::IMAMeasurementsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn azure_attestation_token(
        &self,
        _: Request<AttestationTokenRequest>,
    ) -> Result<Response<AttestationTokenResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// TLS settings of the test agent.
pub struct ServerTls<'a> {
    pub pki: &'a Pki,
    pub require_client_cert: bool,
}

/// Starts a test agent on a free loopback port.
pub async fn start_agent(
    behaviour: Behaviour,
    tls: Option<ServerTls<'_>>,
) -> (SocketAddr, TestAgent) {
    let agent = TestAgent {
        calls: Arc::default(),
        behaviour: Arc::new(behaviour),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
            std::fs::read(&tls.pki.server_cert).unwrap(),
            std::fs::read(&tls.pki.server_key).unwrap(),
        ));
        if tls.require_client_cert {
            config =
                config.client_ca_root(Certificate::from_pem(std::fs::read(&tls.pki.ca).unwrap()));
        }
        builder = builder.tls_config(config).unwrap();
    }
    let router = builder.add_service(AgentServiceServer::new(agent.clone()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, agent)
}

/// A loopback port with nothing listening.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Bytes that differ from chunk to chunk.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}
