//! The canonical request: what a provider or consumer signs for each
//! `Algo`, `Data` and `Result` call, so that a signature authorises one
//! call of one computation once.
//!
//! # Encoding (version 1)
//!
//! Big-endian integers, fields in this order, no padding, nothing after the
//! last field:
//!
//! | bytes | field | rule |
//! | --- | --- | --- |
//! | 8 | magic `COCOSREQ` | |
//! | 1 | version | 1 |
//! | 1 | RPC | 1 `Algo`, 2 `Data`, 3 `Result` |
//! | 8 | timestamp | Unix time in milliseconds (u64) |
//! | 16 | nonce | random, fresh for every request |
//! | 2 + n | computation id | u16 length n ≤ 1024, UTF-8 |
//! | 2 + n | resource | u16 length n ≤ 4096, UTF-8: the dataset's filename for `Data`, empty otherwise |
//! | 1 (+ 32) | payload | 0 absent, 1 followed by the SHA3-256 of the uploaded bytes (the algorithm for `Algo`, the dataset — the zip for a directory — for `Data`); present for uploads, absent for `Result` |
//! | 1 (+ 32) | requirements | 0 absent, 1 followed by the SHA3-256 of requirements.txt; only `Algo` may carry it |
//!
//! Every field has a fixed size or a length prefix, so two different
//! requests never encode to the same bytes, and decoding accepts exactly
//! the encodings [`CanonicalRequest::encode`] produces.
//!
//! ```
//! use cocos_auth::{CanonicalRequest, Rpc};
//!
//! let req = CanonicalRequest {
//!     rpc: Rpc::Data,
//!     computation_id: "c1".into(),
//!     resource: "iris.csv".into(),
//!     payload_sha3: Some([7; 32]),
//!     requirements_sha3: None,
//!     nonce: [1; 16],
//!     timestamp_ms: 1_700_000_000_000,
//! };
//! let bytes = req.encode();
//! assert_eq!(&bytes[..8], b"COCOSREQ");
//! assert_eq!(CanonicalRequest::decode(&bytes).unwrap(), req);
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// First bytes of every encoded request.
pub const MAGIC: &[u8; 8] = b"COCOSREQ";
/// The encoding version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Longest computation id, in bytes.
pub const MAX_COMPUTATION_ID: usize = 1024;
/// Longest resource name, in bytes.
pub const MAX_RESOURCE: usize = 4096;

/// The authenticated RPCs of `agent.AgentService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// `Algo`: the algorithm upload (code 1).
    Algo,
    /// `Data`: a dataset upload (code 2).
    Data,
    /// `Result`: the result download (code 3).
    Result,
}

impl Rpc {
    /// The byte that encodes it.
    pub fn code(self) -> u8 {
        match self {
            Rpc::Algo => 1,
            Rpc::Data => 2,
            Rpc::Result => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Rpc::Algo),
            2 => Some(Rpc::Data),
            3 => Some(Rpc::Result),
            _ => None,
        }
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rpc::Algo => "Algo",
            Rpc::Data => "Data",
            Rpc::Result => "Result",
        })
    }
}

/// A request as signed; see the module documentation for its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The RPC it authorises.
    pub rpc: Rpc,
    /// The computation (manifest `id`) it is for.
    pub computation_id: String,
    /// The dataset's filename for `Data`; empty otherwise.
    pub resource: String,
    /// SHA3-256 of the uploaded payload (`Algo`, `Data`).
    pub payload_sha3: Option<[u8; 32]>,
    /// SHA3-256 of requirements.txt (`Algo` only).
    pub requirements_sha3: Option<[u8; 32]>,
    /// Random and fresh for every request.
    pub nonce: [u8; 16],
    /// When it was made: Unix time in milliseconds.
    pub timestamp_ms: u64,
}

/// Why bytes are not a canonical request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Input ended inside a field.
    #[error("canonical request truncated in {0}")]
    Truncated(&'static str),
    /// Does not start with `COCOSREQ`.
    #[error("not a canonical request (no COCOSREQ magic)")]
    Magic,
    /// A version this build does not know.
    #[error("canonical request version {0} (this agent reads version 1)")]
    Version(u8),
    /// An RPC code outside 1..=3.
    #[error("unknown RPC code {0} in canonical request")]
    Rpc(u8),
    /// A length over its limit.
    #[error("{field} of {len} bytes in canonical request (limit {max})")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string field that is not UTF-8.
    #[error("{0} in canonical request is not UTF-8")]
    Utf8(&'static str),
    /// A presence flag other than 0 or 1.
    #[error("{0} flag in canonical request is neither 0 nor 1")]
    Flag(&'static str),
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the canonical request")]
    Trailing(usize),
    /// A field present or absent against the RPC's rule.
    #[error("canonical request for {rpc}: {problem}")]
    Shape {
        /// The RPC.
        rpc: Rpc,
        /// What is wrong.
        problem: &'static str,
    },
}

impl CanonicalRequest {
    /// A request for `rpc` made now, with a fresh random nonce.
    pub fn new(
        rpc: Rpc,
        computation_id: impl Into<String>,
        resource: impl Into<String>,
        payload_sha3: Option<[u8; 32]>,
        requirements_sha3: Option<[u8; 32]>,
    ) -> Result<Self, getrandom::Error> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)?;
        Ok(Self {
            rpc,
            computation_id: computation_id.into(),
            resource: resource.into(),
            payload_sha3,
            requirements_sha3,
            nonce,
            timestamp_ms: unix_ms(SystemTime::now()),
        })
    }

    /// The bytes that are signed. Strings longer than their limit are
    /// encoded as they are and refused by [`decode`](Self::decode); use
    /// [`check_shape`](Self::check_shape) to find out first.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.computation_id.len() + self.resource.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.rpc.code());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        for s in [&self.computation_id, &self.resource] {
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        }
        for digest in [self.payload_sha3, self.requirements_sha3] {
            match digest {
                None => out.push(0),
                Some(d) => {
                    out.push(1);
                    out.extend_from_slice(&d);
                }
            }
        }
        out
    }

    /// Parses exactly one encoded request (see the module documentation).
    pub fn decode(bytes: &[u8]) -> Result<Self, RequestError> {
        let mut r = Reader(bytes);
        if r.take(8, "magic")? != MAGIC {
            return Err(RequestError::Magic);
        }
        let version = r.byte("version")?;
        if version != VERSION {
            return Err(RequestError::Version(version));
        }
        let code = r.byte("RPC")?;
        let rpc = Rpc::from_code(code).ok_or(RequestError::Rpc(code))?;
        let timestamp_ms = u64::from_be_bytes(r.array("timestamp")?);
        let nonce = r.array("nonce")?;
        let computation_id = r.string("computation id", MAX_COMPUTATION_ID)?;
        let resource = r.string("resource", MAX_RESOURCE)?;
        let payload_sha3 = r.digest("payload")?;
        let requirements_sha3 = r.digest("requirements")?;
        if !r.0.is_empty() {
            return Err(RequestError::Trailing(r.0.len()));
        }
        let req = Self {
            rpc,
            computation_id,
            resource,
            payload_sha3,
            requirements_sha3,
            nonce,
            timestamp_ms,
        };
        req.check_shape()?;
        Ok(req)
    }

    /// The rules of the encoding table: lengths within their limits, and
    /// the fields each RPC must or must not carry.
    pub fn check_shape(&self) -> Result<(), RequestError> {
        for (field, s, max) in [
            ("computation id", &self.computation_id, MAX_COMPUTATION_ID),
            ("resource", &self.resource, MAX_RESOURCE),
        ] {
            if s.len() > max {
                return Err(RequestError::TooLong {
                    field,
                    len: s.len(),
                    max,
                });
            }
        }
        let shape = |problem| {
            Err(RequestError::Shape {
                rpc: self.rpc,
                problem,
            })
        };
        match self.rpc {
            Rpc::Algo | Rpc::Data if self.payload_sha3.is_none() => {
                shape("an upload must carry the payload's SHA3-256")
            }
            Rpc::Result if self.payload_sha3.is_some() => shape("a download carries no payload"),
            Rpc::Data | Rpc::Result if self.requirements_sha3.is_some() => {
                shape("only Algo carries requirements")
            }
            Rpc::Data if self.resource.is_empty() => shape("the dataset's filename is missing"),
            Rpc::Algo | Rpc::Result if !self.resource.is_empty() => {
                shape("only Data names a resource")
            }
            _ => Ok(()),
        }
    }
}

/// Unix time in milliseconds; 0 before the epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RequestError> {
        if self.0.len() < n {
            return Err(RequestError::Truncated(field));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, RequestError> {
        Ok(self.take(1, field)?[0])
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RequestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn string(&mut self, field: &'static str, max: usize) -> Result<String, RequestError> {
        let len = usize::from(u16::from_be_bytes(self.array(field)?));
        if len > max {
            return Err(RequestError::TooLong { field, len, max });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RequestError::Utf8(field))
    }

    fn digest(&mut self, field: &'static str) -> Result<Option<[u8; 32]>, RequestError> {
        match self.byte(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.array(field)?)),
            _ => Err(RequestError::Flag(field)),
        }
    }
}
