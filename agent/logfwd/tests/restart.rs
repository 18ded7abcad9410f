//! The forwarder restarted (or dropped as if it crashed) while messages
//! are buffered on disk: they are sent after the restart, in order, and
//! what was confirmed before is not sent again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cocos_logfwd::{Level, LogClient};
use common::{FakeCvms, client_options, config, free_port, names, start_forwarder, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn send(client: &LogClient, tag: &str, n: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for i in 0..n {
        let text = format!("{tag} {i}");
        client.log(Level::Warn, "c1", &text);
        sent.push(text);
        if i % 10 == 9 {
            client.event("progress", "c1", &format!("{tag}-{i}"), Vec::new());
            sent.push(format!("event:progress:{tag}-{i}"));
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_messages_survive_a_restart_and_are_replayed_in_order() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &addr.to_string());
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let first = start_forwarder(&config).await;
    let a = send(&client, "first run", 200);
    assert!(client.flush(WAIT).await);
    first.shutdown().await.unwrap();

    // While no forwarder runs, the client keeps what it is given.
    let b = send(&client, "between runs", 30);
    let second = start_forwarder(&config).await;
    assert!(
        client.flush(WAIT).await,
        "the client reconnects to the new forwarder"
    );
    let c = send(&client, "second run", 30);
    assert!(client.flush(WAIT).await);

    let fake = FakeCvms::start_on(addr, None).await;
    let expected: Vec<String> = a.iter().chain(&b).chain(&c).cloned().collect();
    fake.wait_for(expected.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&fake.messages()), expected);
    second.shutdown().await.unwrap();
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_forwarder_loses_nothing_and_resends_nothing_confirmed() {
    let fake = FakeCvms::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &fake.url());
    config.delivery.confirm_after_ms = 200;
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();

    let first = start_forwarder(&config).await;
    let a = send(&client, "confirmed", 50);
    fake.wait_for(a.len(), WAIT).await;
    wait_until("confirmation", WAIT, || {
        first.stats().unwrap().acked == a.len() as u64
    })
    .await;
    // The service goes away, messages pile up on disk, and the forwarder
    // is dropped without a shutdown (as if killed).
    let addr = fake.addr;
    let a_got = fake.messages();
    fake.stop().await;
    let b = send(&client, "buffered", 50);
    assert!(client.flush(WAIT).await);
    drop(first);

    let fake = FakeCvms::start_on(addr, None).await;
    let second = start_forwarder(&config).await;
    fake.wait_for(b.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&a_got), a);
    assert_eq!(names(&fake.messages()), b, "only the unconfirmed, once");
    second.shutdown().await.unwrap();
    fake.stop().await;
}
