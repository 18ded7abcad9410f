//! Step 7's end: `manifest.json`, everything a verifier needs, with the
//! digests of the inputs by role.

use std::fs::File;

use cocos_measure::verity::VerityParams;
use serde::Serialize;
use uuid::Uuid;

use super::digests::digest_range;
use super::error::{BuildError, io_err};
use super::initrd::Initrd;
use super::staging::Staging;
use super::{BuildConfig, BuildSummary, artifact};
use crate::fat;
use crate::gpt;
use crate::initramfs::InitramfsSummary;

/// One file of the build, with its digest.
#[derive(Debug, Clone, Serialize)]
pub struct FileDigest {
    /// Path (artifacts: name in the output directory; inputs: the role,
    /// `kernel` or `initramfs`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// What a generated initramfs holds, in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratedInitramfs {
    /// Kernel version of the modules.
    pub kernel_version: Option<String>,
    /// Module paths in the initramfs, in load order.
    pub modules: Vec<String>,
    /// Requested modules built into the kernel.
    pub builtin_modules: Vec<String>,
    /// Shared library paths in the initramfs.
    pub libraries: Vec<String>,
    /// Entries in the archive.
    pub entries: usize,
}

/// `manifest.json`: everything a verifier needs.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Tool name and version.
    pub tool: String,
    /// SOURCE_DATE_EPOCH used.
    pub source_date_epoch: i64,
    /// Image seed.
    pub seed: Uuid,
    /// Kernel command line (in GRUB's embedded configuration).
    pub kernel_cmdline: String,
    /// dm-verity parameters and root hash.
    pub verity: VerityParams,
    /// The partition table.
    pub partitions: gpt::DiskLayout,
    /// Files on the ESP.
    pub esp: Vec<fat::EspEntry>,
    /// Output files. `disk.img` is listed by partition (`disk.img#N`): its
    /// `cocos` partition and free space are zeros by construction.
    pub artifacts: Vec<FileDigest>,
    /// Input files.
    pub inputs: Vec<FileDigest>,
    /// The generated initramfs (absent for a prebuilt one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<GeneratedInitramfs>,
}

/// What the manifest records from the build, besides its configuration.
pub(super) struct Record<'a> {
    /// The command line, the root hash and every artifact's digest.
    pub summary: &'a BuildSummary,
    /// The dm-verity parameters, root hash included.
    pub verity: VerityParams,
    /// The final partition table.
    pub layout: &'a gpt::DiskLayout,
    /// The files on the ESP.
    pub esp: &'a [fat::EspEntry],
    /// The initramfs.
    pub initrd: &'a Initrd,
}

/// Digests the inputs, then writes `manifest.json`.
pub(super) fn write(
    cfg: &BuildConfig,
    staging: &mut Staging,
    record: Record<'_>,
) -> Result<(), BuildError> {
    let manifest = Manifest {
        tool: format!("cocos-imgbuild {}", env!("CARGO_PKG_VERSION")),
        source_date_epoch: cfg.source_date_epoch,
        seed: cfg.seed,
        kernel_cmdline: record.summary.kernel_cmdline.clone(),
        verity: record.verity,
        partitions: record.layout.clone(),
        esp: record.esp.to_vec(),
        artifacts: record.summary.artifacts.clone(),
        inputs: inputs(cfg, record.initrd)?,
        initramfs: record
            .initrd
            .generated()
            .map(|generated| generated_initramfs(&generated.summary)),
    };
    let file = staging.create(artifact::MANIFEST)?;
    let json = serde_json::to_vec_pretty(&manifest).map_err(BuildError::Manifest)?;
    std::io::Write::write_all(&mut &file, &json)
        .map_err(io_err(&staging.path(artifact::MANIFEST), "write"))
}

/// The digests of the input files, by role, not by path: where the inputs
/// lay must not change the manifest (the root tree is covered by the root
/// hash; the modules and libraries of a generated initramfs by
/// `rootfs.cpio.gz`'s digest).
fn inputs(cfg: &BuildConfig, initrd: &Initrd) -> Result<Vec<FileDigest>, BuildError> {
    let mut input_files = vec![(cfg.kernel.clone(), "kernel".to_owned())];
    match initrd {
        Initrd::Generated(generated) => {
            input_files.push((generated.spec.init.clone(), "init".into()));
            for f in &generated.spec.files {
                input_files.push((f.source.clone(), format!("initramfs-file:{}", f.dest)));
            }
        }
        Initrd::Prebuilt(path) => {
            input_files.push((path.clone(), "initramfs".into()));
        }
    }
    let mut inputs = Vec::new();
    for (path, role) in &input_files {
        let f = File::open(path).map_err(io_err(path, "read"))?;
        let len = f.metadata().map_err(io_err(path, "stat"))?.len();
        inputs.push(digest_range(&f, role, 0, len)?);
    }
    Ok(inputs)
}

/// What the manifest says of a generated initramfs.
fn generated_initramfs(summary: &InitramfsSummary) -> GeneratedInitramfs {
    GeneratedInitramfs {
        kernel_version: summary.kernel_version.clone(),
        modules: summary.modules.iter().map(|m| m.path.clone()).collect(),
        builtin_modules: summary.builtin_modules.clone(),
        libraries: summary.libraries.iter().map(|l| l.path.clone()).collect(),
        entries: summary.entries.len(),
    }
}
