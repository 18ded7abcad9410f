//! The disk buffer's segment file format: append-only, length-prefixed
//! protobuf records, each with a CRC-32, so that a record torn by a crash
//! is detected and ignored.
//!
//! ```text
//! segment file = magic record*
//! magic        = "CLFSEG" 0x00 0x01            (8 bytes; 0x01 = format version)
//!
//! record       = length crc body
//!   length     u32 little-endian: the length of `body` in bytes, 9 ..= MAX_BODY_LEN
//!   crc        u32 little-endian: CRC-32 (IEEE 802.3, as zlib's crc32) of
//!              the four `length` bytes followed by `body`
//!   body       = seq kind message
//!     seq      u64 little-endian: the sequence number the forwarder gave the
//!              message when it accepted it, 1 ..= 2^63 - 1; strictly
//!              increasing within a file and across files
//!     kind     u8: 1 = cvms.AgentLog, 2 = cvms.AgentEvent
//!     message  the protobuf encoding of that message (length - 9 bytes)
//! ```
//!
//! A reader walks the records from offset 8 and stops at the first one that
//! is incomplete (a torn tail: the file ends inside it) or corrupt (length
//! out of range, CRC mismatch, sequence number out of range or not
//! increasing, unknown kind, protobuf that does not decode). Everything before that
//! point is valid; everything from it on is ignored. A CRC over the length
//! as well as the body means a damaged length is caught too, not only a
//! damaged body: a wrong length makes the CRC cover the wrong bytes.
//!
//! No resynchronisation is attempted after a bad record: records carry no
//! sync marker, and a crash can only tear the *last* record of the file
//! being appended to, which is what this format is for.
//!
//! [`parse_segment`] is the parser of on-disk bytes; it is fuzzed
//! (`agent/logfwd/fuzz`, target `segment_reader`).

use cocos_proto::cvms::{AgentEvent, AgentLog, ClientStreamMessage, client_stream_message};
use prost::Message;

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CLFSEG\x00\x01";
/// Bytes before a record's body: its length and its CRC.
pub const RECORD_HEADER_LEN: usize = 8;
/// Bytes of a body before the protobuf message: sequence number and kind.
pub const BODY_PREFIX_LEN: usize = 9;
/// The largest body a reader accepts (16 MiB). The forwarder refuses
/// messages far smaller than this (`max_message_bytes`); the cap only
/// stops a damaged length from making a reader allocate gigabytes.
pub const MAX_BODY_LEN: usize = 16 << 20;

/// The largest sequence number (2^63 - 1): far beyond any VM's lifetime,
/// and it leaves room to add one without overflow.
pub const MAX_SEQ: u64 = (1 << 63) - 1;

/// `kind` byte of a `cvms.AgentLog` record.
const KIND_LOG: u8 = 1;
/// `kind` byte of a `cvms.AgentEvent` record.
const KIND_EVENT: u8 = 2;

/// What one record holds: a log line or an event, as the management
/// service will receive it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A `cvms.AgentLog`.
    Log(AgentLog),
    /// A `cvms.AgentEvent`.
    Event(AgentEvent),
}

impl Payload {
    /// Whether this is an event (events are never dropped).
    pub fn is_event(&self) -> bool {
        matches!(self, Payload::Event(_))
    }

    /// The message for the `cvms.Service/Process` stream.
    pub fn into_stream_message(self) -> ClientStreamMessage {
        let message = match self {
            Payload::Log(log) => client_stream_message::Message::AgentLog(log),
            Payload::Event(event) => client_stream_message::Message::AgentEvent(event),
        };
        ClientStreamMessage {
            message: Some(message),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Payload::Log(_) => KIND_LOG,
            Payload::Event(_) => KIND_EVENT,
        }
    }

    fn message_len(&self) -> usize {
        match self {
            Payload::Log(log) => log.encoded_len(),
            Payload::Event(event) => event.encoded_len(),
        }
    }
}

/// One record: a payload and the sequence number it was accepted with.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Position in the order of acceptance (1, 2, 3, ...).
    pub seq: u64,
    /// The message.
    pub payload: Payload,
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end inside the record (a torn tail).
    #[error("record incomplete: {needed} bytes needed, {available} present")]
    Incomplete {
        /// Bytes the record needs from its start.
        needed: usize,
        /// Bytes there are from its start.
        available: usize,
    },
    /// The length field is outside `9 ..= MAX_BODY_LEN`.
    #[error("record length {0} out of range (9 to {MAX_BODY_LEN})")]
    BadLength(u32),
    /// The stored CRC does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the record header.
        stored: u32,
        /// CRC of the bytes present.
        computed: u32,
    },
    /// The sequence number is 0 or above [`MAX_SEQ`].
    #[error("sequence number {0} out of range (1 to {MAX_SEQ})")]
    BadSeq(u64),
    /// The kind byte is neither 1 (log) nor 2 (event).
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The message bytes are not a valid protobuf of the kind's type.
    #[error("message does not decode: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl RecordError {
    /// Whether this is a torn tail rather than damage.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, RecordError::Incomplete { .. })
    }
}

/// The encoded length of a record holding `payload` (header included).
pub fn record_len(payload: &Payload) -> usize {
    RECORD_HEADER_LEN + BODY_PREFIX_LEN + payload.message_len()
}

/// Encodes one record.
pub fn encode_record(seq: u64, payload: &Payload) -> Vec<u8> {
    let body_len = BODY_PREFIX_LEN + payload.message_len();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body_len);
    // A body never approaches 4 GiB: the forwarder refuses messages over
    // `max_message_bytes`, and prost messages are bounded by it.
    let len_bytes = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(payload.kind());
    match payload {
        Payload::Log(log) => log.encode_raw(&mut out),
        Payload::Event(event) => event.encode_raw(&mut out),
    }
    let crc = record_crc(&len_bytes, &out[RECORD_HEADER_LEN..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn record_crc(len_bytes: &[u8; 4], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(body);
    hasher.finalize()
}

/// The number of bytes the record starting at `buf[0]` occupies, read from
/// its header alone; `None` when fewer than 8 bytes are present.
pub fn peek_record_len(buf: &[u8]) -> Option<Result<usize, RecordError>> {
    let len_bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    buf.get(..RECORD_HEADER_LEN)?;
    let body_len = u32::from_le_bytes(len_bytes);
    let body = usize::try_from(body_len).unwrap_or(usize::MAX);
    if !(BODY_PREFIX_LEN..=MAX_BODY_LEN).contains(&body) {
        return Some(Err(RecordError::BadLength(body_len)));
    }
    Some(Ok(RECORD_HEADER_LEN + body))
}

/// Decodes the record at the start of `buf`, returning it and the bytes it
/// occupies.
pub fn decode_record(buf: &[u8]) -> Result<(Record, usize), RecordError> {
    let incomplete = |needed| RecordError::Incomplete {
        needed,
        available: buf.len(),
    };
    let total = match peek_record_len(buf) {
        None => return Err(incomplete(RECORD_HEADER_LEN)),
        Some(len) => len?,
    };
    let record = buf.get(..total).ok_or_else(|| incomplete(total))?;
    let (header, body) = record.split_at(RECORD_HEADER_LEN);
    let (len_bytes, crc_bytes) = header.split_at(4);
    let len_bytes: [u8; 4] = len_bytes.try_into().map_err(|_| incomplete(total))?;
    let crc_bytes: [u8; 4] = crc_bytes.try_into().map_err(|_| incomplete(total))?;
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = record_crc(&len_bytes, body);
    if stored != computed {
        return Err(RecordError::Crc { stored, computed });
    }
    let (prefix, message) = body.split_at(BODY_PREFIX_LEN);
    let (seq_bytes, kind) = prefix.split_at(8);
    let seq = u64::from_le_bytes(seq_bytes.try_into().map_err(|_| incomplete(total))?);
    if !(1..=MAX_SEQ).contains(&seq) {
        return Err(RecordError::BadSeq(seq));
    }
    let payload = match kind.first().copied().unwrap_or(0) {
        KIND_LOG => Payload::Log(AgentLog::decode(message)?),
        KIND_EVENT => Payload::Event(AgentEvent::decode(message)?),
        other => return Err(RecordError::UnknownKind(other)),
    };
    Ok((Record { seq, payload }, total))
}

/// Where and why a reader stopped before the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentStop {
    /// The file is shorter than its magic, or the magic is wrong.
    #[error("not a segment file (bad or missing magic)")]
    BadMagic,
    /// A record is torn or damaged.
    #[error("record at offset {offset}: {error}")]
    Record {
        /// Byte offset of the record in the file.
        offset: usize,
        /// What is wrong with it.
        error: RecordError,
    },
    /// A record's sequence number does not exceed the one before it.
    #[error("record at offset {offset}: sequence number {seq} does not follow {previous}")]
    OutOfOrder {
        /// Byte offset of the record in the file.
        offset: usize,
        /// Its sequence number.
        seq: u64,
        /// The previous record's.
        previous: u64,
    },
}

/// The valid part of a segment file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSegment {
    /// The records before the stopping point, in file order.
    pub records: Vec<Record>,
    /// Length of the valid prefix (magic and whole good records); the file
    /// can be truncated to it. 0 when the magic itself is bad.
    pub valid_len: usize,
    /// Why reading stopped before the end, if it did.
    pub stop: Option<SegmentStop>,
}

/// Reads a whole segment file's bytes: every good record up to the first
/// torn or damaged one. Never fails; what it could not read is in `stop`.
pub fn parse_segment(bytes: &[u8]) -> ParsedSegment {
    if bytes.get(..SEGMENT_MAGIC.len()) != Some(&SEGMENT_MAGIC[..]) {
        return ParsedSegment {
            records: Vec::new(),
            valid_len: 0,
            stop: Some(SegmentStop::BadMagic),
        };
    }
    let mut offset = SEGMENT_MAGIC.len();
    let mut records: Vec<Record> = Vec::new();
    let mut stop = None;
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        match decode_record(rest) {
            Ok((record, used)) => {
                let previous = records.last().map_or(0, |r| r.seq);
                if !records.is_empty() && record.seq <= previous {
                    stop = Some(SegmentStop::OutOfOrder {
                        offset,
                        seq: record.seq,
                        previous,
                    });
                    break;
                }
                records.push(record);
                offset += used;
            }
            Err(error) => {
                stop = Some(SegmentStop::Record { offset, error });
                break;
            }
        }
    }
    ParsedSegment {
        records,
        valid_len: offset,
        stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn log(message: &str) -> Payload {
        Payload::Log(AgentLog {
            message: message.into(),
            computation_id: "c1".into(),
            level: "INFO".into(),
            timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
        })
    }

    fn segment(records: &[(u64, Payload)]) -> Vec<u8> {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        for (seq, payload) in records {
            bytes.extend(encode_record(*seq, payload));
        }
        bytes
    }

    #[test]
    fn record_layout_is_as_documented() {
        let payload = log("hi");
        let bytes = encode_record(0x0102_0304_0506_0708, &payload);
        let message = match &payload {
            Payload::Log(l) => l.encode_to_vec(),
            Payload::Event(_) => unreachable!(),
        };
        let body_len = 9 + message.len();
        assert_eq!(bytes.len(), 8 + body_len);
        assert_eq!(&bytes[..4], &(body_len as u32).to_le_bytes());
        assert_eq!(&bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes[16], 1);
        assert_eq!(&bytes[17..], &message[..]);
        // The CRC is zlib's CRC-32 of length and body: the standard check
        // value of CRC-32 is 0xCBF43926 for "123456789".
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        let mut covered = bytes[..4].to_vec();
        covered.extend_from_slice(&bytes[8..]);
        assert_eq!(&bytes[4..8], &crc32fast::hash(&covered).to_le_bytes());
    }

    #[test]
    fn torn_tail_is_reported_and_the_rest_kept() {
        let full = segment(&[(1, log("a")), (2, log("b")), (3, log("c"))]);
        let third = full.len() - encode_record(3, &log("c")).len();
        for cut in third + 1..full.len() {
            let parsed = parse_segment(&full[..cut]);
            assert_eq!(parsed.records.len(), 2, "cut at {cut}");
            assert_eq!(parsed.valid_len, third);
            assert!(matches!(
                parsed.stop,
                Some(SegmentStop::Record { offset, error: RecordError::Incomplete { .. } }) if offset == third
            ));
        }
        let whole = parse_segment(&full);
        assert_eq!(whole.records.len(), 3);
        assert_eq!(whole.stop, None);
        assert_eq!(whole.valid_len, full.len());
    }

    #[test]
    fn flipped_byte_stops_at_that_record() {
        let full = segment(&[(1, log("a")), (2, log("b"))]);
        let second = 8 + encode_record(1, &log("a")).len();
        for at in second..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            let parsed = parse_segment(&bad);
            assert_eq!(parsed.records.len(), 1, "flip at {at}");
            assert_eq!(parsed.valid_len, second);
            assert!(parsed.stop.is_some());
        }
    }

    #[test]
    fn zeroed_tail_is_a_bad_length() {
        let mut bytes = segment(&[(1, log("a"))]);
        let good = bytes.len();
        bytes.extend([0u8; 4096]);
        let parsed = parse_segment(&bytes);
        assert_eq!(parsed.valid_len, good);
        assert_eq!(
            parsed.stop,
            Some(SegmentStop::Record {
                offset: good,
                error: RecordError::BadLength(0)
            })
        );
    }

    #[test]
    fn sequence_must_increase() {
        let bytes = segment(&[(5, log("a")), (5, log("b"))]);
        let parsed = parse_segment(&bytes);
        assert_eq!(parsed.records.len(), 1);
        assert!(matches!(
            parsed.stop,
            Some(SegmentStop::OutOfOrder {
                seq: 5,
                previous: 5,
                ..
            })
        ));
    }

    #[test]
    fn bad_magic_reads_nothing() {
        let mut bytes = segment(&[(1, log("a"))]);
        bytes[7] = 2;
        let parsed = parse_segment(&bytes);
        assert_eq!(parsed.valid_len, 0);
        assert_eq!(parsed.stop, Some(SegmentStop::BadMagic));
        assert_eq!(parse_segment(b"CLF").stop, Some(SegmentStop::BadMagic));
    }
}
