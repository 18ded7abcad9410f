//! The client never blocks its caller: 100,000 logs into a forwarder that
//! is not there return at once, memory stays within the queue's bound, and
//! once a forwarder appears the newest logs, every event and a report of
//! the drops arrive. (Its own test binary, so that the memory measure is
//! this test's alone.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use cocos_logfwd::client::ClientOptions;
use cocos_logfwd::{Level, LogClient};
use common::{FakeCvms, Got, client_options, config, rss_kib, start_forwarder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_logs_into_a_dead_forwarder_return_quickly_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCvms::start().await;
    let config = config(dir.path(), &fake.url());
    let queue_bytes = 1 << 20;
    let options = ClientOptions {
        queue_bytes,
        ..client_options()
    };
    // Nothing listens on the socket yet.
    let client = LogClient::with_options(&config.socket_path, "agent", options).unwrap();
    let filler = "x".repeat(1000);
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..100_000 {
        let t = Instant::now();
        client.log(Level::Info, "c1", &format!("log {i} {filler}"));
        slowest = slowest.max(t.elapsed());
    }
    for i in 0..10 {
        client.event("important", "c1", &format!("event {i}"), Vec::new());
    }
    let elapsed = started.elapsed();
    let grown_kib = rss_kib().saturating_sub(rss_before);
    let stats = client.stats();
    eprintln!(
        "100k logs in {elapsed:?} (slowest call {slowest:?}), RSS +{grown_kib} KiB, {stats:?}"
    );

    // ~100 MB were logged; an unbounded queue would hold them all.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(slowest < Duration::from_secs(1), "a call took {slowest:?}");
    assert!(stats.queued_bytes <= queue_bytes, "{stats:?}");
    assert!(grown_kib < 32 << 10, "RSS grew by {grown_kib} KiB");
    // Every log is queued, dropped, or the one being tried.
    let accounted = stats.queued as u64 + stats.dropped_logs;
    assert!(accounted == 100_010 || accounted == 100_009, "{stats:?}");
    assert!(stats.dropped_logs > 90_000, "{stats:?}");

    // The forwarder comes up: the client delivers without being told.
    let forwarder = start_forwarder(&config).await;
    assert!(client.flush(Duration::from_secs(60)).await);
    let stats = client.stats();
    let got = fake
        .wait_for(stats.delivered as usize, Duration::from_secs(30))
        .await;
    let events: Vec<String> = got
        .iter()
        .filter_map(|g| match g {
            Got::Event(e) => Some(e.status.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("event {i}")).collect();
    assert_eq!(events, expected, "every event, in order");
    // The logs kept are the newest: the last one logged is among them, and
    // their numbers rise.
    let numbers: Vec<u64> = got
        .iter()
        .filter_map(|g| match g {
            Got::Log(l) => l
                .message
                .strip_prefix("log ")?
                .split(' ')
                .next()?
                .parse()
                .ok(),
            _ => None,
        })
        .collect();
    assert_eq!(numbers.last(), Some(&99_999));
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    // The drops were reported to the management service, in one or more
    // WARN logs (a report is taken whenever the task gets to it; drops
    // after that make another).
    let reported: u64 = got
        .iter()
        .filter_map(|g| match g {
            Got::Log(l) if l.level == "WARN" => l
                .message
                .split("dropped ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok(),
            _ => None,
        })
        .sum();
    assert_eq!(reported, stats.dropped_logs);
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}
