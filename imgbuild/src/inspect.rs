//! `cocos-imgbuild inspect`: what is in a `disk.img`, and whether its root
//! still matches the root hash it boots with.
//!
//! The root hash is taken from the kernel command line in the ESP's
//! `grub.cfg` (what GRUB passes to the kernel). The root partition is hashed
//! again from scratch with the parameters of the hash partition's
//! superblock; the result must equal that root hash and the stored tree,
//! and the partition GUIDs must be the root hash's halves.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cocos_measure::verity::{HashAreaLayout, HashTreeBuilder, Superblock};
use serde::Serialize;
use thiserror::Error;

use crate::fat::{self, EspEntry};
use crate::gpt::{self, DiskLayout};
use crate::grub;

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
}

/// The result of a re-verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Whether everything matched.
    pub ok: bool,
    /// Root hash recomputed from the root partition.
    pub computed_root_hash: String,
    /// Problems found (empty when `ok`).
    pub problems: Vec<String>,
}

/// What `inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The partition table.
    pub partitions: DiskLayout,
    /// Files on the ESP.
    pub esp_files: Vec<EspEntry>,
    /// Kernel command line found in `EFI/BOOT/grub.cfg`.
    pub kernel_cmdline: String,
    /// Root hash on that command line.
    pub root_hash: String,
    /// Verity algorithm, block sizes, data blocks, salt, UUID.
    pub verity: serde_json::Value,
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
    let part = |name: &str| {
        layout
            .partition(name)
            .cloned()
            .ok_or_else(|| InspectError::Missing(format!("{path}: no partition named {name:?}")))
    };
    let (esp, root, verity) = (part("esp")?, part("root")?, part("root-verity")?);

    let listing = fat::read_esp(&file, esp.offset, esp.size)?;
    let cfg = fat::read_esp_file(&file, esp.offset, esp.size, grub::CONFIG_PATH)?;
    let cfg = String::from_utf8_lossy(&cfg).into_owned();
    let cmdline = grub::cmdline_of(&cfg).ok_or_else(|| {
        InspectError::Missing(format!("{path}: no linux line in EFI/BOOT/grub.cfg"))
    })?;
    let root_hash = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("roothash="))
        .ok_or_else(|| {
            InspectError::Missing(format!("{path}: no roothash= on the kernel command line"))
        })?
        .to_owned();

    let mut sb_bytes = [0u8; 512];
    file.read_exact_at(&mut sb_bytes, verity.offset)
        .map_err(io)?;
    let mut problems = Vec::new();
    let sb = match Superblock::parse(&sb_bytes) {
        Ok(sb) => sb,
        Err(e) => {
            return Err(InspectError::Missing(format!(
                "{path}: partition {} (root-verity): invalid dm-verity superblock: {e}",
                verity.number
            )));
        }
    };
    let verity_json = serde_json::json!({
        "algorithm": sb.params.algorithm,
        "data_block_size": sb.params.data_block_size,
        "hash_block_size": sb.params.hash_block_size,
        "data_blocks": sb.data_blocks,
        "salt": sb.params.salt,
        "uuid": sb.uuid,
    });

    // Hash the root partition again.
    let bs = sb.params.data_block_size.bytes_u64();
    let data_len = sb.data_blocks * bs;
    if data_len > root.size {
        problems.push(format!(
            "the superblock covers {data_len} bytes but the root partition has {}",
            root.size
        ));
    }
    let mut builder = HashTreeBuilder::with_capacity(sb.params.clone(), sb.data_blocks);
    let mut buf = vec![0u8; 8 << 20];
    let mut done = 0u64;
    while done < data_len.min(root.size) {
        let n = (data_len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], root.offset + done)
            .map_err(io)?;
        builder.update(&buf[..n]);
        done += n as u64;
    }
    let computed = match builder.finish() {
        Ok(tree) => {
            let layout = HashAreaLayout::new(0, true, sb.params.hash_block_size)
                .map_err(|e| InspectError::Missing(e.to_string()))?;
            let mut stored = vec![0u8; tree.as_bytes().len()];
            file.read_exact_at(&mut stored, verity.offset + layout.tree_offset)
                .map_err(io)?;
            if stored != tree.as_bytes() {
                problems.push("the stored hash tree differs from the root partition's".into());
            }
            tree.root_hash().to_hex()
        }
        Err(e) => {
            problems.push(format!("cannot hash the root partition: {e}"));
            String::new()
        }
    };
    if computed != root_hash {
        problems.push(format!(
            "the root partition hashes to {computed}, not to the roothash= {root_hash} GRUB boots with"
        ));
    }
    let halves = (root_hash.len() == 64).then(|| (&root_hash[..32], &root_hash[32..]));
    let simple = |u: uuid::Uuid| u.simple().to_string();
    if halves
        != Some((
            &simple(root.unique_guid)[..],
            &simple(verity.unique_guid)[..],
        ))
    {
        problems
            .push("the root and root-verity partition GUIDs are not the root hash halves".into());
    }
    Ok(Inspection {
        partitions: layout,
        esp_files: listing.files,
        kernel_cmdline: cmdline,
        root_hash,
        verity: verity_json,
        verification: Verification {
            ok: problems.is_empty(),
            computed_root_hash: computed,
            problems,
        },
    })
}
