//! Test helpers: a real tonic management service (`cvms.Service`) on a
//! local TCP port that records what it receives, forwarder configurations,
//! a capture of tracing output, and a record encoder written from the
//! documented segment format (not the crate's).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cocos_logfwd::client::ClientOptions;
use cocos_logfwd::{Config, Forwarder, GrpcUpstream};
use cocos_proto::cvms::service_server::{Service, ServiceServer};
use cocos_proto::cvms::{
    AgentEvent, AgentLog, ClientStreamMessage, ServerStreamMessage, client_stream_message,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};

/// The CVM id the tests configure.
pub const CVM_ID: &str = "0b8c0ba1-5a3e-4c7b-9c39-2b1f7f0e2e11";

/// A message as the fake received it: the stream it came on and what it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// An `agent_log`.
    Log(AgentLog),
    /// An `agent_event`.
    Event(AgentEvent),
    /// Anything else (must not happen).
    Other(ClientStreamMessage),
}

impl Got {
    /// A short name: the log's message or `event:<event_type>:<status>`.
    pub fn name(&self) -> String {
        match self {
            Got::Log(l) => l.message.clone(),
            Got::Event(e) => format!("event:{}:{}", e.event_type, e.status),
            Got::Other(m) => format!("other:{m:?}"),
        }
    }
}

/// The metadata of one `Process` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// `job-id`.
    pub job_id: Option<String>,
    /// `connection-type`.
    pub connection_type: Option<String>,
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<(usize, Got)>>,
    streams: Mutex<Vec<StreamInfo>>,
    changed: Notify,
}

struct FakeService {
    state: Arc<State>,
    cancel: CancellationToken,
}

#[tonic::async_trait]
impl Service for FakeService {
    type ProcessStream = ReceiverStream<Result<ServerStreamMessage, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ClientStreamMessage>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let get = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let info = StreamInfo {
            job_id: get("job-id"),
            connection_type: get("connection-type"),
        };
        let stream = {
            let mut streams = self.state.streams.lock().unwrap();
            streams.push(info);
            streams.len() - 1
        };
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let state = Arc::clone(&self.state);
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("fake management service going down"))).await;
                        break;
                    }
                    message = inbound.message() => match message {
                        Ok(Some(m)) if !cancel.is_cancelled() => {
                            let got = match m.message {
                                Some(client_stream_message::Message::AgentLog(l)) => Got::Log(l),
                                Some(client_stream_message::Message::AgentEvent(e)) => Got::Event(e),
                                _ => Got::Other(m),
                            };
                            state.received.lock().unwrap().push((stream, got));
                            state.changed.notify_waiters();
                        }
                        _ => break,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A listener that is dropped as soon as `cancelled` fires.
struct UntilCancelled {
    inner: Option<TcpListenerStream>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Stream for UntilCancelled {
    type Item = std::io::Result<TcpStream>;

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

/// A fake computation management service.
pub struct FakeCvms {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl FakeCvms {
    /// Starts on a free local port.
    pub async fn start() -> FakeCvms {
        FakeCvms::start_on("127.0.0.1:0".parse().unwrap(), None).await
    }

    /// Starts on `addr` (retrying the bind for a while: the previous
    /// instance's socket may still be closing), optionally with TLS.
    pub async fn start_on(addr: SocketAddr, tls: Option<ServerTlsConfig>) -> FakeCvms {
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    eprintln!("bind {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let cancel = CancellationToken::new();
        let service = FakeService {
            state: Arc::clone(&state),
            cancel: cancel.clone(),
        };
        let incoming = UntilCancelled {
            inner: Some(TcpListenerStream::new(listener)),
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let router = builder.add_service(ServiceServer::new(service));
        let shutdown = cancel.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
        });
        FakeCvms {
            addr,
            state,
            cancel,
            task,
        }
    }

    /// `host:port`, as `AGENT_CVM_GRPC_URL` has it.
    pub fn url(&self) -> String {
        self.addr.to_string()
    }

    /// Goes down: every open stream ends with UNAVAILABLE, nothing more is
    /// recorded, and the port is closed.
    pub async fn stop(self) {
        self.cancel.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    /// Everything received so far, with the stream number.
    pub fn received(&self) -> Vec<(usize, Got)> {
        self.state.received.lock().unwrap().clone()
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<Got> {
        self.received().into_iter().map(|(_, g)| g).collect()
    }

    /// The metadata of every stream opened so far.
    pub fn streams(&self) -> Vec<StreamInfo> {
        self.state.streams.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived; panics after `timeout`
    /// showing what did.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let names: Vec<String> = got.iter().map(Got::name).collect();
                panic!(
                    "expected {n} messages within {timeout:?}, got {}: {names:?}",
                    got.len()
                );
            }
        }
    }
}

/// A local port nothing listens on (for a management service that is down
/// at first and comes up there later).
pub async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A forwarder configuration in `dir`, pointing at `url`, with short
/// delays for tests.
pub fn config(dir: &Path, url: &str) -> Config {
    let mut c = Config {
        socket_path: dir.join("log.sock"),
        ..Config::default()
    };
    c.buffer.dir = dir.join("buffer");
    c.upstream.url = url.to_string();
    c.upstream.cvm_id = CVM_ID.to_string();
    c.upstream.connect_timeout_ms = 1_000;
    c.delivery.redial_initial_ms = 50;
    c.delivery.redial_max_ms = 400;
    c.delivery.confirm_after_ms = 1_000;
    c
}

/// Starts a forwarder with the real gRPC upstream.
pub async fn start_forwarder(config: &Config) -> Forwarder {
    let upstream = GrpcUpstream::new(config.upstream.clone()).unwrap();
    Forwarder::start(config, upstream).await.unwrap()
}

/// Client options with short retry delays for tests.
pub fn client_options() -> ClientOptions {
    ClientOptions {
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// Polls `check` every 20 ms until it holds; panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The names ([`Got::name`]) of `messages`.
pub fn names(messages: &[Got]) -> Vec<String> {
    messages.iter().map(Got::name).collect()
}

/// Tracing output captured as `LEVEL message field=value...` lines.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
}

/// Runs `f` with tracing captured on this thread.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    use tracing_subscriber::layer::SubscriberExt;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, captured.lines())
}

/// One segment record, encoded from the format in the crate's docs
/// (`length | crc | seq | kind | protobuf`), independently of its encoder.
pub fn reference_record(seq: u64, message: &ClientStreamMessage) -> Vec<u8> {
    use prost::Message;
    let (kind, bytes) = match &message.message {
        Some(client_stream_message::Message::AgentLog(l)) => (1u8, l.encode_to_vec()),
        Some(client_stream_message::Message::AgentEvent(e)) => (2u8, e.encode_to_vec()),
        _ => panic!("only logs and events are buffered"),
    };
    let mut body = seq.to_le_bytes().to_vec();
    body.push(kind);
    body.extend(bytes);
    let len = (body.len() as u32).to_le_bytes();
    let mut crc_input = len.to_vec();
    crc_input.extend(&body);
    let mut out = len.to_vec();
    out.extend(crc32fast::hash(&crc_input).to_le_bytes());
    out.extend(body);
    out
}

/// The segment files in a buffer directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .collect();
    files.sort();
    files
}

/// Reads the resident set size of this process in KiB (`/proc`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
