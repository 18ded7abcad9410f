//! [`FileSlice`]: a byte range of the image file as `Read + Write + Seek`
//! for `fatfs`, with a small write-back cache (FAT entries and directory
//! entries are changed a few bytes at a time) and zero-block skipping (so
//! an image's holes stay holes).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// Granularity of the zero-block skipping in [`FileSlice`]: the block size
/// of the usual Linux filesystems, so a skipped block is a hole.
pub(super) const ZERO_BLOCK: u64 = 4096;

/// Size of a read cache block in [`FileSlice`].
const CACHE_BLOCK: u64 = 64 << 10;

/// Number of cache blocks in [`FileSlice`]: enough that the FAT, the
/// directory being changed and the file data being read each keep one.
const CACHE_BLOCKS: usize = 8;

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

    /// Writes `bytes` at `pos` of the slice (moving the position there and
    /// past them), through the cache.
    pub(super) fn write_at(&mut self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        self.seek(SeekFrom::Start(pos))?;
        self.write_all(bytes)
    }

    /// Reads `bytes.len()` bytes at `pos` of the slice (moving the position
    /// there and past them), through the cache.
    pub(super) fn read_at(&mut self, pos: u64, bytes: &mut [u8]) -> io::Result<()> {
        self.seek(SeekFrom::Start(pos))?;
        self.read_exact(bytes)
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

/// Whether every byte of `buf` is zero.
pub(super) fn is_zero(buf: &[u8]) -> bool {
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
