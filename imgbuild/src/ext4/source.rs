//! The root tree to put in the image, read from a directory into a sorted,
//! self-contained description (no further `stat` calls while writing).
//!
//! Hard links (non-directories sharing device and inode number) become one
//! node with several names. Children are sorted by the bytes of their names,
//! so the on-disk order never depends on `readdir` order.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// Index of a node in [`SourceTree::nodes`].
pub type NodeId = usize;

/// A tree that cannot be read or cannot be represented.
#[derive(Debug, Error)]
pub enum SourceError {
    /// An OS error on a path.
    #[error("{}: cannot {action}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A name longer than ext4's 255 bytes.
    #[error("{}: name is {len} bytes long; ext4 allows at most 255", path.display())]
    NameTooLong {
        /// The path.
        path: PathBuf,
        /// The name's length.
        len: usize,
    },
    /// An input of a kind that cannot be read.
    #[error("{}: {why}", path.display())]
    Unsupported {
        /// The input.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// A tar member that cannot be represented or makes no sense.
    #[error("{}: member {member}: {problem}", path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// The member's path as stored.
        member: String,
        /// What is wrong.
        problem: String,
    },
    /// The root is not a directory.
    #[error("{}: the root of the tree is not a directory", path.display())]
    RootNotDirectory {
        /// The path.
        path: PathBuf,
    },
}

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

    /// Reads a tree from a directory, or from a tar archive (`.tar`,
    /// optionally gzip-compressed) if `root` is a regular file.
    pub fn read(root: &Path) -> Result<Self, SourceError> {
        let meta = fs::metadata(root).map_err(io_err(root, "read"))?;
        if meta.is_file() {
            super::tar::read_tar(root)
        } else {
            Self::scan(root)
        }
    }

    /// Reads the tree under `root` without following symbolic links.
    pub fn scan(root: &Path) -> Result<Self, SourceError> {
        let meta = fs::symlink_metadata(root).map_err(io_err(root, "read"))?;
        if !meta.is_dir() {
            return Err(SourceError::RootNotDirectory {
                path: root.to_path_buf(),
            });
        }
        let mut scan = Scanner {
            nodes: Vec::new(),
            hard_links: HashMap::new(),
        };
        scan.visit(root, &meta)?;
        Ok(SourceTree {
            nodes: scan.nodes,
            blobs: Vec::new(),
        })
    }

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

struct Scanner {
    nodes: Vec<Node>,
    hard_links: HashMap<(u64, u64), NodeId>,
}

impl Scanner {
    fn visit(&mut self, path: &Path, meta: &fs::Metadata) -> Result<NodeId, SourceError> {
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(&id) = self.hard_links.get(&(meta.dev(), meta.ino())) {
                self.nodes[id].links += 1;
                return Ok(id);
            }
        }
        let rdev = meta.rdev();
        let kind = if ft.is_dir() {
            NodeKind::Dir {
                children: Vec::new(),
            }
        } else if ft.is_file() {
            NodeKind::File {
                size: meta.len(),
                content: FileContent::Path,
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err(path, "read the link"))?;
            NodeKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_char_device() {
            NodeKind::CharDevice {
                major: rustix::fs::major(rdev),
                minor: rustix::fs::minor(rdev),
            }
        } else if ft.is_block_device() {
            NodeKind::BlockDevice {
                major: rustix::fs::major(rdev),
                minor: rustix::fs::minor(rdev),
            }
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Socket
        };
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            permissions: (meta.mode() & 0o7777) as u16,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            xattrs: read_xattrs(path)?,
            path: path.to_path_buf(),
            links: 1,
        });
        if !ft.is_dir() && meta.nlink() > 1 {
            self.hard_links.insert((meta.dev(), meta.ino()), id);
        }
        if ft.is_dir() {
            let mut entries = Vec::new();
            for entry in fs::read_dir(path).map_err(io_err(path, "list"))? {
                let entry = entry.map_err(io_err(path, "list"))?;
                entries.push(entry.file_name());
            }
            entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let mut children = Vec::with_capacity(entries.len());
            for name in entries {
                let child_path = path.join(&name);
                if name.len() > 255 {
                    return Err(SourceError::NameTooLong {
                        len: name.len(),
                        path: child_path,
                    });
                }
                let meta =
                    fs::symlink_metadata(&child_path).map_err(io_err(&child_path, "stat"))?;
                let child = self.visit(&child_path, &meta)?;
                children.push((name.as_bytes().to_vec(), child));
            }
            self.nodes[id].kind = NodeKind::Dir { children };
        }
        Ok(id)
    }
}

/// Extended attributes of `path` (not following links), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>, SourceError> {
    let len = match rustix::fs::llistxattr_query(path) {
        Ok(len) => len,
        // Filesystems without xattr support have none to copy.
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, "list the extended attributes of")(e.into())),
    };
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; len];
    let n = rustix::fs::llistxattr(path, &mut names[..])
        .map_err(|e| io_err(path, "list the extended attributes of")(e.into()))?;
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let size = rustix::fs::lgetxattr_query(path, name_os)
            .map_err(|e| io_err(path, "read an extended attribute of")(e.into()))?;
        let mut value = vec![0u8; size];
        let got = if size == 0 {
            0
        } else {
            rustix::fs::lgetxattr(path, name_os, &mut value[..])
                .map_err(|e| io_err(path, "read an extended attribute of")(e.into()))?
        };
        value.truncate(got);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> SourceError {
    let path = path.to_path_buf();
    move |source| SourceError::Io {
        path,
        action,
        source,
    }
}

/// The byte ranges of `file` (of `size` bytes) that may hold data, from
/// `SEEK_DATA`/`SEEK_HOLE`, widened to 4 KiB blocks and merged. Without
/// support for those (or on a filesystem that reports no holes) the whole
/// file is one range.
pub(crate) fn data_ranges(file: &fs::File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for segment in crate::sparse::segments(file, 0, size) {
        let crate::sparse::Segment::Data(start, end) = segment? else {
            continue;
        };
        let (a, b) = (start / 4096 * 4096, end.next_multiple_of(4096));
        match ranges.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => ranges.push((a, b)),
        }
    }
    Ok(ranges)
}
