//! Launch digests of IGVM files: the SEV-SNP launch digest and the TDX
//! MRTD, and the SNP ID block an IGVM file may carry.
//!
//! Parsing is the `igvm` crate's (it validates every header); the SNP digest
//! is computed by our walker over its directive headers with the semantics
//! the SNP firmware ABI gives (see [`snp`] and docs/decisions.md), or, on
//! request, with the semantics of one of the two reference tools
//! ([`Semantics`]). The TDX MRTD is the `igvm` crate's
//! `generate_tdx_measurement`.
//!
//! ```no_run
//! use cocos_measure::igvm::{IgvmImage, Semantics};
//!
//! let image = IgvmImage::parse(&std::fs::read("coconut-qemu.igvm")?)?;
//! let digest = image.snp_launch_digest(Semantics::Firmware, false)?;
//! println!("{digest}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod sign;
pub mod snp;
pub mod tdx;

use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
use igvm_defs::IgvmPlatformType;

pub use error::IgvmError;
pub use snp::Semantics;

/// The platform whose launch measurement is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// AMD SEV-SNP: the launch digest (SHA-384 PAGE_INFO chain).
    SevSnp,
    /// Intel TDX: MRTD.
    Tdx,
}

impl Platform {
    /// The IGVM platform type.
    pub fn platform_type(self) -> IgvmPlatformType {
        match self {
            Platform::SevSnp => IgvmPlatformType::SEV_SNP,
            Platform::Tdx => IgvmPlatformType::TDX,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Platform::SevSnp => "sev-snp",
            Platform::Tdx => "tdx",
        }
    }
}

/// A parsed IGVM file.
#[derive(Debug)]
pub struct IgvmImage {
    file: IgvmFile,
}

/// The SNP ID block directive of an IGVM file, in its IGVM encoding
/// (`IGVM_VHS_SNP_ID_BLOCK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgvmIdBlock {
    /// Expected launch digest.
    pub ld: [u8; 48],
    /// Family ID.
    pub family_id: [u8; 16],
    /// Image ID.
    pub image_id: [u8; 16],
    /// ID block version (1).
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Whether an author key is present.
    pub author_key_enabled: bool,
    /// ID key algorithm (1 = ECDSA P-384 with SHA-384).
    pub id_key_algorithm: u32,
    /// Author key algorithm.
    pub author_key_algorithm: u32,
    /// Signature of the ID block by the ID key: r and s, little-endian.
    pub id_key_signature: ([u8; 72], [u8; 72]),
    /// ID public key: curve, Qx, Qy (little-endian).
    pub id_public_key: (u32, [u8; 72], [u8; 72]),
    /// Signature of the ID key by the author key.
    pub author_key_signature: ([u8; 72], [u8; 72]),
    /// Author public key.
    pub author_public_key: (u32, [u8; 72], [u8; 72]),
}

impl IgvmImage {
    /// Parses and validates an IGVM file (revision 1 or 2).
    pub fn parse(bytes: &[u8]) -> Result<Self, IgvmError> {
        // IGVM_FIXED_HEADER: variable_header_offset at byte 8 and
        // variable_header_size at byte 12 (little-endian u32). The igvm
        // crate adds them unchecked (an overflow panic with overflow checks,
        // a slice panic without), so check that they fit first.
        let le32 = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        if let (Some(offset), Some(size)) = (le32(8), le32(12)) {
            let fits = u64::from(offset) + u64::from(size) <= bytes.len() as u64;
            if !fits {
                return Err(IgvmError::VariableHeadersOutside {
                    offset,
                    size,
                    len: bytes.len(),
                });
            }
        }
        let file = IgvmFile::new_from_binary(bytes, None).map_err(IgvmError::Parse)?;
        Ok(IgvmImage { file })
    }

    /// The parsed file.
    pub fn file(&self) -> &IgvmFile {
        &self.file
    }

    /// The compatibility mask of `platform`, from the file's platform
    /// headers.
    pub fn compatibility_mask(&self, platform: Platform) -> Result<u32, IgvmError> {
        self.file
            .platforms()
            .iter()
            .find_map(|p| match p {
                IgvmPlatformHeader::SupportedPlatform(h)
                    if h.platform_type == platform.platform_type() =>
                {
                    Some(h.compatibility_mask)
                }
                _ => None,
            })
            .ok_or(IgvmError::NoPlatform(platform))
    }

    /// The SEV-SNP guest policy of the file, if it has one.
    pub fn snp_guest_policy(&self) -> Result<Option<u64>, IgvmError> {
        let mask = self.compatibility_mask(Platform::SevSnp)?;
        Ok(self.file.initializations().iter().find_map(|h| match h {
            IgvmInitializationHeader::GuestPolicy {
                policy,
                compatibility_mask,
            } if compatibility_mask & mask != 0 => Some(*policy),
            _ => None,
        }))
    }

    /// The SEV-SNP launch digest under `semantics`; `native_zero` measures
    /// data-less pages as ZERO pages (igvmmeasure `--native-zero`).
    pub fn snp_launch_digest(
        &self,
        semantics: Semantics,
        native_zero: bool,
    ) -> Result<crate::snp::LaunchDigest, IgvmError> {
        let mask = self.compatibility_mask(Platform::SevSnp)?;
        snp::launch_digest(&self.file, mask, semantics, native_zero)
    }

    /// The TDX MRTD.
    pub fn tdx_mrtd(&self) -> Result<[u8; 48], IgvmError> {
        let mask = self.compatibility_mask(Platform::Tdx)?;
        tdx::mrtd(&self.file, mask)
    }

    /// The SNP ID block directive for the SEV-SNP platform, if any.
    pub fn snp_id_block(&self) -> Result<Option<IgvmIdBlock>, IgvmError> {
        let mask = self.compatibility_mask(Platform::SevSnp)?;
        Ok(self.file.directives().iter().find_map(|d| match d {
            IgvmDirectiveHeader::SnpIdBlock {
                compatibility_mask,
                author_key_enabled,
                ld,
                family_id,
                image_id,
                version,
                guest_svn,
                id_key_algorithm,
                author_key_algorithm,
                id_key_signature,
                id_public_key,
                author_key_signature,
                author_public_key,
                ..
            } if compatibility_mask & mask != 0 => Some(IgvmIdBlock {
                ld: *ld,
                family_id: *family_id,
                image_id: *image_id,
                version: *version,
                guest_svn: *guest_svn,
                author_key_enabled: *author_key_enabled != 0,
                id_key_algorithm: *id_key_algorithm,
                author_key_algorithm: *author_key_algorithm,
                id_key_signature: (id_key_signature.r_comp, id_key_signature.s_comp),
                id_public_key: (id_public_key.curve, id_public_key.qx, id_public_key.qy),
                author_key_signature: (author_key_signature.r_comp, author_key_signature.s_comp),
                author_public_key: (
                    author_public_key.curve,
                    author_public_key.qx,
                    author_public_key.qy,
                ),
            }),
            _ => None,
        }))
    }
}
