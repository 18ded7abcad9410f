//! The SEV-SNP launch digest: the PAGE_INFO structure the firmware hashes for
//! every page given to `SNP_LAUNCH_UPDATE`, and the running digest
//! ([`GuestContext`]) built from it.
//!
//! Source: AMD, *SEV Secure Nested Paging Firmware ABI Specification*
//! (publication 56860), section 8.17 `SNP_LAUNCH_UPDATE`, 8.17.2
//! "Page Info" (table "Layout of the PAGE_INFO structure") and the
//! page-type table of the `CMDBUF_SNP_LAUNCH_UPDATE` structure. For every
//! 4 KiB page the firmware sets
//! `LD := SHA-384(PAGE_INFO)` where `PAGE_INFO.DIGEST_CUR` is the previous
//! `LD` (all zeros at `SNP_LAUNCH_START`).

use sha2::{Digest, Sha384};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a guest page: the launch digest is updated once per 4 KiB page
/// (ABI 8.17.2: "GPA: the gPA of the 4 KB page").
pub const PAGE_SIZE: usize = 4096;

/// Size of a SHA-384 digest, the launch digest of SEV-SNP.
pub const LD_SIZE: usize = 48;

/// GPA recorded for VMSA pages. The hypervisor assigns VMSA pages the RMP
/// GPA `(u64)-1`; the firmware uses the page-aligned value with the bits
/// above 47 cleared, which is what real launches report.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// Page types of `SNP_LAUNCH_UPDATE` (ABI 8.17, `PAGE_TYPE` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// A page of data measured by its SHA-384 (`PAGE_TYPE_NORMAL`).
    Normal = 1,
    /// A VMSA page, measured by its SHA-384 (`PAGE_TYPE_VMSA`).
    Vmsa = 2,
    /// A page the firmware fills with zeros (`PAGE_TYPE_ZERO`); contents
    /// field all zero.
    Zero = 3,
    /// An encrypted page whose contents are not measured
    /// (`PAGE_TYPE_UNMEASURED`).
    Unmeasured = 4,
    /// The secrets page the firmware fills (`PAGE_TYPE_SECRETS`).
    Secrets = 5,
    /// The CPUID page the firmware validates (`PAGE_TYPE_CPUID`).
    Cpuid = 6,
}

/// PAGE_INFO (ABI 8.17.2, table "Layout of the PAGE_INFO structure"):
/// what the firmware hashes into the launch digest for one page. All
/// fields little-endian.
///
/// | offset | field |
/// | --- | --- |
/// | 0x00 | `DIGEST_CUR` (48) |
/// | 0x30 | `CONTENTS` (48) |
/// | 0x60 | `LENGTH` (u16, = 0x70) |
/// | 0x62 | `PAGE_TYPE` (u8) |
/// | 0x63 | `IMI_PAGE` (u8, bit 0) |
/// | 0x64 | `VMPL3_PERMS`, `VMPL2_PERMS`, `VMPL1_PERMS`, reserved (u8 each) |
/// | 0x68 | `GPA` (u64) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PageInfo {
    /// The launch digest before this page.
    pub digest_cur: [u8; LD_SIZE],
    /// SHA-384 of the page for NORMAL and VMSA pages; zero otherwise.
    pub contents: [u8; LD_SIZE],
    /// Length of this structure: 0x70.
    pub length: U16,
    /// A [`PageType`] value.
    pub page_type: u8,
    /// Bit 0: the page is part of an incoming migration image (IMI).
    pub imi_page: u8,
    /// VMPL3 permission mask.
    pub vmpl3_perms: u8,
    /// VMPL2 permission mask.
    pub vmpl2_perms: u8,
    /// VMPL1 permission mask.
    pub vmpl1_perms: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// Guest physical address of the page.
    pub gpa: U64,
}

const _: () = assert!(size_of::<PageInfo>() == 0x70);

impl PageInfo {
    /// The PAGE_INFO for a page of `page_type` at `gpa`, with no IMI flag
    /// and no lower-VMPL permissions (what QEMU/KVM and the reference
    /// tools use).
    pub fn new(
        digest_cur: [u8; LD_SIZE],
        contents: [u8; LD_SIZE],
        page_type: PageType,
        gpa: u64,
    ) -> Self {
        PageInfo {
            digest_cur,
            contents,
            length: U16::new(size_of::<PageInfo>() as u16),
            page_type: page_type as u8,
            imi_page: 0,
            vmpl3_perms: 0,
            vmpl2_perms: 0,
            vmpl1_perms: 0,
            reserved: 0,
            gpa: U64::new(gpa),
        }
    }
}

/// A 48-byte SEV-SNP launch digest (the `MEASUREMENT` of the attestation
/// report).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaunchDigest(pub [u8; LD_SIZE]);

impl LaunchDigest {
    /// The digest as lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 96 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, DigestParseError> {
        let bytes = hex::decode(s.trim()).map_err(|e| DigestParseError::Hex(e.to_string()))?;
        let arr: [u8; LD_SIZE] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| DigestParseError::Length(bytes.len()))?;
        Ok(LaunchDigest(arr))
    }
}

impl std::fmt::Debug for LaunchDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LaunchDigest({})", self.to_hex())
    }
}

impl std::fmt::Display for LaunchDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A launch digest given as text that is not 48 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    /// Not hexadecimal.
    #[error("not a hexadecimal string: {0}")]
    Hex(String),
    /// Wrong number of bytes.
    #[error("{0} bytes, but a SEV-SNP launch digest (SHA-384) has 48")]
    Length(usize),
}

/// The guest context's launch digest while pages are added, as the SNP
/// firmware keeps it between `SNP_LAUNCH_START` and `SNP_LAUNCH_FINISH`.
#[derive(Debug, Clone)]
pub struct GuestContext {
    ld: [u8; LD_SIZE],
}

impl Default for GuestContext {
    fn default() -> Self {
        Self::new()
    }
}

/// The SHA-384 of every 4 KiB page of `data` (the last one zero-padded).
/// The pages are hashed on all cores: only the PAGE_INFO chain that
/// follows is sequential.
pub fn page_digests(data: &[u8]) -> Vec<[u8; LD_SIZE]> {
    use rayon::prelude::*;
    // Below ~64 pages the thread hand-off costs more than it saves.
    if data.len() < 64 * PAGE_SIZE {
        return data.chunks(PAGE_SIZE).map(page_sha384).collect();
    }
    data.par_chunks(PAGE_SIZE).map(page_sha384).collect()
}

/// SHA-384 of one 4 KiB page holding `data` (at most a page) followed by
/// zeros.
pub fn page_sha384(data: &[u8]) -> [u8; LD_SIZE] {
    if data.len() == PAGE_SIZE {
        return Sha384::digest(data).into();
    }
    let mut page = [0u8; PAGE_SIZE];
    let n = data.len().min(PAGE_SIZE);
    page[..n].copy_from_slice(&data[..n]);
    Sha384::digest(page).into()
}

/// SHA-384 of one page of zeros, for data-less pages measured as NORMAL.
pub fn zero_page_sha384() -> [u8; LD_SIZE] {
    page_sha384(&[])
}

impl GuestContext {
    /// A fresh context: the digest is all zeros (`SNP_LAUNCH_START`).
    pub fn new() -> Self {
        GuestContext { ld: [0; LD_SIZE] }
    }

    /// A context that continues from `seed`, e.g. a precalculated digest of
    /// the firmware pages (`--snp-ovmf-hash`).
    pub fn with_seed(seed: LaunchDigest) -> Self {
        GuestContext { ld: seed.0 }
    }

    /// The digest so far.
    pub fn launch_digest(&self) -> LaunchDigest {
        LaunchDigest(self.ld)
    }

    /// Adds one page described by its PAGE_INFO fields.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: [u8; LD_SIZE]) {
        let info = PageInfo::new(self.ld, contents, page_type, gpa);
        self.ld = Sha384::digest(info.as_bytes()).into();
    }

    /// Adds `data` as consecutive NORMAL pages starting at `gpa`.
    /// `data.len()` must be a multiple of [`PAGE_SIZE`]; a shorter tail is
    /// measured zero-padded (callers reject unaligned firmware first).
    pub fn update_normal_pages(&mut self, gpa: u64, data: &[u8]) {
        self.update_page_digests(gpa, &page_digests(data));
    }

    /// Adds NORMAL pages starting at `gpa` whose SHA-384s are already known
    /// (see [`page_digests`]).
    pub fn update_page_digests(&mut self, gpa: u64, digests: &[[u8; LD_SIZE]]) {
        let mut page_gpa = gpa;
        for digest in digests {
            self.update(PageType::Normal, page_gpa, *digest);
            page_gpa = page_gpa.wrapping_add(PAGE_SIZE as u64);
        }
    }

    /// Adds `len` bytes (rounded up to whole pages) of pages of `page_type`
    /// with zero contents, starting at `gpa`: ZERO, UNMEASURED, SECRETS or
    /// CPUID pages.
    pub fn update_empty_pages(&mut self, page_type: PageType, gpa: u64, len: u64) {
        let pages = len.div_ceil(PAGE_SIZE as u64);
        for i in 0..pages {
            self.update(
                page_type,
                gpa.wrapping_add(i * PAGE_SIZE as u64),
                [0; LD_SIZE],
            );
        }
    }
}
