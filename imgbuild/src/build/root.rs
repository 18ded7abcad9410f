//! Steps 2 to 4: the root filesystem and its dm-verity hash tree. The
//! root tree is scanned and its ext4 filesystem planned (sizes known,
//! nothing written yet); then the ext4 blocks go straight into partition 2
//! of `disk.img` and into `rootfs.ext4` through a [`TeeSink`], which passes
//! them on to a hashing thread; then the verity superblock and tree go into
//! partition 3 and `rootfs.verity`, and the root hash into
//! `rootfs.roothash`.

use std::fs::File;
use std::io;

use cocos_formats::ext4::{BlockSink, Ext4Options, Ext4Plan, FileSink, SourceTree};
use cocos_measure::verity::{
    HashAreaLayout, HashTree, HashTreeBuilder, RootHash, Salt, TreeGeometry, TreeParams,
    VerityParams,
};
use uuid::Uuid;

use super::error::{BuildError, io_err};
use super::staging::Staging;
use super::{BuildConfig, artifact};
use crate::seed::{Seed, purpose};
use crate::tree;

/// The root filesystem's options for an image seed: `build` and `mkfs` use
/// this one derivation, so `mkfs` reproduces `build`'s `rootfs.ext4`.
pub fn ext4_options(
    seed: &Seed,
    timestamp: i64,
    root_owned: bool,
    size: Option<u64>,
) -> Ext4Options {
    Ext4Options {
        uuid: seed.uuid_for(purpose::EXT4_UUID),
        hash_seed: seed.uuid_for(purpose::EXT4_HASH_SEED),
        timestamp,
        root_owned,
        size,
        label: "root".into(),
        min_inodes: None,
        lazy_inode_tables: false,
    }
}

/// The build's dm-verity parameters: the configured algorithm and block
/// sizes, and the salt derived from the seed.
pub(super) fn verity_params(cfg: &BuildConfig, seed: &Seed) -> Result<TreeParams, BuildError> {
    let (data_block_size, hash_block_size) = cfg.verity.check().map_err(BuildError::Spec)?;
    Ok(TreeParams {
        algorithm: cfg.verity.algorithm,
        data_block_size,
        hash_block_size,
        salt: Salt::new(seed.bytes_for(&cfg.verity.salt_seed, 32)).map_err(BuildError::from)?,
    })
}

/// The sizes of the root and hash partitions, once the root filesystem is
/// planned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    /// The ext4 filesystem.
    pub root: u64,
    /// The verity superblock and hash tree.
    pub verity: u64,
}

/// The root filesystem, planned: its tree, its ext4 layout and its hash
/// tree's parameters.
pub(super) struct RootPlan {
    tree: SourceTree,
    ext4: Ext4Plan,
    params: TreeParams,
    /// The verity superblock's UUID.
    uuid: Uuid,
    /// Bytes of the hash area (superblock and tree).
    hash_area: u64,
}

/// The root filesystem, written and hashed.
pub(super) struct RootWritten {
    /// `rootfs.ext4`.
    pub rootfs: File,
    /// The dm-verity hash tree of its blocks.
    pub tree: HashTree,
}

impl RootPlan {
    /// Scans the root tree and plans its filesystem (of `size` bytes, or
    /// as small as it fits) and hash tree.
    pub(super) fn new(
        cfg: &BuildConfig,
        seed: &Seed,
        params: TreeParams,
        size: Option<u64>,
    ) -> Result<Self, BuildError> {
        let tree = tree::read(&cfg.rootfs)?;
        let ext4 = Ext4Plan::new(
            &tree,
            ext4_options(seed, cfg.source_date_epoch, cfg.root_owned, size),
        )?;
        let uuid = seed.uuid_for(&cfg.verity.uuid_seed);
        let geometry = TreeGeometry::new(&params, ext4.blocks()).map_err(BuildError::from)?;
        let hash_area = HashAreaLayout::new(0, true, params.hash_block_size)
            .and_then(|l| l.end(&geometry))
            .map_err(BuildError::from)?;
        Ok(RootPlan {
            tree,
            ext4,
            params,
            uuid,
            hash_area,
        })
    }

    /// The sizes of the root and hash partitions.
    pub(super) fn sizes(&self) -> Sizes {
        Sizes {
            root: self.ext4.size(),
            verity: self.hash_area,
        }
    }

    /// Writes the filesystem into `disk` at `offset` and into
    /// `rootfs.ext4`, hashing each block as it is written. `progress_total`
    /// is told its size, `progress` the bytes written.
    pub(super) fn write(
        &self,
        staging: &mut Staging,
        disk: &File,
        offset: u64,
        progress_total: &dyn Fn(u64),
        progress: &dyn Fn(u64),
    ) -> Result<RootWritten, BuildError> {
        let rootfs = staging.create_sized(artifact::ROOTFS, self.ext4.size())?;
        progress_total(self.ext4.size());
        let tree = write_and_hash(
            &self.ext4,
            &self.tree,
            FileSink::new(disk, offset),
            FileSink::new(&rootfs, 0),
            HashTreeBuilder::for_blocks(self.params.clone(), self.ext4.blocks())
                .map_err(BuildError::from)?,
            progress,
        )?;
        Ok(RootWritten { rootfs, tree })
    }

    /// Writes the hash area of `tree` (superblock and tree) into `disk` at
    /// `offset` and into `rootfs.verity`.
    pub(super) fn write_hash_area(
        &self,
        tree: &HashTree,
        staging: &mut Staging,
        disk: &File,
        offset: u64,
    ) -> Result<File, BuildError> {
        let verity_file = staging.create(artifact::VERITY)?;
        let area = |offset| {
            HashAreaLayout::new(offset, true, self.params.hash_block_size).map_err(BuildError::from)
        };
        let mut disk_w = disk;
        tree.write_hash_area(&mut disk_w, &area(offset)?, Some(self.uuid))
            .map_err(io_err(&staging.path(artifact::DISK), "write"))?;
        let mut verity_w = &verity_file;
        tree.write_hash_area(&mut verity_w, &area(0)?, Some(self.uuid))
            .map_err(io_err(&staging.path(artifact::VERITY), "write"))?;
        Ok(verity_file)
    }

    /// The dm-verity parameters as the manifest records them.
    pub(super) fn verity(&self, root_hash: &RootHash) -> VerityParams {
        VerityParams::new(&self.params, self.ext4.blocks())
            .with_uuid(Some(self.uuid))
            .with_root_hash(Some(root_hash.clone()))
    }
}

/// Writes `rootfs.roothash`: the root hash in hex and a newline.
pub(super) fn write_roothash(
    staging: &mut Staging,
    root_hash: &RootHash,
) -> Result<File, BuildError> {
    let file = staging.create(artifact::ROOTHASH)?;
    std::io::Write::write_all(&mut &file, format!("{root_hash}\n").as_bytes())
        .map_err(io_err(&staging.path(artifact::ROOTHASH), "write"))?;
    Ok(file)
}

/// Writes each ext4 block to the disk image and to `rootfs.ext4`, and
/// passes it on for dm-verity hashing on another thread (in runs of
/// consecutive blocks, so the writer does not wait for the hasher).
struct TeeSink<'a> {
    disk: FileSink<'a>,
    rootfs: FileSink<'a>,
    hasher: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
    /// Consecutive blocks not yet sent: first block and bytes.
    run: (u64, Vec<u8>),
}

/// Bytes of consecutive blocks sent to the hasher at once.
const HASH_RUN: usize = 1 << 20;

impl TeeSink<'_> {
    fn send(&mut self) -> io::Result<()> {
        if self.run.1.is_empty() {
            return Ok(());
        }
        let run = std::mem::replace(&mut self.run, (0, Vec::with_capacity(HASH_RUN)));
        self.hasher
            .send(run)
            .map_err(|_| io::Error::other("the dm-verity hasher stopped"))
    }
}

impl BlockSink for TeeSink<'_> {
    fn write_blocks(&mut self, first: u64, data: &[u8]) -> io::Result<()> {
        self.disk.write_blocks(first, data)?;
        self.rootfs.write_blocks(first, data)?;
        let next = self.run.0 + (self.run.1.len() / 4096) as u64;
        if self.run.1.is_empty() || next != first || self.run.1.len() + data.len() > HASH_RUN {
            self.send()?;
            self.run.0 = first;
        }
        self.run.1.extend_from_slice(data);
        Ok(())
    }
}

/// Writes the root filesystem through a [`TeeSink`] while another thread
/// hashes its blocks; returns the finished hash tree.
fn write_and_hash(
    ext4: &Ext4Plan,
    tree: &SourceTree,
    disk: FileSink<'_>,
    rootfs: FileSink<'_>,
    mut verity: HashTreeBuilder,
    progress: &dyn Fn(u64),
) -> Result<HashTree, BuildError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(16);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            for (first, data) in rx {
                verity.update_at(first, &data)?;
            }
            verity.finish()
        });
        let mut sink = TeeSink {
            disk,
            rootfs,
            hasher: tx,
            run: (0, Vec::with_capacity(HASH_RUN)),
        };
        let written = ext4
            .write(tree, &mut sink, progress)
            .map_err(BuildError::from);
        let sent = sink
            .send()
            .map_err(|_| BuildError::Internal("the dm-verity hasher stopped"));
        drop(sink);
        let hashed = match hasher.join() {
            Ok(result) => result.map_err(BuildError::from),
            Err(_) => Err(BuildError::Internal("the dm-verity hasher panicked")),
        };
        // The writer's error first, then the hasher's (its cause when the
        // last run could not be sent), then the send.
        written?;
        let tree = hashed?;
        sent?;
        Ok(tree)
    })
}
