//! The client the VM's services use to send logs and events to the
//! forwarder: [`LogClient`], a cheap-to-clone handle that never blocks.
//!
//! `log` and `event` put the message on a bounded in-memory queue and
//! return. A background task empties the queue into the forwarder's
//! `log.LogCollector`, one message at a time and in order, retrying each
//! with back-off (100 ms doubling to 2 s, 5 s per attempt) for as long as it
//! takes: a forwarder that restarts is simply redialled.
//!
//! # When the queue is full
//!
//! The queue is bounded in bytes (`ClientOptions::queue_bytes`, 8 MiB by
//! default). A new message first evicts the **oldest logs**; a log that
//! still does not fit is dropped itself. Events evict logs first and older
//! events only if nothing else is left, so they are kept in preference;
//! the caller is never made to wait (the Go agent's logger blocked its
//! caller once its queue of 1000 filled, agent-api §6.3). Drops are counted
//! ([`ClientStats`]) and reported to the management service by a WARN log
//! sent where the gap is, once the forwarder answers again. The message the
//! task is sending is out of the queue and not evicted.
//!
//! # Message sizes
//!
//! A log message up to `max_log_bytes` (64 KiB by default) is sent whole,
//! where the Go agent cut every message into 500-byte pieces. A longer one
//! is split at character boundaries into pieces of at most that size, sent
//! as consecutive logs with the same level, computation id and timestamp;
//! no marker is added, so the text is unchanged when the pieces are joined.
//! Events cannot be split (their details are one JSON document): an event
//! over `max_event_bytes` (256 KiB) is refused and counted.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use cocos_proto::cvms::{AgentEvent, AgentLog};
use cocos_proto::log::log_collector_client::LogCollectorClient;
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::UnixStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::backoff::Backoff;

/// Bytes counted per queued message on top of its encoded length (the
/// structs and string headers it occupies in memory).
const ITEM_OVERHEAD: usize = 128;

/// Severity of a log, as the management service names it (slog's names,
/// agent-api §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `DEBUG` (tracing's TRACE too).
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
}

impl Level {
    /// The name on the wire: `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

impl From<tracing::Level> for Level {
    fn from(level: tracing::Level) -> Level {
        match level {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            _ => Level::Debug,
        }
    }
}

/// Limits and timings of a [`LogClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bound on the queue, in bytes. Default 8 MiB.
    pub queue_bytes: usize,
    /// Longest log message sent whole; longer ones are split. Default 64 KiB.
    pub max_log_bytes: usize,
    /// Largest event (encoded) accepted. Default 256 KiB.
    pub max_event_bytes: usize,
    /// Limit on one attempt to hand a message to the forwarder. Default 5 s.
    pub attempt_timeout: Duration,
    /// First delay between attempts. Default 100 ms, doubling.
    pub retry_initial: Duration,
    /// Cap of the delay between attempts. Default 2 s.
    pub retry_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            queue_bytes: 8 << 20,
            max_log_bytes: 64 << 10,
            max_event_bytes: 256 << 10,
            attempt_timeout: Duration::from_secs(5),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
        }
    }
}

/// Why a client could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Not called from within a tokio runtime (the queue's task needs one).
    #[error("LogClient::connect must be called within a tokio runtime")]
    NoRuntime,
    /// The options are inconsistent.
    #[error("client options: {0}")]
    Options(&'static str),
}

/// Counters of a [`LogClient`] (shared by all its clones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Messages waiting in the queue (not counting one being sent).
    pub queued: usize,
    /// Their size as counted against `queue_bytes`.
    pub queued_bytes: usize,
    /// Logs dropped because the queue was full.
    pub dropped_logs: u64,
    /// Events dropped because the queue was full of events.
    pub dropped_events: u64,
    /// Messages refused: by the forwarder (`INVALID_ARGUMENT`) or, for
    /// events, over `max_event_bytes`.
    pub refused: u64,
    /// Messages the forwarder acknowledged.
    pub delivered: u64,
}

#[derive(Debug, Clone)]
enum Item {
    Log(AgentLog),
    Event(AgentEvent),
}

impl Item {
    fn size(&self) -> usize {
        ITEM_OVERHEAD
            + match self {
                Item::Log(log) => log.encoded_len(),
                Item::Event(event) => event.encoded_len(),
            }
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(Item, usize)>,
    bytes: usize,
    in_flight: bool,
    unreported_logs: u64,
    unreported_events: u64,
    stats: ClientStats,
}

impl Queue {
    fn evict_oldest_log(&mut self) -> bool {
        let Some(pos) = self
            .items
            .iter()
            .position(|(i, _)| matches!(i, Item::Log(_)))
        else {
            return false;
        };
        if let Some((_, size)) = self.items.remove(pos) {
            self.bytes -= size;
        }
        self.count_dropped_log();
        true
    }

    fn count_dropped_log(&mut self) {
        self.stats.dropped_logs += 1;
        self.unreported_logs += 1;
    }

    fn push(&mut self, item: Item, cap: usize) {
        let size = item.size();
        let is_event = matches!(item, Item::Event(_));
        while self.bytes + size > cap {
            if self.evict_oldest_log() {
                continue;
            }
            if !is_event {
                self.count_dropped_log();
                return;
            }
            match self.items.pop_front() {
                Some((_, old)) => {
                    self.bytes -= old;
                    self.stats.dropped_events += 1;
                    self.unreported_events += 1;
                }
                None => break,
            }
        }
        self.items.push_back((item, size));
        self.bytes += size;
    }

    /// The next message to send: a report of drops first, if any.
    fn take_next(&mut self) -> Option<Item> {
        let item = if self.unreported_logs + self.unreported_events > 0 {
            let (logs, events) = (self.unreported_logs, self.unreported_events);
            self.unreported_logs = 0;
            self.unreported_events = 0;
            Item::Log(AgentLog {
                message: format!(
                    "log client: dropped {logs} logs and {events} events while the log forwarder \
                     was not taking them (queue full)"
                ),
                computation_id: String::new(),
                level: Level::Warn.as_str().into(),
                timestamp: Some(SystemTime::now().into()),
            })
        } else {
            let (item, size) = self.items.pop_front()?;
            self.bytes -= size;
            item
        };
        self.in_flight = true;
        Some(item)
    }

    fn idle(&self) -> bool {
        self.items.is_empty()
            && !self.in_flight
            && self.unreported_logs + self.unreported_events == 0
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the sending task.
    wake: Notify,
    /// Wakes [`LogClient::flush`] callers when the queue empties.
    idle: Notify,
    originator: String,
    options: ClientOptions,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves a consistent queue (every
        // update is a few field writes), so a poisoned lock is still used.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Stops the sending task when the last [`LogClient`] clone is dropped.
#[derive(Debug)]
struct Owner(CancellationToken);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A handle for sending logs and events to the forwarder (see the module
/// docs). Clones share one queue and one connection. Dropping the last
/// clone stops the sending task at once, abandoning what is still queued:
/// call [`LogClient::flush`] first when that matters (at a service's exit).
///
/// ```no_run
/// # async fn f() -> Result<(), cocos_logfwd::client::ClientError> {
/// use cocos_logfwd::client::{Level, LogClient};
///
/// let logs = LogClient::connect("/run/cocos/log.sock", "computation-runner")?;
/// logs.log(Level::Info, "c1", "algorithm started");
/// logs.event("algorithm-run", "c1", "in-progress", br#"{"pid":42}"#.to_vec());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LogClient {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl LogClient {
    /// A client for the forwarder at `socket_path`; `originator` names the
    /// sending service in its events (`agent`, `computation-runner`, ...).
    /// Connects lazily: the forwarder need not be up yet.
    pub fn connect(
        socket_path: impl Into<PathBuf>,
        originator: impl Into<String>,
    ) -> Result<LogClient, ClientError> {
        LogClient::with_options(socket_path, originator, ClientOptions::default())
    }

    /// [`LogClient::connect`] with other limits.
    pub fn with_options(
        socket_path: impl Into<PathBuf>,
        originator: impl Into<String>,
        options: ClientOptions,
    ) -> Result<LogClient, ClientError> {
        if options.max_log_bytes < 16 {
            return Err(ClientError::Options("max_log_bytes must be at least 16"));
        }
        if options.queue_bytes < options.max_log_bytes.max(options.max_event_bytes) + ITEM_OVERHEAD
        {
            return Err(ClientError::Options(
                "queue_bytes must hold the largest log piece and the largest event",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        let socket_path: PathBuf = socket_path.into();
        let channel = unix_channel(socket_path);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            originator: originator.into(),
            options,
        });
        let cancel = CancellationToken::new();
        runtime.spawn(Quiet::new(send_loop(
            Arc::clone(&shared),
            channel,
            cancel.clone(),
        )));
        Ok(LogClient {
            shared,
            _owner: Arc::new(Owner(cancel)),
        })
    }

    /// Queues a log line (split if over `max_log_bytes`). Never blocks.
    pub fn log(&self, level: Level, computation_id: &str, message: &str) {
        let timestamp = prost_types::Timestamp::from(SystemTime::now());
        let cap = self.shared.options.queue_bytes;
        {
            let mut queue = self.shared.queue();
            for piece in split(message, self.shared.options.max_log_bytes) {
                queue.push(
                    Item::Log(AgentLog {
                        message: piece.to_string(),
                        computation_id: computation_id.to_string(),
                        level: level.as_str().to_string(),
                        timestamp: Some(timestamp),
                    }),
                    cap,
                );
            }
        }
        self.shared.wake.notify_one();
    }

    /// Queues an event; `details_json` is a JSON document (or empty).
    /// Never blocks.
    pub fn event(
        &self,
        event_type: &str,
        computation_id: &str,
        status: &str,
        details_json: impl Into<Vec<u8>>,
    ) {
        let event = AgentEvent {
            event_type: event_type.to_string(),
            timestamp: Some(SystemTime::now().into()),
            computation_id: computation_id.to_string(),
            details: details_json.into(),
            originator: self.shared.originator.clone(),
            status: status.to_string(),
        };
        {
            let mut queue = self.shared.queue();
            if event.encoded_len() > self.shared.options.max_event_bytes {
                queue.stats.refused += 1;
                return;
            }
            queue.push(Item::Event(event), self.shared.options.queue_bytes);
        }
        self.shared.wake.notify_one();
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        let queue = self.shared.queue();
        ClientStats {
            queued: queue.items.len(),
            queued_bytes: queue.bytes,
            ..queue.stats
        }
    }

    /// Waits until everything queued so far has been handed to the
    /// forwarder, at most `timeout`; true if it was.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.shared.queue().idle() {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.shared.queue().idle();
            }
        }
    }
}

/// Splits `text` into pieces of at most `max` bytes at character
/// boundaries (`max` ≥ 4, the longest UTF-8 character).
fn split(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

/// A lazily connecting channel to the forwarder's socket; tonic redials
/// it whenever a call finds the connection gone.
fn unix_channel(path: PathBuf) -> Channel {
    // The authority is unused: the connector below ignores the URI.
    Endpoint::from_static("http://log-forwarder").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        },
    ))
}

/// The sending task: one message at a time, retried until the forwarder
/// takes or refuses it.
async fn send_loop(shared: Arc<Shared>, channel: Channel, cancel: CancellationToken) {
    let mut client = LogCollectorClient::new(channel);
    let options = &shared.options;
    let mut backoff = Backoff::new(options.retry_initial, options.retry_max);
    loop {
        let item = loop {
            let next = shared.queue().take_next();
            if let Some(item) = next {
                break item;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = shared.wake.notified() => {}
            }
        };
        let delivered = loop {
            let attempt = async {
                match &item {
                    Item::Log(log) => client.send_log(log.clone()).await.map(drop),
                    Item::Event(event) => client.send_event(event.clone()).await.map(drop),
                }
            };
            let result = tokio::select! {
                () = cancel.cancelled() => return,
                result = tokio::time::timeout(options.attempt_timeout, attempt) => result,
            };
            match result {
                Ok(Ok(())) => {
                    backoff.reset();
                    break true;
                }
                // The message itself is unacceptable: retrying cannot help.
                Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => break false,
                _ => {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        };
        let mut queue = shared.queue();
        queue.in_flight = false;
        if delivered {
            queue.stats.delivered += 1;
        } else {
            queue.stats.refused += 1;
        }
        if queue.idle() {
            shared.idle.notify_waiters();
        }
    }
}

thread_local! {
    /// Set while the client's own task runs, so that what it (or the
    /// transport under it) logs is not fed back into the client.
    static IN_CLIENT_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is running the client's task right now.
pub(crate) fn in_client_task() -> bool {
    IN_CLIENT_TASK.with(Cell::get)
}

/// Runs a future with [`IN_CLIENT_TASK`] set during each poll.
struct Quiet {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Quiet {
    fn new(inner: impl Future<Output = ()> + Send + 'static) -> Quiet {
        Quiet {
            inner: Box::pin(inner),
        }
    }
}

impl Future for Quiet {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let was = IN_CLIENT_TASK.with(|flag| flag.replace(true));
        let result = self.inner.as_mut().poll(cx);
        IN_CLIENT_TASK.with(|flag| flag.set(was));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(text: &str) -> Item {
        Item::Log(AgentLog {
            message: text.into(),
            ..Default::default()
        })
    }

    fn event(kind: &str) -> Item {
        Item::Event(AgentEvent {
            event_type: kind.into(),
            ..Default::default()
        })
    }

    fn names(q: &Queue) -> Vec<String> {
        q.items
            .iter()
            .map(|(i, _)| match i {
                Item::Log(l) => l.message.clone(),
                Item::Event(e) => e.event_type.clone(),
            })
            .collect()
    }

    #[test]
    fn full_queue_drops_oldest_logs_and_keeps_events() {
        let one = log("l0").size();
        assert_eq!(one, event("e0").size(), "the test assumes equal sizes");
        let mut q = Queue::default();
        let cap = 3 * one;
        for item in [log("l0"), event("e0"), log("l1"), log("l2"), event("e1")] {
            q.push(item, cap);
        }
        assert_eq!(names(&q), ["e0", "l2", "e1"]);
        assert_eq!(q.stats.dropped_logs, 2);
        q.push(event("e2"), cap);
        assert_eq!(names(&q), ["e0", "e1", "e2"]);
        // Only events left: a log is dropped itself, an event evicts the oldest event.
        q.push(log("l3"), cap);
        assert_eq!(names(&q), ["e0", "e1", "e2"]);
        q.push(event("e3"), cap);
        assert_eq!(names(&q), ["e1", "e2", "e3"]);
        assert_eq!((q.stats.dropped_logs, q.stats.dropped_events), (4, 1));
        assert!(q.bytes <= cap);
        // The drops are reported first, in one WARN.
        match q.take_next() {
            Some(Item::Log(l)) => {
                assert_eq!(l.level, "WARN");
                assert!(
                    l.message.contains("dropped 4 logs and 1 events"),
                    "{}",
                    l.message
                );
            }
            other => panic!("expected the report, got {other:?}"),
        }
    }

    #[test]
    fn split_keeps_characters_whole() {
        assert_eq!(split("abcdef", 4), ["abcd", "ef"]);
        assert_eq!(split("abcd", 4), ["abcd"]);
        assert_eq!(split("", 4), [""]);
        // "é" is 2 bytes, "€" 3: no piece may cut them.
        let text = "aé€é€€a";
        let pieces = split(text, 4);
        assert!(pieces.iter().all(|p| p.len() <= 4));
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces, ["aé", "€", "é", "€", "€a"]);
    }

    #[test]
    fn levels_have_the_slog_names() {
        let names: Vec<&str> = [
            tracing::Level::TRACE,
            tracing::Level::DEBUG,
            tracing::Level::INFO,
            tracing::Level::WARN,
            tracing::Level::ERROR,
        ]
        .into_iter()
        .map(|l| Level::from(l).as_str())
        .collect();
        assert_eq!(names, ["DEBUG", "DEBUG", "INFO", "WARN", "ERROR"]);
    }
}
