//! The GUID partition table of `disk.img`: [`cocos_formats::gpt`] (type
//! GUIDs, labels, the layout planner, the strict reader), re-exported, and
//! [`write_gpt`], which writes a layout through the `gpt` crate. The writer
//! lives here so that the formats crate, which cocos-init links, does not
//! depend on the `gpt` crate.
//!
//! On-disk format: UEFI Specification 2.10, §5.2.3 (protective MBR), §5.3.2
//! (GPT header) and §5.3.3 (GPT partition entry array).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};

pub use cocos_formats::gpt::*;

/// What went wrong writing a partition table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GptWriteError {
    /// The layout is invalid, or the table written cannot be read back.
    #[error(transparent)]
    Table(#[from] GptError),
    /// Reading, writing or resizing the file failed.
    #[error("I/O error on the disk image: {0}")]
    Io(#[from] std::io::Error),
    /// The file is already longer than the layout's disk, so the backup GPT
    /// would not be at its end.
    #[error("the image file is {file_len} bytes, longer than the layout's disk size {disk_size}")]
    FileLongerThanDisk {
        /// Current file length.
        file_len: u64,
        /// The layout's disk size.
        disk_size: u64,
    },
    /// The `gpt` crate failed writing the headers or entries.
    #[error("writing the GPT failed: {0}")]
    Write(#[from] ::gpt::GptError),
    /// The `gpt` crate failed writing the protective MBR.
    #[error("writing the protective MBR failed: {0}")]
    WriteMbr(#[from] ::gpt::mbr::MBRError),
    /// What was written reads back as a different table.
    #[error("the written partition table reads back differently from the layout")]
    ReadBackMismatch,
}

/// Writes the partition table of `layout` to `file`: protective MBR
/// (LBA 0), primary header (LBA 1) and entry array (LBAs 2–33), backup
/// entry array and header (last 33 LBAs).
///
/// The layout is [validated](DiskLayout::validate) first. A shorter file is
/// extended to `layout.disk_size` with `set_len` (sparse: no zeros are
/// written); a longer one is refused. Only the two GPT regions are written,
/// each completely (unused entries as zeros), so the result is the same
/// whatever the file held there before: the same layout gives the same
/// bytes. The table is read back with [`read_gpt`] and compared with
/// `layout` before returning. The file position is restored; the file is
/// not synced.
///
/// `file` must be open for reading and writing (the `gpt` crate reads the
/// entry array back to compute its CRC32).
///
/// The `gpt` crate does the writing: `GptConfig::create_from_device` with
/// the layout's disk GUID, then `update_partitions` with fully specified
/// entries (unique GUIDs, LBAs, attributes, names), so nothing is random.
pub fn write_gpt(file: &File, layout: &DiskLayout) -> Result<(), GptWriteError> {
    layout.validate()?;
    let file_len = file.metadata()?.len();
    if file_len > layout.disk_size {
        return Err(GptWriteError::FileLongerThanDisk {
            file_len,
            disk_size: layout.disk_size,
        });
    }
    if file_len < layout.disk_size {
        file.set_len(layout.disk_size)?;
    }
    tracing::debug!(
        disk_size = layout.disk_size,
        partitions = layout.partitions.len(),
        "writing GPT"
    );

    let mut device = file;
    let position = device.stream_position()?;
    // UEFI 2.10 §5.2.3: SizeInLBA is the disk size minus one, or 0xFFFFFFFF
    // if that does not fit.
    let mbr_size = u32::try_from(layout.sectors() - 1).unwrap_or(u32::MAX);
    ::gpt::mbr::ProtectiveMBR::with_lb_size(mbr_size).overwrite_lba0(&mut device)?;

    let mut disk = ::gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(::gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(device, Some(layout.disk_guid))?;
    // The crate writes the used entries of this map in key order into
    // slots 0, 1, …; validate() guarantees the keys are exactly 1..=n.
    let entries: BTreeMap<u32, ::gpt::partition::Partition> = layout
        .partitions
        .iter()
        .map(|p| {
            (
                p.number,
                ::gpt::partition::Partition {
                    part_type_guid: p.type_guid.into(),
                    part_guid: p.unique_guid,
                    first_lba: p.first_lba,
                    last_lba: p.last_lba,
                    flags: p.attributes,
                    name: p.name.clone(),
                },
            )
        })
        .collect();
    disk.update_partitions(entries)?;
    disk.write()?;
    device.seek(SeekFrom::Start(position))?;

    if read_gpt(file)? != *layout {
        return Err(GptWriteError::ReadBackMismatch);
    }
    Ok(())
}
