//! `cocos-imgbuild build`: the pipeline as one readable sequence of steps,
//! each in its own module; [`build`] calls them in order and passes what
//! each one made to the next.
//!
//! 0. `initrd`: the initramfs is either a prebuilt file or generated first
//!    (before any output is written, so a missing module fails fast) by
//!    [`crate::initramfs`] with the build's SOURCE_DATE_EPOCH; either way
//!    it becomes `rootfs.cpio.gz` and the ESP's `initrd.cpio.gz`.
//! 1. `esp`: write the FAT ESP into partition 1 of `disk.img` on another
//!    thread, with room reserved at its end for the files that depend on
//!    the root hash (`grub.cfg`, and GRUB when it embeds that
//!    configuration), and start hashing the bytes before that room.
//! 2. `root`: scan the root tree and plan its ext4 filesystem (sizes known,
//!    nothing written yet); `gpt`: plan the partitions, with placeholder
//!    GUIDs.
//! 3. `root`: write the ext4 blocks straight into partition 2 of `disk.img`
//!    and into `rootfs.ext4`, hashing each block for dm-verity as it is
//!    written (the ESP hashing waits meanwhile); `digests`: start the
//!    `rootfs.ext4` digest.
//! 4. `root`: write the verity superblock and tree into partition 3 and
//!    `rootfs.verity`.
//! 5. `esp`: put the root hash on the kernel command line and build GRUB
//!    with that configuration embedded.
//! 6. `gpt`: write the GPT, whose root and verity GUIDs come from the root
//!    hash.
//! 7. Write `rootfs.cpio.gz` and `rootfs.roothash`; `digests`: read back
//!    in parallel what nothing has hashed yet; `esp`: fill the reserved
//!    room and finish the ESP's digest; `manifest`: write `manifest.json`;
//!    then move every artifact into place.
//!
//! Everything goes to temporary names in the output directory first
//! (`staging`); on failure they are removed, so no partial `disk.img` looks
//! complete. `error` holds [`BuildError`].

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

use digests::{Pending, Workers};
pub use error::BuildError;
use esp::EarlyEsp;
use gpt::Table;
use initrd::Initrd;
use manifest::Record;
pub use manifest::{FileDigest, GeneratedInitramfs, Manifest};
use root::RootPlan;
pub use root::ext4_options;
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

/// Checks, before anything is written, that the inputs exist and that the
/// extra command line is one GRUB keeps as it is (one it would rewrite
/// would boot with something else than what the manifest and inspect
/// report).
fn check_inputs(cfg: &BuildConfig) -> Result<(), BuildError> {
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
    grub::check_cmdline_text(&cfg.cmdline).map_err(GrubError::from)?;
    if let Bootloader::Prebuilt(path) = &cfg.bootloader {
        if !path.exists() {
            return Err(BuildError::MissingInput {
                path: path.clone(),
                what: "bootloader",
            });
        }
    }
    Ok(())
}

/// Runs the whole build. `progress` is told the total bytes to write, then
/// the bytes written.
pub fn build(
    cfg: &BuildConfig,
    progress_total: &dyn Fn(u64),
    progress: &dyn Fn(u64),
) -> Result<BuildSummary, BuildError> {
    let seed = Seed::new(cfg.seed);
    check_inputs(cfg)?;
    let mut stage = Stage::new();
    // 0. The initramfs first: its inputs are the likeliest to be wrong.
    let initrd = Initrd::prepare(cfg, &mut stage)?;
    let mut staging = Staging::in_dir(&cfg.out_dir)?;
    let table = Table::resolve(cfg, seed)?;
    let verity_params = root::verity_params(cfg, &seed)?;

    // 1. The ESP, on another thread (the workers stop if the build fails).
    let esp_place = table.plan_esp()?;
    let disk = staging.create_sized(artifact::DISK, esp_place.end())?;
    let workers = Workers::default();
    let esp = EarlyEsp::start(cfg, &seed, &disk, esp_place, &initrd, workers.control())?;

    // 2. Plan the root filesystem, its hash tree and the partitions.
    let root = RootPlan::new(cfg, &seed, verity_params, table.root_size())?;
    let sizes = root.sizes();
    let places = table.plan(esp_place, sizes)?;
    staging.set_len(&disk, artifact::DISK, places.disk_size)?;
    stage.done("plan");

    // 3. The root filesystem, hashed as it is written (both cores busy: the
    // ESP hashing waits meanwhile, then runs beside the rootfs.ext4 digest).
    workers.pause();
    let written = root.write(&mut staging, &disk, places.root, progress_total, progress)?;
    workers.resume();
    let root_hash = written.tree.root_hash().clone();
    let rootfs_digest = workers.digest(&written.rootfs, &staging, artifact::ROOTFS, sizes.root)?;
    stage.done("root filesystem");

    // 4. The hash partition and rootfs.verity.
    let verity = root.write_hash_area(&written.tree, &mut staging, &disk, places.verity)?;
    stage.done("hash tree");

    // 5. The command line with the root hash, and GRUB embedding it.
    let boot = esp.boot_files(&root_hash)?;

    // 6. The partition table, with the GUIDs from the root hash.
    let layout = table.write(&disk, sizes, &root_hash)?;
    stage.done("partition table");

    // 7. The side artifacts; every digest (the ESP's reserved room filled
    // last); manifest.json; then every artifact moved into place.
    let initramfs = initrd.write(&mut staging)?;
    let roothash = root::write_roothash(&mut staging, &root_hash)?;
    stage.done("side artifacts");
    let pending = Pending {
        disk: &disk,
        partitions: table.read_back(&layout),
        verity: &verity,
        roothash: &roothash,
        initramfs: &initramfs,
        initramfs_digest: initrd.digest(),
    };
    let read_back = digests::read_back(&staging, pending)?;
    let esp = esp.finish(&disk, &boot)?;
    let summary = BuildSummary {
        out_dir: cfg.out_dir.clone(),
        root_hash,
        kernel_cmdline: boot.cmdline,
        disk_size: layout.disk_size,
        root_size: sizes.root,
        verity_size: sizes.verity,
        artifacts: read_back.finish(esp.digest, rootfs_digest, table.root_number(&layout))?,
    };
    stage.done("digests");
    let record = Record {
        summary: &summary,
        verity: root.verity(&summary.root_hash),
        layout: &layout,
        esp: &esp.files,
        initrd: &initrd,
    };
    manifest::write(cfg, &mut staging, record)?;
    staging.commit()?;
    stage.done("manifest");
    Ok(summary)
}
