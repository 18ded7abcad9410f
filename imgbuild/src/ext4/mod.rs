//! A purpose-built ext4 writer for read-only images.
//!
//! Reproducible (the same tree and options give the same bytes), streaming
//! (every block is written once, at its final place, so a dm-verity tree can
//! be computed as the image is written) and unprivileged (owners, device
//! nodes and xattrs come from the tree description, not from the running
//! user). See [`writer`] for the filesystem's shape and the reasons.
//!
//! ```no_run
//! use cocos_imgbuild::ext4::{Ext4Options, Ext4Plan, FileSink};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tree = cocos_imgbuild::tree::dir::scan(std::path::Path::new("rootfs"))?;
//! let options = Ext4Options {
//!     uuid: uuid::Uuid::from_u128(1),
//!     hash_seed: uuid::Uuid::from_u128(2),
//!     timestamp: 1_700_000_000,
//!     root_owned: true,
//!     size: None,
//!     label: "root".into(),
//!     min_inodes: None,
//!     lazy_inode_tables: false,
//! };
//! let plan = Ext4Plan::new(&tree, options)?;
//! let file = std::fs::File::create("rootfs.ext4")?;
//! file.set_len(plan.size())?;
//! plan.write(&tree, &mut FileSink::new(&file, 0), &|_| {})?;
//! # Ok(())
//! # }
//! ```

pub mod dir;
pub mod hash;
pub mod raw;
pub mod source;
pub mod writer;

pub use source::{Chunk, FileContent, Node, NodeId, NodeKind, SourceTree, Xattr};
pub use writer::{BlockSink, Ext4Error, Ext4Options, Ext4Plan, Ext4Report};

/// A [`BlockSink`] writing into a file at a byte offset (a partition of a
/// disk image, or a whole image file at offset 0). The file should be
/// sparse and fresh: blocks never written stay holes.
#[derive(Debug)]
pub struct FileSink<'a> {
    file: &'a std::fs::File,
    offset: u64,
}

impl<'a> FileSink<'a> {
    /// Writes block `n` at byte `offset + n * 4096` of `file`.
    pub fn new(file: &'a std::fs::File, offset: u64) -> Self {
        FileSink { file, offset }
    }
}

impl BlockSink for FileSink<'_> {
    fn write_blocks(&mut self, first: u64, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(data, self.offset + first * writer::BLOCK_SIZE)
    }
}
