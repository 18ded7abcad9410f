//! The disk buffer recovering a directory after a crash: a segment of
//! valid records, cut anywhere and followed by arbitrary bytes, and an
//! `ack` file that is valid (for any position) or arbitrary. Opening must
//! not panic, must replay exactly the unconfirmed records the segment
//! parser finds valid, and must go on appending after them in order.
#![no_main]

use cocos_logfwd::buffer::{Appended, BufferLimits, DiskBuffer};
use cocos_logfwd::segment::{Payload, SEGMENT_MAGIC, encode_record, parse_segment};
use cocos_proto::cvms::{AgentEvent, AgentLog};
use libfuzzer_sys::fuzz_target;

/// An `ack` file as documented: magic, seq, CRC-32 of both.
fn ack_file(seq: u64) -> Vec<u8> {
    let mut bytes = b"CLFACK\x00\x01".to_vec();
    bytes.extend(seq.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes);
    bytes.extend(hasher.finalize().to_le_bytes());
    bytes
}

type Input = (Vec<(u8, bool, String)>, u32, Vec<u8>, Result<u8, Vec<u8>>);

fuzz_target!(|input: Input| {
    let (built, cut, tail, ack) = input;
    let mut segment = SEGMENT_MAGIC.to_vec();
    let mut seq = 0u64;
    for (gap, is_event, text) in built {
        seq += 1 + u64::from(gap);
        let payload = if is_event {
            Payload::Event(AgentEvent {
                event_type: text,
                ..Default::default()
            })
        } else {
            Payload::Log(AgentLog {
                message: text,
                ..Default::default()
            })
        };
        segment.extend(encode_record(seq, &payload));
    }
    segment.truncate(cut as usize % (segment.len() + 1));
    segment.extend(tail);

    let Ok(dir) = tempfile::tempdir() else { return };
    if std::fs::write(dir.path().join("seg-00000000000000000001.log"), &segment).is_err() {
        return;
    }
    let ack = match ack {
        Ok(seq) => ack_file(u64::from(seq)),
        Err(raw) => raw,
    };
    if std::fs::write(dir.path().join("ack"), ack).is_err() {
        return;
    }
    let limits = BufferLimits {
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
    };
    let mut buffer = DiskBuffer::open(dir.path(), limits).expect("a temporary directory opens");
    let acked = buffer.acked();
    let expected: Vec<_> = parse_segment(&segment)
        .records
        .into_iter()
        .filter(|r| r.seq > acked)
        .collect();
    let replayed = buffer.read_after(acked, usize::MAX).expect("reads");
    assert_eq!(replayed, expected);

    let last = expected.last().map_or(acked, |r| r.seq);
    let event = Payload::Event(AgentEvent::default());
    assert_eq!(buffer.append(event.clone()).expect("appends"), Appended::Stored(last + 1));
    drop(buffer);
    let mut reopened = DiskBuffer::open(dir.path(), limits).expect("reopens");
    let all = reopened.read_after(acked, usize::MAX).expect("reads");
    assert_eq!(all.len(), expected.len() + 1);
    assert_eq!(all.last().map(|r| (r.seq, &r.payload)), Some((last + 1, &event)));
});
