//! End to end on the host: a real tonic management service on a local TCP
//! port, the forwarder serving log.sock in a temporary directory, and two
//! "services" sending logs and events through `LogClient`s and `LogLayer`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cocos_logfwd::{Level, LogClient, LogLayer};
use common::{CVM_ID, FakeCvms, Got, StreamInfo, client_options, config, start_forwarder};

/// What one service sends: 300 logs with an event after every 50th.
fn send_as(client: &LogClient, service: &str) -> Vec<String> {
    let mut sent = Vec::new();
    for i in 0..300 {
        let text = format!("{service} log {i}");
        client.log(Level::Info, "comp-1", &text);
        sent.push(text);
        if i % 50 == 49 {
            let status = format!("{service}-{i}");
            client.event("state-change", "comp-1", &status, br#"{"n":1}"#.to_vec());
            sent.push(format!("event:state-change:{status}"));
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_events_of_two_services_arrive_in_order_with_the_stream_metadata() {
    let fake = FakeCvms::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake.url());
    let forwarder = start_forwarder(&config).await;

    let agent = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();
    let runner =
        LogClient::with_options(&config.socket_path, "computation-runner", client_options())
            .unwrap();
    let (a, r) = (agent.clone(), runner.clone());
    let agent_task = tokio::spawn(async move { send_as(&a, "agent") });
    let runner_task = tokio::spawn(async move { send_as(&r, "computation-runner") });
    let agent_sent = agent_task.await.unwrap();
    let runner_sent = runner_task.await.unwrap();
    assert!(agent.flush(Duration::from_secs(20)).await);
    assert!(runner.flush(Duration::from_secs(20)).await);

    let total = agent_sent.len() + runner_sent.len();
    let got = fake.wait_for(total, Duration::from_secs(20)).await;
    // Nothing more comes (no duplicates).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.messages().len(), total);

    // Each service's messages in the order it sent them.
    let of = |service: &str| -> Vec<String> {
        got.iter()
            .filter(|g| match g {
                Got::Log(l) => l.message.starts_with(&format!("{service} ")),
                Got::Event(e) => e.originator == service,
                Got::Other(_) => false,
            })
            .map(Got::name)
            .collect()
    };
    assert_eq!(of("agent"), agent_sent);
    assert_eq!(of("computation-runner"), runner_sent);

    // The fields as sent; timestamps set by the client.
    for g in &got {
        match g {
            Got::Log(l) => {
                assert_eq!(l.level, "INFO");
                assert_eq!(l.computation_id, "comp-1");
                assert!(l.timestamp.is_some());
            }
            Got::Event(e) => {
                assert_eq!(e.event_type, "state-change");
                assert_eq!(e.computation_id, "comp-1");
                assert_eq!(e.details, br#"{"n":1}"#);
                assert!(e.status.starts_with(&e.originator));
                assert!(e.timestamp.is_some());
            }
            Got::Other(m) => panic!("unexpected message {m:?}"),
        }
    }

    // One stream, with agent-api §6.2's metadata.
    assert_eq!(
        fake.streams(),
        [StreamInfo {
            job_id: Some(CVM_ID.to_string()),
            connection_type: Some("log-forwarder".to_string()),
        }]
    );
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_events_become_agent_logs() {
    use tracing_subscriber::layer::SubscriberExt;

    let fake = FakeCvms::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake.url());
    let forwarder = start_forwarder(&config).await;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let subscriber = tracing_subscriber::registry().with(LogLayer::new(client.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("run", computation_id = "comp-7");
        span.in_scope(|| {
            tracing::info!(answer = 42, who = "the runner", "algorithm started");
            tracing::debug!("below the layer's level: not sent");
            let inner = tracing::info_span!("step", step = 2);
            inner.in_scope(|| tracing::warn!(ok = false, "nested span"));
        });
        tracing::error!(computation_id = "comp-8", error = %"disk full", "upload failed");
        tracing::info!("no computation");
        tracing::info!(empty = "", path = ?"/a b", "quoted empty");
    });
    assert!(client.flush(Duration::from_secs(10)).await);
    let got = fake.wait_for(5, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs: Vec<(String, String, String)> = fake
        .messages()
        .into_iter()
        .map(|g| match g {
            Got::Log(l) => (l.level, l.computation_id, l.message),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got.len(), 5);
    let expected = [
        (
            "INFO",
            "comp-7",
            r#"algorithm started answer=42 who="the runner""#,
        ),
        ("WARN", "comp-7", "nested span ok=false"),
        ("ERROR", "comp-8", r#"upload failed error="disk full""#),
        ("INFO", "", "no computation"),
        ("INFO", "", r#"quoted empty empty="" path="/a b""#),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(logs, expected);
    forwarder.shutdown().await.unwrap();
    fake.stop().await;
}
