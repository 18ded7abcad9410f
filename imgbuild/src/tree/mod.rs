//! The input tree of an image: a directory ([`dir`]) or a tar archive
//! ([`tar`]), read into the sorted, self-contained [`SourceTree`] that the
//! ext4 writer consumes (no further `stat` calls while writing).
//!
//! The tree model belongs to the writer; reading one from the host's
//! files is this module's job, so the writer's module never reaches back
//! into the readers.
//!
//! ```no_run
//! # fn main() -> Result<(), cocos_imgbuild::tree::SourceError> {
//! let tree = cocos_imgbuild::tree::read(std::path::Path::new("rootfs"))?;
//! println!("{} nodes", tree.nodes.len());
//! # Ok(())
//! # }
//! ```

pub mod dir;
pub mod tar;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cocos_formats::ext4::SourceTree;
use thiserror::Error;

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

/// Reads a tree from a directory ([`dir::scan`]), or from a tar archive
/// (`.tar`, optionally gzip-compressed: [`tar::read_tar`]) if `root` is a
/// regular file.
pub fn read(root: &Path) -> Result<SourceTree, SourceError> {
    let meta = fs::metadata(root).map_err(io_err(root, "read"))?;
    if meta.is_file() {
        tar::read_tar(root)
    } else {
        dir::scan(root)
    }
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> SourceError {
    let path = path.to_path_buf();
    move |source| SourceError::Io {
        path,
        action,
        source,
    }
}
