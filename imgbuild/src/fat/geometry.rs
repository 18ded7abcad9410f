//! The FAT32 layout `fatfs::format_volume` writes for a given size: the
//! cluster size from the FAT spec's table, the FAT size from `fatfs`'s
//! formula, and where the FATs, the FSInfo sector and each cluster lie.
//! The writer and the post-pass after `fatfs` ([`super::fixup`],
//! [`super::reserved`]) compute every offset from here.

use super::raw::FsInfo;
use super::{FatError, SECTOR_SIZE};

/// A volume of this many clusters or more is FAT32; fewer is FAT12/16
/// (FAT spec, 'FAT Type Determination').
pub(super) const FAT32_MIN_CLUSTERS: u64 = 65525;

/// Reserved sectors `fatfs` puts before the first FAT on FAT32 (the boot
/// sector, FSInfo at sector 1, the backup boot sector at sector 6).
pub(super) const FATFS_RESERVED_SECTORS: u64 = 8;

/// Number of FATs (FAT spec, 'Boot Sector and BPB', `BPB_NumFATs`: "the
/// value 2 is recommended").
pub(super) const NUM_FATS: u64 = 2;

/// Byte offset of the FSInfo sector: `BPB_FSInfo` is 1 as written by
/// `fatfs` (FAT spec, 'Boot Sector and BPB': "usually 1").
pub(super) const FSINFO_OFFSET: u64 = SECTOR_SIZE;

/// `BPB_BkBootSec` as written by `fatfs` (FAT spec, 'Boot Sector and BPB',
/// recommends 6).
pub(super) const BACKUP_BOOT_SECTOR: u64 = 6;

/// `BPB_RootClus` as written by `fatfs` (FAT spec, 'Boot Sector and BPB':
/// "usually 2").
pub(super) const ROOT_CLUSTER: u32 = 2;

/// Bytes per FAT32 entry (FAT spec, 'FAT Data Structure').
const FAT32_ENTRY_BYTES: u64 = 4;

/// Byte offset in the volume of `FSI_Nxt_Free`, the next-free-cluster hint
/// in the FSInfo sector (FAT spec, 'FAT32 FSInfo Sector Structure and
/// Backup Boot Sector': byte 492).
pub(super) const FSINFO_NEXT_FREE: u64 =
    FSINFO_OFFSET + std::mem::offset_of!(FsInfo, next_free) as u64;

/// FAT32 layout as `fatfs::format_volume` computes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    /// `BPB_TotSec32`.
    pub(super) total_sectors: u64,
    /// `BPB_SecPerClus`.
    pub(super) sectors_per_cluster: u64,
    /// `BPB_FATSz32`.
    pub(super) sectors_per_fat: u64,
    /// Data clusters, numbered 2..clusters + 2 (FAT spec, 'FAT Type
    /// Determination', `CountofClusters`).
    pub(super) clusters: u64,
}

impl Geometry {
    /// Bytes per cluster.
    pub(super) fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * SECTOR_SIZE
    }

    /// The first sector of the data region (cluster 2): after the
    /// reserved sectors and the FATs (FAT spec, 'FAT Data Structure',
    /// `FirstDataSector`; FAT32 has no fixed root directory).
    pub(super) fn first_data_sector(&self) -> u64 {
        FATFS_RESERVED_SECTORS + NUM_FATS * self.sectors_per_fat
    }

    /// Byte offset of data cluster `cluster` (2 or more) in the volume
    /// (FAT spec, 'FAT Data Structure', `FirstSectorofCluster`).
    pub(super) fn cluster_offset(&self, cluster: u32) -> u64 {
        (self.first_data_sector() + u64::from(cluster - 2) * self.sectors_per_cluster) * SECTOR_SIZE
    }

    /// Byte offset of cluster `cluster`'s entry in the first FAT, which
    /// follows the reserved sectors (FAT spec, 'FAT Data Structure',
    /// `FATOffset = N * 4` on FAT32).
    pub(super) fn fat_entry_offset(&self, cluster: u64) -> u64 {
        FATFS_RESERVED_SECTORS * SECTOR_SIZE + FAT32_ENTRY_BYTES * cluster
    }
}

/// Sectors per cluster for a FAT32 volume of `total_sectors` 512-byte
/// sectors: `DskTableFAT32` of FAT spec, 'FAT Volume Initialization' (0 = too
/// small for FAT32).
fn fat32_sectors_per_cluster(total_sectors: u64) -> u64 {
    match total_sectors {
        0..=66_600 => 0,               // up to 32.5 MB
        66_601..=532_480 => 1,         // up to 260 MB: 0.5 KiB clusters
        532_481..=16_777_216 => 8,     // up to 8 GB: 4 KiB clusters
        16_777_217..=33_554_432 => 16, // up to 16 GB: 8 KiB clusters
        33_554_433..=67_108_864 => 32, // up to 32 GB: 16 KiB clusters
        _ => 64,                       // larger: 32 KiB clusters
    }
}

/// Sectors per FAT with `fatfs`'s formula (a variant of the `FATSz` computation in
/// FAT spec, 'FAT Volume Initialization', that
/// also counts the two reserved FAT entries, so it is never too small).
fn fatfs_sectors_per_fat(total_sectors: u64, sectors_per_cluster: u64) -> u64 {
    let t0 = total_sectors - FATFS_RESERVED_SECTORS;
    let t1 = t0 + 2 * sectors_per_cluster;
    // 32 bits per FAT32 entry (FAT spec, 'FAT Data Structure').
    let t2 = sectors_per_cluster * SECTOR_SIZE * 8 / 32 + NUM_FATS;
    t1.div_ceil(t2)
}

fn geometry_for(total_sectors: u64, sectors_per_cluster: u64) -> Geometry {
    let sectors_per_fat = fatfs_sectors_per_fat(total_sectors, sectors_per_cluster);
    let data = total_sectors.saturating_sub(FATFS_RESERVED_SECTORS + NUM_FATS * sectors_per_fat);
    Geometry {
        total_sectors,
        sectors_per_cluster,
        sectors_per_fat,
        clusters: data / sectors_per_cluster,
    }
}

/// The smallest size (bytes) accepted for FAT32.
pub(super) fn fat32_min_size() -> u64 {
    let mut sectors = 66_601;
    while geometry_for(sectors, 1).clusters < FAT32_MIN_CLUSTERS {
        sectors += 1;
    }
    sectors * SECTOR_SIZE
}

pub(super) fn fat32_geometry(size: u64) -> Result<Geometry, FatError> {
    if size % SECTOR_SIZE != 0 {
        return Err(FatError::InvalidSize {
            size,
            reason: format!("not a multiple of the {SECTOR_SIZE}-byte sector"),
        });
    }
    let total_sectors = size / SECTOR_SIZE;
    // BPB_TotSec32 is 32 bits (FAT spec, 'Boot Sector and BPB').
    if total_sectors > u64::from(u32::MAX) {
        return Err(FatError::InvalidSize {
            size,
            reason: format!(
                "larger than FAT32's {} bytes (2^32 - 1 sectors)",
                u64::from(u32::MAX) * SECTOR_SIZE
            ),
        });
    }
    let too_small = || FatError::TooSmallForFat32 {
        size,
        min: fat32_min_size(),
    };
    let spc = fat32_sectors_per_cluster(total_sectors);
    if spc == 0 {
        return Err(too_small());
    }
    let g = geometry_for(total_sectors, spc);
    if g.clusters < FAT32_MIN_CLUSTERS {
        return Err(too_small());
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::DEFAULT_ESP_SIZE;

    #[test]
    fn cluster_table_and_min_size() {
        assert_eq!(
            fat32_geometry(DEFAULT_ESP_SIZE)
                .unwrap()
                .sectors_per_cluster,
            1
        );
        assert_eq!(fat32_geometry(64 << 20).unwrap().sectors_per_cluster, 1);
        assert_eq!(fat32_geometry(1 << 30).unwrap().sectors_per_cluster, 8);
        let min = fat32_min_size();
        assert!(fat32_geometry(min).is_ok());
        assert!(matches!(
            fat32_geometry(min - SECTOR_SIZE),
            Err(FatError::TooSmallForFat32 { .. })
        ));
    }

    /// The offset the post-pass patches, from the FAT spec's table.
    #[test]
    fn fsinfo_hint_is_where_the_spec_puts_it() {
        assert_eq!(FSINFO_NEXT_FREE, 512 + 492);
    }
}
