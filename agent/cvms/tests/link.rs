//! The reconnecting link against a real tonic `cvms.Service` server on a
//! TCP port: metadata, delivery both ways, replay of what was queued while
//! the service was unreachable, re-dial after a broken stream and after
//! `disconnectReq`, and (with certificates made by the openssl CLI) TLS
//! and mTLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cocos_cvms::*;
use cocos_proto::cvms::service_server::{Service, ServiceServer};
use cocos_proto::cvms::{
    AgentStateReq, AgentStateRes, ClientStreamMessage, DisconnectReq, ServerStreamMessage,
    client_stream_message, server_stream_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// One `Process` stream as the fake service sees it.
struct Session {
    metadata: tonic::metadata::MetadataMap,
    peer_cert: bool,
    inbound: Streaming<ClientStreamMessage>,
    outbound: mpsc::Sender<Result<ServerStreamMessage, Status>>,
}

struct FakeCvms {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl Service for FakeCvms {
    type ProcessStream = ReceiverStream<Result<ServerStreamMessage, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ClientStreamMessage>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let peer_cert = request.peer_certs().is_some_and(|c| !c.is_empty());
        let metadata = request.metadata().clone();
        self.sessions
            .send(Session {
                metadata,
                peer_cert,
                inbound: request.into_inner(),
                outbound: tx,
            })
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the fake on `listener` until the returned sender is dropped.
fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<ServerTlsConfig>,
) -> (
    mpsc::UnboundedReceiver<Session>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    let router = builder.add_service(ServiceServer::new(FakeCvms { sessions: tx }));
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    (rx, stop_tx)
}

fn fast() -> LinkConfig {
    LinkConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..LinkConfig::default()
    }
}

fn state_res(id: &str) -> ClientStreamMessage {
    ClientStreamMessage {
        message: Some(client_stream_message::Message::AgentStateRes(
            AgentStateRes {
                id: id.into(),
                state: "Idle".into(),
            },
        )),
    }
}

fn state_res_id(m: &ClientStreamMessage) -> String {
    match &m.message {
        Some(client_stream_message::Message::AgentStateRes(r)) => r.id.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn next_session(rx: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no session within 10 s")
        .expect("server gone")
}

async fn recv_ids(s: &mut Session, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(10), s.inbound.message())
            .await
            .expect("no message within 10 s")
            .unwrap()
            .expect("stream ended");
        out.push(state_res_id(&m));
    }
    out
}

async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

#[tokio::test]
async fn queued_while_unreachable_then_delivered_in_order_with_job_id() {
    // Reserve a port, close it: the first dials fail.
    let (l, addr) = bind().await;
    drop(l);
    let (link, _incoming) = spawn_link(CvmsSettings::new(addr.to_string(), "vm-7"), fast());
    for i in 0..5 {
        link.send(state_res(&i.to_string()));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(link.status(), LinkStatus::Connecting);
    assert_eq!(link.queued(), 5);

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (mut sessions, _stop) = serve(listener, None);
    let mut s = next_session(&mut sessions).await;
    assert_eq!(s.metadata.get(JOB_ID_METADATA).unwrap(), "vm-7");
    assert!(s.metadata.get(CONNECTION_TYPE_METADATA).is_none());
    assert_eq!(recv_ids(&mut s, 5).await, ["0", "1", "2", "3", "4"]);
    assert_eq!(link.queued(), 0);
    link.shutdown();
}

#[tokio::test]
async fn incoming_messages_reach_the_agent_and_a_broken_stream_is_redialled() {
    let (listener, addr) = bind().await;
    let (mut sessions, _stop) = serve(listener, None);
    let (link, mut incoming) = spawn_link(CvmsSettings::new(addr.to_string(), "vm-1"), fast());

    let mut s1 = next_session(&mut sessions).await;
    let req = ServerStreamMessage {
        message: Some(server_stream_message::Message::AgentStateReq(
            AgentStateReq { id: "q1".into() },
        )),
    };
    s1.outbound.send(Ok(req.clone())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, req);
    link.send(state_res("before-break"));
    assert_eq!(recv_ids(&mut s1, 1).await, ["before-break"]);

    // The service fails the stream: the link re-dials and carries on.
    s1.outbound
        .send(Err(Status::unavailable("restarting")))
        .await
        .unwrap();
    drop(s1);
    let mut s2 = next_session(&mut sessions).await;
    link.send(state_res("after-break"));
    assert_eq!(recv_ids(&mut s2, 1).await, ["after-break"]);
    let mut w = link.watch_status();
    w.wait_for(|s| *s == LinkStatus::Connected { sessions: 2 })
        .await
        .unwrap();
    link.shutdown();
    w.wait_for(|s| *s == LinkStatus::Closed).await.unwrap();
}

#[tokio::test]
async fn disconnect_request_redials_and_is_not_passed_on() {
    let (listener, addr) = bind().await;
    let (mut sessions, _stop) = serve(listener, None);
    let (link, mut incoming) = spawn_link(CvmsSettings::new(addr.to_string(), "vm-1"), fast());
    let s1 = next_session(&mut sessions).await;
    s1.outbound
        .send(Ok(ServerStreamMessage {
            message: Some(server_stream_message::Message::DisconnectReq(
                DisconnectReq { id: "d".into() },
            )),
        }))
        .await
        .unwrap();
    let mut s2 = next_session(&mut sessions).await;
    link.send(state_res("x"));
    assert_eq!(recv_ids(&mut s2, 1).await, ["x"]);
    assert!(incoming.try_recv().is_err(), "disconnectReq was passed on");
    link.shutdown();
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest() {
    let (l, addr) = bind().await;
    drop(l);
    let config = LinkConfig {
        queue_capacity: 3,
        ..fast()
    };
    let (link, _incoming) = spawn_link(CvmsSettings::new(addr.to_string(), "vm-1"), config);
    for i in 0..5 {
        link.send(state_res(&i.to_string()));
    }
    assert_eq!(link.queued(), 3);
    assert_eq!(link.dropped(), 2);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (mut sessions, _stop) = serve(listener, None);
    let mut s = next_session(&mut sessions).await;
    assert_eq!(recv_ids(&mut s, 3).await, ["2", "3", "4"]);
    link.shutdown();
}

// ------------------------------------------------------------------ TLS

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl not found: apt-get install -y openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, all made by the openssl CLI.
fn pki(dir: &Path) {
    openssl(
        dir,
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
            "/CN=test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ],
        );
    }
}

fn server_tls(dir: &Path, client_ca: bool) -> ServerTlsConfig {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(read("server.pem"), read("server.key")));
    if client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("ca.pem")));
    }
    tls
}

#[tokio::test]
async fn tls_and_mutual_tls_with_openssl_certificates() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());

    // TLS: the agent checks the service against the CA.
    let (listener, addr) = bind().await;
    let (mut sessions, _stop) = serve(listener, Some(server_tls(dir.path(), false)));
    let mut settings = CvmsSettings::new(format!("localhost:{}", addr.port()), "vm-tls");
    settings.server_ca_certs = Some(dir.path().join("ca.pem"));
    assert_eq!(settings.security(), Security::Tls);
    let (link, _incoming) = spawn_link(settings.clone(), fast());
    link.send(state_res("tls"));
    let mut s = next_session(&mut sessions).await;
    assert!(!s.peer_cert);
    assert_eq!(recv_ids(&mut s, 1).await, ["tls"]);
    link.shutdown();

    // mTLS: the service requires the client certificate.
    let (listener, addr) = bind().await;
    let (mut sessions, _stop) = serve(listener, Some(server_tls(dir.path(), true)));
    let mut settings = CvmsSettings::new(format!("localhost:{}", addr.port()), "vm-mtls");
    settings.server_ca_certs = Some(dir.path().join("ca.pem"));
    settings.client_cert = Some(dir.path().join("client.pem"));
    settings.client_key = Some(dir.path().join("client.key"));
    assert_eq!(settings.security(), Security::MutualTls);
    let (link, _incoming) = spawn_link(settings, fast());
    link.send(state_res("mtls"));
    let mut s = next_session(&mut sessions).await;
    assert!(s.peer_cert);
    assert_eq!(s.metadata.get(JOB_ID_METADATA).unwrap(), "vm-mtls");
    assert_eq!(recv_ids(&mut s, 1).await, ["mtls"]);
    link.shutdown();
}

#[tokio::test]
async fn a_service_certificate_from_another_ca_is_refused() {
    let good = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    pki(good.path());
    pki(other.path());
    let (listener, addr) = bind().await;
    let (_sessions, _stop) = serve(listener, Some(server_tls(good.path(), false)));
    let mut settings = CvmsSettings::new(format!("localhost:{}", addr.port()), "vm");
    settings.server_ca_certs = Some(other.path().join("ca.pem"));
    settings.dial_timeout = Duration::from_secs(5);
    let e = connect(&settings).await.unwrap_err();
    assert!(matches!(e, ConnectError::Transport { .. }), "{e}");
}

#[tokio::test]
async fn log_forwarder_stream_carries_its_connection_type() {
    let (listener, addr) = bind().await;
    let (mut sessions, _stop) = serve(listener, None);
    let settings = CvmsSettings::new(addr.to_string(), "vm-9");
    let channel = connect(&settings).await.unwrap();
    let _inbound = open_process(
        channel,
        &settings.cvm_id,
        Some(LOG_FORWARDER_CONNECTION_TYPE),
        futures::stream::pending(),
    )
    .await
    .unwrap();
    let s = next_session(&mut sessions).await;
    assert_eq!(s.metadata.get(JOB_ID_METADATA).unwrap(), "vm-9");
    assert_eq!(
        s.metadata.get(CONNECTION_TYPE_METADATA).unwrap(),
        "log-forwarder"
    );
}
