//! OVMF (and COCONUT-SVSM) firmware images: the GUIDed footer table and the
//! SEV metadata it points to.
//!
//! Sources: EDK2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm` (the GUIDed
//! structure table that ends 32 bytes before the end of the image, read
//! backwards from its footer entry) and
//! `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm` (the "ASEV" SEV metadata:
//! a header followed by section descriptors that tell the VMM which ranges
//! to pre-validate at launch). QEMU's `hw/i386/pc_sysfw_ovmf.c` and
//! `target/i386/sev.c` consume them the same way; so does sev-snp-measure
//! (`ovmf.py`).
//!
//! The image is untrusted input: every offset is checked, and anything
//! sev-snp-measure would only get through by slicing past an end is an
//! error here.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;

use thiserror::Error;
use uuid::{Uuid, uuid};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The firmware is mapped so that it ends at 4 GiB.
pub const FOUR_GIB: u64 = 0x1_0000_0000;

/// GUID of the footer entry that closes the table
/// (`OVMF_TABLE_FOOTER_GUID`).
pub const TABLE_FOOTER_GUID: Uuid = uuid!("96b582de-1fb2-45f7-baea-a366c55a082d");
/// GUID of the entry holding the GPA of the kernel-hashes table
/// (`SEV_HASH_TABLE_RV_GUID`).
pub const SEV_HASH_TABLE_RV_GUID: Uuid = uuid!("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// GUID of the entry holding the AP reset address for SEV-ES
/// (`SEV_ES_RESET_BLOCK_GUID`).
pub const SEV_ES_RESET_BLOCK_GUID: Uuid = uuid!("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// GUID of the entry holding the offset of the SEV metadata from the end of
/// the image (`OVMF_SEV_META_DATA_GUID`).
pub const SEV_METADATA_GUID: Uuid = uuid!("dc886566-984a-4798-a75e-5585a7bf67cc");
/// GUID of COCONUT-SVSM's information entry (its entry point offset).
pub const SVSM_INFO_GUID: Uuid = uuid!("a789a612-0597-4c4b-a49f-cbb1fe9d1ddd");

/// Bytes after the table: the reset vector area at the end of the image.
const TABLE_END_GAP: usize = 32;

/// One entry header of the GUIDed table (`ResetVectorVtf0.asm`): the entry's
/// data precedes this header, and `size` counts both.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FooterTableEntry {
    /// Size of the entry, data plus this 18-byte header.
    pub size: U16,
    /// The entry's GUID, in the mixed-endian byte order of EFI GUIDs.
    pub guid: [u8; 16],
}

const ENTRY_HEADER: usize = size_of::<FooterTableEntry>();
const _: () = assert!(ENTRY_HEADER == 18);

/// Header of the SEV metadata (`OvmfSevMetadata.asm`, `_Descriptor`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SevMetadataHeader {
    /// "ASEV".
    pub signature: [u8; 4],
    /// Size of the header plus all section descriptors.
    pub size: U32,
    /// Version, 1.
    pub version: U32,
    /// Number of section descriptors that follow.
    pub num_items: U32,
}

const _: () = assert!(size_of::<SevMetadataHeader>() == 16);

/// One section descriptor of the SEV metadata (`OvmfSevMetadata.asm`,
/// `OVMF_SECTION`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SevMetadataSectionDesc {
    /// Guest physical address of the range.
    pub gpa: U32,
    /// Size of the range in bytes.
    pub size: U32,
    /// A [`SectionType`] value.
    pub section_type: U32,
}

const _: () = assert!(size_of::<SevMetadataSectionDesc>() == 12);

/// What a metadata section asks the VMM to do at launch
/// (`OvmfSevMetadata.asm`, `OVMF_SECTION_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionType {
    /// Memory to pre-validate as zero pages (`SNP_SEC_MEM`, 1).
    SnpSecMem,
    /// The secrets page (`SNP_SECRETS`, 2).
    SnpSecrets,
    /// The CPUID page (`CPUID`, 3).
    Cpuid,
    /// The SVSM calling area (`SVSM_CAA`, 4), a zero page.
    SvsmCaa,
    /// The page holding the kernel/initrd/cmdline hashes
    /// (`SNP_KERNEL_HASHES`, 0x10).
    SnpKernelHashes,
    /// A value this code does not know.
    Unknown(u32),
}

impl From<u32> for SectionType {
    fn from(v: u32) -> Self {
        match v {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            other => SectionType::Unknown(other),
        }
    }
}

/// A decoded SEV metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataSection {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// Its type.
    pub kind: SectionType,
}

/// A firmware image that cannot be read as OVMF.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OvmfError {
    /// Smaller than the table footer and the reset-vector area after it.
    #[error(
        "the firmware is {0} bytes; an OVMF image has at least 50 (table footer and reset vector)"
    )]
    TooSmall(usize),
    /// The footer says the table is larger than the image.
    #[error(
        "the GUIDed table footer says the table has {size} bytes, more than the {available} bytes before it"
    )]
    TableTooLarge {
        /// Table size claimed by the footer.
        size: usize,
        /// Bytes available before the footer.
        available: usize,
    },
    /// A table entry has an impossible size.
    #[error(
        "GUIDed table entry {guid} ending at byte {end} has size {size}, outside 18..={available}"
    )]
    BadEntrySize {
        /// The entry's GUID.
        guid: Uuid,
        /// File offset where the entry ends.
        end: usize,
        /// Its size field.
        size: usize,
        /// Bytes left in the table.
        available: usize,
    },
    /// An entry is too short for the value it must hold.
    #[error("GUIDed table entry {guid} has {len} data bytes, expected at least {needed}")]
    EntryTooShort {
        /// The entry's GUID.
        guid: Uuid,
        /// Its data length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The SEV metadata offset points outside the image.
    #[error(
        "the SEV metadata is said to start {offset} bytes before the end of a {len}-byte image"
    )]
    MetadataOutOfBounds {
        /// Offset from the end of the image.
        offset: u64,
        /// Image size.
        len: usize,
    },
    /// The SEV metadata header is not "ASEV" version 1.
    #[error("bad SEV metadata header at byte {at}: {what}")]
    BadMetadataHeader {
        /// File offset of the header.
        at: usize,
        /// What is wrong.
        what: String,
    },
}

/// A firmware image with its GUIDed table and SEV metadata decoded, placed
/// so that it ends at `end_gpa` (4 GiB for OVMF).
#[derive(Debug, Clone)]
pub struct FirmwareImage {
    data: Vec<u8>,
    gpa: u64,
    table: HashMap<Uuid, Range<usize>>,
    metadata: Vec<MetadataSection>,
    page_digests: OnceLock<Vec<[u8; 48]>>,
}

impl FirmwareImage {
    /// Decodes `data`, an image that ends at guest address `end_gpa`.
    pub fn parse(data: Vec<u8>, end_gpa: u64) -> Result<Self, OvmfError> {
        let table = parse_table(&data)?;
        let metadata = parse_metadata(&data, &table)?;
        let gpa = end_gpa.wrapping_sub(data.len() as u64);
        Ok(FirmwareImage {
            data,
            gpa,
            table,
            metadata,
            page_digests: OnceLock::new(),
        })
    }

    /// Decodes an OVMF image, mapped to end at 4 GiB.
    pub fn parse_ovmf(data: Vec<u8>) -> Result<Self, OvmfError> {
        Self::parse(data, FOUR_GIB)
    }

    /// The image bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The SHA-384 of each 4 KiB page of the image, computed once (on all
    /// cores) and kept: a caller can compute them while it hashes a kernel.
    pub fn page_digests(&self) -> &[[u8; 48]] {
        self.page_digests
            .get_or_init(|| super::page_info::page_digests(&self.data))
    }

    /// Guest physical address of the first byte.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// The SEV metadata sections, in file order (empty when the image has
    /// no SEV metadata).
    pub fn metadata(&self) -> &[MetadataSection] {
        &self.metadata
    }

    /// Whether a metadata section of `kind` exists.
    pub fn has_section(&self, kind: SectionType) -> bool {
        self.metadata.iter().any(|s| s.kind == kind)
    }

    /// The data of the table entry `guid`, if present.
    pub fn table_entry(&self, guid: &Uuid) -> Option<&[u8]> {
        self.table.get(guid).map(|r| &self.data[r.clone()])
    }

    /// The GUIDs present in the table.
    pub fn table_guids(&self) -> impl Iterator<Item = &Uuid> {
        self.table.keys()
    }

    fn entry_u32(&self, guid: &Uuid) -> Result<Option<u32>, OvmfError> {
        match self.table_entry(guid) {
            None => Ok(None),
            Some(d) if d.len() < 4 => Err(OvmfError::EntryTooShort {
                guid: *guid,
                len: d.len(),
                needed: 4,
            }),
            Some(d) => Ok(Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))),
        }
    }

    /// The AP reset address from the SEV-ES reset block, if present.
    pub fn sev_es_reset_eip(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID)
    }

    /// The GPA of the kernel-hashes table, if the entry is present.
    pub fn sev_hashes_table_gpa(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(&SEV_HASH_TABLE_RV_GUID)
    }

    /// Whether QEMU can place kernel hashes for SEV/SEV-ES: the entry is
    /// present and its GPA is not zero.
    pub fn supports_sev_hashes_table(&self) -> Result<bool, OvmfError> {
        Ok(matches!(self.sev_hashes_table_gpa()?, Some(gpa) if gpa != 0))
    }

    /// COCONUT-SVSM's entry point: the offset in its information entry plus
    /// the image's GPA.
    pub fn svsm_entry_point(&self) -> Result<Option<u64>, OvmfError> {
        Ok(self
            .entry_u32(&SVSM_INFO_GUID)?
            .map(|off| u64::from(off).wrapping_add(self.gpa)))
    }
}

/// Reads the GUIDed table that ends 32 bytes before the end of `data`.
/// Returns the data range of every entry; without a footer the table is
/// empty. When a GUID repeats, the entry nearest the start wins, as in
/// sev-snp-measure.
pub fn parse_table(data: &[u8]) -> Result<HashMap<Uuid, Range<usize>>, OvmfError> {
    let mut table = HashMap::new();
    let Some(footer_at) = data.len().checked_sub(TABLE_END_GAP + ENTRY_HEADER) else {
        return Err(OvmfError::TooSmall(data.len()));
    };
    let footer = read_entry(data, footer_at);
    if footer.guid != TABLE_FOOTER_GUID.to_bytes_le() {
        return Ok(table);
    }
    let Some(table_size) = usize::from(footer.size.get()).checked_sub(ENTRY_HEADER) else {
        // sev-snp-measure treats a footer smaller than its header as "no table".
        return Ok(table);
    };
    if table_size > footer_at {
        return Err(OvmfError::TableTooLarge {
            size: table_size,
            available: footer_at,
        });
    }
    let start = footer_at - table_size;
    let mut end = footer_at;
    while end - start >= ENTRY_HEADER {
        let entry = read_entry(data, end - ENTRY_HEADER);
        let guid = Uuid::from_bytes_le(entry.guid);
        let size = usize::from(entry.size.get());
        if size < ENTRY_HEADER || size > end - start {
            return Err(OvmfError::BadEntrySize {
                guid,
                end,
                size,
                available: end - start,
            });
        }
        table.insert(guid, end - size..end - ENTRY_HEADER);
        end -= size;
    }
    Ok(table)
}

fn read_entry(data: &[u8], at: usize) -> FooterTableEntry {
    let mut raw = [0u8; ENTRY_HEADER];
    raw.copy_from_slice(&data[at..at + ENTRY_HEADER]);
    zerocopy::transmute!(raw)
}

/// Reads the SEV metadata ("ASEV") that the table points to, if any.
pub fn parse_metadata(
    data: &[u8],
    table: &HashMap<Uuid, Range<usize>>,
) -> Result<Vec<MetadataSection>, OvmfError> {
    let Some(range) = table.get(&SEV_METADATA_GUID) else {
        return Ok(Vec::new());
    };
    let entry = &data[range.clone()];
    if entry.len() < 4 {
        return Err(OvmfError::EntryTooShort {
            guid: SEV_METADATA_GUID,
            len: entry.len(),
            needed: 4,
        });
    }
    let offset = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let Some(start) = data.len().checked_sub(offset as usize) else {
        return Err(OvmfError::MetadataOutOfBounds {
            offset: offset.into(),
            len: data.len(),
        });
    };
    let bad = |what: String| OvmfError::BadMetadataHeader { at: start, what };
    let (header, _) = SevMetadataHeader::read_from_prefix(&data[start..]).map_err(|_| {
        bad(format!(
            "only {} bytes left for a 16-byte header",
            data.len() - start
        ))
    })?;
    if &header.signature != b"ASEV" {
        return Err(bad(format!(
            "signature {:02x?}, expected \"ASEV\"",
            header.signature
        )));
    }
    if header.version.get() != 1 {
        return Err(bad(format!("version {}, expected 1", header.version.get())));
    }
    let size = header.size.get() as usize;
    let items_len = size
        .checked_sub(size_of::<SevMetadataHeader>())
        .filter(|_| start + size <= data.len())
        .ok_or_else(|| {
            bad(format!(
                "size {size} does not fit between 16 and the end of the image"
            ))
        })?;
    let count = header.num_items.get() as usize;
    if count > items_len / size_of::<SevMetadataSectionDesc>() {
        return Err(bad(format!(
            "{count} sections do not fit in {items_len} bytes of descriptors"
        )));
    }
    let items = &data[start + size_of::<SevMetadataHeader>()..start + size];
    let (descs, _) = <[SevMetadataSectionDesc]>::ref_from_prefix_with_elems(items, count)
        .map_err(|_| bad(format!("{count} section descriptors do not fit")))?;
    Ok(descs
        .iter()
        .map(|d| MetadataSection {
            gpa: d.gpa.get(),
            size: d.size.get(),
            kind: d.section_type.get().into(),
        })
        .collect())
}
