//! The tree the writer puts in a filesystem: a sorted, self-contained
//! description of every inode (no further `stat` calls while writing).
//! Reading one from a directory or an archive is the image builder's job
//! (`cocos_imgbuild::tree`).
//!
//! Hard links are one node with several names. Children are sorted by the
//! bytes of their names, so the on-disk order never depends on the order
//! the tree was read in.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// Index of a node in [`SourceTree::nodes`].
pub type NodeId = usize;

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file of `size` bytes.
    File {
        /// Size in bytes.
        size: u64,
        /// Where its bytes are read from when the image is written.
        content: FileContent,
    },
    /// A directory; children sorted by name.
    Dir {
        /// `(name, child)` pairs.
        children: Vec<(Vec<u8>, NodeId)>,
    },
    /// A symbolic link.
    Symlink {
        /// Target bytes.
        target: Vec<u8>,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// The file at [`Node::path`] (a tree read from a directory); holes
    /// are found with `SEEK_DATA`/`SEEK_HOLE`.
    Path,
    /// Byte ranges of [`SourceTree::blobs`] (a tree read from an archive);
    /// sorted by logical offset, not overlapping; the rest is holes.
    Chunks(Vec<Chunk>),
}

/// `len` bytes of a file at `logical`, stored at `offset` of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset in the file.
    pub logical: u64,
    /// Index in [`SourceTree::blobs`].
    pub blob: u32,
    /// Offset in the blob.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// An extended attribute: full name (with its `user.`, `security.`, ...
/// prefix) and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// One inode's worth of metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Kind and kind-specific data.
    pub kind: NodeKind,
    /// Permission bits, including setuid, setgid and sticky (`0o7777`).
    pub permissions: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Where the node was read from (file contents are read from here).
    pub path: PathBuf,
    /// Number of names (hard links) in the tree.
    pub links: u32,
}

/// A whole tree.
#[derive(Debug, Clone)]
pub struct SourceTree {
    /// All nodes; the root is node 0, the rest in depth-first order of
    /// sorted names.
    pub nodes: Vec<Node>,
    /// Files that [`FileContent::Chunks`] point into (an archive, a spool
    /// of expanded sparse members); empty for a directory tree.
    pub blobs: Vec<Arc<File>>,
}

impl SourceTree {
    /// The root directory.
    pub const ROOT: NodeId = 0;

    /// The node of a path relative to the root (for tests and tools).
    pub fn lookup(&self, rel: &[u8]) -> Option<NodeId> {
        let mut id = Self::ROOT;
        for part in rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            let NodeKind::Dir { children } = &self.nodes[id].kind else {
                return None;
            };
            id = children.iter().find(|(n, _)| n == part)?.1;
        }
        Some(id)
    }
}
