//! Building a hash tree from data fed in order, without re-reading it.
//!
//! [`HashTreeBuilder`] takes the data as a stream of byte slices of any size
//! (it also implements [`std::io::Write`]), hashes every complete data block
//! as it arrives (large slices on all cores), and keeps only the level-0
//! digests. [`HashTreeBuilder::finish`] computes the upper levels from those
//! digests and returns the [`HashTree`]: the exact bytes `veritysetup`
//! writes after the superblock, and the root hash.

use std::io::{self, Seek, SeekFrom, Write};

use thiserror::Error;
use uuid::Uuid;

use super::geometry::{GeometryError, HashAreaLayout, TreeGeometry};
use super::hasher::BlockHasher;
use super::params::{RootHash, TreeParams};
use super::superblock::{SUPERBLOCK_SIZE, Superblock};

/// Why a tree could not be built from the data that was fed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TreeError {
    /// The data did not end on a block boundary.
    #[error("the data ends {trailing} bytes into a {block_size}-byte data block")]
    PartialBlock {
        /// Bytes of the incomplete block.
        trailing: usize,
        /// Data block size.
        block_size: u32,
    },
    /// `update_at` on a builder not made with `for_blocks`.
    #[error("update_at needs a builder made with HashTreeBuilder::for_blocks")]
    NotPositional,
    /// `update_at` beyond the declared number of blocks.
    #[error("blocks {first}..{} are outside the {total} data blocks of the tree", first + count)]
    OutOfRange {
        /// First block fed.
        first: u64,
        /// Blocks fed.
        count: u64,
        /// Declared number of blocks.
        total: u64,
    },
    /// The data cannot be laid out as a tree (e.g. it is empty).
    #[error(transparent)]
    Geometry(#[from] GeometryError),
}

/// Streaming hash tree construction.
///
/// ```
/// use cocos_measure::verity::{HashTreeBuilder, TreeParams, Salt};
///
/// let params = TreeParams { salt: Salt::from_hex("00ff")?, ..TreeParams::default() };
/// let mut builder = HashTreeBuilder::new(params);
/// // Feed the data in any pieces, e.g. as a filesystem image is written.
/// builder.update(&[0u8; 4096 * 10]);
/// builder.update(&[1u8; 4096 * 5]);
/// let tree = builder.finish()?;
/// assert_eq!(tree.geometry().data_blocks(), 15);
/// println!("root hash {}", tree.root_hash());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct HashTreeBuilder {
    params: TreeParams,
    hasher: BlockHasher,
    /// Digest slots of the data blocks hashed so far.
    level0: Vec<u8>,
    /// Start of a data block that has not been completed yet.
    partial: Vec<u8>,
    /// In positional mode (see [`HashTreeBuilder::for_blocks`]), one bit per
    /// data block that has been fed; the others are zero blocks.
    fed: Option<Vec<u64>>,
}

impl HashTreeBuilder {
    /// A builder for a tree with these parameters.
    pub fn new(params: TreeParams) -> Self {
        HashTreeBuilder {
            hasher: BlockHasher::new(&params),
            params,
            level0: Vec::new(),
            partial: Vec::new(),
            fed: None,
        }
    }

    /// A builder for exactly `data_blocks` blocks that are fed by position,
    /// in any order, with [`update_at`](Self::update_at). Blocks that are
    /// never fed are zero blocks (as unwritten parts of a sparse image are);
    /// their digest is computed once. This lets a writer that places
    /// metadata after the data it describes (a filesystem writer) hash every
    /// block as it writes it.
    pub fn for_blocks(params: TreeParams, data_blocks: u64) -> Result<Self, TreeError> {
        TreeGeometry::new(&params, data_blocks)?;
        let mut builder = Self::with_capacity(params, data_blocks);
        let slot = builder.params.algorithm.slot_size();
        builder.level0.resize(data_blocks as usize * slot, 0);
        builder.fed = Some(vec![0u64; (data_blocks as usize).div_ceil(64)]);
        Ok(builder)
    }

    /// Feeds whole blocks starting at data block `first` (positional mode).
    pub fn update_at(&mut self, first: u64, data: &[u8]) -> Result<(), TreeError> {
        let bs = self.params.data_block_size.bytes();
        let slot = self.params.algorithm.slot_size();
        let total = (self.level0.len() / slot) as u64;
        let count = (data.len() / bs) as u64;
        let Some(fed) = self.fed.as_mut() else {
            return Err(TreeError::NotPositional);
        };
        if data.len() % bs != 0 {
            return Err(TreeError::PartialBlock {
                trailing: data.len() % bs,
                block_size: bs as u32,
            });
        }
        if first.checked_add(count).is_none_or(|end| end > total) {
            return Err(TreeError::OutOfRange {
                first,
                count,
                total,
            });
        }
        for block in first..first + count {
            fed[(block / 64) as usize] |= 1 << (block % 64);
        }
        let start = first as usize * slot;
        self.hasher.hash_blocks(
            data,
            bs,
            &mut self.level0[start..start + count as usize * slot],
        );
        Ok(())
    }

    /// A builder that reserves room for a tree over `data_blocks` blocks up
    /// front, so that building it never reallocates.
    pub fn with_capacity(params: TreeParams, data_blocks: u64) -> Self {
        let mut builder = Self::new(params);
        if let Ok(geometry) = TreeGeometry::new(&builder.params, data_blocks) {
            builder.level0 = Vec::with_capacity(
                (geometry.tree_bytes() as usize).max(builder.params.algorithm.slot_size()),
            );
        }
        builder
    }

    /// The parameters of the tree being built.
    pub fn params(&self) -> &TreeParams {
        &self.params
    }

    /// Number of complete data blocks hashed so far.
    pub fn data_blocks(&self) -> u64 {
        (self.level0.len() / self.params.algorithm.slot_size()) as u64
    }

    /// Feeds the next bytes of data (in-order mode; a builder made with
    /// [`for_blocks`](Self::for_blocks) takes [`update_at`](Self::update_at)
    /// instead and ignores this).
    pub fn update(&mut self, mut data: &[u8]) {
        if self.fed.is_some() {
            debug_assert!(false, "update() on a positional builder");
            return;
        }
        let bs = self.params.data_block_size.bytes();
        if !self.partial.is_empty() {
            let take = (bs - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < bs {
                return;
            }
            let block = std::mem::take(&mut self.partial);
            self.hash_whole_blocks(&block);
        }
        let whole = data.len() / bs * bs;
        self.hash_whole_blocks(&data[..whole]);
        self.partial.extend_from_slice(&data[whole..]);
    }

    /// Hashes a slice of whole data blocks, appending their digest slots.
    pub(crate) fn hash_whole_blocks(&mut self, blocks: &[u8]) {
        if blocks.is_empty() {
            return;
        }
        let slot = self.params.algorithm.slot_size();
        let start = self.level0.len();
        let count = blocks.len() / self.params.data_block_size.bytes();
        self.level0.resize(start + count * slot, 0);
        self.hasher.hash_blocks(
            blocks,
            self.params.data_block_size.bytes(),
            &mut self.level0[start..],
        );
    }

    /// Hashes `count` whole data blocks read from `file` at `offset`.
    /// Only valid on a block boundary (no partial block pending).
    pub(crate) fn hash_file_blocks(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        count: usize,
    ) -> io::Result<()> {
        debug_assert!(self.partial.is_empty());
        let slot = self.params.algorithm.slot_size();
        let start = self.level0.len();
        self.level0.resize(start + count * slot, 0);
        let result = self.hasher.hash_blocks_at(
            file,
            offset,
            self.params.data_block_size.bytes(),
            &mut self.level0[start..],
        );
        if result.is_err() {
            self.level0.truncate(start);
        }
        result
    }

    /// Computes the upper levels and the root hash.
    pub fn finish(self) -> Result<HashTree, TreeError> {
        if !self.partial.is_empty() {
            return Err(TreeError::PartialBlock {
                trailing: self.partial.len(),
                block_size: self.params.data_block_size.get(),
            });
        }
        let geometry = TreeGeometry::new(&self.params, self.data_blocks())?;
        let hasher = self.hasher;
        let mut tree = self.level0;
        if let Some(fed) = &self.fed {
            let slot = hasher.algorithm().slot_size();
            let digest = hasher.algorithm().digest_size();
            let zero = hasher.digest(&vec![0u8; self.params.data_block_size.bytes()]);
            for (block, slot) in tree.chunks_exact_mut(slot).enumerate() {
                if fed[block / 64] & (1 << (block % 64)) == 0 {
                    slot[..digest].copy_from_slice(&zero);
                }
            }
        }
        if geometry.levels().is_empty() {
            // A single data block: its digest is the root hash, and there is
            // no tree to store.
            let root = RootHash::from_digest(&tree[..hasher.algorithm().digest_size()]);
            return Ok(HashTree {
                params: self.params,
                geometry,
                tree: Vec::new(),
                root_hash: root,
            });
        }

        // Move the level-0 digests to where level 0 sits (the end of the
        // tree); the zeros after them are the padding of its last block.
        let level0_len = tree.len();
        let level0_start = geometry.level_range(0).start;
        tree.resize(geometry.tree_bytes() as usize, 0);
        tree.copy_within(0..level0_len, level0_start);
        tree[..level0_start].fill(0);

        let hbs = geometry.hash_block_size().bytes();
        let slot = hasher.algorithm().slot_size();
        for level in 1..geometry.levels().len() {
            let below = geometry.level_range(level - 1);
            let here = geometry.level_range(level);
            let (upper, lower) = tree.split_at_mut(below.start);
            let children = &lower[..below.len()];
            let count = children.len() / hbs;
            hasher.hash_blocks(
                children,
                hbs,
                &mut upper[here.start..here.start + count * slot],
            );
        }
        let top = geometry.level_range(geometry.levels().len() - 1);
        let root_hash = RootHash::from_digest(&hasher.digest(&tree[top]));
        Ok(HashTree {
            params: self.params,
            geometry,
            tree,
            root_hash,
        })
    }
}

impl Write for HashTreeBuilder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A complete hash tree and its root hash.
#[derive(Clone, PartialEq, Eq)]
pub struct HashTree {
    params: TreeParams,
    geometry: TreeGeometry,
    tree: Vec<u8>,
    root_hash: RootHash,
}

impl std::fmt::Debug for HashTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashTree")
            .field("params", &self.params)
            .field("geometry", &self.geometry)
            .field("tree_bytes", &self.tree.len())
            .field("root_hash", &self.root_hash)
            .finish()
    }
}

impl HashTree {
    /// Builds the tree over data held in memory.
    pub fn from_data(params: TreeParams, data: &[u8]) -> Result<Self, TreeError> {
        let mut builder = HashTreeBuilder::new(params);
        builder.update(data);
        builder.finish()
    }

    /// The root hash.
    pub fn root_hash(&self) -> &RootHash {
        &self.root_hash
    }

    /// The parameters the tree was built with.
    pub fn params(&self) -> &TreeParams {
        &self.params
    }

    /// The shape of the tree.
    pub fn geometry(&self) -> &TreeGeometry {
        &self.geometry
    }

    /// The tree as stored after the superblock: top level first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.tree
    }

    /// The superblock describing this tree.
    pub fn superblock(&self, uuid: Uuid) -> Superblock {
        Superblock {
            uuid,
            params: self.params.clone(),
            data_blocks: self.geometry.data_blocks(),
        }
    }

    /// Writes the hash area into `out` (a hash file, or a disk image with the
    /// area at `layout.hash_offset`) exactly as `veritysetup format` would:
    /// the superblock when `uuid` is given, zeros up to the first tree block,
    /// then the tree. Bytes outside the area are not touched.
    ///
    /// The superblock is cleared first and written last, so an interrupted
    /// write never leaves a superblock in front of an incomplete tree.
    pub fn write_hash_area<W: Write + Seek>(
        &self,
        out: &mut W,
        layout: &HashAreaLayout,
        uuid: Option<Uuid>,
    ) -> io::Result<()> {
        let superblock = match (layout.superblock, uuid) {
            (true, Some(uuid)) => Some(self.superblock(uuid)),
            (true, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a superblock needs a UUID",
                ));
            }
            (false, _) => None,
        };
        if superblock.is_some() {
            // Zero the superblock and the gap up to the tree. veritysetup
            // writes the superblock as a whole 4 KiB page (a hash block if
            // smaller), so without a tree the area ends with that page.
            let end = if self.tree.is_empty() {
                let page = self.params.hash_block_size.bytes_u64().min(4096);
                (layout.hash_offset + SUPERBLOCK_SIZE as u64).next_multiple_of(page)
            } else {
                layout.tree_offset
            };
            out.seek(SeekFrom::Start(layout.hash_offset))?;
            write_zeros(out, end - layout.hash_offset)?;
        }
        out.seek(SeekFrom::Start(layout.tree_offset))?;
        out.write_all(&self.tree)?;
        out.flush()?;
        if let Some(sb) = superblock {
            out.seek(SeekFrom::Start(layout.hash_offset))?;
            out.write_all(&sb.to_bytes())?;
            out.flush()?;
        }
        Ok(())
    }
}

fn write_zeros<W: Write>(out: &mut W, mut len: u64) -> io::Result<()> {
    const ZEROS: [u8; SUPERBLOCK_SIZE * 8] = [0; SUPERBLOCK_SIZE * 8];
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..n])?;
        len -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::params::{BlockSize, HashAlgorithm, Salt};

    fn params() -> TreeParams {
        TreeParams {
            algorithm: HashAlgorithm::Sha256,
            data_block_size: BlockSize::new(512).unwrap(),
            hash_block_size: BlockSize::new(512).unwrap(),
            salt: Salt::from_hex("abcd").unwrap(),
        }
    }

    #[test]
    fn feeding_in_odd_pieces_gives_the_same_tree() {
        let data: Vec<u8> = (0..512 * 300).map(|i| (i * 7 % 256) as u8).collect();
        let whole = HashTree::from_data(params(), &data).unwrap();
        let mut b = HashTreeBuilder::new(params());
        for piece in data.chunks(333) {
            b.update(piece);
        }
        assert_eq!(b.finish().unwrap(), whole);
    }

    #[test]
    fn positional_feeding_with_gaps_equals_zero_filled_data() {
        let mut data: Vec<u8> = (0..512 * 300).map(|i| (i * 5 % 256) as u8).collect();
        // Blocks 10..20 and 200..300 are never fed: they must count as zeros.
        data[10 * 512..20 * 512].fill(0);
        data[200 * 512..].fill(0);
        let expected = HashTree::from_data(params(), &data).unwrap();
        let mut b = HashTreeBuilder::for_blocks(params(), 300).unwrap();
        b.update_at(100, &data[100 * 512..200 * 512]).unwrap();
        b.update_at(20, &data[20 * 512..100 * 512]).unwrap();
        b.update_at(0, &data[..10 * 512]).unwrap();
        assert!(b.update_at(299, &data[..1024]).is_err());
        assert_eq!(b.finish().unwrap(), expected);
    }

    #[test]
    fn a_trailing_partial_block_is_an_error() {
        let mut b = HashTreeBuilder::new(params());
        b.update(&[0; 700]);
        assert_eq!(
            b.finish(),
            Err(TreeError::PartialBlock {
                trailing: 188,
                block_size: 512
            })
        );
    }

    #[test]
    fn upper_levels_hash_the_blocks_below() {
        // 20 data blocks, 16 sha256 digests per 512-byte block: level 0 has
        // two blocks, level 1 one. Check the structure directly from the
        // definition in the kernel documentation.
        let data: Vec<u8> = (0..512 * 20).map(|i| (i % 13) as u8).collect();
        let tree = HashTree::from_data(params(), &data).unwrap();
        let bytes = tree.as_bytes();
        assert_eq!(bytes.len(), 3 * 512);
        let h = BlockHasher::new(&params());
        // Level 0 (blocks 1-2): digest of each data block, then zeros.
        for (i, block) in data.chunks(512).enumerate() {
            let at = 512 + i * 32;
            assert_eq!(&bytes[at..at + 32], &h.digest(block)[..]);
        }
        assert!(bytes[512 + 20 * 32..].iter().all(|&b| b == 0));
        // Level 1 (block 0): digests of the two level-0 blocks.
        assert_eq!(&bytes[..32], &h.digest(&bytes[512..1024])[..]);
        assert_eq!(&bytes[32..64], &h.digest(&bytes[1024..1536])[..]);
        assert!(bytes[64..512].iter().all(|&b| b == 0));
        assert_eq!(tree.root_hash().as_bytes(), &h.digest(&bytes[..512])[..]);
    }
}
