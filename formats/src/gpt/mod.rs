//! The GUID partition table of `disk.img`: what it holds and how it is
//! planned and read.
//!
//! Layers, lowest first:
//! * `raw` (private): the header and entry as stored, with the CRC-32;
//! * [`read`]: [`read_gpt`] parses and validates the table of an image or a
//!   block device (used by `inspect` and by the in-VM init to find
//!   partitions). It treats its input as untrusted: every field is
//!   range-checked, both CRCs of both copies are verified, and the backup
//!   must agree with the primary. It never panics and reports what is wrong
//!   as a [`GptError`];
//! * [`layout`]: [`plan_layout`] places partitions in order, 1 MiB aligned,
//!   and returns a [`DiskLayout`] (plain data, serialisable into
//!   `manifest.json`);
//! * this module: sizes, partition type GUIDs, attribute bits, labels, the
//!   GUIDs derived from the root hash, the error type.
//!
//! `cocos_imgbuild::gpt::write_gpt` writes the protective MBR, the primary
//! GPT header and entry array and the backup entry array and header for a
//! layout (through the `gpt` crate, which only the image builder needs),
//! and extends the file sparsely to the disk size.
//!
//! On-disk format: UEFI Specification 2.10, §5.2.3 (protective MBR), §5.3.2
//! (GPT header) and §5.3.3 (GPT partition entry array). Sectors are 512
//! bytes; the entry array has 128 entries of 128 bytes (32 sectors), so the
//! primary GPT takes LBAs 0–33 and the backup the last 33 LBAs of the disk.
//!
//! Partition type GUIDs and attribute bits come from the Discoverable
//! Partitions Specification (UAPI group), and the verity partition GUIDs
//! are derived from the root hash the way `systemd-repart` does it; see
//! [`verity_partition_uuids`].

pub mod layout;
mod raw;
pub mod read;

use uuid::Uuid;

pub use layout::{DiskLayout, PartitionSpec, PlacedPartition, plan_layout};
pub use read::{read_gpt, read_gpt_bytes};

/// Logical sector size of the image, in bytes.
pub const SECTOR_SIZE: u64 = 512;

/// Alignment of every partition start and size, and of the disk size.
pub const ALIGNMENT: u64 = 1024 * 1024;

/// Entries in the partition entry array (UEFI 2.10 §5.3.2: the array must
/// reserve at least 16384 bytes, i.e. 128 entries of 128 bytes).
pub const ENTRY_COUNT: u32 = 128;

/// Size of one partition entry, in bytes (UEFI 2.10 §5.3.3).
pub const ENTRY_SIZE: u32 = 128;

/// Longest partition name, in UTF-16 code units (72 bytes in the entry).
pub const MAX_NAME_UNITS: usize = 36;

/// Sectors taken by the entry array: 128 × 128 / 512.
const ENTRY_ARRAY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64).div_ceil(SECTOR_SIZE);

/// Bytes the backup GPT takes at the end of the disk (entry array + header).
pub const BACKUP_GPT_SIZE: u64 = (ENTRY_ARRAY_SECTORS + 1) * SECTOR_SIZE;

/// First LBA a partition may use: after the protective MBR (LBA 0), the
/// primary header (LBA 1) and the primary entry array (LBAs 2–33).
pub const FIRST_USABLE_LBA: u64 = 2 + ENTRY_ARRAY_SECTORS;

// Partition type GUIDs, checked against the table "Defined Partition Type
// UUIDs" of the Discoverable Partitions Specification,
// <https://uapi-group.org/specifications/specs/discoverable_partitions_specification/>
// (source: uapi-group/specifications, specs/discoverable_partitions_specification.md
// at commit 0cfe083c1b5519eff3cb29ac6f061220b48c5026). The attribute bits
// below are from its section "Partition Attribute Flags".

/// _EFI System Partition_, `SD_GPT_ESP` (defined by the UEFI specification,
/// listed in the Discoverable Partitions Specification).
pub const ESP_TYPE: Uuid = uuid::uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");

/// _Root Partition (amd64/x86_64)_, `SD_GPT_ROOT_X86_64` (Discoverable
/// Partitions Specification).
pub const ROOT_X86_64_TYPE: Uuid = uuid::uuid!("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");

/// _Root Verity Partition (amd64/x86_64)_, `SD_GPT_ROOT_X86_64_VERITY`
/// (Discoverable Partitions Specification): a dm-verity superblock followed
/// by hash data for the matching root partition.
pub const ROOT_X86_64_VERITY_TYPE: Uuid = uuid::uuid!("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5");

/// _Generic Linux Data Partition_, `SD_GPT_LINUX_GENERIC` (Discoverable
/// Partitions Specification): not mounted automatically.
pub const LINUX_DATA_TYPE: Uuid = uuid::uuid!("0fc63daf-8483-4772-8e79-3d69d8477de4");

/// Partition attribute bit 59, "grow-file-system" (`SD_GPT_FLAG_GROWFS`),
/// Discoverable Partitions Specification, "Partition Attribute Flags".
pub const ATTR_GROWFS: u64 = 1 << 59;

/// Partition attribute bit 60, "read-only" (`SD_GPT_FLAG_READ_ONLY`); the
/// specification recommends setting it on Verity partitions.
pub const ATTR_READ_ONLY: u64 = 1 << 60;

/// Partition attribute bit 63, "no-auto" (`SD_GPT_FLAG_NO_AUTO`): turns off
/// auto-discovery of the partition.
pub const ATTR_NO_AUTO: u64 = 1 << 63;

/// GPT partition names (labels) of the default image. `build` writes them,
/// `inspect` reports them, and cocos-init finds the `cocos` partition by
/// its label (the root and its hash partition by the root hash's GUIDs).
pub mod label {
    /// The EFI system partition.
    pub const ESP: &str = "esp";
    /// The root filesystem.
    pub const ROOT: &str = "root";
    /// The root's dm-verity hash partition.
    pub const ROOT_VERITY: &str = "root-verity";
    /// The blank partition cocos-init formats as LUKS2 at every boot.
    pub const COCOS: &str = "cocos";
}

/// The unique GUIDs of the root (data) partition and of the root verity
/// (hash) partition, derived from the dm-verity root hash.
///
/// The Discoverable Partitions Specification (section "Verity") says the
/// root partition's UUID is "the first 128 bit of the root hash" and the
/// Verity partition's "the last 128bit". `systemd-repart` implements this in
/// `partition_format_verity_hash()` (systemd/systemd `src/repart/repart.c`,
/// commit fe727084fd85cbd2dc4a31e05b0ba8f363928689; the same copy is in the
/// older `src/partition/repart.c`, e.g. at commit
/// 000ec7d8a354dbde8a2469e49b39f6aef08e9e6b):
///
/// ```c
/// if (!dp->new_uuid_is_set) {
///         memcpy_safe(dp->new_uuid.bytes, rh.iov_base, sizeof(sd_id128_t));
///         ...
/// if (!p->new_uuid_is_set) {
///         memcpy_safe(p->new_uuid.bytes,
///                     (uint8_t*) rh.iov_base + (rh.iov_len - sizeof(sd_id128_t)),
///                     sizeof(sd_id128_t));
/// ```
///
/// i.e. a plain copy of the bytes: **no** `id128_make_v4_uuid()`, so the
/// version and variant bits are whatever the hash has. The `sd_id128_t` is
/// then handed to libfdisk as `SD_ID128_TO_UUID_STRING(p->new_uuid)`, which
/// prints the 16 bytes in order, so the partition UUID *string* is the hex of
/// the hash bytes (RFC 4122 byte order, [`Uuid::from_bytes`]); the GPT entry
/// stores it in the usual mixed-endian form. The consumer side,
/// `dissect_image()` in `src/shared/dissect-image.c`, does the same
/// `memcpy` of the first and last 16 bytes and compares with the UUIDs
/// blkid reports. A run of systemd-repart 252 confirmed it: root hash
/// `1f4f7b353629fa1c793b02c8250121a7 7e607bb28edf8f192849986d70db97ea` gave
/// partition UUIDs `1f4f7b35-3629-fa1c-793b-02c8250121a7` (version nibble
/// `f`) and `7e607bb2-8edf-8f19-2849-986d70db97ea`.
///
/// systemd-repart asserts the hash has at least 32 bytes; for 16 to 31
/// bytes the two halves overlap, as in `dissect_image()`. A hash shorter
/// than 16 bytes (`dissect_image()` rejects it with `-EINVAL`) gives two
/// nil UUIDs, which match no partition and which [`DiskLayout::validate`]
/// refuses to write.
pub fn verity_partition_uuids(root_hash: &[u8]) -> (Uuid, Uuid) {
    let (Some(first), Some(last)) = (root_hash.first_chunk::<16>(), root_hash.last_chunk::<16>())
    else {
        return (Uuid::nil(), Uuid::nil());
    };
    (Uuid::from_bytes(*first), Uuid::from_bytes(*last))
}

/// Which copy of the GPT an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// The primary GPT (header at LBA 1).
    Primary,
    /// The backup GPT (header in the last LBA).
    Backup,
}

impl std::fmt::Display for HeaderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderKind::Primary => "primary",
            HeaderKind::Backup => "backup",
        })
    }
}

/// What went wrong planning or reading a partition table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GptError {
    /// Reading the disk failed.
    #[error("I/O error on the disk image: {0}")]
    Io(#[from] std::io::Error),
    /// A partition spec has size zero.
    #[error("partition {name:?} has size zero")]
    ZeroSize {
        /// The partition's name.
        name: String,
    },
    /// A partition name does not fit the 72-byte name field.
    #[error(
        "partition name {name:?} is {units} UTF-16 code units long; a GPT entry holds at most {MAX_NAME_UNITS}"
    )]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in UTF-16 code units.
        units: usize,
    },
    /// A partition name contains U+0000, which terminates names on disk.
    #[error("partition name {name:?} contains a NUL character")]
    NameContainsNul {
        /// The name.
        name: String,
    },
    /// More partitions than the 128 entries of the table.
    #[error("{count} partitions do not fit in a {ENTRY_COUNT}-entry partition table")]
    TooManyPartitions {
        /// How many partitions were asked for.
        count: usize,
    },
    /// Sizes add up to more than 2^64 bytes.
    #[error("partition sizes overflow 64-bit byte offsets")]
    Overflow,
    /// A [`DiskLayout`] that cannot be written as it is.
    #[error("invalid disk layout: {0}")]
    InvalidLayout(String),
    /// The device ends before a structure the table needs.
    #[error(
        "the device ends at byte {device_size}; the {what} at bytes {offset}..{end} is missing"
    )]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Its first byte.
        offset: u64,
        /// Just past its last byte.
        end: u64,
        /// Size of the device.
        device_size: u64,
    },
    /// LBA 0 is not a protective MBR.
    #[error("LBA 0 is not a protective MBR: {0}")]
    ProtectiveMbr(&'static str),
    /// The header does not start with "EFI PART".
    #[error("{header} GPT header: signature is not \"EFI PART\"")]
    BadSignature {
        /// Which header.
        header: HeaderKind,
    },
    /// The header's CRC32 does not match its contents.
    #[error(
        "{header} GPT header: CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    HeaderCrc {
        /// Which header.
        header: HeaderKind,
        /// The CRC32 in the header.
        stored: u32,
        /// The CRC32 of the header as read.
        computed: u32,
    },
    /// A header field is out of range or inconsistent.
    #[error("{header} GPT header: {field} is invalid: {detail}")]
    InvalidHeader {
        /// Which header.
        header: HeaderKind,
        /// The field (UEFI name).
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The entry array's CRC32 does not match the header's.
    #[error(
        "{header} partition entry array: CRC32 mismatch (header says {stored:#010x}, computed {computed:#010x})"
    )]
    EntryArrayCrc {
        /// Which copy.
        header: HeaderKind,
        /// `PartitionEntryArrayCRC32` from the header.
        stored: u32,
        /// CRC32 of the array as read.
        computed: u32,
    },
    /// Both GPTs are valid on their own but describe different tables.
    #[error("the backup GPT does not match the primary: {field} differs")]
    BackupMismatch {
        /// What differs.
        field: &'static str,
    },
    /// A used partition entry is invalid.
    #[error("partition entry {number}: {detail}")]
    InvalidEntry {
        /// 1-based entry number.
        number: u32,
        /// What is wrong with it.
        detail: String,
    },
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_and_backup_tables_take_uefi_sizes() {
        assert_eq!(ENTRY_ARRAY_SECTORS, 32);
        assert_eq!(FIRST_USABLE_LBA, 34);
        assert_eq!(BACKUP_GPT_SIZE, 33 * 512);
    }

    #[test]
    fn short_root_hash_gives_nil() {
        assert_eq!(verity_partition_uuids(&[1; 15]), (Uuid::nil(), Uuid::nil()));
        let (a, b) = verity_partition_uuids(&[7; 16]);
        assert_eq!(a, b);
    }
}
