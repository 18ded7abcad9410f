//! What `cvms serve` prints: one JSON object per line on stdout, flushed
//! line by line, written by one task so that lines never interleave.
//!
//! Every line has `type`. Messages from an agent carry the proto oneof
//! field's name as `type` (`agent_log`, `agent_event`, `run_res`,
//! `stopComputationRes`, `agentStateRes`, `vTPMattestationReport`,
//! `azureAttestationToken`) and the message's fields under their proto
//! names, with `conn` (the connection's number) and `connection` (its
//! `connection-type` metadata, or `control` when absent). Timestamps are
//! RFC 3339 strings (UTC, `Z`), bytes standard base64. The service's own
//! lines: `listening`, `connected`, `disconnected`, `sent`, `error`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cocos_proto::cvms::client_stream_message::Message;
use cocos_proto::cvms::{self, ClientStreamMessage};
use cocos_proto::prost_types::Timestamp;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};

/// A line to print, or the end of the service.
#[derive(Debug)]
enum Out {
    Line(String),
    /// Flush, then report the exit status.
    Exit(u8),
}

/// The sending side of the printer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Printer {
    tx: mpsc::Sender<Out>,
}

/// How many lines may wait for stdout before senders wait in turn.
const QUEUE: usize = 1024;

impl Printer {
    /// Starts the writer task. The receiver yields the exit status once a
    /// line asked for the end and everything before it is flushed.
    pub fn spawn() -> (Self, oneshot::Receiver<u8>) {
        let (tx, mut rx) = mpsc::channel::<Out>(QUEUE);
        let (exit_tx, exit_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(out) = rx.recv().await {
                match out {
                    Out::Line(mut line) => {
                        line.push('\n');
                        // A closed stdout leaves nobody to tell.
                        let _ = stdout.write_all(line.as_bytes()).await;
                        let _ = stdout.flush().await;
                    }
                    Out::Exit(code) => {
                        let _ = stdout.flush().await;
                        let _ = exit_tx.send(code);
                        return;
                    }
                }
            }
        });
        (Self { tx }, exit_rx)
    }

    /// Prints `value` as one line.
    pub async fn print(&self, value: Value) {
        // The writer only stops at Exit, after which nothing matters.
        let _ = self.tx.send(Out::Line(value.to_string())).await;
    }

    /// Ends the service with `code` once everything before is printed.
    pub async fn exit(&self, code: u8) {
        let _ = self.tx.send(Out::Exit(code)).await;
    }
}

/// RFC 3339 in UTC, or `null` when absent.
pub fn timestamp(t: &Option<Timestamp>) -> Value {
    match t {
        Some(t) => Value::String(t.to_string()),
        None => Value::Null,
    }
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

/// Where a line came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The connection's number, from 1 in order of arrival.
    pub conn: u64,
    /// Its `connection-type` metadata, or `control`.
    pub connection: String,
}

/// A message from an agent as a JSON object (see the module
/// documentation).
pub fn message_json(origin: &Origin, msg: &ClientStreamMessage) -> Value {
    let (kind, fields) = match &msg.message {
        Some(Message::AgentLog(l)) => (
            "agent_log",
            json!({
                "message": l.message,
                "computation_id": l.computation_id,
                "level": l.level,
                "timestamp": timestamp(&l.timestamp),
            }),
        ),
        Some(Message::AgentEvent(e)) => (
            "agent_event",
            json!({
                "event_type": e.event_type,
                "timestamp": timestamp(&e.timestamp),
                "computation_id": e.computation_id,
                "details": b64(&e.details),
                "originator": e.originator,
                "status": e.status,
            }),
        ),
        Some(Message::RunRes(r)) => (
            "run_res",
            json!({ "computation_id": r.computation_id, "error": r.error }),
        ),
        Some(Message::StopComputationRes(r)) => (
            "stopComputationRes",
            json!({ "computation_id": r.computation_id, "message": r.message }),
        ),
        Some(Message::AgentStateRes(r)) => {
            ("agentStateRes", json!({ "id": r.id, "state": r.state }))
        }
        Some(Message::VTpMattestationReport(cvms::AttestationResponse {
            file,
            cert_serial_number,
        })) => (
            "vTPMattestationReport",
            json!({ "file": b64(file), "certSerialNumber": cert_serial_number }),
        ),
        Some(Message::AzureAttestationToken(cvms::AzureAttestationToken {
            file,
            cert_serial_number,
        })) => (
            "azureAttestationToken",
            json!({ "file": b64(file), "certSerialNumber": cert_serial_number }),
        ),
        None => ("unknown", json!({})),
    };
    let mut out = Map::new();
    out.insert("type".into(), kind.into());
    out.insert("conn".into(), origin.conn.into());
    out.insert("connection".into(), origin.connection.clone().into());
    if let Value::Object(fields) = fields {
        out.extend(fields);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        // 2024-02-29T12:34:56.5Z: 1709210096 s since the epoch (date -u -d).
        let t = Some(Timestamp {
            seconds: 1_709_210_096,
            nanos: 500_000_000,
        });
        assert_eq!(timestamp(&t), json!("2024-02-29T12:34:56.500Z"));
        assert_eq!(timestamp(&None), Value::Null);
    }
}
