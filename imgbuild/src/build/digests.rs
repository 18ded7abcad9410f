//! The digests of the artifacts: SHA-256 of byte ranges read back (holes
//! hashed from memory), on worker threads that a [`Control`] pauses while
//! the root filesystem is written and stops when the build fails, and the
//! final parallel pass over the files nothing has hashed yet.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use cocos_formats::sparse::{self, Segment};
use sha2::{Digest, Sha256};

use super::error::{BuildError, io_err};
use super::staging::Staging;
use super::{FileDigest, artifact};
use crate::gpt::PlacedPartition;

/// A digest computed on another thread.
pub(super) type DigestThread = JoinHandle<Result<FileDigest, BuildError>>;

/// What is left to read back once everything is written. Partition 1 (the
/// ESP) is hashed by its own step; partition 2 holds exactly
/// `rootfs.ext4`'s bytes, so it is hashed once; the `cocos` partition is
/// zeros by construction (no need to read 20 GiB of them).
pub(super) struct Pending<'a> {
    /// `disk.img`.
    pub disk: &'a File,
    /// Its partitions to read back (the hash partition).
    pub partitions: Vec<&'a PlacedPartition>,
    /// `rootfs.verity`.
    pub verity: &'a File,
    /// `rootfs.roothash`.
    pub roothash: &'a File,
    /// `rootfs.cpio.gz`.
    pub initramfs: &'a File,
    /// Its digest, when known from when it was made (a generated
    /// initramfs); a prebuilt one is read back.
    pub initramfs_digest: Option<FileDigest>,
}

/// The digests read back, waiting for the ESP's and `rootfs.ext4`'s.
pub(super) struct ReadBack(Vec<FileDigest>);

/// Reads back everything `pending` lists, in parallel.
pub(super) fn read_back(staging: &Staging, pending: Pending<'_>) -> Result<ReadBack, BuildError> {
    let mut ranges: Vec<(String, &File, u64, u64)> = pending
        .partitions
        .iter()
        .map(|p| {
            (
                format!("{}#{}", artifact::DISK, p.number),
                pending.disk,
                p.offset,
                p.size,
            )
        })
        .collect();
    let mut whole = vec![
        (artifact::VERITY, pending.verity),
        (artifact::ROOTHASH, pending.roothash),
    ];
    if pending.initramfs_digest.is_none() {
        whole.push((artifact::INITRAMFS, pending.initramfs));
    }
    for (name, file) in whole {
        let len = file
            .metadata()
            .map_err(io_err(&staging.path(name), "stat"))?
            .len();
        ranges.push((name.to_owned(), file, 0, len));
    }
    let mut artifacts = {
        use rayon::prelude::*;
        ranges
            .par_iter()
            .map(|(name, file, offset, len)| digest_range(file, name, *offset, *len))
            .collect::<Result<Vec<_>, _>>()?
    };
    artifacts.extend(pending.initramfs_digest);
    Ok(ReadBack(artifacts))
}

impl ReadBack {
    /// Every artifact's digest, sorted by path: those read back, the
    /// ESP's, `rootfs.ext4`'s once its thread is done, and the root
    /// partition's (number `root_partition`; the same bytes as
    /// `rootfs.ext4`).
    pub(super) fn finish(
        self,
        esp: FileDigest,
        rootfs: DigestThread,
        root_partition: Option<u32>,
    ) -> Result<Vec<FileDigest>, BuildError> {
        let mut artifacts = self.0;
        artifacts.push(esp);
        let rootfs = rootfs
            .join()
            .map_err(|_| BuildError::Internal("the rootfs.ext4 digest panicked"))??;
        if let Some(number) = root_partition {
            artifacts.push(FileDigest {
                path: format!("{}#{}", artifact::DISK, number),
                ..rootfs.clone()
            });
        }
        artifacts.push(rootfs);
        artifacts.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(artifacts)
    }
}

/// SHA-256 of `len` bytes of `file` from `offset`.
pub(super) fn digest_range(
    file: &File,
    name: &str,
    offset: u64,
    len: u64,
) -> Result<FileDigest, BuildError> {
    let mut h = Sha256::new();
    hash_range(&mut h, file, name, offset, len, &Control::default())?;
    Ok(finish_digest(name, len, h))
}

/// The digest record of `size` bytes hashed into `h`.
pub(super) fn finish_digest(name: &str, size: u64, h: Sha256) -> FileDigest {
    FileDigest {
        path: name.to_owned(),
        size,
        sha256: hex::encode(h.finalize()),
    }
}

/// Feeds `len` bytes of `file` from `offset` into `h`, checking `control`
/// between chunks.
pub(super) fn hash_range(
    h: &mut Sha256,
    file: &File,
    name: &str,
    offset: u64,
    len: u64,
    control: &Control,
) -> Result<(), BuildError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4 << 20];
    let zeros = vec![0u8; 1 << 20];
    for segment in sparse::segments(file, offset, offset + len) {
        match segment.map_err(io_err(Path::new(name), "read back"))? {
            // Holes (the ESP's free space, the root's free blocks) are
            // zeros: hash them from memory instead of reading them back.
            Segment::Hole(mut at, end) => {
                while at < end {
                    control.check()?;
                    let n = (end - at).min(zeros.len() as u64) as usize;
                    h.update(&zeros[..n]);
                    at += n as u64;
                }
            }
            Segment::Data(mut at, end) => {
                while at < end {
                    control.check()?;
                    let n = (end - at).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..n], at)
                        .map_err(io_err(Path::new(name), "read back"))?;
                    h.update(&buf[..n]);
                    at += n as u64;
                }
            }
        }
    }
    Ok(())
}

/// What the build's worker threads check between chunks of work: whether
/// to wait (the root filesystem is being written and needs both cores) or
/// to stop (the build failed).
#[derive(Default)]
pub(super) struct Control {
    stop: AtomicBool,
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl Control {
    /// Waits while paused; `Err` once the build has stopped.
    pub(super) fn check(&self) -> Result<(), BuildError> {
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        while *paused {
            paused = self
                .resumed
                .wait(paused)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if self.stop.load(Ordering::Relaxed) {
            return Err(BuildError::Internal("stopped: the build failed"));
        }
        Ok(())
    }

    /// Makes the workers wait at their next check, or lets them go on.
    fn set_paused(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = paused;
        self.resumed.notify_all();
    }
}

/// The build's handle on its workers' [`Control`]: dropped on every
/// return from [`build`](super::build), it stops them (and lets paused ones go).
#[derive(Default)]
pub(super) struct Workers(Arc<Control>);

impl Workers {
    /// The control to hand to a worker.
    pub(super) fn control(&self) -> Arc<Control> {
        Arc::clone(&self.0)
    }

    /// Makes the workers wait (the root filesystem is being written and
    /// needs both cores).
    pub(super) fn pause(&self) {
        self.0.set_paused(true);
    }

    /// Lets paused workers go on.
    pub(super) fn resume(&self) {
        self.0.set_paused(false);
    }

    /// Starts the digest of the first `len` bytes of `file`, artifact
    /// `name`, on a worker thread.
    pub(super) fn digest(
        &self,
        file: &File,
        staging: &Staging,
        name: &'static str,
        len: u64,
    ) -> Result<DigestThread, BuildError> {
        let file = file
            .try_clone()
            .map_err(io_err(&staging.path(name), "reopen"))?;
        let control = self.control();
        Ok(std::thread::spawn(move || {
            let mut h = Sha256::new();
            hash_range(&mut h, &file, name, 0, len, &control)?;
            Ok::<_, BuildError>(finish_digest(name, len, h))
        }))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
        self.0.set_paused(false);
    }
}
