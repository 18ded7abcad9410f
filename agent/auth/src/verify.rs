//! The agent's side: checks a call's signature against the keys the
//! manifest declares, each bound to a role, and refuses replays.
//!
//! # Metadata
//!
//! - [`AUTH_METADATA`] (`cocos-auth`): exactly one value,
//!   `base64(request) "." base64(signature)`, standard base64 with padding
//!   (RFC 4648 §4), where `request` is the [`CanonicalRequest`] encoding and
//!   `signature` the signer's signature of those bytes
//!   ([`crate::keys`] lists the schemes).
//! - Legacy, from the Go CLI (agent-api.md §2.4): [`LEGACY_SIGNATURE_METADATA`]
//!   (`signature`, standard base64 of a signature of the constant role
//!   string) and `user-id` (ignored). Accepted only when
//!   [`Policy::legacy`] is set; such a signature is replayable.
//!
//! # Checks, in order
//!
//! 1. the request decodes, is for the called RPC and for this computation;
//! 2. its timestamp is within [`Policy::window`] of the agent's clock, in
//!    either direction;
//! 3. its signature verifies with the key declared for the role the RPC
//!    needs: the algorithm's key for `Algo`, the key of the dataset named in
//!    the request for `Data`, any result consumer's key for `Result`;
//! 4. its nonce was not seen within the window (checked last, so that only
//!    authenticated requests take room in the cache).
//!
//! The service then checks what streamed against the request with
//! [`Authorization::check_payload`] and [`Authorization::check_dataset`].

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::keys::PublicKey;
use crate::request::{CanonicalRequest, RequestError, Rpc, unix_ms};

/// gRPC metadata key of a signed canonical request.
pub const AUTH_METADATA: &str = "cocos-auth";
/// gRPC metadata key of the Go CLI's role-string signature.
pub const LEGACY_SIGNATURE_METADATA: &str = "signature";
/// gRPC metadata key of the Go CLI's role name (sent, never trusted).
pub const LEGACY_USER_ID_METADATA: &str = "user-id";

/// What a declared key may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Uploads the algorithm.
    AlgorithmProvider,
    /// Uploads the dataset with this filename.
    DataProvider {
        /// The dataset's `filename` in the manifest.
        dataset: String,
    },
    /// Downloads the result; the index in `result_consumers`.
    Consumer {
        /// Position in the manifest's `result_consumers`.
        index: usize,
    },
}

impl Role {
    /// The constant string the Go CLI signs for this role.
    pub fn legacy_string(&self) -> &'static str {
        match self {
            Role::AlgorithmProvider => "algorithm-provider",
            Role::DataProvider { .. } => "data-provider",
            Role::Consumer { .. } => "consumer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::AlgorithmProvider => f.write_str("the algorithm"),
            Role::DataProvider { dataset } => write!(f, "dataset {dataset:?}"),
            Role::Consumer { index } => write!(f, "result consumer {index}"),
        }
    }
}

/// A key the manifest declares, with its role.
#[derive(Debug, Clone)]
pub struct DeclaredKey {
    /// What it may do.
    pub role: Role,
    /// The key.
    pub key: PublicKey,
}

/// Limits of the verifier; from the agent's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How far a request's timestamp may be from the agent's clock.
    pub window: Duration,
    /// Most nonces remembered at once; a request past it is refused
    /// rather than an unexpired nonce forgotten.
    pub replay_capacity: usize,
    /// Accept the Go CLI's role-string signatures.
    pub legacy: bool,
}

impl Default for Policy {
    /// Five minutes, 65,536 nonces (about 3 MiB), no legacy signatures.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            replay_capacity: 65_536,
            legacy: false,
        }
    }
}

/// Why a call is refused. Every variant maps to gRPC `UNAUTHENTICATED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither `cocos-auth` nor (legacy) `signature` metadata.
    #[error("missing metadata: no `cocos-auth` signature")]
    Missing,
    /// More than one value of a metadata key.
    #[error("invalid metadata: {0} values of `{1}`, expected one")]
    Multiple(usize, &'static str),
    /// The `cocos-auth` value is not `base64.base64`.
    #[error("invalid metadata: `cocos-auth` is not base64(request).base64(signature)")]
    Malformed,
    /// The request bytes do not decode.
    #[error("invalid metadata: {0}")]
    Request(#[from] RequestError),
    /// Signed for another RPC.
    #[error("request signed for {signed}, presented to {called}")]
    WrongRpc {
        /// In the request.
        signed: Rpc,
        /// Called.
        called: Rpc,
    },
    /// Signed for another computation.
    #[error("request signed for computation {signed:?}, this is computation {expected:?}")]
    WrongComputation {
        /// In the request.
        signed: String,
        /// This agent's.
        expected: String,
    },
    /// Timestamp outside the window.
    #[error(
        "stale timestamp (signed at {signed_ms} ms, agent clock {now_ms} ms, allowed ±{window_s} s)"
    )]
    Stale {
        /// In the request, Unix ms.
        signed_ms: u64,
        /// The agent's clock, Unix ms.
        now_ms: u64,
        /// The window in seconds.
        window_s: u64,
    },
    /// The nonce was seen before within the window.
    #[error("replayed nonce")]
    Replayed,
    /// Too many requests within one window.
    #[error("too many signed requests within the freshness window (replay cache full)")]
    ReplayCacheFull,
    /// A `Data` request for a filename the manifest does not declare.
    #[error("dataset {0:?} is not declared in the manifest")]
    UndeclaredDataset(String),
    /// No key is declared for the role (e.g. a manifest without consumers).
    #[error("no key is declared for {0}")]
    NoKeyFor(String),
    /// Signed by a declared key of another role.
    #[error("signature by a key not declared for {expected} (it is the key of {signer})")]
    OtherRole {
        /// The role the RPC needs.
        expected: String,
        /// The role whose key made the signature.
        signer: String,
    },
    /// Signed by no declared key.
    #[error("signature by an undeclared key (expected the key of {expected})")]
    UndeclaredKey {
        /// The role the RPC needs.
        expected: String,
    },
    /// A legacy signature while legacy authentication is off.
    #[error(
        "role-string signature (metadata `signature`) refused: legacy authentication is not enabled"
    )]
    LegacyDisabled,
    /// The streamed payload's hash differs from the signed one.
    #[error("payload SHA3-256 {actual} differs from the signed {signed}")]
    PayloadMismatch {
        /// Hex, signed.
        signed: String,
        /// Hex, streamed.
        actual: String,
    },
    /// The streamed filename differs from the signed resource, or a legacy
    /// signer is not the dataset's provider.
    #[error("upload of dataset {uploaded:?} is not authorised: {reason}")]
    DatasetMismatch {
        /// Filename of the upload.
        uploaded: String,
        /// Why.
        reason: String,
    },
}

/// The metadata values of one call that matter here, as the gRPC layer
/// extracts them (ASCII values).
#[derive(Debug, Default, Clone)]
pub struct AuthMetadata {
    /// Every `cocos-auth` value.
    pub cocos_auth: Vec<String>,
    /// Every legacy `signature` value.
    pub signature: Vec<String>,
}

/// The value of [`AUTH_METADATA`] for `request` signed with `key`.
pub fn auth_metadata_value(request: &CanonicalRequest, key: &crate::PrivateKey) -> String {
    let bytes = request.encode();
    let sig = key.sign(&bytes);
    format!("{}.{}", STANDARD.encode(&bytes), STANDARD.encode(sig))
}

/// Splits an [`AUTH_METADATA`] value into request bytes and signature.
pub fn parse_auth_metadata_value(value: &str) -> Result<(Vec<u8>, Vec<u8>), AuthError> {
    let (req, sig) = value.split_once('.').ok_or(AuthError::Malformed)?;
    let req = STANDARD.decode(req).map_err(|_| AuthError::Malformed)?;
    let sig = STANDARD.decode(sig).map_err(|_| AuthError::Malformed)?;
    Ok((req, sig))
}

/// A call that passed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// A signed canonical request.
    Signed {
        /// The request as signed.
        request: CanonicalRequest,
        /// Whose key signed it.
        signer: Role,
    },
    /// A legacy role-string signature: every declared role whose key
    /// verifies it.
    Legacy {
        /// Roles of the keys that verify the signature.
        signers: Vec<Role>,
    },
}

impl Authorization {
    /// For uploads, after the stream: the streamed bytes' SHA3-256 must be
    /// the signed one. (Legacy requests carry no hash; the manifest's hash
    /// check still applies.)
    pub fn check_payload(&self, actual: &[u8; 32]) -> Result<(), AuthError> {
        match self {
            Authorization::Signed {
                request:
                    CanonicalRequest {
                        payload_sha3: Some(signed),
                        ..
                    },
                ..
            } if signed != actual => Err(AuthError::PayloadMismatch {
                signed: hex(signed),
                actual: hex(actual),
            }),
            _ => Ok(()),
        }
    }

    /// For `Data`, once the filename is known: it must be the dataset the
    /// signer is declared for.
    pub fn check_dataset(&self, filename: &str) -> Result<(), AuthError> {
        let mismatch = |reason: String| {
            Err(AuthError::DatasetMismatch {
                uploaded: filename.to_string(),
                reason,
            })
        };
        match self {
            Authorization::Signed { request, .. } if request.resource != filename => mismatch(
                format!("the request was signed for dataset {:?}", request.resource),
            ),
            Authorization::Signed { .. } => Ok(()),
            Authorization::Legacy { signers } => {
                if signers
                    .iter()
                    .any(|r| matches!(r, Role::DataProvider { dataset } if dataset == filename))
                {
                    Ok(())
                } else {
                    mismatch("signature by a key not declared for this dataset".into())
                }
            }
        }
    }

    /// The consumer index for `Result`, if the signer is a consumer.
    pub fn consumer(&self) -> Option<usize> {
        let roles: &[Role] = match self {
            Authorization::Signed { signer, .. } => std::slice::from_ref(signer),
            Authorization::Legacy { signers } => signers,
        };
        roles.iter().find_map(|r| match r {
            Role::Consumer { index } => Some(*index),
            _ => None,
        })
    }
}

/// Verifies calls for one computation. Shareable between tasks (`&self`).
#[derive(Debug)]
pub struct Verifier {
    computation_id: String,
    keys: Vec<DeclaredKey>,
    policy: Policy,
    replay: Mutex<ReplayCache>,
}

impl Verifier {
    /// A verifier for `computation_id` with the manifest's declared keys.
    pub fn new(computation_id: impl Into<String>, keys: Vec<DeclaredKey>, policy: Policy) -> Self {
        Self {
            computation_id: computation_id.into(),
            keys,
            policy,
            replay: Mutex::new(ReplayCache::default()),
        }
    }

    /// Authenticates a call of `rpc` at time `now` (see the module
    /// documentation for the checks).
    pub fn verify(
        &self,
        rpc: Rpc,
        metadata: &AuthMetadata,
        now: SystemTime,
    ) -> Result<Authorization, AuthError> {
        match metadata.cocos_auth.len() {
            0 => {}
            1 => return self.verify_signed(rpc, &metadata.cocos_auth[0], now),
            n => return Err(AuthError::Multiple(n, AUTH_METADATA)),
        }
        match metadata.signature.len() {
            0 => Err(AuthError::Missing),
            _ if !self.policy.legacy => Err(AuthError::LegacyDisabled),
            1 => self.verify_legacy(rpc, &metadata.signature[0]),
            n => Err(AuthError::Multiple(n, LEGACY_SIGNATURE_METADATA)),
        }
    }

    fn verify_signed(
        &self,
        rpc: Rpc,
        value: &str,
        now: SystemTime,
    ) -> Result<Authorization, AuthError> {
        let (bytes, signature) = parse_auth_metadata_value(value)?;
        let request = CanonicalRequest::decode(&bytes)?;
        if request.rpc != rpc {
            return Err(AuthError::WrongRpc {
                signed: request.rpc,
                called: rpc,
            });
        }
        if request.computation_id != self.computation_id {
            return Err(AuthError::WrongComputation {
                signed: request.computation_id,
                expected: self.computation_id.clone(),
            });
        }
        let now_ms = unix_ms(now);
        let window_ms = u64::try_from(self.policy.window.as_millis()).unwrap_or(u64::MAX);
        if request.timestamp_ms.abs_diff(now_ms) > window_ms {
            return Err(AuthError::Stale {
                signed_ms: request.timestamp_ms,
                now_ms,
                window_s: self.policy.window.as_secs(),
            });
        }
        let (expected, candidates) = self.candidates(rpc, &request.resource)?;
        let signer = candidates
            .into_iter()
            .find(|k| k.key.verify(&bytes, &signature))
            .map(|k| k.role.clone())
            .ok_or_else(|| self.wrong_signer(&expected, |k| k.verify(&bytes, &signature)))?;
        self.replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                request.nonce,
                request.timestamp_ms,
                now_ms.saturating_sub(window_ms),
                self.policy.replay_capacity,
            )?;
        Ok(Authorization::Signed { request, signer })
    }

    fn verify_legacy(&self, rpc: Rpc, value: &str) -> Result<Authorization, AuthError> {
        let signature = STANDARD.decode(value).map_err(|_| AuthError::Malformed)?;
        let role_string = match rpc {
            Rpc::Algo => "algorithm-provider",
            Rpc::Data => "data-provider",
            Rpc::Result => "consumer",
        };
        let signers: Vec<Role> = self
            .keys
            .iter()
            .filter(|k| k.role.legacy_string() == role_string)
            .filter(|k| k.key.verify_legacy(role_string.as_bytes(), &signature))
            .map(|k| k.role.clone())
            .collect();
        if signers.is_empty() {
            let expected = match rpc {
                Rpc::Algo => Role::AlgorithmProvider.to_string(),
                Rpc::Data => "a dataset".into(),
                Rpc::Result => "a result consumer".into(),
            };
            return Err(self.wrong_signer(&expected, |k| {
                k.verify_legacy(role_string.as_bytes(), &signature)
            }));
        }
        Ok(Authorization::Legacy { signers })
    }

    /// The role name the RPC needs and the keys declared for it.
    fn candidates(
        &self,
        rpc: Rpc,
        resource: &str,
    ) -> Result<(String, Vec<&DeclaredKey>), AuthError> {
        let (expected, keys): (String, Vec<&DeclaredKey>) = match rpc {
            Rpc::Algo => (
                Role::AlgorithmProvider.to_string(),
                self.keys
                    .iter()
                    .filter(|k| k.role == Role::AlgorithmProvider)
                    .collect(),
            ),
            Rpc::Data => {
                let keys: Vec<_> = self
                    .keys
                    .iter()
                    .filter(|k| matches!(&k.role, Role::DataProvider { dataset } if dataset == resource))
                    .collect();
                if keys.is_empty() {
                    return Err(AuthError::UndeclaredDataset(resource.to_string()));
                }
                (
                    Role::DataProvider {
                        dataset: resource.to_string(),
                    }
                    .to_string(),
                    keys,
                )
            }
            Rpc::Result => (
                "a result consumer".into(),
                self.keys
                    .iter()
                    .filter(|k| matches!(k.role, Role::Consumer { .. }))
                    .collect(),
            ),
        };
        if keys.is_empty() {
            return Err(AuthError::NoKeyFor(expected));
        }
        Ok((expected, keys))
    }

    /// The error for a signature that no key of the expected role
    /// verifies: name the role whose key did make it, if any.
    fn wrong_signer(&self, expected: &str, verifies: impl Fn(&PublicKey) -> bool) -> AuthError {
        match self.keys.iter().find(|k| verifies(&k.key)) {
            Some(k) => AuthError::OtherRole {
                expected: expected.to_string(),
                signer: k.role.to_string(),
            },
            None => AuthError::UndeclaredKey {
                expected: expected.to_string(),
            },
        }
    }
}

/// Nonces seen within the window, each with its request's timestamp.
/// Entries whose timestamp falls out of the window are dropped on insert:
/// such a request fails the freshness check anyway.
#[derive(Debug, Default)]
struct ReplayCache {
    seen: HashSet<[u8; 16]>,
    by_time: BTreeSet<(u64, [u8; 16])>,
}

impl ReplayCache {
    fn insert(
        &mut self,
        nonce: [u8; 16],
        timestamp_ms: u64,
        oldest_fresh_ms: u64,
        capacity: usize,
    ) -> Result<(), AuthError> {
        while let Some(&(t, n)) = self.by_time.first() {
            if t >= oldest_fresh_ms {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&n);
        }
        if self.seen.contains(&nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= capacity {
            return Err(AuthError::ReplayCacheFull);
        }
        self.seen.insert(nonce);
        self.by_time.insert((timestamp_ms, nonce));
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
