//! Steps 1, 5 and the end of 7: the EFI system partition, partition 1 of
//! `disk.img`. Only `grub.cfg` (and a GRUB image embedding it) depends on
//! the root hash: the ESP is written first, on another thread, with room of
//! their final size (a placeholder root hash of the same length) reserved
//! at the end of the filesystem, and hashed up to that room while the root
//! filesystem is planned and, once it is written, beside the `rootfs.ext4`
//! digest. Once the root hash is known, GRUB is built with the real
//! configuration; at the end the reserved room is filled and the rest of
//! the ESP hashed.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use cocos_measure::verity::RootHash;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::digests::{Control, finish_digest, hash_range};
use super::error::{BuildError, io_err};
use super::gpt::EspPlace;
use super::initrd::Initrd;
use super::{Bootloader, BuildConfig, FileDigest, artifact};
use crate::fat::{self, EspEntry, EspFile, EspReport, EspSource, EspSpec};
use crate::grub;
use crate::seed::{Seed, purpose};

/// The files that depend on the root hash.
pub(super) struct BootFiles {
    /// The kernel command line, root hash included.
    pub cmdline: String,
    /// `grub.cfg`, which boots with it.
    config: String,
    /// GRUB with that configuration embedded (none for a prebuilt
    /// bootloader).
    image: Option<Vec<u8>>,
}

/// The finished ESP.
pub(super) struct Esp {
    /// Its files.
    pub files: Vec<EspEntry>,
    /// The digest of the whole partition.
    pub digest: FileDigest,
}

/// The ESP, being written and hashed up to its reserved room on another
/// thread.
pub(super) struct EarlyEsp<'a> {
    cfg: &'a BuildConfig,
    place: EspPlace,
    /// Its name among the artifacts: `disk.img#1`.
    name: String,
    content: Content,
    grub: Grub<'a>,
    /// `grub.cfg` with a placeholder root hash, and the GRUB image
    /// embedding it: the reserved room is their size.
    placeholder_cfg: String,
    placeholder_boot: Option<Vec<u8>>,
    control: Arc<Control>,
    writer: JoinHandle<Result<(EspReport, Sha256), BuildError>>,
}

impl<'a> EarlyEsp<'a> {
    /// Builds GRUB with a placeholder configuration (a root hash of the
    /// configured algorithm's size), then starts writing the ESP into
    /// `disk` at `place` on another thread, which `control` pauses or
    /// stops.
    pub(super) fn start(
        cfg: &'a BuildConfig,
        seed: &Seed,
        disk: &File,
        place: EspPlace,
        initrd: &Initrd,
        control: Arc<Control>,
    ) -> Result<Self, BuildError> {
        let name = format!("{}#{}", artifact::DISK, 1);
        let placeholder_hash = "0".repeat(2 * cfg.verity.algorithm.digest_size());
        let placeholder_cfg = grub::config(&grub::kernel_cmdline(&placeholder_hash, &cfg.cmdline));
        let grub = Grub::new(cfg)?;
        let content = Content {
            size: place.size,
            volume_id: seed.u32_for(purpose::ESP_VOLUME_ID),
            timestamp: cfg.source_date_epoch,
            kernel: cfg.kernel.clone(),
            initrd: initrd.esp_source(),
        };
        let placeholder_boot = grub.image(&placeholder_cfg)?;
        let early_spec = content.spec(
            match (&cfg.bootloader, &placeholder_boot) {
                (_, Some(image)) => EspSource::Reserved(image.len() as u64),
                (Bootloader::Prebuilt(path), None) => EspSource::File(path.clone()),
                (Bootloader::Grub { .. }, None) => {
                    return Err(BuildError::Internal("GRUB was not built"));
                }
            },
            EspSource::Reserved(placeholder_cfg.len() as u64),
        );
        let file = disk
            .try_clone()
            .map_err(io_err(&cfg.out_dir.join(artifact::DISK), "reopen"))?;
        let (thread_control, thread_name) = (Arc::clone(&control), name.clone());
        let writer = std::thread::spawn(move || -> Result<(EspReport, Sha256), BuildError> {
            let started = std::time::Instant::now();
            let report = fat::write_esp(&file, place.offset, &early_spec)?;
            let mut h = Sha256::new();
            hash_range(
                &mut h,
                &file,
                &thread_name,
                place.offset,
                report.reserved_start(),
                &thread_control,
            )?;
            tracing::debug!(
                "ESP written and hashed up to its reserved files (on a thread): {:.0?}",
                started.elapsed()
            );
            Ok((report, h))
        });
        Ok(EarlyEsp {
            cfg,
            place,
            name,
            content,
            grub,
            placeholder_cfg,
            placeholder_boot,
            control,
            writer,
        })
    }

    /// The kernel command line with `root_hash`, its `grub.cfg`, and GRUB
    /// built with that configuration embedded.
    pub(super) fn boot_files(&self, root_hash: &RootHash) -> Result<BootFiles, BuildError> {
        let cmdline = grub::kernel_cmdline(&root_hash.to_hex(), &self.cfg.cmdline);
        let config = grub::config(&cmdline);
        let image = self.grub.image(&config)?;
        Ok(BootFiles {
            cmdline,
            config,
            image,
        })
    }

    /// Waits for the writer, fills the reserved room with `boot` and hashes
    /// the rest of the ESP.
    pub(super) fn finish(self, disk: &File, boot: &BootFiles) -> Result<Esp, BuildError> {
        let (offset, size) = (self.place.offset, self.place.size);
        let (mut esp, mut esp_hash) = self
            .writer
            .join()
            .map_err(|_| BuildError::Internal("the ESP writer panicked"))??;
        let same_size = boot.config.len() == self.placeholder_cfg.len()
            && boot.image.as_ref().map(Vec::len) == self.placeholder_boot.as_ref().map(Vec::len);
        if same_size {
            fat::fill_reserved(
                disk,
                offset,
                &mut esp,
                grub::CONFIG_PATH,
                boot.config.as_bytes(),
            )?;
            if let Some(image) = &boot.image {
                fat::fill_reserved(disk, offset, &mut esp, grub::BOOTLOADER_PATH, image)?;
            }
            let start = esp.reserved_start();
            hash_range(
                &mut esp_hash,
                disk,
                &self.name,
                offset + start,
                size - start,
                &self.control,
            )?;
        } else {
            // Not expected: the placeholder has the root hash's length, and
            // grub-mkimage's output size depends on the configuration's
            // length only. Write the whole ESP again with the final content.
            tracing::debug!("reserved ESP room does not fit; writing the ESP again");
            let bootloader = match (&self.cfg.bootloader, &boot.image) {
                (_, Some(image)) => EspSource::Bytes(image.clone()),
                (Bootloader::Prebuilt(path), None) => EspSource::File(path.clone()),
                (Bootloader::Grub { .. }, None) => {
                    return Err(BuildError::Internal("GRUB was not built"));
                }
            };
            esp = fat::write_esp(
                disk,
                offset,
                &self.content.spec(
                    bootloader,
                    EspSource::Bytes(boot.config.clone().into_bytes()),
                ),
            )?;
            esp_hash = Sha256::new();
            hash_range(&mut esp_hash, disk, &self.name, offset, size, &self.control)?;
        }
        if esp.files.iter().any(|f| f.sha256.is_empty()) {
            return Err(BuildError::Internal("a reserved ESP file was not filled"));
        }
        Ok(Esp {
            files: esp.files,
            digest: finish_digest(&self.name, size, esp_hash),
        })
    }
}

/// What the ESP holds besides the bootloader and `grub.cfg`.
struct Content {
    size: u64,
    volume_id: u32,
    timestamp: i64,
    kernel: PathBuf,
    initrd: EspSource,
}

impl Content {
    /// The ESP with this bootloader and `grub.cfg`.
    fn spec(&self, bootloader: EspSource, grub_cfg: EspSource) -> EspSpec {
        EspSpec {
            size: self.size,
            volume_id: self.volume_id,
            label: "ESP".into(),
            timestamp: self.timestamp,
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
                    source: EspSource::File(self.kernel.clone()),
                },
                EspFile {
                    path: grub::INITRD_PATH.into(),
                    source: self.initrd.clone(),
                },
            ],
        }
    }
}

/// The bootloader: prebuilt, or GRUB built by `grub-mkimage` in a
/// temporary directory of the output directory (removed with this).
struct Grub<'a> {
    bootloader: &'a Bootloader,
    work: Option<TempDir>,
}

impl<'a> Grub<'a> {
    fn new(cfg: &'a BuildConfig) -> Result<Self, BuildError> {
        let work = match &cfg.bootloader {
            Bootloader::Prebuilt(_) => None,
            Bootloader::Grub { .. } => Some(
                tempfile::tempdir_in(&cfg.out_dir)
                    .map_err(io_err(&cfg.out_dir, "create a temporary directory in"))?,
            ),
        };
        Ok(Grub {
            bootloader: &cfg.bootloader,
            work,
        })
    }

    /// GRUB with `config` embedded; none for a prebuilt bootloader.
    fn image(&self, config: &str) -> Result<Option<Vec<u8>>, BuildError> {
        match (self.bootloader, &self.work) {
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
    }
}
