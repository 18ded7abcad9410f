//! The management service down at start, down in the middle, and a disk
//! buffer bound small enough to drop: what arrives, in which order, and
//! what is dropped (the oldest logs, never events).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cocos_logfwd::{Level, LogClient};
use common::{
    FakeCvms, Got, client_options, config, free_port, names, start_forwarder, wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

/// Sends `n` logs named `{tag} {i}`, with an event after every 10th.
fn send(client: &LogClient, tag: &str, n: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for i in 0..n {
        let text = format!("{tag} {i}");
        client.log(Level::Info, "c1", &text);
        sent.push(text);
        if i % 10 == 9 {
            let status = format!("{tag}-{i}");
            client.event("progress", "c1", &status, Vec::new());
            sent.push(format!("event:progress:{status}"));
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_at_start_then_everything_arrives_once_in_order() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &addr.to_string());
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let sent = send(&client, "early", 300);
    assert!(
        client.flush(WAIT).await,
        "the forwarder takes messages while the service is down"
    );
    let stats = forwarder.stats().unwrap();
    assert_eq!((stats.last_seq, stats.acked), (sent.len() as u64, 0));

    let fake = FakeCvms::start_on(addr, None).await;
    let got = fake.wait_for(sent.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&fake.messages()), sent, "all, in order, once");
    assert_eq!(got.len(), sent.len());

    // And after it, new messages follow on the same stream.
    let later = send(&client, "later", 20);
    fake.wait_for(sent.len() + later.len(), WAIT).await;
    let all = names(&fake.messages());
    assert_eq!(all[sent.len()..], later[..]);
    assert_eq!(fake.streams().len(), 1);
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_in_the_middle_confirmed_messages_are_not_resent() {
    let fake = FakeCvms::start().await;
    let addr = fake.addr;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &fake.url());
    config.delivery.confirm_after_ms = 300;
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let a = send(&client, "before", 100);
    fake.wait_for(a.len(), WAIT).await;
    // Everything was on the stream longer than confirm_after: confirmed.
    wait_until("confirmation of the first batch", WAIT, || {
        forwarder.stats().unwrap().acked == a.len() as u64
    })
    .await;
    let first = fake.messages();
    fake.stop().await;

    let b = send(&client, "during", 100);
    assert!(client.flush(WAIT).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = FakeCvms::start_on(addr, None).await;
    let c = send(&client, "after", 50);
    let expected: Vec<String> = b.iter().chain(&c).cloned().collect();
    second.wait_for(expected.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(names(&first), a);
    assert_eq!(
        names(&second.messages()),
        expected,
        "the outage's messages, then the new ones, once"
    );
    forwarder.shutdown().await.unwrap();
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_in_the_middle_unconfirmed_messages_are_sent_again_at_least_once() {
    let fake = FakeCvms::start().await;
    let addr = fake.addr;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &fake.url());
    // Nothing gets confirmed within the test.
    config.delivery.confirm_after_ms = 600_000;
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let a = send(&client, "before", 100);
    fake.wait_for(a.len(), WAIT).await;
    fake.stop().await;
    let b = send(&client, "during", 100);
    assert!(client.flush(WAIT).await);
    let second = FakeCvms::start_on(addr, None).await;
    let c = send(&client, "after", 50);
    // The documented at-least-once: everything unconfirmed is replayed, in
    // order, before the new messages.
    let expected: Vec<String> = a.iter().chain(&b).chain(&c).cloned().collect();
    second.wait_for(expected.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&second.messages()), expected);
    forwarder.shutdown().await.unwrap();
    second.stop().await;
}

/// The on-disk size of a record per the format (8-byte header, 9-byte
/// prefix, the protobuf).
fn record_bytes(g: &Got) -> u64 {
    use prost::Message;
    17 + match g {
        Got::Log(l) => l.encoded_len(),
        Got::Event(e) => e.encoded_len(),
        Got::Other(_) => unreachable!(),
    } as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bound_drops_the_oldest_logs_and_keeps_every_event() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &addr.to_string());
    config.buffer.max_bytes = 8 << 10;
    config.buffer.segment_bytes = 1 << 10;
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let sent = send(&client, "outage", 400);
    assert!(client.flush(WAIT).await);
    let stats = forwarder.stats().unwrap();
    assert!(stats.dropped_logs > 0, "{stats:?}");
    assert!(stats.bytes <= config.buffer.max_bytes, "{stats:?}");
    assert!(!stats.over_bound);

    let fake = FakeCvms::start_on(addr, None).await;
    let expected_count = sent.len() - stats.dropped_logs as usize;
    let got = fake.wait_for(expected_count, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.messages().len(), expected_count);
    let got_names = names(&got);

    // Every event, in order.
    let events = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|n| n.starts_with("event:"))
            .cloned()
            .collect()
    };
    assert_eq!(events(&got_names), events(&sent));
    assert_eq!(events(&sent).len(), 40);
    // The logs that survive are the newest: all logs from some point on.
    let sent_logs: Vec<&String> = sent.iter().filter(|n| !n.starts_with("event:")).collect();
    let got_logs: Vec<&String> = got_names
        .iter()
        .filter(|n| !n.starts_with("event:"))
        .collect();
    let dropped = sent_logs.len() - got_logs.len();
    assert_eq!(dropped as u64, stats.dropped_logs);
    assert_eq!(
        got_logs[..],
        sent_logs[dropped..],
        "the oldest logs were dropped"
    );
    // And the order overall is the order sent.
    let mut rest = sent.iter();
    for n in &got_names {
        assert!(rest.any(|s| s == n), "{n} out of order");
    }
    // Not more dropped than the bound requires: what arrived fills most of it.
    let kept: u64 = got.iter().map(record_bytes).sum();
    assert!(kept <= config.buffer.max_bytes);
    assert!(
        kept >= config.buffer.max_bytes - 2 * config.buffer.segment_bytes,
        "only {kept} bytes kept"
    );
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_alone_over_the_bound_are_all_kept() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &addr.to_string());
    config.buffer.max_bytes = 2 << 10;
    config.buffer.segment_bytes = 1 << 10;
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let mut sent = Vec::new();
    for i in 0..100 {
        let status = format!("status-{i:03}-{}", "x".repeat(40));
        client.event("state", "c1", &status, br#"{"k":"v"}"#.to_vec());
        sent.push(format!("event:state:{status}"));
    }
    client.log(Level::Info, "c1", "a log after the bound is full of events");
    assert!(client.flush(WAIT).await);
    let stats = forwarder.stats().unwrap();
    assert!(
        stats.bytes > config.buffer.max_bytes && stats.over_bound,
        "{stats:?}"
    );
    assert_eq!(
        stats.dropped_logs, 1,
        "the new log cannot fit and is dropped"
    );

    let fake = FakeCvms::start_on(addr, None).await;
    fake.wait_for(sent.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&fake.messages()), sent);
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}
