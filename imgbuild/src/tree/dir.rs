//! A root tree read from a directory.
//!
//! Hard links (non-directories sharing device and inode number) become one
//! node with several names. Children are sorted by the bytes of their names,
//! so the on-disk order never depends on `readdir` order.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cocos_formats::ext4::{FileContent, Node, NodeId, NodeKind, SourceTree, Xattr};

use super::{SourceError, io_err};

/// Reads the tree under `root` without following symbolic links.
pub fn scan(root: &Path) -> Result<SourceTree, SourceError> {
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
