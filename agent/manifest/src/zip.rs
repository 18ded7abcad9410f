//! The deterministic directory zip of agent-api.md §2.3, byte-identical to
//! the Go CLI's `internal.ZipDirectoryToMemory`, and safe extraction.
//!
//! # What the Go CLI writes, and so do we
//!
//! The Go code walks the directory, keeps every non-directory, sorts the
//! paths bytewise, and for each calls `zip.FileInfoHeader(os.Stat(path))`,
//! sets `Name` to the relative path and `Modified` to `time.Unix(0, 0)`, and
//! `CreateHeader`. `FileInfoHeader` leaves `Method` unset, so entries are
//! **stored, not deflated** (agent-api.md §2.3 says "deflate"; the code
//! says otherwise). Per entry (APPNOTE.TXT §4.3.7, §4.3.9, §4.3.12):
//!
//! - local header: version needed 20, flags 0x0008 (data descriptor) |
//!   0x0800 when the name needs UTF-8 (Go's `detectUTF8`: a character below
//!   0x20, above 0x7d, or `\`, in a valid UTF-8 name), method 0, MS-DOS time
//!   0 and date 0xEC21 (1970-01-01 in UTC: Go computes them in the local
//!   time zone, so the Go CLI's output depends on `TZ`; we match it under
//!   `TZ=UTC`), CRC and sizes 0, and one extra field: extended timestamp
//!   (0x5455, 5 bytes, flags 1, mtime 0);
//! - the file's bytes;
//! - data descriptor: signature 0x08074b50, CRC-32, sizes (8-byte sizes
//!   when a size reaches 0xFFFFFFFF);
//! - central directory entry: version made by 0x0314 (Unix, 2.0), version
//!   needed 20 (45 for ZIP64), the same flags, time and extra, external
//!   attributes = Unix mode (S_IFREG | setuid/setgid/sticky | permissions,
//!   from `stat`, following symlinks as Go's `os.Stat` does) << 16, | 0x01
//!   (MS-DOS read-only) when the owner-write bit is clear; a ZIP64 extra
//!   (uncompressed, compressed, offset) when a size reaches 0xFFFFFFFF or the
//!   offset does;
//! - end of central directory, preceded by the ZIP64 record and locator
//!   when there are 65535 entries or more or the directory's size or
//!   offset reaches 0xFFFFFFFF.
//!
//! Only regular files, and symbolic links to regular files (followed, as Go
//! does), are archived; any other kind of entry is refused with its path
//! (Go fails on those too, less clearly, or hangs on a FIFO).
//!
//! # Extraction
//!
//! [`extract`] reads stored and deflated entries and refuses, each with its
//! own [`ExtractError`]: names with a `..` component, absolute names,
//! backslashes, NUL or empty components; symbolic links and any other
//! non-regular entry; encrypted entries; more entries or more bytes than
//! [`Limits`] allows (counted as the data inflates, not taken from the
//! headers); CRC mismatches; duplicate names. It extracts into a temporary
//! directory beside the destination and renames it into place at the end,
//! so a refused archive leaves nothing behind.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Local file header signature (APPNOTE §4.3.7).
const LOCAL_SIG: u32 = 0x0403_4b50;
/// Central directory file header signature (APPNOTE §4.3.12).
const CENTRAL_SIG: u32 = 0x0201_4b50;
/// Data descriptor signature (APPNOTE §4.3.9.3).
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
/// End of central directory signature (APPNOTE §4.3.16).
const END_SIG: u32 = 0x0605_4b50;
/// ZIP64 end of central directory record signature (APPNOTE §4.3.14).
const END64_SIG: u32 = 0x0606_4b50;
/// ZIP64 end of central directory locator signature (APPNOTE §4.3.15).
const LOC64_SIG: u32 = 0x0706_4b50;
/// Extended timestamp extra field (APPNOTE §4.6, 0x5455).
const EXT_TIME_ID: u16 = 0x5455;
/// ZIP64 extended information extra field (APPNOTE §4.5.3).
const ZIP64_ID: u16 = 0x0001;
/// 1970-01-01 as an MS-DOS date: day 1, month 1, year 1970 - 1980 = -10,
/// truncated to 16 bits as Go's `timeToMsDosTime` does.
const DOS_DATE_EPOCH: u16 = (1 + (1 << 5) + (-10i32 << 9)) as u16;
const U32_MAX: u64 = 0xFFFF_FFFF;

/// Errors of [`write_dir`] and [`zip_dir_to_vec`].
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    /// Reading the directory or a file, or writing the output.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An entry that is neither a regular file nor a symlink to one.
    #[error("{0}: not a regular file (only regular files, and symlinks to them, are archived)")]
    NotRegular(PathBuf),
    /// The argument is not a directory.
    #[error("{0}: not a directory")]
    NotDirectory(PathBuf),
    /// A name over 65535 bytes.
    #[error("{0}: name too long for zip")]
    LongName(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ZipError + '_ {
    move |source| ZipError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Regular files under `dir` (descending into real directories only), as
/// relative paths sorted bytewise — Go's `filepath.Walk` then
/// `sort.Strings`.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, ZipError> {
    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(ZipError::NotDirectory(dir.to_path_buf()));
    }
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in fs::read_dir(&abs).map_err(io_err(&abs))? {
            let entry = entry.map_err(io_err(&abs))?;
            let rel_child = rel.join(entry.file_name());
            let ty = entry.file_type().map_err(io_err(&entry.path()))?;
            if ty.is_dir() {
                stack.push(rel_child);
            } else {
                out.push(rel_child);
            }
        }
    }
    out.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok(out)
}

/// Counts the bytes written through it.
struct Counter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Counter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.count += bytes.len() as u64;
        Ok(())
    }
}

struct CentralEntry {
    name: Vec<u8>,
    flags: u16,
    crc: u32,
    size: u64,
    offset: u64,
    external: u32,
}

/// Go's `detectUTF8` → whether to set flag 0x800: the name is valid UTF-8
/// and has a character below 0x20, above 0x7d, or a backslash.
fn needs_utf8_flag(name: &[u8]) -> bool {
    match std::str::from_utf8(name) {
        Ok(s) => s
            .chars()
            .any(|c| (c as u32) < 0x20 || (c as u32) > 0x7d || c == '\\'),
        Err(_) => false,
    }
}

/// Go's `fileModeToUnixMode` for a regular file, from `st_mode`.
fn external_attrs(mode: u32) -> u32 {
    const S_IFREG: u32 = 0o100000;
    let unix = S_IFREG | (mode & 0o7777);
    let mut attrs = unix << 16;
    if mode & 0o200 == 0 {
        attrs |= 0x01; // MS-DOS read-only
    }
    attrs
}

/// Writes the deterministic zip of `dir` to `out` (see the module
/// documentation), streaming each file; returns the bytes written.
pub fn write_dir<W: Write>(dir: &Path, out: W) -> Result<u64, ZipError> {
    let files = list_files(dir)?;
    let mut w = Counter {
        inner: out,
        count: 0,
    };
    let out_err = |source| ZipError::Io {
        path: PathBuf::from("<zip output>"),
        source,
    };
    let mut central = Vec::with_capacity(files.len());
    let mut buf = vec![0u8; 1 << 20];
    for rel in files {
        let abs = dir.join(&rel);
        let meta = fs::metadata(&abs).map_err(io_err(&abs))?;
        if !meta.is_file() {
            return Err(ZipError::NotRegular(abs));
        }
        let name = rel.as_os_str().as_bytes().to_vec();
        if name.len() > 0xFFFF {
            return Err(ZipError::LongName(abs));
        }
        let flags: u16 = 0x0008 | if needs_utf8_flag(&name) { 0x0800 } else { 0 };
        let offset = w.count;
        let mut h = Vec::with_capacity(30 + name.len() + 9);
        h.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // method: store
        h.extend_from_slice(&0u16.to_le_bytes()); // time
        h.extend_from_slice(&DOS_DATE_EPOCH.to_le_bytes());
        h.extend_from_slice(&[0; 12]); // CRC, sizes: in the descriptor
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&9u16.to_le_bytes());
        h.extend_from_slice(&name);
        push_ext_time(&mut h);
        w.put(&h).map_err(out_err)?;

        let mut file = File::open(&abs).map_err(io_err(&abs))?;
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(&abs)(e)),
            };
            crc.update(&buf[..n]);
            w.put(&buf[..n]).map_err(out_err)?;
            size += n as u64;
        }
        let crc = crc.finalize();
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&DESCRIPTOR_SIG.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        if size >= U32_MAX {
            d.extend_from_slice(&size.to_le_bytes());
            d.extend_from_slice(&size.to_le_bytes());
        } else {
            d.extend_from_slice(&(size as u32).to_le_bytes());
            d.extend_from_slice(&(size as u32).to_le_bytes());
        }
        w.put(&d).map_err(out_err)?;
        central.push(CentralEntry {
            name,
            flags,
            crc,
            size,
            offset,
            external: external_attrs(meta.mode()),
        });
    }

    let start = w.count;
    for e in &central {
        let zip64 = e.size >= U32_MAX || e.offset >= U32_MAX;
        let mut extra = Vec::with_capacity(9 + 28);
        push_ext_time(&mut extra);
        let mut h = Vec::with_capacity(46 + e.name.len() + 37);
        h.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        h.extend_from_slice(&0x0314u16.to_le_bytes());
        h.extend_from_slice(&(if e.size >= U32_MAX { 45u16 } else { 20 }).to_le_bytes());
        h.extend_from_slice(&e.flags.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&DOS_DATE_EPOCH.to_le_bytes());
        h.extend_from_slice(&e.crc.to_le_bytes());
        if zip64 {
            h.extend_from_slice(&u32::MAX.to_le_bytes());
            h.extend_from_slice(&u32::MAX.to_le_bytes());
            extra.extend_from_slice(&ZIP64_ID.to_le_bytes());
            extra.extend_from_slice(&24u16.to_le_bytes());
            extra.extend_from_slice(&e.size.to_le_bytes());
            extra.extend_from_slice(&e.size.to_le_bytes());
            extra.extend_from_slice(&e.offset.to_le_bytes());
        } else {
            h.extend_from_slice(&(e.size as u32).to_le_bytes());
            h.extend_from_slice(&(e.size as u32).to_le_bytes());
        }
        h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // comment
        h.extend_from_slice(&[0; 4]); // disk number, internal attributes
        h.extend_from_slice(&e.external.to_le_bytes());
        h.extend_from_slice(&(e.offset.min(U32_MAX) as u32).to_le_bytes());
        h.extend_from_slice(&e.name);
        h.extend_from_slice(&extra);
        w.put(&h).map_err(out_err)?;
    }
    let end = w.count;
    let mut records = central.len() as u64;
    let mut size = end - start;
    let mut offset = start;
    let mut tail = Vec::with_capacity(98);
    if records >= 0xFFFF || size >= U32_MAX || offset >= U32_MAX {
        tail.extend_from_slice(&END64_SIG.to_le_bytes());
        tail.extend_from_slice(&44u64.to_le_bytes());
        tail.extend_from_slice(&45u16.to_le_bytes());
        tail.extend_from_slice(&45u16.to_le_bytes());
        tail.extend_from_slice(&[0; 8]);
        tail.extend_from_slice(&records.to_le_bytes());
        tail.extend_from_slice(&records.to_le_bytes());
        tail.extend_from_slice(&size.to_le_bytes());
        tail.extend_from_slice(&offset.to_le_bytes());
        tail.extend_from_slice(&LOC64_SIG.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&end.to_le_bytes());
        tail.extend_from_slice(&1u32.to_le_bytes());
        records = 0xFFFF;
        size = U32_MAX;
        offset = U32_MAX;
    }
    tail.extend_from_slice(&END_SIG.to_le_bytes());
    tail.extend_from_slice(&[0; 4]);
    tail.extend_from_slice(&(records as u16).to_le_bytes());
    tail.extend_from_slice(&(records as u16).to_le_bytes());
    tail.extend_from_slice(&(size as u32).to_le_bytes());
    tail.extend_from_slice(&(offset as u32).to_le_bytes());
    tail.extend_from_slice(&0u16.to_le_bytes());
    w.put(&tail).map_err(out_err)?;
    w.inner.flush().map_err(out_err)?;
    Ok(w.count)
}

fn push_ext_time(v: &mut Vec<u8>) {
    v.extend_from_slice(&EXT_TIME_ID.to_le_bytes());
    v.extend_from_slice(&5u16.to_le_bytes());
    v.push(1); // flags: modification time present
    v.extend_from_slice(&0u32.to_le_bytes()); // Unix epoch
}

/// The deterministic zip of `dir` in memory.
pub fn zip_dir_to_vec(dir: &Path) -> Result<Vec<u8>, ZipError> {
    let mut v = Vec::new();
    write_dir(dir, &mut v)?;
    Ok(v)
}

// ------------------------------------------------------------- extraction

/// Caps on what one archive may extract to; from the agent's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most entries (files and directories).
    pub max_entries: u64,
    /// Most bytes, all files together, as extracted.
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 100,000 entries and 64 GiB.
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 64 << 30,
        }
    }
}

/// Why an archive was refused; nothing is left on disk after any of them.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Not a zip, or a damaged one.
    #[error("not a valid zip archive: {0}")]
    Malformed(String),
    /// An entry name with a `..` component.
    #[error("entry {0:?}: `..` component leaves the destination")]
    ParentComponent(String),
    /// An absolute entry name.
    #[error("entry {0:?}: absolute name")]
    Absolute(String),
    /// A backslash, NUL, an empty or `.` component, or an empty name.
    #[error("entry {0:?}: not a plain relative name (empty or `.` component, backslash or NUL)")]
    BadName(String),
    /// A symbolic link entry.
    #[error("entry {0:?}: symbolic link (refused: links could point outside the destination)")]
    Symlink(String),
    /// A device, FIFO or socket entry.
    #[error("entry {0:?}: not a regular file or directory")]
    Special(String),
    /// An encrypted entry.
    #[error("entry {0:?}: encrypted")]
    Encrypted(String),
    /// A compression method other than store and deflate.
    #[error("entry {0:?}: compression method {1} (only store and deflate)")]
    Method(String, u16),
    /// More entries than the cap.
    #[error("more than {0} entries")]
    TooManyEntries(u64),
    /// More extracted bytes than the cap.
    #[error("more than {0} bytes extracted")]
    TooManyBytes(u64),
    /// The data does not match its CRC-32 or declared size.
    #[error("entry {0:?}: {1}")]
    Corrupt(String, &'static str),
    /// Two entries with the same name, or a file where a directory is
    /// needed.
    #[error("entry {0:?}: collides with an earlier entry")]
    Duplicate(String),
    /// The destination exists already.
    #[error("{0}: destination exists")]
    Exists(PathBuf),
    /// Reading the archive or writing the files.
    #[error("{0}")]
    Io(#[from] io::Error),
}

struct Entry {
    name: Vec<u8>,
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    creator: u8,
    external: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn malformed(what: impl Into<String>) -> ExtractError {
    ExtractError::Malformed(what.into())
}

/// Reads the central directory (APPNOTE §4.3.12–§4.3.16).
fn read_central<R: Read + Seek>(r: &mut R, limits: &Limits) -> Result<Vec<Entry>, ExtractError> {
    let len = r.seek(SeekFrom::End(0))?;
    // The end record is 22 bytes plus a comment of up to 65535.
    let tail_len = len.min(22 + 0xFFFF);
    r.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    r.read_exact(&mut tail)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| {
            le32(&tail, i) == END_SIG && i + 22 + usize::from(le16(&tail, i + 20)) == tail.len()
        })
        .ok_or_else(|| malformed("no end of central directory record"))?;
    let eocd_pos = len - tail_len + eocd as u64;
    let mut count = u64::from(le16(&tail, eocd + 10));
    let mut cd_size = u64::from(le32(&tail, eocd + 12));
    let mut cd_offset = u64::from(le32(&tail, eocd + 16));
    if (count == 0xFFFF || cd_size == U32_MAX || cd_offset == U32_MAX) && eocd_pos >= 20 {
        let mut loc = [0u8; 20];
        r.seek(SeekFrom::Start(eocd_pos - 20))?;
        r.read_exact(&mut loc)?;
        if le32(&loc, 0) == LOC64_SIG {
            let rec_pos = le64(&loc, 8);
            let mut rec = [0u8; 56];
            r.seek(SeekFrom::Start(rec_pos))?;
            r.read_exact(&mut rec)
                .map_err(|_| malformed("truncated ZIP64 end record"))?;
            if le32(&rec, 0) != END64_SIG {
                return Err(malformed("bad ZIP64 end record signature"));
            }
            count = le64(&rec, 32);
            cd_size = le64(&rec, 40);
            cd_offset = le64(&rec, 48);
        }
    }
    if count > limits.max_entries {
        return Err(ExtractError::TooManyEntries(limits.max_entries));
    }
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > len) {
        return Err(malformed("central directory outside the file"));
    }
    // The directory is at most 46 + 3 × 65535 bytes per entry; count is
    // capped above, and the size is bounded by the file's.
    let mut cd = vec![0u8; cd_size as usize];
    r.seek(SeekFrom::Start(cd_offset))?;
    r.read_exact(&mut cd)?;
    let mut entries = Vec::new();
    let mut at = 0usize;
    for _ in 0..count {
        if at + 46 > cd.len() || le32(&cd, at) != CENTRAL_SIG {
            return Err(malformed("bad central directory entry"));
        }
        let name_len = usize::from(le16(&cd, at + 28));
        let extra_len = usize::from(le16(&cd, at + 30));
        let comment_len = usize::from(le16(&cd, at + 32));
        let end = at + 46 + name_len + extra_len + comment_len;
        if end > cd.len() {
            return Err(malformed("central directory entry overruns the directory"));
        }
        let mut e = Entry {
            name: cd[at + 46..at + 46 + name_len].to_vec(),
            flags: le16(&cd, at + 8),
            method: le16(&cd, at + 10),
            crc: le32(&cd, at + 16),
            compressed: u64::from(le32(&cd, at + 20)),
            uncompressed: u64::from(le32(&cd, at + 24)),
            offset: u64::from(le32(&cd, at + 42)),
            creator: cd[at + 5],
            external: le32(&cd, at + 38),
        };
        // ZIP64 extra: the fields that are 0xFFFFFFFF, in this order.
        let mut extra = &cd[at + 46 + name_len..at + 46 + name_len + extra_len];
        while extra.len() >= 4 {
            let id = le16(extra, 0);
            let size = usize::from(le16(extra, 2));
            let body = extra
                .get(4..4 + size)
                .ok_or_else(|| malformed("bad extra field"))?;
            if id == ZIP64_ID {
                let mut fields = body.chunks_exact(8).map(|c| le64(c, 0));
                for v in [&mut e.uncompressed, &mut e.compressed, &mut e.offset] {
                    if *v == U32_MAX {
                        *v = fields
                            .next()
                            .ok_or_else(|| malformed("short ZIP64 extra"))?;
                    }
                }
            }
            extra = &extra[4 + size..];
        }
        entries.push(e);
        at = end;
    }
    Ok(entries)
}

/// Checks an entry name; returns its components.
fn check_name(e: &Entry) -> Result<(Vec<String>, bool), ExtractError> {
    let shown = String::from_utf8_lossy(&e.name).into_owned();
    let name = std::str::from_utf8(&e.name).map_err(|_| ExtractError::BadName(shown.clone()))?;
    if name.starts_with('/') {
        return Err(ExtractError::Absolute(shown));
    }
    if name.contains('\\') || name.contains('\0') || name.is_empty() {
        return Err(ExtractError::BadName(shown));
    }
    let is_dir = name.ends_with('/');
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let mut parts = Vec::new();
    for part in trimmed.split('/') {
        match part {
            ".." => return Err(ExtractError::ParentComponent(shown)),
            "" | "." => return Err(ExtractError::BadName(shown)),
            p => parts.push(p.to_string()),
        }
    }
    Ok((parts, is_dir))
}

/// Checks an entry's type from its Unix mode, when the creator is Unix
/// (APPNOTE §4.4.2: 3 = Unix, 19 = OS X).
fn check_type(e: &Entry, is_dir: bool, shown: &str) -> Result<(), ExtractError> {
    if e.creator == 3 || e.creator == 19 {
        let mode = e.external >> 16;
        match mode & 0o170000 {
            0 | 0o100000 => {}
            0o040000 if is_dir => {}
            0o040000 => return Err(ExtractError::Special(shown.to_string())),
            0o120000 => return Err(ExtractError::Symlink(shown.to_string())),
            _ => return Err(ExtractError::Special(shown.to_string())),
        }
    }
    if e.flags & 0x0001 != 0 {
        return Err(ExtractError::Encrypted(shown.to_string()));
    }
    if !is_dir && e.method != 0 && e.method != 8 {
        return Err(ExtractError::Method(shown.to_string(), e.method));
    }
    Ok(())
}

/// Extracts the zip read from `archive` into `dest`, which must not exist,
/// within `limits` (see the module documentation). Returns the number of
/// files extracted.
pub fn extract<R: Read + Seek>(
    mut archive: R,
    dest: &Path,
    limits: &Limits,
) -> Result<u64, ExtractError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ExtractError::Exists(dest.to_path_buf()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let entries = read_central(&mut archive, limits)?;
    // Check every name and type before writing anything.
    let mut checked = Vec::with_capacity(entries.len());
    for e in entries {
        let (parts, is_dir) = check_name(&e)?;
        check_type(&e, is_dir, &String::from_utf8_lossy(&e.name))?;
        checked.push((e, parts, is_dir));
    }
    let staging = tempfile::Builder::new()
        .prefix(".cocos-extract-")
        .tempdir_in(parent)?;
    let mut total = 0u64;
    let mut files = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    for (e, parts, is_dir) in &checked {
        let shown = String::from_utf8_lossy(&e.name).into_owned();
        let mut path = staging.path().to_path_buf();
        for (i, p) in parts.iter().enumerate() {
            path.push(p);
            let last = i + 1 == parts.len();
            if !last || *is_dir {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(ExtractError::Duplicate(shown)),
                    Err(_) => fs::create_dir(&path)?,
                }
            }
        }
        if *is_dir {
            continue;
        }
        let out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(|err| match err.kind() {
                io::ErrorKind::AlreadyExists => ExtractError::Duplicate(shown.clone()),
                _ => ExtractError::Io(err),
            })?;
        let data = open_data(&mut archive, e, &shown)?;
        let mut reader: Box<dyn Read + '_> = if e.method == 8 {
            Box::new(flate2::read::DeflateDecoder::new(data))
        } else {
            Box::new(data)
        };
        let mut out = io::BufWriter::new(out);
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(ExtractError::Corrupt(shown, "damaged compressed data")),
            };
            size += n as u64;
            total += n as u64;
            if total > limits.max_bytes {
                return Err(ExtractError::TooManyBytes(limits.max_bytes));
            }
            if size > e.uncompressed {
                return Err(ExtractError::Corrupt(
                    shown,
                    "more data than its declared size",
                ));
            }
            crc.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        out.flush()?;
        if size != e.uncompressed {
            return Err(ExtractError::Corrupt(
                shown,
                "less data than its declared size",
            ));
        }
        if crc.finalize() != e.crc {
            return Err(ExtractError::Corrupt(shown, "CRC-32 mismatch"));
        }
        files += 1;
    }
    let staged = staging.keep();
    if let Err(err) = fs::rename(&staged, dest) {
        let _ = fs::remove_dir_all(&staged);
        return Err(err.into());
    }
    Ok(files)
}

/// The entry's compressed bytes: after its local header (APPNOTE §4.3.7),
/// `compressed` bytes long.
fn open_data<'a, R: Read + Seek>(
    archive: &'a mut R,
    e: &Entry,
    shown: &str,
) -> Result<io::Take<&'a mut R>, ExtractError> {
    let mut h = [0u8; 30];
    archive.seek(SeekFrom::Start(e.offset))?;
    archive
        .read_exact(&mut h)
        .map_err(|_| malformed(format!("entry {shown:?}: truncated local header")))?;
    if le32(&h, 0) != LOCAL_SIG {
        return Err(malformed(format!(
            "entry {shown:?}: bad local header signature"
        )));
    }
    let skip = u64::from(le16(&h, 26)) + u64::from(le16(&h, 28));
    archive.seek(SeekFrom::Current(skip as i64))?;
    Ok(archive.take(e.compressed))
}
