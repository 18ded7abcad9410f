//! The forwarder: `log.LogCollector` on a Unix socket in front of the disk
//! buffer, and the pump that empties the buffer into the management
//! service's `Process` stream.
//!
//! A message is accepted once it is appended to the buffer; `SendLog` and
//! `SendEvent` answer only then, so a client that got its `Ack` can forget
//! the message. The order of appends is the order of delivery. The pump
//! sends from the oldest unconfirmed message on, one stream at a time;
//! when a stream fails it redials with back-off (100 ms doubling to 5 s by
//! default) and starts again from the oldest unconfirmed message. See
//! `crate::buffer` for the drop policy and `DeliveryConfig::confirm_after_ms`
//! for when a message counts as delivered.

use std::collections::VecDeque;
use std::fs;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use cocos_proto::cvms::{AgentEvent, AgentLog};
use cocos_proto::log::Ack;
use cocos_proto::log::log_collector_server::{LogCollector, LogCollectorServer};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};

use crate::backoff::Backoff;
use crate::buffer::{Appended, BufferError, BufferStats, DiskBuffer};
use crate::config::{Config, ConfigError, DeliveryConfig};
use crate::segment::{self, Payload, Record};
use crate::upstream::{Connection, Upstream, UpstreamError};

/// Bytes of records the pump reads from the buffer at a time.
const BATCH_BYTES: usize = 64 << 10;
/// How long shutdown waits for the collector's connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the forwarder could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The management service settings are invalid.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The disk buffer failed.
    #[error("disk buffer: {0}")]
    Buffer(#[from] BufferError),
    /// The socket could not be set up.
    #[error("socket {}: {source}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    /// The collector's gRPC server failed.
    #[error("collector server: {0}")]
    Server(String),
    /// The buffer is closed (the forwarder stopped) or a task panicked.
    #[error("the forwarder is stopped")]
    Stopped,
}

/// The disk buffer, shared by the collector and the pump. `None` once the
/// forwarder has stopped, so that a late request on an old connection can
/// never write to a directory a new forwarder has opened.
type Store = Arc<Mutex<Option<DiskBuffer>>>;

/// Runs `f` on the buffer in the blocking pool (it does file I/O).
async fn with_store<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&mut DiskBuffer) -> Result<T, BufferError> + Send + 'static,
) -> Result<T, ServeError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().map_err(|_| ServeError::Stopped)?;
        let buffer = guard.as_mut().ok_or(ServeError::Stopped)?;
        f(buffer).map_err(ServeError::from)
    })
    .await
    .map_err(|_| ServeError::Stopped)?
}

/// A running forwarder: the collector on its socket and the pump.
#[derive(Debug)]
pub struct Forwarder {
    cancel: CancellationToken,
    store: Store,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    pump: Option<JoinHandle<()>>,
    socket: Option<SocketFile>,
}

impl Forwarder {
    /// Opens the buffer in `config.buffer.dir` (recovering what a previous
    /// run left), listens on `config.socket_path` (replacing a stale
    /// socket), and starts delivering to `upstream`.
    pub async fn start<U: Upstream>(config: &Config, upstream: U) -> Result<Forwarder, ServeError> {
        config.validate()?;
        let dir = config.buffer.dir.clone();
        let limits = config.limits();
        let buffer = tokio::task::spawn_blocking(move || DiskBuffer::open(&dir, limits))
            .await
            .map_err(|_| ServeError::Stopped)??;
        let store: Store = Arc::new(Mutex::new(Some(buffer)));
        let (listener, socket) = bind(&config.socket_path, config.socket_mode)?;
        let cancel = CancellationToken::new();
        let notify = Arc::new(Notify::new());

        let collector = Collector {
            store: Arc::clone(&store),
            notify: Arc::clone(&notify),
            max_message_bytes: config.max_message_bytes,
        };
        let incoming = UntilCancelled {
            inner: Some(UnixListenerStream::new(listener)),
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
        };
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LogCollectorServer::new(collector))
                .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned()),
        );
        let pump = tokio::spawn(
            Pump {
                store: Arc::clone(&store),
                notify,
                cancel: cancel.clone(),
                delivery: config.delivery.clone(),
            }
            .run(upstream),
        );
        tracing::info!(
            socket = %config.socket_path.display(),
            buffer = %config.buffer.dir.display(),
            "log forwarder started"
        );
        Ok(Forwarder {
            cancel,
            store,
            server: Some(server),
            pump: Some(pump),
            socket: Some(socket),
        })
    }

    /// The disk buffer's counters.
    pub fn stats(&self) -> Result<BufferStats, ServeError> {
        let guard = self.store.lock().map_err(|_| ServeError::Stopped)?;
        guard
            .as_ref()
            .map(DiskBuffer::stats)
            .ok_or(ServeError::Stopped)
    }

    /// Resolves if the collector's server stops by itself (an error).
    pub async fn stopped(&mut self) -> ServeError {
        let Some(server) = self.server.as_mut() else {
            return ServeError::Stopped;
        };
        let result = server.await;
        self.server = None;
        match result {
            Ok(Ok(())) => ServeError::Stopped,
            Ok(Err(e)) => ServeError::Server(crate::upstream::error_chain(&e)),
            Err(_) => ServeError::Stopped,
        }
    }

    /// Stops accepting, stops the pump, closes the buffer (what is
    /// undelivered stays on disk for the next start) and removes the socket.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.cancel.cancel();
        if let Some(pump) = self.pump.take() {
            let _ = pump.await;
        }
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
        self.close();
        Ok(())
    }

    /// Closes the buffer and removes the socket, if it is still ours (a
    /// new forwarder may have replaced it).
    fn close(&mut self) {
        if let Ok(mut guard) = self.store.lock() {
            guard.take();
        }
        if let Some(socket) = self.socket.take() {
            if fs::symlink_metadata(&socket.path).is_ok_and(|m| (m.dev(), m.ino()) == socket.id) {
                let _ = fs::remove_file(&socket.path);
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.pump.take() {
            task.abort();
        }
        if let Some(task) = self.server.take() {
            task.abort();
        }
        self.close();
    }
}

/// The collector's socket file, identified by device and inode.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

/// Binds the collector's socket, replacing a stale one (never another
/// kind of file), with `mode` permissions.
fn bind(path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(err)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)?;
    let meta = fs::symlink_metadata(path).map_err(err)?;
    let socket = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    Ok((listener, socket))
}

/// The listener's connections until shutdown; then the listener is
/// dropped at once (tonic keeps the stream until its connections close).
struct UntilCancelled {
    inner: Option<UnixListenerStream>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Stream for UntilCancelled {
    type Item = std::io::Result<tokio::net::UnixStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

/// `log.LogCollector`: appends to the buffer and wakes the pump.
struct Collector {
    store: Store,
    notify: Arc<Notify>,
    max_message_bytes: usize,
}

impl Collector {
    async fn accept(&self, payload: Payload) -> Result<Response<Ack>, Status> {
        let len = segment::record_len(&payload);
        if len > self.max_message_bytes {
            return Err(Status::invalid_argument(format!(
                "message of {len} bytes exceeds the forwarder's limit of {} bytes",
                self.max_message_bytes
            )));
        }
        match with_store(&self.store, move |b| b.append(payload)).await {
            Ok(Appended::Stored(_)) => self.notify.notify_one(),
            // Dropped by the bound's policy: that is this message's fate,
            // not an error to retry.
            Ok(Appended::DroppedNewLog) => {}
            Err(ServeError::Stopped) => {
                return Err(Status::unavailable("the log forwarder is stopping"));
            }
            Err(e) => {
                tracing::error!("cannot buffer a message: {e}");
                return Err(Status::unavailable(format!(
                    "the log forwarder cannot buffer: {e}"
                )));
            }
        }
        Ok(Response::new(Ack {}))
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

#[tonic::async_trait]
impl LogCollector for Collector {
    async fn send_log(&self, request: Request<AgentLog>) -> Result<Response<Ack>, Status> {
        let mut log = request.into_inner();
        log.timestamp.get_or_insert_with(now);
        self.accept(Payload::Log(log)).await
    }

    async fn send_event(&self, request: Request<AgentEvent>) -> Result<Response<Ack>, Status> {
        let mut event = request.into_inner();
        event.timestamp.get_or_insert_with(now);
        self.accept(Payload::Event(event)).await
    }
}

/// Empties the buffer into the management service.
struct Pump {
    store: Store,
    notify: Arc<Notify>,
    cancel: CancellationToken,
    delivery: DeliveryConfig,
}

/// How a stream ended.
enum End {
    Cancelled,
    Broken {
        reason: String,
        /// The last message handed to the stream, if any was.
        last_sent: Option<u64>,
    },
}

impl Pump {
    async fn run<U: Upstream>(self, upstream: U) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.delivery.redial_initial_ms),
            Duration::from_millis(self.delivery.redial_max_ms),
        );
        // Streams in a row that broke with messages on them before any
        // got confirmed.
        let mut stalls = 0;
        loop {
            let opened = tokio::select! {
                () = self.cancel.cancelled() => return,
                opened = upstream.open() => opened,
            };
            let delay = match opened {
                Ok(connection) => {
                    tracing::info!("stream to the management service open");
                    let started = Instant::now();
                    let head = self.acked().await;
                    match self.stream(connection).await {
                        End::Cancelled => return,
                        End::Broken { reason, last_sent } => {
                            match last_sent {
                                Some(last) if self.acked().await == head => {
                                    stalls += 1;
                                    if stalls >= self.delivery.max_replays {
                                        stalls = 0;
                                        self.give_up_on(head, last).await;
                                    }
                                }
                                _ => stalls = 0,
                            }
                            // A stream that lived a while was a success:
                            // start the back-off afresh.
                            if started.elapsed() >= backoff.max() {
                                backoff.reset();
                            }
                            let delay = backoff.next_delay();
                            tracing::warn!(
                                "stream to the management service ended ({reason}); redialling in {delay:?}"
                            );
                            delay
                        }
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        "management service unreachable ({e}); buffering, redialling in {delay:?}"
                    );
                    delay
                }
            };
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Sends on one stream from the oldest unconfirmed message on, until
    /// the stream ends or the forwarder stops.
    async fn stream(&self, connection: Connection) -> End {
        let Connection { sender, mut closed } = connection;
        let confirm_after = self.delivery.confirm_after();
        // Confirmations (and so `ack` writes) at most this often.
        let confirm_every =
            (confirm_after / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut last_confirm = Instant::now();
        let mut tick = tokio::time::interval(confirm_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = match with_store(&self.store, |b| Ok(b.acked())).await {
            Ok(acked) => acked,
            Err(_) => return End::Cancelled,
        };
        let mut cursor = start;
        let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
        let closed_reason = |r: Result<String, _>| r.unwrap_or_else(|_| "stream closed".into());
        let reason = 'stream: loop {
            if last_confirm.elapsed() >= confirm_every {
                self.confirm(&mut in_flight, confirm_after).await;
                last_confirm = Instant::now();
            }
            let batch: Vec<Record> =
                match with_store(&self.store, move |b| b.read_after(cursor, BATCH_BYTES)).await {
                    Ok(batch) => batch,
                    Err(ServeError::Stopped) => return End::Cancelled,
                    Err(e) => {
                        tracing::error!("cannot read the disk buffer: {e}");
                        Vec::new()
                    }
                };
            if batch.is_empty() {
                tokio::select! {
                    () = self.cancel.cancelled() => return End::Cancelled,
                    reason = &mut closed => break 'stream closed_reason(reason),
                    () = self.notify.notified() => {}
                    _ = tick.tick() => {}
                }
                continue;
            }
            for record in batch {
                let seq = record.seq;
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return End::Cancelled,
                    reason = &mut closed => break 'stream closed_reason(reason),
                    sent = sender.send(record.payload.into_stream_message()) => {
                        if sent.is_err() {
                            break 'stream "the transport dropped the stream".to_string();
                        }
                    }
                }
                in_flight.push_back((seq, Instant::now()));
                cursor = seq;
            }
        };
        // What was on the stream for the whole window before the break
        // counts as delivered; the rest is sent again on the next stream.
        self.confirm(&mut in_flight, confirm_after).await;
        End::Broken {
            reason,
            last_sent: (cursor > start).then_some(cursor),
        }
    }

    async fn acked(&self) -> u64 {
        with_store(&self.store, |b| Ok(b.acked()))
            .await
            .unwrap_or(0)
    }

    /// Counts messages `head + 1 ..= last` as delivered although no stream
    /// stayed up long enough to confirm them: without this, a service that
    /// always drops the stream soon after it opens (or on one message it
    /// cannot take) would get the same window again and again and nothing
    /// after it.
    async fn give_up_on(&self, head: u64, last: u64) {
        tracing::warn!(
            first_seq = head + 1,
            last_seq = last,
            streams = self.delivery.max_replays,
            "the management service closed {} streams in a row before any message on them was \
             confirmed; counting these messages as delivered to make progress (some may be lost)",
            self.delivery.max_replays
        );
        if let Err(e) = with_store(&self.store, move |b| b.confirm_through(last)).await {
            tracing::error!("cannot record delivered messages: {e}");
        }
    }

    /// Confirms the messages sent at least `confirm_after` ago on the
    /// stream still open.
    async fn confirm(&self, in_flight: &mut VecDeque<(u64, Instant)>, confirm_after: Duration) {
        let now = Instant::now();
        let mut through = None;
        while let Some(&(seq, sent)) = in_flight.front() {
            if now.duration_since(sent) < confirm_after {
                break;
            }
            through = Some(seq);
            in_flight.pop_front();
        }
        if let Some(seq) = through {
            if let Err(e) = with_store(&self.store, move |b| b.confirm_through(seq)).await {
                tracing::error!("cannot record delivered messages: {e}");
            }
        }
    }
}
