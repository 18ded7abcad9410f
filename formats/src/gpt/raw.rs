//! The GPT's on-disk structures, as the UEFI Specification 2.10 lays them
//! out: the header (§5.3.2, table "GPT Header") and a partition entry
//! (§5.3.3, table "GPT Partition Entry"), little-endian, with their sizes
//! asserted, and the CRC-32 both are checked with. [`super::read`] checks
//! them; the `gpt` crate writes them for `cocos-imgbuild`.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::ENTRY_SIZE;

/// GPT header as stored (UEFI 2.10 §5.3.2, table "GPT Header").
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct RawHeader {
    /// "EFI PART".
    pub(super) signature: [u8; 8],
    /// 0x00010000 for revision 1.0.
    pub(super) revision: U32,
    /// Bytes covered by `header_crc32`; 92 ≤ size ≤ sector size.
    pub(super) header_size: U32,
    /// CRC32 of the header with this field zero.
    pub(super) header_crc32: U32,
    /// Must be zero.
    pub(super) reserved: U32,
    /// LBA of this header.
    pub(super) my_lba: U64,
    /// LBA of the other header.
    pub(super) alternate_lba: U64,
    /// First LBA partitions may use.
    pub(super) first_usable_lba: U64,
    /// Last LBA partitions may use, inclusive.
    pub(super) last_usable_lba: U64,
    /// Disk GUID, mixed-endian.
    pub(super) disk_guid: [u8; 16],
    /// First LBA of this copy's entry array.
    pub(super) partition_entry_lba: U64,
    /// Entries in the array.
    pub(super) number_of_partition_entries: U32,
    /// Bytes per entry.
    pub(super) size_of_partition_entry: U32,
    /// CRC32 of the entry array.
    pub(super) partition_entry_array_crc32: U32,
}
const _: () = assert!(size_of::<RawHeader>() == 92);

/// Partition entry as stored (UEFI 2.10 §5.3.3, table "GPT Partition Entry").
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(super) struct RawEntry {
    /// Partition type GUID, mixed-endian; zero marks an unused entry.
    pub(super) partition_type_guid: [u8; 16],
    /// Unique partition GUID, mixed-endian.
    pub(super) unique_partition_guid: [u8; 16],
    /// First LBA.
    pub(super) starting_lba: U64,
    /// Last LBA, inclusive.
    pub(super) ending_lba: U64,
    /// Attribute bits.
    pub(super) attributes: U64,
    /// Name, UTF-16LE, NUL-terminated unless all 36 units are used.
    pub(super) partition_name: [u8; 72],
}
const _: () = assert!(size_of::<RawEntry>() == ENTRY_SIZE as usize);

pub(super) const GPT_SIGNATURE: [u8; 8] = *b"EFI PART";
pub(super) const GPT_REVISION_1_0: u32 = 0x0001_0000;
pub(super) const HEADER_SIZE_MIN: u32 = 92;

/// CRC-32 as GPT uses it (UEFI 2.10 §5.3.2 refers to the CRC32 of
/// Appendix F / ISO 3309 / IEEE 802.3): CRC-32/ISO-HDLC, the algorithm the
/// `gpt` crate writes with, from the same `crc` crate.
pub(super) fn crc32(data: &[u8]) -> u32 {
    const GPT_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    GPT_CRC.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn raw_structures_have_uefi_sizes() {
        assert_eq!(size_of::<RawHeader>(), 92);
        assert_eq!(size_of::<RawEntry>(), 128);
    }
}
