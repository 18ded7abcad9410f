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
mod gpt;
mod initrd;
mod manifest;
mod root;
mod staging;

use std::path::PathBuf;

use cocos_measure::verity::RootHash;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::fat::{self, EspFile, EspSource, EspSpec};
use crate::grub::{self, GrubError};
use crate::initramfs::InitramfsSpec;
use crate::seed::Seed;
use crate::seed::purpose;
use crate::spec::{Partition, VeritySpec};

use digests::{ReadBack, Workers, finish_digest, hash_range};
pub use error::BuildError;
use error::io_err;
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
    let (esp_offset, esp_size) = (esp_place.offset, esp_place.size);
    let disk = staging.create(artifact::DISK)?;
    // Long enough for the ESP now (so that writing it never changes the
    // length); the full length once the root filesystem is planned.
    disk.set_len(esp_offset + esp_size)
        .map_err(io_err(&cfg.out_dir.join(artifact::DISK), "size"))?;
    // The workers below stop early if the build fails and returns.
    let workers = Workers::default();
    let esp_name = format!("{}#{}", artifact::DISK, 1);
    let placeholder_hash = "0".repeat(2 * verity_params.algorithm.digest_size());
    let placeholder_cfg = grub::config(&grub::kernel_cmdline(&placeholder_hash, &cfg.cmdline));
    let grub_work = match &cfg.bootloader {
        Bootloader::Prebuilt(_) => None,
        Bootloader::Grub { .. } => Some(
            tempfile::tempdir_in(&cfg.out_dir)
                .map_err(io_err(&cfg.out_dir, "create a temporary directory in"))?,
        ),
    };
    let build_grub = |config: &str| -> Result<Option<Vec<u8>>, BuildError> {
        match (&cfg.bootloader, &grub_work) {
            (
                Bootloader::Grub {
                    modules,
                    modules_dir,
                },
                Some(work),
            ) => Ok(Some(grub::mkimage(
                config,
                modules,
                modules_dir,
                work.path(),
            )?)),
            _ => Ok(None),
        }
    };
    let initrd_source = initrd.esp_source();
    let esp_spec = |bootloader: EspSource, grub_cfg: EspSource| EspSpec {
        size: esp_size,
        volume_id: seed.u32_for(purpose::ESP_VOLUME_ID),
        label: "ESP".into(),
        timestamp: cfg.source_date_epoch,
        files: vec![
            EspFile {
                path: grub::BOOTLOADER_PATH.into(),
                source: bootloader,
            },
            EspFile {
                path: grub::CONFIG_PATH.into(),
                source: grub_cfg,
            },
            EspFile {
                path: grub::KERNEL_PATH.into(),
                source: EspSource::File(cfg.kernel.clone()),
            },
            EspFile {
                path: grub::INITRD_PATH.into(),
                source: initrd_source.clone(),
            },
        ],
    };
    let placeholder_boot = build_grub(&placeholder_cfg)?;
    let early_spec = esp_spec(
        match (&cfg.bootloader, &placeholder_boot) {
            (_, Some(image)) => EspSource::Reserved(image.len() as u64),
            (Bootloader::Prebuilt(path), None) => EspSource::File(path.clone()),
            (Bootloader::Grub { .. }, None) => {
                return Err(BuildError::Internal("GRUB was not built"));
            }
        },
        EspSource::Reserved(placeholder_cfg.len() as u64),
    );
    let early_esp = {
        let file = disk
            .try_clone()
            .map_err(io_err(&cfg.out_dir.join(artifact::DISK), "reopen"))?;
        let (control, name) = (workers.control(), esp_name.clone());
        std::thread::spawn(move || -> Result<(fat::EspReport, Sha256), BuildError> {
            let started = std::time::Instant::now();
            let report = fat::write_esp(&file, esp_offset, &early_spec)?;
            let mut h = Sha256::new();
            hash_range(
                &mut h,
                &file,
                &name,
                esp_offset,
                report.reserved_start(),
                &control,
            )?;
            tracing::debug!(
                "ESP written and hashed up to its reserved files (on a thread): {:.0?}",
                started.elapsed()
            );
            Ok((report, h))
        })
    };

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
    let cmdline = grub::kernel_cmdline(&root_hash.to_hex(), &cfg.cmdline);
    let grub_cfg = grub::config(&cmdline);
    let boot = build_grub(&grub_cfg)?;

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
    let (mut esp, mut esp_hash) = early_esp
        .join()
        .map_err(|_| BuildError::Internal("the ESP writer panicked"))??;
    let same_size = grub_cfg.len() == placeholder_cfg.len()
        && boot.as_ref().map(Vec::len) == placeholder_boot.as_ref().map(Vec::len);
    if same_size {
        fat::fill_reserved(
            &disk,
            esp_offset,
            &mut esp,
            grub::CONFIG_PATH,
            grub_cfg.as_bytes(),
        )?;
        if let Some(image) = &boot {
            fat::fill_reserved(&disk, esp_offset, &mut esp, grub::BOOTLOADER_PATH, image)?;
        }
        let start = esp.reserved_start();
        hash_range(
            &mut esp_hash,
            &disk,
            &esp_name,
            esp_offset + start,
            esp_size - start,
            &workers.control(),
        )?;
    } else {
        // Not expected: the placeholder has the root hash's length, and
        // grub-mkimage's output size depends on the configuration's
        // length only. Write the whole ESP again with the final content.
        tracing::debug!("reserved ESP room does not fit; writing the ESP again");
        let bootloader = match (&cfg.bootloader, boot) {
            (_, Some(image)) => EspSource::Bytes(image),
            (Bootloader::Prebuilt(path), None) => EspSource::File(path.clone()),
            (Bootloader::Grub { .. }, None) => {
                return Err(BuildError::Internal("GRUB was not built"));
            }
        };
        esp = fat::write_esp(
            &disk,
            esp_offset,
            &esp_spec(bootloader, EspSource::Bytes(grub_cfg.clone().into_bytes())),
        )?;
        esp_hash = Sha256::new();
        hash_range(
            &mut esp_hash,
            &disk,
            &esp_name,
            esp_offset,
            esp_size,
            &workers.control(),
        )?;
    }
    if esp.files.iter().any(|f| f.sha256.is_empty()) {
        return Err(BuildError::Internal("a reserved ESP file was not filled"));
    }
    let esp_digest = finish_digest(&esp_name, esp_size, esp_hash);
    drop(grub_work);
    let artifacts = digests::collect(
        read_back,
        esp_digest,
        rootfs_digest,
        table.root_number(&layout),
    )?;
    stage.done("digests");
    manifest::write(
        cfg,
        &mut staging,
        Record {
            cmdline: &cmdline,
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
        kernel_cmdline: cmdline,
        disk_size: layout.disk_size,
        root_size: sizes.root,
        verity_size: sizes.verity,
        artifacts,
    })
}
