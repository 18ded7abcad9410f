//! Writing: [`write_esp`] checks the spec ([`super::plan`]), clears the
//! range, formats it with `fatfs`, applies the fix-ups, creates the
//! directories, copies the files and places the reserved room.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::clock::{ClockGuard, FAT_END_UNIX, fat_date_time, fs_options};
use super::error::io_err;
use super::fixup::{fix_directories, patch_formatted};
use super::geometry::NUM_FATS;
use super::plan::{PlannedFile, plan};
use super::reserved::write_reserved;
use super::slice::{ZERO_BLOCK, is_zero};
use super::{
    EspEntry, EspReport, EspSource, EspSpec, FAT_EPOCH_UNIX, FatError, FileSlice, ReservedFile,
    SECTOR_SIZE, hex,
};

/// Buffer size for copying file contents.
pub(super) const COPY_BUF: usize = 256 << 10;

/// Formats `[offset, offset + spec.size)` of `file` as FAT32 and writes the
/// spec's files into it.
///
/// The file is extended (sparsely) if it is shorter than the range.  Bytes
/// outside the range are never touched; bytes inside it end up exactly as
/// the spec determines, whatever was there before (non-zero leftovers are
/// cleared, holes stay holes).  `offset` must be a multiple of 512: it is
/// recorded as `BPB_HiddSec`.  Sources are checked (existence, sizes,
/// names, free space) before anything is written; if an error happens
/// after that, the range holds an unspecified, partial filesystem.
pub fn write_esp(file: &File, offset: u64, spec: &EspSpec) -> Result<EspReport, FatError> {
    if offset % SECTOR_SIZE != 0 {
        return Err(FatError::InvalidOffset {
            offset,
            reason: "not a multiple of the 512-byte sector",
        });
    }
    let hidden_sectors =
        u32::try_from(offset / SECTOR_SIZE).map_err(|_| FatError::InvalidOffset {
            offset,
            reason: "beyond 2^32 sectors, which BPB_HiddSec cannot record",
        })?;
    let end = offset
        .checked_add(spec.size)
        .ok_or(FatError::InvalidOffset {
            offset,
            reason: "offset + size overflows",
        })?;
    let plan = plan(spec)?;
    let g = plan.geometry;
    let time = fat_date_time(spec.timestamp);
    if !(FAT_EPOCH_UNIX..=FAT_END_UNIX).contains(&spec.timestamp) {
        tracing::warn!(
            timestamp = spec.timestamp,
            "ESP timestamp outside FAT's 1980..2107 range; clamped"
        );
    }

    // Clear leftovers, then make sure the file covers the range.
    let file_len = file
        .metadata()
        .map_err(io_err("reading the image file's length"))?
        .len();
    clear_range(file, offset, end.min(file_len)).map_err(io_err("clearing the ESP range"))?;
    if file_len < end {
        file.set_len(end)
            .map_err(io_err("extending the image file to hold the ESP"))?;
    }

    let _clock = ClockGuard::set(time);
    let mut slice =
        FileSlice::new(file, offset, spec.size).map_err(io_err("opening the ESP range"))?;
    let mut options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_sector(SECTOR_SIZE as u16)
        .bytes_per_cluster(g.cluster_size() as u32)
        .total_sectors(g.total_sectors as u32)
        .fats(NUM_FATS as u8)
        // FAT spec, 'Boot Sector and BPB': 0xF8 is the media byte for fixed (non-removable) media.
        .media(0xF8)
        // FAT spec, 'Boot Sector and BPB': BS_DrvNum 0x80 for hard disks.
        .drive_num(0x80)
        .volume_id(spec.volume_id);
    if let Some(label) = plan.label {
        options = options.volume_label(label);
    }
    fatfs::format_volume(&mut slice, options).map_err(io_err("formatting the ESP as FAT32"))?;
    patch_formatted(&mut slice, &g, hidden_sectors, time, plan.label.is_some())?;

    let fs = fatfs::FileSystem::new(&mut slice, fs_options())
        .map_err(io_err("mounting the freshly formatted ESP"))?;
    if fs.fat_type() != fatfs::FatType::Fat32 {
        return Err(FatError::InvalidSize {
            size: spec.size,
            reason: "fatfs did not produce FAT32".to_string(),
        });
    }
    let root = fs.root_dir();
    for d in &plan.dirs {
        let path = d.join("/");
        let ctx = || format!("creating directory {path} in the ESP");
        if root.open_dir(&path).is_ok() {
            return Err(FatError::DuplicatePath {
                path: path.clone(),
                other: "an existing entry with the same long or 8.3 name".to_string(),
            });
        }
        root.create_dir(&path).map_err(io_err(ctx()))?;
    }
    let mut files = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let sha256 = copy_file(&root, f)?;
        files.push(EspEntry {
            path: f.path(),
            size: f.size,
            sha256,
        });
    }
    drop(root);
    let reserved_files: Vec<&PlannedFile<'_>> = plan
        .files
        .iter()
        .filter(|f| matches!(f.source, EspSource::Reserved(_)))
        .collect();
    let (stats, label, reserved) = if reserved_files.iter().all(|f| f.size == 0) {
        let stats = fs.stats().map_err(io_err("counting free clusters"))?;
        let label = fs.volume_label();
        fs.unmount().map_err(io_err("unmounting the ESP"))?;
        let reserved = reserved_files
            .iter()
            .map(|f| ReservedFile {
                path: f.path(),
                size: 0,
                start: spec.size,
            })
            .collect();
        (stats, label, reserved)
    } else {
        fs.unmount().map_err(io_err("unmounting the ESP"))?;
        write_reserved(&mut slice, &g, spec.size, &reserved_files)?
    };
    fix_directories(&mut slice, &g)?;
    slice.flush().map_err(io_err("writing the ESP"))?;

    Ok(EspReport {
        size: spec.size,
        volume_id: spec.volume_id,
        label,
        cluster_size: stats.cluster_size(),
        total_clusters: stats.total_clusters(),
        free_clusters: stats.free_clusters(),
        files,
        reserved,
    })
}

/// Copies one file into the filesystem, returning its SHA-256.
fn copy_file<T: fatfs::ReadWriteSeek>(
    root: &fatfs::Dir<'_, T>,
    f: &PlannedFile<'_>,
) -> Result<String, FatError> {
    let path = f.path();
    let ctx = || format!("writing {path} into the ESP");
    // create_file opens an existing file (also one whose generated 8.3 alias
    // matches); refuse rather than overwrite.
    if root.open_file(&path).is_ok() {
        return Err(FatError::DuplicatePath {
            path: f.given.to_string(),
            other: "an existing entry with the same long or 8.3 name".to_string(),
        });
    }
    let mut out = root.create_file(&path).map_err(io_err(ctx()))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    match f.source {
        // Allocated after the other files, at the end (see write_esp).
        EspSource::Reserved(_) => return Ok(String::new()),
        EspSource::Bytes(b) => {
            hasher.update(b);
            out.write_all(b).map_err(io_err(ctx()))?;
            written = b.len() as u64;
        }
        EspSource::File(p) => {
            let input = |source| FatError::Input {
                esp_path: f.given.to_string(),
                path: p.clone(),
                source,
            };
            let mut src = File::open(p).map_err(input)?;
            let mut buf = vec![0u8; COPY_BUF];
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(input(e)),
                };
                written += n as u64;
                if written > f.size {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(ctx()))?;
            }
            if written != f.size {
                return Err(input(io::Error::other(format!(
                    "size changed while copying: {} bytes planned, {written} read",
                    f.size
                ))));
            }
        }
    }
    out.flush().map_err(io_err(ctx()))?;
    debug_assert_eq!(written, f.size);
    Ok(hex(&hasher.finalize()))
}

/// Zeroes every non-zero 4 KiB block of `[start, end)`, reading only: holes
/// read as zero and are left alone.
fn clear_range(file: &File, start: u64, end: u64) -> io::Result<()> {
    // Holes read as zeros: only the data needs looking at (none in a
    // freshly created image).
    for segment in cocos_formats::sparse::segments(file, start, end) {
        if let cocos_formats::sparse::Segment::Data(a, b) = segment? {
            clear_data(file, a, b)?;
        }
    }
    Ok(())
}

/// Zeroes the non-zero 4 KiB pieces of `start..end`.
fn clear_data(file: &File, start: u64, end: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let zeros = [0u8; ZERO_BLOCK as usize];
    let mut at = start;
    while at < end {
        let n = CHUNK.min(end - at) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if !is_zero(&buf[..n]) {
            let mut i = 0u64;
            while i < n as u64 {
                let abs = at + i;
                let len = (ZERO_BLOCK - abs % ZERO_BLOCK).min(n as u64 - i);
                let piece = &buf[i as usize..(i + len) as usize];
                if !is_zero(piece) {
                    file.write_all_at(&zeros[..len as usize], abs)?;
                }
                i += len;
            }
        }
        at += n as u64;
    }
    Ok(())
}
