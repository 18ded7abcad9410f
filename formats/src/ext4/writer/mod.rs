//! Writing a [`SourceTree`] as an ext4 filesystem for read-only use.
//!
//! Shape of the filesystem (4 KiB blocks, 32768 blocks per group, 256-byte
//! inodes, no journal): features `ext_attr`, `dir_index`, `filetype`,
//! `extent`, `flex_bg`, `sparse_super`, `large_file`, `dir_nlink`,
//! `extra_isize`; no metadata checksums (the image is protected by
//! dm-verity, which is stronger). With `flex_bg`, all block bitmaps, inode
//! bitmaps and inode tables sit together after the primary group descriptor
//! table, so file data runs contiguously across groups, broken only by the
//! superblock backups of `sparse_super`.
//!
//! Writing happens in two steps. [`Ext4Plan::new`] reads nothing but the
//! tree's metadata: it numbers the inodes (root 2, `lost+found` 11, then the
//! tree in depth-first order of sorted names), builds every directory block
//! and sizes the filesystem. [`Ext4Plan::write`] then streams file contents
//! once, allocating blocks in order (all-zero blocks become holes, so the
//! image does not depend on how sparse the source files were), and writes
//! the inode tables, bitmaps, group descriptors and superblocks last, each
//! block exactly once, through a [`BlockSink`].
//!
//! The modules, in the order a write uses them:
//! * `plan`: [`Ext4Plan::new`] (inode numbers, directory blocks, size);
//! * `layout`: the geometry (groups, inodes per group, table sizes,
//!   `sparse_super` groups);
//! * `alloc`: the block allocator and the output that batches writes and
//!   records the blocks in use;
//! * `metadata`: where the group metadata goes (placed first), and writing
//!   it (last): inode tables, bitmaps, descriptors, superblocks;
//! * `inodes`: each inode and the blocks it owns, in inode order;
//! * `pipeline`: the read-ahead thread that reads file contents while
//!   earlier files are written, and the writing of a file's blocks;
//! * `extents`: runs of blocks and the extent tree;
//! * `xattrs`: the extended attribute block.

mod alloc;
mod extents;
mod inodes;
mod layout;
mod metadata;
mod pipeline;
mod plan;
mod xattrs;

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use uuid::Uuid;

use self::alloc::{Allocator, Output};
use self::layout::{Geometry, INODES_PER_BLOCK};
use self::metadata::MetadataPlaces;
use self::plan::PlannedInode;
use super::dir;
use super::source::SourceTree;

/// Block size of the filesystem.
pub const BLOCK_SIZE: u64 = 4096;
const BLOCK: usize = BLOCK_SIZE as usize;

/// Options of the filesystem.
#[derive(Debug, Clone)]
pub struct Ext4Options {
    /// Filesystem UUID.
    pub uuid: Uuid,
    /// Seed of the directory hash.
    pub hash_seed: Uuid,
    /// Time stamped on everything (SOURCE_DATE_EPOCH); file mtimes are
    /// clamped to it.
    pub timestamp: i64,
    /// Make every file owned by 0:0.
    pub root_owned: bool,
    /// Size in bytes; by default the tree's size plus 10%, rounded up to MiB.
    pub size: Option<u64>,
    /// Volume label (at most 16 bytes).
    pub label: String,
    /// At least this many inodes (for a filesystem that will be written
    /// to, such as `/cocos`); by default just those the tree needs.
    pub min_inodes: Option<u64>,
    /// Write only the inode table blocks that hold used inodes (and the
    /// one after them, which the kernel's inode readahead reads: see
    /// [`lazy_itable_blocks`]), mark the rest unused (`uninit_bg`) and
    /// switch inode readahead off ([`LAZY_MOUNT_OPTIONS`]): the kernel
    /// never reads them. For a
    /// large empty filesystem on a device where writing is slow (the
    /// `/cocos` partition under dm-integrity). Off for images, whose unused
    /// blocks are zeros anyway.
    pub lazy_inode_tables: bool,
}

/// Inode table blocks written at the start of a group's table with lazy
/// inode tables, when the group has `used` inodes in use (the first `used`
/// of the group; `bg_itable_unused` says the rest are unused) and its
/// table is `table_blocks` long.
///
/// Not just the blocks holding those inodes: when the kernel reads an inode
/// block from disk, it also reads ahead the group's table up to and
/// *including* block `used / INODES_PER_BLOCK` (`__ext4_get_inode_loc` in
/// fs/ext4/inode.c: `table += num / inodes_per_block; ... while (b <= end)`,
/// with `num` the inodes in use). When `used` fills whole blocks, that is
/// the first unused block, read at the mount's first inode read (the root
/// directory). On a device where a never-written block cannot be read (the
/// `/cocos` partition under dm-integrity: `INTEGRITY AEAD ERROR`), it must
/// be written too. A group without used inodes (`INODE_UNINIT`) has no
/// inode the kernel would read, so none of its table is written.
///
/// That covers the filesystem as written. Once the kernel allocates more
/// inodes, the same readahead reaches the block after them, unwritten
/// until the kernel's lazy itable initialisation zeroes it (it starts up
/// to 5 s after the mount); so lazy filesystems also carry
/// [`LAZY_MOUNT_OPTIONS`].
pub fn lazy_itable_blocks(used: u64, table_blocks: u64) -> u64 {
    if used == 0 {
        0
    } else {
        (used / INODES_PER_BLOCK + 1).min(table_blocks)
    }
}

/// Default mount options of a filesystem with lazy inode tables
/// (`s_mount_opts`, applied by the kernel to every mount before the
/// mount's own options): no inode table readahead, which would read the
/// unused block after the inodes in use (see [`lazy_itable_blocks`]). Each
/// inode block is then read when one of its inodes is needed, and only
/// blocks holding inodes in use are read.
pub const LAZY_MOUNT_OPTIONS: &str = "inode_readahead_blks=0";

/// Receives the filesystem's blocks. Each block is written at most once;
/// blocks never written are zero.
pub trait BlockSink {
    /// Writes `data` (whole blocks) starting at block `first`.
    fn write_blocks(&mut self, first: u64, data: &[u8]) -> io::Result<()>;
}

/// Why the filesystem could not be written.
#[derive(Debug, Error)]
pub enum Ext4Error {
    /// An OS error on a source file.
    #[error("{}: cannot {action}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The sink failed.
    #[error("cannot write the filesystem image")]
    Sink(#[source] io::Error),
    /// The tree does not fit in the requested size.
    #[error("the tree needs at least {needed} bytes but the filesystem is {size} bytes")]
    TooSmall {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        size: u64,
    },
    /// A requested size that is not a whole number of blocks.
    #[error("filesystem size {0} is not a multiple of 4096 bytes")]
    SizeNotMultiple(u64),
    /// Beyond 2^32 blocks (16 TiB) or inodes.
    #[error("the filesystem would exceed ext4's 32-bit block or inode numbers")]
    TooLarge,
    /// A file changed while being read.
    #[error("{}: changed while being read ({expected} bytes expected)", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// Size seen when the tree was scanned.
        expected: u64,
    },
    /// A file needs more extents than a two-level extent tree holds.
    #[error("{}: too fragmented (more than {max} extents)", path.display())]
    TooFragmented {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// Extended attributes this writer cannot store.
    #[error("{}: {reason}", path.display())]
    Xattr {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A directory too large to index.
    #[error("{}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        source: dir::DirTooLarge,
    },
}

/// What [`Ext4Plan::write`] produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ext4Report {
    /// Blocks in the filesystem.
    pub blocks: u64,
    /// Blocks in use.
    pub used_blocks: u64,
    /// Inodes in the filesystem.
    pub inodes: u64,
    /// Inodes in use (including the 10 reserved ones).
    pub used_inodes: u64,
    /// Filesystem UUID.
    pub uuid: Uuid,
}

/// A filesystem ready to be written: inode numbers, directory blocks, size.
#[derive(Debug, Clone)]
pub struct Ext4Plan {
    options: Ext4Options,
    geometry: Geometry,
    inodes: Vec<PlannedInode>,
    hash_seed: [u32; 4],
}

impl Ext4Plan {
    /// Size of the filesystem in bytes.
    pub fn size(&self) -> u64 {
        self.geometry.blocks * BLOCK_SIZE
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.geometry.blocks
    }

    /// Writes the filesystem to `sink`, reading file contents from the tree.
    pub fn write<S: BlockSink>(
        &self,
        tree: &SourceTree,
        sink: &mut S,
        progress: &dyn Fn(u64),
    ) -> Result<Ext4Report, Ext4Error> {
        let g = &self.geometry;
        let mut out = Output::new(sink, g.blocks);
        let mut alloc = Allocator::new(g.blocks, g.super_ranges());
        let places = MetadataPlaces::allocate(g, &mut alloc)?;
        let inodes = self.write_inodes(tree, &mut alloc, &mut out, progress)?;
        self.write_metadata(&places, &inodes, &mut out)
    }
}
