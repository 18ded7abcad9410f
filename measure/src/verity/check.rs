//! The one top-down verification of a dm-verity hash area, from any
//! positional reader.
//!
//! The kernel trusts nothing below the root hash until it has been checked
//! against its parent, so verification goes the same way: the top hash
//! block against the root hash, each level against the (already verified)
//! level above, then the data blocks against level 0. The first mismatch
//! found this way is the corrupt block, not merely a block whose subtree
//! differs ([`Mismatch`]).
//!
//! `cocos-measure verity verify` ([`super::files::verify`]), `cocos-imgbuild
//! inspect` (partitions of a disk image, through [`Window`]) and cocos-init
//! (the partitions in the VM, tree only: the kernel checks the data as it
//! is read) all call [`HashArea::verify_tree`] and
//! [`HashArea::verify_data`]; each adds its own names (paths, partition
//! numbers) to the [`CheckError`] it gets.

use std::fs::File;
use std::io;

use thiserror::Error;

use super::geometry::{GeometryError, HashAreaLayout, TreeGeometry};
use super::hasher::BlockHasher;
use super::params::{RootHash, TreeParams};
use super::superblock::Superblock;

/// Bytes of data hashed per batch in [`HashArea::verify_data`]: bounds the
/// memory used and sets the granularity of progress reports.
const BATCH_BYTES: usize = 8 << 20;

/// Reads at a byte offset without moving a cursor, from several threads
/// at once: a file, a block device, a partition of a disk image
/// ([`Window`]), or memory.
pub trait ReadAt: Sync {
    /// Fills `buf` from `offset`; a short read is an error
    /// (`UnexpectedEof`), as with [`std::os::unix::fs::FileExt::read_exact_at`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl<R: ReadAt + ?Sized> ReadAt for &R {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

/// `len` bytes of another reader from `start`: a partition of a disk
/// image. Reads past `len` fail (`UnexpectedEof`) instead of reaching the
/// next partition.
#[derive(Debug, Clone, Copy)]
pub struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Window<R> {
    /// The window `start..start + len` of `inner`.
    pub fn new(inner: R, start: u64, len: u64) -> Self {
        Window { inner, start, len }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R: ReadAt> ReadAt for Window<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= self.len => self.inner.read_exact_at(buf, self.start + offset),
            _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
}

/// The first block, top-down, that does not match what the level above
/// (or the root hash) says it must hash to.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The top hash block does not hash to the root hash: the root hash is
    /// wrong, or that block is corrupt.
    #[error("the top hash block (offset {offset} of the hash area) does not hash to the root hash")]
    TopBlock {
        /// Byte offset of the top block in the hash reader.
        offset: u64,
    },
    /// A hash block does not match its parent's (verified) entry.
    #[error(
        "hash block {index} of tree level {level} (of {levels}; level 0 hashes the data) at offset {offset} is corrupt"
    )]
    HashBlock {
        /// Level of the bad block, 0 being the one that hashes the data.
        level: usize,
        /// Number of levels.
        levels: usize,
        /// Index of the block within its level.
        index: u64,
        /// Byte offset of the block in the hash reader.
        offset: u64,
    },
    /// A data block does not match its (verified) level-0 entry.
    #[error("data block {index} (offset {offset}) is corrupt")]
    DataBlock {
        /// Index of the data block.
        index: u64,
        /// Its byte offset in the data reader.
        offset: u64,
    },
    /// A tree without hash blocks (one data block): that block does not
    /// hash to the root hash.
    #[error("data block 0 does not hash to the root hash")]
    SingleDataBlock,
}

/// Why verification stopped.
#[derive(Debug, Error)]
pub enum CheckError {
    /// A read failed (a short read included).
    #[error("cannot read the {what} at offset {offset}")]
    Read {
        /// "hash tree" or "data".
        what: &'static str,
        /// Byte offset in that reader.
        offset: u64,
        /// The OS error.
        source: io::Error,
    },
    /// The root hash has the wrong length for the tree's algorithm.
    #[error("the root hash has {given} bytes but the tree uses {expected}-byte digests")]
    RootHashLength {
        /// Its length.
        given: usize,
        /// The algorithm's digest size.
        expected: usize,
    },
    /// A block that does not match.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

/// A hash area to verify: the tree's parameters, its shape, and where it
/// lies in the hash reader.
#[derive(Debug, Clone)]
pub struct HashArea {
    /// Algorithm, block sizes and salt.
    pub params: TreeParams,
    /// Levels and data size.
    pub geometry: TreeGeometry,
    /// Offsets of the superblock and the tree.
    pub layout: HashAreaLayout,
}

impl HashArea {
    /// The area a superblock at `hash_offset` describes (the tree follows
    /// it), as `veritysetup` writes it.
    pub fn from_superblock(sb: &Superblock, hash_offset: u64) -> Result<Self, GeometryError> {
        Ok(HashArea {
            geometry: TreeGeometry::new(&sb.params, sb.data_blocks)?,
            layout: HashAreaLayout::new(hash_offset, true, sb.params.hash_block_size)?,
            params: sb.params.clone(),
        })
    }

    /// First byte after the area in the hash reader.
    pub fn end(&self) -> Result<u64, GeometryError> {
        self.layout.end(&self.geometry)
    }

    /// Reads the tree from `hash` and verifies it top-down against
    /// `root_hash`. Returns the verified tree bytes (levels top first), for
    /// [`HashArea::verify_data`].
    pub fn verify_tree(
        &self,
        hash: &(impl ReadAt + ?Sized),
        root_hash: &RootHash,
    ) -> Result<Vec<u8>, CheckError> {
        let algorithm = self.params.algorithm;
        if root_hash.as_bytes().len() != algorithm.digest_size() {
            return Err(CheckError::RootHashLength {
                given: root_hash.as_bytes().len(),
                expected: algorithm.digest_size(),
            });
        }
        let geometry = &self.geometry;
        let tree_len = usize::try_from(geometry.tree_bytes()).map_err(|_| CheckError::Read {
            what: "hash tree",
            offset: self.layout.tree_offset,
            source: io::Error::from(io::ErrorKind::OutOfMemory),
        })?;
        let mut tree = vec![0u8; tree_len];
        hash.read_exact_at(&mut tree, self.layout.tree_offset)
            .map_err(|source| CheckError::Read {
                what: "hash tree",
                offset: self.layout.tree_offset,
                source,
            })?;
        let levels = geometry.levels();
        let Some(top) = levels.len().checked_sub(1) else {
            return Ok(tree);
        };
        let hbs = geometry.hash_block_size().bytes();
        let block_offset = |level: usize, index: u64| {
            self.layout.tree_offset + (levels[level].first_block + index) * hbs as u64
        };
        let hasher = BlockHasher::new(&self.params);
        if hasher.digest(&tree[geometry.level_range(top)]) != root_hash.as_bytes() {
            return Err(Mismatch::TopBlock {
                offset: block_offset(top, 0),
            }
            .into());
        }
        let slot = algorithm.slot_size();
        let digest = algorithm.digest_size();
        for level in (0..top).rev() {
            let blocks = &tree[geometry.level_range(level)];
            let mut computed = vec![0u8; blocks.len() / hbs * slot];
            hasher.hash_blocks(blocks, hbs, &mut computed);
            let parent = &tree[geometry.level_range(level + 1)];
            if let Some(i) = first_mismatch(&computed, &parent[..computed.len()], slot, digest) {
                return Err(Mismatch::HashBlock {
                    level,
                    levels: levels.len(),
                    index: i as u64,
                    offset: block_offset(level, i as u64),
                }
                .into());
            }
        }
        Ok(tree)
    }

    /// Verifies the data blocks of `data` against level 0 of a tree that
    /// [`HashArea::verify_tree`] returned (or against the root hash for a
    /// one-block tree), in batches over all cores; `progress` gets the
    /// bytes of each finished batch.
    pub fn verify_data(
        &self,
        data: &(impl ReadAt + ?Sized),
        tree: &[u8],
        root_hash: &RootHash,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), CheckError> {
        let params = &self.params;
        let geometry = &self.geometry;
        let hasher = BlockHasher::new(params);
        let dbs = params.data_block_size.bytes();
        let slot = params.algorithm.slot_size();
        let digest = params.algorithm.digest_size();
        let single = geometry.levels().is_empty();
        let expected: &[u8] = if single {
            root_hash.as_bytes()
        } else {
            &tree[geometry.level_range(0)]
        };
        let blocks = geometry.data_blocks();
        let per_batch = (BATCH_BYTES / dbs).max(1) as u64;
        let mut computed = Vec::with_capacity(per_batch as usize * slot);
        let mut first = 0u64;
        while first < blocks {
            let count = (blocks - first).min(per_batch) as usize;
            computed.resize(count * slot, 0);
            hasher
                .hash_blocks_at(data, first * dbs as u64, dbs, &mut computed)
                .map_err(|source| CheckError::Read {
                    what: "data",
                    offset: first * dbs as u64,
                    source,
                })?;
            let start = first as usize * slot;
            let stored = expected.get(start..start + count * slot);
            let mismatch = match stored {
                Some(stored) => first_mismatch(&computed, stored, slot, digest),
                // One data block, its digest against the root hash (no slot
                // padding there).
                None => (computed.get(..digest) != Some(expected)).then_some(0),
            };
            if let Some(i) = mismatch {
                let index = first + i as u64;
                return Err(if single {
                    Mismatch::SingleDataBlock
                } else {
                    Mismatch::DataBlock {
                        index,
                        offset: index * dbs as u64,
                    }
                }
                .into());
            }
            progress((count * dbs) as u64);
            first += count as u64;
        }
        Ok(())
    }
}

/// Index of the first slot whose digest differs.
fn first_mismatch(computed: &[u8], stored: &[u8], slot: usize, digest: usize) -> Option<usize> {
    if computed == stored {
        return None;
    }
    computed
        .chunks_exact(slot)
        .zip(stored.chunks_exact(slot))
        .position(|(c, s)| c[..digest] != s[..digest])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::{BlockSize, HashAlgorithm, HashTreeBuilder, Salt};

    fn params(algorithm: HashAlgorithm) -> TreeParams {
        TreeParams {
            algorithm,
            data_block_size: BlockSize::new(4096).unwrap(),
            hash_block_size: BlockSize::new(4096).unwrap(),
            salt: Salt::new(vec![7; 32]).unwrap(),
        }
    }

    /// A hash area (no superblock) and data of `blocks` blocks.
    fn area(blocks: u64, algorithm: HashAlgorithm) -> (HashArea, Vec<u8>, Vec<u8>, RootHash) {
        let p = params(algorithm);
        let data: Vec<u8> = (0..blocks * 4096).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = HashTreeBuilder::with_capacity(p.clone(), blocks);
        b.update(&data);
        let tree = b.finish().unwrap();
        let area = HashArea {
            geometry: TreeGeometry::new(&p, blocks).unwrap(),
            layout: HashAreaLayout::new(0, false, p.hash_block_size).unwrap(),
            params: p,
        };
        (
            area,
            data,
            tree.as_bytes().to_vec(),
            tree.root_hash().clone(),
        )
    }

    #[test]
    fn an_intact_area_verifies_and_each_corruption_is_named() {
        // 600 blocks of sha256: two levels (128 digests per block).
        let (area, data, tree, root) = area(600, HashAlgorithm::Sha256);
        assert_eq!(area.geometry.levels().len(), 2);
        let verified = area.verify_tree(tree.as_slice(), &root).unwrap();
        assert_eq!(verified, tree);
        area.verify_data(data.as_slice(), &verified, &root, &|_| {})
            .unwrap();

        // Level 0 is stored after level 1 (one block): block 2 of level 0
        // is the fourth block of the area.
        let mut bad = tree.clone();
        bad[3 * 4096 + 5] ^= 1;
        assert_eq!(
            area.verify_tree(bad.as_slice(), &root)
                .unwrap_err()
                .to_string(),
            Mismatch::HashBlock {
                level: 0,
                levels: 2,
                index: 2,
                offset: 3 * 4096
            }
            .to_string()
        );
        let mut bad = tree.clone();
        bad[10] ^= 1;
        assert!(matches!(
            area.verify_tree(bad.as_slice(), &root),
            Err(CheckError::Mismatch(Mismatch::TopBlock { offset: 0 }))
        ));
        let mut bad = data.clone();
        bad[517 * 4096 + 9] ^= 1;
        assert!(matches!(
            area.verify_data(bad.as_slice(), &tree, &root, &|_| {}),
            Err(CheckError::Mismatch(Mismatch::DataBlock {
                index: 517,
                offset
            })) if offset == 517 * 4096
        ));
    }

    #[test]
    fn one_block_trees_check_the_block_against_the_root_hash() {
        let (area, data, tree, root) = area(1, HashAlgorithm::Sha512);
        assert!(tree.is_empty());
        area.verify_data(data.as_slice(), &tree, &root, &|_| {})
            .unwrap();
        let mut bad = data.clone();
        bad[0] ^= 1;
        assert!(matches!(
            area.verify_data(bad.as_slice(), &tree, &root, &|_| {}),
            Err(CheckError::Mismatch(Mismatch::SingleDataBlock))
        ));
    }

    #[test]
    fn windows_stop_at_their_end() {
        let (area, data, tree, root) = area(40, HashAlgorithm::Sha1);
        let mut disk = tree.clone();
        disk.extend_from_slice(&data);
        disk.extend_from_slice(&[0xee; 4096]);
        let hash = Window::new(disk.as_slice(), 0, tree.len() as u64);
        let part = Window::new(disk.as_slice(), tree.len() as u64, data.len() as u64);
        let verified = area.verify_tree(&hash, &root).unwrap();
        area.verify_data(&part, &verified, &root, &|_| {}).unwrap();
        // One block short: the read fails, it does not run into the next
        // partition.
        let short = Window::new(disk.as_slice(), tree.len() as u64, data.len() as u64 - 4096);
        assert!(matches!(
            area.verify_data(&short, &verified, &root, &|_| {}),
            Err(CheckError::Read { what: "data", .. })
        ));
        let wrong = RootHash::from_hex(&"00".repeat(32), HashAlgorithm::Sha256).unwrap();
        assert!(matches!(
            area.verify_tree(&hash, &wrong),
            Err(CheckError::RootHashLength {
                given: 32,
                expected: 20
            })
        ));
    }
}
