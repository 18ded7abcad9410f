//! Planning a partition table: [`PartitionSpec`]s placed in order, 1 MiB
//! aligned, into a [`DiskLayout`] (plain data, serialisable into
//! `manifest.json`), and the checks that a layout can be written exactly.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    ALIGNMENT, BACKUP_GPT_SIZE, ENTRY_ARRAY_SECTORS, ENTRY_COUNT, FIRST_USABLE_LBA, GptError,
    MAX_NAME_UNITS, SECTOR_SIZE,
};

/// A partition to place: what [`plan_layout`] takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    /// Partition name (at most 36 UTF-16 code units, no NUL).
    pub name: String,
    /// Partition type GUID (e.g. [`ESP_TYPE`](super::ESP_TYPE)).
    pub type_guid: Uuid,
    /// Unique partition GUID (seed-derived, or from [`verity_partition_uuids`](super::verity_partition_uuids)).
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
    /// Attribute bits (e.g. [`ATTR_READ_ONLY`](super::ATTR_READ_ONLY)); the planner sets none.
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
/// `cocos_imgbuild::gpt::write_gpt` writes and [`read_gpt`](super::read_gpt) reads back.
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
