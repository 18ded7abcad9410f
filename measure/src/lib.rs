//! What a verifier must expect to see from a confidential VM, computed
//! before the VM starts.
//!
//! Today this crate computes dm-verity hash trees and root hashes that are
//! byte-identical to `veritysetup` ([`verity`]). The binary `cocos-measure`
//! is a thin command-line front over this library; build with
//! `default-features = false` to use the library without it.

#![forbid(unsafe_code)]

pub mod verity;
