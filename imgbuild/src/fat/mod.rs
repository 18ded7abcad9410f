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
//!
//! # Layers
//!
//! [`raw`] holds the on-disk structures (boot sector, BPB, FSInfo,
//! directory and long-name entries) that both the post-pass after `fatfs`
//! and the reader use. Writing is [`write_esp`] in `write` over `plan`
//! (the spec checked before anything is written), `geometry` (the layout
//! `fatfs` will produce), [`FileSlice`] in `slice` (the cached byte range
//! `fatfs` writes through), `clock` (the spec's time as `fatfs`'s clock),
//! `fixup` (what `fatfs` cannot be told) and `reserved` (room for content
//! known only later, filled by [`fill_reserved`]). Reading is `reader`,
//! which shares nothing with `fatfs`. Errors are [`FatError`].

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod clock;
mod error;
mod fixup;
mod geometry;
mod plan;
pub mod raw;
mod reader;
mod reserved;
mod slice;
mod write;

pub(crate) use clock::civil_from_days;
pub use error::FatError;
pub use reader::{read_esp, read_esp_file};
pub use reserved::fill_reserved;
pub use slice::FileSlice;
pub use write::write_esp;

/// Bytes per sector.  `fatfs` and this module use 512, the value every
/// UEFI firmware accepts (FAT spec, 'Boot Sector and BPB', `BPB_BytsPerSec`).
pub const SECTOR_SIZE: u64 = 512;

/// The default ESP size: 256 MiB.
pub const DEFAULT_ESP_SIZE: u64 = 256 << 20;

/// The largest file FAT can hold: `DIR_FileSize` is a 32-bit field
/// (FAT spec, 'FAT Directory Structure'), so 4 GiB - 1 bytes.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// Unix time of 1980-01-01 00:00:00 UTC, the earliest FAT date
/// (FAT spec, 'FAT Directory Structure', Date and Time Formats:
/// year 0 is 1980).
pub const FAT_EPOCH_UNIX: i64 = 315_532_800;

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

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
