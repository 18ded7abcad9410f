//! The group metadata, placed first and written last: the inode tables,
//! the block and inode bitmaps, the group descriptors (with the
//! `uninit_bg` checksum for lazy inode tables) and the superblock with its
//! `sparse_super` copies, each block exactly once.

use uuid::Uuid;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromZeros, IntoBytes};

use super::alloc::{Allocator, Output, get_bit, set_bit};
use super::inodes::InodeTable;
use super::layout::{BLOCKS_PER_GROUP, Geometry, INODE_SIZE};
use super::plan::FIRST_INO;
use super::{
    BLOCK, BLOCK_SIZE, BlockSink, Ext4Error, Ext4Plan, Ext4Report, LAZY_MOUNT_OPTIONS,
    lazy_itable_blocks,
};
use crate::ext4::raw::*;

/// Where the group metadata goes. With `flex_bg` it sits together after
/// the primary group descriptor table: every block bitmap, then every
/// inode bitmap, then every inode table.
pub(super) struct MetadataPlaces {
    block_bitmaps: Vec<u64>,
    inode_bitmaps: Vec<u64>,
    inode_tables: Vec<u64>,
}

impl MetadataPlaces {
    /// Allocates the metadata blocks: the allocator's first blocks.
    pub(super) fn allocate(g: &Geometry, alloc: &mut Allocator) -> Result<Self, Ext4Error> {
        let mut block_bitmaps = Vec::with_capacity(g.groups as usize);
        let mut inode_bitmaps = Vec::with_capacity(g.groups as usize);
        let mut inode_tables = Vec::with_capacity(g.groups as usize);
        for _ in 0..g.groups {
            block_bitmaps.push(alloc.run(1)?);
        }
        for _ in 0..g.groups {
            inode_bitmaps.push(alloc.run(1)?);
        }
        for _ in 0..g.groups {
            inode_tables.push(alloc.run(g.itable_blocks)?);
        }
        Ok(MetadataPlaces {
            block_bitmaps,
            inode_bitmaps,
            inode_tables,
        })
    }
}

impl Ext4Plan {
    /// Writes the inode tables, bitmaps, group descriptors and superblocks
    /// (all file and directory blocks are out), flushes `out`, and reports.
    pub(super) fn write_metadata<S: BlockSink>(
        &self,
        places: &MetadataPlaces,
        inodes: &InodeTable,
        out: &mut Output<'_, S>,
    ) -> Result<Ext4Report, Ext4Error> {
        let g = &self.geometry;
        let MetadataPlaces {
            block_bitmaps,
            inode_bitmaps,
            inode_tables,
        } = places;
        let max_ino = self
            .inodes
            .last()
            .map_or(FIRST_INO, |i| i.ino)
            .max(FIRST_INO) as u64;
        // Inode tables (with lazy tables: the blocks the kernel reads; the
        // used inodes are 1..=max_ino).
        let per_group = (g.inodes_per_group * INODE_SIZE) as usize;
        let lazy = self.options.lazy_inode_tables;
        let used_in = |grp: u64| -> u64 {
            let first = grp * g.inodes_per_group + 1;
            (max_ino + 1).saturating_sub(first).min(g.inodes_per_group)
        };
        for (grp, &start) in inode_tables.iter().enumerate() {
            let len = if lazy {
                (lazy_itable_blocks(used_in(grp as u64), g.itable_blocks) * BLOCK_SIZE) as usize
            } else {
                per_group
            };
            if len > 0 {
                out.put(start, &inodes.bytes[grp * per_group..grp * per_group + len])?;
            }
        }
        // Every block in use: superblock copies, the metadata just placed
        // and everything allocated (all below the allocator's cursor apart
        // from reserved ranges, which are marked explicitly).
        let mut used = out.used.clone();
        for (a, b) in g.super_ranges() {
            for blk in a..b {
                set_bit(&mut used, blk);
            }
        }
        for &b in block_bitmaps.iter().chain(inode_bitmaps) {
            set_bit(&mut used, b);
        }
        // Whole inode tables, also the blocks lazy tables leave unwritten.
        for &start in inode_tables {
            for b in start..start + g.itable_blocks {
                set_bit(&mut used, b);
            }
        }

        let mut descs = Vec::with_capacity(g.groups as usize);
        let mut free_blocks_total = 0u64;
        for grp in 0..g.groups {
            let first = grp * BLOCKS_PER_GROUP;
            let count = (g.blocks - first).min(BLOCKS_PER_GROUP);
            let mut bitmap = vec![0xffu8; BLOCK];
            let mut free = 0u64;
            for i in 0..count {
                if get_bit(&used, first + i) {
                    continue;
                }
                bitmap[(i / 8) as usize] &= !(1 << (i % 8));
                free += 1;
            }
            free_blocks_total += free;
            out.put(block_bitmaps[grp as usize], &bitmap)?;

            let first_ino = grp * g.inodes_per_group + 1;
            let mut ibitmap = vec![0xffu8; BLOCK];
            let mut free_inodes = 0u64;
            for i in 0..g.inodes_per_group {
                if first_ino + i > max_ino {
                    ibitmap[(i / 8) as usize] &= !(1 << (i % 8));
                    free_inodes += 1;
                }
            }
            out.put(inode_bitmaps[grp as usize], &ibitmap)?;

            let mut d = GroupDesc::new_zeroed();
            d.bg_block_bitmap = U32::new(block_bitmaps[grp as usize] as u32);
            d.bg_inode_bitmap = U32::new(inode_bitmaps[grp as usize] as u32);
            d.bg_inode_table = U32::new(inode_tables[grp as usize] as u32);
            d.bg_free_blocks_count = U16::new(free as u16);
            d.bg_free_inodes_count = U16::new(free_inodes as u16);
            d.bg_used_dirs_count = U16::new(inodes.dirs_in_group[grp as usize]);
            if lazy {
                let used = used_in(grp);
                d.bg_itable_unused_lo = U16::new((g.inodes_per_group - used) as u16);
                d.bg_flags = U16::new(if used == 0 { BG_INODE_UNINIT } else { 0 });
                d.bg_checksum = U16::new(group_desc_checksum(&self.options.uuid, grp, &d));
            }
            descs.extend_from_slice(d.as_bytes());
        }
        descs.resize((g.gdt_blocks * BLOCK_SIZE) as usize, 0);

        let total_inodes = g.groups * g.inodes_per_group;
        let sb = self.superblock(free_blocks_total, total_inodes - max_ino);
        for grp in (0..g.groups).filter(|&grp| Geometry::has_super(grp)) {
            let mut copy = sb.clone();
            copy.s_block_group_nr = U16::new(grp as u16);
            let mut block = vec![0u8; BLOCK];
            let at = if grp == 0 {
                SUPERBLOCK_OFFSET as usize
            } else {
                0
            };
            block[at..at + 1024].copy_from_slice(copy.as_bytes());
            let start = grp * BLOCKS_PER_GROUP;
            out.put(start, &block)?;
            out.put(start + 1, &descs)?;
        }
        out.flush()?;
        Ok(Ext4Report {
            blocks: g.blocks,
            used_blocks: g.blocks - free_blocks_total,
            inodes: total_inodes,
            used_inodes: max_ino,
            uuid: self.options.uuid,
        })
    }

    fn superblock(&self, free_blocks: u64, free_inodes: u64) -> Superblock {
        let g = &self.geometry;
        let t = &self.options.timestamp;
        let (secs, hi) = (*t as u32, ((*t >> 32) & 0xff) as u8);
        let mut sb = Superblock::new_zeroed();
        sb.s_inodes_count = U32::new((g.groups * g.inodes_per_group) as u32);
        sb.s_blocks_count_lo = U32::new(g.blocks as u32);
        sb.s_free_blocks_count_lo = U32::new(free_blocks as u32);
        sb.s_free_inodes_count = U32::new(free_inodes as u32);
        sb.s_first_data_block = U32::new(0);
        sb.s_log_block_size = U32::new(2);
        sb.s_log_cluster_size = U32::new(2);
        sb.s_blocks_per_group = U32::new(BLOCKS_PER_GROUP as u32);
        sb.s_clusters_per_group = U32::new(BLOCKS_PER_GROUP as u32);
        sb.s_inodes_per_group = U32::new(g.inodes_per_group as u32);
        sb.s_wtime = U32::new(secs);
        sb.s_max_mnt_count = U16::new(0xffff);
        sb.s_magic = U16::new(EXT4_MAGIC);
        sb.s_state = U16::new(1);
        sb.s_errors = U16::new(1);
        sb.s_lastcheck = U32::new(secs);
        sb.s_rev_level = U32::new(1);
        sb.s_first_ino = U32::new(FIRST_INO);
        sb.s_inode_size = U16::new(INODE_SIZE as u16);
        sb.s_feature_compat = U32::new(COMPAT_EXT_ATTR | COMPAT_DIR_INDEX);
        sb.s_feature_incompat = U32::new(INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG);
        let gdt_csum = if self.options.lazy_inode_tables {
            RO_COMPAT_GDT_CSUM
        } else {
            0
        };
        sb.s_feature_ro_compat = U32::new(
            RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE
                | gdt_csum,
        );
        if self.options.lazy_inode_tables {
            let opts = LAZY_MOUNT_OPTIONS.as_bytes();
            sb.s_mount_opts[..opts.len()].copy_from_slice(opts);
        }
        sb.s_uuid = *self.options.uuid.as_bytes();
        let label = self.options.label.as_bytes();
        let n = label.len().min(16);
        sb.s_volume_name[..n].copy_from_slice(&label[..n]);
        sb.s_hash_seed = self.hash_seed.map(U32::new);
        sb.s_def_hash_version = DX_HASH_HALF_MD4;
        sb.s_mkfs_time = U32::new(secs);
        sb.s_min_extra_isize = U16::new(INODE_EXTRA_ISIZE);
        sb.s_want_extra_isize = U16::new(INODE_EXTRA_ISIZE);
        sb.s_flags = U32::new(FLAGS_UNSIGNED_HASH);
        // One flex group spanning every group (all metadata at the front).
        sb.s_log_groups_per_flex = (g.groups.next_power_of_two().trailing_zeros() as u8).max(1);
        // s_wtime_hi, s_mtime_hi (never mounted: 0), s_mkfs_time_hi, s_lastcheck_hi.
        sb.s_time_hi = [hi, 0, hi, hi, 0, 0, 0, 0];
        sb
    }
}

/// The `uninit_bg` descriptor checksum (the kernel's `ext4_group_desc_csum`
/// without metadata_csum): CRC-16 (poly 0x8005 reflected, initial 0xFFFF,
/// i.e. CRC-16/MODBUS) over the UUID, the little-endian group number and the
/// 32-byte descriptor up to `bg_checksum`.
fn group_desc_checksum(uuid: &Uuid, group: u64, desc: &GroupDesc) -> u16 {
    const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);
    let mut digest = CRC16.digest();
    digest.update(uuid.as_bytes());
    digest.update(&(group as u32).to_le_bytes());
    digest.update(&desc.as_bytes()[..0x1e]);
    digest.finalize()
}
