//! SEV, SEV-ES and SEV-SNP launch digests of OVMF direct boots (with
//! kernel, initrd and command line hashes) and of COCONUT-SVSM boots,
//! bit-identical to sev-snp-measure 0.0.13.
//!
//! Layers, lowest first:
//! - [`page_info`]: the firmware's PAGE_INFO structure and the running
//!   launch digest ([`GuestContext`]).
//! - [`vmsa`]: the VMSA page ([`SevEsSaveArea`]) and the reset state of
//!   each hypervisor ([`VmmType`]).
//! - [`ovmf`]: the firmware image, its GUIDed table and SEV metadata
//!   ([`FirmwareImage`]).
//! - [`hashes`]: the kernel-hashes table QEMU writes ([`KernelHashes`]).
//! - [`cpu`]: vCPU signatures.
//! - [`launch`]: what each mode measures ([`launch_digest`]).
//!
//! ```no_run
//! use cocos_measure::snp::{self, FirmwareImage, GuestMode, KernelHashes, LaunchConfig, VmmType};
//! use std::path::Path;
//!
//! let ovmf = FirmwareImage::parse_ovmf(std::fs::read("OVMF.fd")?)?;
//! let hashes = KernelHashes::from_files(Path::new("vmlinuz"), None, Some(b"console=ttyS0"))?;
//! let launch = snp::launch_digest(&LaunchConfig {
//!     mode: GuestMode::Snp,
//!     ovmf: &ovmf,
//!     vcpus: 4,
//!     vcpu_sig: snp::cpu::model_signature("EPYC-Milan").unwrap_or_default(),
//!     vmm: VmmType::Qemu,
//!     guest_features: 0x1,
//!     kernel_hashes: Some(hashes),
//!     ovmf_hash: None,
//!     svsm: None,
//! })?;
//! println!("{}", launch.measurement.to_hex());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cpu;
pub mod error;
pub mod hashes;
pub mod launch;
pub mod ovmf;
pub mod page_info;
pub mod vmsa;

pub use error::SnpError;
pub use hashes::KernelHashes;
pub use launch::{
    GuestMode, Launch, LaunchConfig, MAX_VCPUS, Measurement, VmsaPages, launch_digest,
    snp_firmware_digest, svsm_end_gpa,
};
pub use ovmf::{FirmwareImage, MetadataSection, OvmfError, SectionType};
pub use page_info::{GuestContext, LaunchDigest, PageInfo, PageType};
pub use vmsa::{SevEsSaveArea, VmcbSegment, VmmType};
