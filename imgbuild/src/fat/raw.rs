//! FAT on-disk structures, exactly as stored: the boot sector with its BPB,
//! the FSInfo sector, and the short and long-name directory entries.
//!
//! Plain `#[repr(C)]` structs with little-endian fields (zerocopy), a size
//! assertion each, and every field documented with its name, offset and
//! section in the FAT spec (fatgen103 1.03; see [`super`]). Nothing here checks a value: the
//! reader ([`super::reader`]) checks what it reads, and the post-pass after
//! `fatfs` ([`super::fixup`], [`super::reserved`]) changes fields in place.
//!
//! ```text
//! boot sector (FAT spec, 'Boot Sector and BPB')
//!  offset size  FAT12/16                         FAT32
//!      0    3   BS_jmpBoot                        BS_jmpBoot
//!      3    8   BS_OEMName                        BS_OEMName
//!     11   25   Bpb (BPB_BytsPerSec..BPB_TotSec32, common to all three)
//!     36   26   ExtendedBootRecord (BS_DrvNum..)  Fat32Bpb (BPB_FATSz32..BPB_Reserved)
//!     62  448   boot code
//!     64   26                                     ExtendedBootRecord (BS_DrvNum..)
//!     90  420                                     boot code
//!    510    2   signature 0x55 0xAA               signature 0x55 0xAA
//! ```

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes 510 and 511 of the boot sector: 0x55, 0xAA (FAT spec, 'Boot
/// Sector and BPB', the note after the FAT32 table).
pub const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];

/// `BS_BootSig` when `BS_VolID`, `BS_VolLab` and `BS_FilSysType` are
/// present (FAT spec, 'Boot Sector and BPB').
pub const EXTENDED_BOOT_SIGNATURE: u8 = 0x29;

/// The BPB fields common to FAT12, FAT16 and FAT32, at offset 11 of the
/// boot sector (FAT spec, 'Boot Sector and BPB', "BPB structure common to
/// FAT12, FAT16, and FAT32 implementations").
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Bpb {
    /// `BPB_BytsPerSec` (offset 11): bytes per sector; 512, 1024, 2048 or
    /// 4096.
    pub bytes_per_sector: U16,
    /// `BPB_SecPerClus` (offset 13): sectors per cluster; a power of two
    /// from 1 to 128.
    pub sectors_per_cluster: u8,
    /// `BPB_RsvdSecCnt` (offset 14): sectors before the first FAT, from
    /// sector 0; never 0.
    pub reserved_sectors: U16,
    /// `BPB_NumFATs` (offset 16): number of FATs; 2 is recommended.
    pub num_fats: u8,
    /// `BPB_RootEntCnt` (offset 17): 32-byte entries of the fixed root
    /// directory of FAT12/16; 0 on FAT32.
    pub root_entries: U16,
    /// `BPB_TotSec16` (offset 19): total sectors when below 0x10000, else 0
    /// and `BPB_TotSec32` holds the count (always 0 on FAT32).
    pub total_sectors_16: U16,
    /// `BPB_Media` (offset 21): 0xF8 for fixed media.
    pub media: u8,
    /// `BPB_FATSz16` (offset 22): sectors per FAT on FAT12/16; 0 on FAT32,
    /// where `BPB_FATSz32` holds it.
    pub fat_size_16: U16,
    /// `BPB_SecPerTrk` (offset 24): sectors per track for interrupt 0x13.
    pub sectors_per_track: U16,
    /// `BPB_NumHeads` (offset 26): heads for interrupt 0x13.
    pub num_heads: U16,
    /// `BPB_HiddSec` (offset 28): sectors before the partition holding the
    /// volume (its start on the disk).
    pub hidden_sectors: U32,
    /// `BPB_TotSec32` (offset 32): total sectors when `BPB_TotSec16` is 0.
    pub total_sectors_32: U32,
}

const _: () = assert!(size_of::<Bpb>() == 25);

/// The BPB fields only FAT32 has, at offset 36 of the boot sector (FAT
/// spec, 'Boot Sector and BPB', "FAT32 Structure Starting at Offset 36").
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Fat32Bpb {
    /// `BPB_FATSz32` (offset 36): sectors per FAT.
    pub fat_size_32: U32,
    /// `BPB_ExtFlags` (offset 40): FAT mirroring; bits 0-3 the active FAT
    /// when bit 7 says only one is active.
    pub ext_flags: U16,
    /// `BPB_FSVer` (offset 42): version 0:0.
    pub fs_version: U16,
    /// `BPB_RootClus` (offset 44): first cluster of the root directory,
    /// usually 2.
    pub root_cluster: U32,
    /// `BPB_FSInfo` (offset 48): sector of the [`FsInfo`] structure in the
    /// reserved area, usually 1.
    pub fs_info_sector: U16,
    /// `BPB_BkBootSec` (offset 50): sector of the backup boot sector in the
    /// reserved area; 6 is recommended.
    pub backup_boot_sector: U16,
    /// `BPB_Reserved` (offset 52): zero.
    pub reserved: [u8; 12],
}

const _: () = assert!(size_of::<Fat32Bpb>() == 28);

/// The fields after the BPB that name the volume: at offset 36 on
/// FAT12/16, at offset 64 on FAT32 (FAT spec, 'Boot Sector and BPB', "Fat12
/// and Fat16 Structure Starting at Offset 36" and "FAT32 Structure Starting
/// at Offset 36"; the FAT32 offsets are given in parentheses).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ExtendedBootRecord {
    /// `BS_DrvNum` (36, FAT32 64): interrupt 0x13 drive number; 0x80 for
    /// hard disks.
    pub drive_number: u8,
    /// `BS_Reserved1` (37, FAT32 65): zero.
    pub reserved: u8,
    /// `BS_BootSig` (38, FAT32 66): [`EXTENDED_BOOT_SIGNATURE`] when the
    /// next three fields are present.
    pub boot_signature: u8,
    /// `BS_VolID` (39, FAT32 67): volume serial number.
    pub volume_id: U32,
    /// `BS_VolLab` (43, FAT32 71): volume label, space padded; `NO NAME`
    /// when there is none.
    pub volume_label: [u8; 11],
    /// `BS_FilSysType` (54, FAT32 82): `FAT12   `, `FAT16   `, `FAT     `
    /// or `FAT32   `; informational only, never used to tell the type.
    pub fs_type: [u8; 8],
}

const _: () = assert!(size_of::<ExtendedBootRecord>() == 26);

/// The boot sector of a FAT12 or FAT16 volume (FAT spec, 'Boot Sector and
/// BPB').
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BootSectorFat16 {
    /// `BS_jmpBoot` (offset 0): jump to the boot code.
    pub jump: [u8; 3],
    /// `BS_OEMName` (offset 3): name of the formatting system.
    pub oem_name: [u8; 8],
    /// The common BPB (offset 11).
    pub bpb: Bpb,
    /// Drive number, volume ID and label (offset 36).
    pub ebr: ExtendedBootRecord,
    /// Boot code (offset 62), not interpreted.
    pub boot_code: [u8; 448],
    /// [`BOOT_SIGNATURE`] (offset 510).
    pub signature: [u8; 2],
}

const _: () = assert!(size_of::<BootSectorFat16>() == 512);

/// The boot sector of a FAT32 volume (FAT spec, 'Boot Sector and BPB'),
/// also written as the backup boot sector at `BPB_BkBootSec` (FAT spec,
/// 'FAT32 FSInfo Sector Structure and Backup Boot Sector').
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BootSectorFat32 {
    /// `BS_jmpBoot` (offset 0): jump to the boot code.
    pub jump: [u8; 3],
    /// `BS_OEMName` (offset 3): name of the formatting system.
    pub oem_name: [u8; 8],
    /// The common BPB (offset 11).
    pub bpb: Bpb,
    /// The FAT32 BPB (offset 36).
    pub fat32: Fat32Bpb,
    /// Drive number, volume ID and label (offset 64).
    pub ebr: ExtendedBootRecord,
    /// Boot code (offset 90), not interpreted.
    pub boot_code: [u8; 420],
    /// [`BOOT_SIGNATURE`] (offset 510).
    pub signature: [u8; 2],
}

const _: () = assert!(size_of::<BootSectorFat32>() == 512);

/// `FSI_LeadSig` (FAT spec, 'FAT32 FSInfo Sector Structure and Backup Boot
/// Sector').
pub const FSINFO_LEAD_SIGNATURE: u32 = 0x4161_5252;
/// `FSI_StrucSig` (same section).
pub const FSINFO_STRUCT_SIGNATURE: u32 = 0x6141_7272;
/// `FSI_TrailSig` (same section).
pub const FSINFO_TRAIL_SIGNATURE: u32 = 0xAA55_0000;

/// The FAT32 FSInfo sector, at sector `BPB_FSInfo` (FAT spec, 'FAT32
/// FSInfo Sector Structure and Backup Boot Sector'). Its two counts are
/// hints that may be wrong, and are never trusted by the reader.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FsInfo {
    /// `FSI_LeadSig` (offset 0): [`FSINFO_LEAD_SIGNATURE`].
    pub lead_signature: U32,
    /// `FSI_Reserved1` (offset 4): zero.
    pub reserved1: [u8; 480],
    /// `FSI_StrucSig` (offset 484): [`FSINFO_STRUCT_SIGNATURE`].
    pub struct_signature: U32,
    /// `FSI_Free_Count` (offset 488): last known count of free clusters,
    /// 0xFFFFFFFF when unknown.
    pub free_count: U32,
    /// `FSI_Nxt_Free` (offset 492): the cluster the driver should start
    /// looking for free clusters at, 0xFFFFFFFF when unknown. `fatfs`
    /// allocates from it, which is how the reserved room is placed.
    pub next_free: U32,
    /// `FSI_Reserved2` (offset 496): zero.
    pub reserved2: [u8; 12],
    /// `FSI_TrailSig` (offset 508): [`FSINFO_TRAIL_SIGNATURE`].
    pub trail_signature: U32,
}

const _: () = assert!(size_of::<FsInfo>() == 512);

/// Size of a directory entry, short or long-name (FAT spec, 'FAT
/// Directory Structure' and 'FAT Long Directory Entries').
pub const DIR_ENTRY_SIZE: u64 = 32;

/// `ATTR_VOLUME_ID` (FAT spec, 'FAT Directory Structure', `DIR_Attr`).
pub const ATTR_VOLUME_ID: u8 = 0x08;
/// `ATTR_DIRECTORY` (FAT spec, 'FAT Directory Structure', `DIR_Attr`).
pub const ATTR_DIRECTORY: u8 = 0x10;
/// `ATTR_LONG_NAME`: the attribute byte of a long-name entry (FAT spec,
/// 'FAT Long Directory Entries').
pub const ATTR_LONG_NAME: u8 = 0x0F;
/// `ATTR_LONG_NAME_MASK`: the attribute bits compared with
/// [`ATTR_LONG_NAME`] to tell a long-name entry (same section).
pub const ATTR_LONG_NAME_MASK: u8 = 0x3F;

/// `DIR_Name[0]` of a free (deleted) entry (FAT spec, 'FAT Directory
/// Structure').
pub const DIR_ENTRY_FREE: u8 = 0xE5;
/// `DIR_Name[0]` of a free entry after which every entry is free: the end
/// of the directory (same section).
pub const DIR_ENTRY_END: u8 = 0x00;
/// `DIR_Name[0]` standing for a name whose first byte really is 0xE5, the
/// KANJI lead byte (same section).
pub const DIR_ENTRY_KANJI_E5: u8 = 0x05;

/// `DIR_Name` of the `.` entry (FAT spec, 'FAT Directory Structure').
pub const DOT_NAME: [u8; 11] = *b".          ";
/// `DIR_Name` of the `..` entry (same section).
pub const DOTDOT_NAME: [u8; 11] = *b"..         ";

/// `DIR_NTRes` flag, set by Windows NT and mtools (not in the FAT spec,
/// which calls the byte reserved): the base of the 8.3 name is lower case.
pub const NTRES_LOWER_BASE: u8 = 0x08;
/// `DIR_NTRes` flag: the extension of the 8.3 name is lower case.
pub const NTRES_LOWER_EXT: u8 = 0x10;

/// A short (8.3) directory entry (FAT spec, 'FAT Directory Structure').
/// Also the layout of the volume-label entry, and of `.` and `..`.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DirEntry {
    /// `DIR_Name` (offset 0): 8-byte base and 3-byte extension, space
    /// padded; `[0]` is also [`DIR_ENTRY_FREE`], [`DIR_ENTRY_END`] or
    /// [`DIR_ENTRY_KANJI_E5`].
    pub name: [u8; 11],
    /// `DIR_Attr` (offset 11): `ATTR_*` bits.
    pub attr: u8,
    /// `DIR_NTRes` (offset 12): reserved for Windows NT, which keeps the
    /// case of the 8.3 name here ([`NTRES_LOWER_BASE`], [`NTRES_LOWER_EXT`]).
    pub nt_res: u8,
    /// `DIR_CrtTimeTenth` (offset 13): creation time, tenths of a second
    /// (0-199, the odd second of the 2-second `DIR_CrtTime`).
    pub create_time_tenth: u8,
    /// `DIR_CrtTime` (offset 14): creation time (FAT spec, 'FAT Directory
    /// Structure', Date and Time Formats).
    pub create_time: U16,
    /// `DIR_CrtDate` (offset 16): creation date.
    pub create_date: U16,
    /// `DIR_LstAccDate` (offset 18): last access date.
    pub access_date: U16,
    /// `DIR_FstClusHI` (offset 20): high word of the first cluster (0 on
    /// FAT12/16).
    pub first_cluster_hi: U16,
    /// `DIR_WrtTime` (offset 22): last write time.
    pub write_time: U16,
    /// `DIR_WrtDate` (offset 24): last write date.
    pub write_date: U16,
    /// `DIR_FstClusLO` (offset 26): low word of the first cluster.
    pub first_cluster_lo: U16,
    /// `DIR_FileSize` (offset 28): size of a file in bytes; 0 for a
    /// directory.
    pub file_size: U32,
}

const _: () = assert!(size_of::<DirEntry>() == DIR_ENTRY_SIZE as usize);

impl DirEntry {
    /// The first cluster: `DIR_FstClusHI:DIR_FstClusLO` (0 for an empty
    /// file, and for a `..` entry pointing at the root).
    pub fn first_cluster(&self) -> u32 {
        u32::from(self.first_cluster_hi.get()) << 16 | u32::from(self.first_cluster_lo.get())
    }

    /// Sets `DIR_FstClusHI:DIR_FstClusLO`.
    pub fn set_first_cluster(&mut self, cluster: u32) {
        self.first_cluster_hi = U16::new((cluster >> 16) as u16);
        self.first_cluster_lo = U16::new(cluster as u16);
    }

    /// Whether the entry is a long-name entry in disguise (FAT spec, 'FAT
    /// Long Directory Entries': `DIR_Attr & ATTR_LONG_NAME_MASK ==
    /// ATTR_LONG_NAME`).
    pub fn is_long_name(&self) -> bool {
        self.attr & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME
    }

    /// The checksum of `DIR_Name` that the long-name entries of this entry
    /// carry in `LDIR_Chksum` (FAT spec, 'FAT Long Directory Entries',
    /// `ChkSum`).
    pub fn name_checksum(&self) -> u8 {
        self.name
            .iter()
            .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
    }
}

/// Characters of a long name held by one long-name entry (FAT spec, 'FAT
/// Long Directory Entries': 5 + 6 + 2 UTF-16 units).
pub const LFN_CHARS_PER_ENTRY: usize = 13;

/// `LDIR_Ord` flag of the last long-name entry of a set, which is stored
/// first (FAT spec, 'FAT Long Directory Entries', `LAST_LONG_ENTRY`).
pub const LAST_LONG_ENTRY: u8 = 0x40;

/// `LDIR_Ord` bits holding the entry's position in the set, from 1: a
/// name of at most 255 characters takes at most 20 entries (FAT spec, 'FAT
/// Long Directory Entries').
pub const LONG_ENTRY_ORDINAL_MASK: u8 = 0x1F;

/// A long-name directory entry: 13 UTF-16 units of a name, stored before
/// its short entry, last piece first (FAT spec, 'FAT Long Directory
/// Entries').
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LongNameEntry {
    /// `LDIR_Ord` (offset 0): position in the set from 1, or'ed with
    /// [`LAST_LONG_ENTRY`] on the last one.
    pub ord: u8,
    /// `LDIR_Name1` (offset 1): characters 1-5.
    pub name1: [U16; 5],
    /// `LDIR_Attr` (offset 11): [`ATTR_LONG_NAME`].
    pub attr: u8,
    /// `LDIR_Type` (offset 12): 0 for a name piece.
    pub entry_type: u8,
    /// `LDIR_Chksum` (offset 13): [`DirEntry::name_checksum`] of the short
    /// entry the name belongs to.
    pub checksum: u8,
    /// `LDIR_Name2` (offset 14): characters 6-11.
    pub name2: [U16; 6],
    /// `LDIR_FstClusLO` (offset 26): zero.
    pub first_cluster_lo: U16,
    /// `LDIR_Name3` (offset 28): characters 12-13.
    pub name3: [U16; 2],
}

const _: () = assert!(size_of::<LongNameEntry>() == DIR_ENTRY_SIZE as usize);

impl LongNameEntry {
    /// The 13 UTF-16 units, in name order (a name ends at a 0 unit; the
    /// rest of the last piece is padded with 0xFFFF).
    pub fn units(&self) -> impl Iterator<Item = u16> + '_ {
        self.name1
            .iter()
            .chain(&self.name2)
            .chain(&self.name3)
            .map(|u| u.get())
    }
}

/// FAT32 entries use the low 28 bits; the high 4 are reserved (FAT spec,
/// 'FAT Data Structure').
pub const FAT32_ENTRY_MASK: u32 = 0x0FFF_FFFF;

/// A FAT entry at or above this value ends a cluster chain; the value
/// just below marks a bad cluster (FAT spec, 'FAT Data Structure'), for
/// FAT12, FAT16 and FAT32.
pub const FAT12_EOC_MIN: u32 = 0xFF8;
/// FAT16 end of chain (see [`FAT12_EOC_MIN`]).
pub const FAT16_EOC_MIN: u32 = 0xFFF8;
/// FAT32 end of chain (see [`FAT12_EOC_MIN`]).
pub const FAT32_EOC_MIN: u32 = 0x0FFF_FFF8;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Offsets from the tables of FAT spec, 'Boot Sector and BPB', 'FAT32
    /// FSInfo Sector Structure and Backup Boot Sector', 'FAT Directory
    /// Structure' and 'FAT Long Directory Entries'.
    #[test]
    fn field_offsets_are_the_specs() {
        assert_eq!(offset_of!(BootSectorFat32, bpb.bytes_per_sector), 11);
        assert_eq!(offset_of!(BootSectorFat32, bpb.root_entries), 17);
        assert_eq!(offset_of!(BootSectorFat32, bpb.fat_size_16), 22);
        assert_eq!(offset_of!(BootSectorFat32, bpb.hidden_sectors), 28);
        assert_eq!(offset_of!(BootSectorFat32, bpb.total_sectors_32), 32);
        assert_eq!(offset_of!(BootSectorFat32, fat32.root_cluster), 44);
        assert_eq!(offset_of!(BootSectorFat32, fat32.backup_boot_sector), 50);
        assert_eq!(offset_of!(BootSectorFat32, ebr.volume_id), 67);
        assert_eq!(offset_of!(BootSectorFat32, ebr.volume_label), 71);
        assert_eq!(offset_of!(BootSectorFat32, ebr.fs_type), 82);
        assert_eq!(offset_of!(BootSectorFat32, signature), 510);
        assert_eq!(offset_of!(BootSectorFat16, ebr.volume_id), 39);
        assert_eq!(offset_of!(BootSectorFat16, ebr.volume_label), 43);
        assert_eq!(offset_of!(BootSectorFat16, ebr.fs_type), 54);
        assert_eq!(offset_of!(BootSectorFat16, signature), 510);
        assert_eq!(offset_of!(FsInfo, struct_signature), 484);
        assert_eq!(offset_of!(FsInfo, next_free), 492);
        assert_eq!(offset_of!(FsInfo, trail_signature), 508);
        assert_eq!(offset_of!(DirEntry, first_cluster_hi), 20);
        assert_eq!(offset_of!(DirEntry, first_cluster_lo), 26);
        assert_eq!(offset_of!(DirEntry, file_size), 28);
        assert_eq!(offset_of!(LongNameEntry, checksum), 13);
        assert_eq!(offset_of!(LongNameEntry, name2), 14);
        assert_eq!(offset_of!(LongNameEntry, name3), 28);
    }
}
