//! The filesystem's geometry: block groups of 32768 blocks, how many
//! inodes each holds, the size of the group descriptor table and the inode
//! tables, and which groups carry a superblock copy (`sparse_super`).
//! Everything here follows from the block and inode counts alone.

use super::{BLOCK_SIZE, Ext4Error};

/// Blocks per group: the bits of one bitmap block.
pub(super) const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;
pub(super) const INODE_SIZE: u64 = 256;
pub(super) const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;

/// Sizes of the block groups and where their metadata goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) blocks: u64,
    pub(super) groups: u64,
    pub(super) inodes_per_group: u64,
    pub(super) gdt_blocks: u64,
    pub(super) itable_blocks: u64,
}

impl Geometry {
    pub(super) fn new(blocks: u64, inodes: u64) -> Result<Self, Ext4Error> {
        let groups = blocks
            .div_ceil(BLOCKS_PER_GROUP)
            .max(inodes.div_ceil(BLOCKS_PER_GROUP));
        // More inodes than the blocks' groups can hold: the last group
        // needs some blocks of its own.
        let blocks = blocks.max((groups - 1) * BLOCKS_PER_GROUP + 256);
        let inodes_per_group = inodes
            .div_ceil(groups)
            .next_multiple_of(INODES_PER_BLOCK)
            .max(INODES_PER_BLOCK);
        if blocks > u64::from(u32::MAX) || groups * inodes_per_group > u64::from(u32::MAX) {
            return Err(Ext4Error::TooLarge);
        }
        Ok(Geometry {
            blocks,
            groups,
            inodes_per_group,
            gdt_blocks: (groups * 32).div_ceil(BLOCK_SIZE),
            itable_blocks: inodes_per_group / INODES_PER_BLOCK,
        })
    }

    /// Whether group `g` holds a superblock copy (`sparse_super`: groups 0, 1
    /// and powers of 3, 5 and 7).
    pub(super) fn has_super(g: u64) -> bool {
        fn power_of(mut n: u64, base: u64) -> bool {
            while n > 1 && n % base == 0 {
                n /= base;
            }
            n == 1
        }
        g == 0 || g == 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }

    /// Block ranges holding a superblock and group descriptor table.
    pub(super) fn super_ranges(&self) -> Vec<(u64, u64)> {
        (0..self.groups)
            .filter(|&g| Self::has_super(g))
            .map(|g| {
                let start = g * BLOCKS_PER_GROUP;
                (start, (start + 1 + self.gdt_blocks).min(self.blocks))
            })
            .collect()
    }

    /// Blocks taken by metadata: superblocks, descriptors, bitmaps, tables.
    pub(super) fn overhead(&self) -> u64 {
        let supers: u64 = self.super_ranges().iter().map(|(a, b)| b - a).sum();
        supers + self.groups * (2 + self.itable_blocks)
    }

    /// Whether the last group is big enough for its superblock copy.
    pub(super) fn last_group_ok(&self) -> bool {
        let last = self.groups - 1;
        let len = self.blocks - last * BLOCKS_PER_GROUP;
        !Self::has_super(last) || len > 1 + self.gdt_blocks + 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u64> = (0..30).filter(|&g| Geometry::has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27]);
    }
}
