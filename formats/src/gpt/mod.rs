//! The GUID partition table of `disk.img`: planning and reading.
//!
//! * [`plan_layout`] places partitions in order, 1 MiB aligned, and returns
//!   a [`DiskLayout`] (plain data, serialisable into `manifest.json`).
//! * `cocos_imgbuild::gpt::write_gpt` writes the protective MBR, the
//!   primary GPT header and entry array and the backup entry array and
//!   header for a layout (through the `gpt` crate, which only the image
//!   builder needs), and extends the file sparsely to the disk size.
//! * [`read_gpt`] parses and validates the table of an image or a block
//!   device (used by `inspect` and by the in-VM init to find partitions).
//!   It treats its input as untrusted: every field is range-checked, both
//!   CRCs of both copies are verified, and the backup must agree with the
//!   primary. It never panics and reports what is wrong as a [`GptError`].
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

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

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

/// The most entries [`read_gpt`] accepts in a foreign table (512 KiB of
/// entries), so a corrupt count cannot make it allocate gigabytes.
const MAX_READ_ENTRIES: u32 = 4096;

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

/// A partition to place: what [`plan_layout`] takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    /// Partition name (at most 36 UTF-16 code units, no NUL).
    pub name: String,
    /// Partition type GUID (e.g. [`ESP_TYPE`]).
    pub type_guid: Uuid,
    /// Unique partition GUID (seed-derived, or from [`verity_partition_uuids`]).
    pub unique_guid: Uuid,
    /// Minimum size in bytes; rounded up to a multiple of 1 MiB.
    pub size: u64,
}

/// A partition with its place on the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedPartition {
    /// Partition number: 1-based index of its entry in the entry array.
    pub number: u32,
    /// Partition name.
    pub name: String,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID.
    pub unique_guid: Uuid,
    /// Attribute bits (e.g. [`ATTR_READ_ONLY`]); the planner sets none.
    pub attributes: u64,
    /// Byte offset of the first byte.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// First LBA (512-byte sectors).
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
}

impl PlacedPartition {
    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Byte offset just past the partition.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }
}

/// The partition table of a disk image: what [`plan_layout`] computes,
/// `cocos_imgbuild::gpt::write_gpt` writes and [`read_gpt`] reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLayout {
    /// Disk GUID (GPT header `DiskGUID`).
    pub disk_guid: Uuid,
    /// Disk size in bytes (the backup header is in its last sector).
    pub disk_size: u64,
    /// Partitions, in entry order.
    pub partitions: Vec<PlacedPartition>,
}

impl DiskLayout {
    /// Disk size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.disk_size / SECTOR_SIZE
    }

    /// Last LBA a partition may use when this layout is written: before the
    /// backup entry array and header (33 sectors).
    pub fn last_usable_lba(&self) -> u64 {
        self.sectors().saturating_sub(ENTRY_ARRAY_SECTORS + 2)
    }

    /// The partition named `name`, if any.
    pub fn partition(&self, name: &str) -> Option<&PlacedPartition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// The partition whose unique GUID is `guid`, if any.
    pub fn partition_by_guid(&self, guid: Uuid) -> Option<&PlacedPartition> {
        self.partitions.iter().find(|p| p.unique_guid == guid)
    }

    /// Checks that `cocos_imgbuild::gpt::write_gpt` can write this layout exactly: disk size a
    /// multiple of 512 with room for both GPTs, at most 128 partitions
    /// numbered 1, 2, … in order, valid names, non-nil GUIDs, unique
    /// partition GUIDs, consistent byte offsets and LBAs, partitions inside
    /// the usable area and not overlapping. Alignment is not required (the
    /// planner provides it; tables read from elsewhere may lack it).
    pub fn validate(&self) -> Result<(), GptError> {
        let invalid = |m: String| Err(GptError::InvalidLayout(m));
        if self.disk_size % SECTOR_SIZE != 0 {
            return invalid(format!(
                "disk size {} is not a multiple of {SECTOR_SIZE}",
                self.disk_size
            ));
        }
        // MBR + primary header + array, one usable sector, backup array + header.
        let min_sectors = FIRST_USABLE_LBA + 1 + ENTRY_ARRAY_SECTORS + 1;
        if self.sectors() < min_sectors {
            return invalid(format!(
                "disk size {} is smaller than the {} bytes two GPTs need",
                self.disk_size,
                min_sectors * SECTOR_SIZE
            ));
        }
        if self.disk_guid.is_nil() {
            return invalid("disk GUID is nil".into());
        }
        if self.partitions.len() > ENTRY_COUNT as usize {
            return Err(GptError::TooManyPartitions {
                count: self.partitions.len(),
            });
        }
        let last_usable = self.last_usable_lba();
        let mut guids = HashSet::new();
        for (i, p) in self.partitions.iter().enumerate() {
            let what = format!("partition {} ({:?})", p.number, p.name);
            if u32::try_from(i + 1).ok() != Some(p.number) {
                return invalid(format!(
                    "{what}: partitions must be numbered 1, 2, … in order; entry {} has number {}",
                    i + 1,
                    p.number
                ));
            }
            check_name(&p.name)?;
            if p.type_guid.is_nil() {
                return invalid(format!(
                    "{what}: type GUID is nil (that marks an unused entry)"
                ));
            }
            if p.unique_guid.is_nil() {
                return invalid(format!("{what}: unique GUID is nil"));
            }
            if !guids.insert(p.unique_guid) {
                return invalid(format!(
                    "{what}: unique GUID {} is used twice",
                    p.unique_guid
                ));
            }
            if p.size == 0 || p.size % SECTOR_SIZE != 0 || p.offset % SECTOR_SIZE != 0 {
                return invalid(format!(
                    "{what}: offset {} and size {} must be non-zero multiples of {SECTOR_SIZE}",
                    p.offset, p.size
                ));
            }
            if p.first_lba != p.offset / SECTOR_SIZE
                || Some(p.last_lba)
                    != p.first_lba
                        .checked_add(p.sectors())
                        .and_then(|end| end.checked_sub(1))
            {
                return invalid(format!(
                    "{what}: LBAs {}..={} do not match offset {} and size {}",
                    p.first_lba, p.last_lba, p.offset, p.size
                ));
            }
            if p.first_lba < FIRST_USABLE_LBA || p.last_lba > last_usable {
                return invalid(format!(
                    "{what}: LBAs {}..={} are outside the usable LBAs {FIRST_USABLE_LBA}..={last_usable}",
                    p.first_lba, p.last_lba
                ));
            }
        }
        let mut by_start: Vec<&PlacedPartition> = self.partitions.iter().collect();
        by_start.sort_by_key(|p| p.first_lba);
        for pair in by_start.windows(2) {
            if let [a, b] = pair {
                if b.first_lba <= a.last_lba {
                    return invalid(format!("partitions {} and {} overlap", a.number, b.number));
                }
            }
        }
        Ok(())
    }
}

/// Places `specs` in order: the first at 1 MiB, each size rounded up to a
/// multiple of 1 MiB, each partition right after the previous one; the disk
/// ends after the last partition plus room for the backup GPT, rounded up
/// to a multiple of 1 MiB. The result is [validated](DiskLayout::validate).
pub fn plan_layout(disk_guid: Uuid, specs: &[PartitionSpec]) -> Result<DiskLayout, GptError> {
    if specs.len() > ENTRY_COUNT as usize {
        return Err(GptError::TooManyPartitions { count: specs.len() });
    }
    let mut offset = ALIGNMENT;
    let mut partitions = Vec::with_capacity(specs.len());
    for (number, spec) in (1u32..).zip(specs) {
        check_name(&spec.name)?;
        if spec.size == 0 {
            return Err(GptError::ZeroSize {
                name: spec.name.clone(),
            });
        }
        let size = align_up(spec.size, ALIGNMENT).ok_or(GptError::Overflow)?;
        let end = offset.checked_add(size).ok_or(GptError::Overflow)?;
        partitions.push(PlacedPartition {
            number,
            name: spec.name.clone(),
            type_guid: spec.type_guid,
            unique_guid: spec.unique_guid,
            attributes: 0,
            offset,
            size,
            first_lba: offset / SECTOR_SIZE,
            last_lba: end / SECTOR_SIZE - 1,
        });
        offset = end;
    }
    let disk_size = offset
        .checked_add(BACKUP_GPT_SIZE)
        .and_then(|s| align_up(s, ALIGNMENT))
        .ok_or(GptError::Overflow)?;
    let layout = DiskLayout {
        disk_guid,
        disk_size,
        partitions,
    };
    layout.validate()?;
    Ok(layout)
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

fn check_name(name: &str) -> Result<(), GptError> {
    if name.contains('\0') {
        return Err(GptError::NameContainsNul { name: name.into() });
    }
    let units = name.encode_utf16().count();
    if units > MAX_NAME_UNITS {
        return Err(GptError::NameTooLong {
            name: name.into(),
            units,
        });
    }
    Ok(())
}

fn align_up(value: u64, alignment: u64) -> Option<u64> {
    value.checked_next_multiple_of(alignment)
}

/// GPT header as stored (UEFI 2.10 §5.3.2, table "GPT Header").
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    /// "EFI PART".
    signature: [u8; 8],
    /// 0x00010000 for revision 1.0.
    revision: U32,
    /// Bytes covered by `header_crc32`; 92 ≤ size ≤ sector size.
    header_size: U32,
    /// CRC32 of the header with this field zero.
    header_crc32: U32,
    /// Must be zero.
    reserved: U32,
    /// LBA of this header.
    my_lba: U64,
    /// LBA of the other header.
    alternate_lba: U64,
    /// First LBA partitions may use.
    first_usable_lba: U64,
    /// Last LBA partitions may use, inclusive.
    last_usable_lba: U64,
    /// Disk GUID, mixed-endian.
    disk_guid: [u8; 16],
    /// First LBA of this copy's entry array.
    partition_entry_lba: U64,
    /// Entries in the array.
    number_of_partition_entries: U32,
    /// Bytes per entry.
    size_of_partition_entry: U32,
    /// CRC32 of the entry array.
    partition_entry_array_crc32: U32,
}
const _: () = assert!(size_of::<RawHeader>() == 92);

/// Partition entry as stored (UEFI 2.10 §5.3.3, table "GPT Partition Entry").
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawEntry {
    /// Partition type GUID, mixed-endian; zero marks an unused entry.
    partition_type_guid: [u8; 16],
    /// Unique partition GUID, mixed-endian.
    unique_partition_guid: [u8; 16],
    /// First LBA.
    starting_lba: U64,
    /// Last LBA, inclusive.
    ending_lba: U64,
    /// Attribute bits.
    attributes: U64,
    /// Name, UTF-16LE, NUL-terminated unless all 36 units are used.
    partition_name: [u8; 72],
}
const _: () = assert!(size_of::<RawEntry>() == ENTRY_SIZE as usize);

const GPT_SIGNATURE: [u8; 8] = *b"EFI PART";
const GPT_REVISION_1_0: u32 = 0x0001_0000;
const HEADER_SIZE_MIN: u32 = 92;

/// A header that passed [`parse_header`].
struct Header {
    raw: RawHeader,
    /// Bytes in the entry array.
    array_bytes: u64,
}

impl Header {
    fn entry_lba(&self) -> u64 {
        self.raw.partition_entry_lba.get()
    }
    fn array_sectors(&self) -> u64 {
        self.array_bytes.div_ceil(SECTOR_SIZE)
    }
}

/// Reads and validates the partition table of `file` (a disk image or a
/// block device).
///
/// Checks: the protective MBR (signature 0x55AA and a type 0xEE record);
/// both headers (signature, revision 1.0, header size, CRC32, reserved
/// field, `MyLBA`, `AlternateLBA`, usable range, entry array placement,
/// entry size 128); both entry arrays' CRC32; that the backup header (at
/// the primary's `AlternateLBA`) describes the same table and its array is
/// byte-identical; and every used entry (non-nil unique GUID, ordered LBAs
/// inside the usable range, valid UTF-16 name, no overlaps, no duplicate
/// unique GUIDs).
///
/// There is no fallback: a damaged primary or backup is an error, never
/// silently repaired from the other copy.
///
/// The returned `disk_size` is the size the table describes (the backup
/// header's LBA + 1 sectors), which may be less than the device size if the
/// device was grown. Partitions keep their entry numbers; unused entries
/// are skipped. Reading uses positional reads; the file position is
/// restored after measuring the device's size.
pub fn read_gpt(file: &File) -> Result<DiskLayout, GptError> {
    read_from(&Device::new(file)?)
}

/// [`read_gpt`] over a disk image held in memory (the same checks; used by
/// the fuzz target and by callers that already hold the first and last
/// sectors of a disk).
pub fn read_gpt_bytes(disk: &[u8]) -> Result<DiskLayout, GptError> {
    read_from(&Device {
        source: disk,
        size: disk.len() as u64,
    })
}

fn read_from<S: ReadAt + ?Sized>(device: &Device<'_, S>) -> Result<DiskLayout, GptError> {
    let mbr = device.read(0, SECTOR_SIZE, "protective MBR")?;
    check_protective_mbr(&mbr)?;

    let primary_bytes = device.read(SECTOR_SIZE, SECTOR_SIZE, "primary GPT header")?;
    let primary = parse_header(&primary_bytes, HeaderKind::Primary, 1, device.sectors())?;
    let primary_array = device.read_array(&primary, "primary partition entry array")?;
    check_array_crc(&primary, &primary_array, HeaderKind::Primary)?;

    let backup_lba = primary.raw.alternate_lba.get();
    let backup_bytes = device.read(
        backup_lba.saturating_mul(SECTOR_SIZE),
        SECTOR_SIZE,
        "backup GPT header",
    )?;
    let backup = parse_header(
        &backup_bytes,
        HeaderKind::Backup,
        backup_lba,
        device.sectors(),
    )?;
    let p = &primary.raw;
    let b = &backup.raw;
    let mismatch = |field| Err(GptError::BackupMismatch { field });
    if b.alternate_lba.get() != p.my_lba.get() {
        return mismatch("AlternateLBA");
    }
    if b.disk_guid != p.disk_guid {
        return mismatch("DiskGUID");
    }
    if b.first_usable_lba.get() != p.first_usable_lba.get() {
        return mismatch("FirstUsableLBA");
    }
    if b.last_usable_lba.get() != p.last_usable_lba.get() {
        return mismatch("LastUsableLBA");
    }
    if b.number_of_partition_entries.get() != p.number_of_partition_entries.get() {
        return mismatch("NumberOfPartitionEntries");
    }
    if b.partition_entry_array_crc32.get() != p.partition_entry_array_crc32.get() {
        return mismatch("PartitionEntryArrayCRC32");
    }
    let backup_array = device.read_array(&backup, "backup partition entry array")?;
    check_array_crc(&backup, &backup_array, HeaderKind::Backup)?;
    if backup_array != primary_array {
        return mismatch("partition entry array");
    }

    let partitions = parse_entries(&primary, &primary_array)?;
    Ok(DiskLayout {
        disk_guid: Uuid::from_bytes_le(p.disk_guid),
        disk_size: backup_lba
            .checked_add(1)
            .and_then(|s| s.checked_mul(SECTOR_SIZE))
            .ok_or(GptError::Overflow)?,
        partitions,
    })
}

/// Positional reads from a file or from memory.
trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(buf.len()));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.len() => {
                buf.copy_from_slice(&self[start..end]);
                Ok(())
            }
            _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// The disk being read, with its size.
struct Device<'a, S: ReadAt + ?Sized> {
    source: &'a S,
    size: u64,
}

impl<'a> Device<'a, File> {
    fn new(file: &'a File) -> Result<Self, GptError> {
        let mut f = file;
        let position = f.stream_position()?;
        let size = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(position))?;
        Ok(Device { source: file, size })
    }
}

impl<S: ReadAt + ?Sized> Device<'_, S> {
    fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Reads `len` bytes at `offset`, or says which structure is cut off.
    fn read(&self, offset: u64, len: u64, what: &'static str) -> Result<Vec<u8>, GptError> {
        let truncated = GptError::Truncated {
            what,
            offset,
            end: offset.saturating_add(len),
            device_size: self.size,
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => return Err(truncated),
        }
        let Ok(len) = usize::try_from(len) else {
            return Err(truncated);
        };
        let mut buf = vec![0; len];
        match self.source.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(truncated),
            Err(e) => Err(e.into()),
        }
    }

    fn read_array(&self, header: &Header, what: &'static str) -> Result<Vec<u8>, GptError> {
        // parse_header bounded the LBA by the device size, so this cannot
        // overflow; saturate anyway and let read() report it.
        self.read(
            header.entry_lba().saturating_mul(SECTOR_SIZE),
            header.array_bytes,
            what,
        )
    }
}

/// UEFI 2.10 §5.2.3: signature 0xAA55 at byte 510 and a partition record
/// of OS type 0xEE. (Tools also write hybrid MBRs; any 0xEE record is
/// accepted.)
fn check_protective_mbr(mbr: &[u8]) -> Result<(), GptError> {
    if mbr.get(510..512) != Some(&[0x55, 0xAA][..]) {
        return Err(GptError::ProtectiveMbr("boot signature 0x55AA missing"));
    }
    let has_protective = (0..4).any(|i| mbr.get(446 + 16 * i + 4) == Some(&0xEE));
    if !has_protective {
        return Err(GptError::ProtectiveMbr(
            "no partition record of type 0xEE (GPT protective)",
        ));
    }
    Ok(())
}

/// Validates one header on its own (UEFI 2.10 §5.3.2, "the following tests
/// must be performed": signature, header CRC32, `MyLBA`), plus range checks
/// of every field against the device.
fn parse_header(
    block: &[u8],
    kind: HeaderKind,
    my_lba: u64,
    device_sectors: u64,
) -> Result<Header, GptError> {
    let invalid = |field: &'static str, detail: String| {
        Err(GptError::InvalidHeader {
            header: kind,
            field,
            detail,
        })
    };
    let Ok((raw, _)) = RawHeader::read_from_prefix(block) else {
        return invalid("HeaderSize", "block shorter than 92 bytes".into());
    };
    if raw.signature != GPT_SIGNATURE {
        return Err(GptError::BadSignature { header: kind });
    }
    let header_size = raw.header_size.get();
    if !(HEADER_SIZE_MIN..=SECTOR_SIZE as u32).contains(&header_size) {
        return invalid(
            "HeaderSize",
            format!("{header_size}, not in {HEADER_SIZE_MIN}..={SECTOR_SIZE}"),
        );
    }
    let Some(covered) = block.get(..header_size as usize) else {
        return invalid("HeaderSize", format!("{header_size} exceeds the block"));
    };
    let mut covered = covered.to_vec();
    covered[16..20].fill(0);
    let computed = crc32(&covered);
    let stored = raw.header_crc32.get();
    if computed != stored {
        return Err(GptError::HeaderCrc {
            header: kind,
            stored,
            computed,
        });
    }
    if raw.revision.get() != GPT_REVISION_1_0 {
        return invalid(
            "Revision",
            format!("{:#010x}, expected 0x00010000", raw.revision.get()),
        );
    }
    if raw.reserved.get() != 0 {
        return invalid(
            "Reserved",
            format!("{:#x}, must be zero", raw.reserved.get()),
        );
    }
    if raw.my_lba.get() != my_lba {
        return invalid(
            "MyLBA",
            format!("{}, but the header is at LBA {my_lba}", raw.my_lba.get()),
        );
    }
    let alternate = raw.alternate_lba.get();
    match kind {
        HeaderKind::Primary if alternate <= my_lba || alternate >= device_sectors => {
            return invalid(
                "AlternateLBA",
                format!("{alternate}, not between LBA {my_lba} and the device's last LBA"),
            );
        }
        HeaderKind::Backup if alternate != 1 => {
            return invalid("AlternateLBA", format!("{alternate}, must be 1"));
        }
        _ => {}
    }
    let entry_size = raw.size_of_partition_entry.get();
    if entry_size != ENTRY_SIZE {
        return invalid(
            "SizeOfPartitionEntry",
            format!("{entry_size}, only {ENTRY_SIZE} is supported"),
        );
    }
    let entries = raw.number_of_partition_entries.get();
    if entries > MAX_READ_ENTRIES {
        return invalid(
            "NumberOfPartitionEntries",
            format!("{entries}, more than the {MAX_READ_ENTRIES} supported"),
        );
    }
    let header = Header {
        array_bytes: u64::from(entries) * u64::from(entry_size),
        raw,
    };
    let raw = &header.raw;
    let first_usable = raw.first_usable_lba.get();
    let last_usable = raw.last_usable_lba.get();
    let (primary_lba, backup_lba) = match kind {
        HeaderKind::Primary => (my_lba, alternate),
        HeaderKind::Backup => (alternate, my_lba),
    };
    if first_usable <= primary_lba || first_usable > last_usable || last_usable >= backup_lba {
        return invalid(
            "FirstUsableLBA/LastUsableLBA",
            format!(
                "{first_usable}..={last_usable}, not an area between the headers at LBAs {primary_lba} and {backup_lba}"
            ),
        );
    }
    let array_start = header.entry_lba();
    let array_end = array_start.saturating_add(header.array_sectors());
    let fits = match kind {
        // Between the primary header and the first usable LBA.
        HeaderKind::Primary => array_start > my_lba && array_end <= first_usable,
        // Between the last usable LBA and the backup header.
        HeaderKind::Backup => array_start > last_usable && array_end <= my_lba,
    };
    if !fits {
        return invalid(
            "PartitionEntryLBA",
            format!(
                "entry array at LBAs {array_start}..{array_end} overlaps the header or the usable area"
            ),
        );
    }
    Ok(header)
}

fn check_array_crc(header: &Header, array: &[u8], kind: HeaderKind) -> Result<(), GptError> {
    let computed = crc32(array);
    let stored = header.raw.partition_entry_array_crc32.get();
    if computed != stored {
        return Err(GptError::EntryArrayCrc {
            header: kind,
            stored,
            computed,
        });
    }
    Ok(())
}

fn parse_entries(header: &Header, array: &[u8]) -> Result<Vec<PlacedPartition>, GptError> {
    let first_usable = header.raw.first_usable_lba.get();
    let last_usable = header.raw.last_usable_lba.get();
    let mut partitions: Vec<PlacedPartition> = Vec::new();
    let mut guids = HashSet::new();
    for (number, chunk) in (1u32..).zip(array.chunks_exact(ENTRY_SIZE as usize)) {
        let invalid = |detail: String| Err(GptError::InvalidEntry { number, detail });
        let Ok(raw) = RawEntry::read_from_bytes(chunk) else {
            return invalid("entry shorter than 128 bytes".into());
        };
        let type_guid = Uuid::from_bytes_le(raw.partition_type_guid);
        if type_guid.is_nil() {
            continue; // UEFI 2.10 §5.3.3: a zero type GUID marks an unused entry.
        }
        let unique_guid = Uuid::from_bytes_le(raw.unique_partition_guid);
        if unique_guid.is_nil() {
            return invalid("unique partition GUID is nil".into());
        }
        if !guids.insert(unique_guid) {
            return invalid(format!("unique partition GUID {unique_guid} is used twice"));
        }
        let first_lba = raw.starting_lba.get();
        let last_lba = raw.ending_lba.get();
        if first_lba > last_lba || first_lba < first_usable || last_lba > last_usable {
            return invalid(format!(
                "LBAs {first_lba}..={last_lba} are not inside the usable LBAs {first_usable}..={last_usable}"
            ));
        }
        let units: Vec<u16> = raw
            .partition_name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let Ok(name) = String::from_utf16(&units) else {
            return invalid("name is not valid UTF-16".into());
        };
        // last_usable < device sectors, so these cannot overflow; check anyway.
        let (Some(offset), Some(size)) = (
            first_lba.checked_mul(SECTOR_SIZE),
            (last_lba - first_lba + 1).checked_mul(SECTOR_SIZE),
        ) else {
            return Err(GptError::Overflow);
        };
        partitions.push(PlacedPartition {
            number,
            name,
            type_guid,
            unique_guid,
            attributes: raw.attributes.get(),
            offset,
            size,
            first_lba,
            last_lba,
        });
    }
    let mut by_start: Vec<&PlacedPartition> = partitions.iter().collect();
    by_start.sort_by_key(|p| p.first_lba);
    for pair in by_start.windows(2) {
        if let [a, b] = pair {
            if b.first_lba <= a.last_lba {
                return Err(GptError::InvalidEntry {
                    number: b.number,
                    detail: format!("overlaps partition {}", a.number),
                });
            }
        }
    }
    Ok(partitions)
}

/// CRC-32 as GPT uses it (UEFI 2.10 §5.3.2 refers to the CRC32 of
/// Appendix F / ISO 3309 / IEEE 802.3): CRC-32/ISO-HDLC, the algorithm the
/// `gpt` crate writes with, from the same `crc` crate.
fn crc32(data: &[u8]) -> u32 {
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
