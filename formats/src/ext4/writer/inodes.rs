//! Inodes: each planned inode written with the blocks it owns (extended
//! attribute block, directory blocks, file data, a long symlink target,
//! extent leaves), allocated in inode order, into the in-memory inode
//! table that [`super::metadata`] writes last.

use std::path::PathBuf;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromZeros, IntoBytes};

use super::alloc::{Allocator, Output};
use super::extents::{ExtentRun, extent_tree, push_block};
use super::layout::INODE_SIZE;
use super::pipeline::{self, Contents, write_file};
use super::plan::{InodeContent, PlannedInode};
use super::xattrs::xattr_block;
use super::{BLOCK, BLOCK_SIZE, BlockSink, Ext4Error, Ext4Plan};
use crate::ext4::raw::{INODE_EXTENTS_FL, INODE_EXTRA_ISIZE, INODE_INDEX_FL, Inode};
use crate::ext4::source::{NodeKind, SourceTree};

/// The inode table of every group, as written.
pub(super) struct InodeTable {
    /// `INODE_SIZE` bytes per inode, inode 1 first.
    pub(super) bytes: Vec<u8>,
    /// Directories per group (`bg_used_dirs_count`).
    pub(super) dirs_in_group: Vec<u16>,
}

impl Ext4Plan {
    /// Writes every inode's blocks in inode order (reading file contents
    /// ahead on another thread) and returns the inode table.
    pub(super) fn write_inodes<S: BlockSink>(
        &self,
        tree: &SourceTree,
        alloc: &mut Allocator,
        out: &mut Output<'_, S>,
        progress: &dyn Fn(u64),
    ) -> Result<InodeTable, Ext4Error> {
        let g = &self.geometry;
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
                        Some((tree.nodes[id].path.as_path(), *size, content))
                    }
                    _ => None,
                },
                _ => None,
            });
        pipeline::read_ahead(files, &tree.blobs, |contents| {
            for planned in &self.inodes {
                let inode = self.write_inode(tree, planned, alloc, out, contents, progress)?;
                let at = ((planned.ino - 1) as u64 * INODE_SIZE) as usize;
                table[at..at + INODE_SIZE as usize].copy_from_slice(inode.as_bytes());
                if inode.i_mode.get() & 0o170000 == 0o040000 {
                    dirs_in_group[((planned.ino - 1) as u64 / g.inodes_per_group) as usize] += 1;
                }
            }
            Ok(())
        })?;
        Ok(InodeTable {
            bytes: table,
            dirs_in_group,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_after_2038_use_the_epoch_bits() {
        assert_eq!(encode_time(0), (0, 0));
        assert_eq!(encode_time(0x7fff_ffff), (0x7fff_ffff, 0));
        // 2^31 seconds: low word 0x80000000 reads as negative; epoch 1.
        assert_eq!(encode_time(1 << 31), (0x8000_0000, 1));
        assert_eq!(encode_time(-1), (0xffff_ffff, 0));
    }
}
