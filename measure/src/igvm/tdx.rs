//! The TDX MRTD of an IGVM file.
//!
//! The TDX module extends MRTD (one running SHA-384, finalized by
//! `TDH.MR.FINALIZE`) with a 128-byte record for every `TDH.MEM.PAGE.ADD`
//! (`"MEM.PAGE.ADD"`, the GPA at byte 16, zeros) and, for every 256-byte
//! chunk a loader measures with `TDH.MR.EXTEND`, a 128-byte record
//! (`"MR.EXTEND"`, the chunk's GPA) followed by the chunk (Intel TDX Module
//! Base Architecture Specification, "TD Measurement", MRTD extension by
//! TDH.MEM.PAGE.ADD and TDH.MR.EXTEND). The `igvm` crate's
//! `generate_tdx_measurement` implements this for IGVM directives: page
//! data is added and extended (data-less pages as zeros), unmeasured pages
//! and parameter areas only added, shared pages skipped. We use it as is;
//! `tests/tdx.rs` checks it against an independent model written from the
//! specification.

use igvm::IgvmFile;

use super::error::IgvmError;

/// The MRTD of `file` for the TDX platform `mask`.
pub fn mrtd(file: &IgvmFile, mask: u32) -> Result<[u8; 48], IgvmError> {
    super::snp::check_parameter_areas(file)?;
    igvm::measurement::generate_tdx_measurement(file.directives(), mask)
        .map_err(|e| IgvmError::Crate(e.to_string()))
}
