//! File blocks as extents: contiguous runs ([`ExtentRun`]), and the
//! extent tree that maps them (in the inode's `i_block` when four extents
//! are enough, else one level of leaf blocks), as `fs/ext4/ext4_extents.h`
//! lays it out.

use std::path::Path;

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use super::alloc::{Allocator, Output};
use super::{BLOCK, BlockSink, Ext4Error};
use crate::ext4::raw::{EXTENT_MAGIC, Extent, ExtentHeader, ExtentIndex, MAX_EXTENT_LEN};

/// Extents in the inode's `i_block` (60 bytes: header and four entries).
pub(super) const INODE_EXTENTS: usize = 4;
/// Extents in a leaf block: (4096 - 12) / 12.
pub(super) const LEAF_EXTENTS: usize = (BLOCK - 12) / 12;

/// A run of contiguous blocks of a file.
#[derive(Debug, Clone, Copy)]
pub(super) struct ExtentRun {
    pub(super) logical: u32,
    pub(super) start: u64,
    pub(super) len: u32,
}

pub(super) fn push_block(runs: &mut Vec<ExtentRun>, logical: u32, physical: u64) {
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

/// The extent tree of `runs`: in the inode when it fits, else one level of
/// leaf blocks (allocated and written here). Returns `i_block` and the
/// number of blocks used (data and leaves).
pub(super) fn extent_tree<S: BlockSink>(
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
