//! Step 0: the initramfs, a prebuilt file or generated before any output is
//! written (so that a missing module fails fast), with the build's
//! SOURCE_DATE_EPOCH. Either way it becomes `rootfs.cpio.gz` and the ESP's
//! `initrd.cpio.gz`.

use std::fs::File;
use std::path::PathBuf;

use super::error::{BuildError, io_err};
use super::staging::Staging;
use super::{BuildConfig, FileDigest, InitramfsSource, Stage, artifact};
use crate::fat::EspSource;
use crate::initramfs::{Initramfs, InitramfsSpec, InitramfsSummary};

/// The build's initramfs.
pub(super) enum Initrd {
    /// A prebuilt file, copied as is.
    Prebuilt(PathBuf),
    /// Generated, in memory.
    Generated(Box<Generated>),
}

/// A generated initramfs.
pub(super) struct Generated {
    /// The compressed archive.
    pub bytes: Vec<u8>,
    /// What it holds, and its digest.
    pub summary: InitramfsSummary,
    /// What it was generated from (the build's SOURCE_DATE_EPOCH in it).
    pub spec: InitramfsSpec,
}

impl Initrd {
    /// Generates the initramfs if the build asks for it (its inputs are the
    /// likeliest to be wrong, so this comes first), reporting the time it
    /// took to `stage`.
    pub(super) fn prepare(cfg: &BuildConfig, stage: &mut Stage) -> Result<Self, BuildError> {
        match &cfg.initramfs {
            InitramfsSource::File(path) => Ok(Initrd::Prebuilt(path.clone())),
            InitramfsSource::Generate(spec) => {
                let spec = InitramfsSpec {
                    source_date_epoch: cfg.source_date_epoch,
                    ..(**spec).clone()
                };
                let (bytes, summary) = Initramfs::build(&spec)?.compressed()?;
                stage.done("initramfs");
                Ok(Initrd::Generated(Box::new(Generated {
                    bytes,
                    summary,
                    spec,
                })))
            }
        }
    }

    /// Where the ESP's copy comes from.
    pub(super) fn esp_source(&self) -> EspSource {
        match self {
            Initrd::Prebuilt(path) => EspSource::File(path.clone()),
            Initrd::Generated(generated) => EspSource::Bytes(generated.bytes.clone()),
        }
    }

    /// Writes `rootfs.cpio.gz`.
    pub(super) fn write(&self, staging: &mut Staging) -> Result<File, BuildError> {
        let file = staging.create(artifact::INITRAMFS)?;
        match self {
            Initrd::Generated(generated) => std::io::Write::write_all(&mut &file, &generated.bytes)
                .map_err(io_err(&staging.path(artifact::INITRAMFS), "write"))?,
            Initrd::Prebuilt(path) => {
                std::io::copy(
                    &mut File::open(path).map_err(io_err(path, "read"))?,
                    &mut &file,
                )
                .map_err(io_err(path, "copy"))?;
            }
        }
        Ok(file)
    }

    /// The digest of `rootfs.cpio.gz` when known from when it was made (a
    /// generated initramfs); a prebuilt one is read back.
    pub(super) fn digest(&self) -> Option<FileDigest> {
        match self {
            Initrd::Prebuilt(_) => None,
            Initrd::Generated(generated) => Some(FileDigest {
                path: artifact::INITRAMFS.into(),
                size: generated.summary.size,
                sha256: generated.summary.sha256.clone(),
            }),
        }
    }

    /// The generated initramfs, if any.
    pub(super) fn generated(&self) -> Option<&Generated> {
        match self {
            Initrd::Prebuilt(_) => None,
            Initrd::Generated(generated) => Some(generated),
        }
    }
}
