//! Where every level of the hash tree lives, and where the tree and the
//! superblock live in the hash file.
//!
//! From the kernel's `Documentation/admin-guide/device-mapper/verity.rst`
//! ("Hash tree") and cryptsetup's "DMVerity" notes: level 0 holds one digest
//! per data block; level *i + 1* holds one digest per hash block of level
//! *i*; the tree ends at the first level that fits in one block. Each hash
//! block holds 2^k digest slots with 2^k the largest power of two not above
//! `hash_block_size / digest_size`. On disk the levels are stored top first,
//! so the single top block comes first and level 0 last.

use serde::Serialize;
use thiserror::Error;

use super::params::{BlockSize, HashAlgorithm, TreeParams};
use super::superblock::SUPERBLOCK_SIZE;

/// A tree that cannot be laid out.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GeometryError {
    /// No data blocks at all.
    #[error("the data area is empty (0 data blocks)")]
    NoDataBlocks,
    /// Fewer than two digests fit in a hash block.
    #[error("a {hash_block_size}-byte hash block cannot hold two {algorithm} digests")]
    HashBlockTooSmall {
        /// Hash block size.
        hash_block_size: BlockSize,
        /// Algorithm.
        algorithm: HashAlgorithm,
    },
    /// Offsets that do not fit in 64 bits.
    #[error("the hash area does not fit in 64-bit offsets")]
    Overflow,
    /// A hash offset the on-disk format cannot express.
    #[error("{0}")]
    BadHashOffset(String),
}

/// One level of the tree: its blocks, relative to the start of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Level {
    /// First hash block of the level, counted from the start of the tree.
    pub first_block: u64,
    /// Number of hash blocks in the level.
    pub blocks: u64,
    /// Number of digests the level holds (blocks of the level below, or data
    /// blocks for level 0).
    pub entries: u64,
}

/// The shape of a hash tree for a given data size and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeGeometry {
    algorithm: HashAlgorithm,
    data_block_size: BlockSize,
    hash_block_size: BlockSize,
    data_blocks: u64,
    hashes_per_block_bits: u32,
    /// Index 0 is the level that hashes the data.
    levels: Vec<Level>,
}

impl TreeGeometry {
    /// Lays out the tree for `data_blocks` blocks.
    pub fn new(params: &TreeParams, data_blocks: u64) -> Result<Self, GeometryError> {
        if data_blocks == 0 {
            return Err(GeometryError::NoDataBlocks);
        }
        let algorithm = params.algorithm;
        let per_block = params.hash_block_size.bytes() / algorithm.digest_size();
        // floor(log2(per_block)); per_block >= 8 for every supported pair,
        // but the check keeps the arithmetic honest.
        if per_block < 2 {
            return Err(GeometryError::HashBlockTooSmall {
                hash_block_size: params.hash_block_size,
                algorithm,
            });
        }
        let bits = per_block.ilog2();

        // Number of levels: the smallest L with (data_blocks - 1) >> (bits*L) == 0.
        let mut level_count = 0u32;
        while bits * level_count < 64 && ((data_blocks - 1) >> (bits * level_count)) != 0 {
            level_count += 1;
        }

        let mut levels = Vec::with_capacity(level_count as usize);
        let mut entries = data_blocks;
        for _ in 0..level_count {
            let blocks = entries.div_ceil(1u64 << bits);
            levels.push(Level {
                first_block: 0,
                blocks,
                entries,
            });
            entries = blocks;
        }
        // Top level first on disk.
        let mut position = 0u64;
        for level in levels.iter_mut().rev() {
            level.first_block = position;
            position = position
                .checked_add(level.blocks)
                .ok_or(GeometryError::Overflow)?;
        }
        position
            .checked_mul(params.hash_block_size.bytes_u64())
            .ok_or(GeometryError::Overflow)?;
        data_blocks
            .checked_mul(params.data_block_size.bytes_u64())
            .ok_or(GeometryError::Overflow)?;

        Ok(TreeGeometry {
            algorithm,
            data_block_size: params.data_block_size,
            hash_block_size: params.hash_block_size,
            data_blocks,
            hashes_per_block_bits: bits,
            levels,
        })
    }

    /// The levels, index 0 being the one that hashes the data. Empty when
    /// there is a single data block: its digest is then the root hash.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Number of data blocks.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// Bytes of data covered.
    pub fn data_bytes(&self) -> u64 {
        // Checked in `new`.
        self.data_blocks * self.data_block_size.bytes_u64()
    }

    /// Digests per hash block.
    pub fn hashes_per_block(&self) -> u64 {
        1u64 << self.hashes_per_block_bits
    }

    /// Total hash blocks of the tree (what `veritysetup` prints as "Hash blocks").
    pub fn hash_blocks(&self) -> u64 {
        self.levels.iter().map(|l| l.blocks).sum()
    }

    /// Size of the tree in bytes (checked in `new` not to overflow).
    pub fn tree_bytes(&self) -> u64 {
        self.hash_blocks() * self.hash_block_size.bytes_u64()
    }

    /// Byte range of a level inside the tree.
    pub fn level_range(&self, level: usize) -> std::ops::Range<usize> {
        let l = self.levels[level];
        let hbs = self.hash_block_size.bytes();
        let start = l.first_block as usize * hbs;
        start..start + l.blocks as usize * hbs
    }

    /// Hash algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// Data block size.
    pub fn data_block_size(&self) -> BlockSize {
        self.data_block_size
    }

    /// Hash block size.
    pub fn hash_block_size(&self) -> BlockSize {
        self.hash_block_size
    }
}

/// Where the hash area sits in the hash file or device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HashAreaLayout {
    /// Offset of the hash area (the superblock, when there is one) in bytes.
    pub hash_offset: u64,
    /// Whether a superblock precedes the tree.
    pub superblock: bool,
    /// Offset of the first tree block in bytes.
    pub tree_offset: u64,
}

impl HashAreaLayout {
    /// Places the tree as `veritysetup` does: with a superblock, at the first
    /// hash block boundary after the 512-byte superblock at `hash_offset`
    /// (which must be 512-byte aligned); without one, at `hash_offset`.
    ///
    /// `veritysetup` silently rounds an unaligned offset down when there is no
    /// superblock, which places the tree before the requested offset; that is
    /// rejected here instead.
    pub fn new(
        hash_offset: u64,
        superblock: bool,
        hash_block_size: BlockSize,
    ) -> Result<Self, GeometryError> {
        let hbs = hash_block_size.bytes_u64();
        let tree_offset = if superblock {
            if hash_offset % 512 != 0 {
                return Err(GeometryError::BadHashOffset(format!(
                    "hash offset {hash_offset} is not a multiple of 512 bytes"
                )));
            }
            hash_offset
                .checked_add(SUPERBLOCK_SIZE as u64)
                .and_then(|end| end.checked_next_multiple_of(hbs))
                .ok_or(GeometryError::Overflow)?
        } else {
            if hash_offset % hbs != 0 {
                return Err(GeometryError::BadHashOffset(format!(
                    "hash offset {hash_offset} is not a multiple of the hash block size \
                     {hbs} (required without a superblock)"
                )));
            }
            hash_offset
        };
        Ok(HashAreaLayout {
            hash_offset,
            superblock,
            tree_offset,
        })
    }

    /// First byte after the tree.
    pub fn end(&self, geometry: &TreeGeometry) -> Result<u64, GeometryError> {
        self.tree_offset
            .checked_add(geometry.tree_bytes())
            .ok_or(GeometryError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::params::Salt;

    fn params(alg: HashAlgorithm, hbs: u64) -> TreeParams {
        TreeParams {
            algorithm: alg,
            data_block_size: BlockSize::DEFAULT,
            hash_block_size: BlockSize::new(hbs).unwrap(),
            salt: Salt::default(),
        }
    }

    #[test]
    fn one_data_block_has_no_levels() {
        let g = TreeGeometry::new(&params(HashAlgorithm::Sha256, 4096), 1).unwrap();
        assert!(g.levels().is_empty());
        assert_eq!(g.hash_blocks(), 0);
    }

    #[test]
    fn levels_follow_the_kernel_documentation() {
        // sha256 in 4 KiB blocks: 128 digests per block.
        let p = params(HashAlgorithm::Sha256, 4096);
        // 300 blocks: level 0 needs ceil(300/128) = 3 blocks, level 1 one.
        // veritysetup prints "Hash blocks: 4" for this case.
        let g = TreeGeometry::new(&p, 300).unwrap();
        assert_eq!(
            g.levels(),
            &[
                Level {
                    first_block: 1,
                    blocks: 3,
                    entries: 300
                },
                Level {
                    first_block: 0,
                    blocks: 1,
                    entries: 3
                },
            ]
        );
        // Exactly 128 blocks fit in one level; 129 need two.
        assert_eq!(TreeGeometry::new(&p, 128).unwrap().levels().len(), 1);
        assert_eq!(TreeGeometry::new(&p, 129).unwrap().levels().len(), 2);
        assert_eq!(TreeGeometry::new(&p, 128 * 128).unwrap().levels().len(), 2);
        assert_eq!(
            TreeGeometry::new(&p, 128 * 128 + 1).unwrap().levels().len(),
            3
        );
    }

    #[test]
    fn sha1_uses_the_power_of_two_below_the_quotient() {
        // 512 / 20 = 25 digests fit, but only 16 slots are used.
        let g = TreeGeometry::new(&params(HashAlgorithm::Sha1, 512), 17).unwrap();
        assert_eq!(g.hashes_per_block(), 16);
        assert_eq!(g.levels().len(), 2);
    }

    #[test]
    fn tree_follows_the_superblock_at_a_block_boundary() {
        let hbs = BlockSize::DEFAULT;
        assert_eq!(HashAreaLayout::new(0, true, hbs).unwrap().tree_offset, 4096);
        assert_eq!(
            HashAreaLayout::new(8192, true, hbs).unwrap().tree_offset,
            12288
        );
        assert_eq!(
            HashAreaLayout::new(3584, true, hbs).unwrap().tree_offset,
            4096
        );
        let small = BlockSize::new(512).unwrap();
        assert_eq!(
            HashAreaLayout::new(0, true, small).unwrap().tree_offset,
            512
        );
        assert!(HashAreaLayout::new(1000, true, hbs).is_err());
        assert!(HashAreaLayout::new(1024, false, hbs).is_err());
        assert_eq!(
            HashAreaLayout::new(8192, false, hbs).unwrap().tree_offset,
            8192
        );
    }

    #[test]
    fn empty_data_is_rejected() {
        assert_eq!(
            TreeGeometry::new(&params(HashAlgorithm::Sha256, 4096), 0),
            Err(GeometryError::NoDataBlocks)
        );
    }
}
