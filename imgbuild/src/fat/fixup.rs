//! Fix-ups after `fatfs`: what `fatfs::format_volume` cannot be told, and
//! the `.`/`..` entries it writes in a form `fsck.fat` rejects. Each one
//! checks that `fatfs` laid the bytes out as expected before changing them
//! ([`FatError::UnexpectedLayout`] otherwise).

use std::io::{Seek, SeekFrom};

use zerocopy::little_endian::U32;
use zerocopy::{FromZeros, IntoBytes};

use super::clock::encode_dos;
use super::error::io_err;
use super::geometry::{BACKUP_BOOT_SECTOR, Geometry, ROOT_CLUSTER};
use super::raw::{
    ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_VOLUME_ID, BOOT_SIGNATURE, BootSectorFat32, DIR_ENTRY_END,
    DIR_ENTRY_FREE, DIR_ENTRY_SIZE, DOT_NAME, DOTDOT_NAME, DirEntry, FAT32_ENTRY_MASK,
    FAT32_EOC_MIN,
};
use super::{FatError, FileSlice, SECTOR_SIZE};

/// Fixes what `fatfs::format_volume` cannot be told: `BPB_HiddSec` in the
/// boot sector and its backup, and the timestamps of the volume-label entry.
pub(super) fn patch_formatted(
    slice: &mut FileSlice<'_>,
    g: &Geometry,
    hidden_sectors: u32,
    time: fatfs::DateTime,
    has_label: bool,
) -> Result<(), FatError> {
    let ctx = "patching the ESP boot sector";
    // FAT spec, 'Boot Sector and BPB': BPB_HiddSec is the count of sectors
    // preceding the partition; firmware ignores it, mkfs.fat sets it to the
    // partition start.
    for sector in [0, BACKUP_BOOT_SECTOR] {
        let at = sector * SECTOR_SIZE;
        let mut bs = BootSectorFat32::new_zeroed();
        slice.read_at(at, bs.as_mut_bytes()).map_err(io_err(ctx))?;
        if bs.signature != BOOT_SIGNATURE {
            return Err(FatError::UnexpectedLayout {
                what: format!("no boot sector signature in sector {sector}"),
            });
        }
        bs.bpb.hidden_sectors = U32::new(hidden_sectors);
        slice.write_at(at, bs.as_bytes()).map_err(io_err(ctx))?;
    }

    if has_label {
        // The root directory starts the data region (BPB_RootClus = 2,
        // FAT spec, 'Boot Sector and BPB'); format puts the label entry first.
        let at = g.cluster_offset(ROOT_CLUSTER);
        let mut entry = DirEntry::new_zeroed();
        slice
            .read_at(at, entry.as_mut_bytes())
            .map_err(io_err(ctx))?;
        if entry.attr != ATTR_VOLUME_ID {
            return Err(FatError::UnexpectedLayout {
                what: "the volume label entry is not the root directory's first".to_string(),
            });
        }
        let (date, time_of_day) = encode_dos(time);
        entry.create_time_tenth = 0;
        entry.create_time.set(time_of_day);
        entry.create_date.set(date);
        entry.access_date.set(date);
        entry.write_time.set(time_of_day);
        entry.write_date.set(date);
        slice.write_at(at, entry.as_bytes()).map_err(io_err(ctx))?;
    }
    slice.seek(SeekFrom::Start(0)).map_err(io_err(ctx))?;
    Ok(())
}

/// The clusters of the chain starting at `first`, read from the first FAT.
pub(super) fn cluster_chain(
    slice: &mut FileSlice<'_>,
    g: &Geometry,
    first: u32,
) -> Result<Vec<u32>, FatError> {
    let mut chain = Vec::new();
    let mut cluster = first;
    loop {
        if cluster < 2 || u64::from(cluster) >= g.clusters + 2 || chain.len() as u64 > g.clusters {
            return Err(FatError::UnexpectedLayout {
                what: format!("bad cluster {cluster} in the chain starting at {first}"),
            });
        }
        chain.push(cluster);
        let mut entry = U32::ZERO;
        slice
            .read_at(g.fat_entry_offset(u64::from(cluster)), entry.as_mut_bytes())
            .map_err(io_err("reading the ESP's FAT"))?;
        let next = entry.get() & FAT32_ENTRY_MASK;
        if next >= FAT32_EOC_MIN {
            return Ok(chain);
        }
        cluster = next;
    }
}

/// Makes every directory's `.` and `..` entries what the FAT spec ('FAT
/// Directory Structure') and `fsck.fat` expect.  `fatfs` 0.3 writes
/// `[LFN ".", ".", LFN "..", ".."]` at the start of a new directory and
/// points `..` at cluster 2 when the parent is the root; the spec wants
/// `.` and `..` as the first two entries, without long names, and `..` at
/// cluster 0 for a child of the root.  The long-name entries are removed
/// and the rest of the directory moved up by two slots.
pub(super) fn fix_directories(slice: &mut FileSlice<'_>, g: &Geometry) -> Result<(), FatError> {
    let ctx = "fixing the '.' and '..' entries";
    let per_cluster = (g.cluster_size() / DIR_ENTRY_SIZE) as usize;
    let mut buf = vec![0u8; g.cluster_size() as usize];
    let mut todo = vec![(ROOT_CLUSTER, None::<u32>)];
    while let Some((first, parent)) = todo.pop() {
        let chain = cluster_chain(slice, g, first)?;
        let mut entries = vec![DirEntry::new_zeroed(); chain.len() * per_cluster];
        for (piece, &c) in entries.chunks_mut(per_cluster).zip(&chain) {
            slice
                .read_at(g.cluster_offset(c), piece.as_mut_bytes())
                .map_err(io_err(ctx))?;
        }
        // A first name byte of 0 ends the directory.
        let used = entries
            .iter()
            .position(|e| e.name[0] == DIR_ENTRY_END)
            .unwrap_or(entries.len());
        entries.truncate(used);
        if let Some(parent) = parent {
            let fatfs_layout = entries.len() >= 4
                && entries[0].attr == ATTR_LONG_NAME
                && entries[1].name == DOT_NAME
                && entries[2].attr == ATTR_LONG_NAME
                && entries[3].name == DOTDOT_NAME;
            if !fatfs_layout {
                return Err(FatError::UnexpectedLayout {
                    what: format!(
                        "directory at cluster {first}: '.' and '..' entries not laid out as \
                         [long name, '.', long name, '..']"
                    ),
                });
            }
            entries.remove(2);
            entries.remove(0);
            if parent == ROOT_CLUSTER {
                entries[1].set_first_cluster(0);
            }
            for (i, &c) in chain.iter().enumerate() {
                buf.fill(0);
                let from = (i * per_cluster).min(entries.len());
                let to = (from + per_cluster).min(entries.len());
                let piece = entries[from..to].as_bytes();
                buf[..piece.len()].copy_from_slice(piece);
                slice
                    .write_at(g.cluster_offset(c), &buf)
                    .map_err(io_err(ctx))?;
            }
        }
        for e in &entries {
            let is_subdir = e.name[0] != DIR_ENTRY_FREE
                && e.attr != ATTR_LONG_NAME
                && e.attr & ATTR_DIRECTORY != 0
                && e.name != DOT_NAME
                && e.name != DOTDOT_NAME;
            if is_subdir {
                todo.push((e.first_cluster(), Some(first)));
            }
        }
    }
    slice.seek(SeekFrom::Start(0)).map_err(io_err(ctx))?;
    Ok(())
}
