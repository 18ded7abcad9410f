//! Where the agent's events go: an [`EventSink`] (the log forwarder's
//! `LogCollector.SendEvent` in production, a recorder in tests), fed in
//! order by an [`Emitter`] that never blocks the state machine.
//!
//! The emitter keeps a bounded queue (1024 events; a computation makes a
//! dozen) and one delivery task that sends the events one at a time, in
//! order, retrying each with backoff (100 ms doubling to 2 s) until the
//! sink takes it: an event is never skipped. Only when the queue is full —
//! the forwarder down for a long time — is a new event refused, and that
//! is logged as an error with the event, never silent.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cocos_proto::cvms::AgentEvent;
use cocos_proto::log::log_collector_client::LogCollectorClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::state::EventStatus;

/// `AgentEvent.originator` of this service's events.
pub const ORIGINATOR: &str = "agent";

/// Takes one event; an error makes the emitter retry it.
#[tonic::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Delivers `event`.
    async fn send_event(&self, event: AgentEvent) -> Result<(), tonic::Status>;
}

/// The log forwarder, reached with the generated `log.LogCollector` client.
#[derive(Debug, Clone)]
pub struct LogCollectorSink {
    client: LogCollectorClient<Channel>,
}

impl LogCollectorSink {
    /// A sink over `channel` (e.g. [`crate::unix_channel`] of
    /// `/run/cocos/log.sock`).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: LogCollectorClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl EventSink for LogCollectorSink {
    async fn send_event(&self, event: AgentEvent) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(event);
        request.set_timeout(Duration::from_secs(5));
        self.client.clone().send_event(request).await.map(|_| ())
    }
}

/// Queues events for ordered delivery to a sink; see the module
/// documentation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Emitter {
    tx: mpsc::Sender<AgentEvent>,
}

/// Events held while the sink is unreachable.
pub const EVENT_QUEUE: usize = 1024;

impl Emitter {
    /// Starts the delivery task on the current runtime.
    pub fn spawn(sink: Arc<dyn EventSink>) -> Self {
        let (tx, mut rx) = mpsc::channel::<AgentEvent>(EVENT_QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let mut backoff = Duration::from_millis(100);
                let mut warned = false;
                while let Err(e) = sink.send_event(event.clone()).await {
                    if !warned {
                        tracing::warn!(
                            event_type = %event.event_type,
                            error = %e.message(),
                            "event not delivered to the log forwarder; retrying"
                        );
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        });
        Self { tx }
    }

    /// Queues an event now. `details` is JSON, empty when `None`.
    pub fn emit(
        &self,
        computation_id: &str,
        event_type: &str,
        status: EventStatus,
        details: Option<serde_json::Value>,
    ) {
        let event = AgentEvent {
            event_type: event_type.to_string(),
            timestamp: Some(prost_types::Timestamp::from(SystemTime::now())),
            computation_id: computation_id.to_string(),
            details: details
                .map(|d| d.to_string().into_bytes())
                .unwrap_or_default(),
            originator: ORIGINATOR.to_string(),
            status: status.as_str().to_string(),
        };
        tracing::info!(
            computation_id,
            event_type,
            status = status.as_str(),
            "agent event"
        );
        if let Err(e) = self.tx.try_send(event) {
            let (why, event) = match e {
                mpsc::error::TrySendError::Full(ev) => ("the event queue is full", ev),
                mpsc::error::TrySendError::Closed(ev) => ("the event delivery task is gone", ev),
            };
            tracing::error!(
                event_type = %event.event_type,
                status = %event.status,
                computation_id = %event.computation_id,
                "event not queued: {why}"
            );
        }
    }
}
