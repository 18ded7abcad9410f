//! Reading a FAT filesystem back (`inspect`, tests): our own code, because
//! the images read are untrusted and `fatfs` 0.3 trusts them (a directory
//! entry naming cluster 0 or 1 makes it subtract with overflow; a cyclic
//! directory chain makes it loop forever).
//!
//! FAT12, FAT16 and FAT32 are read as the FAT spec describes them ('Boot
//! Sector and BPB', 'FAT Data Structure', 'FAT Directory Structure', 'FAT
//! Long Directory Entries'). Everything is checked before it is used:
//! every cluster number, every chain (no loops, no clusters shared by two
//! files or directories, long enough for the file's size), and every read
//! stays inside the filesystem's byte range. So a listing reads each
//! cluster at most once and nothing can make it run away.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::raw::{ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_VOLUME_ID, DIR_ENTRY_FREE, DIR_ENTRY_SIZE};
use super::{EspEntry, EspListing, FatError, FatKind, hex};

/// Directory depth at which [`read_esp`] gives up (guards against loops in
/// corrupt images).
const MAX_DEPTH: usize = 64;

/// Marks the last long-name entry of a set: the first stored (FAT spec,
/// 'FAT Long Directory Entries', `LDIR_Ord`).
const LAST_LONG_ENTRY: u8 = 0x40;
/// `DIR_NTRes` flags (set by Windows NT and mtools) for an 8.3 name whose
/// base, or extension, is all lower case.
const NTRES_LOWER_BASE: u8 = 0x08;
const NTRES_LOWER_EXT: u8 = 0x10;
/// Bytes read at once from a file.
const CHUNK: usize = 1 << 20;

fn corrupt(what: impl Into<String>) -> FatError {
    FatError::Io {
        context: "reading the ESP".into(),
        source: io::Error::new(io::ErrorKind::InvalidData, what.into()),
    }
}

fn entry_cluster(entry: &[u8]) -> u32 {
    // DIR_FstClusHI @20, DIR_FstClusLO @26 (FAT spec, 'FAT Directory Structure').
    u32::from(le16(entry, 20)) << 16 | u32::from(le16(entry, 26))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

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
        let mut bs = [0u8; 512];
        v.read(0, &mut bs)?;
        if bs[510..512] != [0x55, 0xAA] {
            return Err(corrupt("no boot sector signature (0x55 0xAA at byte 510)"));
        }
        // FAT spec, 'Boot Sector and BPB'.
        let bytes_per_sector = u64::from(le16(&bs, 11));
        let sectors_per_cluster = u64::from(bs[13]);
        let reserved = u64::from(le16(&bs, 14));
        let fats = u64::from(bs[16]);
        let root_entries = u64::from(le16(&bs, 17));
        let total = match le16(&bs, 19) {
            0 => u64::from(le32(&bs, 32)),
            n => u64::from(n),
        };
        let fat_sectors = match le16(&bs, 22) {
            0 => u64::from(le32(&bs, 36)),
            n => u64::from(n),
        };
        if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) {
            return Err(corrupt(format!("{bytes_per_sector} bytes per sector")));
        }
        if !sectors_per_cluster.is_power_of_two() || sectors_per_cluster > 128 {
            return Err(corrupt(format!(
                "{sectors_per_cluster} sectors per cluster"
            )));
        }
        if reserved == 0 || fats == 0 || fat_sectors == 0 {
            return Err(corrupt("no reserved sectors, no FAT or an empty FAT"));
        }
        let root_sectors = (root_entries * DIR_ENTRY_SIZE).div_ceil(bytes_per_sector);
        let first_data = reserved + fats * fat_sectors + root_sectors;
        if total <= first_data || total * bytes_per_sector > len {
            return Err(corrupt(format!(
                "{total} sectors of {bytes_per_sector} bytes do not fit the \
                 {len}-byte range with data after sector {first_data}"
            )));
        }
        let clusters = (total - first_data) / sectors_per_cluster;
        // FAT spec, 'FAT Type Determination'.
        v.kind = match clusters {
            0..4085 => FatKind::Fat12,
            4085..65525 => FatKind::Fat16,
            _ => FatKind::Fat32,
        };
        let (id_at, label_at) = if v.kind == FatKind::Fat32 {
            if root_entries != 0 || le16(&bs, 22) != 0 {
                return Err(corrupt(
                    "FAT32 with a fixed root directory or a 16-bit FAT size",
                ));
            }
            v.root_cluster = le32(&bs, 44);
            (67, 71)
        } else {
            (39, 43)
        };
        v.volume_id = le32(&bs, id_at);
        v.label = String::from_utf8_lossy(&bs[label_at..label_at + 11])
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
            return Err(corrupt(format!(
                "a FAT of {fat_len} bytes cannot map {clusters} clusters"
            )));
        }
        // Inside the range: it ends before the data, which ends inside.
        let mut fat = vec![0u8; fat_len as usize];
        v.read(reserved * bytes_per_sector, &mut fat)?;
        v.fat = fat;
        v.clusters = u32::try_from(clusters).map_err(|_| corrupt("too many clusters"))?;
        v.seen = vec![0u64; (clusters as usize + 2).div_ceil(64)];
        if v.kind == FatKind::Fat32 && !v.is_cluster(v.root_cluster) {
            return Err(corrupt(format!(
                "root directory at cluster {}",
                v.root_cluster
            )));
        }
        Ok(v)
    }

    /// Reads `buf.len()` bytes at `pos` of the volume.
    fn read(&self, pos: u64, buf: &mut [u8]) -> Result<(), FatError> {
        if pos
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(corrupt(format!(
                "a read at byte {pos} runs past the filesystem"
            )));
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

    /// The FAT entry of cluster `c`: `None` at the end of a chain.
    fn next(&self, c: u32) -> Result<Option<u32>, FatError> {
        let c64 = u64::from(c);
        let at = |i: u64| self.fat.get(i as usize).copied().map_or(0, u32::from);
        let (value, eoc, bad) = match self.kind {
            FatKind::Fat12 => {
                let i = c64 + c64 / 2;
                let v = at(i) | at(i + 1) << 8;
                let v = if c % 2 == 1 { v >> 4 } else { v & 0xFFF };
                (v, 0xFF8, 0xFF7)
            }
            FatKind::Fat16 => (at(2 * c64) | at(2 * c64 + 1) << 8, 0xFFF8, 0xFFF7),
            FatKind::Fat32 => {
                let v = (0..4).fold(0, |v, k| v | at(4 * c64 + k) << (8 * k));
                (v & 0x0FFF_FFFF, 0x0FFF_FFF8, 0x0FFF_FFF7)
            }
        };
        if value >= eoc {
            return Ok(None);
        }
        if value == bad || !self.is_cluster(value) {
            return Err(corrupt(format!("cluster {c} is followed by {value:#x}")));
        }
        Ok(Some(value))
    }

    /// The chain from `first`, at most `limit` clusters long, each cluster
    /// claimed for this chain alone.
    fn chain(&mut self, first: u32, limit: u64) -> Result<Vec<u32>, FatError> {
        let mut chain = Vec::new();
        let mut c = Some(first);
        while let Some(cluster) = c {
            if chain.len() as u64 >= limit {
                break;
            }
            if !self.is_cluster(cluster) {
                return Err(corrupt(format!("a chain names cluster {cluster}")));
            }
            let (word, bit) = (cluster as usize / 64, cluster % 64);
            if self.seen[word] & (1 << bit) != 0 {
                return Err(corrupt(format!(
                    "cluster {cluster} is used twice (a loop or a cross-link)"
                )));
            }
            self.seen[word] |= 1 << bit;
            chain.push(cluster);
            c = self.next(cluster)?;
        }
        Ok(chain)
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_start + u64::from(c - 2) * self.cluster_size
    }

    /// The raw entries of a directory (`None`: the root).
    fn dir_bytes(&mut self, first: Option<u32>) -> Result<Vec<u8>, FatError> {
        let clusters = match (first, self.kind) {
            (None, FatKind::Fat12 | FatKind::Fat16) => {
                let (at, entries) = self.root_dir;
                let mut buf = vec![0u8; (entries * DIR_ENTRY_SIZE) as usize];
                self.read(at, &mut buf)?;
                return Ok(buf);
            }
            (None, FatKind::Fat32) => self.chain(self.root_cluster, u64::MAX)?,
            (Some(c), _) => self.chain(c, u64::MAX)?,
        };
        let mut buf = vec![0u8; clusters.len() * self.cluster_size as usize];
        for (i, &c) in clusters.iter().enumerate() {
            let at = i * self.cluster_size as usize;
            self.read(
                self.cluster_offset(c),
                &mut buf[at..at + self.cluster_size as usize],
            )?;
        }
        Ok(buf)
    }

    /// Feeds the content of a file to `sink`, chunk by chunk.
    fn read_file(&mut self, entry: &Entry, sink: &mut dyn FnMut(&[u8])) -> Result<(), FatError> {
        if entry.size == 0 {
            return Ok(());
        }
        let needed = entry.size.div_ceil(self.cluster_size);
        let chain = self.chain(entry.cluster, needed)?;
        if (chain.len() as u64) < needed {
            return Err(corrupt(format!(
                "{} is {} bytes but its chain holds {} clusters",
                entry.name,
                entry.size,
                chain.len()
            )));
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
fn short_name(e: &[u8]) -> String {
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
    let mut base = e[..8].to_vec();
    // 0x05 stands for a leading 0xE5.
    if base[0] == 0x05 {
        base[0] = DIR_ENTRY_FREE;
    }
    let base = lower(&base, e[12] & NTRES_LOWER_BASE != 0);
    let ext = lower(&e[8..11], e[12] & NTRES_LOWER_EXT != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// The checksum of an 8.3 name that long-name entries carry (FAT spec,
/// 'FAT Long Directory Entries').
fn short_checksum(e: &[u8]) -> u8 {
    e[..11]
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// The entries of a directory, in order, without `.`, `..`, deleted
/// entries and the volume label. Long names whose order or checksum does
/// not match their short entry are dropped (the 8.3 name stands), as the
/// FAT spec asks.
fn entries(raw: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    // Pending long name: expected next ordinal, checksum, UTF-16 pieces by ordinal.
    let mut long: Option<(u8, u8, Vec<Vec<u16>>)> = None;
    for e in raw.chunks_exact(DIR_ENTRY_SIZE as usize) {
        if e[0] == 0 {
            break;
        }
        if e[0] == DIR_ENTRY_FREE {
            long = None;
            continue;
        }
        if e[11] & 0x3F == ATTR_LONG_NAME {
            let ord = e[0] & 0x1F;
            let units: Vec<u16> = [1..11, 14..26, 28..32]
                .into_iter()
                .flat_map(|r| {
                    e[r].chunks_exact(2)
                        .map(|p| u16::from_le_bytes([p[0], p[1]]))
                        .collect::<Vec<_>>()
                })
                .collect();
            long = match long.take() {
                _ if e[0] & LAST_LONG_ENTRY != 0 && ord > 0 => {
                    let mut parts = vec![Vec::new(); ord as usize];
                    parts[ord as usize - 1] = units;
                    Some((ord - 1, e[13], parts))
                }
                Some((expect, sum, mut parts)) if ord == expect && ord > 0 && sum == e[13] => {
                    parts[ord as usize - 1] = units;
                    Some((ord - 1, sum, parts))
                }
                _ => None,
            };
            continue;
        }
        let pending = long.take();
        if e[11] & ATTR_VOLUME_ID != 0 {
            continue;
        }
        let short = short_name(e);
        if short == "." || short == ".." {
            continue;
        }
        let name = match pending {
            Some((0, sum, parts)) if sum == short_checksum(e) => {
                let units: Vec<u16> = parts.concat().into_iter().take_while(|&u| u != 0).collect();
                String::from_utf16_lossy(&units)
            }
            _ => short.clone(),
        };
        out.push(Entry {
            name,
            short,
            is_dir: e[11] & ATTR_DIRECTORY != 0,
            cluster: entry_cluster(e),
            size: u64::from(le32(e, 28)),
        });
    }
    out
}

/// Lists every file (path, size, SHA-256) and directory of the FAT
/// filesystem in `[offset, offset + len)` of `file`.  Nothing is written.
/// A filesystem that is not consistent (see the module documentation) is
/// an error.
pub fn read_esp(file: &File, offset: u64, len: u64) -> Result<EspListing, FatError> {
    let mut v = Volume::open(file, offset, len)?;
    let mut listing = EspListing {
        fat_type: v.kind,
        volume_id: v.volume_id,
        label: v.label.clone(),
        cluster_size: u32::try_from(v.cluster_size).map_err(|_| corrupt("cluster size"))?,
        directories: Vec::new(),
        files: Vec::new(),
    };
    // Directories to list: first cluster (None: root), path, depth.
    let mut todo: Vec<(Option<u32>, String, usize)> = vec![(None, String::new(), 0)];
    while let Some((first, prefix, depth)) = todo.pop() {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!(
                "directories nested deeper than {MAX_DEPTH}"
            )));
        }
        let raw = v.dir_bytes(first)?;
        for e in entries(&raw) {
            let path = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            if e.is_dir {
                if !v.is_cluster(e.cluster) {
                    return Err(corrupt(format!(
                        "directory {path} at cluster {}",
                        e.cluster
                    )));
                }
                listing.directories.push(path.clone());
                todo.push((Some(e.cluster), path, depth + 1));
            } else {
                let mut h = Sha256::new();
                v.read_file(&e, &mut |b| h.update(b))?;
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
    for (i, part) in parts.iter().enumerate() {
        let raw = v.dir_bytes(dir)?;
        let found = entries(&raw).into_iter().find(|e| {
            e.name.to_uppercase() == part.to_uppercase()
                || e.short.to_uppercase() == part.to_uppercase()
        });
        let Some(e) = found else {
            return Err(not_found());
        };
        let last = i + 1 == parts.len();
        match (last, e.is_dir) {
            (false, true) => {
                if !v.is_cluster(e.cluster) {
                    return Err(corrupt(format!(
                        "directory {part} at cluster {}",
                        e.cluster
                    )));
                }
                dir = Some(e.cluster);
            }
            (true, false) => {
                let mut out = Vec::new();
                v.read_file(&e, &mut |b| out.extend_from_slice(b))?;
                return Ok(out);
            }
            _ => return Err(not_found()),
        }
    }
    Err(not_found())
}
