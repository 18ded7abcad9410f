//! Planning: [`Ext4Plan::new`] reads nothing but the tree's metadata. It
//! numbers the inodes (root 2, `lost+found` 11, then the tree in
//! depth-first order of sorted names), builds every directory block and
//! sizes the filesystem from an upper bound of the blocks each inode needs.

use std::path::PathBuf;

use uuid::Uuid;

use super::extents::{INODE_EXTENTS, LEAF_EXTENTS};
use super::layout::{BLOCKS_PER_GROUP, Geometry};
use super::{BLOCK_SIZE, Ext4Error, Ext4Options, Ext4Plan};
use crate::ext4::dir::{self, DirBlocks, DirEntry, file_type};
use crate::ext4::raw::MAX_EXTENT_LEN;
use crate::ext4::source::{NodeId, NodeKind, SourceTree};

/// The root directory's inode.
pub(super) const ROOT_INO: u32 = 2;
/// `lost+found`'s inode.
pub(super) const LOST_FOUND_INO: u32 = 11;
/// First inode that is not reserved (`s_first_ino`).
pub(super) const FIRST_INO: u32 = 11;

/// What an inode holds.
#[derive(Debug, Clone)]
pub(super) enum InodeContent {
    /// A node of the tree.
    Node(NodeId),
    /// The `lost+found` directory e2fsck expects, when the tree has none.
    LostFound,
}

/// An inode with its number and, for a directory, its blocks.
#[derive(Debug, Clone)]
pub(super) struct PlannedInode {
    pub(super) ino: u32,
    pub(super) content: InodeContent,
    /// Blocks of a directory.
    pub(super) dir: Option<DirBlocks>,
    /// Subdirectories of a directory (for its link count).
    pub(super) subdirs: u32,
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
}

fn min_inodes(options: &Ext4Options) -> u64 {
    options.min_inodes.unwrap_or(0).min(u64::from(u32::MAX))
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

fn seed_words(seed: &Uuid) -> [u32; 4] {
    let b = seed.as_bytes();
    std::array::from_fn(|i| {
        u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    })
}
