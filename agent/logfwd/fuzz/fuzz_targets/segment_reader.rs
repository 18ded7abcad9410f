//! The segment parser, two ways.
//!
//! Arbitrary bytes: it must never panic; what it calls valid must parse
//! again to the same records with nothing wrong; anything it did not read
//! must come with a reason; and its records must survive being written
//! again.
//!
//! A segment written from known records and then torn (cut at any byte) or
//! damaged (one byte changed): exactly the records wholly before the cut
//! come back; before a changed byte, every earlier record comes back.
//! (CRC-forging is beyond a fuzzer, so this is how the reader's paths for
//! valid records get exercised.)
#![no_main]

use cocos_logfwd::segment::{Payload, Record, SEGMENT_MAGIC, encode_record, parse_segment};
use cocos_proto::cvms::{AgentEvent, AgentLog};
use libfuzzer_sys::fuzz_target;

fn check_arbitrary(data: &[u8]) {
    let parsed = parse_segment(data);
    assert!(parsed.valid_len <= data.len());
    if parsed.valid_len < data.len() {
        assert!(parsed.stop.is_some(), "bytes left unread without a reason");
    }
    if parsed.valid_len > 0 {
        let again = parse_segment(&data[..parsed.valid_len]);
        assert_eq!(again.records, parsed.records);
        assert_eq!(again.stop, None);
        assert_eq!(again.valid_len, parsed.valid_len);
    }
    let mut written = SEGMENT_MAGIC.to_vec();
    for record in &parsed.records {
        written.extend(encode_record(record.seq, &record.payload));
    }
    let reread = parse_segment(&written);
    assert_eq!(reread.records, parsed.records);
    assert_eq!(reread.stop, None);
}

fuzz_target!(|input: (Vec<u8>, Vec<(u8, bool, String)>, u32, u8)| {
    let (raw, built, damage_at, flip) = input;
    check_arbitrary(&raw);

    let mut bytes = SEGMENT_MAGIC.to_vec();
    let mut records = Vec::new();
    let mut ends = Vec::new();
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
        bytes.extend(encode_record(seq, &payload));
        ends.push(bytes.len());
        records.push(Record { seq, payload });
    }
    let whole = parse_segment(&bytes);
    assert_eq!(whole.records, records);
    assert_eq!((whole.stop, whole.valid_len), (None, bytes.len()));

    let at = damage_at as usize % bytes.len();
    let before = ends.iter().take_while(|&&end| end <= at).count();
    let mut damaged = bytes.clone();
    if flip == 0 {
        damaged.truncate(at);
        let parsed = parse_segment(&damaged);
        let expected = if at < SEGMENT_MAGIC.len() { 0 } else { before };
        assert_eq!(parsed.records, records[..expected]);
        // Nothing to report only when the cut falls between two records.
        let boundary = before.checked_sub(1).map_or(SEGMENT_MAGIC.len(), |i| ends[i]);
        assert_eq!(parsed.stop.is_none(), at >= SEGMENT_MAGIC.len() && at == boundary);
    } else {
        damaged[at] ^= flip;
        let parsed = parse_segment(&damaged);
        if at < SEGMENT_MAGIC.len() {
            assert!(parsed.records.is_empty());
        } else {
            assert!(parsed.records.len() >= before);
            assert_eq!(parsed.records[..before], records[..before]);
            assert!(parsed.stop.is_some(), "a changed byte went unnoticed");
        }
    }
});
