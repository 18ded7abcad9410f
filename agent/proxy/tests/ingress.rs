//! The ingress against a real tonic server on a Unix socket, real tonic
//! clients over TLS, certificates made by the `openssl` CLI, and `openssl
//! s_client` as the reference TLS client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocos_proto::agent::agent_service_client::AgentServiceClient;
use cocos_proto::agent::agent_service_server::{AgentService, AgentServiceServer};
use cocos_proto::agent::{
    AlgoRequest, AlgoResponse, AttestationRequest, AttestationResponse, AttestationTokenRequest,
    AttestationTokenResponse, DataRequest, DataResponse, ImaMeasurementsRequest,
    ImaMeasurementsResponse, ResultRequest, ResultResponse,
};
use cocos_proxy::PemSource;
use cocos_proxy::ingress::{
    Handshake, HandshakeFuture, Ingress, IngressConfig, IngressError, PlainHandshake, Security,
    TlsConfigError, TlsFiles,
};
use common::{Payload, Pki, payload_sha256, require_tool};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server};
use tonic::{Request, Response, Status, Streaming};

// ---------------------------------------------------------------- the agent

/// Size and SHA-256 of an upload as the agent received it.
type Upload = (usize, [u8; 32]);

/// A stand-in for the agent: fixed answers, and a record of uploads.
#[derive(Clone, Default)]
struct StubAgent {
    /// Each `Algo` upload.
    uploads: Arc<Mutex<Vec<Upload>>>,
    /// Bytes `Result` streams back.
    result_len: usize,
}

#[tonic::async_trait]
impl AgentService for StubAgent {
    async fn algo(
        &self,
        request: Request<Streaming<AlgoRequest>>,
    ) -> Result<Response<AlgoResponse>, Status> {
        let mut stream = request.into_inner();
        let mut hash = Sha256::new();
        let mut n = 0;
        while let Some(chunk) = stream.message().await? {
            n += chunk.algorithm.len();
            hash.update(&chunk.algorithm);
        }
        self.uploads
            .lock()
            .unwrap()
            .push((n, hash.finalize().into()));
        Ok(Response::new(AlgoResponse {}))
    }

    async fn data(
        &self,
        _: Request<Streaming<DataRequest>>,
    ) -> Result<Response<DataResponse>, Status> {
        Err(Status::unimplemented("stub"))
    }

    type ResultStream = ReceiverStream<Result<ResultResponse, Status>>;

    async fn result(
        &self,
        _: Request<ResultRequest>,
    ) -> Result<Response<Self::ResultStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut payload = Payload::new(self.result_len);
        tokio::spawn(async move {
            while let Some(file) = payload.next_chunk(1 << 20) {
                if tx.send(Ok(ResultResponse { file })).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type AttestationStream = tokio_stream::Empty<Result<AttestationResponse, Status>>;

    async fn attestation(
        &self,
        _: Request<AttestationRequest>,
    ) -> Result<Response<Self::AttestationStream>, Status> {
        Err(Status::unimplemented("stub"))
    }

    type IMAMeasurementsStream = tokio_stream::Empty<Result<ImaMeasurementsResponse, Status>>;

    async fn ima_measurements(
        &self,
        _: Request<ImaMeasurementsRequest>,
    ) -> Result<Response<Self::IMAMeasurementsStream>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn azure_attestation_token(
        &self,
        request: Request<AttestationTokenRequest>,
    ) -> Result<Response<AttestationTokenResponse>, Status> {
        let nonce = request.into_inner().token_nonce;
        Ok(Response::new(AttestationTokenResponse {
            file: [b"token for ".as_slice(), &nonce].concat(),
        }))
    }
}

/// Serves `agent` on `dir/agent.sock` (for the rest of the test).
fn spawn_agent(dir: &Path, agent: StubAgent) -> PathBuf {
    let socket = dir.join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(AgentServiceServer::new(agent))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    socket
}

/// A raw byte server on `dir/name`: per connection, `respond(bytes read to
/// EOF)` is written back after the client half-closes, or every byte is
/// echoed at once when `respond` is `None`.
fn spawn_raw_upstream(dir: &Path, name: &str, summarize: bool) -> PathBuf {
    let socket = dir.join(name);
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                if summarize {
                    let mut hash = Sha256::new();
                    let mut n = 0usize;
                    let mut buf = vec![0; 1 << 16];
                    loop {
                        let k = r.read(&mut buf).await.unwrap();
                        if k == 0 {
                            break;
                        }
                        n += k;
                        hash.update(&buf[..k]);
                    }
                    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
                    w.write_all(format!("got {n} bytes sha256 {hex}\n").as_bytes())
                        .await
                        .unwrap();
                } else {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
                let _ = w.shutdown().await;
            });
        }
    });
    socket
}

// ---------------------------------------------------------------- config

fn localhost_any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn tls_config(pki: &Pki, mtls: bool, upstream: &Path) -> IngressConfig {
    let mut config = IngressConfig::new(Security::Tls(TlsFiles {
        cert: PemSource::Path(pki.server_cert.clone()),
        key: PemSource::Path(pki.server_key.clone()),
        client_ca: mtls.then(|| PemSource::Path(pki.ca.clone())),
    }));
    config.listen = localhost_any_port();
    config.upstream = upstream.to_owned();
    config.shutdown_timeout = Duration::from_millis(500);
    config
}

fn plain_config(upstream: &Path) -> IngressConfig {
    let mut config = IngressConfig::new(Security::Plaintext);
    config.allow_plaintext = true;
    config.listen = localhost_any_port();
    config.upstream = upstream.to_owned();
    config.shutdown_timeout = Duration::from_millis(500);
    config
}

// ---------------------------------------------------------------- clients

async fn tls_channel(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
}

async fn token(channel: Channel) -> Result<Vec<u8>, Status> {
    AgentServiceClient::new(channel)
        .azure_attestation_token(AttestationTokenRequest {
            token_nonce: b"n-1".to_vec(),
            r#type: 3,
        })
        .await
        .map(|r| r.into_inner().file)
}

/// Connects over TLS and calls the unary RPC; any failure as text.
async fn call_over_tls(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Vec<u8>, String> {
    let channel = tls_channel(addr, ca, identity)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    token(channel).await.map_err(|s| format!("rpc: {s:?}"))
}

const TOKEN: &[u8] = b"token for n-1";

/// The call failed in the connection (TLS refused), not with a status from
/// the agent.
fn assert_transport_failure(err: &str) {
    assert!(
        err.starts_with("connect:") || err.contains("tonic::transport::Error(Transport"),
        "not a transport failure: {err}"
    );
}

async fn raw_tls_client(addr: SocketAddr, ca: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Runs `openssl s_client` against `addr` with stdin at EOF; returns
/// whether it succeeded and its output. `-ign_eof` in `extra` makes it read
/// until the server closes (to see an alert sent after the handshake).
async fn s_client(addr: SocketAddr, ca: &Path, extra: &[&str]) -> (bool, String) {
    require_tool("openssl", "apt-get install -y openssl");
    let child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(ca)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), child)
        .await
        .expect("openssl s_client did not finish: the server kept the connection open")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------- TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_through_tls_ingress_reaches_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(tls_config(&pki, false, &socket))
        .await
        .unwrap();

    let got = call_over_tls(ingress.local_addr(), &pki.ca, None)
        .await
        .unwrap();
    assert_eq!(got, TOKEN);
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_pem_certificate_and_key_work() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let inline = |p: &Path| {
        let source = PemSource::from_config_value(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert!(matches!(source, PemSource::Inline(_)));
        source
    };
    let mut config = tls_config(&pki, true, &socket);
    config.security = Security::Tls(TlsFiles {
        cert: inline(&pki.server_cert),
        key: inline(&pki.server_key),
        client_ca: Some(inline(&pki.ca)),
    });
    let ingress = Ingress::start(config).await.unwrap();
    let got = call_over_tls(
        ingress.local_addr(),
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .await
    .unwrap();
    assert_eq!(got, TOKEN);
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_negotiates_h2_over_tls13_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(tls_config(&pki, false, &socket))
        .await
        .unwrap();

    let (ok, out) = s_client(ingress.local_addr(), &pki.ca, &["-alpn", "h2"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(out.contains("New, TLSv1.3"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_accepted_and_tls11_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(tls_config(&pki, false, &socket))
        .await
        .unwrap();
    let addr = ingress.local_addr();

    let (ok, out) = s_client(addr, &pki.ca, &["-alpn", "h2", "-tls1_2"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("New, TLSv1.2"), "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");

    // SECLEVEL=0 so that OpenSSL itself is willing to offer TLS 1.1.
    let (ok, out) = s_client(addr, &pki.ca, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).await;
    assert!(!ok, "TLS 1.1 was accepted:\n{out}");
    assert!(!out.contains("New, TLSv1.1"), "{out}");
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_offering_only_http11_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(tls_config(&pki, false, &socket))
        .await
        .unwrap();

    let (ok, out) = s_client(ingress.local_addr(), &pki.ca, &["-alpn", "http/1.1"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("no application protocol"), "{out}");
    ingress.stop().await;
}

// ---------------------------------------------------------------- mTLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_a_client_certificate_from_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(tls_config(&pki, true, &socket))
        .await
        .unwrap();

    let got = call_over_tls(
        ingress.local_addr(),
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .await
    .unwrap();
    assert_eq!(got, TOKEN);

    // The reference client agrees.
    let cert = pki.client_cert.to_str().unwrap();
    let key = pki.client_key.to_str().unwrap();
    let (ok, out) = s_client(
        ingress.local_addr(),
        &pki.ca,
        &["-alpn", "h2", "-cert", cert, "-key", key],
    )
    .await;
    assert!(ok && out.contains("ALPN protocol: h2"), "{out}");
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_a_client_without_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(tls_config(&pki, true, &socket))
        .await
        .unwrap();

    // tonic sees the connection fail (how exactly depends on timing: the
    // server's alert comes after the client's side of the handshake).
    let err = call_over_tls(ingress.local_addr(), &pki.ca, None)
        .await
        .unwrap_err();
    assert_transport_failure(&err);
    // openssl, reading until the server closes, sees the TLS 1.3 alert.
    let (ok, out) = s_client(ingress.local_addr(), &pki.ca, &["-alpn", "h2", "-ign_eof"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("alert certificate required"), "{out}");
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_a_certificate_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(tls_config(&pki, true, &socket))
        .await
        .unwrap();

    let err = call_over_tls(
        ingress.local_addr(),
        &pki.ca,
        Some((&pki.other_client_cert, &pki.other_client_key)),
    )
    .await
    .unwrap_err();
    assert_transport_failure(&err);

    // With openssl as the client: the server's alert is "unknown ca".
    let cert = pki.other_client_cert.to_str().unwrap();
    let key = pki.other_client_key.to_str().unwrap();
    let (ok, out) = s_client(
        ingress.local_addr(),
        &pki.ca,
        &["-alpn", "h2", "-ign_eof", "-cert", cert, "-key", key],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("alert unknown ca"), "{out}");
    ingress.stop().await;
}

// ---------------------------------------------------------------- plaintext

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_without_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let mut config = plain_config(&socket);
    config.allow_plaintext = false;
    let err = Ingress::start(config).await.unwrap_err();
    assert!(matches!(err, IngressError::PlaintextNotAllowed), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_works_with_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let ingress = Ingress::start(plain_config(&socket)).await.unwrap();
    let channel = Endpoint::from_shared(format!("http://{}", ingress.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(token(channel).await.unwrap(), TOKEN);
    ingress.stop().await;
}

// ---------------------------------------------------------------- config errors

async fn start_error(pki: &Pki, files: TlsFiles) -> String {
    let mut config = tls_config(pki, false, Path::new("/nonexistent.sock"));
    config.security = Security::Tls(files);
    let err = Ingress::start(config).await.unwrap_err();
    assert!(matches!(err, IngressError::Tls(_)), "{err:?}");
    err.to_string()
}

#[tokio::test]
async fn unreadable_or_unusable_certificates_are_start_errors_naming_field_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let p = |path: &Path| PemSource::Path(path.to_owned());
    let files = || TlsFiles {
        cert: p(&pki.server_cert),
        key: p(&pki.server_key),
        client_ca: Some(p(&pki.ca)),
    };
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let bad_der = dir.path().join("bad-der.pem");
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcI\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    let msg = start_error(
        &pki,
        TlsFiles {
            cert: p(&missing),
            ..files()
        },
    )
    .await;
    assert!(
        msg.contains("cert") && msg.contains(missing.to_str().unwrap()),
        "{msg}"
    );
    assert!(msg.contains("cannot read"), "{msg}");

    let msg = start_error(
        &pki,
        TlsFiles {
            key: p(&garbage),
            ..files()
        },
    )
    .await;
    assert!(
        msg.contains("key") && msg.contains(garbage.to_str().unwrap()),
        "{msg}"
    );
    assert!(msg.contains("no private key"), "{msg}");

    let msg = start_error(
        &pki,
        TlsFiles {
            cert: p(&garbage),
            ..files()
        },
    )
    .await;
    assert!(
        msg.contains("cert (") && msg.contains("no CERTIFICATE block"),
        "{msg}"
    );

    let msg = start_error(
        &pki,
        TlsFiles {
            cert: p(&bad_der),
            ..files()
        },
    )
    .await;
    assert!(
        msg.contains("cert (") && msg.contains(bad_der.to_str().unwrap()),
        "{msg}"
    );

    // The client's key with the server's certificate.
    let msg = start_error(
        &pki,
        TlsFiles {
            key: p(&pki.client_key),
            ..files()
        },
    )
    .await;
    assert!(msg.contains("does not match"), "{msg}");
    assert!(msg.contains(pki.client_key.to_str().unwrap()), "{msg}");

    let msg = start_error(
        &pki,
        TlsFiles {
            client_ca: Some(p(&pki.ca.with_extension("key"))),
            ..files()
        },
    )
    .await;
    assert!(
        msg.contains("client_ca") && msg.contains("no CERTIFICATE block"),
        "{msg}"
    );

    let msg = start_error(
        &pki,
        TlsFiles {
            client_ca: Some(p(&bad_der)),
            ..files()
        },
    )
    .await;
    assert!(
        msg.contains("client_ca") && msg.contains(bad_der.to_str().unwrap()),
        "{msg}"
    );

    let msg = start_error(
        &pki,
        TlsFiles {
            client_ca: Some(p(&missing)),
            ..files()
        },
    )
    .await;
    assert!(
        msg.contains("client_ca") && msg.contains("cannot read"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs1_rsa_and_sec1_ec_keys_are_accepted() {
    require_tool("openssl", "apt-get install -y openssl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let socket = spawn_agent(d, StubAgent::default());
    for (name, keygen) in [
        (
            "rsa",
            vec!["genrsa", "-traditional", "-out", "rsa.key", "2048"],
        ),
        (
            "ec",
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ec.key",
            ],
        ),
    ] {
        common::run(
            std::process::Command::new("openssl")
                .current_dir(d)
                .args(&keygen),
        );
        common::run(std::process::Command::new("openssl").current_dir(d).args([
            "req",
            "-x509",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ]));
        let header = std::fs::read_to_string(d.join(format!("{name}.key"))).unwrap();
        let expected = if name == "rsa" {
            "RSA PRIVATE KEY"
        } else {
            "EC PRIVATE KEY"
        };
        assert!(header.contains(expected), "{header}");

        let mut config = IngressConfig::new(Security::Tls(TlsFiles {
            cert: PemSource::Path(d.join(format!("{name}.pem"))),
            key: PemSource::Path(d.join(format!("{name}.key"))),
            client_ca: None,
        }));
        config.listen = localhost_any_port();
        config.upstream = socket.clone();
        let ingress = Ingress::start(config).await.unwrap();
        let (ok, out) = s_client(
            ingress.local_addr(),
            &d.join(format!("{name}.pem")),
            &["-alpn", "h2"],
        )
        .await;
        assert!(
            ok && out.contains("Verify return code: 0 (ok)"),
            "{name}: {out}"
        );
        ingress.stop().await;
    }
}

#[tokio::test]
async fn key_mismatch_error_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let mut config = tls_config(&pki, false, Path::new("/nonexistent.sock"));
    config.security = Security::Tls(TlsFiles {
        cert: PemSource::Path(pki.server_cert.clone()),
        key: PemSource::Path(pki.other_client_key.clone()),
        client_ca: None,
    });
    let err = Ingress::start(config).await.unwrap_err();
    assert!(
        matches!(err, IngressError::Tls(TlsConfigError::KeyMismatch { .. })),
        "{err:?}"
    );
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_stop_start_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(dir.path(), StubAgent::default());
    let mut config = tls_config(&pki, true, &socket);
    let client = Some((pki.client_cert.as_path(), pki.client_key.as_path()));

    let first = Ingress::start(config.clone()).await.unwrap();
    let addr = first.local_addr();
    assert_eq!(call_over_tls(addr, &pki.ca, client).await.unwrap(), TOKEN);

    // A second ingress on the same port while the first runs: a bind error.
    config.listen = addr;
    let err = Ingress::start(config.clone()).await.unwrap_err();
    assert!(matches!(err, IngressError::Bind { .. }), "{err:?}");

    first.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after stop"
    );

    let second = Ingress::start(config.clone()).await.unwrap();
    assert_eq!(second.local_addr(), addr);
    assert_eq!(call_over_tls(addr, &pki.ca, client).await.unwrap(), TOKEN);
    second.stop().await;

    let third = Ingress::start(config).await.unwrap();
    assert_eq!(call_over_tls(addr, &pki.ca, client).await.unwrap(), TOKEN);
    third.stop().await;
}

/// Polls until connecting to `addr` fails (the listener is closed).
async fn wait_until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "listener still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn echo_round_trip(conn: &mut TcpStream, msg: &[u8]) {
    conn.write_all(msg).await.unwrap();
    let mut buf = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_refuses_new_connections_and_lets_open_ones_finish() {
    let dir = tempfile::tempdir().unwrap();
    let socket = spawn_raw_upstream(dir.path(), "echo.sock", false);
    let mut config = plain_config(&socket);
    config.shutdown_timeout = Duration::from_secs(30);
    let ingress = Ingress::start(config).await.unwrap();
    let addr = ingress.local_addr();

    let mut open = TcpStream::connect(addr).await.unwrap();
    echo_round_trip(&mut open, b"before stop").await;

    let started = Instant::now();
    let stopping = tokio::spawn(ingress.stop());
    wait_until_refused(addr).await;

    // The open connection still works while the stop waits for it...
    echo_round_trip(&mut open, b"during stop").await;
    assert!(!stopping.is_finished());
    // ...and the stop completes as soon as it ends, long before the timeout.
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_idle_connections_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let socket = spawn_raw_upstream(dir.path(), "echo.sock", false);
    let mut config = plain_config(&socket);
    config.shutdown_timeout = Duration::from_millis(300);
    let ingress = Ingress::start(config).await.unwrap();

    let mut idle = TcpStream::connect(ingress.local_addr()).await.unwrap();
    echo_round_trip(&mut idle, b"hello").await;

    let started = Instant::now();
    ingress.stop().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The proxy closed its side.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_holds_new_connections_back_until_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let socket = spawn_raw_upstream(dir.path(), "echo.sock", false);
    let mut config = plain_config(&socket);
    config.max_connections = 2;
    let ingress = Ingress::start(config).await.unwrap();
    let addr = ingress.local_addr();

    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    echo_round_trip(&mut a, b"a").await;
    echo_round_trip(&mut b, b"b").await;

    // The third is queued by the kernel but not served.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"c").await.unwrap();
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), c.read_exact(&mut buf))
            .await
            .is_err(),
        "a third connection was served with max_connections = 2"
    );
    assert_eq!(ingress.open_connections(), 2);

    // When one ends, the third gets its slot.
    drop(a);
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .expect("third connection never served")
        .unwrap();
    assert_eq!(&buf, b"c");
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handshake_plugs_into_the_seam() {
    /// Plaintext that counts its handshakes.
    struct Counting(Arc<AtomicUsize>);
    static PLAIN: PlainHandshake = PlainHandshake;
    impl Handshake for Counting {
        fn handshake(&self, tcp: TcpStream) -> HandshakeFuture<'_> {
            self.0.fetch_add(1, Ordering::SeqCst);
            PLAIN.handshake(tcp)
        }
        fn name(&self) -> &'static str {
            "counting"
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let socket = spawn_raw_upstream(dir.path(), "echo.sock", false);
    let count = Arc::new(AtomicUsize::new(0));
    let mut config = IngressConfig::new(Security::Custom(Arc::new(Counting(count.clone()))));
    config.listen = localhost_any_port();
    config.upstream = socket;
    let ingress = Ingress::start(config).await.unwrap();
    let mut conn = TcpStream::connect(ingress.local_addr()).await.unwrap();
    echo_round_trip(&mut conn, b"through the seam").await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    drop(conn);
    ingress.stop().await;
}

// ---------------------------------------------------------------- bytes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_half_close_lets_the_answer_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_raw_upstream(dir.path(), "summary.sock", true);
    let ingress = Ingress::start(tls_config(&pki, false, &socket))
        .await
        .unwrap();

    const LEN: usize = 8 << 20;
    let mut tls = raw_tls_client(ingress.local_addr(), &pki.ca).await;
    let mut payload = Payload::new(LEN);
    while let Some(chunk) = payload.next_chunk(1 << 20) {
        tls.write_all(&chunk).await.unwrap();
    }
    // close_notify and FIN: the upstream sees EOF, then answers.
    tls.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), tls.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let hex: String = payload_sha256(LEN)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(answer, format!("got {LEN} bytes sha256 {hex}\n"));
    ingress.stop().await;
}

const BIG: usize = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_streamed_upload_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let agent = StubAgent::default();
    let socket = spawn_agent(dir.path(), agent.clone());
    let ingress = Ingress::start(tls_config(&pki, true, &socket))
        .await
        .unwrap();
    let channel = tls_channel(
        ingress.local_addr(),
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    )
    .await
    .unwrap();

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut payload = Payload::new(BIG);
        while let Some(algorithm) = payload.next_chunk(1 << 20) {
            tx.send(AlgoRequest {
                algorithm,
                requirements: Vec::new(),
            })
            .await
            .unwrap();
        }
    });
    AgentServiceClient::new(channel)
        .algo(ReceiverStream::new(rx))
        .await
        .unwrap();
    let uploads = agent.uploads.lock().unwrap().clone();
    assert_eq!(uploads, vec![(BIG, payload_sha256(BIG))]);
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_streamed_download_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path());
    let socket = spawn_agent(
        dir.path(),
        StubAgent {
            result_len: BIG,
            ..Default::default()
        },
    );
    let ingress = Ingress::start(tls_config(&pki, false, &socket))
        .await
        .unwrap();
    let channel = tls_channel(ingress.local_addr(), &pki.ca, None)
        .await
        .unwrap();

    let mut stream = AgentServiceClient::new(channel)
        .result(ResultRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut hash = Sha256::new();
    let mut n = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        n += chunk.file.len();
        hash.update(&chunk.file);
    }
    assert_eq!(n, BIG);
    assert_eq!(<[u8; 32]>::from(hash.finalize()), payload_sha256(BIG));
    ingress.stop().await;
}
