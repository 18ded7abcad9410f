//! ext4 on-disk structures, as stored (little-endian).
//!
//! Field names and offsets follow the kernel's
//! `Documentation/filesystems/ext4/` ("Super Block", "Block Group
//! Descriptors", "Index Nodes", "The Contents of inode.i_block", "Directory
//! Entries", "Hash Tree Directories", "Extended Attributes") and
//! `fs/ext4/ext4.h`. Only what a read-only image without a journal, without
//! 64-bit block numbers and without metadata checksums needs is named; the
//! rest is kept as reserved bytes so the sizes match the format.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `s_magic`.
pub const EXT4_MAGIC: u16 = 0xEF53;
/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;

/// `s_feature_compat`: extended attributes.
pub const COMPAT_EXT_ATTR: u32 = 0x0008;
/// `s_feature_compat`: hashed directory indexes.
pub const COMPAT_DIR_INDEX: u32 = 0x0020;
/// `s_feature_incompat`: directory entries record the file type.
pub const INCOMPAT_FILETYPE: u32 = 0x0002;
/// `s_feature_incompat`: files use extents.
pub const INCOMPAT_EXTENTS: u32 = 0x0040;
/// `s_feature_incompat`: group metadata may live outside its group.
pub const INCOMPAT_FLEX_BG: u32 = 0x0200;
/// `s_feature_ro_compat`: superblock backups only in groups 0, 1 and powers of 3, 5, 7.
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
/// `s_feature_ro_compat`: files may exceed 2 GiB.
pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
/// `s_feature_ro_compat`: directories may have more than 65000 subdirectories.
pub const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
/// `uninit_bg`: group descriptors carry a checksum, unused-inode counts
/// and the uninit flags, so unused parts of inode tables need not be
/// written.
pub const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
/// Group flag: the inode bitmap and table are not initialised.
pub const BG_INODE_UNINIT: u16 = 0x0001;
/// Group flag: the block bitmap is not initialised.
pub const BG_BLOCK_UNINIT: u16 = 0x0002;
/// Group flag: the inode table is zeroed.
pub const BG_INODE_ZEROED: u16 = 0x0004;
/// `s_feature_ro_compat`: inodes have `i_extra_isize` bytes of extra fields.
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;

/// `s_flags`: directory hashes treat name bytes as unsigned.
pub const FLAGS_UNSIGNED_HASH: u32 = 0x0002;
/// `s_def_hash_version` and `dx_root_info.hash_version`: half MD4.
pub const DX_HASH_HALF_MD4: u8 = 1;

/// `i_flags`: the directory has a hash tree index.
pub const INODE_INDEX_FL: u32 = 0x0000_1000;
/// `i_flags`: `i_block` holds an extent tree.
pub const INODE_EXTENTS_FL: u32 = 0x0008_0000;

/// `eh_magic`.
pub const EXTENT_MAGIC: u16 = 0xF30A;
/// Longest initialized extent, in blocks.
pub const MAX_EXTENT_LEN: u32 = 32768;

/// `h_magic` of an extended attribute block.
pub const XATTR_MAGIC: u32 = 0xEA02_0000;

/// The superblock (1024 bytes at byte 1024, backups at the start of groups).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Superblock {
    /// Total inodes.
    pub s_inodes_count: U32,
    /// Total blocks.
    pub s_blocks_count_lo: U32,
    /// Blocks reserved for the superuser.
    pub s_r_blocks_count_lo: U32,
    /// Free blocks.
    pub s_free_blocks_count_lo: U32,
    /// Free inodes.
    pub s_free_inodes_count: U32,
    /// First data block: 0 for block sizes above 1 KiB.
    pub s_first_data_block: U32,
    /// Block size is 2 ^ (10 + this).
    pub s_log_block_size: U32,
    /// Cluster size is 2 ^ (10 + this); equal to the block size without bigalloc.
    pub s_log_cluster_size: U32,
    /// Blocks per group.
    pub s_blocks_per_group: U32,
    /// Clusters per group.
    pub s_clusters_per_group: U32,
    /// Inodes per group.
    pub s_inodes_per_group: U32,
    /// Last mount time.
    pub s_mtime: U32,
    /// Last write time.
    pub s_wtime: U32,
    /// Mounts since the last check.
    pub s_mnt_count: U16,
    /// Mounts before a check is forced (-1: never).
    pub s_max_mnt_count: U16,
    /// 0xEF53.
    pub s_magic: U16,
    /// 1: cleanly unmounted.
    pub s_state: U16,
    /// Behaviour on errors (1: continue).
    pub s_errors: U16,
    /// Minor revision.
    pub s_minor_rev_level: U16,
    /// Last check time.
    pub s_lastcheck: U32,
    /// Maximum time between checks (0: none).
    pub s_checkinterval: U32,
    /// Creator OS (0: Linux).
    pub s_creator_os: U32,
    /// Revision (1: dynamic inode sizes).
    pub s_rev_level: U32,
    /// Default uid for reserved blocks.
    pub s_def_resuid: U16,
    /// Default gid for reserved blocks.
    pub s_def_resgid: U16,
    /// First non-reserved inode.
    pub s_first_ino: U32,
    /// Inode size in bytes.
    pub s_inode_size: U16,
    /// Group holding this superblock copy.
    pub s_block_group_nr: U16,
    /// Compatible features.
    pub s_feature_compat: U32,
    /// Incompatible features.
    pub s_feature_incompat: U32,
    /// Read-only compatible features.
    pub s_feature_ro_compat: U32,
    /// Filesystem UUID.
    pub s_uuid: [u8; 16],
    /// Volume label.
    pub s_volume_name: [u8; 16],
    /// Directory where last mounted.
    pub s_last_mounted: [u8; 64],
    /// Compression bitmap (unused).
    pub s_algorithm_usage_bitmap: U32,
    /// Preallocation hints.
    pub s_prealloc_blocks: u8,
    /// Preallocation hints for directories.
    pub s_prealloc_dir_blocks: u8,
    /// GDT blocks reserved for growth.
    pub s_reserved_gdt_blocks: U16,
    /// Journal UUID.
    pub s_journal_uuid: [u8; 16],
    /// Journal inode.
    pub s_journal_inum: U32,
    /// Journal device.
    pub s_journal_dev: U32,
    /// Orphan list head.
    pub s_last_orphan: U32,
    /// Seed of the directory hash, four little-endian words.
    pub s_hash_seed: [U32; 4],
    /// Default directory hash.
    pub s_def_hash_version: u8,
    /// Journal backup type.
    pub s_jnl_backup_type: u8,
    /// Group descriptor size (0 or 32 without the 64bit feature).
    pub s_desc_size: U16,
    /// Default mount options.
    pub s_default_mount_opts: U32,
    /// First meta block group.
    pub s_first_meta_bg: U32,
    /// Creation time.
    pub s_mkfs_time: U32,
    /// Journal inode backup.
    pub s_jnl_blocks: [U32; 17],
    /// High 32 bits of the block count.
    pub s_blocks_count_hi: U32,
    /// High 32 bits of the reserved block count.
    pub s_r_blocks_count_hi: U32,
    /// High 32 bits of the free block count.
    pub s_free_blocks_count_hi: U32,
    /// All inodes have at least this many extra bytes.
    pub s_min_extra_isize: U16,
    /// New inodes should reserve this many extra bytes.
    pub s_want_extra_isize: U16,
    /// Miscellaneous flags.
    pub s_flags: U32,
    /// RAID stride.
    pub s_raid_stride: U16,
    /// MMP interval.
    pub s_mmp_interval: U16,
    /// MMP block.
    pub s_mmp_block: U64,
    /// RAID stripe width.
    pub s_raid_stripe_width: U32,
    /// Groups per flex group is 2 ^ this.
    pub s_log_groups_per_flex: u8,
    /// Metadata checksum type.
    pub s_checksum_type: u8,
    /// Padding.
    pub s_reserved_pad: U16,
    /// Lifetime kilobytes written.
    pub s_kbytes_written: U64,
    /// Error tracking and snapshot fields this writer leaves zero (offsets
    /// 0x180..0x200).
    pub s_reserved_a: [u8; 0x200 - 0x180],
    /// Default mount options as text (NUL-padded), applied by the kernel
    /// before the options of each mount (`tune2fs -E mount_opts=`).
    pub s_mount_opts: [u8; 64],
    /// Quota inodes, overhead, backup groups, encryption and other fields
    /// this writer leaves zero (offsets 0x240..0x274).
    pub s_reserved_c: [u8; 0x274 - 0x240],
    /// High bytes of the timestamps (wtime, mtime, mkfs_time, lastcheck, ...).
    pub s_time_hi: [u8; 8],
    /// Filename charset encoding, encoding flags, orphan file, padding and
    /// checksum (offsets 0x27C..0x400), zero.
    pub s_reserved_b: [u8; 0x400 - 0x27C],
}

const _: () = assert!(size_of::<Superblock>() == 1024);

/// A block group descriptor (32 bytes without the 64bit feature).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct GroupDesc {
    /// Block of the block bitmap.
    pub bg_block_bitmap: U32,
    /// Block of the inode bitmap.
    pub bg_inode_bitmap: U32,
    /// First block of the inode table.
    pub bg_inode_table: U32,
    /// Free blocks in the group.
    pub bg_free_blocks_count: U16,
    /// Free inodes in the group.
    pub bg_free_inodes_count: U16,
    /// Directories in the group.
    pub bg_used_dirs_count: U16,
    /// Flags: [`BG_INODE_UNINIT`], [`BG_BLOCK_UNINIT`], [`BG_INODE_ZEROED`]
    /// (only with [`RO_COMPAT_GDT_CSUM`]).
    pub bg_flags: U16,
    /// Snapshot exclusion bitmap (unused).
    pub bg_exclude_bitmap_lo: U32,
    /// Block bitmap checksum (metadata_csum only; unused).
    pub bg_block_bitmap_csum_lo: U16,
    /// Inode bitmap checksum (metadata_csum only; unused).
    pub bg_inode_bitmap_csum_lo: U16,
    /// Inodes at the end of the group's table never used: the kernel
    /// neither reads nor needs them initialised ([`RO_COMPAT_GDT_CSUM`]).
    pub bg_itable_unused_lo: U16,
    /// CRC-16 of the filesystem UUID, the group number and this descriptor
    /// up to this field ([`RO_COMPAT_GDT_CSUM`]).
    pub bg_checksum: U16,
}

const _: () = assert!(size_of::<GroupDesc>() == 32);

/// An inode (256 bytes: 128 of the base format, 32 extra, 96 free).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Inode {
    /// File type and permission bits.
    pub i_mode: U16,
    /// Low 16 bits of the owner uid.
    pub i_uid: U16,
    /// Low 32 bits of the size.
    pub i_size_lo: U32,
    /// Access time.
    pub i_atime: U32,
    /// Inode change time.
    pub i_ctime: U32,
    /// Modification time.
    pub i_mtime: U32,
    /// Deletion time.
    pub i_dtime: U32,
    /// Low 16 bits of the gid.
    pub i_gid: U16,
    /// Hard link count.
    pub i_links_count: U16,
    /// Low 32 bits of the 512-byte sectors used.
    pub i_blocks_lo: U32,
    /// Inode flags.
    pub i_flags: U32,
    /// Version (osd1).
    pub i_version: U32,
    /// Extent tree, fast symlink target or device number.
    pub i_block: [u8; 60],
    /// Generation.
    pub i_generation: U32,
    /// Low 32 bits of the extended attribute block.
    pub i_file_acl_lo: U32,
    /// High 32 bits of the size.
    pub i_size_high: U32,
    /// Obsolete fragment address.
    pub i_obso_faddr: U32,
    /// High 16 bits of the sector count.
    pub l_i_blocks_high: U16,
    /// High 16 bits of the extended attribute block.
    pub l_i_file_acl_high: U16,
    /// High 16 bits of the uid.
    pub l_i_uid_high: U16,
    /// High 16 bits of the gid.
    pub l_i_gid_high: U16,
    /// Low 16 bits of the inode checksum.
    pub l_i_checksum_lo: U16,
    /// Reserved.
    pub l_i_reserved: U16,
    /// Bytes of extra fields after the base inode (32 here).
    pub i_extra_isize: U16,
    /// High 16 bits of the inode checksum.
    pub i_checksum_hi: U16,
    /// Extra change time bits (epoch, nanoseconds).
    pub i_ctime_extra: U32,
    /// Extra modification time bits.
    pub i_mtime_extra: U32,
    /// Extra access time bits.
    pub i_atime_extra: U32,
    /// Creation time.
    pub i_crtime: U32,
    /// Extra creation time bits.
    pub i_crtime_extra: U32,
    /// High 32 bits of the version.
    pub i_version_hi: U32,
    /// Project id.
    pub i_projid: U32,
    /// In-inode extended attribute space (unused: attributes go in a block).
    pub i_xattr_space: [u8; 96],
}

const _: () = assert!(size_of::<Inode>() == 256);

/// Size of the inode's fields after the base 128 bytes that are in use.
pub const INODE_EXTRA_ISIZE: u16 = 32;

/// Header of every extent tree node.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ExtentHeader {
    /// 0xF30A.
    pub eh_magic: U16,
    /// Valid entries.
    pub eh_entries: U16,
    /// Capacity.
    pub eh_max: U16,
    /// 0 for leaves.
    pub eh_depth: U16,
    /// Generation (unused).
    pub eh_generation: U32,
}

/// A leaf entry: a run of contiguous blocks.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Extent {
    /// First logical block.
    pub ee_block: U32,
    /// Length in blocks (at most 32768 for initialized extents).
    pub ee_len: U16,
    /// High 16 bits of the first physical block.
    pub ee_start_hi: U16,
    /// Low 32 bits of the first physical block.
    pub ee_start_lo: U32,
}

/// An index entry: points at the node covering logical blocks from `ei_block`.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ExtentIndex {
    /// First logical block covered.
    pub ei_block: U32,
    /// Low 32 bits of the node's block.
    pub ei_leaf_lo: U32,
    /// High 16 bits of the node's block.
    pub ei_leaf_hi: U16,
    /// Unused.
    pub ei_unused: U16,
}

const _: () = assert!(size_of::<ExtentHeader>() == 12);
const _: () = assert!(size_of::<Extent>() == 12);
const _: () = assert!(size_of::<ExtentIndex>() == 12);

/// The fixed part of a directory entry (`ext4_dir_entry_2`); the name
/// follows, and `rec_len` covers the padding to the next entry.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DirEntryHeader {
    /// Inode number (0: unused entry).
    pub inode: U32,
    /// Length of this record.
    pub rec_len: U16,
    /// Length of the name.
    pub name_len: u8,
    /// File type (1 regular, 2 directory, 3 char, 4 block, 5 fifo, 6 socket, 7 symlink).
    pub file_type: u8,
}

const _: () = assert!(size_of::<DirEntryHeader>() == 8);

/// `dx_root_info`, after the "." and ".." entries of an indexed directory.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DxRootInfo {
    /// Zero.
    pub reserved_zero: U32,
    /// Hash function.
    pub hash_version: u8,
    /// 8.
    pub info_length: u8,
    /// Levels of index nodes below the root (0 or 1 without largedir).
    pub indirect_levels: u8,
    /// Unused.
    pub unused_flags: u8,
}

/// `dx_countlimit`, overlaying the hash of an index's first entry.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DxCountLimit {
    /// Capacity of the index.
    pub limit: U16,
    /// Entries in use.
    pub count: U16,
}

/// `dx_entry`: the leaf (or node) holding hashes from `hash` on.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DxEntry {
    /// Lowest hash in the block (low bit: continues the previous block's hash).
    pub hash: U32,
    /// Logical block of the directory.
    pub block: U32,
}

const _: () = assert!(size_of::<DxRootInfo>() == 8);
const _: () = assert!(size_of::<DxEntry>() == 8);

/// Header of an extended attribute block.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct XattrHeader {
    /// 0xEA020000.
    pub h_magic: U32,
    /// Inodes sharing the block.
    pub h_refcount: U32,
    /// Blocks used (1).
    pub h_blocks: U32,
    /// Hash of all entries.
    pub h_hash: U32,
    /// Checksum (metadata_csum only).
    pub h_checksum: U32,
    /// Zero.
    pub h_reserved: [U32; 3],
}

/// The fixed part of an extended attribute entry; the name follows, padded
/// to 4 bytes.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct XattrEntry {
    /// Length of the name (without prefix).
    pub e_name_len: u8,
    /// Name prefix index (1 user., 4 trusted., 6 security., ...).
    pub e_name_index: u8,
    /// Offset of the value from the start of the block.
    pub e_value_offs: U16,
    /// Inode holding the value (ea_inode only), 0.
    pub e_value_inum: U32,
    /// Value length.
    pub e_value_size: U32,
    /// Hash of name and value.
    pub e_hash: U32,
}

const _: () = assert!(size_of::<XattrHeader>() == 32);
const _: () = assert!(size_of::<XattrEntry>() == 16);
