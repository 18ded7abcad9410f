//! The computation manifest: what is computed, on which datasets, by
//! whom, and for whom.
//!
//! - [`Manifest`]: the validated, typed manifest the agent acts on, built
//!   from the management service's wire message ([`Manifest::from_wire`])
//!   or from the JSON form ([`Manifest::from_json`]).
//! - [`json`]: the JSON form, byte-compatible with Go's `encoding/json`, and
//!   [`manifest_checksum`] (what `cocos-cli checksum --manifest` prints).
//! - [`hash`]: SHA3-256 of files and directories.
//! - [`zip`]: the deterministic directory zip and safe extraction.
//!
//! ```
//! use cocos_manifest::{Manifest, json::Computation};
//!
//! let err = Manifest::from_json(br#"{"id":"c1","datasets":[{"hash":[1,2,3],"filename":"a.csv"}]}"#)
//!     .unwrap_err();
//! assert!(err.to_string().contains("datasets[0].hash: 3 bytes, expected 32 (SHA3-256)"));
//! assert!(err.to_string().contains("algorithm: missing"));
//! ```

pub mod hash;
pub mod json;
pub mod zip;

mod manifest;

pub use manifest::{
    AlgoType, Algorithm, Dataset, FieldError, Manifest, ManifestError, UserKey, manifest_checksum,
};
