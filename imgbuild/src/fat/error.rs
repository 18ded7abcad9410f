//! [`FatError`]: every way writing or reading an ESP can fail. Reading
//! names what is corrupt (the boot sector field, the file or directory
//! whose chain or entry is wrong) rather than wrapping an I/O error.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::MAX_FILE_SIZE;

/// Errors from writing or reading an ESP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FatError {
    /// A source file could not be read (missing, unreadable, a directory,
    /// or changed while being copied).
    #[error("cannot read {} (source of ESP file {esp_path}): {source}", .path.display())]
    Input {
        /// The ESP path the source was meant for.
        esp_path: String,
        /// The source file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file is larger than FAT can hold.
    #[error(
        "ESP file {esp_path} is {size} bytes; a FAT file holds at most {MAX_FILE_SIZE} bytes (4 GiB - 1)"
    )]
    FileTooLarge {
        /// The ESP path.
        esp_path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The files do not fit in the ESP.
    #[error(
        "ESP file {esp_path} ({size} bytes) does not fit: the files and directories up to it \
         need {needed} bytes of clusters, the {esp_size}-byte ESP has {available} bytes free"
    )]
    NoSpace {
        /// The first file (in write order) that does not fit.
        esp_path: String,
        /// Its size in bytes.
        size: u64,
        /// Bytes of clusters needed by the directories and the files up to
        /// and including this one.
        needed: u64,
        /// Bytes of clusters free in the empty filesystem.
        available: u64,
        /// The ESP size.
        esp_size: u64,
    },
    /// A path cannot be stored on FAT.
    #[error("ESP path {path:?} cannot be stored on FAT: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why not.
        reason: String,
    },
    /// Two files have the same path (FAT names are case-insensitive).
    #[error("ESP path {path:?} is given twice (FAT names ignore case; the other one is {other:?})")]
    DuplicatePath {
        /// The path as given.
        path: String,
        /// The path it collides with.
        other: String,
    },
    /// A path is used both as a file and as a directory.
    #[error("ESP path {path:?} is a file but {other:?} needs it to be a directory")]
    PathConflict {
        /// The file's path.
        path: String,
        /// A path below it.
        other: String,
    },
    /// The volume label cannot be stored.
    #[error("ESP volume label {label:?}: {reason}")]
    InvalidLabel {
        /// The label as given.
        label: String,
        /// Why not.
        reason: &'static str,
    },
    /// The ESP is too small to be FAT32.
    #[error(
        "ESP size {size} bytes is too small for FAT32, which needs at least 65525 clusters: \
         the minimum is {min} bytes"
    )]
    TooSmallForFat32 {
        /// The size asked for.
        size: u64,
        /// The smallest size that works.
        min: u64,
    },
    /// The ESP size is unusable for another reason.
    #[error("ESP size {size} bytes: {reason}")]
    InvalidSize {
        /// The size asked for.
        size: u64,
        /// Why not.
        reason: String,
    },
    /// The ESP offset is unusable.
    #[error("ESP offset {offset}: {reason}")]
    InvalidOffset {
        /// The offset asked for.
        offset: u64,
        /// Why not.
        reason: &'static str,
    },
    /// The range to read lies outside the image file.
    #[error("ESP range [{offset}, {offset} + {len}) lies outside the {file_len}-byte image file")]
    OutOfRange {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Length of the image file.
        file_len: u64,
    },
    /// [`fill_reserved`](super::fill_reserved) was given content of
    /// another size than reserved.
    #[error("ESP file {path} has {reserved} bytes reserved; {given} bytes were given")]
    ReservedSize {
        /// The ESP path.
        path: String,
        /// The size reserved by
        /// [`EspSource::Reserved`](super::EspSource::Reserved).
        reserved: u64,
        /// The size of the content given.
        given: u64,
    },
    /// [`read_esp_file`](super::read_esp_file) or
    /// [`fill_reserved`](super::fill_reserved) found no such file.
    #[error("no file {path:?} in the ESP")]
    NotFound {
        /// The path looked for.
        path: String,
    },
    /// The ESP `fatfs` wrote is not laid out as the post-pass expects (a
    /// check of `fatfs`'s work, made before anything is changed).
    #[error("the ESP fatfs wrote is not as expected: {what}")]
    UnexpectedLayout {
        /// What differs.
        what: String,
    },
    /// The boot sector does not end in the signature 0x55 0xAA: not a FAT
    /// filesystem (FAT spec, 'Boot Sector and BPB').
    #[error(
        "not a FAT filesystem: the boot sector ends in {:02x} {:02x}, not 55 aa (bytes 510-511)",
        .found[0], .found[1]
    )]
    NoBootSignature {
        /// Bytes 510 and 511.
        found: [u8; 2],
    },
    /// A BPB field of the boot sector is out of range, or does not agree
    /// with the others or with the size of the range read.
    #[error("FAT boot sector: {field} is {value}: {reason}")]
    BadBootSector {
        /// The field, as the FAT spec names it (`BPB_BytsPerSec`, ...).
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A directory entry names a first cluster outside the data clusters.
    #[error(
        "ESP {}: its directory entry names cluster {cluster}, outside the data clusters \
         2..={last}",
        Place(.path)
    )]
    EntryCluster {
        /// The file or directory.
        path: String,
        /// The cluster named.
        cluster: u32,
        /// The last data cluster.
        last: u32,
    },
    /// A FAT entry in a cluster chain is free, marks a bad cluster, or
    /// names something that is not a data cluster.
    #[error(
        "ESP {}: the FAT entry of its cluster {cluster} is {value:#x}, neither the next cluster \
         (2..={last}) nor end of chain",
        Place(.path)
    )]
    BadFatEntry {
        /// The file or directory whose chain it is.
        path: String,
        /// The cluster whose entry it is.
        cluster: u32,
        /// The entry.
        value: u32,
        /// The last data cluster.
        last: u32,
    },
    /// A cluster chain comes back to one of its own clusters.
    #[error("ESP {}: its cluster chain loops back to cluster {cluster}", Place(.path))]
    ChainLoop {
        /// The file or directory whose chain it is.
        path: String,
        /// The cluster met twice.
        cluster: u32,
    },
    /// A cluster is in the chains of two files or directories.
    #[error(
        "ESP {}: its cluster {cluster} also belongs to another file or directory (cross-linked)",
        Place(.path)
    )]
    CrossLinked {
        /// The file or directory read second.
        path: String,
        /// The shared cluster.
        cluster: u32,
    },
    /// A file's chain has fewer clusters than its size needs.
    #[error(
        "ESP {}: {size} bytes, but its cluster chain holds {clusters} clusters of \
         {cluster_size} bytes",
        Place(.path)
    )]
    ChainTooShort {
        /// The file.
        path: String,
        /// Its size (`DIR_FileSize`).
        size: u64,
        /// Clusters in its chain.
        clusters: u64,
        /// Bytes per cluster.
        cluster_size: u64,
    },
    /// Directories are nested deeper than the reader follows.
    #[error("ESP {}: directories nested deeper than {max}", Place(.path))]
    TooDeep {
        /// The directory too deep.
        path: String,
        /// The deepest nesting followed.
        max: usize,
    },
    /// A read would leave the filesystem (a check that guards every read;
    /// the boot sector's checks should make it unreachable).
    #[error("ESP: {len} bytes at byte {at} run past the {size}-byte filesystem")]
    PastEnd {
        /// Offset of the read in the filesystem.
        at: u64,
        /// Its length.
        len: u64,
        /// Size of the filesystem's byte range.
        size: u64,
    },
    /// I/O on the image or a source failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

/// A file or directory of the ESP in a message: its path quoted, the root
/// directory by name.
struct Place<'a>(&'a str);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("root directory")
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Maps an I/O error to [`FatError::Io`] with `context`.
pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let context = context.into();
    move |source| FatError::Io { context, source }
}
