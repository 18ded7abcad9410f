//! Where an algorithm's output goes: the [`OutputSink`] seam, an in-memory
//! sink for tests ([`MemorySink`]), a `tracing` sink ([`LogSink`]), and the
//! per-run plumbing that cuts streams into pieces and rate-limits stderr
//! events.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Largest piece handed to [`OutputSink::stdout`] / [`OutputSink::stderr`].
pub const MAX_PIECE: usize = 1024;

/// The event type of stderr warnings, as the Go runner names it.
pub const EVENT_ALGORITHM_RUN: &str = "AlgorithmRun";
/// The status of stderr warnings.
pub const STATUS_WARNING: &str = "Warning";

/// Receives an algorithm's output and events. Called from the runner's
/// tasks while the algorithm runs: implementations must not block (queue
/// and return; drop the oldest entries when full).
pub trait OutputSink: Send + Sync {
    /// A piece (at most [`MAX_PIECE`] bytes) of the algorithm's stdout. Pieces
    /// end at a newline where the line fits; concatenated, they are the
    /// stream byte for byte.
    fn stdout(&self, computation_id: &str, bytes: &[u8]);
    /// A piece of the algorithm's stderr, cut like [`OutputSink::stdout`].
    fn stderr(&self, computation_id: &str, bytes: &[u8]);
    /// An event, e.g. `("AlgorithmRun", "Warning", {"stderr": ..})`.
    fn event(&self, computation_id: &str, event_type: &str, status: &str, details_json: &[u8]);
}

/// One call made on a [`MemorySink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputRecord {
    /// [`OutputSink::stdout`].
    Stdout {
        /// The computation.
        computation_id: String,
        /// The piece.
        bytes: Vec<u8>,
    },
    /// [`OutputSink::stderr`].
    Stderr {
        /// The computation.
        computation_id: String,
        /// The piece.
        bytes: Vec<u8>,
    },
    /// [`OutputSink::event`].
    Event {
        /// The computation.
        computation_id: String,
        /// The event type.
        event_type: String,
        /// The status.
        status: String,
        /// The details, JSON.
        details_json: Vec<u8>,
    },
}

/// An [`OutputSink`] that keeps every call in memory (for tests).
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<OutputRecord>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<OutputRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far, in order.
    pub fn records(&self) -> Vec<OutputRecord> {
        self.lock().clone()
    }

    /// The stdout pieces of `computation_id`, in order.
    pub fn stdout_pieces(&self, computation_id: &str) -> Vec<Vec<u8>> {
        self.lock()
            .iter()
            .filter_map(|r| match r {
                OutputRecord::Stdout {
                    computation_id: id,
                    bytes,
                } if id == computation_id => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    /// The stdout of `computation_id`, concatenated.
    pub fn stdout(&self, computation_id: &str) -> Vec<u8> {
        self.stdout_pieces(computation_id).concat()
    }

    /// The stderr of `computation_id`, concatenated.
    pub fn stderr(&self, computation_id: &str) -> Vec<u8> {
        self.lock()
            .iter()
            .filter_map(|r| match r {
                OutputRecord::Stderr {
                    computation_id: id,
                    bytes,
                } if id == computation_id => Some(bytes.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }

    /// The events of `computation_id`: (type, status, details).
    pub fn events(&self, computation_id: &str) -> Vec<(String, String, Vec<u8>)> {
        self.lock()
            .iter()
            .filter_map(|r| match r {
                OutputRecord::Event {
                    computation_id: id,
                    event_type,
                    status,
                    details_json,
                } if id == computation_id => {
                    Some((event_type.clone(), status.clone(), details_json.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

impl OutputSink for MemorySink {
    fn stdout(&self, computation_id: &str, bytes: &[u8]) {
        self.lock().push(OutputRecord::Stdout {
            computation_id: computation_id.to_owned(),
            bytes: bytes.to_vec(),
        });
    }

    fn stderr(&self, computation_id: &str, bytes: &[u8]) {
        self.lock().push(OutputRecord::Stderr {
            computation_id: computation_id.to_owned(),
            bytes: bytes.to_vec(),
        });
    }

    fn event(&self, computation_id: &str, event_type: &str, status: &str, details_json: &[u8]) {
        self.lock().push(OutputRecord::Event {
            computation_id: computation_id.to_owned(),
            event_type: event_type.to_owned(),
            status: status.to_owned(),
            details_json: details_json.to_vec(),
        });
    }
}

/// An [`OutputSink`] that writes to `tracing`: stdout at DEBUG, stderr at
/// WARN, events at INFO (as the Go runner logged them), until the runner is
/// connected to the log forwarder.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl OutputSink for LogSink {
    fn stdout(&self, computation_id: &str, bytes: &[u8]) {
        tracing::debug!(computation_id, stdout = %String::from_utf8_lossy(bytes).trim_end());
    }

    fn stderr(&self, computation_id: &str, bytes: &[u8]) {
        tracing::warn!(computation_id, stderr = %String::from_utf8_lossy(bytes).trim_end());
    }

    fn event(&self, computation_id: &str, event_type: &str, status: &str, details_json: &[u8]) {
        tracing::info!(
            computation_id,
            event_type,
            status,
            details = %String::from_utf8_lossy(details_json)
        );
    }
}

/// Cuts a byte stream into pieces of at most `max` bytes, each ending at a
/// newline where the line fits, else at a UTF-8 character boundary where
/// one is near, else at `max`.
#[derive(Debug)]
pub(crate) struct LineChunker {
    buf: Vec<u8>,
    max: usize,
}

impl LineChunker {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(4),
        }
    }

    /// Adds `data`; calls `emit` for every complete piece.
    pub(crate) fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        self.buf.extend_from_slice(data);
        loop {
            let window = &self.buf[..self.buf.len().min(self.max)];
            let cut = if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                nl + 1
            } else if self.buf.len() >= self.max {
                char_boundary_cut(&self.buf, self.max)
            } else {
                break;
            };
            emit(&self.buf[..cut]);
            self.buf.drain(..cut);
        }
    }

    /// Emits what is left (a last line without newline).
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// Where to cut `buf` (longer than `max`) at or before `max` without
/// splitting a UTF-8 sequence: back off over at most 3 continuation bytes.
fn char_boundary_cut(buf: &[u8], max: usize) -> usize {
    let mut cut = max;
    while cut > max - 3 && buf.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
        cut -= 1;
    }
    if buf.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
        max
    } else {
        cut
    }
}

/// How many bytes of stderr are kept for error messages.
const TAIL_KEEP: usize = 4096;
/// Most bytes of stderr quoted in an error message.
const TAIL_QUOTE: usize = 512;
/// Most lines of stderr quoted in an error message.
const TAIL_LINES: usize = 3;
/// Most bytes of a stderr piece quoted in an event.
const EVENT_QUOTE: usize = 1024;

struct StderrState {
    chunker: LineChunker,
    tail: VecDeque<u8>,
    last_event: Option<Instant>,
    suppressed: u64,
    last_suppressed: Vec<u8>,
}

/// One run's output path: stdout and stderr pieces to the sink, stderr
/// events (rate-limited), and the end of stderr kept for error messages.
/// Shared by the tasks that read the algorithm's streams.
pub(crate) struct RunOutput {
    id: String,
    sink: std::sync::Arc<dyn OutputSink>,
    event_interval: Duration,
    stdout: Mutex<LineChunker>,
    stderr: Mutex<StderrState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RunOutput {
    pub(crate) fn new(
        id: &str,
        sink: std::sync::Arc<dyn OutputSink>,
        event_interval: Duration,
    ) -> Self {
        Self {
            id: id.to_owned(),
            sink,
            event_interval,
            stdout: Mutex::new(LineChunker::new(MAX_PIECE)),
            stderr: Mutex::new(StderrState {
                chunker: LineChunker::new(MAX_PIECE),
                tail: VecDeque::new(),
                last_event: None,
                suppressed: 0,
                last_suppressed: Vec::new(),
            }),
        }
    }

    /// Bytes the algorithm wrote to stdout.
    pub(crate) fn stdout(&self, data: &[u8]) {
        let mut chunker = lock(&self.stdout);
        chunker.push(data, |piece| self.sink.stdout(&self.id, piece));
    }

    /// Bytes the algorithm wrote to stderr.
    pub(crate) fn stderr(&self, data: &[u8]) {
        let mut state = lock(&self.stderr);
        state.tail.extend(data.iter().copied());
        let excess = state.tail.len().saturating_sub(TAIL_KEEP);
        state.tail.drain(..excess);
        let mut pieces = Vec::new();
        state
            .chunker
            .push(data, |piece| pieces.push(piece.to_vec()));
        for piece in pieces {
            self.stderr_piece(&mut state, &piece);
        }
    }

    fn stderr_piece(&self, state: &mut StderrState, piece: &[u8]) {
        self.sink.stderr(&self.id, piece);
        let now = Instant::now();
        let due = state
            .last_event
            .is_none_or(|last| now.duration_since(last) >= self.event_interval);
        if due {
            self.stderr_event(piece, state.suppressed);
            state.last_event = Some(now);
            state.suppressed = 0;
            state.last_suppressed.clear();
        } else {
            state.suppressed += 1;
            state.last_suppressed = piece.to_vec();
        }
    }

    fn stderr_event(&self, piece: &[u8], folded: u64) {
        let quoted = &piece[..piece.len().min(EVENT_QUOTE)];
        let text = String::from_utf8_lossy(quoted);
        let details = serde_json::json!({
            "stderr": text.trim_end(),
            "folded": folded,
        });
        self.sink.event(
            &self.id,
            EVENT_ALGORITHM_RUN,
            STATUS_WARNING,
            details.to_string().as_bytes(),
        );
    }

    /// Flushes partial lines and a pending folded stderr event.
    pub(crate) fn finish(&self) {
        lock(&self.stdout).finish(|piece| self.sink.stdout(&self.id, piece));
        let mut state = lock(&self.stderr);
        let mut rest = Vec::new();
        state.chunker.finish(|piece| rest = piece.to_vec());
        if !rest.is_empty() {
            self.stderr_piece(&mut state, &rest);
        }
        if state.suppressed > 0 {
            let last = std::mem::take(&mut state.last_suppressed);
            // The last folded piece stands for itself: it is not folded.
            self.stderr_event(&last, state.suppressed - 1);
            state.suppressed = 0;
        }
    }

    /// Forgets the stderr kept for error messages (between steps, so that
    /// pip's warnings are not quoted for the algorithm).
    pub(crate) fn clear_tail(&self) {
        lock(&self.stderr).tail.clear();
    }

    /// The last non-empty line(s) of stderr, at most [`TAIL_LINES`] lines and
    /// [`TAIL_QUOTE`] bytes, joined with " | ".
    pub(crate) fn stderr_tail(&self) -> String {
        let state = lock(&self.stderr);
        let bytes: Vec<u8> = state.tail.iter().copied().collect();
        drop(state);
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        let joined = lines[start..].join(" | ");
        if joined.len() <= TAIL_QUOTE {
            return joined;
        }
        let mut from = joined.len() - TAIL_QUOTE;
        while !joined.is_char_boundary(from) {
            from += 1;
        }
        format!("...{}", &joined[from..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn chunks(max: usize, inputs: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut c = LineChunker::new(max);
        let mut out = Vec::new();
        for i in inputs {
            c.push(i, |p| out.push(p.to_vec()));
        }
        c.finish(|p| out.push(p.to_vec()));
        out
    }

    #[test]
    fn lines_are_pieces_and_long_lines_are_cut_at_the_limit() {
        let out = chunks(8, &[b"ab\ncd", b"e\n0123456789\n"]);
        assert_eq!(
            out,
            vec![
                b"ab\n".to_vec(),
                b"cde\n".to_vec(),
                b"01234567".to_vec(),
                b"89\n".to_vec()
            ]
        );
    }

    #[test]
    fn a_cut_does_not_split_a_utf8_character() {
        // "é" is 2 bytes: a cut at 5 would split the third one.
        let text = "ééééé";
        let out = chunks(5, &[text.as_bytes()]);
        for piece in &out {
            assert!(std::str::from_utf8(piece).is_ok(), "{piece:?}");
            assert!(piece.len() <= 5);
        }
        assert_eq!(out.concat(), text.as_bytes());
    }

    #[test]
    fn stderr_events_are_rate_limited_and_folded() {
        let sink = Arc::new(MemorySink::new());
        let out = RunOutput::new("c", sink.clone(), Duration::from_secs(3600));
        for i in 0..100 {
            out.stderr(format!("line {i}\n").as_bytes());
        }
        out.finish();
        let events = sink.events("c");
        assert_eq!(events.len(), 2, "{events:?}");
        let first: serde_json::Value = serde_json::from_slice(&events[0].2).unwrap();
        assert_eq!(first["stderr"], "line 0");
        let last: serde_json::Value = serde_json::from_slice(&events[1].2).unwrap();
        assert_eq!(last["stderr"], "line 99");
        assert_eq!(last["folded"], 98);
        assert_eq!(
            sink.stderr("c").len(),
            (0..100)
                .map(|i: i32| format!("line {i}\n").len())
                .sum::<usize>()
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let sink = Arc::new(MemorySink::new());
        let out = RunOutput::new("c", sink, Duration::ZERO);
        out.stderr(b"one\ntwo\n\nthree\nfour\n");
        assert_eq!(out.stderr_tail(), "two | three | four");
        out.stderr(&[b'x'; 2000]);
        let tail = out.stderr_tail();
        assert!(
            tail.starts_with("...") && tail.len() == 3 + TAIL_QUOTE,
            "{tail}"
        );
    }
}
