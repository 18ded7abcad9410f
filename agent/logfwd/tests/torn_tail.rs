//! Crash damage in the disk buffer: a torn or corrupt record at the end of
//! a segment is skipped with a WARN, what precedes it is replayed, and
//! appending goes on. Segment bytes here are written from the documented
//! format by the test's own encoder, not the crate's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use cocos_logfwd::buffer::{Appended, BufferLimits, DiskBuffer};
use cocos_logfwd::segment::Payload;
use cocos_proto::cvms::{AgentEvent, AgentLog, ClientStreamMessage, client_stream_message};
use common::{
    FakeCvms, capture, client_options, config, free_port, names, reference_record, segment_files,
    start_forwarder,
};

const LIMITS: BufferLimits = BufferLimits {
    max_bytes: 1 << 20,
    segment_bytes: 64 << 10,
};

fn log(text: &str) -> AgentLog {
    AgentLog {
        message: text.into(),
        computation_id: "c1".into(),
        level: "INFO".into(),
        timestamp: None,
    }
}

fn as_message(log: &AgentLog) -> ClientStreamMessage {
    ClientStreamMessage {
        message: Some(client_stream_message::Message::AgentLog(log.clone())),
    }
}

fn text(p: &Payload) -> String {
    match p {
        Payload::Log(l) => l.message.clone(),
        Payload::Event(e) => format!("event:{}", e.event_type),
    }
}

/// A segment file written by hand: magic, then records 1..=n.
fn handmade_segment(n: u64) -> Vec<u8> {
    let mut bytes = b"CLFSEG\x00\x01".to_vec();
    for seq in 1..=n {
        bytes.extend(reference_record(seq, &as_message(&log(&format!("m{seq}")))));
    }
    bytes
}

#[test]
fn a_handmade_segment_is_read_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seg-00000000000000000001.log"),
        handmade_segment(5),
    )
    .unwrap();
    let mut buffer = DiskBuffer::open(dir.path(), LIMITS).unwrap();
    let records = buffer.read_after(0, usize::MAX).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(text(&records[4].payload), "m5");
    // New messages go on from 6, in a new segment written the same way.
    assert_eq!(
        buffer.append(Payload::Log(log("m6"))).unwrap(),
        Appended::Stored(6)
    );
    drop(buffer);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    let written = std::fs::read(&files[1]).unwrap();
    let mut expected = b"CLFSEG\x00\x01".to_vec();
    expected.extend(reference_record(6, &as_message(&log("m6"))));
    assert_eq!(written, expected, "the buffer writes the documented format");
}

#[test]
fn a_torn_last_record_is_skipped_with_a_warning() {
    let whole = handmade_segment(4);
    let last = reference_record(4, &as_message(&log("m4"))).len();
    for cut in [1, 7, 8, 12, last - 1] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg-00000000000000000001.log");
        std::fs::write(&path, &whole[..whole.len() - last + cut]).unwrap();
        let (mut buffer, warnings) = capture(|| DiskBuffer::open(dir.path(), LIMITS).unwrap());
        let texts: Vec<String> = buffer
            .read_after(0, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| text(&r.payload))
            .collect();
        assert_eq!(
            texts,
            ["m1", "m2", "m3"],
            "torn {cut} bytes into the record"
        );
        let offset = whole.len() - last;
        let warning = warnings
            .iter()
            .find(|w| w.starts_with("WARN"))
            .unwrap_or_else(|| panic!("no WARN in {warnings:?}"));
        assert!(
            warning.contains(&format!("record at offset {offset}"))
                && warning.contains("incomplete")
                && warning.contains(&path.display().to_string()),
            "{warning}"
        );
        // The tail is cut off, so the next open is quiet, and the next
        // message is number 4.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), offset as u64);
        assert_eq!(
            buffer.append(Payload::Log(log("new"))).unwrap(),
            Appended::Stored(4)
        );
        drop(buffer);
        let (_, again) = capture(|| DiskBuffer::open(dir.path(), LIMITS).unwrap());
        assert!(again.iter().all(|w| !w.starts_with("WARN")), "{again:?}");
    }
}

#[test]
fn a_corrupt_record_ends_its_segment_but_not_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = handmade_segment(3);
    // Flip a bit in the last record's protobuf: its CRC no longer matches.
    let n = first.len();
    first[n - 2] ^= 0x01;
    std::fs::write(dir.path().join("seg-00000000000000000001.log"), &first).unwrap();
    let mut second = b"CLFSEG\x00\x01".to_vec();
    second.extend(reference_record(
        4,
        &ClientStreamMessage {
            message: Some(client_stream_message::Message::AgentEvent(AgentEvent {
                event_type: "done".into(),
                ..Default::default()
            })),
        },
    ));
    std::fs::write(dir.path().join("seg-00000000000000000002.log"), &second).unwrap();
    let (mut buffer, warnings) = capture(|| DiskBuffer::open(dir.path(), LIMITS).unwrap());
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("WARN") && w.contains("CRC mismatch")),
        "{warnings:?}"
    );
    let texts: Vec<String> = buffer
        .read_after(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| text(&r.payload))
        .collect();
    assert_eq!(texts, ["m1", "m2", "event:done"]);
}

#[test]
fn a_damaged_ack_file_means_everything_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seg-00000000000000000001.log"),
        handmade_segment(3),
    )
    .unwrap();
    // A valid ack for 2, written from the documented layout...
    let mut ack = b"CLFACK\x00\x01".to_vec();
    ack.extend(2u64.to_le_bytes());
    let crc = crc32fast::hash(&ack);
    ack.extend(crc.to_le_bytes());
    std::fs::write(dir.path().join("ack"), &ack).unwrap();
    let mut buffer = DiskBuffer::open(dir.path(), LIMITS).unwrap();
    assert_eq!(buffer.acked(), 2);
    assert_eq!(buffer.read_after(2, usize::MAX).unwrap().len(), 1);
    drop(buffer);
    // ... and the same with one byte changed.
    ack[9] ^= 1;
    std::fs::write(dir.path().join("ack"), &ack).unwrap();
    let (mut buffer, warnings) = capture(|| DiskBuffer::open(dir.path(), LIMITS).unwrap());
    assert_eq!(buffer.acked(), 0);
    assert_eq!(buffer.read_after(0, usize::MAX).unwrap().len(), 3);
    assert!(
        warnings.iter().any(|w| w.starts_with("WARN")),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_replays_up_to_a_torn_tail_after_a_crash() {
    let addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &addr.to_string());
    let client = LogClient::with_options(&config.socket_path, "agent", client_options()).unwrap();
    let first = start_forwarder(&config).await;
    let sent: Vec<String> = (0..20).map(|i| format!("before the crash {i}")).collect();
    for s in &sent {
        client.log(cocos_logfwd::Level::Info, "c1", s);
    }
    assert!(client.flush(Duration::from_secs(20)).await);
    drop(first);
    // The crash tore a record being appended: half of one is at the end.
    let files = segment_files(&config.buffer.dir);
    let torn = reference_record(21, &as_message(&log("never acknowledged")));
    let mut file = OpenOptions::new()
        .append(true)
        .open(files.last().unwrap())
        .unwrap();
    file.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(file);

    let second = start_forwarder(&config).await;
    let fake = FakeCvms::start_on(addr, None).await;
    fake.wait_for(sent.len(), Duration::from_secs(20)).await;
    client.log(cocos_logfwd::Level::Info, "c1", "after the restart");
    let mut expected = sent.clone();
    expected.push("after the restart".into());
    fake.wait_for(expected.len(), Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&fake.messages()), expected);
    second.shutdown().await.unwrap();
    fake.stop().await;
}

use cocos_logfwd::LogClient;
