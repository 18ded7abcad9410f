//! The SEV-SNP launch digest of an IGVM file: the `SNP_LAUNCH_UPDATE` calls
//! a loader makes for its directives, chained as PAGE_INFO structures
//! ([`crate::snp::page_info`]).
//!
//! The two reference implementations disagree on some files (vectors
//! README, section 3). [`Semantics::Firmware`], the default, follows the
//! SNP firmware ABI (publication 56860, section 8.17 `SNP_LAUNCH_UPDATE`:
//! one PAGE_INFO per 4 KiB page the firmware is asked to encrypt, with the
//! page's own type) and the IGVM header documentation (`igvm_defs`):
//!
//! | directive | firmware semantics |
//! | --- | --- |
//! | header whose compatibility mask lacks the SNP platform | not loaded, not measured (also VP contexts) |
//! | page data, `shared` flag | host-visible, never given to `SNP_LAUNCH_UPDATE`: not measured |
//! | page data, `is_2mb_page`, no data | 2 MiB of zero memory: 512 pages of 4 KiB |
//! | page data, `is_2mb_page` with 4 KiB of data | malformed (a 2 MiB page needs 2 MiB of data): error |
//! | page data without data (`file_offset` 0) | a NORMAL page of zeros (ZERO page with `native_zero`) |
//! | parameter insert | the area's pages as UNMEASURED pages, one per 4 KiB, lowest GPA first |
//! | SNP VP context | the whole 4 KiB VMSA page as a VMSA page |
//! | no guest policy | measured: the policy is not part of the digest |
//!
//! [`Semantics::Igvmmeasure`] mimics COCONUT-SVSM's `igvmmeasure` (igvm
//! 0.4.0); [`Semantics::IgvmCrate`] calls `igvm::measurement::
//! generate_snp_measurement` of igvm 0.5.0.

use std::collections::HashMap;

use igvm::{IgvmDirectiveHeader, IgvmFile};
use igvm_defs::IgvmPageDataType;
use zerocopy::IntoBytes;

use super::error::IgvmError;
use crate::snp::page_info::{GuestContext, LD_SIZE, LaunchDigest, PAGE_SIZE, PageType};

/// How the directives are turned into launch updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// What the SNP firmware ABI and the IGVM documentation specify (the
    /// table in this module's documentation).
    Firmware,
    /// COCONUT-SVSM `igvmmeasure` (built with igvm 0.4.0): one UNMEASURED
    /// page per parameter insert whatever the area size; the `shared` flag
    /// ignored; every SNP VP context measured whatever its compatibility
    /// mask; a VMSA whose bytes past 0x670 are not zero rejected; 2 MiB
    /// data-less pages as 512 pages.
    Igvmmeasure,
    /// `igvm::measurement::generate_snp_measurement` of igvm 0.5.0: the
    /// `is_2mb_page` flag ignored (one 4 KiB page), a file without an SNP
    /// guest policy rejected.
    IgvmCrate,
}

/// Size of the SEV-ES save area igvm 0.4.0 defines; the rest of the VMSA
/// page had to be zero there.
const VMSA_DEFINED_LEN: usize = 0x670;

const PAGE_SIZE_2M: usize = 2 << 20;

/// Computes the SNP launch digest of `file` for the platform `mask`.
pub fn launch_digest(
    file: &IgvmFile,
    mask: u32,
    semantics: Semantics,
    native_zero: bool,
) -> Result<LaunchDigest, IgvmError> {
    check_parameter_areas(file)?;
    if semantics == Semantics::IgvmCrate {
        if native_zero {
            return Err(IgvmError::NativeZeroWithCrate);
        }
        let ld = igvm::measurement::generate_snp_measurement(
            file.initializations(),
            file.directives(),
            mask,
        )
        .map_err(|e| IgvmError::Crate(e.to_string()))?;
        return Ok(LaunchDigest(ld));
    }
    let igvmmeasure = semantics == Semantics::Igvmmeasure;
    let zero_page = crate::snp::page_info::zero_page_sha384();
    let mut gctx = GuestContext::new();
    let mut areas: HashMap<u32, u64> = HashMap::new();
    for d in file.directives() {
        let applies = d.compatibility_mask().is_none_or(|m| m & mask != 0);
        match d {
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                ..
            } if applies => {
                areas.insert(*parameter_area_index, *number_of_bytes);
            }
            IgvmDirectiveHeader::PageData {
                gpa,
                flags,
                data_type,
                data,
                ..
            } if applies => {
                if flags.shared() && !igvmmeasure {
                    continue;
                }
                if data.len() > PAGE_SIZE {
                    return Err(IgvmError::PageDataTooLarge {
                        gpa: *gpa,
                        len: data.len(),
                    });
                }
                let pages = if flags.is_2mb_page() {
                    if !data.is_empty() {
                        return Err(IgvmError::Malformed2mPage {
                            gpa: *gpa,
                            len: data.len(),
                        });
                    }
                    PAGE_SIZE_2M / PAGE_SIZE
                } else {
                    1
                };
                let (page_type, contents) = match *data_type {
                    IgvmPageDataType::SECRETS => (PageType::Secrets, [0; LD_SIZE]),
                    IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF => {
                        (PageType::Cpuid, [0; LD_SIZE])
                    }
                    _ if flags.unmeasured() => (PageType::Unmeasured, [0; LD_SIZE]),
                    _ if data.is_empty() && native_zero => (PageType::Zero, [0; LD_SIZE]),
                    _ if data.is_empty() => (PageType::Normal, zero_page),
                    _ => (PageType::Normal, crate::snp::page_info::page_sha384(data)),
                };
                for i in 0..pages as u64 {
                    gctx.update(page_type, gpa.wrapping_add(i * PAGE_SIZE as u64), contents);
                }
            }
            IgvmDirectiveHeader::ParameterInsert(insert) if applies => {
                let index = insert.parameter_area_index;
                let size = *areas
                    .get(&index)
                    .ok_or(IgvmError::UnknownParameterArea { index })?;
                let pages = if igvmmeasure {
                    1
                } else {
                    size.div_ceil(PAGE_SIZE as u64)
                };
                for i in 0..pages {
                    gctx.update(
                        PageType::Unmeasured,
                        insert.gpa.wrapping_add(i * PAGE_SIZE as u64),
                        [0; LD_SIZE],
                    );
                }
            }
            // igvmmeasure measures every SNP VP context, whatever its mask.
            IgvmDirectiveHeader::SnpVpContext { gpa, vmsa, .. } if applies || igvmmeasure => {
                let page = vmsa.as_bytes();
                if igvmmeasure
                    && page[VMSA_DEFINED_LEN.min(page.len())..]
                        .iter()
                        .any(|b| *b != 0)
                {
                    return Err(IgvmError::VmsaNonZeroTail { gpa: *gpa });
                }
                gctx.update(
                    PageType::Vmsa,
                    *gpa,
                    crate::snp::page_info::page_sha384(page),
                );
            }
            _ => {}
        }
    }
    Ok(gctx.launch_digest())
}

/// Largest parameter area accepted: far above any real one (they hold a few
/// pages of ACPI tables or memory maps), low enough that measuring it is
/// quick and `gpa + size` cannot overflow.
pub const MAX_PARAMETER_AREA: u64 = 1 << 30;

/// Rejects parameter areas that would make a measurement loop run for ages
/// or its addresses overflow (the igvm parser checks only the alignment).
pub fn check_parameter_areas(file: &IgvmFile) -> Result<(), IgvmError> {
    let mut areas: HashMap<u32, u64> = HashMap::new();
    for d in file.directives() {
        match d {
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                ..
            } => {
                if *number_of_bytes > MAX_PARAMETER_AREA {
                    return Err(IgvmError::ParameterAreaTooLarge {
                        index: *parameter_area_index,
                        size: *number_of_bytes,
                    });
                }
                areas.insert(*parameter_area_index, *number_of_bytes);
            }
            IgvmDirectiveHeader::ParameterInsert(insert) => {
                let index = insert.parameter_area_index;
                let size = areas.get(&index).copied().unwrap_or(0);
                if insert.gpa.checked_add(size).is_none() {
                    return Err(IgvmError::ParameterAreaTooLarge { index, size });
                }
            }
            _ => {}
        }
    }
    Ok(())
}
