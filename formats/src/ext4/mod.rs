//! A purpose-built ext4 writer for read-only images.
//!
//! Reproducible (the same tree and options give the same bytes), streaming
//! (every block is written once, at its final place, so a dm-verity tree can
//! be computed as the image is written) and unprivileged (owners, device
//! nodes and xattrs come from the tree description, not from the running
//! user). See [`writer`] for the filesystem's shape and the reasons.
//!
//! ```
//! use cocos_formats::ext4::{BlockSink, Ext4Options, Ext4Plan, Node, NodeKind, SourceTree};
//!
//! /// A whole image in memory; `FileSink` writes into a file instead.
//! struct Memory(Vec<u8>);
//! impl BlockSink for Memory {
//!     fn write_blocks(&mut self, first: u64, data: &[u8]) -> std::io::Result<()> {
//!         let at = first as usize * 4096;
//!         self.0[at..at + data.len()].copy_from_slice(data);
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), cocos_formats::ext4::Ext4Error> {
//! // A root directory holding one symbolic link (node 1).
//! let node = |kind, permissions, path: &str, links| Node {
//!     kind,
//!     permissions,
//!     uid: 0,
//!     gid: 0,
//!     mtime: 1_700_000_000,
//!     xattrs: Vec::new(),
//!     path: path.into(),
//!     links,
//! };
//! let root = NodeKind::Dir { children: vec![(b"motd".to_vec(), 1)] };
//! let motd = NodeKind::Symlink { target: b"/run/motd".to_vec() };
//! let tree = SourceTree {
//!     nodes: vec![node(root, 0o755, "/", 2), node(motd, 0o777, "/motd", 1)],
//!     blobs: Vec::new(),
//! };
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
//! let mut image = Memory(vec![0; plan.size() as usize]);
//! let report = plan.write(&tree, &mut image, &|_| {})?;
//! // The superblock at byte 1024 has the ext4 magic 0xEF53 at 0x38.
//! assert_eq!(image.0[1024 + 0x38..1024 + 0x3a], [0x53, 0xef]);
//! assert_eq!(report.used_inodes, 12);
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
