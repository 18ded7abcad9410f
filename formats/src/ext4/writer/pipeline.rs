//! The read-ahead pipeline: file contents are read on a second (std)
//! thread, in the order the inodes are written, and handed over in batches
//! through a bounded channel, so reading the tree and writing the image
//! overlap. Holes of the source (`SEEK_DATA`/`SEEK_HOLE`, or an archive's
//! sparse map) are not read; all-zero blocks are not written.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use super::alloc::{Allocator, Output};
use super::extents::{ExtentRun, push_block};
use super::{BLOCK, BLOCK_SIZE, BlockSink, Ext4Error};
use crate::ext4::source::{Chunk, FileContent};

/// Reads the contents of `files` on another thread, in order and ahead of
/// `write`, which takes them from [`Contents`]: reading and writing
/// overlap. The reader stops when `write` returns (the channel closes).
pub(super) fn read_ahead<'t, R>(
    files: impl Iterator<Item = (&'t Path, u64, &'t FileContent)> + Send,
    blobs: &'t [Arc<File>],
    write: impl FnOnce(&Contents) -> Result<R, Ext4Error>,
) -> Result<R, Ext4Error> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
        s.spawn(move || {
            let mut tx = Batcher::new(tx);
            for (path, size, content) in files {
                let source = match content {
                    FileContent::Path => Content::Path(path),
                    FileContent::Chunks(chunks) => Content::Chunks {
                        chunks,
                        blobs,
                        path,
                    },
                };
                if read_file(source, size, &mut tx).is_err() {
                    return; // the writer stopped
                }
            }
            let _ = tx.flush();
        });
        let contents = Contents::new(rx);
        write(&contents)
    })
}

/// Where [`write_file`] reads a file's bytes.
enum Content<'a> {
    /// A file in a directory tree.
    Path(&'a Path),
    /// Chunks of archive blobs; `path` names the member in errors.
    Chunks {
        chunks: &'a [Chunk],
        blobs: &'a [Arc<File>],
        path: &'a Path,
    },
}

/// Messages from the read-ahead thread, per file in inode order: data
/// pieces, then `End` (or an error, after which nothing follows).
enum Piece {
    /// `data` holds the file's bytes at `offset` (4 KiB aligned), zero
    /// padded to whole blocks past the end of the file; `read` bytes of it
    /// came from the file.
    Data {
        offset: u64,
        data: Vec<u8>,
        read: u64,
    },
    /// The file is complete.
    End,
    /// Reading failed.
    Failed(Ext4Error),
}

/// Batches in flight between the reader and the writer.
const READ_AHEAD: usize = 16;

/// A batch is sent when it holds this many bytes or [`BATCH_PIECES`]
/// pieces: one hand-over per many small files, not two per file.
const BATCH_BYTES: usize = 1 << 20;
/// See [`BATCH_BYTES`].
const BATCH_PIECES: usize = 256;

/// The reader's side: collects pieces into batches.
struct Batcher {
    tx: SyncSender<Vec<Piece>>,
    batch: Vec<Piece>,
    bytes: usize,
}

impl Batcher {
    fn new(tx: SyncSender<Vec<Piece>>) -> Self {
        Batcher {
            tx,
            batch: Vec::new(),
            bytes: 0,
        }
    }

    /// Queues `piece`; `Err` when the writer is gone.
    fn send(&mut self, piece: Piece) -> Result<(), ()> {
        if let Piece::Data { data, .. } = &piece {
            self.bytes += data.len();
        }
        self.batch.push(piece);
        if self.bytes >= BATCH_BYTES || self.batch.len() >= BATCH_PIECES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ()> {
        self.bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        self.tx
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| ())
    }
}

/// The writer's side: hands out the pieces of the batches in order.
pub(super) struct Contents {
    rx: Receiver<Vec<Piece>>,
    queue: std::cell::RefCell<std::collections::VecDeque<Piece>>,
}

impl Contents {
    fn new(rx: Receiver<Vec<Piece>>) -> Self {
        Contents {
            rx,
            queue: Default::default(),
        }
    }

    /// The next piece; `None` when the reader stopped.
    fn next(&self) -> Option<Piece> {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() {
            queue.extend(self.rx.recv().ok()?);
        }
        queue.pop_front()
    }
}

/// Largest piece read at once.
const PIECE: u64 = 1 << 20;

/// Reads a file's data ranges (holes skipped) into [`Piece`]s. Returns an
/// error only when the writer is gone.
fn read_file(source: Content<'_>, size: u64, tx: &mut Batcher) -> Result<(), ()> {
    let cell = std::cell::RefCell::new(tx);
    let send = |p: Piece| cell.borrow_mut().send(p);
    match read_pieces(source, size, &send) {
        Ok(Ok(())) => send(Piece::End),
        Ok(Err(e)) => send(Piece::Failed(e)),
        Err(()) => Err(()),
    }
}

/// The outer `Err` means the writer is gone; the inner one a read error.
fn read_pieces(
    source: Content<'_>,
    size: u64,
    send: &dyn Fn(Piece) -> Result<(), ()>,
) -> Result<Result<(), Ext4Error>, ()> {
    let path = match source {
        Content::Path(p) | Content::Chunks { path: p, .. } => p,
    };
    let err = |action| {
        let path = path.to_path_buf();
        move |source| Ext4Error::Source {
            path,
            action,
            source,
        }
    };
    let changed = || Ext4Error::Changed {
        path: path.to_path_buf(),
        expected: size,
    };
    // The data ranges (4 KiB aligned, merged) and a reader of any range.
    let (ranges, file) = match source {
        Content::Path(path) => {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) => return Ok(Err(err("open")(e))),
            };
            let allocated = match file.metadata() {
                Ok(m) if m.len() == size => {
                    use std::os::unix::fs::MetadataExt;
                    m.blocks().saturating_mul(512)
                }
                Ok(_) => return Ok(Err(changed())),
                Err(e) => return Ok(Err(err("stat")(e))),
            };
            // A file with as many bytes allocated as it is long has no
            // holes: skip the SEEK_DATA/SEEK_HOLE walk (two more system
            // calls per file). Reading a hole would only cost time: its
            // zero blocks are left out of the image either way.
            if allocated >= size {
                (vec![(0, size.next_multiple_of(BLOCK_SIZE))], Some(file))
            } else {
                match data_ranges(&file, size) {
                    Ok(ranges) => (ranges, Some(file)),
                    Err(e) => return Ok(Err(err("read")(e))),
                }
            }
        }
        Content::Chunks { chunks, .. } => (chunk_ranges(chunks), None),
    };
    for (start, end) in ranges {
        let mut offset = start;
        while offset < end {
            let want = (end - offset).min(PIECE) as usize;
            let avail = (size.saturating_sub(offset) as usize).min(want);
            let mut data = Vec::with_capacity(want);
            let read = match (&file, &source) {
                (Some(file), _) => {
                    read_exact_into(file, &mut data, avail, offset).map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => changed(),
                        _ => err("read")(e),
                    })
                }
                (None, Content::Chunks { chunks, blobs, .. }) => {
                    data.resize(avail, 0);
                    read_chunks(chunks, blobs, offset, &mut data).map_err(err("read"))
                }
                (None, Content::Path(_)) => Err(changed()),
            };
            // The tail of the last block is zeros.
            data.resize(want, 0);
            if let Err(e) = read {
                return Ok(Err(e));
            }
            send(Piece::Data {
                offset,
                data,
                read: avail as u64,
            })?;
            offset += want as u64;
        }
    }
    Ok(Ok(()))
}

/// Writes the next file's pieces from the read-ahead thread into newly
/// allocated blocks. All-zero blocks are left as holes too, so the image
/// depends on the content alone.
pub(super) fn write_file<S: BlockSink>(
    path: &Path,
    contents: &Contents,
    alloc: &mut Allocator,
    out: &mut Output<'_, S>,
    progress: &dyn Fn(u64),
) -> Result<Vec<ExtentRun>, Ext4Error> {
    let mut runs = Vec::new();
    loop {
        match contents.next() {
            Some(Piece::Data { offset, data, read }) => {
                for (i, block) in data.chunks(BLOCK).enumerate() {
                    if !is_zero(block) {
                        let at = alloc.run(1)?;
                        out.put(at, block)?;
                        push_block(&mut runs, (offset / BLOCK_SIZE) as u32 + i as u32, at);
                    }
                }
                progress(read);
            }
            Some(Piece::End) => return Ok(runs),
            Some(Piece::Failed(e)) => return Err(e),
            None => {
                return Err(Ext4Error::Source {
                    path: path.to_path_buf(),
                    action: "read",
                    source: std::io::Error::other("the read-ahead thread stopped"),
                });
            }
        }
    }
}

/// The 4 KiB-aligned, merged ranges that [`Chunk`]s cover.
fn chunk_ranges(chunks: &[Chunk]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for c in chunks.iter().filter(|c| c.len > 0) {
        let a = c.logical / BLOCK_SIZE * BLOCK_SIZE;
        let b = (c.logical + c.len).next_multiple_of(BLOCK_SIZE);
        match ranges.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => ranges.push((a, b)),
        }
    }
    ranges
}

/// Reads exactly `len` bytes of `file` from `offset` into the empty `buf`,
/// straight into its spare capacity: a zero-filled buffer would cost a
/// `memset` of every byte read. `UnexpectedEof` if the file is shorter.
fn read_exact_into(file: &File, buf: &mut Vec<u8>, len: usize, offset: u64) -> std::io::Result<()> {
    buf.clear();
    buf.reserve(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The capacity may exceed `len`, and a file that grew since it was
    // planned may have filled it: keep the planned bytes only.
    buf.truncate(len);
    Ok(())
}

/// Fills `buf` with the file's bytes at `offset`: chunk data where chunks
/// are, zeros elsewhere.
fn read_chunks(
    chunks: &[Chunk],
    blobs: &[Arc<File>],
    offset: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.fill(0);
    let end = offset + buf.len() as u64;
    // Chunks are sorted by logical offset: skip those ending before `offset`.
    let first = chunks.partition_point(|c| c.logical + c.len <= offset);
    for c in chunks[first..].iter().take_while(|c| c.logical < end) {
        let from = c.logical.max(offset);
        let to = (c.logical + c.len).min(end);
        let blob = blobs
            .get(c.blob as usize)
            .ok_or_else(|| std::io::Error::other("chunk names a missing blob"))?;
        blob.read_exact_at(
            &mut buf[(from - offset) as usize..(to - offset) as usize],
            c.offset + (from - c.logical),
        )?;
    }
    Ok(())
}

fn is_zero(block: &[u8]) -> bool {
    block
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
}

/// The byte ranges of `file` (of `size` bytes) that may hold data, from
/// `SEEK_DATA`/`SEEK_HOLE`, widened to 4 KiB blocks and merged. Without
/// support for those (or on a filesystem that reports no holes) the whole
/// file is one range.
fn data_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for segment in crate::sparse::segments(file, 0, size) {
        let crate::sparse::Segment::Data(start, end) = segment? else {
            continue;
        };
        let (a, b) = (start / 4096 * 4096, end.next_multiple_of(4096));
        match ranges.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => ranges.push((a, b)),
        }
    }
    Ok(ranges)
}
