//! Reassembly of a manifest sent as `RunReqChunks` (agent-api.md §2.1): the
//! service proto-marshals a `ComputationRunReq` and sends it in pieces of
//! at most 1 MiB, all with the computation's id, the last one flagged
//! `is_last` (and possibly empty).
//!
//! Unlike the Go agent, every failure concerns one id only: a buffer that
//! does not decode, grows past its cap, or would exceed the number of
//! requests assembled at once is refused with an error naming that id, and
//! the caller goes on reading the stream. A partial request with no chunk
//! for [`ReassemblyLimits::idle_timeout`] (30 s) is dropped. The clock is a
//! parameter, so that tests (and fuzzing) control it.
//!
//! ```
//! use std::time::Instant;
//! use cocos_cvms::reassembly::{Reassembler, ReassemblyLimits};
//! use cocos_proto::cvms::{ComputationRunReq, RunReqChunks};
//! use cocos_proto::prost::Message;
//!
//! let bytes = ComputationRunReq { id: "c1".into(), ..Default::default() }.encode_to_vec();
//! let (head, tail) = bytes.split_at(2);
//! let mut r = Reassembler::new(ReassemblyLimits::default());
//! let now = Instant::now();
//! let chunk = |data: &[u8], is_last| RunReqChunks { data: data.to_vec(), id: "c1".into(), is_last };
//! assert_eq!(r.push(chunk(head, false), now).unwrap(), None);
//! assert_eq!(r.push(chunk(tail, false), now).unwrap(), None);
//! let req = r.push(chunk(&[], true), now).unwrap().unwrap();
//! assert_eq!(req.id, "c1");
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cocos_proto::cvms::{ComputationRunReq, RunReqChunks};
use prost::Message;

/// Bounds on what the reassembler holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Most bytes one request may reach. Default 16 MiB: a manifest is keys
    /// and hashes, a few KiB per party.
    pub max_bytes: usize,
    /// Most requests assembled at once. Default 8.
    pub max_ids: usize,
    /// A partial request with no chunk for this long is dropped. Default
    /// 30 s (agent-api.md §2.1).
    pub idle_timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            max_ids: 8,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why one request could not be reassembled; the others are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    /// The request grew past [`ReassemblyLimits::max_bytes`]; its chunks so
    /// far are dropped.
    #[error("manifest {id:?} exceeds {limit} bytes; its chunks are dropped")]
    TooLarge {
        /// The computation id.
        id: String,
        /// The cap.
        limit: usize,
    },
    /// [`ReassemblyLimits::max_ids`] requests are being assembled already.
    #[error("manifest {id:?} refused: {limit} manifests are already being reassembled")]
    TooManyIds {
        /// The computation id.
        id: String,
        /// The cap.
        limit: usize,
    },
    /// The complete buffer is not a `cvms.ComputationRunReq`.
    #[error("received manifest {id:?} may be corrupted: {reason}")]
    Corrupt {
        /// The computation id.
        id: String,
        /// The decoder's complaint.
        reason: String,
    },
}

impl ReassemblyError {
    /// The computation id the error is about.
    pub fn id(&self) -> &str {
        match self {
            Self::TooLarge { id, .. } | Self::TooManyIds { id, .. } | Self::Corrupt { id, .. } => {
                id
            }
        }
    }
}

#[derive(Debug)]
struct Partial {
    data: Vec<u8>,
    last_chunk: Instant,
}

/// Chunks in, whole `ComputationRunReq`s out; see the module documentation.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partial: HashMap<String, Partial>,
}

impl Reassembler {
    /// An empty reassembler with these limits.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            partial: HashMap::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ReassemblyLimits {
        &self.limits
    }

    /// Adds one chunk received at `now`. Returns the request when this chunk
    /// completes it; drops expired partial requests first.
    pub fn push(
        &mut self,
        chunk: RunReqChunks,
        now: Instant,
    ) -> Result<Option<ComputationRunReq>, ReassemblyError> {
        for id in self.expire(now) {
            tracing::warn!(computation_id = %id, "partial manifest dropped: no chunk for 30 s");
        }
        let RunReqChunks { data, id, is_last } = chunk;
        if !self.partial.contains_key(&id) && self.partial.len() >= self.limits.max_ids {
            return Err(ReassemblyError::TooManyIds {
                id,
                limit: self.limits.max_ids,
            });
        }
        let held = self.partial.get(&id).map_or(0, |p| p.data.len());
        if held.saturating_add(data.len()) > self.limits.max_bytes {
            self.partial.remove(&id);
            return Err(ReassemblyError::TooLarge {
                id,
                limit: self.limits.max_bytes,
            });
        }
        if is_last {
            let mut buf = self.partial.remove(&id).map(|p| p.data).unwrap_or_default();
            buf.extend_from_slice(&data);
            return match ComputationRunReq::decode(buf.as_slice()) {
                Ok(req) => Ok(Some(req)),
                Err(e) => Err(ReassemblyError::Corrupt {
                    id,
                    reason: e.to_string(),
                }),
            };
        }
        let p = self.partial.entry(id).or_insert_with(|| Partial {
            data: Vec::new(),
            last_chunk: now,
        });
        p.data.extend_from_slice(&data);
        p.last_chunk = now;
        Ok(None)
    }

    /// Drops every partial request whose last chunk is
    /// [`ReassemblyLimits::idle_timeout`] or more before `now`; returns
    /// their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.limits.idle_timeout;
        let mut gone: Vec<String> = self
            .partial
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_chunk) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        gone.sort();
        for id in &gone {
            self.partial.remove(id);
        }
        gone
    }

    /// Ids of the requests being assembled, sorted.
    pub fn pending(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.partial.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Bytes held across all partial requests.
    pub fn held_bytes(&self) -> usize {
        self.partial.values().map(|p| p.data.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use cocos_proto::cvms::{Algorithm, Dataset};

    fn manifest(id: &str) -> ComputationRunReq {
        ComputationRunReq {
            id: id.into(),
            name: "n".into(),
            datasets: vec![Dataset {
                hash: vec![7; 32],
                filename: "d.csv".into(),
                ..Default::default()
            }],
            algorithm: Some(Algorithm {
                hash: vec![1; 32],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn chunk(id: &str, data: &[u8], is_last: bool) -> RunReqChunks {
        RunReqChunks {
            data: data.to_vec(),
            id: id.into(),
            is_last,
        }
    }

    fn small() -> ReassemblyLimits {
        ReassemblyLimits {
            max_bytes: 1024,
            max_ids: 2,
            idle_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn chunks_with_an_empty_last_one_reassemble() {
        let req = manifest("c1");
        let bytes = req.encode_to_vec();
        let mut r = Reassembler::new(small());
        let t = Instant::now();
        for piece in bytes.chunks(5) {
            assert_eq!(r.push(chunk("c1", piece, false), t).unwrap(), None);
        }
        assert_eq!(r.pending(), vec!["c1".to_string()]);
        assert_eq!(r.push(chunk("c1", &[], true), t).unwrap(), Some(req));
        assert!(r.pending().is_empty());
    }

    #[test]
    fn interleaved_ids_are_kept_apart() {
        let (a, b) = (manifest("a"), manifest("b"));
        let (ab, bb) = (a.encode_to_vec(), b.encode_to_vec());
        let mut r = Reassembler::new(small());
        let t = Instant::now();
        let (a1, a2) = ab.split_at(10);
        let (b1, b2) = bb.split_at(7);
        r.push(chunk("a", a1, false), t).unwrap();
        r.push(chunk("b", b1, false), t).unwrap();
        assert_eq!(r.push(chunk("b", b2, true), t).unwrap(), Some(b));
        assert_eq!(r.push(chunk("a", a2, true), t).unwrap(), Some(a));
    }

    #[test]
    fn a_partial_request_is_dropped_after_30_s_without_a_chunk() {
        let bytes = manifest("c1").encode_to_vec();
        let (head, tail) = bytes.split_at(10);
        let mut r = Reassembler::new(small());
        let t0 = Instant::now();
        r.push(chunk("c1", head, false), t0).unwrap();
        assert!(r.expire(t0 + Duration::from_millis(29_999)).is_empty());
        assert_eq!(
            r.expire(t0 + Duration::from_secs(30)),
            vec!["c1".to_string()]
        );
        // The tail alone is not a manifest: the head was dropped.
        let e = r
            .push(chunk("c1", tail, true), t0 + Duration::from_secs(31))
            .unwrap_err();
        assert!(
            matches!(e, ReassemblyError::Corrupt { ref id, .. } if id == "c1"),
            "{e}"
        );
    }

    #[test]
    fn each_chunk_restarts_the_30_s() {
        let bytes = manifest("c1").encode_to_vec();
        let mut r = Reassembler::new(small());
        let t0 = Instant::now();
        let pieces: Vec<_> = bytes.chunks(4).collect();
        for (i, p) in pieces.iter().enumerate() {
            let at = t0 + Duration::from_secs(20 * i as u64);
            assert_eq!(r.push(chunk("c1", p, false), at).unwrap(), None);
        }
        let at = t0 + Duration::from_secs(20 * pieces.len() as u64);
        assert!(r.push(chunk("c1", &[], true), at).unwrap().is_some());
    }

    #[test]
    fn a_corrupt_buffer_is_an_error_for_its_id_only() {
        let good = manifest("good").encode_to_vec();
        let mut r = Reassembler::new(small());
        let t = Instant::now();
        r.push(chunk("good", &good[..8], false), t).unwrap();
        // 0xff is a varint that never ends: not a protobuf message.
        let e = r.push(chunk("bad", &[0xff; 12], true), t).unwrap_err();
        assert_eq!(e.id(), "bad");
        assert!(e.to_string().contains("may be corrupted"));
        assert!(
            r.push(chunk("good", &good[8..], true), t)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_request_over_the_byte_cap_is_dropped() {
        let mut r = Reassembler::new(small());
        let t = Instant::now();
        r.push(chunk("big", &[0; 1000], false), t).unwrap();
        let e = r.push(chunk("big", &[0; 25], false), t).unwrap_err();
        assert_eq!(
            e,
            ReassemblyError::TooLarge {
                id: "big".into(),
                limit: 1024
            }
        );
        assert!(r.pending().is_empty());
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn more_ids_than_the_cap_are_refused() {
        let mut r = Reassembler::new(small());
        let t = Instant::now();
        r.push(chunk("a", &[0], false), t).unwrap();
        r.push(chunk("b", &[0], false), t).unwrap();
        let e = r.push(chunk("c", &[0], false), t).unwrap_err();
        assert!(matches!(e, ReassemblyError::TooManyIds { limit: 2, .. }));
        // Known ids still progress, and an expired one makes room.
        r.push(chunk("a", &[0], false), t + Duration::from_secs(20))
            .unwrap();
        r.push(chunk("c", &[0], false), t + Duration::from_secs(31))
            .unwrap();
        assert_eq!(r.pending(), vec!["a".to_string(), "c".to_string()]);
    }
}
