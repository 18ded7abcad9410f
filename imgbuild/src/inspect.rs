//! `cocos-imgbuild inspect`: what is in a `disk.img`, and whether its root
//! still matches the root hash it boots with.
//!
//! The root hash is taken from the configuration GRUB actually boots with:
//! the one embedded in `EFI/BOOT/BOOTX64.EFI` (read out of its `mods`
//! section, [`grub::efi_image`]), or, for a GRUB without one, the
//! `$prefix/grub.cfg` its normal mode reads. That configuration must be
//! exactly what cocos-imgbuild writes for its `linux` line, and the line is
//! parsed by the code cocos-init uses in the VM
//! ([`cocos_measure::cmdline`]). The ESP copy `EFI/BOOT/grub.cfg` must agree
//! with an embedded configuration. The hash partition's tree is verified
//! top-down against that root hash and every block of the root partition
//! against the tree ([`cocos_measure::verity::HashArea`], the check
//! cocos-init makes), and the partition GUIDs must be the ones
//! [`gpt::verity_partition_uuids`] derives from it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cocos_measure::cmdline;
use cocos_measure::verity::{
    CheckError, HashArea, Mismatch, RootHash, Superblock, VerityParams, Window,
};
use serde::Serialize;
use thiserror::Error;
use uuid::Uuid;

use crate::fat::{self, EspEntry, FatError};
use crate::gpt::{self, DiskLayout, PlacedPartition};
use crate::grub::{self, efi_image};

/// Why a disk could not be inspected.
#[derive(Debug, Error)]
pub enum InspectError {
    /// The disk could not be read.
    #[error("{path}: cannot read")]
    Io {
        /// The disk.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The partition table is invalid.
    #[error("partition table")]
    Gpt(#[from] gpt::GptError),
    /// The ESP is unreadable.
    #[error("EFI system partition")]
    Fat(#[from] fat::FatError),
    /// Something the image must have is missing.
    #[error("{0}")]
    Missing(String),
    /// The verity superblock describes more than its partitions hold.
    #[error(
        "{path}: partition {partition} (root-verity): the dm-verity superblock {claim}, more than the {available}-byte {what}"
    )]
    Overrun {
        /// The disk.
        path: String,
        /// Number of the hash partition.
        partition: u32,
        /// What the superblock claims.
        claim: String,
        /// Bytes available.
        available: u64,
        /// Where they were expected.
        what: &'static str,
    },
}

/// The result of a re-verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Whether everything matched.
    pub ok: bool,
    /// Whether every block of the root partition verified against the
    /// root hash GRUB boots with (through the stored tree, top-down).
    pub root_verified: bool,
    /// Problems found (empty when `ok`).
    pub problems: Vec<String>,
}

/// Where GRUB takes the configuration it boots with.
#[derive(Debug, Clone, Serialize)]
pub struct BootConfig {
    /// The file holding it on the ESP (`EFI/BOOT/BOOTX64.EFI` when it is
    /// embedded, else the `grub.cfg` normal mode reads).
    pub file: String,
    /// Whether it is embedded in the GRUB image (and so measured with it).
    pub embedded: bool,
    /// GRUB's embedded `$prefix`, when there is one.
    pub prefix: Option<String>,
    /// For an embedded configuration: whether the ESP copy
    /// `EFI/BOOT/grub.cfg` is identical (`None` when there is no copy or
    /// when the copy is itself what GRUB reads).
    pub esp_copy_agrees: Option<bool>,
}

/// What `inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The partition table.
    pub partitions: DiskLayout,
    /// Files on the ESP.
    pub esp_files: Vec<EspEntry>,
    /// Where GRUB's configuration comes from (`None` when the GRUB image
    /// cannot be read).
    pub boot_config: Option<BootConfig>,
    /// Kernel command line GRUB boots with (`None` when it cannot be
    /// determined: see the problems).
    pub kernel_cmdline: Option<String>,
    /// Root hash on that command line.
    pub root_hash: Option<RootHash>,
    /// Verity algorithm, block sizes, data blocks, salt, UUID.
    pub verity: VerityParams,
    /// The re-verification.
    pub verification: Verification,
}

/// Inspects and re-verifies `disk`.
pub fn inspect(disk: &Path) -> Result<Inspection, InspectError> {
    let path = disk.display().to_string();
    let io = |source| InspectError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(disk).map_err(io)?;
    let layout = gpt::read_gpt(&file)?;
    // A role's partition: the only one of its type (an image description
    // may relabel it), else the one with the default label.
    let part = |type_guid: Uuid, label: &str| {
        let mut of_type = layout
            .partitions
            .iter()
            .filter(|p| p.type_guid == type_guid);
        match (of_type.next(), of_type.next()) {
            (Some(p), None) => Some(p),
            _ => layout.partition(label),
        }
        .cloned()
        .ok_or_else(|| {
            InspectError::Missing(format!(
                "{path}: no partition of type {type_guid} or named {label:?}"
            ))
        })
    };
    let (esp, root, verity) = (
        part(gpt::ESP_TYPE, gpt::label::ESP)?,
        part(gpt::ROOT_X86_64_TYPE, gpt::label::ROOT)?,
        part(gpt::ROOT_X86_64_VERITY_TYPE, gpt::label::ROOT_VERITY)?,
    );
    let mut problems = Vec::new();

    let listing = fat::read_esp(&file, esp.offset, esp.size)?;
    let boot = boot_configuration(&file, &esp, &mut problems)?;
    let kernel_cmdline = boot.as_ref().and_then(|(cfg, text)| {
        grub::boot_cmdline(text)
            .map_err(|e| problems.push(format!("{}: {e}", describe(cfg))))
            .ok()
    });
    let params = kernel_cmdline.as_ref().and_then(|line| {
        cmdline::parse(line)
            .map_err(|e| problems.push(format!("the kernel command line GRUB boots with: {e}")))
            .ok()
    });

    let mut sb_bytes = [0u8; 512];
    file.read_exact_at(&mut sb_bytes, verity.offset)
        .map_err(io)?;
    let sb = Superblock::parse(&sb_bytes).map_err(|e| {
        InspectError::Missing(format!(
            "{path}: partition {} (root-verity): invalid dm-verity superblock: {e}",
            verity.number
        ))
    })?;
    let verity_params = VerityParams::new(&sb.params, sb.data_blocks).with_uuid(Some(sb.uuid));
    // The command line's root hash, typed for the superblock's algorithm.
    let root_hash = params.as_ref().and_then(|p| {
        RootHash::from_bytes(&p.root_hash, sb.params.algorithm)
            .map_err(|e| {
                problems.push(format!(
                    "roothash={} on the kernel command line GRUB boots with: {e}",
                    p.root_hash_hex
                ))
            })
            .ok()
    });

    // The superblock must describe no more than the partitions hold. (The
    // windows below would stop a read past them anyway, but as a read
    // error, not as what it is.)
    let bs = sb.params.data_block_size.bytes_u64();
    if sb.data_blocks.checked_mul(bs).is_none_or(|n| n > root.size) {
        return Err(InspectError::Overrun {
            path: path.clone(),
            partition: verity.number,
            claim: format!("covers {} data blocks of {bs} bytes", sb.data_blocks),
            available: root.size,
            what: "root partition",
        });
    }
    let area = HashArea::from_superblock(&sb, 0).map_err(|e| {
        InspectError::Missing(format!(
            "{path}: partition {} (root-verity): the dm-verity superblock describes an impossible tree: {e}",
            verity.number
        ))
    })?;
    let area_end = area
        .end()
        .map_err(|e| InspectError::Missing(e.to_string()))?;
    if area_end > verity.size {
        return Err(InspectError::Overrun {
            path,
            partition: verity.number,
            claim: format!("needs a hash area of {area_end} bytes"),
            available: verity.size,
            what: "root-verity partition",
        });
    }
    // The tree top-down against the root hash GRUB boots with, then every
    // block of the root partition against it: the check cocos-init and the
    // kernel make, over windows that end where the partitions end.
    let mut verified = false;
    if let (Some(params), Some((cfg, _))) = (&params, &boot) {
        let booted = format!(
            "the roothash={} in {}, which GRUB boots with",
            params.root_hash_hex,
            describe(cfg)
        );
        let hash_part = Window::new(&file, verity.offset, verity.size);
        let root_part = Window::new(&file, root.offset, root.size);
        if let Some(root_hash) = &root_hash {
            let result = area
                .verify_tree(&hash_part, root_hash)
                .and_then(|tree| area.verify_data(&root_part, &tree, root_hash, &|_| {}));
            match result {
                Ok(()) => verified = true,
                Err(e) => problems.push(format!(
                    "{}: it does not verify against {booted}",
                    located(e, &root, &verity)
                )),
            }
        }
        let (root_guid, verity_guid) = gpt::verity_partition_uuids(&params.root_hash);
        for (p, want) in [(&root, root_guid), (&verity, verity_guid)] {
            if p.unique_guid != want {
                problems.push(format!(
                    "partition {} ({}) has GUID {}, but roothash={} gives {want}",
                    p.number, p.name, p.unique_guid, params.root_hash_hex
                ));
            }
        }
    }
    Ok(Inspection {
        partitions: layout,
        esp_files: listing.files,
        boot_config: boot.map(|(cfg, _)| cfg),
        kernel_cmdline,
        root_hash,
        verity: verity_params,
        verification: Verification {
            ok: problems.is_empty(),
            root_verified: verified,
            problems,
        },
    })
}

/// A verification error with the partition it concerns.
fn located(e: CheckError, root: &PlacedPartition, verity: &PlacedPartition) -> String {
    let name = |p: &PlacedPartition| format!("partition {} ({})", p.number, p.name);
    match e {
        CheckError::Read { what: "data", .. } => format!("{}: {e}", name(root)),
        CheckError::Mismatch(Mismatch::DataBlock { .. } | Mismatch::SingleDataBlock) => {
            format!("{}: {e}", name(root))
        }
        _ => format!("{}: {e}", name(verity)),
    }
}

/// "the configuration embedded in EFI/BOOT/BOOTX64.EFI" or "EFI/BOOT/grub.cfg".
fn describe(cfg: &BootConfig) -> String {
    if cfg.embedded {
        format!("the configuration embedded in {}", cfg.file)
    } else {
        cfg.file.clone()
    }
}

/// The configuration GRUB boots with and its text, or `None` with the
/// reason added to `problems`.
fn boot_configuration(
    file: &File,
    esp: &PlacedPartition,
    problems: &mut Vec<String>,
) -> Result<Option<(BootConfig, String)>, InspectError> {
    let read = |p: &str| match fat::read_esp_file(file, esp.offset, esp.size, p) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(FatError::NotFound { .. }) => Ok(None),
        Err(e) => Err(InspectError::Fat(e)),
    };
    let Some(image) = read(grub::BOOTLOADER_PATH)? else {
        problems.push(format!(
            "no {} on the ESP: nothing for the firmware to boot",
            grub::BOOTLOADER_PATH
        ));
        return Ok(None);
    };
    let image = match efi_image::GrubImage::parse(&image) {
        Ok(image) => image,
        Err(e) => {
            problems.push(format!(
                "{}: {e}; cannot tell what it boots with",
                grub::BOOTLOADER_PATH
            ));
            return Ok(None);
        }
    };
    let copy = read(grub::CONFIG_PATH)?;
    if let Some(embedded) = image.config {
        let mut cfg = BootConfig {
            file: grub::BOOTLOADER_PATH.into(),
            embedded: true,
            prefix: image.prefix,
            esp_copy_agrees: None,
        };
        if let Some(copy) = copy {
            let agrees = copy == embedded.as_bytes();
            cfg.esp_copy_agrees = Some(agrees);
            if !agrees {
                problems.push(format!(
                    "{} differs from the configuration embedded in {}, which GRUB boots with: {}",
                    grub::CONFIG_PATH,
                    grub::BOOTLOADER_PATH,
                    first_difference(&embedded, &String::from_utf8_lossy(&copy))
                ));
            }
        }
        return Ok(Some((cfg, embedded)));
    }
    // No embedded configuration: normal mode reads $prefix/grub.cfg.
    let image_dir = grub::BOOTLOADER_PATH
        .rsplit_once('/')
        .map_or("", |(dir, _)| dir);
    let path = match efi_image::config_file(image.prefix.as_deref(), image_dir) {
        efi_image::ConfigFile::OnEsp(path) => path,
        efi_image::ConfigFile::OnDevice { prefix } => {
            problems.push(format!(
                "{} embeds no configuration and its prefix {prefix:?} names a device: GRUB reads its grub.cfg there, which inspect cannot check",
                grub::BOOTLOADER_PATH
            ));
            return Ok(None);
        }
    };
    let bytes = if path.eq_ignore_ascii_case(grub::CONFIG_PATH) {
        copy
    } else {
        read(&path)?
    };
    let cfg = BootConfig {
        file: path.clone(),
        embedded: false,
        prefix: image.prefix,
        esp_copy_agrees: None,
    };
    match bytes {
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some((cfg, text))),
            Err(_) => {
                problems.push(format!("{path}: not UTF-8 text"));
                Ok(None)
            }
        },
        None => {
            problems.push(format!(
                "{} embeds no configuration, so GRUB reads {path}, which is not on the ESP",
                grub::BOOTLOADER_PATH
            ));
            Ok(None)
        }
    }
}

/// The first line where two texts differ, for a problem line.
fn first_difference(booted: &str, copy: &str) -> String {
    let (mut a, mut b) = (booted.lines(), copy.lines());
    for n in 1.. {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => break,
            (x, y) => {
                return format!(
                    "line {n} is {:?} there and {:?} in the copy",
                    x.unwrap_or("(none)"),
                    y.unwrap_or("(none)")
                );
            }
        }
    }
    "they differ in line endings or trailing bytes".into()
}
