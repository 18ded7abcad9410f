//! Parallel, reproducible gzip (RFC 1952) of the initramfs archive.
//!
//! One gzip member holding one DEFLATE stream (RFC 1951), so every
//! decompressor reads it (the kernel's initramfs unpacker, `gzip -d`,
//! `cpio` behind `zcat`), compressed as pigz does: the input is cut into
//! [`CHUNK`]-byte pieces, each piece is compressed on its own (all cores),
//! every piece but the last ends with a sync flush (an empty stored block,
//! RFC 1951 §3.2.4, so the next piece starts on a byte boundary with no
//! block left open) and the last with a final block. Pieces share no
//! dictionary, which costs a few bytes per MiB. The cut points depend only
//! on the input, so the output is the same on any number of cores.
//!
//! Level 9, as the replaced pipeline's `gzip -9`, with the `zlib-rs`
//! backend of flate2 (see docs/decisions.md). On the development
//! initramfs (19 MB of newc, measured on a loaded 2-core machine): 0.98 s of
//! CPU spread over all cores, 7,449,915 bytes, against `gzip -9`'s 4.4 s on
//! one core for 7,458,064 bytes. miniz_oxide, flate2's default backend,
//! needed as much CPU at level 6 (1.0 s) for 7,534,955 bytes.

use std::io;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use rayon::prelude::*;

/// Bytes of input per independently compressed piece.
pub const CHUNK: usize = 1 << 20;
/// The DEFLATE level (the best, as `gzip -9`).
pub const LEVEL: u32 = 9;

/// The gzip header (RFC 1952 §2.3): ID1 ID2, CM = 8 (deflate), FLG = 0 (no
/// name, comment or extra field), MTIME = 0 ("no time stamp is available",
/// §2.3.1), XFL = 2 (the best compression), OS = 3 (Unix, as `gzip -n`
/// writes).
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3];

/// Compresses `data` into one gzip member: [`HEADER`], the DEFLATE stream
/// of the pieces, CRC-32 and size modulo 2^32 (little-endian, §2.3.1).
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![data]
    } else {
        data.chunks(CHUNK).collect()
    };
    let last = pieces.len() - 1;
    let compressed = pieces
        .par_iter()
        .enumerate()
        .map(|(i, piece)| deflate_piece(piece, i == last))
        .collect::<io::Result<Vec<Vec<u8>>>>()?;
    let mut crc = Crc::new();
    crc.update(data);
    let body: usize = compressed.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(HEADER.len() + body + 8);
    out.extend_from_slice(&HEADER);
    for piece in &compressed {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the input size modulo 2^32 (RFC 1952 §2.3.1).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

/// Raw DEFLATE of one piece: ends with a sync flush, or with the final
/// block when `last`.
fn deflate_piece(data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(LEVEL), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Stored blocks bound the output: 5 bytes per 64 KiB block, plus the
    // flush's empty block; a little more room only saves a reallocation.
    let mut out = Vec::with_capacity(data.len() + data.len() / 8192 + 64);
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() == data.len() as u64;
        // A finish is done at the stream's end; a sync flush once all the
        // input is in and the output buffer was not filled (zlib's rule:
        // room left means the flush completed).
        let done = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
        out.reserve(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Decompresses with gzip(1), the reference decompressor, checking the
    /// CRC and size on the way (`gzip -d` fails on a mismatch).
    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gzip")
            .args(["-d", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = gz.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success(), "gzip -d refused the stream");
        out.stdout
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        // Compressible but not trivial: bytes from a small alphabet.
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefgh\0\n"[(x % 10) as usize]
            })
            .collect()
    }

    #[test]
    fn gzip_reads_back_every_size_around_the_pieces() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let data = pseudo_random(len, len as u64 + 7);
            let gz = gzip(&data).unwrap();
            assert_eq!(gunzip(&gz), data, "length {len}");
        }
    }

    #[test]
    fn one_member_with_the_fixed_header() {
        let data = pseudo_random(2 * CHUNK + 5, 3);
        let gz = gzip(&data).unwrap();
        assert_eq!(gz[..10], HEADER);
        // gzip -l reads the trailer of the (last) member: one member means
        // its uncompressed size is the whole input.
        let mut child = Command::new("gzip")
            .args(["-l", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&gz).unwrap();
        let out = child.wait_with_output().unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<&str> = listing.split_whitespace().collect();
        assert_eq!(fields[1], data.len().to_string(), "{listing}");
    }

    #[test]
    fn the_same_bytes_on_any_number_of_threads() {
        let data = pseudo_random(3 * CHUNK, 11);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| gzip(&data).unwrap());
        assert_eq!(one, gzip(&data).unwrap());
    }
}
