//! The FAT32 EFI system partition (ESP).
//!
//! [`write_esp`] formats a byte range of an image file (the ESP partition
//! inside `disk.img`, or a whole file) as FAT32 with the `fatfs` crate and
//! copies the boot files in; [`read_esp`] and [`read_esp_file`] list and read
//! such a filesystem back (the `inspect` command uses them to find
//! `grub.cfg`).
//!
//! References are to the *Microsoft Extensible Firmware Initiative FAT32 File
//! System Specification*, version 1.03 (fatgen103, 2000), cited as "FAT
//! spec" with the section title.
//!
//! # Determinism
//!
//! The same [`EspSpec`] always gives the same bytes:
//!
//! * the volume ID and label come from the spec;
//! * every timestamp (created, modified and accessed, of files, directories,
//!   their `.`/`..` entries and the volume-label entry) is
//!   [`EspSpec::timestamp`] read as UTC, clamped to the range FAT can store
//!   (1980-01-01 00:00:00 to 2107-12-31 23:59:58) and rounded down to an
//!   even second, the resolution of the FAT write time (FAT spec,
//!   'FAT Directory Structure', Date and Time Formats); the
//!   10 ms creation-time field (`DIR_CrtTimeTenth`) is 0.  FAT fields are
//!   local time with no zone; this module stores UTC.  `fatfs` asks a
//!   [`fatfs::TimeProvider`] for "now", and that provider returns the spec
//!   time (see `SpecClock`);
//! * directories are created first, parents before children, then files are
//!   written, both in byte order of their path components, whatever the order
//!   of [`EspSpec::files`];
//! * every byte of the range that the filesystem does not use is zero: bytes
//!   left there by earlier content are cleared before formatting.
//!
//! # Sparseness
//!
//! Writes go through [`FileSlice`], which skips writing 4 KiB blocks that are
//! all zero and already read as zero, so formatting a 256 MiB ESP (whose two
//! FATs alone are 4 MiB of zeros) allocates almost nothing and the image
//! file's holes stay holes.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes per sector.  `fatfs` and this module use 512, the value every
/// UEFI firmware accepts (FAT spec, 'Boot Sector and BPB', `BPB_BytsPerSec`).
pub const SECTOR_SIZE: u64 = 512;

/// The default ESP size: 256 MiB.
pub const DEFAULT_ESP_SIZE: u64 = 256 << 20;

/// The largest file FAT can hold: `DIR_FileSize` is a 32-bit field
/// (FAT spec, 'FAT Directory Structure'), so 4 GiB - 1 bytes.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// A volume of this many clusters or more is FAT32; fewer is FAT12/16
/// (FAT spec, 'FAT Type Determination').
const FAT32_MIN_CLUSTERS: u64 = 65525;

/// Size of a directory entry, short or long-name (FAT spec,
/// 'FAT Directory Structure' and 'FAT Long Directory Entries').
const DIR_ENTRY_SIZE: u64 = 32;

/// Characters of a long name held by one long-name entry (FAT
/// spec, 'FAT Long Directory Entries').
const LFN_CHARS_PER_ENTRY: usize = 13;

/// Reserved sectors `fatfs` puts before the first FAT on FAT32 (the boot
/// sector, FSInfo at sector 1, the backup boot sector at sector 6).
const FATFS_RESERVED_SECTORS: u64 = 8;

/// Number of FATs (FAT spec, 'Boot Sector and BPB', `BPB_NumFATs`: "the value 2 is
/// recommended").
const NUM_FATS: u64 = 2;

/// `BPB_HiddSec`: byte offset in the boot sector (FAT spec, 'Boot Sector and BPB').
const BPB_HIDDSEC_OFFSET: u64 = 28;

/// `BPB_BkBootSec` as written by `fatfs` (FAT spec, 'Boot Sector and BPB', recommends 6).
const BACKUP_BOOT_SECTOR: u64 = 6;

/// `ATTR_VOLUME_ID` (FAT spec, 'FAT Directory Structure').
const ATTR_VOLUME_ID: u8 = 0x08;

/// `ATTR_DIRECTORY` (FAT spec, 'FAT Directory Structure').
const ATTR_DIRECTORY: u8 = 0x10;

/// `ATTR_LONG_NAME`, the attribute byte of a long-name entry (FAT spec,
/// 'FAT Long Directory Entries').
const ATTR_LONG_NAME: u8 = 0x0F;

/// First name byte of a free entry (FAT spec, 'FAT Directory Structure').
const DIR_ENTRY_FREE: u8 = 0xE5;

/// Short names of the `.` and `..` entries (FAT spec, 'FAT Directory
/// Structure').
const DOT_NAME: &[u8; 11] = b".          ";
const DOTDOT_NAME: &[u8; 11] = b"..         ";

/// `BPB_RootClus` as written by `fatfs` (FAT spec, 'Boot Sector and BPB':
/// "usually 2").
const ROOT_CLUSTER: u32 = 2;

/// FAT32 entries use the low 28 bits; entries at or above `0x0FFFFFF8` end
/// a cluster chain (FAT spec, 'FAT Data Structure').
const FAT32_ENTRY_MASK: u32 = 0x0FFF_FFFF;
const FAT32_EOC_MIN: u32 = 0x0FFF_FFF8;

/// Unix time of 1980-01-01 00:00:00 UTC, the earliest FAT date
/// (FAT spec, 'FAT Directory Structure', Date and Time Formats:
/// year 0 is 1980).
pub const FAT_EPOCH_UNIX: i64 = 315_532_800;

/// Unix time of 2107-12-31 23:59:58 UTC, the latest FAT time
/// (FAT spec, 'FAT Directory Structure', Date and Time Formats:
/// 7-bit year offset, 2-second count).
const FAT_END_UNIX: i64 = 4_354_819_198;

/// Granularity of the zero-block skipping in [`FileSlice`]: the block size
/// of the usual Linux filesystems, so a skipped block is a hole.
const ZERO_BLOCK: u64 = 4096;

/// Size of a read cache block in [`FileSlice`].
const CACHE_BLOCK: u64 = 64 << 10;

/// Number of cache blocks in [`FileSlice`]: enough that the FAT, the
/// directory being changed and the file data being read each keep one.
const CACHE_BLOCKS: usize = 8;
/// Buffer size for copying file contents.
const COPY_BUF: usize = 256 << 10;

/// Directory depth at which [`read_esp`] gives up (guards against loops in
/// corrupt images).
const MAX_DEPTH: usize = 64;

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
    /// [`fill_reserved`] was given content of another size than reserved.
    #[error("ESP file {path} has {reserved} bytes reserved; {given} bytes were given")]
    ReservedSize {
        /// The ESP path.
        path: String,
        /// The size reserved by [`EspSource::Reserved`].
        reserved: u64,
        /// The size of the content given.
        given: u64,
    },
    /// [`read_esp_file`] or [`fill_reserved`] found no such file.
    #[error("no file {path:?} in the ESP")]
    NotFound {
        /// The path looked for.
        path: String,
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

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let context = context.into();
    move |source| FatError::Io { context, source }
}

/// Where an ESP file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspSource {
    /// A file on the host, read when the ESP is written.
    File(PathBuf),
    /// Bytes in memory (e.g. a generated `grub.cfg`).
    Bytes(Vec<u8>),
    /// Room for this many bytes whose content is not known yet (a
    /// `grub.cfg` that will carry the root hash): the file is written as
    /// zeros in the filesystem's last clusters and filled in later with
    /// [`fill_reserved`]. Every byte before
    /// [`EspReport::reserved_start`] is final as soon as [`write_esp`]
    /// returns, so it can be hashed while the content is still unknown.
    Reserved(u64),
}

/// One file to put in the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    /// Path inside the ESP, `/`-separated, without a leading `/`
    /// (e.g. `EFI/BOOT/BOOTX64.EFI`).  Stored with the case given; FAT
    /// lookups ignore case.  Missing directories are created.
    pub path: String,
    /// The content.
    pub source: EspSource,
}

/// Everything that determines the ESP's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspSpec {
    /// Size of the filesystem in bytes: a multiple of 512, large enough for
    /// FAT32 (about 32.5 MiB; [`DEFAULT_ESP_SIZE`] is the usual value).
    pub size: u64,
    /// Volume serial number (`BS_VolID`, FAT spec, 'Boot Sector and BPB').
    pub volume_id: u32,
    /// Volume label, at most 11 characters of the FAT short-name set; ASCII
    /// letters are stored upper-cased.  Empty means `NO NAME` and no label
    /// entry in the root directory.
    pub label: String,
    /// Every timestamp in the filesystem, in Unix seconds
    /// (`SOURCE_DATE_EPOCH`); see the module documentation.
    pub timestamp: i64,
    /// The files, in any order.
    pub files: Vec<EspFile>,
}

/// A file in the ESP, as listed in manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspEntry {
    /// `/`-separated path inside the ESP.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// What [`write_esp`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspReport {
    /// Size of the filesystem in bytes.
    pub size: u64,
    /// Volume serial number.
    pub volume_id: u32,
    /// Volume label as stored (`NO NAME` when none was given).
    pub label: String,
    /// Cluster size in bytes.
    pub cluster_size: u32,
    /// Number of data clusters.
    pub total_clusters: u32,
    /// Clusters still free.
    pub free_clusters: u32,
    /// The files, in the order written.  Directory components are spelled
    /// as stored (the first spelling in write order wins when several
    /// differ only in case). The digest of an [`EspSource::Reserved`] file
    /// is empty until [`fill_reserved`] gives its content.
    pub files: Vec<EspEntry>,
    /// Where the [`EspSource::Reserved`] files lie.
    #[serde(skip)]
    pub reserved: Vec<ReservedFile>,
}

/// The place of an [`EspSource::Reserved`] file in the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedFile {
    /// Its path, as in [`EspReport::files`].
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Byte offset of its first byte from the start of the filesystem;
    /// the file occupies `[start, start + size)`.
    pub start: u64,
}

impl EspReport {
    /// The offset, from the start of the filesystem, of the first byte
    /// that [`fill_reserved`] may still change ([`EspReport::size`] when
    /// nothing is reserved). The bytes before it are final.
    pub fn reserved_start(&self) -> u64 {
        self.reserved
            .iter()
            .map(|r| r.start)
            .min()
            .unwrap_or(self.size)
    }
}

/// The FAT variant of a filesystem read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FatKind {
    /// FAT12.
    Fat12,
    /// FAT16.
    Fat16,
    /// FAT32.
    Fat32,
}

/// What [`read_esp`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspListing {
    /// FAT variant.
    pub fat_type: FatKind,
    /// Volume serial number.
    pub volume_id: u32,
    /// Volume label from the boot sector, trailing spaces removed.
    pub label: String,
    /// Cluster size in bytes.
    pub cluster_size: u32,
    /// Every directory (not the root), sorted by path.
    pub directories: Vec<String>,
    /// Every file, sorted by path.
    pub files: Vec<EspEntry>,
}

impl EspListing {
    /// The file at `path`, compared ignoring case as FAT does.
    pub fn get(&self, path: &str) -> Option<&EspEntry> {
        let key = path.trim_start_matches('/').to_uppercase();
        self.files.iter().find(|e| e.path.to_uppercase() == key)
    }
}

// ---------------------------------------------------------------------------
// The byte-range adapter.

/// `Read + Write + Seek` over the byte range `[offset, offset + len)` of a
/// file, with positioned I/O (`pread`/`pwrite`), so several slices of one
/// file do not disturb each other or the file's own cursor.
///
/// * Positions are relative to `offset`.  Seeking outside `[0, len]`, and
///   writing past `len`, fail with an I/O error; reading at `len` returns 0.
/// * 4 KiB blocks (aligned in the file) that a write would fill with zeros
///   are not written if they already read as zero, so holes in a sparse
///   file stay holes.  The content is the same as if they were written.
/// * Small writes (FAT entries, directories) go to a write-back cache of
///   eight 64 KiB blocks, written on eviction, on [`Write::flush`] and on
///   drop; whole blocks are written directly. Reads see the cache. The slice
///   assumes nothing else writes the range while it is in use; flush it to
///   see write errors.
#[derive(Debug)]
pub struct FileSlice<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
    pos: u64,
    writable: bool,
    /// Cached blocks; when all are taken, the least recently used one is
    /// replaced.
    cache: Vec<CacheBlock>,
    clock: u64,
}

#[derive(Debug)]
struct CacheBlock {
    start: u64,
    used: u64,
    data: Vec<u8>,
    /// When the block was changed: what the file holds (written back on
    /// eviction or flush, only the 4 KiB pieces that differ).
    disk: Option<Vec<u8>>,
}

impl<'a> FileSlice<'a> {
    /// A readable and writable slice.  The file must already be at least
    /// `offset + len` bytes long.
    pub fn new(file: &'a File, offset: u64, len: u64) -> io::Result<Self> {
        Self::open(file, offset, len, true)
    }

    /// A slice that refuses writes.
    pub fn read_only(file: &'a File, offset: u64, len: u64) -> io::Result<Self> {
        Self::open(file, offset, len, false)
    }

    fn open(file: &'a File, offset: u64, len: u64, writable: bool) -> io::Result<Self> {
        let end = offset.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "slice end overflows u64")
        })?;
        let file_len = file.metadata()?.len();
        if end > file_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("slice [{offset}, {end}) extends past the end of the {file_len}-byte file"),
            ));
        }
        Ok(FileSlice {
            file,
            offset,
            len,
            pos: 0,
            writable,
            cache: Vec::with_capacity(CACHE_BLOCKS),
            clock: 0,
        })
    }

    /// Start of the slice in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the slice.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index in the cache of the block starting at `block` (relative, a
    /// multiple of [`CACHE_BLOCK`], below `len`), reading it if needed.
    fn cached(&mut self, block: u64) -> io::Result<usize> {
        self.clock += 1;
        if let Some(i) = self.cache.iter().position(|b| b.start == block) {
            self.cache[i].used = self.clock;
            return Ok(i);
        }
        let n = CACHE_BLOCK.min(self.len - block) as usize;
        let mut data = vec![0u8; n];
        self.file.read_exact_at(&mut data, self.offset + block)?;
        let entry = CacheBlock {
            start: block,
            used: self.clock,
            data,
            disk: None,
        };
        if self.cache.len() < CACHE_BLOCKS {
            self.cache.push(entry);
            return Ok(self.cache.len() - 1);
        }
        let lru = (0..self.cache.len())
            .min_by_key(|&i| self.cache[i].used)
            .unwrap_or(0);
        self.write_back(lru)?;
        self.cache[lru] = entry;
        Ok(lru)
    }

    /// Writes the changed 4 KiB pieces of cache block `i` to the file.
    fn write_back(&mut self, i: usize) -> io::Result<()> {
        let Some(disk) = self.cache[i].disk.take() else {
            return Ok(());
        };
        let block = &self.cache[i];
        let base = self.offset + block.start;
        let mut run: Option<usize> = None;
        let mut at = 0usize;
        while at < block.data.len() {
            let abs = base + at as u64;
            let end = block
                .data
                .len()
                .min(at + (ZERO_BLOCK - abs % ZERO_BLOCK) as usize);
            if block.data[at..end] == disk[at..end] {
                if let Some(start) = run.take() {
                    self.file
                        .write_all_at(&block.data[start..at], base + start as u64)?;
                }
            } else if run.is_none() {
                run = Some(at);
            }
            at = end;
        }
        if let Some(start) = run {
            self.file
                .write_all_at(&block.data[start..], base + start as u64)?;
        }
        Ok(())
    }

    /// Writes every changed cache block to the file.
    fn write_back_all(&mut self) -> io::Result<()> {
        for i in 0..self.cache.len() {
            self.write_back(i)?;
        }
        Ok(())
    }

    /// Visits the current content of `[rel, rel + len)` piece by piece
    /// until `f` returns false.
    fn visit(
        &mut self,
        rel: u64,
        len: usize,
        mut f: impl FnMut(usize, &[u8]) -> bool,
    ) -> io::Result<()> {
        let mut done = 0usize;
        while done < len {
            let at = rel + done as u64;
            let block = at - at % CACHE_BLOCK;
            let i = self.cached(block)?;
            let data = &self.cache[i].data;
            let in_block = (at - block) as usize;
            let take = (len - done).min(data.len() - in_block);
            if !f(done, &data[in_block..in_block + take]) {
                return Ok(());
            }
            done += take;
        }
        Ok(())
    }

    /// Writes `buf` at `rel`: whole uncached cache blocks go straight to
    /// the file (file data), the rest into the cache (FAT entries,
    /// directories), written back on eviction or [`Write::flush`].
    fn write_range(&mut self, rel: u64, buf: &[u8]) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = rel + done as u64;
            let block = at - at % CACHE_BLOCK;
            let block_len = CACHE_BLOCK.min(self.len - block) as usize;
            let in_block = (at - block) as usize;
            let take = (buf.len() - done).min(block_len - in_block);
            let piece = &buf[done..done + take];
            let cached = self.cache.iter().position(|b| b.start == block);
            match cached {
                None if in_block == 0 && take == block_len => self.write_through(at, piece)?,
                _ => {
                    let i = match cached {
                        Some(i) => i,
                        None => self.cached(block)?,
                    };
                    let b = &mut self.cache[i];
                    if b.disk.is_none() {
                        b.disk = Some(b.data.clone());
                    }
                    b.data[in_block..in_block + take].copy_from_slice(piece);
                }
            }
            done += take;
        }
        Ok(())
    }

    /// Writes `buf` at `rel` directly, skipping 4 KiB pieces (aligned in
    /// the file) that are zeros and already read as zeros.
    fn write_through(&mut self, rel: u64, buf: &[u8]) -> io::Result<()> {
        let mut run: Option<usize> = None;
        let mut probe = [0u8; ZERO_BLOCK as usize];
        let mut i = 0usize;
        while i < buf.len() {
            let abs = self.offset + rel + i as u64;
            let boundary = (abs / ZERO_BLOCK + 1) * ZERO_BLOCK;
            let end = buf.len().min(i + (boundary - abs) as usize);
            let piece = &buf[i..end];
            let skip = is_zero(piece) && {
                let probe = &mut probe[..piece.len()];
                self.file.read_exact_at(probe, abs)?;
                is_zero(probe)
            };
            if skip {
                if let Some(start) = run.take() {
                    self.file
                        .write_all_at(&buf[start..i], self.offset + rel + start as u64)?;
                }
            } else if run.is_none() {
                run = Some(i);
            }
            i = end;
        }
        if let Some(start) = run {
            self.file
                .write_all_at(&buf[start..], self.offset + rel + start as u64)?;
        }
        Ok(())
    }
}

impl Drop for FileSlice<'_> {
    fn drop(&mut self) {
        // Callers flush to see errors; this only keeps a forgotten flush
        // from losing data.
        if let Err(e) = self.write_back_all() {
            tracing::error!("writing back the ESP cache failed: {e}");
        }
    }
}

fn is_zero(buf: &[u8]) -> bool {
    buf.iter().all(|&b| b == 0)
}

impl Read for FileSlice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        let pos = self.pos;
        self.visit(pos, n, |done, piece| {
            buf[done..done + piece.len()].copy_from_slice(piece);
            true
        })?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FileSlice<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the slice is read-only",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let end = self
            .pos
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "write of {} bytes at {} passes the end of the {}-byte slice",
                        buf.len(),
                        self.pos,
                        self.len
                    ),
                )
            })?;
        let pos = self.pos;
        self.write_range(pos, buf)?;
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_back_all()
    }
}

impl Seek for FileSlice<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("seek to {pos:?} leaves the {}-byte slice", self.len),
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Timestamps.

/// A FAT date and time, as UTC.
fn fat_date_time(unix: i64) -> fatfs::DateTime {
    let t = unix.clamp(FAT_EPOCH_UNIX, FAT_END_UNIX);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // All values are in range after the clamp: year 1980..=2107.
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            // FAT spec, 'FAT Directory Structure', Date and Time Formats: the time
            // counts 2-second units.
            sec: (secs % 60 / 2 * 2) as u16,
            millis: 0,
        },
    }
}

/// Proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

thread_local! {
    /// The time `SpecClock` reports on this thread, set by `ClockGuard`.
    static SPEC_TIME: Cell<Option<fatfs::DateTime>> = const { Cell::new(None) };
}

/// The `fatfs` time provider.  `fatfs` 0.3 takes a `&'static dyn
/// TimeProvider`, so the per-call time lives in a thread-local set for the
/// duration of [`write_esp`] (the filesystem object never leaves that
/// thread).  Outside that it reports 1980-01-01 00:00:00, never the clock.
#[derive(Debug)]
struct SpecClock;

static SPEC_CLOCK: SpecClock = SpecClock;

impl fatfs::TimeProvider for SpecClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        SPEC_TIME
            .with(Cell::get)
            .unwrap_or_else(|| fat_date_time(FAT_EPOCH_UNIX))
    }
}

/// Sets the thread's spec time and restores the previous one on drop.
struct ClockGuard {
    previous: Option<fatfs::DateTime>,
}

impl ClockGuard {
    fn set(time: fatfs::DateTime) -> Self {
        ClockGuard {
            previous: SPEC_TIME.with(|t| t.replace(Some(time))),
        }
    }
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        SPEC_TIME.with(|t| t.set(self.previous));
    }
}

fn fs_options() -> fatfs::FsOptions {
    fatfs::FsOptions::new()
        .update_accessed_date(false)
        .time_provider(&SPEC_CLOCK)
}

// ---------------------------------------------------------------------------
// Geometry.

/// FAT32 layout as `fatfs::format_volume` computes it.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    total_sectors: u64,
    sectors_per_cluster: u64,
    sectors_per_fat: u64,
    clusters: u64,
}

impl Geometry {
    fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * SECTOR_SIZE
    }

    fn first_data_sector(&self) -> u64 {
        FATFS_RESERVED_SECTORS + NUM_FATS * self.sectors_per_fat
    }
}

/// Sectors per cluster for a FAT32 volume of `total_sectors` 512-byte
/// sectors: `DskTableFAT32` of FAT spec, 'FAT Volume Initialization' (0 = too
/// small for FAT32).
fn fat32_sectors_per_cluster(total_sectors: u64) -> u64 {
    match total_sectors {
        0..=66_600 => 0,               // up to 32.5 MB
        66_601..=532_480 => 1,         // up to 260 MB: 0.5 KiB clusters
        532_481..=16_777_216 => 8,     // up to 8 GB: 4 KiB clusters
        16_777_217..=33_554_432 => 16, // up to 16 GB: 8 KiB clusters
        33_554_433..=67_108_864 => 32, // up to 32 GB: 16 KiB clusters
        _ => 64,                       // larger: 32 KiB clusters
    }
}

/// Sectors per FAT with `fatfs`'s formula (a variant of the `FATSz` computation in
/// FAT spec, 'FAT Volume Initialization', that
/// also counts the two reserved FAT entries, so it is never too small).
fn fatfs_sectors_per_fat(total_sectors: u64, sectors_per_cluster: u64) -> u64 {
    let t0 = total_sectors - FATFS_RESERVED_SECTORS;
    let t1 = t0 + 2 * sectors_per_cluster;
    // 32 bits per FAT32 entry (FAT spec, 'FAT Data Structure').
    let t2 = sectors_per_cluster * SECTOR_SIZE * 8 / 32 + NUM_FATS;
    t1.div_ceil(t2)
}

fn geometry_for(total_sectors: u64, sectors_per_cluster: u64) -> Geometry {
    let sectors_per_fat = fatfs_sectors_per_fat(total_sectors, sectors_per_cluster);
    let data = total_sectors.saturating_sub(FATFS_RESERVED_SECTORS + NUM_FATS * sectors_per_fat);
    Geometry {
        total_sectors,
        sectors_per_cluster,
        sectors_per_fat,
        clusters: data / sectors_per_cluster,
    }
}

/// The smallest size (bytes) accepted for FAT32.
fn fat32_min_size() -> u64 {
    let mut sectors = 66_601;
    while geometry_for(sectors, 1).clusters < FAT32_MIN_CLUSTERS {
        sectors += 1;
    }
    sectors * SECTOR_SIZE
}

fn fat32_geometry(size: u64) -> Result<Geometry, FatError> {
    if size % SECTOR_SIZE != 0 {
        return Err(FatError::InvalidSize {
            size,
            reason: format!("not a multiple of the {SECTOR_SIZE}-byte sector"),
        });
    }
    let total_sectors = size / SECTOR_SIZE;
    // BPB_TotSec32 is 32 bits (FAT spec, 'Boot Sector and BPB').
    if total_sectors > u64::from(u32::MAX) {
        return Err(FatError::InvalidSize {
            size,
            reason: format!(
                "larger than FAT32's {} bytes (2^32 - 1 sectors)",
                u64::from(u32::MAX) * SECTOR_SIZE
            ),
        });
    }
    let too_small = || FatError::TooSmallForFat32 {
        size,
        min: fat32_min_size(),
    };
    let spc = fat32_sectors_per_cluster(total_sectors);
    if spc == 0 {
        return Err(too_small());
    }
    let g = geometry_for(total_sectors, spc);
    if g.clusters < FAT32_MIN_CLUSTERS {
        return Err(too_small());
    }
    Ok(g)
}

// ---------------------------------------------------------------------------
// Planning: validate the spec before touching the output.

/// A validated file.
#[derive(Debug)]
struct PlannedFile<'s> {
    /// Components, directories spelled as they will be stored.
    components: Vec<String>,
    size: u64,
    source: &'s EspSource,
    /// The path as given (for errors).
    given: &'s str,
}

impl PlannedFile<'_> {
    fn path(&self) -> String {
        self.components.join("/")
    }
}

#[derive(Debug)]
struct Plan<'s> {
    geometry: Geometry,
    label: Option<[u8; 11]>,
    /// Directories to create, parents first.
    dirs: Vec<Vec<String>>,
    files: Vec<PlannedFile<'s>>,
}

/// Checks one path component against the long-name rules (FAT spec,
/// 'FAT Long Directory Entries')
/// as `fatfs` enforces them.
fn check_component(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty path component (leading, trailing or doubled '/')".into());
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' components are not allowed"));
    }
    // fatfs limits the UTF-8 length; FAT itself allows 255 UTF-16 units.
    if name.len() > 255 {
        return Err(format!("component {name:?} is longer than 255 bytes"));
    }
    if name.ends_with('.') || name.ends_with(' ') || name.starts_with(' ') {
        return Err(format!(
            "component {name:?} starts with a space or ends with a space or '.', which FAT drops"
        ));
    }
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric()
            || ('\u{80}'..='\u{FFFF}').contains(&c)
            || "$%'-_@~`!(){}. +,;=[]^#&".contains(c);
        if !ok {
            return Err(format!(
                "component {name:?} contains {c:?}, which a FAT long name cannot hold"
            ));
        }
    }
    Ok(())
}

/// Directory entries (short plus long-name) `fatfs` writes for `name`.
fn entry_slots(name: &str) -> u64 {
    let units = name.encode_utf16().count();
    1 + units.div_ceil(LFN_CHARS_PER_ENTRY) as u64
}

fn label_bytes(label: &str) -> Result<Option<[u8; 11]>, FatError> {
    if label.is_empty() {
        return Ok(None);
    }
    let bad = |reason| FatError::InvalidLabel {
        label: label.to_string(),
        reason,
    };
    if label.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    if label.starts_with(' ') {
        return Err(bad("starts with a space"));
    }
    let mut out = [b' '; 11];
    for (dst, c) in out.iter_mut().zip(label.bytes()) {
        // Short-name characters (FAT spec, 'FAT Directory Structure', DIR_Name),
        // plus space.
        let ok = c.is_ascii_alphanumeric() || b" !#$%&'()-@^_`{}~".contains(&c);
        if !ok {
            return Err(bad(
                "only ASCII letters, digits, space and !#$%&'()-@^_`{}~ are allowed",
            ));
        }
        *dst = c.to_ascii_uppercase();
    }
    Ok(Some(out))
}

fn source_size(esp_path: &str, source: &EspSource) -> Result<u64, FatError> {
    match source {
        EspSource::Bytes(b) => Ok(b.len() as u64),
        EspSource::Reserved(size) => Ok(*size),
        EspSource::File(p) => {
            let input = |source| FatError::Input {
                esp_path: esp_path.to_string(),
                path: p.clone(),
                source,
            };
            let md = std::fs::metadata(p).map_err(input)?;
            if !md.is_file() {
                return Err(input(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
            Ok(md.len())
        }
    }
}

fn upper(components: &[String]) -> String {
    components.join("/").to_uppercase()
}

fn plan(spec: &EspSpec) -> Result<Plan<'_>, FatError> {
    let geometry = fat32_geometry(spec.size)?;
    let label = label_bytes(&spec.label)?;

    // Validate names and sizes, in the order given.
    let mut files = Vec::with_capacity(spec.files.len());
    for f in &spec.files {
        let components: Vec<String> = f.path.split('/').map(str::to_string).collect();
        for c in &components {
            check_component(c).map_err(|reason| FatError::InvalidPath {
                path: f.path.clone(),
                reason,
            })?;
        }
        let size = source_size(&f.path, &f.source)?;
        if size > MAX_FILE_SIZE {
            return Err(FatError::FileTooLarge {
                esp_path: f.path.clone(),
                size,
            });
        }
        files.push(PlannedFile {
            components,
            size,
            source: &f.source,
            given: &f.path,
        });
    }
    files.sort_by(|a, b| a.components.cmp(&b.components));

    // Case-insensitive duplicates and file/directory conflicts.
    let mut file_keys: HashMap<String, &str> = HashMap::new();
    for f in &files {
        if let Some(other) = file_keys.insert(upper(&f.components), f.given) {
            return Err(FatError::DuplicatePath {
                path: f.given.to_string(),
                other: other.to_string(),
            });
        }
    }
    // Directories, keyed case-insensitively, first spelling wins.
    let mut dir_names: HashMap<String, Vec<String>> = HashMap::new();
    let mut dirs: Vec<Vec<String>> = Vec::new();
    for f in &mut files {
        for depth in 1..f.components.len() {
            let key = upper(&f.components[..depth]);
            if let Some(file) = file_keys.get(&key) {
                return Err(FatError::PathConflict {
                    path: (*file).to_string(),
                    other: f.given.to_string(),
                });
            }
            // components[..depth - 1] are already canonical.
            let canonical = dir_names.entry(key).or_insert_with(|| {
                let d = f.components[..depth].to_vec();
                dirs.push(d.clone());
                d
            });
            f.components[..depth].clone_from_slice(canonical);
        }
    }
    files.sort_by(|a, b| a.components.cmp(&b.components));

    // Capacity: directory clusters first, then the files in write order.
    let cluster = geometry.cluster_size();
    let mut slots: BTreeMap<String, u64> = BTreeMap::new();
    slots.insert(String::new(), u64::from(label.is_some()));
    for d in &dirs {
        // fatfs gives "." and ".." a long-name entry each.
        slots.insert(upper(d), entry_slots(".") + entry_slots(".."));
        let parent = upper(&d[..d.len() - 1]);
        *slots.entry(parent).or_default() += entry_slots(&d[d.len() - 1]);
    }
    for f in &files {
        let n = f.components.len();
        let parent = upper(&f.components[..n - 1]);
        *slots.entry(parent).or_default() += entry_slots(&f.components[n - 1]);
    }
    let mut needed_clusters: u64 = slots
        .iter()
        .map(|(key, &s)| {
            let c = (s * DIR_ENTRY_SIZE).div_ceil(cluster).max(1);
            // The root's first cluster is allocated by format.
            if key.is_empty() { c - 1 } else { c }
        })
        .sum();
    let free_clusters = geometry.clusters - 1;
    for f in &files {
        needed_clusters += f.size.div_ceil(cluster);
        if needed_clusters > free_clusters {
            return Err(FatError::NoSpace {
                esp_path: f.path(),
                size: f.size,
                needed: needed_clusters * cluster,
                available: free_clusters * cluster,
                esp_size: spec.size,
            });
        }
    }

    Ok(Plan {
        geometry,
        label,
        dirs,
        files,
    })
}

// ---------------------------------------------------------------------------
// Writing.

/// Zeroes every non-zero 4 KiB block of `[start, end)`, reading only: holes
/// read as zero and are left alone.
fn clear_range(file: &File, start: u64, end: u64) -> io::Result<()> {
    // Holes read as zeros: only the data needs looking at (none in a
    // freshly created image).
    for segment in crate::sparse::segments(file, start, end) {
        if let crate::sparse::Segment::Data(a, b) = segment? {
            clear_data(file, a, b)?;
        }
    }
    Ok(())
}

/// Zeroes the non-zero 4 KiB pieces of `start..end`.
fn clear_data(file: &File, start: u64, end: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let zeros = [0u8; ZERO_BLOCK as usize];
    let mut at = start;
    while at < end {
        let n = CHUNK.min(end - at) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if !is_zero(&buf[..n]) {
            let mut i = 0u64;
            while i < n as u64 {
                let abs = at + i;
                let len = (ZERO_BLOCK - abs % ZERO_BLOCK).min(n as u64 - i);
                let piece = &buf[i as usize..(i + len) as usize];
                if !is_zero(piece) {
                    file.write_all_at(&zeros[..len as usize], abs)?;
                }
                i += len;
            }
        }
        at += n as u64;
    }
    Ok(())
}

fn write_at(slice: &mut FileSlice<'_>, pos: u64, bytes: &[u8]) -> io::Result<()> {
    slice.seek(SeekFrom::Start(pos))?;
    slice.write_all(bytes)
}

fn read_at(slice: &mut FileSlice<'_>, pos: u64, bytes: &mut [u8]) -> io::Result<()> {
    slice.seek(SeekFrom::Start(pos))?;
    slice.read_exact(bytes)
}

/// Fixes what `fatfs::format_volume` cannot be told: `BPB_HiddSec` in the
/// boot sector and its backup, and the timestamps of the volume-label entry.
fn patch_formatted(
    slice: &mut FileSlice<'_>,
    g: &Geometry,
    hidden_sectors: u32,
    time: fatfs::DateTime,
    has_label: bool,
) -> io::Result<()> {
    // FAT spec, 'Boot Sector and BPB': BPB_HiddSec is the count of sectors preceding the
    // partition; firmware ignores it, mkfs.fat sets it to the partition start.
    let hidden = hidden_sectors.to_le_bytes();
    write_at(slice, BPB_HIDDSEC_OFFSET, &hidden)?;
    write_at(
        slice,
        BACKUP_BOOT_SECTOR * SECTOR_SIZE + BPB_HIDDSEC_OFFSET,
        &hidden,
    )?;

    if has_label {
        // The root directory starts the data region (BPB_RootClus = 2,
        // FAT spec, 'Boot Sector and BPB'); format puts the label entry first.
        let entry = g.first_data_sector() * SECTOR_SIZE;
        let mut raw = [0u8; DIR_ENTRY_SIZE as usize];
        read_at(slice, entry, &mut raw)?;
        if raw[11] != ATTR_VOLUME_ID {
            return Err(io::Error::other("volume label entry not where expected"));
        }
        let (date, time_of_day) = encode_dos(time);
        // FAT spec, 'FAT Directory Structure': DIR_CrtTimeTenth @13, DIR_CrtTime @14, DIR_CrtDate @16,
        // DIR_LstAccDate @18, DIR_WrtTime @22, DIR_WrtDate @24.
        raw[13] = 0;
        raw[14..16].copy_from_slice(&time_of_day.to_le_bytes());
        raw[16..18].copy_from_slice(&date.to_le_bytes());
        raw[18..20].copy_from_slice(&date.to_le_bytes());
        raw[22..24].copy_from_slice(&time_of_day.to_le_bytes());
        raw[24..26].copy_from_slice(&date.to_le_bytes());
        write_at(slice, entry, &raw)?;
    }
    slice.seek(SeekFrom::Start(0))?;
    Ok(())
}

fn cluster_offset(g: &Geometry, cluster: u32) -> u64 {
    (g.first_data_sector() + u64::from(cluster - 2) * g.sectors_per_cluster) * SECTOR_SIZE
}

/// The clusters of the chain starting at `first`.
fn cluster_chain(slice: &mut FileSlice<'_>, g: &Geometry, first: u32) -> io::Result<Vec<u32>> {
    let mut chain = Vec::new();
    let mut cluster = first;
    loop {
        if cluster < 2 || u64::from(cluster) >= g.clusters + 2 || chain.len() as u64 > g.clusters {
            return Err(io::Error::other(format!(
                "bad cluster {cluster} in the chain starting at {first}"
            )));
        }
        chain.push(cluster);
        let mut raw = [0u8; 4];
        // The first FAT follows the reserved sectors; 4 bytes per entry.
        read_at(
            slice,
            FATFS_RESERVED_SECTORS * SECTOR_SIZE + 4 * u64::from(cluster),
            &mut raw,
        )?;
        let next = u32::from_le_bytes(raw) & FAT32_ENTRY_MASK;
        if next >= FAT32_EOC_MIN {
            return Ok(chain);
        }
        cluster = next;
    }
}

fn entry_cluster(entry: &[u8]) -> u32 {
    // DIR_FstClusHI @20, DIR_FstClusLO @26 (FAT spec, 'FAT Directory Structure').
    u32::from(u16::from_le_bytes([entry[20], entry[21]])) << 16
        | u32::from(u16::from_le_bytes([entry[26], entry[27]]))
}

/// Makes every directory's `.` and `..` entries what the FAT spec ('FAT
/// Directory Structure') and `fsck.fat` expect.  `fatfs` 0.3 writes
/// `[LFN ".", ".", LFN "..", ".."]` at the start of a new directory and
/// points `..` at cluster 2 when the parent is the root; the spec wants
/// `.` and `..` as the first two entries, without long names, and `..` at
/// cluster 0 for a child of the root.  The long-name entries are removed
/// and the rest of the directory moved up by two slots.
fn fix_directories(slice: &mut FileSlice<'_>, g: &Geometry) -> io::Result<()> {
    let per_cluster = (g.cluster_size() / DIR_ENTRY_SIZE) as usize;
    let mut todo = vec![(ROOT_CLUSTER, None::<u32>)];
    while let Some((first, parent)) = todo.pop() {
        let chain = cluster_chain(slice, g, first)?;
        let mut entries: Vec<[u8; 32]> = Vec::with_capacity(chain.len() * per_cluster);
        let mut buf = vec![0u8; g.cluster_size() as usize];
        for &c in &chain {
            read_at(slice, cluster_offset(g, c), &mut buf)?;
            for raw in buf.chunks_exact(DIR_ENTRY_SIZE as usize) {
                let mut e = [0u8; 32];
                e.copy_from_slice(raw);
                entries.push(e);
            }
        }
        // A first name byte of 0 ends the directory.
        let used = entries
            .iter()
            .position(|e| e[0] == 0)
            .unwrap_or(entries.len());
        entries.truncate(used);
        if let Some(parent) = parent {
            let fatfs_layout = entries.len() >= 4
                && entries[0][11] == ATTR_LONG_NAME
                && entries[1][..11] == DOT_NAME[..]
                && entries[2][11] == ATTR_LONG_NAME
                && entries[3][..11] == DOTDOT_NAME[..];
            if !fatfs_layout {
                return Err(io::Error::other(format!(
                    "directory at cluster {first}: '.' and '..' entries not laid out as expected"
                )));
            }
            entries.remove(2);
            entries.remove(0);
            if parent == ROOT_CLUSTER {
                entries[1][20..22].fill(0);
                entries[1][26..28].fill(0);
            }
            for (i, &c) in chain.iter().enumerate() {
                buf.fill(0);
                for (slot, e) in entries
                    .iter()
                    .skip(i * per_cluster)
                    .take(per_cluster)
                    .enumerate()
                {
                    buf[slot * 32..slot * 32 + 32].copy_from_slice(e);
                }
                write_at(slice, cluster_offset(g, c), &buf)?;
            }
        }
        for e in &entries {
            let is_subdir = e[0] != DIR_ENTRY_FREE
                && e[11] != ATTR_LONG_NAME
                && e[11] & ATTR_DIRECTORY != 0
                && e[..11] != DOT_NAME[..]
                && e[..11] != DOTDOT_NAME[..];
            if is_subdir {
                todo.push((entry_cluster(e), Some(first)));
            }
        }
    }
    slice.seek(SeekFrom::Start(0))?;
    Ok(())
}

/// DOS (date, time) words (FAT spec, 'FAT Directory Structure', Date and Time Formats).
fn encode_dos(t: fatfs::DateTime) -> (u16, u16) {
    let date = ((t.date.year - 1980) << 9) | (t.date.month << 5) | t.date.day;
    let time = (t.time.hour << 11) | (t.time.min << 5) | (t.time.sec / 2);
    (date, time)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Copies one file into the filesystem, returning its SHA-256.
fn copy_file<T: fatfs::ReadWriteSeek>(
    root: &fatfs::Dir<'_, T>,
    f: &PlannedFile<'_>,
) -> Result<String, FatError> {
    let path = f.path();
    let ctx = || format!("writing {path} into the ESP");
    // create_file opens an existing file (also one whose generated 8.3 alias
    // matches); refuse rather than overwrite.
    if root.open_file(&path).is_ok() {
        return Err(FatError::DuplicatePath {
            path: f.given.to_string(),
            other: "an existing entry with the same long or 8.3 name".to_string(),
        });
    }
    let mut out = root.create_file(&path).map_err(io_err(ctx()))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    match f.source {
        // Allocated after the other files, at the end (see write_esp).
        EspSource::Reserved(_) => return Ok(String::new()),
        EspSource::Bytes(b) => {
            hasher.update(b);
            out.write_all(b).map_err(io_err(ctx()))?;
            written = b.len() as u64;
        }
        EspSource::File(p) => {
            let input = |source| FatError::Input {
                esp_path: f.given.to_string(),
                path: p.clone(),
                source,
            };
            let mut src = File::open(p).map_err(input)?;
            let mut buf = vec![0u8; COPY_BUF];
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(input(e)),
                };
                written += n as u64;
                if written > f.size {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(ctx()))?;
            }
            if written != f.size {
                return Err(input(io::Error::other(format!(
                    "size changed while copying: {} bytes planned, {written} read",
                    f.size
                ))));
            }
        }
    }
    out.flush().map_err(io_err(ctx()))?;
    debug_assert_eq!(written, f.size);
    Ok(hex(&hasher.finalize()))
}

/// Formats `[offset, offset + spec.size)` of `file` as FAT32 and writes the
/// spec's files into it.
///
/// The file is extended (sparsely) if it is shorter than the range.  Bytes
/// outside the range are never touched; bytes inside it end up exactly as
/// the spec determines, whatever was there before (non-zero leftovers are
/// cleared, holes stay holes).  `offset` must be a multiple of 512: it is
/// recorded as `BPB_HiddSec`.  Sources are checked (existence, sizes,
/// names, free space) before anything is written; if an error happens
/// after that, the range holds an unspecified, partial filesystem.
pub fn write_esp(file: &File, offset: u64, spec: &EspSpec) -> Result<EspReport, FatError> {
    if offset % SECTOR_SIZE != 0 {
        return Err(FatError::InvalidOffset {
            offset,
            reason: "not a multiple of the 512-byte sector",
        });
    }
    let hidden_sectors =
        u32::try_from(offset / SECTOR_SIZE).map_err(|_| FatError::InvalidOffset {
            offset,
            reason: "beyond 2^32 sectors, which BPB_HiddSec cannot record",
        })?;
    let end = offset
        .checked_add(spec.size)
        .ok_or(FatError::InvalidOffset {
            offset,
            reason: "offset + size overflows",
        })?;
    let plan = plan(spec)?;
    let g = plan.geometry;
    let time = fat_date_time(spec.timestamp);
    if !(FAT_EPOCH_UNIX..=FAT_END_UNIX).contains(&spec.timestamp) {
        tracing::warn!(
            timestamp = spec.timestamp,
            "ESP timestamp outside FAT's 1980..2107 range; clamped"
        );
    }

    // Clear leftovers, then make sure the file covers the range.
    let file_len = file
        .metadata()
        .map_err(io_err("reading the image file's length"))?
        .len();
    clear_range(file, offset, end.min(file_len)).map_err(io_err("clearing the ESP range"))?;
    if file_len < end {
        file.set_len(end)
            .map_err(io_err("extending the image file to hold the ESP"))?;
    }

    let _clock = ClockGuard::set(time);
    let mut slice =
        FileSlice::new(file, offset, spec.size).map_err(io_err("opening the ESP range"))?;
    let mut options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_sector(SECTOR_SIZE as u16)
        .bytes_per_cluster(g.cluster_size() as u32)
        .total_sectors(g.total_sectors as u32)
        .fats(NUM_FATS as u8)
        // FAT spec, 'Boot Sector and BPB': 0xF8 is the media byte for fixed (non-removable) media.
        .media(0xF8)
        // FAT spec, 'Boot Sector and BPB': BS_DrvNum 0x80 for hard disks.
        .drive_num(0x80)
        .volume_id(spec.volume_id);
    if let Some(label) = plan.label {
        options = options.volume_label(label);
    }
    fatfs::format_volume(&mut slice, options).map_err(io_err("formatting the ESP as FAT32"))?;
    patch_formatted(&mut slice, &g, hidden_sectors, time, plan.label.is_some())
        .map_err(io_err("patching the ESP boot sector"))?;

    let fs = fatfs::FileSystem::new(&mut slice, fs_options())
        .map_err(io_err("mounting the freshly formatted ESP"))?;
    if fs.fat_type() != fatfs::FatType::Fat32 {
        return Err(FatError::InvalidSize {
            size: spec.size,
            reason: "fatfs did not produce FAT32".to_string(),
        });
    }
    let root = fs.root_dir();
    for d in &plan.dirs {
        let path = d.join("/");
        let ctx = || format!("creating directory {path} in the ESP");
        if root.open_dir(&path).is_ok() {
            return Err(FatError::DuplicatePath {
                path: path.clone(),
                other: "an existing entry with the same long or 8.3 name".to_string(),
            });
        }
        root.create_dir(&path).map_err(io_err(ctx()))?;
    }
    let mut files = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let sha256 = copy_file(&root, f)?;
        files.push(EspEntry {
            path: f.path(),
            size: f.size,
            sha256,
        });
    }
    drop(root);
    let reserved_files: Vec<&PlannedFile<'_>> = plan
        .files
        .iter()
        .filter(|f| matches!(f.source, EspSource::Reserved(_)))
        .collect();
    let (stats, label, reserved) = if reserved_files.iter().all(|f| f.size == 0) {
        let stats = fs.stats().map_err(io_err("counting free clusters"))?;
        let label = fs.volume_label();
        fs.unmount().map_err(io_err("unmounting the ESP"))?;
        let reserved = reserved_files
            .iter()
            .map(|f| ReservedFile {
                path: f.path(),
                size: 0,
                start: spec.size,
            })
            .collect();
        (stats, label, reserved)
    } else {
        fs.unmount().map_err(io_err("unmounting the ESP"))?;
        write_reserved(&mut slice, &g, spec.size, &reserved_files)?
    };
    fix_directories(&mut slice, &g).map_err(io_err("fixing the '.' and '..' entries"))?;
    slice.flush().map_err(io_err("writing the ESP"))?;

    Ok(EspReport {
        size: spec.size,
        volume_id: spec.volume_id,
        label,
        cluster_size: stats.cluster_size(),
        total_clusters: stats.total_clusters(),
        free_clusters: stats.free_clusters(),
        files,
        reserved,
    })
}

/// Byte offset of `FSI_Nxt_Free`, the next-free-cluster hint, in the
/// FSInfo sector (FAT spec, 'FAT32 FSInfo Sector Structure'); `fatfs` puts
/// FSInfo in sector 1.
const FSINFO_NEXT_FREE: u64 = SECTOR_SIZE + 492;

/// Gives the [`EspSource::Reserved`] files (already created, empty, in
/// write order) their clusters: the last ones of the filesystem, one
/// contiguous run per file, in order. `fatfs` allocates from the FSInfo
/// next-free hint, so the hint is pointed at the first of those clusters
/// for one more mount, then put back. The clusters are written as zeros.
fn write_reserved(
    slice: &mut FileSlice<'_>,
    g: &Geometry,
    size: u64,
    files: &[&PlannedFile<'_>],
) -> Result<(fatfs::FileSystemStats, String, Vec<ReservedFile>), FatError> {
    let ctx = "placing the reserved files at the end of the ESP";
    let cluster = g.cluster_size();
    let needed: u64 = files.iter().map(|f| f.size.div_ceil(cluster)).sum();
    // Clusters are numbered from 2 (FAT spec, 'FAT Data Structure').
    let end = g.clusters + 2;
    let first = end
        .checked_sub(needed)
        .filter(|&c| c > u64::from(ROOT_CLUSTER))
        .ok_or_else(|| io_err(ctx)(io::Error::other("more clusters reserved than exist")))?;
    // The plan checked the space; what the other files took lies at the
    // start, so the run must be free. Check it rather than trust it.
    let mut fat = vec![0u8; (4 * needed) as usize];
    read_at(
        slice,
        FATFS_RESERVED_SECTORS * SECTOR_SIZE + 4 * first,
        &mut fat,
    )
    .map_err(io_err(ctx))?;
    if fat.iter().any(|&b| b != 0) {
        return Err(io_err(ctx)(io::Error::other(format!(
            "clusters {first}..{end} are not free"
        ))));
    }
    let mut hint = [0u8; 4];
    read_at(slice, FSINFO_NEXT_FREE, &mut hint).map_err(io_err(ctx))?;
    write_at(slice, FSINFO_NEXT_FREE, &(first as u32).to_le_bytes()).map_err(io_err(ctx))?;
    // fatfs reads the boot sector from the current position.
    slice.seek(SeekFrom::Start(0)).map_err(io_err(ctx))?;

    let fs = fatfs::FileSystem::new(&mut *slice, fs_options())
        .map_err(io_err("mounting the ESP again"))?;
    let root = fs.root_dir();
    let zeros = vec![0u8; COPY_BUF];
    for f in files {
        let path = f.path();
        let mut out = root
            .open_file(&path)
            .map_err(io_err(format!("reserving {path} in the ESP")))?;
        let mut left = f.size;
        while left > 0 {
            let n = left.min(COPY_BUF as u64) as usize;
            out.write_all(&zeros[..n])
                .map_err(io_err(format!("reserving {path} in the ESP")))?;
            left -= n as u64;
        }
        out.flush()
            .map_err(io_err(format!("reserving {path} in the ESP")))?;
    }
    drop(root);
    let stats = fs.stats().map_err(io_err("counting free clusters"))?;
    let label = fs.volume_label();
    fs.unmount().map_err(io_err("unmounting the ESP"))?;
    // The hint as it was after the other files (fatfs left it past the
    // last cluster).
    write_at(slice, FSINFO_NEXT_FREE, &hint).map_err(io_err(ctx))?;

    // Each file must hold exactly its run of clusters.
    let mut at = first as u32;
    let mut reserved = Vec::with_capacity(files.len());
    for f in files {
        let n = f.size.div_ceil(cluster) as u32;
        if n == 0 {
            reserved.push(ReservedFile {
                path: f.path(),
                size: 0,
                start: size,
            });
            continue;
        }
        let chain = cluster_chain(slice, g, at).map_err(io_err(ctx))?;
        if !chain.iter().copied().eq(at..at + n) {
            return Err(io_err(ctx)(io::Error::other(format!(
                "{} did not get clusters {at}..{}",
                f.path(),
                at + n
            ))));
        }
        reserved.push(ReservedFile {
            path: f.path(),
            size: f.size,
            start: cluster_offset(g, at),
        });
        at += n;
    }
    Ok((stats, label, reserved))
}

/// Writes the content of an [`EspSource::Reserved`] file of the ESP that
/// [`write_esp`] wrote at `offset` of `file`, and records its digest in
/// `report`. Only the file's own clusters are written: the bytes before
/// [`EspReport::reserved_start`] stay as they are. `content` must have
/// exactly the reserved size.
pub fn fill_reserved(
    file: &File,
    offset: u64,
    report: &mut EspReport,
    path: &str,
    content: &[u8],
) -> Result<(), FatError> {
    let Some(r) = report.reserved.iter().find(|r| r.path == path) else {
        return Err(FatError::NotFound {
            path: path.to_string(),
        });
    };
    if content.len() as u64 != r.size {
        return Err(FatError::ReservedSize {
            path: path.to_string(),
            reserved: r.size,
            given: content.len() as u64,
        });
    }
    file.write_all_at(content, offset + r.start)
        .map_err(io_err(format!("writing {path} into the ESP")))?;
    for e in report.files.iter_mut().filter(|e| e.path == path) {
        e.sha256 = hex(&Sha256::digest(content));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading: our own reader (see its module documentation).

mod reader;
pub use reader::{read_esp, read_esp_file};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_date_command() {
        // Expected values from `date -u -d @N`.
        let t = fat_date_time(1_700_000_000); // Tue Nov 14 22:13:20 UTC 2023
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let t = fat_date_time(951_825_601); // Tue Feb 29 12:00:01 UTC 2000
        assert_eq!((t.date.year, t.date.month, t.date.day), (2000, 2, 29));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (12, 0, 0));
        let t = fat_date_time(0);
        assert_eq!((t.date.year, t.date.month, t.date.day), (1980, 1, 1));
        let t = fat_date_time(i64::MAX);
        assert_eq!((t.date.year, t.date.month, t.date.day), (2107, 12, 31));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (23, 59, 58));
    }

    #[test]
    fn cluster_table_and_min_size() {
        assert_eq!(
            fat32_geometry(DEFAULT_ESP_SIZE)
                .unwrap()
                .sectors_per_cluster,
            1
        );
        assert_eq!(fat32_geometry(64 << 20).unwrap().sectors_per_cluster, 1);
        assert_eq!(fat32_geometry(1 << 30).unwrap().sectors_per_cluster, 8);
        let min = fat32_min_size();
        assert!(fat32_geometry(min).is_ok());
        assert!(matches!(
            fat32_geometry(min - SECTOR_SIZE),
            Err(FatError::TooSmallForFat32 { .. })
        ));
    }

    #[test]
    fn spec_clock_is_scoped() {
        use fatfs::TimeProvider;
        let epoch = SPEC_CLOCK.get_current_date_time();
        {
            let _g = ClockGuard::set(fat_date_time(1_700_000_000));
            assert_eq!(SPEC_CLOCK.get_current_date().year, 2023);
        }
        assert_eq!(SPEC_CLOCK.get_current_date_time(), epoch);
        assert_eq!(epoch.date.year, 1980);
    }
}
