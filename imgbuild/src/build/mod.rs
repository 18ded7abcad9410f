//! `cocos-imgbuild build`: the pipeline as one readable sequence.
//!
//! 1. Write the FAT ESP into partition 1 of `disk.img` on another thread,
//!    with room reserved at its end for the files that depend on the root
//!    hash (`grub.cfg`, and GRUB when it embeds that configuration), and
//!    start hashing the bytes before that room.
//! 2. Scan the root tree and plan its ext4 filesystem (sizes known, nothing
//!    written yet); plan the partitions.
//! 3. Write the ext4 blocks straight into partition 2 of `disk.img` and into
//!    `rootfs.ext4`, hashing each block for dm-verity as it is written (the
//!    ESP hashing waits meanwhile); start the `rootfs.ext4` digest.
//! 4. Write the verity superblock and tree into partition 3 and
//!    `rootfs.verity`.
//! 5. Put the root hash on the kernel command line and build GRUB with that
//!    configuration embedded.
//! 6. Write the GPT, whose root and verity GUIDs come from the root hash.
//! 7. Fill the ESP's reserved room, finish every digest, write
//!    `manifest.json`, then move every artifact into place.
//!
//! The initramfs is either a prebuilt file or generated first (before any
//! output is written, so a missing module fails fast) by
//! [`crate::initramfs`] with the build's SOURCE_DATE_EPOCH; either way it
//! becomes `rootfs.cpio.gz` and the ESP's `initrd.cpio.gz`.
//!
//! Everything goes to temporary names in the output directory first; on
//! failure they are removed, so no partial `disk.img` looks complete.

mod digests;
mod error;
mod esp;
mod gpt;
mod initrd;
mod manifest;
mod root;
mod staging;

use std::path::PathBuf;

use cocos_measure::verity::RootHash;
use serde::Serialize;
use uuid::Uuid;

use crate::grub::{self, GrubError};
use crate::initramfs::InitramfsSpec;
use crate::seed::Seed;
use crate::spec::{Partition, VeritySpec};

use digests::{ReadBack, Workers};
pub use error::BuildError;
use error::io_err;
use esp::EarlyEsp;
use gpt::Table;
use initrd::Initrd;
use manifest::Record;
pub use manifest::{FileDigest, GeneratedInitramfs, Manifest};
pub use root::ext4_options;
use root::{RootPlan, RootWritten};
use staging::Staging;

/// Where the initramfs comes from.
#[derive(Debug, Clone)]
pub enum InitramfsSource {
    /// A prebuilt file, copied as is.
    File(PathBuf),
    /// Generated (`cocos-imgbuild initramfs`); its `source_date_epoch` is
    /// replaced by the build's.
    Generate(Box<InitramfsSpec>),
}

/// Where the bootloader comes from.
#[derive(Debug, Clone)]
pub enum Bootloader {
    /// A prebuilt EFI binary, used as is (its configuration must find
    /// `EFI/BOOT/grub.cfg`).
    Prebuilt(PathBuf),
    /// GRUB built with `grub-mkimage` from these modules.
    Grub {
        /// Module names.
        modules: Vec<String>,
        /// Directory holding them.
        modules_dir: PathBuf,
    },
}

/// Everything a build needs.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Root tree (a directory).
    pub rootfs: PathBuf,
    /// Kernel (bzImage).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: InitramfsSource,
    /// Bootloader.
    pub bootloader: Bootloader,
    /// Extra kernel command line options.
    pub cmdline: String,
    /// The partition table, in disk order
    /// ([`spec::resolve_partitions`](crate::spec::resolve_partitions): the
    /// ESP first, one root, one root-verity, blank data partitions).
    pub partitions: Vec<Partition>,
    /// The dm-verity parameters.
    pub verity: VeritySpec,
    /// Seed of every UUID and salt.
    pub seed: Uuid,
    /// SOURCE_DATE_EPOCH.
    pub source_date_epoch: i64,
    /// Make every file owned by 0:0.
    pub root_owned: bool,
}

/// What `build` reports (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Root hash.
    pub root_hash: RootHash,
    /// Kernel command line.
    pub kernel_cmdline: String,
    /// Disk size in bytes.
    pub disk_size: u64,
    /// Root filesystem size in bytes.
    pub root_size: u64,
    /// Hash partition size in bytes.
    pub verity_size: u64,
    /// Artifacts with digests.
    pub artifacts: Vec<FileDigest>,
}

/// Names of the artifacts in the output directory.
pub mod artifact {
    /// The bootable disk.
    pub const DISK: &str = "disk.img";
    /// The root filesystem image.
    pub const ROOTFS: &str = "rootfs.ext4";
    /// The hash tree.
    pub const VERITY: &str = "rootfs.verity";
    /// The root hash.
    pub const ROOTHASH: &str = "rootfs.roothash";
    /// The initramfs.
    pub const INITRAMFS: &str = "rootfs.cpio.gz";
    /// The manifest.
    pub const MANIFEST: &str = "manifest.json";
}

/// Logs how long each step took (`-v`).
struct Stage(std::time::Instant);

impl Stage {
    fn new() -> Self {
        Stage(std::time::Instant::now())
    }

    fn done(&mut self, what: &str) {
        tracing::debug!("{what}: {:.0?}", self.0.elapsed());
        self.0 = std::time::Instant::now();
    }
}

/// Runs the whole build. `progress` is told the total bytes to write, then
/// the bytes written.
pub fn build(
    cfg: &BuildConfig,
    progress_total: &dyn Fn(u64),
    progress: &dyn Fn(u64),
) -> Result<BuildSummary, BuildError> {
    let seed = Seed::new(cfg.seed);
    let mut required = vec![(&cfg.rootfs, "root tree"), (&cfg.kernel, "kernel")];
    match &cfg.initramfs {
        InitramfsSource::File(path) => required.push((path, "initramfs")),
        InitramfsSource::Generate(spec) => required.push((&spec.init, "init program")),
    }
    for (path, what) in required {
        if !path.exists() {
            return Err(BuildError::MissingInput {
                path: path.clone(),
                what,
            });
        }
    }
    // A command line GRUB would rewrite would boot with something else than
    // what the manifest and inspect report: refuse it before writing.
    grub::check_cmdline_text(&cfg.cmdline).map_err(GrubError::from)?;
    if let Bootloader::Prebuilt(path) = &cfg.bootloader {
        if !path.exists() {
            return Err(BuildError::MissingInput {
                path: path.clone(),
                what: "bootloader",
            });
        }
    }
    let mut stage = Stage::new();
    // 0. A generated initramfs, first: its inputs are the likeliest to be
    // wrong (module names), and nothing is written yet.
    let initrd = Initrd::prepare(cfg, &mut stage)?;
    std::fs::create_dir_all(&cfg.out_dir).map_err(io_err(&cfg.out_dir, "create"))?;
    let mut staging = Staging::new(&cfg.out_dir);

    let table = Table::resolve(cfg, seed)?;
    let verity_params = root::verity_params(cfg, &seed)?;
    // 1. The ESP, first and on another thread. Only grub.cfg (and a GRUB
    // image embedding it) depends on the root hash: room of their final
    // size is reserved at the end of the filesystem, so everything before
    // it is written while the tree is scanned, and hashed then and beside
    // the rootfs.ext4 digest. The ESP is the first partition: its place
    // does not depend on the others' sizes.
    let esp_place = table.plan_esp()?;
    let disk = staging.create(artifact::DISK)?;
    // Long enough for the ESP now (so that writing it never changes the
    // length); the full length once the root filesystem is planned.
    disk.set_len(esp_place.offset + esp_place.size)
        .map_err(io_err(&cfg.out_dir.join(artifact::DISK), "size"))?;
    // The workers below stop early if the build fails and returns.
    let workers = Workers::default();
    let esp = EarlyEsp::start(
        cfg,
        &seed,
        &disk,
        esp_place,
        &initrd,
        &verity_params,
        workers.control(),
    )?;

    // 2. Plan the root filesystem, its hash tree and the partitions.
    let root = RootPlan::new(cfg, &seed, verity_params, table.root_size())?;
    let sizes = root.sizes();
    let places = table.plan(esp_place, sizes)?;
    let (root_offset, verity_offset) = (places.root_offset, places.verity_offset);
    disk.set_len(places.disk_size)
        .map_err(io_err(&cfg.out_dir.join(artifact::DISK), "size"))?;

    stage.done("plan");
    // 3. The root filesystem, hashed as it is written.
    // Writing and hashing the root filesystem keeps both cores busy: the
    // ESP hashing waits meanwhile, then runs beside the rootfs.ext4 digest.
    workers.pause();
    let RootWritten {
        rootfs,
        tree: tree_hash,
    } = root.write(&mut staging, &disk, root_offset, progress_total, progress)?;
    workers.resume();
    let root_hash = tree_hash.root_hash().clone();
    // rootfs.ext4 is complete: digest it while the rest is built.
    let rootfs_digest = digests::in_background(
        &rootfs,
        &cfg.out_dir.join(artifact::ROOTFS),
        artifact::ROOTFS,
        sizes.root,
        workers.control(),
    )?;

    stage.done("root filesystem");
    // 4. The hash partition and rootfs.verity.
    let verity_file = root.write_hash_area(&tree_hash, &mut staging, &disk, verity_offset)?;

    stage.done("hash tree");
    // 5. The command line with the root hash (it goes into the ESP once
    // the ESP thread is done).
    let boot = esp.boot_files(&root_hash)?;

    // 6. The partition table, with the GUIDs from the root hash.
    let layout = table.write(&disk, sizes, &root_hash)?;

    stage.done("partition table");
    // 7. Side artifacts and the manifest.
    let initramfs = initrd.write(&mut staging)?;
    let roothash_file = root::write_roothash(&mut staging, &root_hash)?;

    stage.done("side artifacts");
    let read_back = digests::read_back(
        &cfg.out_dir,
        ReadBack {
            disk: &disk,
            partitions: table.read_back(&layout),
            verity: &verity_file,
            roothash: &roothash_file,
            initramfs: &initramfs,
            initramfs_digest: initrd.digest(),
        },
    )?;
    // The ESP: fill the reserved room, hash the rest.
    let esp = esp.finish(&disk, &boot)?;
    let artifacts = digests::collect(
        read_back,
        esp.digest,
        rootfs_digest,
        table.root_number(&layout),
    )?;
    stage.done("digests");
    manifest::write(
        cfg,
        &mut staging,
        Record {
            cmdline: &boot.cmdline,
            verity: root.verity(&root_hash),
            layout: &layout,
            esp: &esp.files,
            artifacts: &artifacts,
            initrd: &initrd,
        },
    )?;
    // Renamed into place only when complete; not fsynced (like the tools it
    // replaces), so a machine crash right after a build may need a rebuild.
    staging.commit()?;
    stage.done("manifest");

    Ok(BuildSummary {
        out_dir: cfg.out_dir.clone(),
        root_hash,
        kernel_cmdline: boot.cmdline,
        disk_size: layout.disk_size,
        root_size: sizes.root,
        verity_size: sizes.verity,
        artifacts,
    })
}
