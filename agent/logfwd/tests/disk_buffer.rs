//! The disk buffer on its own: sequence numbers, segment rotation,
//! confirmation (segments deleted, the position kept in `ack` across a
//! reopen), and the bound (oldest logs first, events kept with a WARN).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cocos_logfwd::buffer::{Appended, BufferLimits, DiskBuffer};
use cocos_logfwd::segment::Payload;
use cocos_proto::cvms::{AgentEvent, AgentLog};
use common::{capture, segment_files};

fn log(i: u64) -> Payload {
    Payload::Log(AgentLog {
        message: format!("log {i:04} {}", "x".repeat(60)),
        ..Default::default()
    })
}

fn event(i: u64) -> Payload {
    Payload::Event(AgentEvent {
        event_type: format!("event {i:04} {}", "x".repeat(60)),
        ..Default::default()
    })
}

fn name(p: &Payload) -> String {
    match p {
        Payload::Log(l) => l.message[..8].to_string(),
        Payload::Event(e) => e.event_type[..10].to_string(),
    }
}

const ROOMY: BufferLimits = BufferLimits {
    max_bytes: 1 << 20,
    segment_bytes: 1024,
};

#[test]
fn numbers_rotation_confirmation_and_the_ack_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = DiskBuffer::open(dir.path(), ROOMY).unwrap();
    for i in 1..=40 {
        assert_eq!(b.append(log(i)).unwrap(), Appended::Stored(i));
    }
    // 40 records of 90 bytes in 1 KiB segments: a new file past each KiB.
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 4, "{files:?}");
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .collect();
    assert!(
        sizes[..3].iter().all(|&s| (1024..1024 + 90).contains(&s)),
        "{sizes:?}"
    );
    assert_eq!(b.stats().bytes, sizes.iter().sum::<u64>());

    // Reading in small batches gives everything in order.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let batch = b.read_after(after, 200).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.seq;
        seen.extend(batch.iter().map(|r| r.seq));
    }
    assert_eq!(seen, (1..=40).collect::<Vec<_>>());

    // Confirming through 15 deletes the first segment (records 1..=11)
    // only, and the position survives a reopen.
    b.confirm_through(15).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 3);
    drop(b);
    let ack = std::fs::read(dir.path().join("ack")).unwrap();
    assert_eq!(&ack[..8], b"CLFACK\x00\x01");
    assert_eq!(u64::from_le_bytes(ack[8..16].try_into().unwrap()), 15);
    assert_eq!(&ack[16..], &crc32fast::hash(&ack[..16]).to_le_bytes());
    let mut b = DiskBuffer::open(dir.path(), ROOMY).unwrap();
    assert_eq!(b.acked(), 15);
    let rest = b.read_after(b.acked(), usize::MAX).unwrap();
    assert_eq!(rest.first().map(|r| r.seq), Some(16));
    assert_eq!(rest.len(), 25);
    // Numbering goes on, and confirming everything leaves no segment.
    assert_eq!(b.append(log(41)).unwrap(), Appended::Stored(41));
    b.confirm_through(41).unwrap();
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(b.stats().bytes, 0);
    assert_eq!(b.append(log(42)).unwrap(), Appended::Stored(42));
}

#[test]
fn the_bound_drops_oldest_logs_then_keeps_events_past_it_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let limits = BufferLimits {
        max_bytes: 4096,
        segment_bytes: 1024,
    };
    let (result, warnings) = capture(|| {
        let mut b = DiskBuffer::open(dir.path(), limits).unwrap();
        let mut seq = 0;
        let mut next = |b: &mut DiskBuffer, p: Payload| {
            seq += 1;
            b.append(p).unwrap()
        };
        // Logs and an event every 5th: more than twice the bound.
        for i in 1..=100 {
            let p = if i % 5 == 0 { event(i) } else { log(i) };
            next(&mut b, p);
            assert!(b.stats().bytes <= limits.max_bytes, "{:?}", b.stats());
        }
        let after_logs = b.read_after(0, usize::MAX).unwrap();
        // Now only events: past the bound.
        for i in 101..=200 {
            assert!(matches!(next(&mut b, event(i)), Appended::Stored(_)));
        }
        let stats = b.stats();
        let dropped_new = next(&mut b, log(201));
        (
            after_logs,
            stats,
            dropped_new,
            b.read_after(0, usize::MAX).unwrap(),
        )
    });
    let (after_logs, stats, dropped_new, all) = result;

    // Every event of the first 100 is there; the logs kept are the newest.
    let names: Vec<String> = after_logs.iter().map(|r| name(&r.payload)).collect();
    let events: Vec<String> = (1..=100)
        .filter(|i| i % 5 == 0)
        .map(|i| format!("event {i:04}"))
        .collect();
    let kept_events: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("event"))
        .cloned()
        .collect();
    assert_eq!(kept_events, events);
    let kept_logs: Vec<u64> = after_logs
        .iter()
        .filter_map(|r| match &r.payload {
            Payload::Log(_) => Some(r.seq),
            Payload::Event(_) => None,
        })
        .collect();
    let all_logs: Vec<u64> = (1..=100u64).filter(|i| i % 5 != 0).collect();
    let newest_logs = all_logs[all_logs.len() - kept_logs.len()..].to_vec();
    assert!(!kept_logs.is_empty());
    assert_eq!(kept_logs, newest_logs, "the newest logs survive");

    // Events alone pass the bound, with a WARN; a new log is dropped.
    assert!(
        stats.over_bound && stats.bytes > limits.max_bytes,
        "{stats:?}"
    );
    assert_eq!(dropped_new, Appended::DroppedNewLog);
    assert_eq!(all.iter().filter(|r| r.payload.is_event()).count(), 120);
    assert!(all.iter().all(|r| r.payload.is_event()));
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("WARN") && w.contains("events are never dropped")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("WARN") && w.contains("dropped the oldest logs")),
        "{warnings:?}"
    );
}
