//! Provider identity for the agent: the keys that a computation manifest
//! declares, the canonical request that every `Algo`, `Data` and `Result`
//! call signs, and the agent's check of it — signature by the key declared
//! for the role, fresh timestamp, nonce never seen before.
//!
//! - [`keys`]: public keys (DER SubjectPublicKeyInfo, as in the manifest)
//!   and private keys (PEM or DER: PKCS#8, SEC1, PKCS#1), signing and
//!   verification for RSA, ECDSA P-256/P-384 and Ed25519.
//! - [`request`]: the canonical request and its byte encoding.
//! - [`verify`]: roles, the verifier with its replay cache, the gRPC
//!   metadata, and the Go CLI's legacy role-string signatures.
//!
//! ```
//! use std::time::SystemTime;
//! use cocos_auth::*;
//!
//! let provider = PrivateKey::generate(KeyType::Ed25519).unwrap();
//! let verifier = Verifier::new(
//!     "c1",
//!     vec![DeclaredKey { role: Role::AlgorithmProvider, key: provider.public() }],
//!     Policy::default(),
//! );
//! let request = CanonicalRequest::new(Rpc::Algo, "c1", "", Some([0; 32]), None).unwrap();
//! let metadata = AuthMetadata {
//!     cocos_auth: vec![auth_metadata_value(&request, &provider)],
//!     ..Default::default()
//! };
//! let now = SystemTime::now();
//! assert!(verifier.verify(Rpc::Algo, &metadata, now).is_ok());
//! // The same request again is a replay.
//! assert_eq!(verifier.verify(Rpc::Algo, &metadata, now), Err(AuthError::Replayed));
//! ```

pub mod keys;
pub mod request;
pub mod verify;

pub use keys::{KeyError, KeyType, PrivateKey, PublicKey};
pub use request::{CanonicalRequest, RequestError, Rpc};
pub use verify::{
    AUTH_METADATA, AuthError, AuthMetadata, Authorization, DeclaredKey, LEGACY_SIGNATURE_METADATA,
    LEGACY_USER_ID_METADATA, Policy, Role, Verifier, auth_metadata_value,
    parse_auth_metadata_value,
};
