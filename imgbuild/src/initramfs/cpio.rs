//! The "newc" cpio format the kernel unpacks an initramfs from: the raw
//! header, a deterministic writer and a strict reader.
//!
//! Format: the kernel's `Documentation/driver-api/early-userspace/
//! buffer-format.rst` ("initramfs buffer format") and GNU cpio's manual
//! ("newc" = SVR4 portable format without CRC). Each member is a 110-byte
//! ASCII header ([`NewcHeader`]: the magic `070701` and thirteen 8-digit
//! hexadecimal fields), the NUL-terminated name, padding to a multiple of 4
//! bytes, the data, and padding to a multiple of 4 again. A member named
//! `TRAILER!!!` ends the archive.
//!
//! [`Archive`] is the semantic layer: a set of entries keyed by path that
//! adds missing parent directories and writes them in byte order of their
//! paths (so every directory precedes its children), with inode numbers in
//! that order, link counts from the tree, owner 0:0 and one timestamp.
//! [`read_newc`] parses any newc archive strictly (for tests, inspection and
//! the fuzz target).

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `c_magic` of the newc format (buffer-format.rst: "070701").
pub const NEWC_MAGIC: [u8; 6] = *b"070701";

/// Name of the member that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `c_mode` (the `S_IFMT` values of `<sys/stat.h>`,
/// which buffer-format.rst says the field holds).
pub mod mode {
    /// Mask of the file type bits.
    pub const S_IFMT: u32 = 0o170_000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040_000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100_000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120_000;
    /// Character device.
    pub const S_IFCHR: u32 = 0o020_000;
    /// Block device.
    pub const S_IFBLK: u32 = 0o060_000;
    /// FIFO.
    pub const S_IFIFO: u32 = 0o010_000;
    /// Socket.
    pub const S_IFSOCK: u32 = 0o140_000;
    /// Permission bits, set-id bits and the sticky bit.
    pub const PERMISSIONS: u32 = 0o7777;
}

/// One 8-digit hexadecimal header field.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(transparent)]
pub struct Hex8([u8; 8]);

impl Hex8 {
    /// Encodes `value` as GNU cpio and the kernel's `gen_init_cpio` do:
    /// eight upper-case hexadecimal digits.
    pub fn new(value: u32) -> Self {
        let mut out = [0u8; 8];
        for (i, b) in out.iter_mut().enumerate() {
            let nibble = (value >> (28 - 4 * i)) & 0xf;
            *b = b"0123456789ABCDEF"[nibble as usize];
        }
        Hex8(out)
    }

    /// Decodes the field; `None` unless all eight bytes are hexadecimal
    /// digits (either case, as the kernel's `simple_strntoul` accepts).
    pub fn get(&self) -> Option<u32> {
        self.0.iter().try_fold(0u32, |acc, &b| {
            let digit = char::from(b).to_digit(16)?;
            Some(acc << 4 | digit)
        })
    }
}

impl fmt::Debug for Hex8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// The 110-byte newc header, as stored (buffer-format.rst, "cpio_file
/// header" table; field names as there).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NewcHeader {
    /// `070701`.
    pub c_magic: [u8; 6],
    /// Inode number.
    pub c_ino: Hex8,
    /// File type and permissions.
    pub c_mode: Hex8,
    /// Owner.
    pub c_uid: Hex8,
    /// Group.
    pub c_gid: Hex8,
    /// Number of links; the kernel treats a regular file with two or more
    /// as a hard link to an earlier member with the same inode number.
    pub c_nlink: Hex8,
    /// Modification time, seconds since the epoch.
    pub c_mtime: Hex8,
    /// Data size in bytes (the target's length for a symbolic link).
    pub c_filesize: Hex8,
    /// Major number of the device holding the file.
    pub c_maj: Hex8,
    /// Minor number of the device holding the file.
    pub c_min: Hex8,
    /// Major number of a device node.
    pub c_rmaj: Hex8,
    /// Minor number of a device node.
    pub c_rmin: Hex8,
    /// Length of the name including its terminating NUL.
    pub c_namesize: Hex8,
    /// Checksum: zero in the newc format (only the `070702` "crc" format
    /// uses it).
    pub c_chksum: Hex8,
}

/// Size of [`NewcHeader`] (buffer-format.rst: 6 + 13 × 8 bytes).
pub const HEADER_SIZE: usize = 110;
const _: () = assert!(size_of::<NewcHeader>() == HEADER_SIZE);

/// Members, names and data are aligned to this many bytes.
const ALIGN: usize = 4;

/// GNU cpio pads the whole archive to its 512-byte I/O block; we do the
/// same so `cpio -i` reads it without a short-read warning.
const BLOCK: usize = 512;

/// Bytes of padding after `len` bytes to reach the next 4-byte boundary.
fn pad(len: usize) -> usize {
    (ALIGN - len % ALIGN) % ALIGN
}

/// One member with every header field decoded: what [`read_newc`] returns
/// and what [`Archive`] encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Path inside the archive (no leading `/`).
    pub name: String,
    /// Inode number.
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device holding the file (major, minor).
    pub dev: (u32, u32),
    /// Device number of a device node (major, minor).
    pub rdev: (u32, u32),
    /// Data (the target of a symbolic link).
    pub data: Vec<u8>,
}

impl Member {
    /// The file type bits of the mode.
    pub fn file_type(&self) -> u32 {
        self.mode & mode::S_IFMT
    }

    /// Appends this member, encoded, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CpioError> {
        let too_large = || CpioError::TooLarge {
            name: self.name.clone(),
        };
        let namesize = u32::try_from(self.name.len() + 1).map_err(|_| too_large())?;
        let filesize = u32::try_from(self.data.len()).map_err(|_| too_large())?;
        if self.name.as_bytes().contains(&0) {
            return Err(CpioError::BadName {
                name: self.name.clone(),
            });
        }
        let header = NewcHeader {
            c_magic: NEWC_MAGIC,
            c_ino: Hex8::new(self.ino),
            c_mode: Hex8::new(self.mode),
            c_uid: Hex8::new(self.uid),
            c_gid: Hex8::new(self.gid),
            c_nlink: Hex8::new(self.nlink),
            c_mtime: Hex8::new(self.mtime),
            c_filesize: Hex8::new(filesize),
            c_maj: Hex8::new(self.dev.0),
            c_min: Hex8::new(self.dev.1),
            c_rmaj: Hex8::new(self.rdev.0),
            c_rmin: Hex8::new(self.rdev.1),
            c_namesize: Hex8::new(namesize),
            c_chksum: Hex8::new(0),
        };
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.push(0);
        out.resize(out.len() + pad(HEADER_SIZE + self.name.len() + 1), 0);
        out.extend_from_slice(&self.data);
        out.resize(out.len() + pad(self.data.len()), 0);
        Ok(())
    }

    /// The trailer member (GNU cpio and `gen_init_cpio` write it with a
    /// link count of 1 and every other field zero).
    pub fn trailer() -> Self {
        Member {
            name: TRAILER.into(),
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            dev: (0, 0),
            rdev: (0, 0),
            data: Vec::new(),
        }
    }
}

/// What an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A character device node (major, minor).
    CharDevice(u32, u32),
    /// A symbolic link to this target.
    Symlink(String),
}

impl EntryKind {
    fn type_bits(&self) -> u32 {
        match self {
            EntryKind::Directory => mode::S_IFDIR,
            EntryKind::File(_) => mode::S_IFREG,
            EntryKind::CharDevice(..) => mode::S_IFCHR,
            EntryKind::Symlink(_) => mode::S_IFLNK,
        }
    }
}

/// A file to put in an [`Archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`0o7777` at most).
    pub permissions: u32,
}

/// A set of entries written as one deterministic newc archive.
///
/// Paths are relative (`init`, `lib/modules/...`): the kernel unpacks
/// relative to the root of its rootfs and `cpio -i` relative to the
/// current directory.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Permissions of a directory the archive adds because a path needs it.
pub const PARENT_DIR_PERMISSIONS: u32 = 0o755;

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Archive::default()
    }

    /// Adds an entry at `path` (relative, `/`-separated, no `.`/`..` or
    /// empty components). Adding the same entry twice is allowed; two
    /// different entries at one path are an error. A directory may be
    /// added after a file needed it as parent: its permissions win.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<(), CpioError> {
        check_path(path)?;
        if entry.permissions & !mode::PERMISSIONS != 0 {
            return Err(CpioError::BadPermissions {
                name: path.into(),
                permissions: entry.permissions,
            });
        }
        match self.entries.get(path) {
            Some(old) if *old == entry => Ok(()),
            Some(old) if old.kind == EntryKind::Directory && entry.kind == EntryKind::Directory => {
                self.entries.insert(path.into(), entry);
                Ok(())
            }
            Some(_) => Err(CpioError::Conflict { name: path.into() }),
            None => {
                self.entries.insert(path.into(), entry);
                Ok(())
            }
        }
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Entries added so far, in path order (without implied parents).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// The members this archive writes, in order, without the trailer:
    /// every missing parent directory added (0755), sorted by the bytes of
    /// their paths (a parent is a prefix of its children's paths, so it
    /// comes first), inode numbers 1, 2, ... in that order, owner 0:0,
    /// `mtime` everywhere, link counts as a filesystem has them (a
    /// directory: 2 plus its subdirectories; anything else: 1).
    pub fn members(&self, mtime: u32) -> Result<Vec<Member>, CpioError> {
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                parent = p;
                match all.get(parent) {
                    Some(e) if e.kind == EntryKind::Directory => {}
                    Some(_) => {
                        return Err(CpioError::NotADirectory {
                            name: parent.into(),
                            child: path.clone(),
                        });
                    }
                    None => {
                        all.insert(
                            parent.into(),
                            Entry {
                                kind: EntryKind::Directory,
                                permissions: PARENT_DIR_PERMISSIONS,
                            },
                        );
                    }
                }
            }
        }
        let mut subdirs: BTreeMap<&str, u32> = BTreeMap::new();
        for (path, entry) in &all {
            if entry.kind == EntryKind::Directory {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    *subdirs.entry(parent).or_default() += 1;
                }
            }
        }
        let mut members = Vec::with_capacity(all.len());
        for (ino, (path, entry)) in (1u32..).zip(&all) {
            let (nlink, rdev, data) = match &entry.kind {
                EntryKind::Directory => (
                    2 + subdirs.get(path.as_str()).copied().unwrap_or(0),
                    (0, 0),
                    Vec::new(),
                ),
                EntryKind::File(data) => (1, (0, 0), data.clone()),
                EntryKind::CharDevice(major, minor) => (1, (*major, *minor), Vec::new()),
                EntryKind::Symlink(target) => (1, (0, 0), target.clone().into_bytes()),
            };
            members.push(Member {
                name: path.clone(),
                ino,
                mode: entry.kind.type_bits() | entry.permissions,
                uid: 0,
                gid: 0,
                nlink,
                mtime,
                dev: (0, 0),
                rdev,
                data,
            });
        }
        Ok(members)
    }

    /// The whole archive: [`Archive::members`], the trailer, and zeros up
    /// to a multiple of 512 bytes.
    pub fn to_bytes(&self, mtime: u32) -> Result<Vec<u8>, CpioError> {
        encode_archive(&self.members(mtime)?)
    }
}

/// The whole archive of `members` (as [`Archive::members`] gives them):
/// each member, the trailer, and zeros up to a multiple of 512 bytes.
pub fn encode_archive(members: &[Member]) -> Result<Vec<u8>, CpioError> {
    {
        let mut out = Vec::with_capacity(
            members
                .iter()
                .map(|m| HEADER_SIZE + m.name.len() + m.data.len() + 8)
                .sum::<usize>()
                + BLOCK,
        );
        for m in members {
            m.encode(&mut out)?;
        }
        Member::trailer().encode(&mut out)?;
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        Ok(out)
    }
}

/// Checks that `path` is a plain relative path.
fn check_path(path: &str) -> Result<(), CpioError> {
    let bad = path.is_empty()
        || path == TRAILER
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(CpioError::BadName { name: path.into() });
    }
    Ok(())
}

/// A malformed archive, or an entry that cannot be stored.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CpioError {
    /// The data ends inside a member.
    #[error("the archive ends inside the member at byte {offset}")]
    Truncated {
        /// Offset of the member's header.
        offset: usize,
    },
    /// A header without the newc magic.
    #[error("no newc magic \"070701\" at byte {offset}")]
    BadMagic {
        /// Offset of the header.
        offset: usize,
    },
    /// A header field that is not eight hexadecimal digits.
    #[error("header field {field} at byte {offset} is not 8 hexadecimal digits")]
    BadField {
        /// Offset of the header.
        offset: usize,
        /// Field name.
        field: &'static str,
    },
    /// A name that is empty, not NUL-terminated, not UTF-8 or otherwise
    /// unusable as a path.
    #[error("bad member name {name:?}")]
    BadName {
        /// The name, lossily decoded.
        name: String,
    },
    /// Non-zero bytes where padding must be.
    #[error("non-zero padding after the member at byte {offset}")]
    BadPadding {
        /// Offset of the member's header.
        offset: usize,
    },
    /// A checksum in a newc archive.
    #[error("non-zero c_chksum in the newc member at byte {offset}")]
    Checksum {
        /// Offset of the header.
        offset: usize,
    },
    /// No `TRAILER!!!` member.
    #[error("no TRAILER!!! member")]
    NoTrailer,
    /// Something other than zeros after the trailer.
    #[error("data after the trailer at byte {offset}")]
    TrailingData {
        /// Offset of the first non-zero byte.
        offset: usize,
    },
    /// A name or file too large for the format's 32-bit fields.
    #[error("{name}: too large for a newc archive (4 GiB at most)")]
    TooLarge {
        /// The entry.
        name: String,
    },
    /// Two different entries for one path.
    #[error("{name}: two different entries for this path")]
    Conflict {
        /// The path.
        name: String,
    },
    /// A path below something that is not a directory.
    #[error("{child}: its parent {name} is not a directory")]
    NotADirectory {
        /// The parent.
        name: String,
        /// The entry below it.
        child: String,
    },
    /// Permission bits outside `0o7777`.
    #[error("{name}: permissions {permissions:o} are not within 7777")]
    BadPermissions {
        /// The entry.
        name: String,
        /// The permissions given.
        permissions: u32,
    },
}

/// Parses a whole newc archive: every member up to `TRAILER!!!` (not
/// included), then only zeros. Strict: magic, hexadecimal fields, NUL
/// terminator, zero padding, zero checksum and UTF-8 names are checked,
/// and nothing is read past the input.
pub fn read_newc(data: &[u8]) -> Result<Vec<Member>, CpioError> {
    let mut members = Vec::new();
    let mut offset = 0usize;
    loop {
        let start = offset;
        let truncated = CpioError::Truncated { offset: start };
        let header_bytes = data
            .get(start..)
            .and_then(|rest| rest.get(..HEADER_SIZE))
            .ok_or(truncated.clone())?;
        let header = NewcHeader::read_from_bytes(header_bytes)
            .map_err(|_| CpioError::Truncated { offset: start })?;
        if header.c_magic != NEWC_MAGIC {
            return Err(CpioError::BadMagic { offset: start });
        }
        let field = |value: Hex8, field: &'static str| {
            value.get().ok_or(CpioError::BadField {
                offset: start,
                field,
            })
        };
        let namesize = field(header.c_namesize, "c_namesize")? as usize;
        let filesize = field(header.c_filesize, "c_filesize")? as usize;
        if field(header.c_chksum, "c_chksum")? != 0 {
            return Err(CpioError::Checksum { offset: start });
        }
        let name_start = start + HEADER_SIZE;
        let name_end = name_start.checked_add(namesize).ok_or(truncated.clone())?;
        let raw_name = data.get(name_start..name_end).ok_or(truncated.clone())?;
        let name = match raw_name.split_last() {
            Some((0, name)) if !name.is_empty() && !name.contains(&0) => std::str::from_utf8(name)
                .map_err(|_| CpioError::BadName {
                    name: String::from_utf8_lossy(name).into_owned(),
                })?,
            _ => {
                return Err(CpioError::BadName {
                    name: String::from_utf8_lossy(raw_name).into_owned(),
                });
            }
        };
        let data_start = name_end + pad(HEADER_SIZE + namesize);
        let data_end = data_start.checked_add(filesize).ok_or(truncated.clone())?;
        let next = data_end + pad(filesize);
        let padding_ok = |from: usize, to: usize| {
            data.get(from..to)
                .map(|p| p.iter().all(|&b| b == 0))
                .ok_or(truncated.clone())
        };
        if !padding_ok(name_end, data_start)? || !padding_ok(data_end, next)? {
            return Err(CpioError::BadPadding { offset: start });
        }
        let member = Member {
            name: name.to_owned(),
            ino: field(header.c_ino, "c_ino")?,
            mode: field(header.c_mode, "c_mode")?,
            uid: field(header.c_uid, "c_uid")?,
            gid: field(header.c_gid, "c_gid")?,
            nlink: field(header.c_nlink, "c_nlink")?,
            mtime: field(header.c_mtime, "c_mtime")?,
            dev: (field(header.c_maj, "c_maj")?, field(header.c_min, "c_min")?),
            rdev: (
                field(header.c_rmaj, "c_rmaj")?,
                field(header.c_rmin, "c_rmin")?,
            ),
            data: data.get(data_start..data_end).ok_or(truncated)?.to_vec(),
        };
        offset = next;
        if member.name == TRAILER {
            break;
        }
        members.push(member);
    }
    if let Some(pos) = data
        .get(offset..)
        .and_then(|rest| rest.iter().position(|&b| b != 0))
    {
        return Err(CpioError::TrailingData {
            offset: offset + pos,
        });
    }
    Ok(members)
}

/// `ls -l` style mode string (`drwxr-xr-x`), as `cpio -tv` prints it.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & mode::S_IFMT {
        mode::S_IFDIR => 'd',
        mode::S_IFLNK => 'l',
        mode::S_IFCHR => 'c',
        mode::S_IFBLK => 'b',
        mode::S_IFIFO => 'p',
        mode::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set_char,
            (false, true) => set_char.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// One line per member in the format of GNU cpio 2.13's `cpio -tv`
/// (`long_format` in its `src/util.c`), with the time in UTC: mode, links,
/// owner and group (names of 0 are `root`), size or `major, minor` of a
/// device, date, name and ` -> target` of a symbolic link. Dates more than
/// six months before `now` (or after it) show the year, as cpio does.
pub fn list_long(members: &[Member], now: i64) -> String {
    let mut out = String::new();
    for m in members {
        let owner = |id: u32| {
            if id == 0 {
                "root".to_owned()
            } else {
                id.to_string()
            }
        };
        let size = match m.file_type() {
            mode::S_IFCHR | mode::S_IFBLK => format!("{:3}, {:3}", m.rdev.0, m.rdev.1),
            _ => format!("{:8}", m.data.len()),
        };
        let mut line = format!(
            "{} {:3} {:<8} {:<8} {} {} {}",
            mode_string(m.mode),
            m.nlink,
            owner(m.uid),
            owner(m.gid),
            size,
            cpio_date(i64::from(m.mtime), now),
            m.name
        );
        if m.file_type() == mode::S_IFLNK {
            line.push_str(" -> ");
            line.push_str(&String::from_utf8_lossy(&m.data));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `Mmm dd HH:MM` or `Mmm dd  YYYY` (ctime's fields, UTC).
fn cpio_date(t: i64, now: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = crate::fat::civil_from_days(days);
    let month = MONTHS[(month - 1) as usize % 12];
    // GNU cpio: "older than 6 months, or in the future" shows the year.
    let age = now - t;
    if !(0..=6 * 30 * 24 * 3600).contains(&age) {
        format!("{month} {day:2}  {year}")
    } else {
        format!("{month} {day:2} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_fields_are_eight_upper_case_digits() {
        assert_eq!(Hex8::new(0x41ed).as_bytes(), b"000041ED");
        assert_eq!(Hex8::new(u32::MAX).as_bytes(), b"FFFFFFFF");
        assert_eq!(Hex8(*b"000041ed").get(), Some(0x41ed));
        assert_eq!(Hex8(*b"0000 1ED").get(), None);
        assert_eq!(Hex8(*b"+00041ED").get(), None);
    }

    #[test]
    fn dates_match_known_days() {
        // 1980-01-01 (FAT's epoch, 315532800) and 2023-11-14 22:13:20
        // (1700000000), as `date -u -d @N` prints them.
        assert_eq!(cpio_date(315_532_800, 1_700_000_000), "Jan  1  1980");
        assert_eq!(cpio_date(1_700_000_000, 1_700_000_100), "Nov 14 22:13");
        assert_eq!(cpio_date(951_782_400, 2_000_000_000), "Feb 29  2000");
        assert_eq!(cpio_date(1_700_000_000, 1_600_000_000), "Nov 14  2023");
    }

    #[test]
    fn mode_strings_follow_ls() {
        assert_eq!(mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(mode_string(0o041_777), "drwxrwxrwt");
        assert_eq!(mode_string(0o020_600), "crw-------");
        assert_eq!(mode_string(0o104_644), "-rwSr--r--");
        assert_eq!(mode_string(0o120_777), "lrwxrwxrwx");
    }

    #[test]
    fn paths_must_be_plain_and_relative() {
        let file = Entry {
            kind: EntryKind::File(vec![]),
            permissions: 0o644,
        };
        let mut a = Archive::new();
        for bad in ["", "/abs", "a//b", "a/./b", "../x", "a/", TRAILER, "nul\0"] {
            assert!(a.insert(bad, file.clone()).is_err(), "{bad:?}");
        }
        a.insert("a/b", file.clone()).unwrap();
        a.insert("a/b", file.clone()).unwrap();
        let other = Entry {
            kind: EntryKind::File(vec![1]),
            permissions: 0o644,
        };
        assert_eq!(
            a.insert("a/b", other),
            Err(CpioError::Conflict { name: "a/b".into() })
        );
        a.insert("a/b/c", file).unwrap();
        assert!(matches!(a.members(0), Err(CpioError::NotADirectory { .. })));
    }
}
