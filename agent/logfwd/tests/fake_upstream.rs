//! The pump against an in-process fake `Upstream` that refuses the first
//! dials and then breaks every stream: each stream carries a contiguous run
//! of the messages in the order accepted.
//!
//! - A flaky link (streams that live 600 ms, a reader taking 2 ms per
//!   message): each run starts no later than where the one before stopped
//!   (no gap; repeats only of what was unconfirmed), and together they
//!   cover everything.
//! - A service that drops every stream after 37 messages, too fast for any
//!   confirmation: after `max_replays` such streams the forwarder moves on,
//!   so everything up to the last message still gets through, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocos_logfwd::upstream::{Connection, Upstream, UpstreamError};
use cocos_logfwd::{Forwarder, Level, LogClient};
use cocos_proto::cvms::ClientStreamMessage;
use cocos_proto::cvms::client_stream_message::Message;
use common::{client_options, config, wait_until};
use tokio::sync::{mpsc, oneshot};

struct Flaky {
    /// Dials are refused until this is set (so that a backlog builds up).
    accepting: AtomicBool,
    opens: AtomicUsize,
    streams: Mutex<Vec<Vec<String>>>,
    /// Each stream breaks after this many messages...
    per_stream: usize,
    /// ... or after this long.
    lifetime: Duration,
    /// Time the reader takes per message.
    read_delay: Duration,
}

const REFUSED_DIALS: usize = 3;

#[derive(Clone)]
struct FlakyUpstream(Arc<Flaky>);

impl FlakyUpstream {
    fn new(per_stream: usize, lifetime: Duration, read_delay: Duration) -> FlakyUpstream {
        FlakyUpstream(Arc::new(Flaky {
            accepting: AtomicBool::new(false),
            opens: AtomicUsize::new(0),
            streams: Mutex::new(Vec::new()),
            per_stream,
            lifetime,
            read_delay,
        }))
    }
}

impl Upstream for FlakyUpstream {
    async fn open(&self) -> Result<Connection, UpstreamError> {
        let attempt = self.0.opens.fetch_add(1, Ordering::SeqCst);
        if attempt < REFUSED_DIALS || !self.0.accepting.load(Ordering::SeqCst) {
            return Err(UpstreamError::Connect {
                url: "fake".into(),
                reason: "connection refused".into(),
            });
        }
        let (sender, mut receiver) = mpsc::channel::<ClientStreamMessage>(1);
        let (closed_tx, closed) = oneshot::channel();
        let index = {
            let mut streams = self.0.streams.lock().unwrap();
            streams.push(Vec::new());
            streams.len() - 1
        };
        let flaky = Arc::clone(&self.0);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + flaky.lifetime;
            let mut taken = 0;
            while taken < flaky.per_stream {
                let message = tokio::select! {
                    m = receiver.recv() => m,
                    () = tokio::time::sleep_until(deadline) => None,
                };
                let Some(message) = message else { break };
                let name = match message.message {
                    Some(Message::AgentLog(l)) => l.message,
                    Some(Message::AgentEvent(e)) => format!("event:{}", e.status),
                    other => format!("unexpected {other:?}"),
                };
                flaky.streams.lock().unwrap()[index].push(name);
                taken += 1;
                tokio::time::sleep(flaky.read_delay).await;
            }
            // Whatever sits in the channel now is lost with it.
            drop(receiver);
            let _ = closed_tx.send("the fake broke the stream".into());
        });
        Ok(Connection { sender, closed })
    }
}

/// Sends 600 messages (an event every 25th) and waits for the last to
/// arrive; returns them in order and the streams the fake saw.
async fn run(
    upstream: FlakyUpstream,
    confirm_after_ms: u64,
    max_replays: u32,
) -> (Vec<String>, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), "unused:1");
    config.delivery.redial_initial_ms = 5;
    config.delivery.redial_max_ms = 20;
    config.delivery.confirm_after_ms = confirm_after_ms;
    config.delivery.max_replays = max_replays;
    let forwarder = Forwarder::start(&config, upstream.clone()).await.unwrap();
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let mut sent = Vec::new();
    for i in 0..600 {
        if i % 25 == 24 {
            client.event("progress", "c1", &format!("{i}"), Vec::new());
            sent.push(format!("event:{i}"));
        } else {
            client.log(Level::Info, "c1", &format!("log {i}"));
            sent.push(format!("log {i}"));
        }
    }
    assert!(client.flush(Duration::from_secs(20)).await);
    // All 600 are on disk; now the service answers.
    upstream.0.accepting.store(true, Ordering::SeqCst);
    let last = sent.last().unwrap().clone();
    wait_until(
        "the last message to arrive",
        Duration::from_secs(60),
        || {
            upstream
                .0
                .streams
                .lock()
                .unwrap()
                .iter()
                .flatten()
                .any(|n| *n == last)
        },
    )
    .await;
    forwarder.shutdown().await.unwrap();
    assert!(upstream.0.opens.load(Ordering::SeqCst) > REFUSED_DIALS + 3);
    let streams = upstream.0.streams.lock().unwrap().clone();
    (sent, streams)
}

/// Checks that every stream is a contiguous run of `sent` and that each
/// starts no earlier than the one before; returns (start, length) of each.
fn runs(sent: &[String], streams: &[Vec<String>]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, stream) in streams.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let start = sent.iter().position(|s| *s == stream[0]).unwrap();
        assert_eq!(
            stream[..],
            sent[start..start + stream.len()],
            "stream {i} is not a contiguous run of the accepted order"
        );
        if let Some(&(previous, _)) = runs.last() {
            assert!(
                start >= previous,
                "stream {i} goes back before the previous one"
            );
        }
        runs.push((start, stream.len()));
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_link_replays_without_gaps_and_in_order() {
    // Streams of 600 ms at 2 ms per message: about 300 messages each, of
    // which those of the last 200 ms go unconfirmed and are sent again.
    let upstream = FlakyUpstream::new(
        usize::MAX,
        Duration::from_millis(600),
        Duration::from_millis(2),
    );
    // max_replays high: this link always makes progress, nothing is given up.
    let (sent, streams) = run(upstream, 200, 1_000).await;
    assert!(streams.len() >= 3, "{} streams", streams.len());
    let mut reached = 0;
    let mut repeats = 0;
    for (i, (start, len)) in runs(&sent, &streams).into_iter().enumerate() {
        assert!(
            start <= reached,
            "run {i} starts at {start}, after a gap from {reached}"
        );
        repeats += reached - start;
        reached = reached.max(start + len);
    }
    assert_eq!(reached, sent.len());
    eprintln!("{} streams, {repeats} messages sent twice", streams.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_always_drops_the_stream_still_gets_everything_in_order() {
    let upstream = FlakyUpstream::new(37, Duration::from_secs(3600), Duration::ZERO);
    let (sent, streams) = run(upstream, 200, 3).await;
    let runs = runs(&sent, &streams);
    // Each window was offered 3 times before the forwarder moved on, and
    // what it skipped is at most the one message the fake's channel held.
    let arrived: std::collections::HashSet<&String> = streams.iter().flatten().collect();
    let missing = sent.iter().filter(|s| !arrived.contains(s)).count();
    let windows = runs.len() / 3 + 1;
    assert!(missing <= windows, "{missing} lost over {windows} windows");
    assert!(
        runs.windows(3)
            .any(|w| w[0].0 == w[1].0 && w[1].0 == w[2].0),
        "no replay seen: {runs:?}"
    );
    eprintln!("{} streams, {missing} messages lost", streams.len());
}
