//! What a verifier must expect to see from a confidential VM, computed
//! before the VM starts.
//!
//! - [`verity`]: dm-verity hash trees and root hashes, byte-identical to
//!   `veritysetup`.
//! - [`snp`]: SEV, SEV-ES and SEV-SNP launch digests of OVMF direct boots
//!   (and COCONUT-SVSM boots), bit-identical to sev-snp-measure.
//! - [`igvm`]: SEV-SNP launch digests and TDX MRTD of IGVM files.
//! - [`idblock`]: SEV-SNP ID blocks and their signatures.
//! - [`cmdline`]: the kernel command line cocos-init boots with
//!   (`roothash=` and its options), as the VM and a verifier both read it.
//!
//! The binary `cocos-measure` is a thin command-line front over this
//! library; build with `default-features = false` to use the library
//! without it.

#![forbid(unsafe_code)]

pub mod cmdline;
pub mod idblock;
pub mod igvm;
pub mod snp;
pub mod verity;
