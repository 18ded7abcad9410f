//! Reading a FAT filesystem back (`inspect`, tests): our own code, because
//! the images read are untrusted and `fatfs` 0.3 trusts them (a directory
//! entry naming cluster 0 or 1 makes it subtract with overflow; a cyclic
//! directory chain makes it loop forever).
//!
//! FAT12, FAT16 and FAT32 are read as the FAT spec describes them ('Boot
//! Sector and BPB', 'FAT Data Structure', 'FAT Directory Structure', 'FAT
//! Long Directory Entries'), through the structs of [`super::raw`].
//! Everything is checked before it is used: every cluster number, every
//! chain (no loops, no clusters shared by two files or directories, long
//! enough for the file's size), and every read stays inside the
//! filesystem's byte range. So a listing reads each cluster at most once
//! and nothing can make it run away. What is wrong is reported by name: the
//! boot sector field, or the file or directory whose entry or chain it is.

use std::fs::File;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};
use zerocopy::{FromZeros, IntoBytes};

use super::raw::{
    ATTR_DIRECTORY, ATTR_VOLUME_ID, BOOT_SIGNATURE, BootSectorFat16, BootSectorFat32,
    DIR_ENTRY_END, DIR_ENTRY_FREE, DIR_ENTRY_KANJI_E5, DIR_ENTRY_SIZE, DirEntry,
    ExtendedBootRecord, FAT12_EOC_MIN, FAT16_EOC_MIN, FAT32_ENTRY_MASK, FAT32_EOC_MIN,
    LAST_LONG_ENTRY, LFN_CHARS_PER_ENTRY, LONG_ENTRY_ORDINAL_MASK, LongNameEntry, NTRES_LOWER_BASE,
    NTRES_LOWER_EXT,
};
use super::{EspEntry, EspListing, FatError, FatKind, hex};

/// Directory depth at which the reader gives up (guards against loops in
/// corrupt images).
const MAX_DEPTH: usize = 64;

/// Bytes read at once from a file.
const CHUNK: usize = 1 << 20;

/// A checked FAT volume in `[offset, offset + len)` of a file.
struct Volume<'f> {
    file: &'f File,
    offset: u64,
    len: u64,
    kind: FatKind,
    volume_id: u32,
    label: String,
    /// Bytes per cluster.
    cluster_size: u64,
    /// The first FAT, read once.
    fat: Vec<u8>,
    /// FAT12/16: byte offset and entry count of the fixed root directory.
    root_dir: (u64, u64),
    /// FAT32: the root directory's first cluster.
    root_cluster: u32,
    /// Byte offset of cluster 2.
    data_start: u64,
    /// Number of data clusters (numbered 2..clusters + 2).
    clusters: u32,
    /// Clusters already used by a file or directory read so far.
    seen: Vec<u64>,
}

/// A BPB field that is out of range.
fn bad_field(field: &'static str, value: u64, reason: impl Into<String>) -> FatError {
    FatError::BadBootSector {
        field,
        value,
        reason: reason.into(),
    }
}

impl<'f> Volume<'f> {
    fn open(file: &'f File, offset: u64, len: u64) -> Result<Self, FatError> {
        let file_len = file
            .metadata()
            .map_err(|e| FatError::Io {
                context: "reading the image file's length".into(),
                source: e,
            })?
            .len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(FatError::OutOfRange {
                offset,
                len,
                file_len,
            });
        }
        let mut v = Volume {
            file,
            offset,
            len,
            kind: FatKind::Fat32,
            volume_id: 0,
            label: String::new(),
            cluster_size: 0,
            fat: Vec::new(),
            root_dir: (0, 0),
            root_cluster: 0,
            data_start: 0,
            clusters: 0,
            seen: Vec::new(),
        };
        // Read as FAT32; the BPB common to all three types comes first, so
        // the type can be determined before the rest is looked at.
        let mut bs = BootSectorFat32::new_zeroed();
        v.read(0, bs.as_mut_bytes())?;
        if bs.signature != BOOT_SIGNATURE {
            return Err(FatError::NoBootSignature {
                found: bs.signature,
            });
        }
        let bpb = &bs.bpb;
        let bytes_per_sector = u64::from(bpb.bytes_per_sector.get());
        let sectors_per_cluster = u64::from(bpb.sectors_per_cluster);
        let reserved = u64::from(bpb.reserved_sectors.get());
        let fats = u64::from(bpb.num_fats);
        let root_entries = u64::from(bpb.root_entries.get());
        let (total_field, total) = match bpb.total_sectors_16.get() {
            0 => ("BPB_TotSec32", u64::from(bpb.total_sectors_32.get())),
            n => ("BPB_TotSec16", u64::from(n)),
        };
        let (fat_size_field, fat_sectors) = match bpb.fat_size_16.get() {
            0 => ("BPB_FATSz32", u64::from(bs.fat32.fat_size_32.get())),
            n => ("BPB_FATSz16", u64::from(n)),
        };
        if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) {
            return Err(bad_field(
                "BPB_BytsPerSec",
                bytes_per_sector,
                "not 512, 1024, 2048 or 4096",
            ));
        }
        if !sectors_per_cluster.is_power_of_two() || sectors_per_cluster > 128 {
            return Err(bad_field(
                "BPB_SecPerClus",
                sectors_per_cluster,
                "not a power of two from 1 to 128",
            ));
        }
        if reserved == 0 {
            return Err(bad_field("BPB_RsvdSecCnt", 0, "no reserved sectors"));
        }
        if fats == 0 {
            return Err(bad_field("BPB_NumFATs", 0, "no FAT"));
        }
        if fat_sectors == 0 {
            return Err(bad_field(fat_size_field, 0, "an empty FAT"));
        }
        let root_sectors = (root_entries * DIR_ENTRY_SIZE).div_ceil(bytes_per_sector);
        let first_data = reserved + fats * fat_sectors + root_sectors;
        if total <= first_data {
            return Err(bad_field(
                total_field,
                total,
                format!(
                    "no data sectors after the reserved sectors, FATs and root directory, \
                     which end at sector {first_data}"
                ),
            ));
        }
        if total * bytes_per_sector > len {
            return Err(bad_field(
                total_field,
                total,
                format!("{bytes_per_sector}-byte sectors do not fit the {len}-byte range"),
            ));
        }
        let clusters = (total - first_data) / sectors_per_cluster;
        // FAT spec, 'FAT Type Determination'.
        v.kind = match clusters {
            0..4085 => FatKind::Fat12,
            4085..65525 => FatKind::Fat16,
            _ => FatKind::Fat32,
        };
        let ebr: &ExtendedBootRecord = if v.kind == FatKind::Fat32 {
            if root_entries != 0 {
                return Err(bad_field(
                    "BPB_RootEntCnt",
                    root_entries,
                    "not 0 on FAT32, which has no fixed root directory",
                ));
            }
            if fat_size_field != "BPB_FATSz32" {
                return Err(bad_field(
                    "BPB_FATSz16",
                    fat_sectors,
                    "not 0 on FAT32, whose FAT size is BPB_FATSz32",
                ));
            }
            v.root_cluster = bs.fat32.root_cluster.get();
            &bs.ebr
        } else {
            let bs16: &BootSectorFat16 = zerocopy::transmute_ref!(&bs);
            &bs16.ebr
        };
        v.volume_id = ebr.volume_id.get();
        v.label = String::from_utf8_lossy(&ebr.volume_label)
            .trim_end()
            .to_owned();
        v.cluster_size = bytes_per_sector * sectors_per_cluster;
        let fat_len = fat_sectors * bytes_per_sector;
        v.root_dir = (
            (reserved + fats * fat_sectors) * bytes_per_sector,
            root_entries,
        );
        v.data_start = first_data * bytes_per_sector;
        // Bits per entry: 12, 16 or 28 used of 32.
        let entry_bits: u64 = match v.kind {
            FatKind::Fat12 => 12,
            FatKind::Fat16 => 16,
            FatKind::Fat32 => 32,
        };
        if (clusters + 2) * entry_bits > fat_len * 8 {
            return Err(bad_field(
                fat_size_field,
                fat_sectors,
                format!("a FAT of {fat_len} bytes cannot map {clusters} clusters"),
            ));
        }
        // Inside the range: it ends before the data, which ends inside.
        let mut fat = vec![0u8; fat_len as usize];
        v.read(reserved * bytes_per_sector, &mut fat)?;
        v.fat = fat;
        // Below 2^32 - 2: the total sector count is 32 bits and the
        // reserved sectors and a FAT come first.
        v.clusters = u32::try_from(clusters)
            .map_err(|_| bad_field(total_field, total, "too many clusters"))?;
        v.seen = vec![0u64; (clusters as usize + 2).div_ceil(64)];
        if v.kind == FatKind::Fat32 && !v.is_cluster(v.root_cluster) {
            return Err(bad_field(
                "BPB_RootClus",
                u64::from(v.root_cluster),
                format!("not a data cluster (2..={})", v.last_cluster()),
            ));
        }
        Ok(v)
    }

    /// Reads `buf.len()` bytes at `pos` of the volume.
    fn read(&self, pos: u64, buf: &mut [u8]) -> Result<(), FatError> {
        if pos
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(FatError::PastEnd {
                at: pos,
                len: buf.len() as u64,
                size: self.len,
            });
        }
        self.file
            .read_exact_at(buf, self.offset + pos)
            .map_err(|e| FatError::Io {
                context: "reading the ESP".into(),
                source: e,
            })
    }

    fn is_cluster(&self, c: u32) -> bool {
        (2..self.clusters + 2).contains(&c)
    }

    /// The highest data cluster number.
    fn last_cluster(&self) -> u32 {
        self.clusters + 1
    }

    /// The FAT entry of cluster `c` of `path`'s chain: `None` at the end of
    /// the chain.
    fn next(&self, path: &str, c: u32) -> Result<Option<u32>, FatError> {
        let c64 = u64::from(c);
        let at = |i: u64| self.fat.get(i as usize).copied().map_or(0, u32::from);
        // FAT spec, 'FAT Data Structure': 12-bit entries packed in pairs,
        // 16-bit entries, 32-bit entries with 28 bits used.
        let (value, eoc) = match self.kind {
            FatKind::Fat12 => {
                let i = c64 + c64 / 2;
                let v = at(i) | at(i + 1) << 8;
                let v = if c % 2 == 1 { v >> 4 } else { v & 0xFFF };
                (v, FAT12_EOC_MIN)
            }
            FatKind::Fat16 => (at(2 * c64) | at(2 * c64 + 1) << 8, FAT16_EOC_MIN),
            FatKind::Fat32 => {
                let v = (0..4).fold(0, |v, k| v | at(4 * c64 + k) << (8 * k));
                (v & FAT32_ENTRY_MASK, FAT32_EOC_MIN)
            }
        };
        if value >= eoc {
            return Ok(None);
        }
        // The value just below end-of-chain marks a bad cluster; it is
        // never a data cluster, since the FAT type caps the count below it.
        if value == eoc - 1 || !self.is_cluster(value) {
            return Err(FatError::BadFatEntry {
                path: path.to_string(),
                cluster: c,
                value,
                last: self.last_cluster(),
            });
        }
        Ok(Some(value))
    }

    /// The chain of `path` from `first`, at most `limit` clusters long,
    /// each cluster claimed for this chain alone.
    fn chain(&mut self, path: &str, first: u32, limit: u64) -> Result<Vec<u32>, FatError> {
        if !self.is_cluster(first) {
            return Err(FatError::EntryCluster {
                path: path.to_string(),
                cluster: first,
                last: self.last_cluster(),
            });
        }
        let mut chain = Vec::new();
        let mut c = Some(first);
        while let Some(cluster) = c {
            if chain.len() as u64 >= limit {
                break;
            }
            let (word, bit) = (cluster as usize / 64, cluster % 64);
            if self.seen[word] & (1 << bit) != 0 {
                let path = path.to_string();
                return Err(if chain.contains(&cluster) {
                    FatError::ChainLoop { path, cluster }
                } else {
                    FatError::CrossLinked { path, cluster }
                });
            }
            self.seen[word] |= 1 << bit;
            chain.push(cluster);
            c = self.next(path, cluster)?;
        }
        Ok(chain)
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_start + u64::from(c - 2) * self.cluster_size
    }

    /// The entries of the directory at `path` (`None`: the root), read
    /// straight into their structs.
    fn dir_entries(&mut self, path: &str, first: Option<u32>) -> Result<Vec<DirEntry>, FatError> {
        let clusters = match (first, self.kind) {
            (None, FatKind::Fat12 | FatKind::Fat16) => {
                let (at, count) = self.root_dir;
                let mut entries = vec![DirEntry::new_zeroed(); count as usize];
                self.read(at, entries.as_mut_bytes())?;
                return Ok(entries);
            }
            (None, FatKind::Fat32) => self.chain(path, self.root_cluster, u64::MAX)?,
            (Some(c), _) => self.chain(path, c, u64::MAX)?,
        };
        let per_cluster = (self.cluster_size / DIR_ENTRY_SIZE) as usize;
        let mut entries = vec![DirEntry::new_zeroed(); clusters.len() * per_cluster];
        for (piece, &c) in entries.chunks_mut(per_cluster).zip(&clusters) {
            self.read(self.cluster_offset(c), piece.as_mut_bytes())?;
        }
        Ok(entries)
    }

    /// Feeds the content of the file at `path` to `sink`, chunk by chunk.
    fn read_file(
        &mut self,
        path: &str,
        entry: &Entry,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), FatError> {
        if entry.size == 0 {
            return Ok(());
        }
        let needed = entry.size.div_ceil(self.cluster_size);
        let chain = self.chain(path, entry.cluster, needed)?;
        if (chain.len() as u64) < needed {
            return Err(FatError::ChainTooShort {
                path: path.to_string(),
                size: entry.size,
                clusters: chain.len() as u64,
                cluster_size: self.cluster_size,
            });
        }
        let mut buf = vec![0u8; CHUNK.max(self.cluster_size as usize)];
        let mut left = entry.size;
        let mut i = 0;
        while left > 0 {
            // Consecutive clusters are read at once.
            let mut run = 1;
            while i + run < chain.len()
                && chain[i + run] == chain[i] + run as u32
                && (run as u64 + 1) * self.cluster_size <= buf.len() as u64
            {
                run += 1;
            }
            let n = (run as u64 * self.cluster_size).min(left) as usize;
            self.read(self.cluster_offset(chain[i]), &mut buf[..n])?;
            sink(&buf[..n]);
            left -= n as u64;
            i += run;
        }
        Ok(())
    }

    /// The first cluster of the directory at `path`, checked.
    fn dir_cluster(&self, path: &str, entry: &Entry) -> Result<u32, FatError> {
        if !self.is_cluster(entry.cluster) {
            return Err(FatError::EntryCluster {
                path: path.to_string(),
                cluster: entry.cluster,
                last: self.last_cluster(),
            });
        }
        Ok(entry.cluster)
    }
}

/// A directory entry, long name decoded.
struct Entry {
    /// The long name, or the 8.3 name when there is none.
    name: String,
    /// The 8.3 name (`NAME.EXT`, cased as `DIR_NTRes` says).
    short: String,
    is_dir: bool,
    cluster: u32,
    size: u64,
}

/// The 8.3 name of a short entry (FAT spec, 'FAT Directory Structure').
fn short_name(e: &DirEntry) -> String {
    let lower = |bytes: &[u8], yes: bool| -> String {
        bytes
            .iter()
            .map(|&b| {
                let c = char::from(b);
                if yes { c.to_ascii_lowercase() } else { c }
            })
            .collect::<String>()
            .trim_end()
            .to_owned()
    };
    let mut base = [0u8; 8];
    base.copy_from_slice(&e.name[..8]);
    if base[0] == DIR_ENTRY_KANJI_E5 {
        base[0] = DIR_ENTRY_FREE;
    }
    let base = lower(&base, e.nt_res & NTRES_LOWER_BASE != 0);
    let ext = lower(&e.name[8..], e.nt_res & NTRES_LOWER_EXT != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// A long name being gathered, last piece first (FAT spec, 'FAT Long
/// Directory Entries').
struct PendingLongName {
    /// The ordinal the next entry must have.
    expect: u8,
    /// `LDIR_Chksum` of the set.
    checksum: u8,
    /// UTF-16 units, [`LFN_CHARS_PER_ENTRY`] per piece, by ordinal.
    units: Vec<u16>,
}

/// The entries of a directory, in order, without `.`, `..`, deleted
/// entries and the volume label. Long names whose order or checksum does
/// not match their short entry are dropped (the 8.3 name stands), as the
/// FAT spec asks.
fn entries(raw: &[DirEntry]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut long: Option<PendingLongName> = None;
    for e in raw {
        if e.name[0] == DIR_ENTRY_END {
            break;
        }
        if e.name[0] == DIR_ENTRY_FREE {
            long = None;
            continue;
        }
        if e.is_long_name() {
            let l: &LongNameEntry = zerocopy::transmute_ref!(e);
            let ord = l.ord & LONG_ENTRY_ORDINAL_MASK;
            let put = |units: &mut Vec<u16>| {
                let at = (usize::from(ord) - 1) * LFN_CHARS_PER_ENTRY;
                for (slot, u) in units[at..at + LFN_CHARS_PER_ENTRY]
                    .iter_mut()
                    .zip(l.units())
                {
                    *slot = u;
                }
            };
            long = match long.take() {
                _ if l.ord & LAST_LONG_ENTRY != 0 && ord > 0 => {
                    let mut units = vec![0u16; usize::from(ord) * LFN_CHARS_PER_ENTRY];
                    put(&mut units);
                    Some(PendingLongName {
                        expect: ord - 1,
                        checksum: l.checksum,
                        units,
                    })
                }
                Some(mut p) if ord == p.expect && ord > 0 && p.checksum == l.checksum => {
                    put(&mut p.units);
                    p.expect = ord - 1;
                    Some(p)
                }
                _ => None,
            };
            continue;
        }
        let pending = long.take();
        if e.attr & ATTR_VOLUME_ID != 0 {
            continue;
        }
        let short = short_name(e);
        if short == "." || short == ".." {
            continue;
        }
        let name = match pending {
            Some(p) if p.expect == 0 && p.checksum == e.name_checksum() => {
                let units: Vec<u16> = p.units.into_iter().take_while(|&u| u != 0).collect();
                String::from_utf16_lossy(&units)
            }
            _ => short.clone(),
        };
        out.push(Entry {
            name,
            short,
            is_dir: e.attr & ATTR_DIRECTORY != 0,
            cluster: e.first_cluster(),
            size: u64::from(e.file_size.get()),
        });
    }
    out
}

/// Lists every file (path, size, SHA-256) and directory of the FAT
/// filesystem in `[offset, offset + len)` of `file`.  Nothing is written.
/// A filesystem that is not consistent (see the module documentation) is
/// an error naming what is wrong.
pub fn read_esp(file: &File, offset: u64, len: u64) -> Result<EspListing, FatError> {
    let mut v = Volume::open(file, offset, len)?;
    let mut listing = EspListing {
        fat_type: v.kind,
        volume_id: v.volume_id,
        label: v.label.clone(),
        // At most 4096 * 128 bytes (BPB_BytsPerSec, BPB_SecPerClus checked).
        cluster_size: v.cluster_size as u32,
        directories: Vec::new(),
        files: Vec::new(),
    };
    // Directories to list: first cluster (None: root), path, depth.
    let mut todo: Vec<(Option<u32>, String, usize)> = vec![(None, String::new(), 0)];
    while let Some((first, prefix, depth)) = todo.pop() {
        if depth > MAX_DEPTH {
            return Err(FatError::TooDeep {
                path: prefix,
                max: MAX_DEPTH,
            });
        }
        let raw = v.dir_entries(&prefix, first)?;
        for e in entries(&raw) {
            let path = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            if e.is_dir {
                let cluster = v.dir_cluster(&path, &e)?;
                listing.directories.push(path.clone());
                todo.push((Some(cluster), path, depth + 1));
            } else {
                let mut h = Sha256::new();
                v.read_file(&path, &e, &mut |b| h.update(b))?;
                listing.files.push(EspEntry {
                    path,
                    size: e.size,
                    sha256: hex(&h.finalize()),
                });
            }
        }
    }
    listing.directories.sort();
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// Reads the file at `path` (`/`-separated, case ignored as FAT does; long
/// or 8.3 names) from the FAT filesystem in `[offset, offset + len)` of
/// `file`.
pub fn read_esp_file(file: &File, offset: u64, len: u64, path: &str) -> Result<Vec<u8>, FatError> {
    let not_found = || FatError::NotFound {
        path: path.to_string(),
    };
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(str::is_empty) {
        return Err(not_found());
    }
    let mut v = Volume::open(file, offset, len)?;
    let parts: Vec<&str> = rel.split('/').collect();
    let mut dir: Option<u32> = None;
    // The path as stored, for errors.
    let mut at = String::new();
    for (i, part) in parts.iter().enumerate() {
        let raw = v.dir_entries(&at, dir)?;
        let found = entries(&raw).into_iter().find(|e| {
            e.name.to_uppercase() == part.to_uppercase()
                || e.short.to_uppercase() == part.to_uppercase()
        });
        let Some(e) = found else {
            return Err(not_found());
        };
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(&e.name);
        let last = i + 1 == parts.len();
        match (last, e.is_dir) {
            (false, true) => dir = Some(v.dir_cluster(&at, &e)?),
            (true, false) => {
                let mut out = Vec::new();
                v.read_file(&at, &e, &mut |b| out.extend_from_slice(b))?;
                return Ok(out);
            }
            _ => return Err(not_found()),
        }
    }
    Err(not_found())
}
