//! The agent's control stream to the management service, kept up: it dials,
//! opens `Process`, hands every incoming [`ServerStreamMessage`] to the
//! agent, and sends what the agent queues. When the stream breaks (or the
//! service sends `disconnectReq`), it re-dials with exponential backoff and
//! sends what is still queued.
//!
//! The outgoing queue is bounded ([`LinkConfig::queue_capacity`], 1000 as in
//! the Go agent); when full, the oldest message is dropped with a warning
//! and counted ([`LinkHandle::dropped`]). A message counts as sent once the
//! gRPC stream has taken it for transmission: there is no acknowledgement
//! in the protocol, so a message in flight when the connection dies can be
//! lost, as with the Go agent; everything still queued survives.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocos_proto::cvms::{ClientStreamMessage, ServerStreamMessage, server_stream_message};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::connect::{connect, open_process};
use crate::settings::CvmsSettings;

/// Tuning of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Most outgoing messages held while the service is unreachable.
    pub queue_capacity: usize,
    /// Most incoming messages waiting for the agent (back-pressure on the
    /// stream beyond it).
    pub incoming_capacity: usize,
    /// First wait before re-dialling.
    pub backoff_initial: Duration,
    /// Longest wait before re-dialling.
    pub backoff_max: Duration,
}

impl Default for LinkConfig {
    /// 1000 queued messages, 64 incoming, backoff 100 ms doubling to 5 s.
    fn default() -> Self {
        Self {
            queue_capacity: 1000,
            incoming_capacity: 64,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The link's state, as [`LinkHandle::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Dialling, or waiting to re-dial.
    Connecting,
    /// The `Process` stream is open; `sessions` counts the streams opened
    /// so far, this one included.
    Connected {
        /// Streams opened since the link started.
        sessions: u64,
    },
    /// [`LinkHandle::shutdown`] was called.
    Closed,
}

#[derive(Debug)]
struct Queue {
    items: Mutex<VecDeque<ClientStreamMessage>>,
    notify: Notify,
    capacity: usize,
    dropped: AtomicU64,
}

impl Queue {
    fn pop(&self) -> Option<ClientStreamMessage> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

/// The agent's side of the link: queue messages, watch the status, shut
/// it down. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    queue: Arc<Queue>,
    status: watch::Receiver<LinkStatus>,
    cancel: CancellationToken,
}

impl LinkHandle {
    /// Queues `msg` for the service; never blocks. When the queue is full
    /// the oldest queued message is dropped (and logged).
    pub fn send(&self, msg: ClientStreamMessage) {
        let mut items = self.queue.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() >= self.queue.capacity {
            items.pop_front();
            let n = self.queue.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                dropped_total = n,
                capacity = self.queue.capacity,
                "management service unreachable and the send queue is full: oldest message dropped"
            );
        }
        items.push_back(msg);
        drop(items);
        self.queue.notify.notify_one();
    }

    /// Messages queued and not yet taken by a stream.
    pub fn queued(&self) -> usize {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    /// The current status.
    pub fn status(&self) -> LinkStatus {
        *self.status.borrow()
    }

    /// A receiver of status changes (for waiting until connected).
    pub fn watch_status(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// Stops the link: closes the stream and stops re-dialling.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

/// Starts the link on the current tokio runtime. Returns the handle and
/// the receiver of the service's messages (`disconnectReq` is handled by
/// the link itself and not passed on). The link runs until
/// [`LinkHandle::shutdown`] or until the receiver is dropped.
pub fn spawn_link(
    settings: CvmsSettings,
    config: LinkConfig,
) -> (LinkHandle, mpsc::Receiver<ServerStreamMessage>) {
    let queue = Arc::new(Queue {
        items: Mutex::new(VecDeque::new()),
        notify: Notify::new(),
        capacity: config.queue_capacity.max(1),
        dropped: AtomicU64::new(0),
    });
    let (status_tx, status_rx) = watch::channel(LinkStatus::Connecting);
    let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_capacity.max(1));
    let cancel = CancellationToken::new();
    let handle = LinkHandle {
        queue: queue.clone(),
        status: status_rx,
        cancel: cancel.clone(),
    };
    tokio::spawn(run(settings, config, queue, status_tx, incoming_tx, cancel));
    (handle, incoming_rx)
}

/// How one session ended.
enum End {
    /// Re-dial.
    Broken,
    /// Stop for good.
    Stop,
}

async fn run(
    settings: CvmsSettings,
    config: LinkConfig,
    queue: Arc<Queue>,
    status: watch::Sender<LinkStatus>,
    incoming: mpsc::Sender<ServerStreamMessage>,
    cancel: CancellationToken,
) {
    let mut backoff = config.backoff_initial;
    let mut sessions = 0u64;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let _ = status.send(LinkStatus::Connecting);
        match session(
            &settings,
            &queue,
            &incoming,
            &cancel,
            &status,
            &mut sessions,
        )
        .await
        {
            Ok(End::Stop) => break,
            Ok(End::Broken) => backoff = config.backoff_initial,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "management service link down")
            }
        }
        let _ = status.send(LinkStatus::Connecting);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
    let _ = status.send(LinkStatus::Closed);
}

/// One dial and one `Process` stream, until it breaks. `Err` when the dial
/// or the stream's opening failed (backoff grows); `Ok(Broken)` after a
/// stream that did open (backoff restarts).
async fn session(
    settings: &CvmsSettings,
    queue: &Arc<Queue>,
    incoming: &mpsc::Sender<ServerStreamMessage>,
    cancel: &CancellationToken,
    status: &watch::Sender<LinkStatus>,
    sessions: &mut u64,
) -> Result<End, String> {
    let channel = tokio::select! {
        _ = cancel.cancelled() => return Ok(End::Stop),
        c = connect(settings) => c.map_err(|e| e.to_string())?,
    };
    // Ends the outgoing stream when this session ends, so that a stream
    // still polled by the transport takes nothing more from the queue.
    let session_end = cancel.child_token();
    let _end_on_return = session_end.clone().drop_guard();
    let outbound = outgoing(queue.clone(), session_end.clone());
    let mut inbound = tokio::select! {
        _ = cancel.cancelled() => return Ok(End::Stop),
        s = open_process(channel, &settings.cvm_id, None, outbound) => {
            s.map_err(|s| format!("opening Process: {}", s.message()))?
        }
    };
    *sessions += 1;
    let _ = status.send(LinkStatus::Connected {
        sessions: *sessions,
    });
    tracing::info!(uri = %settings.uri(), "connected to the computation management service");
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return Ok(End::Stop),
            m = inbound.message() => m,
        };
        match msg {
            Ok(Some(ServerStreamMessage {
                message: Some(server_stream_message::Message::DisconnectReq(d)),
            })) => {
                tracing::info!(id = %d.id, "management service asked to disconnect; re-dialling");
                return Ok(End::Broken);
            }
            Ok(Some(m)) => {
                if incoming.send(m).await.is_err() {
                    tracing::info!("agent stopped reading the management stream; link closing");
                    return Ok(End::Stop);
                }
            }
            Ok(None) => {
                tracing::warn!("management service closed the stream; re-dialling");
                return Ok(End::Broken);
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), message = %s.message(), "management stream broke; re-dialling");
                return Ok(End::Broken);
            }
        }
    }
}

/// The queue as a stream, ending when `end` is cancelled.
fn outgoing(
    queue: Arc<Queue>,
    end: CancellationToken,
) -> impl futures::Stream<Item = ClientStreamMessage> + Send + 'static {
    futures::stream::unfold((queue, end), |(queue, end)| async move {
        loop {
            if end.is_cancelled() {
                return None;
            }
            if let Some(m) = queue.pop() {
                return Some((m, (queue, end)));
            }
            tokio::select! {
                _ = end.cancelled() => return None,
                _ = queue.notify.notified() => {}
            }
        }
    })
}
