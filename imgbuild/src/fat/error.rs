//! [`FatError`]: every way writing or reading an ESP can fail.

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
    /// [`fill_reserved`](super::fill_reserved) was given content of another size than reserved.
    #[error("ESP file {path} has {reserved} bytes reserved; {given} bytes were given")]
    ReservedSize {
        /// The ESP path.
        path: String,
        /// The size reserved by [`EspSource::Reserved`](super::EspSource::Reserved).
        reserved: u64,
        /// The size of the content given.
        given: u64,
    },
    /// [`read_esp_file`](super::read_esp_file) or [`fill_reserved`](super::fill_reserved) found no such file.
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
    /// I/O on the image failed, or the filesystem is not readable FAT.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

/// Maps an I/O error to [`FatError::Io`] with `context`.
pub(super) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let context = context.into();
    move |source| FatError::Io { context, source }
}
