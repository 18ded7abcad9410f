//! The data and the holes of a byte range of a file, from `SEEK_DATA` and
//! `SEEK_HOLE` (lseek(2)). Holes read as zeros, so whoever reads a range to
//! copy, hash or clear it can skip reading them.

use std::fs::File;
use std::io;

use rustix::fs::{SeekFrom, seek};
use rustix::io::Errno;

/// A piece of a range: `[start, end)`, data or hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Bytes the filesystem stores (they may still be zeros).
    Data(u64, u64),
    /// Bytes that read as zeros without being stored.
    Hole(u64, u64),
}

/// The segments of `[start, end)` of `file`, in order, covering the range
/// exactly. Past the end of the file, and everywhere in a file without
/// data, is hole. Where the filesystem cannot tell (no `SEEK_DATA`), the
/// rest of the range is one data segment.
pub fn segments(file: &File, start: u64, end: u64) -> Segments<'_> {
    Segments {
        file,
        at: start,
        end,
    }
}

/// See [`segments`].
#[derive(Debug)]
pub struct Segments<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Iterator for Segments<'_> {
    type Item = io::Result<Segment>;

    fn next(&mut self) -> Option<Self::Item> {
        let (at, end) = (self.at, self.end);
        if at >= end {
            return None;
        }
        let data = match seek(self.file, SeekFrom::Data(at)) {
            Ok(d) => d.min(end),
            // No data at or after `at`.
            Err(Errno::NXIO) => end,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                self.at = end;
                return Some(Ok(Segment::Data(at, end)));
            }
            Err(e) => {
                self.at = end;
                return Some(Err(e.into()));
            }
        };
        if data > at {
            self.at = data;
            return Some(Ok(Segment::Hole(at, data)));
        }
        let hole = match seek(self.file, SeekFrom::Hole(at)) {
            // Always progress, whatever the filesystem answers.
            Ok(h) => h.min(end).max(at + 1),
            Err(e) => {
                self.at = end;
                return Some(Err(e.into()));
            }
        };
        self.at = hole;
        Some(Ok(Segment::Data(at, hole)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::FileExt;

    const K: u64 = 4096;
    const M: u64 = 1 << 20;

    /// 8 KiB of data at 0, 4 KiB at 1 MiB, a 3 MiB file: holes elsewhere
    /// (the layout `filefrag -v` shows for such a file on ext4 and tmpfs).
    fn sparse_file() -> File {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&[1u8; 2 * K as usize], 0).unwrap();
        f.write_all_at(&[2u8; K as usize], M).unwrap();
        f.set_len(3 * M).unwrap();
        f
    }

    fn all(file: &File, start: u64, end: u64) -> Vec<Segment> {
        segments(file, start, end).map(Result::unwrap).collect()
    }

    #[test]
    fn data_and_holes_cover_the_range_in_order() {
        let f = sparse_file();
        assert_eq!(
            all(&f, 0, 3 * M),
            [
                Segment::Data(0, 2 * K),
                Segment::Hole(2 * K, M),
                Segment::Data(M, M + K),
                Segment::Hole(M + K, 3 * M),
            ]
        );
    }

    #[test]
    fn a_range_is_cut_at_its_ends() {
        let f = sparse_file();
        assert_eq!(
            all(&f, K, M + 100),
            [
                Segment::Data(K, 2 * K),
                Segment::Hole(2 * K, M),
                Segment::Data(M, M + 100),
            ]
        );
        assert_eq!(all(&f, 4 * K, 8 * K), [Segment::Hole(4 * K, 8 * K)]);
        assert_eq!(all(&f, M, M), []);
    }

    #[test]
    fn past_the_end_of_the_file_is_hole() {
        let f = sparse_file();
        assert_eq!(all(&f, 3 * M, 4 * M), [Segment::Hole(3 * M, 4 * M)]);
        let empty = tempfile::tempfile().unwrap();
        assert_eq!(all(&empty, 0, K), [Segment::Hole(0, K)]);
    }
}
