//! Where blocks go: the [`Allocator`] hands them out in increasing order,
//! skipping the superblock copies, and [`Output`] gathers contiguous blocks
//! into large writes to the [`BlockSink`] and remembers which are used (for
//! the block bitmaps).

use super::{BLOCK, BLOCK_SIZE, BlockSink, Ext4Error};

/// Output is gathered into runs of at most this many bytes.
const RUN_BYTES: usize = 8 << 20;

/// Hands out blocks in increasing order, skipping superblock copies.
pub(super) struct Allocator {
    next: u64,
    end: u64,
    reserved: Vec<(u64, u64)>,
}

impl Allocator {
    pub(super) fn new(end: u64, reserved: Vec<(u64, u64)>) -> Self {
        Allocator {
            next: 0,
            end,
            reserved,
        }
    }

    /// `n` contiguous blocks.
    pub(super) fn run(&mut self, n: u64) -> Result<u64, Ext4Error> {
        loop {
            let start = self.next;
            let end = start + n;
            match self.reserved.iter().find(|(a, b)| start < *b && *a < end) {
                Some(&(_, b)) => self.next = b,
                None => {
                    if end > self.end {
                        return Err(Ext4Error::TooSmall {
                            needed: end * BLOCK_SIZE,
                            size: self.end * BLOCK_SIZE,
                        });
                    }
                    self.next = end;
                    return Ok(start);
                }
            }
        }
    }
}

/// Gathers contiguous blocks into large writes and records what is used.
pub(super) struct Output<'a, S: BlockSink> {
    sink: &'a mut S,
    start: u64,
    run: Vec<u8>,
    /// One bit per block: set when the block was written.
    pub(super) used: Vec<u64>,
}

impl<'a, S: BlockSink> Output<'a, S> {
    pub(super) fn new(sink: &'a mut S, blocks: u64) -> Self {
        Output {
            sink,
            start: 0,
            run: Vec::with_capacity(RUN_BYTES),
            used: vec![0; blocks.div_ceil(64) as usize],
        }
    }

    pub(super) fn put(&mut self, first: u64, data: &[u8]) -> Result<(), Ext4Error> {
        let blocks = (data.len() / BLOCK) as u64;
        for b in first..first + blocks {
            set_bit(&mut self.used, b);
        }
        let contiguous = self.start + (self.run.len() / BLOCK) as u64 == first;
        if self.run.is_empty() || !contiguous || self.run.len() + data.len() > RUN_BYTES {
            self.flush()?;
            self.start = first;
        }
        self.run.extend_from_slice(data);
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<(), Ext4Error> {
        if !self.run.is_empty() {
            self.sink
                .write_blocks(self.start, &self.run)
                .map_err(Ext4Error::Sink)?;
            self.run.clear();
        }
        Ok(())
    }
}

pub(super) fn set_bit(bits: &mut [u64], i: u64) {
    bits[(i / 64) as usize] |= 1 << (i % 64);
}

pub(super) fn get_bit(bits: &[u64], i: u64) -> bool {
    bits[(i / 64) as usize] & (1 << (i % 64)) != 0
}
