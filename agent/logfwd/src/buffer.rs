//! The forwarder's disk buffer: every accepted message, in the order of
//! acceptance, until the management service has had it.
//!
//! # Layout of the directory
//!
//! ```text
//! seg-00000000000000000001.log   segment files (format in `crate::segment`),
//! seg-00000000000000000002.log   oldest first; only the newest is appended to
//! ack                            the highest confirmed sequence number
//! *.tmp                          a rewrite in progress; removed at open
//! ```
//!
//! `ack` is 20 bytes: the magic `CLFACK\0\x01`, the sequence number (u64
//! little-endian) and a CRC-32 of those 16 bytes (u32 little-endian). It is
//! replaced atomically (written as `ack.tmp`, then renamed). A missing or
//! damaged `ack` means "nothing confirmed": everything still on disk is sent
//! again (at-least-once, never loss).
//!
//! # Life of a record
//!
//! [`DiskBuffer::append`] gives each message the next sequence number and
//! appends it to the newest segment (a new segment is started past
//! `segment_bytes`). The forwarder reads with [`DiskBuffer::read_after`] and,
//! once it considers messages delivered, calls
//! [`DiskBuffer::confirm_through`]: segments whose records are all confirmed
//! are deleted, and `ack` records the point for the next start.
//!
//! # The bound, and what is dropped
//!
//! The segment files together stay under `max_bytes`. When an append would
//! pass it, the oldest segment that holds logs (or confirmed records) is
//! rewritten keeping only its unconfirmed events: the oldest logs go first,
//! a segment's worth at a time, and events are never dropped. If no older
//! log is left, a new log is itself dropped, and a new event is stored
//! anyway, past the bound, with a WARN: losing an event (a state change of
//! the computation) would mislead the management service more than a few
//! extra kilobytes on disk cost, and events are few and small.
//!
//! # Crash safety
//!
//! Records are appended with one `write`; a crash can tear only the last
//! record of the newest segment, which the next [`DiskBuffer::open`] detects
//! (length, CRC), reports in a WARN, and cuts off. A rewrite goes to a
//! `.tmp` file renamed over the segment, so a segment is either the old one
//! or the new one. Nothing is fsynced: the buffer is for the forwarder's
//! restarts and the management service's outages, and the disk it lives on
//! (`/cocos`) is formatted afresh at every boot anyway.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::segment::{
    self, MAX_BODY_LEN, MAX_SEQ, Payload, Record, RecordError, SEGMENT_MAGIC, SegmentStop,
};

/// The magic at the start of the `ack` file.
const ACK_MAGIC: [u8; 8] = *b"CLFACK\x00\x01";
/// File name of the confirmed position.
const ACK_FILE: &str = "ack";
/// Bytes read from a segment at a time when sending.
const READ_CHUNK: u64 = 256 << 10;

/// Size limits of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    /// Bound on the segment files' total size.
    pub max_bytes: u64,
    /// A segment is closed, and a new one started, once it reaches this size.
    pub segment_bytes: u64,
}

/// A failure of the buffer's file operations.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct BufferError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl BufferError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BufferError + 'a {
        move |source| BufferError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What [`DiskBuffer::append`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored with this sequence number.
    Stored(u64),
    /// A log that did not fit even after every older log was dropped; it
    /// was dropped itself (and counted in [`BufferStats::dropped_logs`]).
    DroppedNewLog,
}

/// A snapshot of the buffer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferStats {
    /// Segment files.
    pub segments: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Sequence number of the newest stored message (0: none yet).
    pub last_seq: u64,
    /// Highest confirmed sequence number (0: none).
    pub acked: u64,
    /// Logs dropped to keep under the bound, since open.
    pub dropped_logs: u64,
    /// Whether only events are left and they exceed the bound.
    pub over_bound: bool,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    /// Length of the valid content; anything past it in the file is ignored.
    len: u64,
    first_seq: u64,
    last_seq: u64,
    logs: u64,
    /// Changes whenever the file is rewritten, so a read position into the
    /// old content is not used with the new.
    generation: u64,
}

/// Where the last [`DiskBuffer::read_after`] stopped, to continue from
/// there without rescanning the segment.
#[derive(Debug, Clone, Copy)]
struct ReadHint {
    segment: u64,
    generation: u64,
    after: u64,
    offset: u64,
}

/// The disk buffer (see the module docs).
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    limits: BufferLimits,
    segments: VecDeque<Segment>,
    /// Open for appending to `segments.back()`; `None` when that segment is
    /// sealed (or there is none) and the next append starts a new one.
    active: Option<File>,
    next_id: u64,
    next_seq: u64,
    acked: u64,
    total_bytes: u64,
    dropped_logs: u64,
    over_bound: bool,
    generations: u64,
    hint: Option<ReadHint>,
}

impl DiskBuffer {
    /// Opens (creating if needed) the buffer in `dir`, recovering what a
    /// previous run left: torn or damaged segment tails are cut off with a
    /// WARN, confirmed segments removed.
    pub fn open(dir: &Path, limits: BufferLimits) -> Result<DiskBuffer, BufferError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(BufferError::io("create directory", dir))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(BufferError::io("list", dir))? {
            let entry = entry.map_err(BufferError::io("list", dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                fs::remove_file(&path).map_err(BufferError::io("remove", &path))?;
            } else if let Some(id) = segment_id(&name) {
                found.push((id, path));
            }
        }
        found.sort();
        let acked = read_ack(dir);
        let mut buffer = DiskBuffer {
            dir: dir.to_path_buf(),
            limits,
            segments: VecDeque::new(),
            active: None,
            next_id: found.last().map_or(1, |(id, _)| id + 1),
            next_seq: acked + 1,
            acked,
            total_bytes: 0,
            dropped_logs: 0,
            over_bound: false,
            generations: 0,
            hint: None,
        };
        for (id, path) in found {
            buffer.recover_segment(id, path)?;
        }
        tracing::debug!(
            dir = %dir.display(),
            segments = buffer.segments.len(),
            bytes = buffer.total_bytes,
            acked = buffer.acked,
            "disk buffer opened"
        );
        Ok(buffer)
    }

    fn recover_segment(&mut self, id: u64, path: PathBuf) -> Result<(), BufferError> {
        let limit = self.limits.segment_bytes + (MAX_BODY_LEN as u64) + 64;
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(BufferError::io("read", &path))?;
        let parsed = segment::parse_segment(&bytes);
        if let Some(stop) = &parsed.stop {
            tracing::warn!(
                file = %path.display(),
                ignored_bytes = bytes.len() - parsed.valid_len,
                kept_records = parsed.records.len(),
                "disk buffer: {stop}; the rest of the segment is ignored"
            );
        }
        // A record whose number does not follow the previous segment's
        // would break the order; it cannot come from this code, but the
        // files are data, so they are checked like data.
        let previous = self.segments.back().map_or(0, |s| s.last_seq);
        let live: Vec<&Record> = parsed
            .records
            .iter()
            .filter(|r| r.seq > self.acked)
            .collect();
        let misordered = parsed.records.first().is_some_and(|r| r.seq <= previous);
        if misordered {
            tracing::warn!(
                file = %path.display(),
                "disk buffer: sequence numbers do not follow the previous segment's; segment removed"
            );
        }
        if parsed.valid_len < SEGMENT_MAGIC.len() || live.is_empty() || misordered {
            fs::remove_file(&path).map_err(BufferError::io("remove", &path))?;
            return Ok(());
        }
        if parsed.stop.is_some() {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(parsed.valid_len as u64))
                .map_err(BufferError::io("truncate", &path))?;
        }
        let (first, last) = match (parsed.records.first(), parsed.records.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return Ok(()),
        };
        let len = parsed.valid_len as u64;
        self.segments.push_back(Segment {
            id,
            path,
            len,
            first_seq: first,
            last_seq: last,
            logs: parsed
                .records
                .iter()
                .filter(|r| !r.payload.is_event())
                .count() as u64,
            generation: 0,
        });
        self.total_bytes += len;
        self.next_seq = self.next_seq.max(last + 1);
        Ok(())
    }

    /// Appends a message, dropping the oldest logs first if the bound would
    /// be passed (see the module docs).
    pub fn append(&mut self, payload: Payload) -> Result<Appended, BufferError> {
        let len = segment::record_len(&payload) as u64;
        if !self.make_room(len, payload.is_event())? {
            self.dropped_logs += 1;
            return Ok(Appended::DroppedNewLog);
        }
        let seq = self.next_seq;
        if seq > MAX_SEQ {
            return Err(BufferError {
                action: "append to",
                path: self.dir.clone(),
                source: io::Error::other("sequence numbers exhausted"),
            });
        }
        let bytes = segment::encode_record(seq, &payload);
        let needs_new = match (self.active.is_some(), self.segments.back()) {
            (true, Some(s)) => s.len >= self.limits.segment_bytes,
            _ => true,
        };
        if needs_new {
            self.start_segment(seq)?;
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(BufferError {
                action: "append to",
                path: self.dir.clone(),
                source: io::Error::other("no open segment"),
            });
        };
        if let Err(e) = file.write_all(&bytes) {
            // Leave no partial record for the next append to follow: cut
            // the file back, or if even that fails, seal it (readers stop
            // at `seg.len`; the next open cuts the torn tail).
            if file.set_len(seg.len).is_err() {
                self.active = None;
            }
            return Err(BufferError::io("append to", &seg.path)(e));
        }
        seg.len += len;
        seg.last_seq = seq;
        if !payload.is_event() {
            seg.logs += 1;
        }
        self.total_bytes += len;
        self.next_seq += 1;
        Ok(Appended::Stored(seq))
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), BufferError> {
        self.active = None;
        let id = self.next_id;
        let path = self.dir.join(segment_name(id));
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(BufferError::io("create", &path))?;
        if let Err(e) = file.write_all(&SEGMENT_MAGIC) {
            let _ = fs::remove_file(&path);
            return Err(BufferError::io("write", &path)(e));
        }
        self.next_id += 1;
        let len = SEGMENT_MAGIC.len() as u64;
        self.segments.push_back(Segment {
            id,
            path,
            len,
            first_seq,
            last_seq: first_seq.saturating_sub(1),
            logs: 0,
            generation: 0,
        });
        self.total_bytes += len;
        self.active = Some(file);
        Ok(())
    }

    /// Makes room for a record of `len` bytes; false when it is a log that
    /// must be dropped itself.
    fn make_room(&mut self, len: u64, is_event: bool) -> Result<bool, BufferError> {
        loop {
            if self.total_bytes + len <= self.limits.max_bytes {
                if self.over_bound {
                    self.over_bound = false;
                    tracing::info!(
                        bytes = self.total_bytes,
                        max_bytes = self.limits.max_bytes,
                        "disk buffer back under its bound"
                    );
                }
                return Ok(true);
            }
            let acked = self.acked;
            if let Some(i) = self
                .segments
                .iter()
                .position(|s| s.logs > 0 || s.first_seq <= acked)
            {
                self.compact(i)?;
                continue;
            }
            if !self.over_bound {
                self.over_bound = true;
                if is_event {
                    tracing::warn!(
                        bytes = self.total_bytes,
                        max_bytes = self.limits.max_bytes,
                        "disk buffer: only events are left and they fill the bound; \
                         events are never dropped, so the buffer grows past it"
                    );
                } else {
                    tracing::warn!(
                        bytes = self.total_bytes,
                        max_bytes = self.limits.max_bytes,
                        "disk buffer: only events are left and they fill the bound; \
                         new logs are dropped until there is room"
                    );
                }
            }
            return Ok(is_event);
        }
    }

    /// Rewrites segment `i` keeping only its unconfirmed events.
    fn compact(&mut self, i: usize) -> Result<(), BufferError> {
        if i + 1 == self.segments.len() {
            self.active = None;
        }
        let acked = self.acked;
        let Some(seg) = self.segments.get_mut(i) else {
            return Ok(());
        };
        let mut bytes = fs::read(&seg.path).map_err(BufferError::io("read", &seg.path))?;
        bytes.truncate(usize::try_from(seg.len).unwrap_or(usize::MAX));
        let parsed = segment::parse_segment(&bytes);
        let mut kept = SEGMENT_MAGIC.to_vec();
        let (mut first, mut last, mut dropped) = (None, None, Vec::new());
        for record in parsed.records {
            if record.seq <= acked {
                continue;
            }
            if record.payload.is_event() {
                first.get_or_insert(record.seq);
                last = Some(record.seq);
                kept.extend(segment::encode_record(record.seq, &record.payload));
            } else {
                dropped.push(record.seq);
            }
        }
        let old_len = seg.len;
        match (first, last) {
            (Some(first), Some(last)) => {
                let tmp = seg.path.with_extension("log.tmp");
                fs::write(&tmp, &kept).map_err(BufferError::io("write", &tmp))?;
                fs::rename(&tmp, &seg.path).map_err(BufferError::io("rename", &tmp))?;
                self.generations += 1;
                seg.len = kept.len() as u64;
                seg.first_seq = first;
                seg.last_seq = last;
                seg.logs = 0;
                seg.generation = self.generations;
                self.total_bytes = self.total_bytes - old_len + seg.len;
            }
            _ => {
                fs::remove_file(&seg.path).map_err(BufferError::io("remove", &seg.path))?;
                self.segments.remove(i);
                self.total_bytes -= old_len;
            }
        }
        if let (Some(a), Some(b)) = (dropped.first(), dropped.last()) {
            self.dropped_logs += dropped.len() as u64;
            tracing::warn!(
                dropped = dropped.len(),
                first_seq = a,
                last_seq = b,
                max_bytes = self.limits.max_bytes,
                "disk buffer full: dropped the oldest logs"
            );
        }
        Ok(())
    }

    /// The stored messages with sequence numbers above `after`, oldest
    /// first: about `max_bytes` of them (whole records; at least one when
    /// there is one).
    pub fn read_after(&mut self, after: u64, max_bytes: usize) -> Result<Vec<Record>, BufferError> {
        let mut out = Vec::new();
        let mut after = after;
        let mut used = 0;
        while out.is_empty() || used < max_bytes {
            let Some(i) = self.segments.iter().position(|s| s.last_seq > after) else {
                break;
            };
            let budget = if out.is_empty() {
                max_bytes
            } else {
                max_bytes - used
            };
            let (records, bytes) = self.read_segment(i, after, budget)?;
            if let Some(last) = records.last() {
                after = last.seq;
            }
            // A segment found damaged is cut short, and the next
            // `position` moves past it.
            out.extend(records);
            used = used.saturating_add(bytes);
        }
        Ok(out)
    }

    /// Reads from segment `i` the records above `after`, about `max_bytes`
    /// of them (at least one if there is one), with their size.
    fn read_segment(
        &mut self,
        i: usize,
        after: u64,
        max_bytes: usize,
    ) -> Result<(Vec<Record>, usize), BufferError> {
        let is_last = i + 1 == self.segments.len();
        let Some(seg) = self.segments.get_mut(i) else {
            return Ok((Vec::new(), 0));
        };
        let (mut offset, mut seen) = match self.hint {
            Some(h)
                if h.segment == seg.id && h.generation == seg.generation && h.after == after =>
            {
                (h.offset, after)
            }
            _ => (SEGMENT_MAGIC.len() as u64, 0),
        };
        let file = File::open(&seg.path).map_err(BufferError::io("open", &seg.path))?;
        let mut out = Vec::new();
        let mut out_bytes = 0;
        let mut want = READ_CHUNK;
        'chunks: while offset < seg.len && (out.is_empty() || out_bytes < max_bytes) {
            let n = want.min(seg.len - offset);
            let mut chunk = vec![0; usize::try_from(n).unwrap_or(usize::MAX)];
            file.read_exact_at(&mut chunk, offset)
                .map_err(BufferError::io("read", &seg.path))?;
            let mut pos = 0;
            while pos < chunk.len() && (out.is_empty() || out_bytes < max_bytes) {
                match segment::decode_record(chunk.get(pos..).unwrap_or_default()) {
                    Ok((record, used)) => {
                        pos += used;
                        seen = record.seq;
                        if record.seq > after {
                            out.push(record);
                            out_bytes += used;
                        }
                    }
                    Err(RecordError::Incomplete { needed, .. })
                        if offset + (pos as u64) < seg.len =>
                    {
                        // The record goes on past this chunk: read from its start.
                        want = READ_CHUNK.max(needed as u64);
                        offset += pos as u64;
                        continue 'chunks;
                    }
                    Err(error) => {
                        let at = offset + pos as u64;
                        tracing::warn!(
                            file = %seg.path.display(),
                            "disk buffer: {}; the rest of the segment is ignored",
                            SegmentStop::Record { offset: usize::try_from(at).unwrap_or(usize::MAX), error }
                        );
                        seg.len = at;
                        seg.last_seq = seen;
                        if is_last {
                            // Appends would land after the damage: seal it.
                            self.active = None;
                        }
                        break 'chunks;
                    }
                }
            }
            offset += pos as u64;
        }
        let last = out.last().map_or(after, |r| r.seq);
        self.hint = Some(ReadHint {
            segment: self.segments.get(i).map_or(0, |s| s.id),
            generation: self.segments.get(i).map_or(0, |s| s.generation),
            after: last,
            offset,
        });
        Ok((out, out_bytes))
    }

    /// Marks every message up to `seq` as delivered: fully confirmed
    /// segments are deleted and the position is recorded in `ack`.
    pub fn confirm_through(&mut self, seq: u64) -> Result<(), BufferError> {
        let seq = seq.min(self.next_seq - 1);
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq;
        write_ack(&self.dir, seq)?;
        while let Some(front) = self.segments.front() {
            if front.last_seq > seq {
                break;
            }
            if self.segments.len() == 1 {
                self.active = None;
            }
            fs::remove_file(&front.path).map_err(BufferError::io("remove", &front.path))?;
            self.total_bytes -= front.len;
            self.segments.pop_front();
        }
        Ok(())
    }

    /// Highest confirmed sequence number (0: none).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// A snapshot of sizes and counters.
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            segments: self.segments.len(),
            bytes: self.total_bytes,
            last_seq: self.next_seq - 1,
            acked: self.acked,
            dropped_logs: self.dropped_logs,
            over_bound: self.over_bound,
        }
    }
}

fn segment_name(id: u64) -> String {
    format!("seg-{id:020}.log")
}

fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn read_ack(dir: &Path) -> u64 {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(file = %path.display(), "disk buffer: cannot read the confirmed position ({e}); everything buffered is sent again");
            return 0;
        }
    };
    match decode_ack(&bytes) {
        Some(seq) => seq,
        None => {
            tracing::warn!(file = %path.display(), "disk buffer: the confirmed position is damaged; everything buffered is sent again");
            0
        }
    }
}

fn decode_ack(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 20 || bytes.get(..8)? != ACK_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes.get(16..20)?.try_into().ok()?);
    if crc32fast::hash(bytes.get(..16)?) != crc {
        return None;
    }
    let seq = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    (seq <= MAX_SEQ).then_some(seq)
}

fn write_ack(dir: &Path, seq: u64) -> Result<(), BufferError> {
    let mut bytes = ACK_MAGIC.to_vec();
    bytes.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("ack.tmp");
    fs::write(&tmp, &bytes).map_err(BufferError::io("write", &tmp))?;
    let path = dir.join(ACK_FILE);
    fs::rename(&tmp, &path).map_err(BufferError::io("rename", &tmp))
}
