//! Why a launch digest cannot be computed.

use thiserror::Error;

use super::hashes::TableOffsetError;
use super::ovmf::OvmfError;

/// A launch digest that cannot be computed from the given inputs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnpError {
    /// The firmware image is malformed.
    #[error(transparent)]
    Firmware(#[from] OvmfError),
    /// SEV-SNP measures whole 4 KiB pages.
    #[error(
        "the {what} image is {len} bytes, not a non-zero multiple of 4096, so it cannot be measured as SEV-SNP pages"
    )]
    NotPageAligned {
        /// "OVMF" or "SVSM".
        what: &'static str,
        /// Its size.
        len: u64,
    },
    /// An image would be placed below guest address 0.
    #[error("{what} does not fit below 4 GiB")]
    AddressUnderflow {
        /// What does not fit.
        what: &'static str,
    },
    /// A metadata section size is not a whole number of pages.
    #[error(
        "the firmware's {kind} section at GPA {gpa:#x} has size {size}, not a multiple of 4096"
    )]
    SectionNotAligned {
        /// Section type name.
        kind: &'static str,
        /// Its GPA.
        gpa: u32,
        /// Its size.
        size: u32,
    },
    /// A metadata section type this tool (and QEMU) does not know.
    #[error("the firmware's SEV metadata has a section of unknown type {kind:#x} at GPA {gpa:#x}")]
    UnknownSection {
        /// The type value.
        kind: u32,
        /// Its GPA.
        gpa: u32,
    },
    /// A kernel was given, but the firmware has no SNP_KERNEL_HASHES
    /// section to receive its hashes.
    #[error(
        "a kernel was given, but this OVMF has no SNP_KERNEL_HASHES section in its SEV metadata, \
         so QEMU cannot pass kernel hashes to it (use an OVMF built from OvmfPkg/AmdSev)"
    )]
    NoKernelHashesSection,
    /// A kernel was given for SEV/SEV-ES, but the firmware has no
    /// kernel-hashes table.
    #[error(
        "a kernel was given, but this OVMF has no kernel-hashes table (SEV_HASH_TABLE_RV_GUID \
         entry with a non-zero address), so it cannot verify a kernel, initrd or command line"
    )]
    NoSevHashesTable,
    /// The SNP_KERNEL_HASHES section is not one page.
    #[error("the SNP_KERNEL_HASHES section has size {size}; QEMU fills exactly one 4096-byte page")]
    HashesSectionSize {
        /// Its size.
        size: u32,
    },
    /// The kernel-hashes table does not fit in its page.
    #[error(transparent)]
    HashesTableOffset(#[from] TableOffsetError),
    /// The firmware has no SEV-ES reset block, so there is no AP entry point.
    #[error(
        "the firmware has no SEV-ES reset block (GUID 00f771de-1a7e-4fcb-890e-68c77e2fb44e), \
         so the vCPU start state is unknown; it cannot boot SEV-ES or SEV-SNP guests"
    )]
    NoResetBlock,
    /// The AP reset address is zero but several vCPUs were asked for.
    #[error(
        "the firmware's SEV-ES reset block gives AP reset address 0, so it cannot start more than one vCPU"
    )]
    NoApResetAddress,
    /// More vCPUs than any hypervisor runs.
    #[error("{0} vCPUs: more than any hypervisor supports (KVM: 4096); the limit here is 65536")]
    TooManyVcpus(u32),
    /// A precalculated OVMF hash is only meaningful for SEV-SNP.
    #[error("a precalculated OVMF hash (--snp-ovmf-hash) applies only to --mode snp")]
    OvmfHashNeedsSnp,
    /// The SVSM image is missing, or given for a mode without SVSM.
    #[error("an SVSM image is required for, and only for, --mode snp:svsm")]
    SvsmImage,
    /// SVSM launches are modelled for QEMU only.
    #[error(
        "--mode snp:svsm is modelled for QEMU only (sev-snp-measure has no EC2 or GCE SVSM state)"
    )]
    SvsmNeedsQemu,
    /// SVSM launches do not measure kernel hashes.
    #[error(
        "--mode snp:svsm does not measure a kernel, initrd or command line; remove --kernel, --initrd and --append"
    )]
    SvsmKernel,
    /// The SVSM image has no information entry.
    #[error(
        "the SVSM image has no SVSM information entry (GUID a789a612-0597-4c4b-a49f-cbb1fe9d1ddd), so its entry point is unknown"
    )]
    SvsmNoEntryPoint,
}
