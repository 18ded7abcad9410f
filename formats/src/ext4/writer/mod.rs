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

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use thiserror::Error;
use uuid::Uuid;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromZeros, IntoBytes};

use super::dir::{self, DirBlocks, DirEntry, file_type};
use super::hash::{xattr_block_hash, xattr_entry_hash};
use super::raw::*;
use super::source::{Chunk, FileContent, NodeId, NodeKind, SourceTree};

/// Block size of the filesystem.
pub const BLOCK_SIZE: u64 = 4096;
const BLOCK: usize = BLOCK_SIZE as usize;
/// Blocks per group: the bits of one bitmap block.
const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;
const INODE_SIZE: u64 = 256;
const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
const ROOT_INO: u32 = 2;
const LOST_FOUND_INO: u32 = 11;
/// First inode that is not reserved (`s_first_ino`).
const FIRST_INO: u32 = 11;
/// Extents in the inode's `i_block` (60 bytes: header and four entries).
const INODE_EXTENTS: usize = 4;
/// Extents in a leaf block: (4096 - 12) / 12.
const LEAF_EXTENTS: usize = (BLOCK - 12) / 12;
/// Output is gathered into runs of at most this many bytes.
const RUN_BYTES: usize = 8 << 20;

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

fn min_inodes(options: &Ext4Options) -> u64 {
    options.min_inodes.unwrap_or(0).min(u64::from(u32::MAX))
}

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

/// Sizes of the block groups and where their metadata goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Geometry {
    blocks: u64,
    groups: u64,
    inodes_per_group: u64,
    gdt_blocks: u64,
    itable_blocks: u64,
}

impl Geometry {
    fn new(blocks: u64, inodes: u64) -> Result<Self, Ext4Error> {
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
    fn has_super(g: u64) -> bool {
        fn power_of(mut n: u64, base: u64) -> bool {
            while n > 1 && n % base == 0 {
                n /= base;
            }
            n == 1
        }
        g == 0 || g == 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }

    /// Block ranges holding a superblock and group descriptor table.
    fn super_ranges(&self) -> Vec<(u64, u64)> {
        (0..self.groups)
            .filter(|&g| Self::has_super(g))
            .map(|g| {
                let start = g * BLOCKS_PER_GROUP;
                (start, (start + 1 + self.gdt_blocks).min(self.blocks))
            })
            .collect()
    }

    /// Blocks taken by metadata: superblocks, descriptors, bitmaps, tables.
    fn overhead(&self) -> u64 {
        let supers: u64 = self.super_ranges().iter().map(|(a, b)| b - a).sum();
        supers + self.groups * (2 + self.itable_blocks)
    }

    /// Whether the last group is big enough for its superblock copy.
    fn last_group_ok(&self) -> bool {
        let last = self.groups - 1;
        let len = self.blocks - last * BLOCKS_PER_GROUP;
        !Self::has_super(last) || len > 1 + self.gdt_blocks + 16
    }
}

/// What an inode holds.
#[derive(Debug, Clone)]
enum InodeContent {
    /// A node of the tree.
    Node(NodeId),
    /// The `lost+found` directory e2fsck expects, when the tree has none.
    LostFound,
}

#[derive(Debug, Clone)]
struct PlannedInode {
    ino: u32,
    content: InodeContent,
    /// Blocks of a directory.
    dir: Option<DirBlocks>,
    /// Subdirectories of a directory (for its link count).
    subdirs: u32,
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
    /// Plans the filesystem for `tree`.
    pub fn new(tree: &SourceTree, options: Ext4Options) -> Result<Self, Ext4Error> {
        let hash_seed = seed_words(&options.hash_seed);

        // Inode numbers: root 2, lost+found 11, then depth-first order.
        let mut ino_of = vec![0u32; tree.nodes.len()];
        ino_of[SourceTree::ROOT] = ROOT_INO;
        let tree_lost_found = tree
            .lookup(b"lost+found")
            .filter(|&id| matches!(tree.nodes[id].kind, NodeKind::Dir { .. }));
        let mut inodes = vec![PlannedInode {
            ino: ROOT_INO,
            content: InodeContent::Node(SourceTree::ROOT),
            dir: None,
            subdirs: 0,
        }];
        if tree_lost_found.is_none() {
            inodes.push(PlannedInode {
                ino: LOST_FOUND_INO,
                content: InodeContent::LostFound,
                dir: None,
                subdirs: 0,
            });
        }
        // Depth-first order; inode 11 is always lost+found.
        let mut order: Vec<NodeId> = Vec::with_capacity(tree.nodes.len());
        dfs(
            tree,
            SourceTree::ROOT,
            &mut order,
            &mut vec![false; tree.nodes.len()],
        );
        let mut next = LOST_FOUND_INO + 1;
        for id in order.into_iter().skip(1) {
            let ino = if Some(id) == tree_lost_found {
                LOST_FOUND_INO
            } else {
                next += 1;
                next - 1
            };
            ino_of[id] = ino;
            inodes.push(PlannedInode {
                ino,
                content: InodeContent::Node(id),
                dir: None,
                subdirs: 0,
            });
        }
        inodes.sort_by_key(|i| i.ino);
        let max_ino = inodes.last().map_or(FIRST_INO, |i| i.ino).max(FIRST_INO);

        // Parent of every directory, for "..".
        let mut parent_ino = vec![ROOT_INO; tree.nodes.len()];
        for (pid, node) in tree.nodes.iter().enumerate() {
            if let NodeKind::Dir { children } = &node.kind {
                for (_, child) in children {
                    parent_ino[*child] = ino_of[pid];
                }
            }
        }

        // Directory blocks.
        for planned in &mut inodes {
            let (entries, parent, path) = match &planned.content {
                InodeContent::LostFound => (Vec::new(), ROOT_INO, PathBuf::from("lost+found")),
                InodeContent::Node(id) => {
                    let NodeKind::Dir { children } = &tree.nodes[*id].kind else {
                        continue;
                    };
                    let mut entries: Vec<DirEntry> = children
                        .iter()
                        .map(|(name, child)| DirEntry {
                            name: name.clone(),
                            inode: ino_of[*child],
                            file_type: entry_type(&tree.nodes[*child].kind),
                        })
                        .collect();
                    if *id == SourceTree::ROOT && tree_lost_found.is_none() {
                        entries.push(DirEntry {
                            name: b"lost+found".to_vec(),
                            inode: LOST_FOUND_INO,
                            file_type: file_type::DIRECTORY,
                        });
                        entries.sort_by(|a, b| a.name.cmp(&b.name));
                    }
                    (entries, parent_ino[*id], tree.nodes[*id].path.clone())
                }
            };
            planned.subdirs = entries
                .iter()
                .filter(|e| e.file_type == file_type::DIRECTORY)
                .count() as u32;
            planned.dir = Some(
                dir::build(planned.ino, parent, &entries, &hash_seed)
                    .map_err(|source| Ext4Error::Directory { path, source })?,
            );
        }

        // Size: everything the data needs at most, plus metadata.
        let data_upper: u64 = inodes.iter().map(|i| data_blocks_upper(tree, i)).sum();
        let inode_count = u64::from(max_ino).max(min_inodes(&options));
        let mut blocks = data_upper + 64;
        let needed = loop {
            let g = Geometry::new(blocks, inode_count)?;
            let need = g.overhead() + data_upper;
            if need <= blocks {
                break need;
            }
            blocks = need;
        };
        let blocks = match options.size {
            Some(size) => {
                if size % BLOCK_SIZE != 0 {
                    return Err(Ext4Error::SizeNotMultiple(size));
                }
                size / BLOCK_SIZE
            }
            None => (needed * 110 / 100).next_multiple_of(256),
        };
        let mut geometry = Geometry::new(blocks, inode_count)?;
        if !geometry.last_group_ok() {
            // The last group cannot hold its superblock copy: leave its
            // blocks out of the filesystem, as mke2fs does.
            geometry = Geometry::new((geometry.groups - 1) * BLOCKS_PER_GROUP, inode_count)?;
        }
        // An explicit size is never grown (Geometry::new raises tiny sizes).
        if geometry.overhead() + data_upper > geometry.blocks || geometry.blocks > blocks {
            return Err(Ext4Error::TooSmall {
                needed: (geometry.overhead() + data_upper).max(needed) * BLOCK_SIZE,
                size: blocks * BLOCK_SIZE,
            });
        }
        Ok(Ext4Plan {
            options,
            geometry,
            inodes,
            hash_seed,
        })
    }

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

        // Metadata locations (flex_bg: all together after the GDT).
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

        let mut table = vec![0u8; (g.groups * g.inodes_per_group * INODE_SIZE) as usize];
        let mut dirs_in_group = vec![0u16; g.groups as usize];
        // File contents are read ahead on another thread, in the order the
        // inodes are written, so reading and writing overlap.
        let files = self
            .inodes
            .iter()
            .filter_map(|planned| match planned.content {
                InodeContent::Node(id) if planned.dir.is_none() => match &tree.nodes[id].kind {
                    NodeKind::File { size, content } if *size > 0 => {
                        Some((&tree.nodes[id].path, *size, content))
                    }
                    _ => None,
                },
                _ => None,
            });
        std::thread::scope(|s| -> Result<(), Ext4Error> {
            let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
            s.spawn(move || {
                let mut tx = Batcher::new(tx);
                for (path, size, content) in files {
                    let source = match content {
                        FileContent::Path => Content::Path(path),
                        FileContent::Chunks(chunks) => Content::Chunks {
                            chunks,
                            blobs: &tree.blobs,
                            path,
                        },
                    };
                    if read_file(source, size, &mut tx).is_err() {
                        return; // the writer stopped
                    }
                }
                let _ = tx.flush();
            });
            let rx = Contents::new(rx);
            for planned in &self.inodes {
                let inode = self.write_inode(tree, planned, &mut alloc, &mut out, &rx, progress)?;
                let at = ((planned.ino - 1) as u64 * INODE_SIZE) as usize;
                table[at..at + INODE_SIZE as usize].copy_from_slice(inode.as_bytes());
                if inode.i_mode.get() & 0o170000 == 0o040000 {
                    dirs_in_group[((planned.ino - 1) as u64 / g.inodes_per_group) as usize] += 1;
                }
            }
            Ok(())
        })?;

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
                out.put(start, &table[grp * per_group..grp * per_group + len])?;
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
        for &b in block_bitmaps.iter().chain(&inode_bitmaps) {
            set_bit(&mut used, b);
        }
        // Whole inode tables, also the blocks lazy tables leave unwritten.
        for &start in &inode_tables {
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
            d.bg_used_dirs_count = U16::new(dirs_in_group[grp as usize]);
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

    fn write_inode<S: BlockSink>(
        &self,
        tree: &SourceTree,
        planned: &PlannedInode,
        alloc: &mut Allocator,
        out: &mut Output<'_, S>,
        contents: &Contents,
        progress: &dyn Fn(u64),
    ) -> Result<Inode, Ext4Error> {
        let ts = self.options.timestamp;
        let mut inode = Inode::new_zeroed();
        let mut sectors = 0u64;
        let (mode, uid, gid, mtime, links) = match &planned.content {
            InodeContent::LostFound => (0o040700u16, 0, 0, ts, 2 + planned.subdirs),
            InodeContent::Node(id) => {
                let node = &tree.nodes[*id];
                let (uid, gid) = if self.options.root_owned {
                    (0, 0)
                } else {
                    (node.uid, node.gid)
                };
                let links = match node.kind {
                    NodeKind::Dir { .. } => {
                        let n = 2 + planned.subdirs;
                        // dir_nlink: 1 means "more than 65000".
                        if n >= 65000 { 1 } else { n }
                    }
                    _ => node.links,
                };
                (
                    type_bits(&node.kind) | node.permissions,
                    uid,
                    gid,
                    node.mtime.min(ts),
                    links,
                )
            }
        };
        inode.i_mode = U16::new(mode);
        inode.i_uid = U16::new(uid as u16);
        inode.l_i_uid_high = U16::new((uid >> 16) as u16);
        inode.i_gid = U16::new(gid as u16);
        inode.l_i_gid_high = U16::new((gid >> 16) as u16);
        inode.i_links_count = U16::new(links.min(65535) as u16);
        let (t, extra) = encode_time(ts);
        let (mt, mextra) = encode_time(mtime);
        inode.i_atime = U32::new(t);
        inode.i_atime_extra = U32::new(extra);
        inode.i_ctime = U32::new(t);
        inode.i_ctime_extra = U32::new(extra);
        inode.i_crtime = U32::new(t);
        inode.i_crtime_extra = U32::new(extra);
        inode.i_mtime = U32::new(mt);
        inode.i_mtime_extra = U32::new(mextra);
        inode.i_extra_isize = U16::new(INODE_EXTRA_ISIZE);

        let node = match &planned.content {
            InodeContent::Node(id) => Some(&tree.nodes[*id]),
            InodeContent::LostFound => None,
        };
        if let Some(node) = node.filter(|n| !n.xattrs.is_empty()) {
            let block = xattr_block(&node.xattrs, &node.path)?;
            let at = alloc.run(1)?;
            out.put(at, &block)?;
            inode.i_file_acl_lo = U32::new(at as u32);
            sectors += BLOCK_SIZE / 512;
        }

        let mut size = 0u64;
        let mut extents: Option<Vec<ExtentRun>> = None;
        if let Some(dir) = &planned.dir {
            let mut runs = Vec::new();
            for (i, block) in dir.bytes.chunks(BLOCK).enumerate() {
                let at = alloc.run(1)?;
                out.put(at, block)?;
                push_block(&mut runs, i as u32, at);
            }
            size = dir.bytes.len() as u64;
            if dir.indexed {
                inode.i_flags = U32::new(INODE_INDEX_FL);
            }
            extents = Some(runs);
        } else if let Some(node) = node {
            match &node.kind {
                NodeKind::File { size: len, .. } => {
                    size = *len;
                    extents = Some(if *len == 0 {
                        Vec::new()
                    } else {
                        write_file(&node.path, contents, alloc, out, progress)?
                    });
                }
                NodeKind::Symlink { target } => {
                    size = target.len() as u64;
                    if target.len() < 60 {
                        inode.i_block[..target.len()].copy_from_slice(target);
                    } else {
                        let mut block = vec![0u8; BLOCK];
                        block[..target.len()].copy_from_slice(target);
                        let at = alloc.run(1)?;
                        out.put(at, &block)?;
                        extents = Some(vec![ExtentRun {
                            logical: 0,
                            start: at,
                            len: 1,
                        }]);
                    }
                }
                NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                    encode_device(&mut inode.i_block, *major, *minor);
                }
                NodeKind::Dir { .. } | NodeKind::Fifo | NodeKind::Socket => {}
            }
        }
        if let Some(runs) = extents {
            let path = node.map_or_else(|| PathBuf::from("lost+found"), |n| n.path.clone());
            let (i_block, blocks) = extent_tree(&runs, &path, alloc, out)?;
            inode.i_block = i_block;
            inode.i_flags = U32::new(inode.i_flags.get() | INODE_EXTENTS_FL);
            sectors += blocks * (BLOCK_SIZE / 512);
        }
        inode.i_size_lo = U32::new(size as u32);
        inode.i_size_high = U32::new((size >> 32) as u32);
        inode.i_blocks_lo = U32::new(sectors as u32);
        inode.l_i_blocks_high = U16::new((sectors >> 32) as u16);
        Ok(inode)
    }
}

fn dfs(tree: &SourceTree, id: NodeId, order: &mut Vec<NodeId>, seen: &mut [bool]) {
    if seen[id] {
        return;
    }
    seen[id] = true;
    order.push(id);
    if let NodeKind::Dir { children } = &tree.nodes[id].kind {
        for (_, child) in children {
            dfs(tree, *child, order, seen);
        }
    }
}

fn entry_type(kind: &NodeKind) -> u8 {
    match kind {
        NodeKind::File { .. } => file_type::REGULAR,
        NodeKind::Dir { .. } => file_type::DIRECTORY,
        NodeKind::Symlink { .. } => file_type::SYMLINK,
        NodeKind::CharDevice { .. } => file_type::CHAR_DEVICE,
        NodeKind::BlockDevice { .. } => file_type::BLOCK_DEVICE,
        NodeKind::Fifo => file_type::FIFO,
        NodeKind::Socket => file_type::SOCKET,
    }
}

fn type_bits(kind: &NodeKind) -> u16 {
    match kind {
        NodeKind::File { .. } => 0o100000,
        NodeKind::Dir { .. } => 0o040000,
        NodeKind::Symlink { .. } => 0o120000,
        NodeKind::CharDevice { .. } => 0o020000,
        NodeKind::BlockDevice { .. } => 0o060000,
        NodeKind::Fifo => 0o010000,
        NodeKind::Socket => 0o140000,
    }
}

/// Upper bound of the blocks an inode needs. It depends on sizes only, not
/// on content or on how sparse the source is, so the default filesystem
/// size is reproducible without reading any file; zero blocks found while
/// writing only leave more free space.
fn data_blocks_upper(tree: &SourceTree, planned: &PlannedInode) -> u64 {
    let mut n = planned.dir.as_ref().map_or(0, |d| d.blocks() as u64);
    if let InodeContent::Node(id) = planned.content {
        let node = &tree.nodes[id];
        if !node.xattrs.is_empty() {
            n += 1;
        }
        match &node.kind {
            NodeKind::File { size, .. } => {
                let blocks = size.div_ceil(BLOCK_SIZE);
                n += blocks;
                if blocks > INODE_EXTENTS as u64 {
                    // Leaf blocks: one per 340 extents. A dense file has one
                    // extent per 32768 blocks plus one per superblock copy
                    // it crosses; each hole adds an extent but saves a block.
                    let extents = blocks / u64::from(MAX_EXTENT_LEN) + 64;
                    n += extents.div_ceil(LEAF_EXTENTS as u64);
                }
            }
            NodeKind::Symlink { target } if target.len() >= 60 => n += 1,
            _ => {}
        }
    }
    n
}

/// Time as stored: the low 32 bits of the seconds, and the extra word
/// holding the epoch bits (nanoseconds are 0).
fn encode_time(secs: i64) -> (u32, u32) {
    let epoch = ((secs - i64::from(secs as i32)) >> 32) as u32 & 3;
    (secs as u32, epoch)
}

/// Device numbers in `i_block`: the old 16-bit form when both fit in a
/// byte, the new form in the second word otherwise (`ext4_encode_dev`).
fn encode_device(i_block: &mut [u8; 60], major: u32, minor: u32) {
    if major < 256 && minor < 256 {
        i_block[..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        i_block[4..8].copy_from_slice(&new.to_le_bytes());
    }
}

fn seed_words(seed: &Uuid) -> [u32; 4] {
    let b = seed.as_bytes();
    std::array::from_fn(|i| {
        u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    })
}

/// A run of contiguous blocks of a file.
#[derive(Debug, Clone, Copy)]
struct ExtentRun {
    logical: u32,
    start: u64,
    len: u32,
}

fn push_block(runs: &mut Vec<ExtentRun>, logical: u32, physical: u64) {
    if let Some(last) = runs.last_mut() {
        if last.logical + last.len == logical
            && last.start + u64::from(last.len) == physical
            && last.len < MAX_EXTENT_LEN
        {
            last.len += 1;
            return;
        }
    }
    runs.push(ExtentRun {
        logical,
        start: physical,
        len: 1,
    });
}

/// Where [`write_file`] reads a file's bytes.
enum Content<'a> {
    /// A file in a directory tree.
    Path(&'a Path),
    /// Chunks of archive blobs; `path` names the member in errors.
    Chunks {
        chunks: &'a [Chunk],
        blobs: &'a [Arc<File>],
        path: &'a Path,
    },
}

/// Messages from the read-ahead thread, per file in inode order: data
/// pieces, then `End` (or an error, after which nothing follows).
enum Piece {
    /// `data` holds the file's bytes at `offset` (4 KiB aligned), zero
    /// padded to whole blocks past the end of the file; `read` bytes of it
    /// came from the file.
    Data {
        offset: u64,
        data: Vec<u8>,
        read: u64,
    },
    /// The file is complete.
    End,
    /// Reading failed.
    Failed(Ext4Error),
}

/// Batches in flight between the reader and the writer.
const READ_AHEAD: usize = 16;

/// A batch is sent when it holds this many bytes or [`BATCH_PIECES`]
/// pieces: one hand-over per many small files, not two per file.
const BATCH_BYTES: usize = 1 << 20;
/// See [`BATCH_BYTES`].
const BATCH_PIECES: usize = 256;

/// The reader's side: collects pieces into batches.
struct Batcher {
    tx: SyncSender<Vec<Piece>>,
    batch: Vec<Piece>,
    bytes: usize,
}

impl Batcher {
    fn new(tx: SyncSender<Vec<Piece>>) -> Self {
        Batcher {
            tx,
            batch: Vec::new(),
            bytes: 0,
        }
    }

    /// Queues `piece`; `Err` when the writer is gone.
    fn send(&mut self, piece: Piece) -> Result<(), ()> {
        if let Piece::Data { data, .. } = &piece {
            self.bytes += data.len();
        }
        self.batch.push(piece);
        if self.bytes >= BATCH_BYTES || self.batch.len() >= BATCH_PIECES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ()> {
        self.bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        self.tx
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| ())
    }
}

/// The writer's side: hands out the pieces of the batches in order.
struct Contents {
    rx: Receiver<Vec<Piece>>,
    queue: std::cell::RefCell<std::collections::VecDeque<Piece>>,
}

impl Contents {
    fn new(rx: Receiver<Vec<Piece>>) -> Self {
        Contents {
            rx,
            queue: Default::default(),
        }
    }

    /// The next piece; `None` when the reader stopped.
    fn next(&self) -> Option<Piece> {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            queue.extend(self.rx.recv().ok()?);
        }
        queue.pop_front()
    }
}

/// Largest piece read at once.
const PIECE: u64 = 1 << 20;

/// Reads a file's data ranges (holes skipped) into [`Piece`]s. Returns an
/// error only when the writer is gone.
fn read_file(source: Content<'_>, size: u64, tx: &mut Batcher) -> Result<(), ()> {
    let cell = std::cell::RefCell::new(tx);
    let send = |p: Piece| cell.borrow_mut().send(p);
    match read_pieces(source, size, &send) {
        Ok(Ok(())) => send(Piece::End),
        Ok(Err(e)) => send(Piece::Failed(e)),
        Err(()) => Err(()),
    }
}

/// The outer `Err` means the writer is gone; the inner one a read error.
fn read_pieces(
    source: Content<'_>,
    size: u64,
    send: &dyn Fn(Piece) -> Result<(), ()>,
) -> Result<Result<(), Ext4Error>, ()> {
    let path = match source {
        Content::Path(p) | Content::Chunks { path: p, .. } => p,
    };
    let err = |action| {
        let path = path.to_path_buf();
        move |source| Ext4Error::Source {
            path,
            action,
            source,
        }
    };
    let changed = || Ext4Error::Changed {
        path: path.to_path_buf(),
        expected: size,
    };
    // The data ranges (4 KiB aligned, merged) and a reader of any range.
    let (ranges, file) = match source {
        Content::Path(path) => {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) => return Ok(Err(err("open")(e))),
            };
            let allocated = match file.metadata() {
                Ok(m) if m.len() == size => {
                    use std::os::unix::fs::MetadataExt;
                    m.blocks().saturating_mul(512)
                }
                Ok(_) => return Ok(Err(changed())),
                Err(e) => return Ok(Err(err("stat")(e))),
            };
            // A file with as many bytes allocated as it is long has no
            // holes: skip the SEEK_DATA/SEEK_HOLE walk (two more system
            // calls per file). Reading a hole would only cost time: its
            // zero blocks are left out of the image either way.
            if allocated >= size {
                (vec![(0, size.next_multiple_of(BLOCK_SIZE))], Some(file))
            } else {
                match super::source::data_ranges(&file, size) {
                    Ok(ranges) => (ranges, Some(file)),
                    Err(e) => return Ok(Err(err("read")(e))),
                }
            }
        }
        Content::Chunks { chunks, .. } => (chunk_ranges(chunks), None),
    };
    for (start, end) in ranges {
        let mut offset = start;
        while offset < end {
            let want = (end - offset).min(PIECE) as usize;
            let avail = (size.saturating_sub(offset) as usize).min(want);
            let mut data = Vec::with_capacity(want);
            let read = match (&file, &source) {
                (Some(file), _) => {
                    read_exact_into(file, &mut data, avail, offset).map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => changed(),
                        _ => err("read")(e),
                    })
                }
                (None, Content::Chunks { chunks, blobs, .. }) => {
                    data.resize(avail, 0);
                    read_chunks(chunks, blobs, offset, &mut data).map_err(err("read"))
                }
                (None, Content::Path(_)) => Err(changed()),
            };
            // The tail of the last block is zeros.
            data.resize(want, 0);
            if let Err(e) = read {
                return Ok(Err(e));
            }
            send(Piece::Data {
                offset,
                data,
                read: avail as u64,
            })?;
            offset += want as u64;
        }
    }
    Ok(Ok(()))
}

/// Writes the next file's pieces from the read-ahead thread into newly
/// allocated blocks. All-zero blocks are left as holes too, so the image
/// depends on the content alone.
fn write_file<S: BlockSink>(
    path: &Path,
    contents: &Contents,
    alloc: &mut Allocator,
    out: &mut Output<'_, S>,
    progress: &dyn Fn(u64),
) -> Result<Vec<ExtentRun>, Ext4Error> {
    let mut runs = Vec::new();
    loop {
        match contents.next() {
            Some(Piece::Data { offset, data, read }) => {
                for (i, block) in data.chunks(BLOCK).enumerate() {
                    if !is_zero(block) {
                        let at = alloc.run(1)?;
                        out.put(at, block)?;
                        push_block(&mut runs, (offset / BLOCK_SIZE) as u32 + i as u32, at);
                    }
                }
                progress(read);
            }
            Some(Piece::End) => return Ok(runs),
            Some(Piece::Failed(e)) => return Err(e),
            None => {
                return Err(Ext4Error::Source {
                    path: path.to_path_buf(),
                    action: "read",
                    source: std::io::Error::other("the read-ahead thread stopped"),
                });
            }
        }
    }
}

/// The 4 KiB-aligned, merged ranges that [`Chunk`]s cover.
fn chunk_ranges(chunks: &[Chunk]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for c in chunks.iter().filter(|c| c.len > 0) {
        let a = c.logical / BLOCK_SIZE * BLOCK_SIZE;
        let b = (c.logical + c.len).next_multiple_of(BLOCK_SIZE);
        match ranges.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => ranges.push((a, b)),
        }
    }
    ranges
}

/// Fills `buf` with the file's bytes at `offset`: chunk data where chunks
/// are, zeros elsewhere.
/// Reads exactly `len` bytes of `file` from `offset` into the empty `buf`,
/// straight into its spare capacity: a zero-filled buffer would cost a
/// `memset` of every byte read. `UnexpectedEof` if the file is shorter.
fn read_exact_into(file: &File, buf: &mut Vec<u8>, len: usize, offset: u64) -> std::io::Result<()> {
    buf.clear();
    buf.reserve(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The capacity may exceed `len`, and a file that grew since it was
    // planned may have filled it: keep the planned bytes only.
    buf.truncate(len);
    Ok(())
}

fn read_chunks(
    chunks: &[Chunk],
    blobs: &[Arc<File>],
    offset: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.fill(0);
    let end = offset + buf.len() as u64;
    // Chunks are sorted by logical offset: skip those ending before `offset`.
    let first = chunks.partition_point(|c| c.logical + c.len <= offset);
    for c in chunks[first..].iter().take_while(|c| c.logical < end) {
        let from = c.logical.max(offset);
        let to = (c.logical + c.len).min(end);
        let blob = blobs
            .get(c.blob as usize)
            .ok_or_else(|| std::io::Error::other("chunk names a missing blob"))?;
        blob.read_exact_at(
            &mut buf[(from - offset) as usize..(to - offset) as usize],
            c.offset + (from - c.logical),
        )?;
    }
    Ok(())
}

fn is_zero(block: &[u8]) -> bool {
    block
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
}

/// The extent tree of `runs`: in the inode when it fits, else one level of
/// leaf blocks (allocated and written here). Returns `i_block` and the
/// number of blocks used (data and leaves).
fn extent_tree<S: BlockSink>(
    runs: &[ExtentRun],
    path: &Path,
    alloc: &mut Allocator,
    out: &mut Output<'_, S>,
) -> Result<([u8; 60], u64), Ext4Error> {
    let data: u64 = runs.iter().map(|r| u64::from(r.len)).sum();
    let mut i_block = [0u8; 60];
    if runs.len() <= INODE_EXTENTS {
        write_node(
            &mut i_block,
            INODE_EXTENTS,
            0,
            runs.iter().map(extent_bytes),
        );
        return Ok((i_block, data));
    }
    let leaves: Vec<&[ExtentRun]> = runs.chunks(LEAF_EXTENTS).collect();
    if leaves.len() > INODE_EXTENTS {
        return Err(Ext4Error::TooFragmented {
            path: path.to_path_buf(),
            max: INODE_EXTENTS * LEAF_EXTENTS,
        });
    }
    let mut index = Vec::new();
    for leaf in &leaves {
        let mut block = vec![0u8; BLOCK];
        write_node(&mut block, LEAF_EXTENTS, 0, leaf.iter().map(extent_bytes));
        let at = alloc.run(1)?;
        out.put(at, &block)?;
        let idx = ExtentIndex {
            ei_block: U32::new(leaf[0].logical),
            ei_leaf_lo: U32::new(at as u32),
            ei_leaf_hi: U16::new((at >> 32) as u16),
            ei_unused: U16::new(0),
        };
        index.push(idx.as_bytes().to_vec());
    }
    write_node(&mut i_block, INODE_EXTENTS, 1, index.into_iter());
    Ok((i_block, data + leaves.len() as u64))
}

fn extent_bytes(r: &ExtentRun) -> Vec<u8> {
    let e = Extent {
        ee_block: U32::new(r.logical),
        ee_len: U16::new(r.len as u16),
        ee_start_hi: U16::new((r.start >> 32) as u16),
        ee_start_lo: U32::new(r.start as u32),
    };
    e.as_bytes().to_vec()
}

fn write_node(dst: &mut [u8], max: usize, depth: u16, entries: impl Iterator<Item = Vec<u8>>) {
    let entries: Vec<Vec<u8>> = entries.collect();
    let header = ExtentHeader {
        eh_magic: U16::new(EXTENT_MAGIC),
        eh_entries: U16::new(entries.len() as u16),
        eh_max: U16::new(max as u16),
        eh_depth: U16::new(depth),
        eh_generation: U32::new(0),
    };
    dst[..12].copy_from_slice(header.as_bytes());
    for (i, e) in entries.iter().enumerate() {
        dst[12 + 12 * i..24 + 12 * i].copy_from_slice(e);
    }
}

/// Prefixes of extended attribute names and their `e_name_index`
/// (`fs/ext4/xattr.h`), longest first so "system.posix_acl_access" wins
/// over "system.".
const XATTR_PREFIXES: [(&[u8], u8); 4] = [
    (b"user.", 1),
    (b"trusted.", 4),
    (b"security.", 6),
    (b"system.", 7),
];

/// An extended attribute block holding `xattrs`, entries sorted by (index,
/// name length, name) as the kernel's lookup expects.
fn xattr_block(xattrs: &[super::source::Xattr], path: &Path) -> Result<Vec<u8>, Ext4Error> {
    let err = |reason: String| Ext4Error::Xattr {
        path: path.to_path_buf(),
        reason,
    };
    let mut entries: Vec<(u8, &[u8], &[u8])> = Vec::with_capacity(xattrs.len());
    for (name, value) in xattrs {
        if name.starts_with(b"system.posix_acl_") {
            return Err(err(
                "POSIX ACLs are not supported in images (the on-disk ACL format differs)".into(),
            ));
        }
        let (index, suffix) = XATTR_PREFIXES
            .iter()
            .find_map(|(p, i)| name.strip_prefix(*p).map(|s| (*i, s)))
            .ok_or_else(|| {
                err(format!(
                    "extended attribute {:?} has an unsupported prefix",
                    String::from_utf8_lossy(name)
                ))
            })?;
        if suffix.len() > 255 {
            return Err(err("extended attribute name longer than 255 bytes".into()));
        }
        entries.push((index, suffix, value));
    }
    entries.sort_by(|a, b| (a.0, a.1.len(), a.1).cmp(&(b.0, b.1.len(), b.1)));

    let mut block = vec![0u8; BLOCK];
    let mut at = 32;
    let mut value_end = BLOCK;
    let mut hashes = Vec::with_capacity(entries.len());
    for (index, name, value) in &entries {
        let entry_len = (16 + name.len()).next_multiple_of(4);
        let value_len = value.len().next_multiple_of(4);
        // Keep 4 zero bytes after the last entry (the end marker).
        if at + entry_len + 4 + value_len > value_end {
            return Err(err(
                "extended attributes do not fit in one 4 KiB block".into()
            ));
        }
        let offs = if value.is_empty() {
            0
        } else {
            value_end -= value_len;
            block[value_end..value_end + value.len()].copy_from_slice(value);
            value_end
        };
        let hash = xattr_entry_hash(name, value);
        hashes.push(hash);
        let e = XattrEntry {
            e_name_len: name.len() as u8,
            e_name_index: *index,
            e_value_offs: U16::new(offs as u16),
            e_value_inum: U32::new(0),
            e_value_size: U32::new(value.len() as u32),
            e_hash: U32::new(hash),
        };
        block[at..at + 16].copy_from_slice(e.as_bytes());
        block[at + 16..at + 16 + name.len()].copy_from_slice(name);
        at += entry_len;
    }
    let header = XattrHeader {
        h_magic: U32::new(XATTR_MAGIC),
        h_refcount: U32::new(1),
        h_blocks: U32::new(1),
        h_hash: U32::new(xattr_block_hash(&hashes)),
        h_checksum: U32::new(0),
        h_reserved: [U32::new(0); 3],
    };
    block[..32].copy_from_slice(header.as_bytes());
    Ok(block)
}

/// Hands out blocks in increasing order, skipping superblock copies.
struct Allocator {
    next: u64,
    end: u64,
    reserved: Vec<(u64, u64)>,
}

impl Allocator {
    fn new(end: u64, reserved: Vec<(u64, u64)>) -> Self {
        Allocator {
            next: 0,
            end,
            reserved,
        }
    }

    /// `n` contiguous blocks.
    fn run(&mut self, n: u64) -> Result<u64, Ext4Error> {
        loop {
            let start = self.next;
            let end = start + n;
            match self.reserved.iter().find(|(a, b)| start < *b && *a < end) {
                Some(&(_, b)) => self.next = b,
                None => {
                    if end > self.end {
                        return Err(Ext4Error::TooSmall {
                            needed: end * BLOCK_SIZE,
                            size: self.end * BLOCK_SIZE,
                        });
                    }
                    self.next = end;
                    return Ok(start);
                }
            }
        }
    }
}

/// Gathers contiguous blocks into large writes and records what is used.
struct Output<'a, S: BlockSink> {
    sink: &'a mut S,
    start: u64,
    run: Vec<u8>,
    used: Vec<u64>,
}

impl<'a, S: BlockSink> Output<'a, S> {
    fn new(sink: &'a mut S, blocks: u64) -> Self {
        Output {
            sink,
            start: 0,
            run: Vec::with_capacity(RUN_BYTES),
            used: vec![0; blocks.div_ceil(64) as usize],
        }
    }

    fn put(&mut self, first: u64, data: &[u8]) -> Result<(), Ext4Error> {
        let blocks = (data.len() / BLOCK) as u64;
        for b in first..first + blocks {
            set_bit(&mut self.used, b);
        }
        let contiguous = self.start + (self.run.len() / BLOCK) as u64 == first;
        if self.run.is_empty() || !contiguous || self.run.len() + data.len() > RUN_BYTES {
            self.flush()?;
            self.start = first;
        }
        self.run.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Ext4Error> {
        if !self.run.is_empty() {
            self.sink
                .write_blocks(self.start, &self.run)
                .map_err(Ext4Error::Sink)?;
            self.run.clear();
        }
        Ok(())
    }
}

fn set_bit(bits: &mut [u64], i: u64) {
    bits[(i / 64) as usize] |= 1 << (i % 64);
}

fn get_bit(bits: &[u64], i: u64) -> bool {
    bits[(i / 64) as usize] & (1 << (i % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u64> = (0..30).filter(|&g| Geometry::has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27]);
    }

    #[test]
    fn times_after_2038_use_the_epoch_bits() {
        assert_eq!(encode_time(0), (0, 0));
        assert_eq!(encode_time(0x7fff_ffff), (0x7fff_ffff, 0));
        // 2^31 seconds: low word 0x80000000 reads as negative; epoch 1.
        assert_eq!(encode_time(1 << 31), (0x8000_0000, 1));
        assert_eq!(encode_time(-1), (0xffff_ffff, 0));
    }
}
