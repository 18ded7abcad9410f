//! Errors of the file-level operations. Every variant names the file.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::geometry::GeometryError;
use super::params::ParamError;
use super::superblock::SuperblockError;
use super::tree::TreeError;

/// A failed format, verify or dump.
#[derive(Debug, Error)]
pub enum VerityError {
    /// An operating-system error on a file.
    #[error("{}: cannot {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("open", "read", "write", ...).
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The path is neither a regular file nor a block device.
    #[error("{}: is a {kind}, not a regular file or block device", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is ("directory", ...).
        kind: &'static str,
    },
    /// The data size is not a whole number of data blocks.
    #[error(
        "{}: size {size} bytes is not a multiple of the data block size {block_size} \
         (pass --data-blocks to hash only a prefix)", path.display()
    )]
    DataSizeNotMultiple {
        /// The data file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The data block size.
        block_size: u32,
    },
    /// The data file is shorter than the blocks the tree covers.
    #[error(
        "{}: {size} bytes is too small for {blocks} data blocks of {block_size} bytes \
         ({needed} bytes)", path.display()
    )]
    DataTooSmall {
        /// The data file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Data blocks required.
        blocks: u64,
        /// Data block size.
        block_size: u32,
        /// Bytes required.
        needed: u64,
    },
    /// The hash file is shorter than the hash area.
    #[error(
        "{}: {size} bytes is too small for the hash tree, which ends at byte {needed} \
         (hash offset {offset})", path.display()
    )]
    HashFileTooSmall {
        /// The hash file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Bytes required.
        needed: u64,
        /// The hash offset used.
        offset: u64,
    },
    /// The superblock is missing or corrupt.
    #[error("{}: not a valid dm-verity superblock", path.display())]
    Superblock {
        /// The hash file.
        path: PathBuf,
        /// What is wrong.
        source: SuperblockError,
    },
    /// The superblock contradicts a parameter given by the caller.
    #[error(
        "{}: the superblock says {field} is {on_disk}, but {given} was given", path.display()
    )]
    SuperblockMismatch {
        /// The hash file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// The superblock's value.
        on_disk: String,
        /// The caller's value.
        given: String,
    },
    /// The tree cannot be laid out.
    #[error("{}", path.display())]
    Geometry {
        /// The file the geometry was derived for.
        path: PathBuf,
        /// What is wrong.
        source: GeometryError,
    },
    /// Data and hash area overlap in the same file.
    #[error(
        "{}: the hash area starting at byte {hash_offset} overlaps the data area, which ends \
         at byte {data_end}", path.display()
    )]
    Overlap {
        /// The file holding both.
        path: PathBuf,
        /// Start of the hash area.
        hash_offset: u64,
        /// End of the data area.
        data_end: u64,
    },
    /// A parameter is missing or invalid.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// A parameter is required in this mode.
    #[error("{0}")]
    Missing(&'static str),
    /// The data could not be turned into a tree.
    #[error("{}", path.display())]
    Tree {
        /// The data file.
        path: PathBuf,
        /// What is wrong.
        source: TreeError,
    },
    /// The operating system's random generator failed.
    #[error("cannot get random bytes for the salt or UUID: {0}")]
    Random(String),
    /// Verification found a block that does not match.
    #[error("verification failed: {0}")]
    Corrupt(Corruption),
}

/// The first mismatch found by verification, top of the tree first.
#[derive(Debug, Error, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Corruption {
    /// The top hash block (or the single data block of a tree without hash
    /// blocks) does not hash to the root hash.
    #[error(
        "{what} of {} (offset {offset}) does not hash to the root hash: the root hash is \
         wrong or that block is corrupt", path.display()
    )]
    RootHash {
        /// The file holding the top block.
        path: PathBuf,
        /// "the top hash block" or "data block 0".
        what: &'static str,
        /// Its byte offset.
        offset: u64,
    },
    /// A hash block whose parent is intact does not match the parent's entry.
    #[error(
        "hash block {index} of tree level {level} (of {levels}; level 0 hashes the data) \
         in {} (offset {offset}) is corrupt", path.display()
    )]
    HashBlock {
        /// The hash file.
        path: PathBuf,
        /// Level of the bad block, 0 being the one that hashes the data.
        level: usize,
        /// Number of levels.
        levels: usize,
        /// Index of the block within its level.
        index: u64,
        /// Byte offset of the block in the hash file.
        offset: u64,
    },
    /// A data block does not match its (intact) level-0 digest.
    #[error("data block {index} of {} (offset {offset}) is corrupt", path.display())]
    DataBlock {
        /// The data file.
        path: PathBuf,
        /// Index of the data block.
        index: u64,
        /// Its byte offset.
        offset: u64,
    },
}

impl From<Corruption> for VerityError {
    fn from(c: Corruption) -> Self {
        VerityError::Corrupt(c)
    }
}

pub(crate) fn io_err(
    path: &std::path::Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> VerityError {
    let path = path.to_path_buf();
    move |source| VerityError::Io {
        path,
        action,
        source,
    }
}
