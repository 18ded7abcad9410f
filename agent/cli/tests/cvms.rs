//! `cvms serve` driven by a tonic client acting as the agent: the
//! reassembled chunks decode (prost) to the manifest, compared field by
//! field with the JSON as serde_json reads it; the lines printed are JSON
//! with the right types (timestamps read back by Python's datetime); stdin
//! commands arrive as their messages; --exit-on ends the service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cocos_proto::cvms::client_stream_message::Message as FromAgent;
use cocos_proto::cvms::server_stream_message::Message as ToAgent;
use cocos_proto::cvms::service_client::ServiceClient;
use cocos_proto::cvms::*;
use cocos_proto::prost::Message as _;
use cocos_proto::prost_types::Timestamp;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(20);

/// A manifest over 1 MiB (so that it takes two chunks), with every field
/// set, its keys made by openssl.
fn write_manifest(dir: &std::path::Path) -> Value {
    let k1 = STANDARD.encode(openssl_key(dir, "k1", "ed25519").public_der);
    let k2 = STANDARD.encode(openssl_key(dir, "k2", "p256").public_der);
    let hash = |seed: u8| (0..32u8).map(|i| i.wrapping_mul(seed)).collect::<Vec<_>>();
    let manifest = serde_json::json!({
        "id": "cvms-test-1",
        "name": "a computation",
        "description": "é".repeat(600 * 1024),
        "datasets": [
            {"hash": hash(3), "user_key": k1, "filename": "iris.csv"},
            {"hash": hash(5), "user_key": k2, "filename": "dir",
             "source": {"type": "s3", "url": "s3://bucket/dir.zip", "kbs_resource_path": "p/q", "encrypted": true},
             "decompress": true, "kbs": {"url": "https://kbs", "enabled": true}},
        ],
        "algorithm": {"hash": hash(7), "user_key": k1, "algo_type": "python",
                      "algo_args": ["--x", "1"], "requirements_hash": hash(11)},
        "result_consumers": [{"user_key": k2}, {"user_key": k1}],
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    manifest
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => STANDARD.decode(s).unwrap(),
        Value::Array(a) => a.iter().map(|x| x.as_u64().unwrap() as u8).collect(),
        other => panic!("not bytes: {other}"),
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The decoded wire manifest against the JSON, field by field.
fn assert_matches_json(req: &ComputationRunReq, j: &Value) {
    assert_eq!(req.id, s(&j["id"]));
    assert_eq!(req.name, s(&j["name"]));
    assert_eq!(req.description, s(&j["description"]));
    let ds = j["datasets"].as_array().unwrap();
    assert_eq!(req.datasets.len(), ds.len());
    for (d, jd) in req.datasets.iter().zip(ds) {
        assert_eq!(d.hash, bytes(&jd["hash"]));
        assert_eq!(d.user_key, bytes(&jd["user_key"]));
        assert_eq!(d.filename, s(&jd["filename"]));
        assert_eq!(d.decompress, jd["decompress"].as_bool().unwrap_or(false));
        match (&d.source, jd.get("source")) {
            (None, None) => {}
            (Some(src), Some(js)) => {
                assert_eq!(src.r#type, s(&js["type"]));
                assert_eq!(src.url, s(&js["url"]));
                assert_eq!(src.kbs_resource_path, s(&js["kbs_resource_path"]));
                assert_eq!(src.encrypted, js["encrypted"].as_bool().unwrap());
            }
            other => panic!("source: {other:?}"),
        }
        match (&d.kbs, jd.get("kbs")) {
            (None, None) => {}
            (Some(k), Some(jk)) => {
                assert_eq!(k.url, s(&jk["url"]));
                assert_eq!(k.enabled, jk["enabled"].as_bool().unwrap());
            }
            other => panic!("kbs: {other:?}"),
        }
    }
    let a = req.algorithm.as_ref().unwrap();
    let ja = &j["algorithm"];
    assert_eq!(a.hash, bytes(&ja["hash"]));
    assert_eq!(a.user_key, bytes(&ja["user_key"]));
    assert_eq!(a.algo_type, s(&ja["algo_type"]));
    let args: Vec<String> = ja["algo_args"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(a.algo_args, args);
    assert_eq!(a.requirements_hash, bytes(&ja["requirements_hash"]));
    let rc = j["result_consumers"].as_array().unwrap();
    let keys: Vec<Vec<u8>> = rc.iter().map(|r| bytes(&r["user_key"])).collect();
    let got: Vec<Vec<u8>> = req
        .result_consumers
        .iter()
        .map(|r| r.user_key.clone())
        .collect();
    assert_eq!(got, keys);
    assert_eq!(req.agent_config, None);
}

struct Serve {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    addr: String,
}

impl Serve {
    async fn start(dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cocos-cli"));
        cmd.args(["cvms", "serve", "manifest.json", "--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut serve = Serve {
            child,
            stdin,
            lines,
            addr: String::new(),
        };
        let first = serve.line().await;
        assert_eq!(first["type"], "listening", "{first}");
        serve.addr = s(&first["addr"]);
        serve
    }

    /// The next line, which must be one JSON object.
    async fn line(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("stdout open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Lines until one of type `kind`.
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let l = self.line().await;
            if l["type"] == kind {
                return l;
            }
        }
    }

    async fn command(&mut self, c: &str) {
        self.stdin
            .write_all(format!("{c}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }
}

struct FakeAgent {
    tx: mpsc::Sender<ClientStreamMessage>,
    rx: Streaming<ServerStreamMessage>,
}

impl FakeAgent {
    async fn connect(channel: Channel, connection_type: Option<&str>) -> Self {
        let (tx, out) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(out));
        request
            .metadata_mut()
            .insert("job-id", "vm-1".parse().unwrap());
        if let Some(t) = connection_type {
            request
                .metadata_mut()
                .insert("connection-type", t.parse().unwrap());
        }
        let rx = ServiceClient::new(channel)
            .process(request)
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    async fn plain(addr: &str, connection_type: Option<&str>) -> Self {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self::connect(channel, connection_type).await
    }

    async fn recv(&mut self) -> ToAgent {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a message in time")
            .unwrap()
            .expect("stream open")
            .message
            .unwrap()
    }

    async fn send(&self, m: FromAgent) {
        self.tx
            .send(ClientStreamMessage { message: Some(m) })
            .await
            .unwrap();
    }

    /// The manifest as chunks, reassembled; checks the chunking rules.
    async fn manifest_chunks(&mut self, id: &str) -> (ComputationRunReq, usize) {
        let mut data = Vec::new();
        let mut n = 0;
        loop {
            let ToAgent::RunReqChunks(c) = self.recv().await else {
                panic!("expected runReqChunks");
            };
            n += 1;
            assert!(c.data.len() <= MIB);
            assert_eq!(c.id, id);
            data.extend_from_slice(&c.data);
            if c.is_last {
                break;
            }
            assert_eq!(c.data.len(), MIB, "only the last chunk is short");
        }
        (ComputationRunReq::decode(data.as_slice()).unwrap(), n)
    }
}

fn event(event_type: &str, status: &str) -> FromAgent {
    FromAgent::AgentEvent(AgentEvent {
        event_type: event_type.into(),
        timestamp: Some(Timestamp {
            seconds: 1_709_210_096,
            nanos: 500_000_000,
        }),
        computation_id: "cvms-test-1".into(),
        details: br#"{"k":1}"#.to_vec(),
        originator: "agent".into(),
        status: status.into(),
    })
}

/// Seconds since the epoch of an RFC 3339 string, as Python reads it.
fn python_epoch(rfc3339: &str) -> String {
    let out = tool(
        "python3",
        &[
            "-c",
            "import sys;from datetime import datetime;print(datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')).timestamp())",
            rfc3339,
        ],
        std::path::Path::new("."),
    );
    text(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_sends_the_manifest_prints_agent_messages_and_relays_stdin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let json = write_manifest(d);
    let mut serve = Serve::start(d, &[]).await;

    let mut agent = FakeAgent::plain(&serve.addr, None).await;
    let connected = serve.until("connected").await;
    assert_eq!(connected["conn"], 1);
    assert_eq!(connected["connection"], "control");
    assert_eq!(connected["job_id"], "vm-1");
    let (req, n) = agent.manifest_chunks("cvms-test-1").await;
    assert_eq!(n, 2, "a manifest over 1 MiB takes two chunks");
    assert_matches_json(&req, &json);
    let sent = serve.until("sent").await;
    assert_eq!(sent["command"], "run");
    assert_eq!(sent["conns"], serde_json::json!([1]));

    // Everything the agent sends is printed, one JSON line each.
    agent.send(event("Running", "InProgress")).await;
    let l = serve.line().await;
    assert_eq!(l["type"], "agent_event");
    assert_eq!(l["conn"], 1);
    assert_eq!(l["connection"], "control");
    assert_eq!(l["event_type"], "Running");
    assert_eq!(l["status"], "InProgress");
    assert_eq!(l["originator"], "agent");
    assert_eq!(l["computation_id"], "cvms-test-1");
    assert_eq!(bytes(&l["details"]), br#"{"k":1}"#);
    assert_eq!(
        python_epoch(l["timestamp"].as_str().unwrap()),
        "1709210096.5"
    );
    agent
        .send(FromAgent::AgentLog(AgentLog {
            message: "line \"one\"\nand two".into(),
            computation_id: String::new(),
            level: "INFO".into(),
            timestamp: Some(Timestamp {
                seconds: 0,
                nanos: 0,
            }),
        }))
        .await;
    let l = serve.line().await;
    assert_eq!(l["type"], "agent_log");
    assert_eq!(l["message"], "line \"one\"\nand two");
    assert_eq!(l["level"], "INFO");
    assert_eq!(python_epoch(l["timestamp"].as_str().unwrap()), "0.0");
    agent
        .send(FromAgent::RunRes(RunResponse {
            computation_id: "cvms-test-1".into(),
            error: String::new(),
        }))
        .await;
    let l = serve.line().await;
    assert_eq!(
        (
            l["type"].clone(),
            l["computation_id"].clone(),
            l["error"].clone()
        ),
        ("run_res".into(), "cvms-test-1".into(), "".into())
    );
    agent
        .send(FromAgent::VTpMattestationReport(AttestationResponse {
            file: vec![0, 1, 2, 255],
            cert_serial_number: "42".into(),
        }))
        .await;
    let l = serve.line().await;
    assert_eq!(l["type"], "vTPMattestationReport");
    assert_eq!(bytes(&l["file"]), [0, 1, 2, 255]);
    assert_eq!(l["certSerialNumber"], "42");

    // The log forwarder's stream: labelled, and sent neither the manifest
    // nor commands.
    let mut forwarder = FakeAgent::plain(&serve.addr, Some("log-forwarder")).await;
    let connected = serve.until("connected").await;
    assert_eq!(connected["conn"], 2);
    assert_eq!(connected["connection"], "log-forwarder");
    forwarder.send(event("Stopped", "Stopped")).await;
    let l = serve.line().await;
    assert_eq!(
        (l["conn"].clone(), l["connection"].clone()),
        (2.into(), "log-forwarder".into())
    );

    serve.command("stop").await;
    match agent.recv().await {
        ToAgent::StopComputation(s) => assert_eq!(s.computation_id, "cvms-test-1"),
        other => panic!("expected stopComputation, got {other:?}"),
    }
    let l = serve.until("sent").await;
    assert_eq!(
        (l["command"].clone(), l["conns"].clone()),
        ("stop".into(), serde_json::json!([1]))
    );
    agent
        .send(FromAgent::StopComputationRes(StopComputationResponse {
            computation_id: "cvms-test-1".into(),
            message: String::new(),
        }))
        .await;
    assert_eq!(serve.line().await["type"], "stopComputationRes");

    serve.command("state").await;
    match agent.recv().await {
        ToAgent::AgentStateReq(r) => assert_eq!(r.id, "cvms-test-1"),
        other => panic!("expected agentStateReq, got {other:?}"),
    }
    serve.until("sent").await;
    agent
        .send(FromAgent::AgentStateRes(AgentStateRes {
            id: "cvms-test-1".into(),
            state: "ReceivingManifest".into(),
        }))
        .await;
    let l = serve.line().await;
    assert_eq!(
        (l["type"].clone(), l["state"].clone()),
        ("agentStateRes".into(), "ReceivingManifest".into())
    );

    serve.command("run").await;
    let (again, _) = agent.manifest_chunks("cvms-test-1").await;
    assert_eq!(again, req);
    serve.until("sent").await;
    serve.command("disconnect").await;
    match agent.recv().await {
        ToAgent::DisconnectReq(r) => assert_eq!(r.id, "cvms-test-1"),
        other => panic!("expected disconnectReq, got {other:?}"),
    }
    serve.until("sent").await;
    serve.command("frobnicate").await;
    let l = serve.line().await;
    assert_eq!(
        (l["type"].clone(), l["command"].clone()),
        ("error".into(), "frobnicate".into())
    );

    // Nothing reached the forwarder.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), forwarder.rx.message())
            .await
            .is_err()
    );
    // The agent goes away: printed, and commands find nobody.
    drop(agent);
    let l = serve.until("disconnected").await;
    assert_eq!(l["conn"], 1);
    serve.command("stop").await;
    let l = serve.line().await;
    assert_eq!(
        (l["type"].clone(), l["message"].clone()),
        ("error".into(), "no agent is connected".into())
    );
    serve.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_on_ends_the_service_with_0_for_complete_and_1_for_failed() {
    for (last, code) in [("Complete", 0), ("Failed", 1)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_manifest(d);
        let mut serve = Serve::start(d, &["--exit-on", "Complete,Failed"]).await;
        let mut agent = FakeAgent::plain(&serve.addr, Some("log-forwarder")).await;
        // Not an exit state: the service goes on.
        agent.send(event("Running", "InProgress")).await;
        assert_eq!(serve.until("agent_event").await["event_type"], "Running");
        agent.send(event(last, last)).await;
        assert_eq!(serve.until("agent_event").await["event_type"], last);
        let status = tokio::time::timeout(WAIT, serve.child.wait())
            .await
            .expect("the service exits")
            .unwrap();
        assert_eq!(status.code(), Some(code), "{last}");
        // Its stdout ends after that line.
        assert!(serve.lines.next_line().await.unwrap().is_none());
        drop(agent.rx.message().await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unchunked_over_tls_sends_one_run_req() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let json = write_manifest(d);
    let pki = openssl_pki(&d.join("pki"));
    let mut serve = Serve::start(
        d,
        &[
            "--unchunked",
            "--cert",
            pki.server_cert.to_str().unwrap(),
            "--key",
            pki.server_key.to_str().unwrap(),
        ],
    )
    .await;
    let port = serve.addr.rsplit(':').next().unwrap().to_string();
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap())),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut agent = FakeAgent::connect(channel, None).await;
    match agent.recv().await {
        ToAgent::RunReq(req) => assert_matches_json(&req, &json),
        other => panic!("expected runReq, got {other:?}"),
    }
    let sent = serve.until("sent").await;
    assert_eq!(sent["messages"], 1);
    serve.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_manifest_is_exit_status_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("manifest.json"), br#"{"id":"x"}"#).unwrap();
    let out = cli(
        &["cvms", "serve", "manifest.json", "--listen", "127.0.0.1:0"],
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("algorithm: missing"),
        "{}",
        text(&out.stderr)
    );
}
