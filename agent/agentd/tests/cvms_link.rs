//! The whole agent process ([`run_with`]) against a real tonic
//! `cvms.Service` on a TCP port, through the reconnecting link: the
//! manifest sent as chunks, `run_res`, state requests and stop on the
//! control stream, with the `job-id` metadata.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cocos_agentd::*;
use cocos_cvms::{CvmsSettings, JOB_ID_METADATA, LinkConfig, spawn_link};
use cocos_proto::cvms::service_server::{Service, ServiceServer};
use cocos_proto::cvms::{
    AgentStateReq, ClientStreamMessage, RunReqChunks, ServerStreamMessage, StopComputation,
    client_stream_message::Message as Out, server_stream_message::Message as In,
};
use cocos_proto::prost::Message;
use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

struct Session {
    job_id: String,
    inbound: Streaming<ClientStreamMessage>,
    outbound: mpsc::Sender<Result<ServerStreamMessage, Status>>,
}

struct FakeCvms(mpsc::UnboundedSender<Session>);

#[tonic::async_trait]
impl Service for FakeCvms {
    type ProcessStream = ReceiverStream<Result<ServerStreamMessage, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ClientStreamMessage>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let job_id = request
            .metadata()
            .get(JOB_ID_METADATA)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let _ = self.0.send(Session {
            job_id,
            inbound: request.into_inner(),
            outbound: tx,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn next(s: &mut Session) -> Out {
    tokio::time::timeout(Duration::from_secs(20), s.inbound.message())
        .await
        .expect("nothing from the agent in 20 s")
        .unwrap()
        .unwrap()
        .message
        .unwrap()
}

async fn send(s: &Session, m: In) {
    s.outbound
        .send(Ok(ServerStreamMessage { message: Some(m) }))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_agent_process_takes_its_manifest_and_stop_from_the_management_service() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sessions_tx, mut sessions) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ServiceServer::new(FakeCvms(sessions_tx)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let settings = CvmsSettings::new(addr.to_string(), "vm-42");
    let config = Config {
        work_dir: dir.path().join("cocos"),
        listen: Listen::Unix(dir.path().join("agent.sock")),
        cvms: Some(settings.clone()),
        ..Config::default()
    };
    let (link, incoming) = spawn_link(settings, LinkConfig::default());
    let services = Services {
        runner: FakeRunner::new(Behaviour::Succeed(vec![])),
        events: Arc::new(Recorder::<cocos_proto::cvms::AgentEvent>::default()),
        control: Arc::new(link),
        attestation: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(run_with(config, services, Some(incoming), async {
        let _ = stop_rx.await;
    }));

    let mut s = tokio::time::timeout(Duration::from_secs(20), sessions.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.job_id, "vm-42");
    let parties = Parties::new();
    let bytes = Plan::simple().manifest(&parties).encode_to_vec();
    for piece in bytes.chunks(64) {
        send(
            &s,
            In::RunReqChunks(RunReqChunks {
                data: piece.to_vec(),
                id: COMPUTATION.into(),
                is_last: false,
            }),
        )
        .await;
    }
    send(
        &s,
        In::RunReqChunks(RunReqChunks {
            data: vec![],
            id: COMPUTATION.into(),
            is_last: true,
        }),
    )
    .await;
    match next(&mut s).await {
        Out::RunRes(r) => assert_eq!(
            (r.computation_id.as_str(), r.error.as_str()),
            (COMPUTATION, "")
        ),
        other => panic!("{other:?}"),
    }
    send(&s, In::AgentStateReq(AgentStateReq { id: "1".into() })).await;
    match next(&mut s).await {
        Out::AgentStateRes(r) => assert_eq!(
            (r.id.as_str(), r.state.as_str()),
            ("1", "ReceivingAlgorithm")
        ),
        other => panic!("{other:?}"),
    }
    send(
        &s,
        In::StopComputation(StopComputation {
            computation_id: COMPUTATION.into(),
        }),
    )
    .await;
    match next(&mut s).await {
        Out::StopComputationRes(r) => {
            assert_eq!(
                (r.computation_id.as_str(), r.message.as_str()),
                (COMPUTATION, "")
            )
        }
        other => panic!("{other:?}"),
    }
    send(&s, In::AgentStateReq(AgentStateReq { id: "2".into() })).await;
    match next(&mut s).await {
        Out::AgentStateRes(r) => assert_eq!(r.state, "ReceivingManifest"),
        other => panic!("{other:?}"),
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
