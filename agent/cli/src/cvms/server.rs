//! The server side of `cvms.Service/Process`: every connection gets the
//! manifest (unless it is a log forwarder's), everything an agent sends is
//! printed, and commands from stdin go to every control connection.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cocos_proto::cvms::client_stream_message::Message as FromAgent;
use cocos_proto::cvms::server_stream_message::Message as ToAgent;
use cocos_proto::cvms::service_server::Service;
use cocos_proto::cvms::{
    AgentStateReq, ClientStreamMessage, DisconnectReq, ServerStreamMessage, StopComputation,
};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::output::{Origin, Printer, message_json};

/// Metadata naming the kind of a connection; the log forwarder's is
/// `log-forwarder` (agent-api §6.2), the agent's control stream has none.
pub const CONNECTION_TYPE: &str = "connection-type";
/// The `connection-type` of the agent's log and event stream.
pub const LOG_FORWARDER: &str = "log-forwarder";
/// How many messages may wait for one agent.
const OUTBOUND_QUEUE: usize = 16;

/// What the service knows and shares between connections.
pub struct Shared {
    /// The manifest's computation id.
    pub computation_id: String,
    /// The messages that send the manifest.
    pub run_messages: Vec<ServerStreamMessage>,
    /// Event types that end the service, from `--exit-on`.
    pub exit_on: Vec<String>,
    /// The output.
    pub printer: Printer,
    next_conn: AtomicU64,
    /// Open control connections: number → sender.
    controls: Mutex<BTreeMap<u64, mpsc::Sender<Result<ServerStreamMessage, Status>>>>,
}

impl Shared {
    /// A service sending `run_messages` to each agent.
    pub fn new(
        computation_id: String,
        run_messages: Vec<ServerStreamMessage>,
        exit_on: Vec<String>,
        printer: Printer,
    ) -> Self {
        Self {
            computation_id,
            run_messages,
            exit_on,
            printer,
            next_conn: AtomicU64::new(1),
            controls: Mutex::new(BTreeMap::new()),
        }
    }

    fn controls(&self) -> Vec<(u64, mpsc::Sender<Result<ServerStreamMessage, Status>>)> {
        self.controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, tx)| (*n, tx.clone()))
            .collect()
    }

    /// Sends `messages` to every control connection and prints what went
    /// where (or that no agent is connected).
    async fn broadcast(&self, command: &str, messages: &[ServerStreamMessage]) {
        let mut sent = Vec::new();
        for (n, tx) in self.controls() {
            let mut ok = true;
            for m in messages {
                if tx.send(Ok(m.clone())).await.is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                sent.push(n);
            }
        }
        if sent.is_empty() {
            self.printer
                .print(json!({"type": "error", "command": command, "message": "no agent is connected"}))
                .await;
        } else {
            self.printer
                .print(json!({"type": "sent", "command": command, "conns": sent, "messages": messages.len()}))
                .await;
        }
    }
}

/// The `cvms.Service` implementation.
#[derive(Clone)]
pub struct Cvms(pub Arc<Shared>);

type Outbound = Pin<Box<dyn Stream<Item = Result<ServerStreamMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Service for Cvms {
    type ProcessStream = Outbound;

    async fn process(
        &self,
        request: Request<Streaming<ClientStreamMessage>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let shared = self.0.clone();
        let md = request.metadata();
        let text = |key: &str| {
            md.get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let kind = text(CONNECTION_TYPE);
        let job_id = text("job-id");
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let origin = Origin {
            conn: shared.next_conn.fetch_add(1, Ordering::Relaxed),
            connection: if kind.is_empty() {
                "control".into()
            } else {
                kind.clone()
            },
        };
        let control = kind != LOG_FORWARDER;
        shared
            .printer
            .print(json!({
                "type": "connected",
                "conn": origin.conn,
                "connection": origin.connection,
                "job_id": job_id,
                "peer": peer,
            }))
            .await;

        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        if control {
            shared
                .controls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(origin.conn, tx.clone());
            // The manifest goes out as soon as the agent is there; a task,
            // because a large manifest has more chunks than the queue holds.
            let s = shared.clone();
            let conn = origin.conn;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut ok = true;
                for m in &s.run_messages {
                    if tx.send(Ok(m.clone())).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    s.printer
                        .print(json!({"type": "sent", "command": "run", "conns": [conn], "messages": s.run_messages.len()}))
                        .await;
                }
            });
        }

        let mut inbound = request.into_inner();
        // The response stream lasts as long as the agent's side: a
        // connection that gets nothing from us (a log forwarder) must not
        // see its call end.
        let keep_open = tx;
        tokio::spawn(async move {
            let end = loop {
                match inbound.message().await {
                    Ok(Some(msg)) => {
                        shared.printer.print(message_json(&origin, &msg)).await;
                        if let Some(FromAgent::AgentEvent(e)) = &msg.message {
                            if shared.exit_on.contains(&e.event_type) {
                                shared
                                    .printer
                                    .exit(if e.event_type == "Failed" { 1 } else { 0 })
                                    .await;
                            }
                        }
                    }
                    Ok(None) => break None,
                    Err(status) => break Some(status.message().to_string()),
                }
            };
            shared
                .controls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&origin.conn);
            drop(keep_open);
            shared
                .printer
                .print(json!({
                    "type": "disconnected",
                    "conn": origin.conn,
                    "connection": origin.connection,
                    "error": end,
                }))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads commands from stdin, one per line, until it closes (the service
/// goes on; see `cvms serve --help`).
pub async fn commands(shared: Arc<Shared>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let id = shared.computation_id.clone();
    while let Ok(Some(line)) = lines.next_line().await {
        let command = line.trim();
        let message = |m| vec![ServerStreamMessage { message: Some(m) }];
        match command {
            "" => {}
            "stop" => {
                let m = message(ToAgent::StopComputation(StopComputation {
                    computation_id: id.clone(),
                }));
                shared.broadcast(command, &m).await;
            }
            "state" => {
                let m = message(ToAgent::AgentStateReq(AgentStateReq { id: id.clone() }));
                shared.broadcast(command, &m).await;
            }
            "disconnect" => {
                let m = message(ToAgent::DisconnectReq(DisconnectReq { id: id.clone() }));
                shared.broadcast(command, &m).await;
            }
            "run" => {
                let m = shared.run_messages.clone();
                shared.broadcast(command, &m).await;
            }
            other => {
                shared
                    .printer
                    .print(json!({
                        "type": "error",
                        "command": other,
                        "message": "unknown command (stop, state, run, disconnect)",
                    }))
                    .await;
            }
        }
    }
}
