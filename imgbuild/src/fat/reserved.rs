//! The reserved room: [`EspSource::Reserved`] files get the last clusters
//! of the ESP when it is written, so every byte before them is final and
//! can be hashed while their content (a `grub.cfg` carrying the root hash)
//! is still unknown; [`fill_reserved`] writes that content later, into
//! those clusters only.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};
use zerocopy::little_endian::U32;
use zerocopy::{FromZeros, IntoBytes};

use super::clock::fs_options;
use super::error::io_err;
use super::fixup::cluster_chain;
use super::geometry::{FSINFO_NEXT_FREE, FSINFO_OFFSET, Geometry, ROOT_CLUSTER};
use super::plan::PlannedFile;
use super::raw::{FSINFO_LEAD_SIGNATURE, FSINFO_STRUCT_SIGNATURE, FSINFO_TRAIL_SIGNATURE, FsInfo};
use super::write::COPY_BUF;
use super::{EspReport, FatError, FileSlice, ReservedFile, hex};

#[cfg(doc)]
use super::EspSource;

/// Gives the [`EspSource::Reserved`] files (already created, empty, in
/// write order) their clusters: the last ones of the filesystem, one
/// contiguous run per file, in order. `fatfs` allocates from the FSInfo
/// next-free hint, so the hint is pointed at the first of those clusters
/// for one more mount, then put back. The clusters are written as zeros.
pub(super) fn write_reserved(
    slice: &mut FileSlice<'_>,
    g: &Geometry,
    size: u64,
    files: &[&PlannedFile<'_>],
) -> Result<(fatfs::FileSystemStats, String, Vec<ReservedFile>), FatError> {
    let ctx = "placing the reserved files at the end of the ESP";
    let cluster = g.cluster_size();
    let needed: u64 = files.iter().map(|f| f.size.div_ceil(cluster)).sum();
    // Clusters are numbered from 2 (FAT spec, 'FAT Data Structure').
    let end = g.clusters + 2;
    let first = end
        .checked_sub(needed)
        .filter(|&c| c > u64::from(ROOT_CLUSTER))
        .ok_or_else(|| FatError::UnexpectedLayout {
            what: format!(
                "{needed} clusters reserved, more than the {} the ESP has",
                g.clusters
            ),
        })?;
    // The plan checked the space; what the other files took lies at the
    // start, so the run must be free. Check it rather than trust it.
    let mut fat = vec![0u8; (4 * needed) as usize];
    slice
        .read_at(g.fat_entry_offset(first), &mut fat)
        .map_err(io_err(ctx))?;
    if fat.iter().any(|&b| b != 0) {
        return Err(FatError::UnexpectedLayout {
            what: format!("clusters {first}..{end}, to be reserved, are not free"),
        });
    }
    let mut info = FsInfo::new_zeroed();
    slice
        .read_at(FSINFO_OFFSET, info.as_mut_bytes())
        .map_err(io_err(ctx))?;
    if info.lead_signature.get() != FSINFO_LEAD_SIGNATURE
        || info.struct_signature.get() != FSINFO_STRUCT_SIGNATURE
        || info.trail_signature.get() != FSINFO_TRAIL_SIGNATURE
    {
        return Err(FatError::UnexpectedLayout {
            what: "no FSInfo sector where fatfs puts it".to_string(),
        });
    }
    let hint = info.next_free;
    slice
        .write_at(FSINFO_NEXT_FREE, U32::new(first as u32).as_bytes())
        .map_err(io_err(ctx))?;
    // fatfs reads the boot sector from the current position.
    slice.seek(SeekFrom::Start(0)).map_err(io_err(ctx))?;

    let fs = fatfs::FileSystem::new(&mut *slice, fs_options())
        .map_err(io_err("mounting the ESP again"))?;
    let root = fs.root_dir();
    let zeros = vec![0u8; COPY_BUF];
    for f in files {
        let path = f.path();
        let mut out = root
            .open_file(&path)
            .map_err(io_err(format!("reserving {path} in the ESP")))?;
        let mut left = f.size;
        while left > 0 {
            let n = left.min(COPY_BUF as u64) as usize;
            out.write_all(&zeros[..n])
                .map_err(io_err(format!("reserving {path} in the ESP")))?;
            left -= n as u64;
        }
        out.flush()
            .map_err(io_err(format!("reserving {path} in the ESP")))?;
    }
    drop(root);
    let stats = fs.stats().map_err(io_err("counting free clusters"))?;
    let label = fs.volume_label();
    fs.unmount().map_err(io_err("unmounting the ESP"))?;
    // The hint as it was after the other files (fatfs left it past the
    // last cluster).
    slice
        .write_at(FSINFO_NEXT_FREE, hint.as_bytes())
        .map_err(io_err(ctx))?;

    // Each file must hold exactly its run of clusters.
    let mut at = first as u32;
    let mut reserved = Vec::with_capacity(files.len());
    for f in files {
        let n = f.size.div_ceil(cluster) as u32;
        if n == 0 {
            reserved.push(ReservedFile {
                path: f.path(),
                size: 0,
                start: size,
            });
            continue;
        }
        let chain = cluster_chain(slice, g, at)?;
        if !chain.iter().copied().eq(at..at + n) {
            return Err(FatError::UnexpectedLayout {
                what: format!("{} did not get clusters {at}..{}", f.path(), at + n),
            });
        }
        reserved.push(ReservedFile {
            path: f.path(),
            size: f.size,
            start: g.cluster_offset(at),
        });
        at += n;
    }
    Ok((stats, label, reserved))
}

/// Writes the content of an [`EspSource::Reserved`] file of the ESP that
/// [`write_esp`](super::write_esp) wrote at `offset` of `file`, and records
/// its digest in `report`. Only the file's own clusters are written: the
/// bytes before [`EspReport::reserved_start`] stay as they are. `content`
/// must have exactly the reserved size.
pub fn fill_reserved(
    file: &std::fs::File,
    offset: u64,
    report: &mut EspReport,
    path: &str,
    content: &[u8],
) -> Result<(), FatError> {
    let Some(r) = report.reserved.iter().find(|r| r.path == path) else {
        return Err(FatError::NotFound {
            path: path.to_string(),
        });
    };
    if content.len() as u64 != r.size {
        return Err(FatError::ReservedSize {
            path: path.to_string(),
            reserved: r.size,
            given: content.len() as u64,
        });
    }
    file.write_all_at(content, offset + r.start)
        .map_err(io_err(format!("writing {path} into the ESP")))?;
    for e in report.files.iter_mut().filter(|e| e.path == path) {
        e.sha256 = hex(&Sha256::digest(content));
    }
    Ok(())
}
