//! A root tree read from a tar archive (`.tar`, or `.tar.gz`/`.tgz`
//! decompressed to an unnamed temporary file first), so trees with devices,
//! other owners and capabilities can be built without root privileges and
//! without unpacking.
//!
//! Members are not copied: their bytes are read from the archive at write
//! time through positional reads, GNU sparse members (`tar --sparse`)
//! through their sparse map, so holes stay holes without being read.
//!
//! Semantics follow extraction with GNU tar: members may come in any order;
//! a later member replaces an earlier one of the same path; parent
//! directories that have no member of their own are created with mode 0755,
//! owner 0:0 and mtime 0 (which the writer then clamps); hard links name
//! an earlier member. Paths are relative to the root (`./` and leading `/`
//! are dropped); `..` components are refused. Owners, mtimes, long names
//! and xattrs are read from PAX records (`uid`, `gid`, `mtime`,
//! `SCHILY.xattr.*`, as written by `tar --xattrs` and the `tar` crate) and
//! GNU long-name members.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cocos_formats::ext4::{Chunk, FileContent, Node, NodeId, NodeKind, SourceTree, Xattr};

use super::SourceError;

/// One member after PAX/GNU records are applied.
struct Member {
    kind: MemberKind,
    permissions: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<Xattr>,
}

enum MemberKind {
    File {
        size: u64,
        chunks: Vec<Chunk>,
    },
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    /// A hard link to the member at this (normalised) path.
    HardLink(Vec<u8>),
}

/// The PAX records of GNU tar's sparse formats.
#[derive(Default)]
struct PaxSparse {
    major: Option<u64>,
    minor: Option<u64>,
    name: Option<Vec<u8>>,
    realsize: Option<u64>,
    /// Offset and length pairs (formats 0.0 and 0.1).
    map: Vec<u64>,
}

impl PaxSparse {
    fn is_sparse(&self) -> bool {
        self.major.is_some() || self.realsize.is_some() || !self.map.is_empty()
    }
}

/// The archive's index in [`SourceTree::blobs`].
const ARCHIVE_BLOB: u32 = 0;

/// Reads a tar archive (plain, or gzip-compressed when the name ends in
/// `.gz` or `.tgz` or the file starts with the gzip magic).
pub fn read_tar(path: &Path) -> Result<SourceTree, SourceError> {
    let err = |action: &'static str| {
        let path = path.to_path_buf();
        move |source: io::Error| SourceError::Io {
            path,
            action,
            source,
        }
    };
    let mut file = File::open(path).map_err(err("open"))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(err("read"))?;
    file.seek(SeekFrom::Start(0)).map_err(err("read"))?;
    let archive = if n == 2 && magic == [0x1f, 0x8b] {
        let mut plain = tempfile::tempfile().map_err(err("create a temporary file for"))?;
        let mut gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
        io::copy(&mut gz, &mut plain).map_err(err("decompress"))?;
        plain.seek(SeekFrom::Start(0)).map_err(err("decompress"))?;
        plain
    } else {
        file
    };
    // Say plainly when the file is not a tar archive at all, rather than
    // report the first header field that fails to parse.
    {
        use std::os::unix::fs::FileExt;
        let mut first = [0u8; 512];
        let is_tar = archive.read_exact_at(&mut first, 0).is_ok()
            && (first.get(257..262) == Some(&b"ustar"[..]) || first.iter().all(|&b| b == 0));
        if !is_tar {
            return Err(SourceError::Unsupported {
                path: path.to_path_buf(),
                why: "not a directory nor a tar archive (no ustar header; .tar and .tar.gz are read)",
            });
        }
    }
    let mut reader = Reader {
        archive_path: path,
        members: BTreeMap::new(),
    };
    reader.read_members(&archive)?;
    reader.into_tree(archive)
}

struct Reader<'a> {
    archive_path: &'a Path,
    /// Normalised path (no leading `/`, root = empty) to member.
    members: BTreeMap<Vec<u8>, Member>,
}

impl Reader<'_> {
    fn bad(&self, member: &[u8], what: impl Into<String>) -> SourceError {
        SourceError::Archive {
            path: self.archive_path.to_path_buf(),
            member: String::from_utf8_lossy(member).into_owned(),
            problem: what.into(),
        }
    }

    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> SourceError {
        let path = self.archive_path.to_path_buf();
        move |source| SourceError::Io {
            path,
            action,
            source,
        }
    }

    fn read_members(&mut self, archive: &File) -> Result<(), SourceError> {
        let archive_len = archive.metadata().map_err(self.io("stat"))?.len();
        let mut tar = tar::Archive::new(BufReader::with_capacity(1 << 16, archive));
        let entries = tar.entries_with_seek().map_err(self.io("read"))?;
        for entry in entries {
            let mut entry = entry.map_err(self.io("read"))?;
            let mut raw_path = entry.path_bytes().into_owned();
            let header = entry.header().clone();
            let mut uid = header.uid().map_err(self.io("read"))?;
            let mut gid = header.gid().map_err(self.io("read"))?;
            let mut mtime = header.mtime().map_err(self.io("read"))? as i64;
            let mut xattrs = Vec::new();
            let mut sparse = PaxSparse::default();
            if let Some(pax) = entry.pax_extensions().map_err(self.io("read"))? {
                for ext in pax {
                    let ext = ext.map_err(self.io("read"))?;
                    let (k, v) = (ext.key_bytes(), ext.value_bytes());
                    let number = || {
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.split('.').next())
                            .and_then(|s| s.parse::<i64>().ok())
                            .ok_or_else(|| self.bad(&raw_path, "bad numeric PAX record"))
                    };
                    let unsigned = || number().map(|n| n.max(0) as u64);
                    match k {
                        b"uid" => uid = number()? as u64,
                        b"gid" => gid = number()? as u64,
                        b"mtime" => mtime = number()?,
                        b"GNU.sparse.major" => sparse.major = Some(unsigned()?),
                        b"GNU.sparse.minor" => sparse.minor = Some(unsigned()?),
                        b"GNU.sparse.name" => sparse.name = Some(v.to_vec()),
                        b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                            sparse.realsize = Some(unsigned()?);
                        }
                        // Format 0.0: one record per number, in order.
                        b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                            sparse.map.push(unsigned()?);
                        }
                        // Format 0.1: all numbers in one record.
                        b"GNU.sparse.map" => {
                            for n in v.split(|&b| b == b',').filter(|n| !n.is_empty()) {
                                let n = std::str::from_utf8(n)
                                    .ok()
                                    .and_then(|n| n.parse::<u64>().ok())
                                    .ok_or_else(|| self.bad(&raw_path, "bad GNU.sparse.map"))?;
                                sparse.map.push(n);
                            }
                        }
                        _ => {
                            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                                xattrs.push((name.to_vec(), v.to_vec()));
                            }
                        }
                    }
                }
            }
            if let Some(name) = &sparse.name {
                raw_path = name.clone();
            }
            let key = normalise(&raw_path).ok_or_else(|| {
                self.bad(
                    &raw_path,
                    "path has a `..` component; refusing to leave the root",
                )
            })?;
            if key.split(|&b| b == b'/').any(|c| c.len() > 255) {
                return Err(self.bad(&raw_path, "a name is over 255 bytes; ext4 allows 255"));
            }
            xattrs.sort();
            xattrs.dedup_by(|a, b| a.0 == b.0);
            let id = |v: u64, what: &str| {
                u32::try_from(v)
                    .map_err(|_| self.bad(&raw_path, format!("{what} {v} is over 32 bits")))
            };
            let (uid, gid) = (id(uid, "uid")?, id(gid, "gid")?);
            let permissions = (header.mode().map_err(self.io("read"))? & 0o7777) as u16;
            let device = |h: &tar::Header| -> Result<(u32, u32), SourceError> {
                let major = h.device_major().map_err(self.io("read"))?.unwrap_or(0);
                let minor = h.device_minor().map_err(self.io("read"))?.unwrap_or(0);
                Ok((major, minor))
            };
            let link = || -> Result<Vec<u8>, SourceError> {
                entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| self.bad(&raw_path, "link without a target"))
            };
            use tar::EntryType as T;
            let kind = match header.entry_type() {
                T::Regular | T::Continuous if sparse.is_sparse() => {
                    let (size, chunks) = self.pax_sparse_chunks(
                        archive,
                        entry.raw_file_position(),
                        entry.size(),
                        &sparse,
                        &raw_path,
                    )?;
                    MemberKind::File { size, chunks }
                }
                T::Regular | T::Continuous => MemberKind::File {
                    size: entry.size(),
                    chunks: vec![Chunk {
                        logical: 0,
                        blob: ARCHIVE_BLOB,
                        offset: entry.raw_file_position(),
                        len: entry.size(),
                    }],
                },
                T::GNUSparse => {
                    let at = entry.raw_header_position();
                    let (size, chunks) = self.sparse_chunks(archive, at, &header, &raw_path)?;
                    MemberKind::File { size, chunks }
                }
                T::Directory => MemberKind::Dir,
                T::Symlink => MemberKind::Symlink(link()?),
                T::Link => {
                    let target = link()?;
                    let target = normalise(&target).ok_or_else(|| {
                        self.bad(&raw_path, "hard link target has a `..` component")
                    })?;
                    MemberKind::HardLink(target)
                }
                T::Char => {
                    let (a, b) = device(&header)?;
                    MemberKind::Char(a, b)
                }
                T::Block => {
                    let (a, b) = device(&header)?;
                    MemberKind::Block(a, b)
                }
                T::Fifo => MemberKind::Fifo,
                // Already applied to the member they precede.
                T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
                other => {
                    return Err(self.bad(
                        &raw_path,
                        format!("unsupported member type {:?}", other.as_byte() as char),
                    ));
                }
            };
            if let MemberKind::File { chunks, .. } = &kind {
                if chunks
                    .iter()
                    .any(|c| c.offset.saturating_add(c.len) > archive_len)
                {
                    return Err(self.bad(
                        &raw_path,
                        "data runs past the end of the archive (truncated?)",
                    ));
                }
            }
            self.insert(
                key,
                &raw_path,
                Member {
                    kind,
                    permissions,
                    uid,
                    gid,
                    mtime,
                    xattrs,
                },
            )?;
        }
        Ok(())
    }

    /// The chunks of a PAX sparse member (GNU formats 0.0, 0.1 and 1.0,
    /// GNU tar's "Storing Sparse Files"): the map comes from the PAX
    /// records (0.x) or, in 1.0, from decimal lines at the start of the
    /// data, padded to 512 bytes; the chunks' data follows, back to back.
    fn pax_sparse_chunks(
        &self,
        archive: &File,
        data_start: u64,
        stored: u64,
        sparse: &PaxSparse,
        raw_path: &[u8],
    ) -> Result<(u64, Vec<Chunk>), SourceError> {
        use std::os::unix::fs::FileExt;
        let bad = |what: &str| self.bad(raw_path, format!("bad sparse map: {what}"));
        let size = sparse
            .realsize
            .ok_or_else(|| bad("no GNU.sparse.realsize"))?;
        let (map, data) = if sparse.major == Some(1) {
            // Read lines until the count and its pairs are in.
            let mut numbers = Vec::new();
            let mut digits: Option<u64> = None;
            let mut pos = 0u64;
            let mut block = [0u8; 512];
            let mut wanted = None;
            'outer: while pos < stored {
                archive
                    .read_exact_at(&mut block, data_start + pos)
                    .map_err(self.io("read"))?;
                pos += 512;
                for &b in &block {
                    match b {
                        b'0'..=b'9' => {
                            let d = u64::from(b - b'0');
                            digits = Some(
                                digits
                                    .unwrap_or(0)
                                    .checked_mul(10)
                                    .and_then(|n| n.checked_add(d))
                                    .ok_or_else(|| bad("number overflows"))?,
                            );
                        }
                        b'\n' => {
                            let n = digits.take().ok_or_else(|| bad("empty line"))?;
                            match wanted {
                                None => {
                                    wanted = Some(n.checked_mul(2).ok_or_else(|| bad("count"))?)
                                }
                                Some(_) => numbers.push(n),
                            }
                            if wanted == Some(numbers.len() as u64) {
                                break 'outer;
                            }
                        }
                        _ => return Err(bad("not a decimal line")),
                    }
                }
            }
            if wanted != Some(numbers.len() as u64) {
                return Err(bad("map runs past the member"));
            }
            (numbers, data_start + pos)
        } else {
            (sparse.map.clone(), data_start)
        };
        if map.len() % 2 != 0 {
            return Err(bad("odd number of map entries"));
        }
        let pairs: Vec<(u64, u64)> = map.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        let chunks = map_chunks(&pairs, size, data, data_start + stored).map_err(bad)?;
        Ok((size, chunks))
    }

    /// The chunks of an old-style GNU sparse member: the map is in the
    /// header (4 entries) and in extension blocks after it (21 each); the
    /// chunks' data follows the last extension block, back to back.
    fn sparse_chunks(
        &self,
        archive: &File,
        header_pos: u64,
        header: &tar::Header,
        raw_path: &[u8],
    ) -> Result<(u64, Vec<Chunk>), SourceError> {
        use std::os::unix::fs::FileExt;
        let bad = |what: &str| self.bad(raw_path, format!("bad sparse map: {what}"));
        let gnu = header.as_gnu().ok_or_else(|| bad("not a GNU header"))?;
        let mut map = Vec::new();
        let mut push = |entries: &[tar::GnuSparseHeader]| -> Result<(), SourceError> {
            for e in entries.iter().filter(|e| !e.is_empty()) {
                let offset = e.offset().map_err(|_| bad("offset"))?;
                let len = e.length().map_err(|_| bad("length"))?;
                map.push((offset, len));
            }
            Ok(())
        };
        push(&gnu.sparse)?;
        let mut data = header_pos + 512;
        let mut extended = gnu.is_extended();
        let mut blocks = 0;
        while extended {
            blocks += 1;
            if blocks > 1 << 20 {
                return Err(bad("too many extension blocks"));
            }
            let mut ext = tar::GnuExtSparseHeader::new();
            archive
                .read_exact_at(ext.as_mut_bytes(), data)
                .map_err(self.io("read"))?;
            push(ext.sparse())?;
            extended = ext.is_extended();
            data += 512;
        }
        let size = gnu.real_size().map_err(|_| bad("real size"))?;
        // The data's end is checked against the archive's length later.
        let chunks = map_chunks(&map, size, data, u64::MAX).map_err(bad)?;
        Ok((size, chunks))
    }

    fn insert(&mut self, key: Vec<u8>, raw_path: &[u8], member: Member) -> Result<(), SourceError> {
        if key.is_empty() && !matches!(member.kind, MemberKind::Dir) {
            return Err(self.bad(raw_path, "the root of the archive is not a directory"));
        }
        // Parents without a member of their own.
        let mut end = 0;
        while let Some(slash) = key[end..].iter().position(|&b| b == b'/') {
            let parent = &key[..end + slash];
            match self.members.get(parent) {
                Some(Member {
                    kind: MemberKind::Dir,
                    ..
                }) => {}
                Some(_) => {
                    return Err(self.bad(
                        raw_path,
                        format!("{} is not a directory", String::from_utf8_lossy(parent)),
                    ));
                }
                None => {
                    self.members.insert(parent.to_vec(), implicit_dir());
                }
            }
            end += slash + 1;
        }
        if let Some(old) = self.members.get(&key) {
            let was_dir = matches!(old.kind, MemberKind::Dir);
            let is_dir = matches!(member.kind, MemberKind::Dir);
            if was_dir && !is_dir && self.has_children(&key) {
                return Err(self.bad(raw_path, "replaces a non-empty directory"));
            }
        }
        self.members.insert(key, member);
        Ok(())
    }

    fn has_children(&self, dir: &[u8]) -> bool {
        let mut prefix = dir.to_vec();
        prefix.push(b'/');
        self.members
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn into_tree(mut self, archive: File) -> Result<SourceTree, SourceError> {
        self.members.entry(Vec::new()).or_insert_with(implicit_dir);
        let mut children: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
        for key in self.members.keys().filter(|k| !k.is_empty()) {
            let (parent, name) = match key.iter().rposition(|&b| b == b'/') {
                Some(i) => (&key[..i], &key[i + 1..]),
                None => (&key[..0], &key[..]),
            };
            children.entry(parent).or_default().push(name);
        }
        for names in children.values_mut() {
            names.sort_unstable();
        }
        let mut build = Build {
            reader: &self,
            children: &children,
            nodes: Vec::new(),
            by_member: HashMap::new(),
        };
        build.visit(b"")?;
        Ok(SourceTree {
            nodes: build.nodes,
            blobs: vec![Arc::new(archive)],
        })
    }

    fn display_path(&self, key: &[u8]) -> PathBuf {
        let mut s = self.archive_path.as_os_str().to_os_string().into_vec();
        s.extend_from_slice(b":/");
        s.extend_from_slice(key);
        PathBuf::from(OsString::from_vec(s))
    }
}

struct Build<'a> {
    reader: &'a Reader<'a>,
    children: &'a HashMap<&'a [u8], Vec<&'a [u8]>>,
    nodes: Vec<Node>,
    /// Member path (after following hard links) to its node.
    by_member: HashMap<Vec<u8>, NodeId>,
}

impl Build<'_> {
    fn visit(&mut self, key: &[u8]) -> Result<NodeId, SourceError> {
        let reader = self.reader;
        // Follow hard links to the member holding the data.
        let mut target = key.to_vec();
        let mut hops = 0;
        let member = loop {
            let Some(m) = reader.members.get(&target) else {
                return Err(reader.bad(
                    key,
                    format!(
                        "hard link to {}, which is not in the archive",
                        String::from_utf8_lossy(&target)
                    ),
                ));
            };
            match &m.kind {
                MemberKind::HardLink(next) => {
                    hops += 1;
                    if hops > 64 {
                        return Err(reader.bad(key, "hard links form a loop"));
                    }
                    target = next.clone();
                }
                MemberKind::Dir if hops > 0 => {
                    return Err(reader.bad(key, "hard link to a directory"));
                }
                _ => break m,
            }
        };
        if let Some(&id) = self.by_member.get(&target) {
            self.nodes[id].links += 1;
            return Ok(id);
        }
        let kind = match &member.kind {
            MemberKind::File { size, chunks } => NodeKind::File {
                size: *size,
                content: FileContent::Chunks(chunks.clone()),
            },
            MemberKind::Dir => NodeKind::Dir {
                children: Vec::new(),
            },
            MemberKind::Symlink(t) => NodeKind::Symlink { target: t.clone() },
            MemberKind::Char(major, minor) => NodeKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            MemberKind::Block(major, minor) => NodeKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            MemberKind::Fifo => NodeKind::Fifo,
            MemberKind::HardLink(_) => {
                return Err(reader.bad(key, "hard link left unresolved"));
            }
        };
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            permissions: member.permissions,
            uid: member.uid,
            gid: member.gid,
            mtime: member.mtime,
            xattrs: member.xattrs.clone(),
            path: reader.display_path(&target),
            links: 1,
        });
        if !matches!(member.kind, MemberKind::Dir) {
            self.by_member.insert(target, id);
            return Ok(id);
        }
        let names = self.children.get(key).cloned().unwrap_or_default();
        let mut kids = Vec::with_capacity(names.len());
        for name in names {
            let mut child = key.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name);
            let child_id = self.visit(&child)?;
            kids.push((name.to_vec(), child_id));
        }
        self.nodes[id].kind = NodeKind::Dir { children: kids };
        Ok(id)
    }
}

/// Lays a sparse map (`(offset in the file, length)` pairs, in order) out
/// as chunks whose data lies back to back from `data` in the archive, and
/// checks it: no overlaps, nothing past the file's `size` or `data_end`.
fn map_chunks(
    map: &[(u64, u64)],
    size: u64,
    mut data: u64,
    data_end: u64,
) -> Result<Vec<Chunk>, &'static str> {
    let mut chunks: Vec<Chunk> = Vec::with_capacity(map.len());
    let mut end = 0u64;
    for &(logical, len) in map {
        let chunk_end = logical.checked_add(len).ok_or("overflow")?;
        if logical < end || chunk_end > size {
            return Err("chunks overlap or pass the end of the file");
        }
        end = chunk_end;
        if len > 0 {
            if data.saturating_add(len) > data_end {
                return Err("chunks hold more data than the member");
            }
            chunks.push(Chunk {
                logical,
                blob: ARCHIVE_BLOB,
                offset: data,
                len,
            });
            data += len;
        }
    }
    Ok(chunks)
}

fn implicit_dir() -> Member {
    Member {
        kind: MemberKind::Dir,
        permissions: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    }
}

/// `./a//b/` → `a/b`; `/` and `.` → empty (the root); `None` with `..`.
fn normalise(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise(b"./a//b/").unwrap(), b"a/b");
        assert_eq!(normalise(b"/").unwrap(), b"");
        assert_eq!(normalise(b"./").unwrap(), b"");
        assert_eq!(normalise(b"a/./b").unwrap(), b"a/b");
        assert!(normalise(b"a/../b").is_none());
    }
}
