//! The build's error type, and the helper that names the file of an I/O
//! error.

use std::io;
use std::path::{Path, PathBuf};

use cocos_formats::ext4::Ext4Error;
use cocos_measure::verity::{GeometryError, ParamError, TreeError};
use thiserror::Error;

use crate::fat::FatError;
use crate::gpt::{GptError, GptWriteError};
use crate::grub::GrubError;
use crate::initramfs::InitramfsError;
use crate::spec::SpecError;
use crate::tree::SourceError;

/// A failed build. Each variant says which step and which file.
#[derive(Debug, Error)]
pub enum BuildError {
    /// An input or output file problem.
    #[error("{}: cannot {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A missing input.
    #[error("{}: {what} not found", path.display())]
    MissingInput {
        /// The path.
        path: PathBuf,
        /// Which input.
        what: &'static str,
    },
    /// The root tree could not be read.
    #[error("reading the root tree")]
    Source(#[from] SourceError),
    /// The root filesystem could not be built.
    #[error("building the root filesystem")]
    Ext4(#[from] Ext4Error),
    /// The verity parameters (the salt) are not valid.
    #[error("dm-verity parameters")]
    VerityParams(#[from] ParamError),
    /// The hash area does not fit its partition or its block size.
    #[error("laying out the dm-verity hash area")]
    VerityGeometry(#[from] GeometryError),
    /// The verity tree could not be built.
    #[error("building the dm-verity tree")]
    VerityTree(#[from] TreeError),
    /// manifest.json could not be serialised.
    #[error("writing manifest.json")]
    Manifest(#[source] serde_json::Error),
    /// A worker thread of the build failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// GRUB could not be built.
    #[error("building GRUB")]
    Grub(#[from] GrubError),
    /// The ESP could not be written.
    #[error("writing the EFI system partition")]
    Fat(#[from] FatError),
    /// The partition table could not be planned.
    #[error("writing the partition table")]
    Gpt(#[from] GptError),
    /// The partition table could not be written.
    #[error("writing the partition table")]
    GptWrite(#[from] GptWriteError),
    /// The initramfs could not be generated.
    #[error("building the initramfs")]
    Initramfs(#[from] InitramfsError),
    /// The partition table or the verity parameters cannot be used.
    #[error("image description: {0}")]
    Spec(SpecError),
}

/// Maps an I/O error on `path` while doing `action` to [`BuildError::Io`].
pub(super) fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io {
        path,
        action,
        source,
    }
}
