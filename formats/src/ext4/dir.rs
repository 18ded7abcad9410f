//! Directory contents: one linear block when everything fits, otherwise a
//! hash tree (`dir_index`) so lookups in large directories stay fast.
//!
//! Kernel `Documentation/filesystems/ext4/directory.rst`: a linear block is
//! a chain of `ext4_dir_entry_2` records whose `rec_len` runs to the next
//! record, the last one to the end of the block. A hash-tree directory's
//! block 0 holds "." and ".." (whose `rec_len` covers the rest of the
//! block), `dx_root_info` and an array of `dx_entry` (hash, block) sorted by
//! hash; with `indirect_levels` 1 these point at index nodes, which point at
//! leaves. Leaves are linear blocks holding the names whose hashes fall in
//! their range.

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use super::hash::dir_hash;
use super::raw::{DX_HASH_HALF_MD4, DirEntryHeader, DxCountLimit, DxEntry, DxRootInfo};

const BLOCK: usize = 4096;
/// `dx_entry` slots in the root block: (4096 - 32) / 8.
const ROOT_LIMIT: usize = (BLOCK - 32) / 8;
/// `dx_entry` slots in an index node: (4096 - 8) / 8.
const NODE_LIMIT: usize = (BLOCK - 8) / 8;

/// Directory entry file types (`ext4_dir_entry_2.file_type`).
pub mod file_type {
    /// Regular file.
    pub const REGULAR: u8 = 1;
    /// Directory.
    pub const DIRECTORY: u8 = 2;
    /// Character device.
    pub const CHAR_DEVICE: u8 = 3;
    /// Block device.
    pub const BLOCK_DEVICE: u8 = 4;
    /// Named pipe.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCKET: u8 = 6;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// A name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Name bytes (1..=255, no '/' or NUL).
    pub name: Vec<u8>,
    /// Inode number.
    pub inode: u32,
    /// One of [`file_type`].
    pub file_type: u8,
}

/// The blocks of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirBlocks {
    /// Concatenated blocks, logical block 0 first.
    pub bytes: Vec<u8>,
    /// Whether this is a hash-tree directory (`EXT4_INDEX_FL`).
    pub indexed: bool,
}

impl DirBlocks {
    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.bytes.len() / BLOCK
    }
}

/// Too many names for a two-level hash tree.
#[derive(Debug, thiserror::Error)]
#[error("directory has {0} entries, more than a two-level hash tree can index")]
pub struct DirTooLarge(pub usize);

fn rec_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// Appends linear blocks holding `entries` in order.
fn pack_linear<'a>(entries: impl IntoIterator<Item = (&'a [u8], u32, u8)>, out: &mut Vec<u8>) {
    let mut block_start = out.len();
    let mut last: Option<usize> = None;
    for (name, inode, ft) in entries {
        let len = rec_len(name.len());
        if out.len() + len > block_start + BLOCK {
            close_block(out, block_start, last);
            block_start = out.len();
        }
        last = Some(out.len());
        let header = DirEntryHeader {
            inode: U32::new(inode),
            rec_len: U16::new(len as u16),
            name_len: name.len() as u8,
            file_type: ft,
        };
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name);
        out.resize(last.unwrap_or(0) + len, 0);
    }
    close_block(out, block_start, last);
}

/// Pads the block started at `start` and stretches its last entry to the end.
fn close_block(out: &mut Vec<u8>, start: usize, last: Option<usize>) {
    if out.len() == start {
        return;
    }
    out.resize(start + BLOCK, 0);
    if let Some(at) = last.filter(|&at| at >= start) {
        let len = (start + BLOCK - at) as u16;
        out[at + 4..at + 6].copy_from_slice(&len.to_le_bytes());
    }
}

/// Builds the blocks of a directory whose inode is `me`, whose parent is
/// `parent`, holding `entries` (without "." and "..") in the given order.
pub fn build(
    me: u32,
    parent: u32,
    entries: &[DirEntry],
    hash_seed: &[u32; 4],
) -> Result<DirBlocks, DirTooLarge> {
    let dots = rec_len(1) + rec_len(2);
    let total: usize = dots + entries.iter().map(|e| rec_len(e.name.len())).sum::<usize>();
    if total <= BLOCK {
        let mut bytes = Vec::with_capacity(BLOCK);
        let dot = [
            (&b"."[..], me, file_type::DIRECTORY),
            (&b".."[..], parent, file_type::DIRECTORY),
        ];
        pack_linear(
            dot.into_iter()
                .chain(entries.iter().map(|e| (&e.name[..], e.inode, e.file_type))),
            &mut bytes,
        );
        return Ok(DirBlocks {
            bytes,
            indexed: false,
        });
    }
    build_indexed(me, parent, entries, hash_seed)
}

fn build_indexed(
    me: u32,
    parent: u32,
    entries: &[DirEntry],
    hash_seed: &[u32; 4],
) -> Result<DirBlocks, DirTooLarge> {
    let mut hashed: Vec<(u32, &DirEntry)> = entries
        .iter()
        .map(|e| (dir_hash(&e.name, hash_seed), e))
        .collect();
    hashed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));

    // Fill leaves in hash order. A leaf that starts with the same hash the
    // previous one ended with is marked with the low bit (a continuation).
    let mut leaves: Vec<(u32, Vec<&DirEntry>)> = Vec::new();
    let mut used = BLOCK;
    let mut prev_hash = None;
    for (hash, entry) in hashed {
        let len = rec_len(entry.name.len());
        if used + len > BLOCK {
            let start = if prev_hash == Some(hash) {
                hash | 1
            } else {
                hash
            };
            leaves.push((start, Vec::new()));
            used = 0;
        }
        used += len;
        prev_hash = Some(hash);
        if let Some(leaf) = leaves.last_mut() {
            leaf.1.push(entry);
        }
    }

    let mut leaf_bytes = Vec::with_capacity(leaves.len() * BLOCK);
    for (_, leaf) in &leaves {
        pack_linear(
            leaf.iter().map(|e| (&e.name[..], e.inode, e.file_type)),
            &mut leaf_bytes,
        );
    }

    let (levels, root_entries, nodes) = if leaves.len() <= ROOT_LIMIT {
        // Leaves are logical blocks 1..=n.
        let entries: Vec<(u32, u32)> = leaves
            .iter()
            .enumerate()
            .map(|(i, (h, _))| (*h, i as u32 + 1))
            .collect();
        (0u8, entries, Vec::new())
    } else {
        let node_count = leaves.len().div_ceil(NODE_LIMIT);
        if node_count > ROOT_LIMIT {
            return Err(DirTooLarge(entries.len()));
        }
        // Index nodes are blocks 1..=k, leaves follow.
        let first_leaf = 1 + node_count as u32;
        let mut nodes = Vec::with_capacity(node_count);
        let mut root = Vec::with_capacity(node_count);
        for (n, chunk) in leaves.chunks(NODE_LIMIT).enumerate() {
            let base = n * NODE_LIMIT;
            let entries: Vec<(u32, u32)> = chunk
                .iter()
                .enumerate()
                .map(|(i, (h, _))| (*h, first_leaf + (base + i) as u32))
                .collect();
            root.push((chunk[0].0, 1 + n as u32));
            nodes.push(index_block(&entries, NODE_LIMIT, 8, None));
        }
        (1u8, root, nodes)
    };

    let mut root = Vec::with_capacity(BLOCK);
    let dot = DirEntryHeader {
        inode: U32::new(me),
        rec_len: U16::new(12),
        name_len: 1,
        file_type: file_type::DIRECTORY,
    };
    root.extend_from_slice(dot.as_bytes());
    root.extend_from_slice(b".\0\0\0");
    let dotdot = DirEntryHeader {
        inode: U32::new(parent),
        rec_len: U16::new((BLOCK - 12) as u16),
        name_len: 2,
        file_type: file_type::DIRECTORY,
    };
    root.extend_from_slice(dotdot.as_bytes());
    root.extend_from_slice(b"..\0\0");
    let info = DxRootInfo {
        reserved_zero: U32::new(0),
        hash_version: DX_HASH_HALF_MD4,
        info_length: 8,
        indirect_levels: levels,
        unused_flags: 0,
    };
    let root = index_block(&root_entries, ROOT_LIMIT, 32, Some((root, info)));

    let mut bytes = root;
    for node in nodes {
        bytes.extend_from_slice(&node);
    }
    bytes.extend_from_slice(&leaf_bytes);
    Ok(DirBlocks {
        bytes,
        indexed: true,
    })
}

/// An index block: `prefix` (the root's dot entries and info, or a node's
/// empty dirent), then `dx_countlimit` and the entries. The first entry's
/// hash is implied (it is where the count and limit live).
fn index_block(
    entries: &[(u32, u32)],
    limit: usize,
    header_len: usize,
    root: Option<(Vec<u8>, DxRootInfo)>,
) -> Vec<u8> {
    let mut block = match root {
        Some((mut dots, info)) => {
            dots.extend_from_slice(info.as_bytes());
            dots
        }
        None => {
            // An empty entry spanning the block, so linear readers skip it.
            let fake = DirEntryHeader {
                inode: U32::new(0),
                rec_len: U16::new(BLOCK as u16),
                name_len: 0,
                file_type: 0,
            };
            fake.as_bytes().to_vec()
        }
    };
    debug_assert_eq!(block.len(), header_len);
    let cl = DxCountLimit {
        limit: U16::new(limit as u16),
        count: U16::new(entries.len() as u16),
    };
    block.extend_from_slice(cl.as_bytes());
    for (i, &(hash, blk)) in entries.iter().enumerate() {
        if i == 0 {
            block.extend_from_slice(&blk.to_le_bytes());
        } else {
            let e = DxEntry {
                hash: U32::new(hash),
                block: U32::new(blk),
            };
            block.extend_from_slice(e.as_bytes());
        }
    }
    block.resize(BLOCK, 0);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, inode: u32) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            inode,
            file_type: file_type::REGULAR,
        }
    }

    #[test]
    fn small_directory_is_one_linear_block() {
        let d = build(12, 2, &[entry("a", 13), entry("bb", 14)], &[0; 4]).unwrap();
        assert!(!d.indexed);
        assert_eq!(d.bytes.len(), 4096);
        // ".": inode 12, rec_len 12; "..": inode 2, rec_len 12; "a" at 24.
        assert_eq!(&d.bytes[0..4], &12u32.to_le_bytes());
        assert_eq!(&d.bytes[4..6], &12u16.to_le_bytes());
        assert_eq!(&d.bytes[12..16], &2u32.to_le_bytes());
        assert_eq!(&d.bytes[24..28], &13u32.to_le_bytes());
        // The last entry ("bb" at 36) runs to the end of the block.
        assert_eq!(&d.bytes[40..42], &(4096u16 - 36).to_le_bytes());
    }

    #[test]
    fn large_directory_is_indexed_and_holds_every_name() {
        let names: Vec<DirEntry> = (0..5000)
            .map(|i| entry(&format!("file-{i:05}"), 100 + i))
            .collect();
        let d = build(12, 2, &names, &[1, 2, 3, 4]).unwrap();
        assert!(d.indexed);
        let mut found = 0;
        for block in d.bytes.chunks(4096).skip(1) {
            let mut at = 0;
            while at < 4096 {
                let rec = u16::from_le_bytes([block[at + 4], block[at + 5]]) as usize;
                if u32::from_le_bytes(block[at..at + 4].try_into().unwrap()) != 0 {
                    found += 1;
                }
                assert!(rec >= 8);
                at += rec;
            }
            assert_eq!(at, 4096);
        }
        assert_eq!(found, 5000);
    }
}
