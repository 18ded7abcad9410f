//! Tests of the FAT32 ESP writer and reader against the reference tools
//! from dosfstools (`fsck.fat`, `mkfs.fat`) and mtools (`mdir`, `mtype`,
//! `mcopy`, `minfo`, `mmd`), plus coreutils (`sha256sum`, `du`).
//!
//! Expected values come from those tools, from the input bytes, or from
//! hand computation noted next to them; never from the code under test.
//! Missing tools make the tests fail with an install hint; they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use cocos_imgbuild::fat::{
    DEFAULT_ESP_SIZE, EspFile, EspSource, EspSpec, FatError, FatKind, FileSlice, fill_reserved,
    read_esp, read_esp_file, write_esp,
};
use common::{fsck_fat_clean, pseudo_random, run_ok, tool};
use proptest::prelude::*;
use tempfile::TempDir;

const MIB: u64 = 1 << 20;
const VOLUME_ID: u32 = 0xDEAD_BEEF;
/// `date -u -d @1700000000` = Tue Nov 14 22:13:20 UTC 2023.
const TS: i64 = 1_700_000_000;

// ---------------------------------------------------------------------------
// Helpers.

/// `fsck.fat -n -v` output, for boot-sector facts.
fn fsck_verbose(image: &Path) -> String {
    String::from_utf8(run_ok(tool("fsck.fat").args(["-n", "-v"]).arg(image)).stdout).unwrap()
}

/// An mtools drive spec for an image with the filesystem at `offset`.
fn mtools_image(image: &Path, offset: u64) -> String {
    if offset == 0 {
        image.display().to_string()
    } else {
        format!("{}@@{offset}", image.display())
    }
}

fn minfo(image: &Path, offset: u64) -> String {
    String::from_utf8(run_ok(tool("minfo").args(["-i", &mtools_image(image, offset), "::"])).stdout)
        .unwrap()
}

fn mcopy_out(image: &Path, offset: u64, esp_path: &str, dest: &Path) -> Vec<u8> {
    run_ok(
        tool("mcopy")
            .args(["-n", "-i", &mtools_image(image, offset)])
            .arg(format!("::/{esp_path}"))
            .arg(dest),
    );
    fs::read(dest).unwrap()
}

fn mtype(image: &Path, offset: u64, esp_path: &str) -> Vec<u8> {
    run_ok(
        tool("mtype")
            .args(["-i", &mtools_image(image, offset)])
            .arg(format!("::/{esp_path}")),
    )
    .stdout
}

/// Every path `mdir -/ -b` lists (directories end in `/`).
fn mdir_paths(image: &Path, offset: u64) -> Vec<String> {
    let out = run_ok(tool("mdir").args(["-/", "-b", "-i", &mtools_image(image, offset), "::"]));
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("::/").map(str::to_string))
        .collect();
    v.sort();
    v
}

fn sha256sum(path: &Path) -> String {
    let out = String::from_utf8(run_ok(tool("sha256sum").arg(path)).stdout).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

fn create(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

fn copy_range(src: &Path, offset: u64, len: u64, dest: &Path) {
    let f = File::open(src).unwrap();
    let out = create(dest);
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(MIB) as usize;
        f.read_exact_at(&mut buf[..n], offset + at).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            out.write_all_at(&buf[..n], at).unwrap();
        }
        at += n as u64;
    }
    out.set_len(len).unwrap();
}

/// Compares two files chunk by chunk; returns the offsets of differing bytes
/// (at most `limit`).
fn diff_files(a: &Path, b: &Path, limit: usize) -> Vec<u64> {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(
        la,
        lb,
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    let mut out = Vec::new();
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut at = 0;
    while at < la {
        let n = (la - at).min(MIB) as usize;
        fa.read_exact_at(&mut ba[..n], at).unwrap();
        fb.read_exact_at(&mut bb[..n], at).unwrap();
        if ba[..n] != bb[..n] {
            for i in 0..n {
                if ba[i] != bb[i] {
                    out.push(at + i as u64);
                    if out.len() >= limit {
                        return out;
                    }
                }
            }
        }
        at += n as u64;
    }
    out
}

/// The boot files of a typical image, on disk (for `sha256sum` and for
/// `EspSource::File`) and in memory.
struct Inputs {
    dir: TempDir,
    /// ESP path -> (host copy, bytes, give as `EspSource::File`?).
    files: BTreeMap<String, (PathBuf, Vec<u8>, bool)>,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut bz = pseudo_random((8 * MIB + 4321) as usize, 2);
        // A run of zeros inside a file must survive the zero-block skipping.
        bz[(3 * MIB) as usize..(3 * MIB + 200_000) as usize].fill(0);
        let contents: Vec<(&str, Vec<u8>, bool)> = vec![
            ("EFI/BOOT/BOOTX64.EFI", pseudo_random((MIB + 999) as usize, 1), true),
            (
                "EFI/BOOT/grub.cfg",
                b"set timeout=0\nmenuentry cocos {\n  linux /bzImage console=ttyS0\n  initrd /initrd.cpio.gz\n}\n"
                    .to_vec(),
                false,
            ),
            ("bzImage", bz, true),
            ("initrd.cpio.gz", pseudo_random((3 * MIB + 77) as usize, 3), true),
            ("EFI/cocos/empty.txt", Vec::new(), false),
        ];
        let mut files = BTreeMap::new();
        for (i, (esp, bytes, as_file)) in contents.into_iter().enumerate() {
            let host = dir.path().join(format!("input-{i}"));
            fs::write(&host, &bytes).unwrap();
            files.insert(esp.to_string(), (host, bytes, as_file));
        }
        Inputs { dir, files }
    }

    fn esp_files(&self) -> Vec<EspFile> {
        self.files
            .iter()
            .map(|(esp, (host, bytes, as_file))| EspFile {
                path: esp.clone(),
                source: if *as_file {
                    EspSource::File(host.clone())
                } else {
                    EspSource::Bytes(bytes.clone())
                },
            })
            .collect()
    }

    fn spec(&self) -> EspSpec {
        EspSpec {
            size: DEFAULT_ESP_SIZE,
            volume_id: VOLUME_ID,
            label: "ESP".into(),
            timestamp: TS,
            files: self.esp_files(),
        }
    }

    fn total_bytes(&self) -> u64 {
        self.files.values().map(|(_, b, _)| b.len() as u64).sum()
    }

    /// Every path mdir should list: the files and their directories.
    fn expected_mdir_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for esp in self.files.keys() {
            let parts: Vec<&str> = esp.split('/').collect();
            for depth in 1..parts.len() {
                let d = format!("{}/", parts[..depth].join("/"));
                if !v.contains(&d) {
                    v.push(d);
                }
            }
            v.push(esp.clone());
        }
        v.sort();
        v
    }
}

/// Checks an ESP at `offset` of `image` with fsck.fat and mtools.
fn check_with_reference_tools(inputs: &Inputs, image: &Path, offset: u64, size: u64) -> u64 {
    // fsck.fat has no offset option: check a copy of the partition.
    let part = inputs.dir.path().join(format!("part-{offset}.img"));
    let fsck_image = if offset == 0 {
        image.to_path_buf()
    } else {
        copy_range(image, offset, size, &part);
        part.clone()
    };
    let (fsck_files, used, total) = fsck_fat_clean(&fsck_image);
    // fsck.fat counts directory entries: the volume label, 3 directories
    // (EFI, EFI/BOOT, EFI/cocos) and 5 files.
    assert_eq!(fsck_files, 9);

    let verbose = fsck_verbose(&fsck_image);
    assert!(verbose.contains("32 bit entries"), "not FAT32:\n{verbose}");
    let hidden = format!(" {} hidden sectors", offset / 512);
    assert!(verbose.contains(&hidden), "expected {hidden:?}:\n{verbose}");

    let info = minfo(image, offset);
    assert!(info.contains("serial number: DEADBEEF"), "{info}");
    assert!(info.contains("disk type=\"FAT32   \""), "{info}");
    assert!(info.contains("disk label=\"ESP        \""), "{info}");

    assert_eq!(mdir_paths(image, offset), inputs.expected_mdir_paths());
    for (esp, (_, bytes, _)) in &inputs.files {
        let dest = inputs
            .dir
            .path()
            .join(format!("out-{offset}-{}", esp.replace('/', "_")));
        let got = mcopy_out(image, offset, esp, &dest);
        assert!(got == *bytes, "mcopy of {esp} differs from the input");
    }
    assert_eq!(
        mtype(image, offset, "EFI/BOOT/grub.cfg"),
        inputs.files["EFI/BOOT/grub.cfg"].1
    );
    let _ = fs::remove_file(&part);
    total - used
}

fn write_spec(dir: &Path, name: &str, spec: &EspSpec) -> PathBuf {
    let path = dir.join(name);
    let f = create(&path);
    write_esp(&f, 0, spec).unwrap();
    path
}

// ---------------------------------------------------------------------------
// 1. Reference tools accept the ESP and read every file back.

#[test]
fn esp_at_offset_0_passes_fsck_and_mtools_reads_every_file() {
    let inputs = Inputs::new();
    let image = inputs.dir.path().join("esp.img");
    let f = create(&image);
    let report = write_esp(&f, 0, &inputs.spec()).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&image).unwrap().len(), DEFAULT_ESP_SIZE);

    let free = check_with_reference_tools(&inputs, &image, 0, DEFAULT_ESP_SIZE);
    assert_eq!(
        u64::from(report.free_clusters),
        free,
        "free clusters vs fsck.fat"
    );
    assert_eq!(
        report.cluster_size, 512,
        "FAT spec table: 512-byte clusters up to 260 MB"
    );
    assert_eq!(report.volume_id, VOLUME_ID);
    assert_eq!(report.label, "ESP");
}

#[test]
fn esp_at_1mib_offset_leaves_the_rest_of_the_file_alone() {
    let inputs = Inputs::new();
    let image = inputs.dir.path().join("disk.img");
    let offset = MIB;
    let total = offset + DEFAULT_ESP_SIZE + MIB;
    let f = create(&image);
    f.set_len(total).unwrap();
    // Garbage before, after and inside the range (as if the image were
    // reused): outside must survive, inside must be cleared.
    let before = pseudo_random(offset as usize, 7);
    let after = pseudo_random(MIB as usize, 8);
    f.write_all_at(&before, 0).unwrap();
    f.write_all_at(&after, offset + DEFAULT_ESP_SIZE).unwrap();
    for at in [0, 100 * MIB, DEFAULT_ESP_SIZE - 65536] {
        f.write_all_at(&pseudo_random(65536, 9 + at), offset + at)
            .unwrap();
    }
    write_esp(&f, offset, &inputs.spec()).unwrap();

    let mut got = vec![0u8; offset as usize];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == before, "bytes before the ESP changed");
    let mut got = vec![0u8; MIB as usize];
    f.read_exact_at(&mut got, offset + DEFAULT_ESP_SIZE)
        .unwrap();
    assert!(got == after, "bytes after the ESP changed");
    assert_eq!(f.metadata().unwrap().len(), total);
    drop(f);

    check_with_reference_tools(&inputs, &image, offset, DEFAULT_ESP_SIZE);

    // The partition equals an ESP written on a fresh file, except
    // BPB_HiddSec (offset 28, 4 bytes) in the boot sector and its backup in
    // sector 6 (FAT spec, 'Boot Sector and BPB').
    let fresh = write_spec(inputs.dir.path(), "fresh.img", &inputs.spec());
    let part = inputs.dir.path().join("part.img");
    copy_range(&image, offset, DEFAULT_ESP_SIZE, &part);
    let diffs = diff_files(&fresh, &part, 100);
    assert!(
        diffs
            .iter()
            .all(|&d| (28..32).contains(&d) || (6 * 512 + 28..6 * 512 + 32).contains(&d)),
        "unexpected differences at {diffs:?}"
    );
    // 1 MiB / 512 = 2048 = 0x800, little-endian.
    let mut hidden = [0u8; 4];
    File::open(&part)
        .unwrap()
        .read_exact_at(&mut hidden, 28)
        .unwrap();
    assert_eq!(hidden, [0x00, 0x08, 0, 0]);
}

#[test]
fn small_esps_are_still_fat32_and_clean() {
    let inputs = Inputs::new();
    // 64 MiB, and the smallest size the writer claims works.
    let too_small = EspSpec {
        size: 32 * MIB,
        ..inputs.spec()
    };
    let f = create(&inputs.dir.path().join("small.img"));
    let min = match write_esp(&f, 0, &too_small) {
        Err(FatError::TooSmallForFat32 { size, min }) => {
            assert_eq!(size, 32 * MIB);
            min
        }
        other => panic!("expected TooSmallForFat32, got {other:?}"),
    };
    assert!(min > 32 * MIB && min < 34 * MIB, "min {min}");
    assert_eq!(f.metadata().unwrap().len(), 0, "nothing written on error");
    drop(f);
    for size in [64 * MIB, min] {
        let image = write_spec(
            inputs.dir.path(),
            "small.img",
            &EspSpec {
                size,
                ..inputs.spec()
            },
        );
        let (_, _, total) = fsck_fat_clean(&image);
        assert!(
            total >= 65525,
            "FAT32 needs >= 65525 clusters, fsck.fat counts {total}"
        );
        let info = minfo(&image, 0);
        assert!(info.contains("disk type=\"FAT32   \""), "{info}");
        assert_eq!(
            mtype(&image, 0, "EFI/BOOT/grub.cfg"),
            inputs.files["EFI/BOOT/grub.cfg"].1
        );
    }
    // One sector less than the minimum is refused.
    let f = create(&inputs.dir.path().join("small.img"));
    assert!(matches!(
        write_esp(
            &f,
            0,
            &EspSpec {
                size: min - 512,
                ..inputs.spec()
            }
        ),
        Err(FatError::TooSmallForFat32 { .. })
    ));
}

#[test]
fn larger_esp_uses_4k_clusters_and_is_clean() {
    // FAT spec 'FAT Volume Initialization': 4 KiB clusters from 260 MB to 8 GB.
    let inputs = Inputs::new();
    let image = write_spec(
        inputs.dir.path(),
        "big.img",
        &EspSpec {
            size: 1 << 30,
            ..inputs.spec()
        },
    );
    fsck_fat_clean(&image);
    let info = minfo(&image, 0);
    assert!(info.contains("cluster size: 8 sectors"), "{info}");
    assert!(info.contains("disk type=\"FAT32   \""), "{info}");
}

// ---------------------------------------------------------------------------
// 2. Determinism.

/// SHA-256 (hex) of `[0, len)` of `path`, by `head -c | sha256sum`.
fn sha256_prefix(path: &Path, len: u64) -> String {
    let out = run_ok(
        tool("sh")
            .arg("-c")
            .arg(format!("head -c {len} '{}' | sha256sum", path.display())),
    );
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn reserved_files_sit_at_the_end_and_filling_them_leaves_the_rest_alone() {
    let inputs = Inputs::new();
    // The bootloader, its configuration and the empty file are reserved;
    // the kernel and initramfs are written at once.
    let reserved = [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/BOOT/grub.cfg",
        "EFI/cocos/empty.txt",
    ];
    let mut spec = inputs.spec();
    for f in &mut spec.files {
        if reserved.contains(&f.path.as_str()) {
            f.source = EspSource::Reserved(inputs.files[&f.path].1.len() as u64);
        }
    }
    let image = inputs.dir.path().join("reserved.img");
    let f = create(&image);
    let mut report = write_esp(&f, 0, &spec).unwrap();

    // The reserved bytes are the filesystem's last clusters: the 1 MiB
    // bootloader and the 1-cluster grub.cfg (512-byte clusters) end it.
    let boot = inputs.files["EFI/BOOT/BOOTX64.EFI"].1.len() as u64;
    let cfg = inputs.files["EFI/BOOT/grub.cfg"].1.len() as u64;
    let start = report.reserved_start();
    assert_eq!(
        DEFAULT_ESP_SIZE - start,
        boot.div_ceil(512) * 512 + cfg.div_ceil(512) * 512
    );
    let before = sha256_prefix(&image, start);
    // Unfilled, the reserved files read as zeros.
    assert_eq!(
        read_esp_file(&f, 0, DEFAULT_ESP_SIZE, "EFI/BOOT/grub.cfg").unwrap(),
        vec![0u8; cfg as usize]
    );

    for path in reserved {
        fill_reserved(&f, 0, &mut report, path, &inputs.files[path].1).unwrap();
    }
    drop(f);
    assert_eq!(
        sha256_prefix(&image, start),
        before,
        "bytes before the reserved files changed"
    );
    check_with_reference_tools(&inputs, &image, 0, DEFAULT_ESP_SIZE);
    for e in &report.files {
        let host = &inputs.files[&e.path].0;
        assert_eq!(e.sha256, sha256sum(host), "{}", e.path);
    }

    // Wrong sizes and unknown paths are refused.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let err = fill_reserved(&f, 0, &mut report, "EFI/BOOT/grub.cfg", b"short").unwrap_err();
    assert!(
        matches!(err, FatError::ReservedSize { reserved, given: 5, .. } if reserved == cfg),
        "{err}"
    );
    let err = fill_reserved(&f, 0, &mut report, "bzImage", b"x").unwrap_err();
    assert!(matches!(err, FatError::NotFound { .. }), "{err}");
}

#[test]
fn same_spec_in_any_order_gives_identical_bytes() {
    let inputs = Inputs::new();
    let spec = inputs.spec();
    let mut reversed = spec.clone();
    reversed.files.reverse();
    let mut rotated = spec.clone();
    rotated.files.rotate_left(2);
    let a = write_spec(inputs.dir.path(), "a.img", &spec);
    let b = write_spec(inputs.dir.path(), "b.img", &reversed);
    let c = write_spec(inputs.dir.path(), "c.img", &rotated);
    assert_eq!(diff_files(&a, &b, 10), Vec::<u64>::new());
    assert_eq!(diff_files(&a, &c, 10), Vec::<u64>::new());
    // Writing again over an existing ESP gives the same bytes too.
    let f = OpenOptions::new().read(true).write(true).open(&c).unwrap();
    write_esp(&f, 0, &spec).unwrap();
    assert_eq!(diff_files(&a, &c, 10), Vec::<u64>::new());
}

#[test]
fn timestamp_volume_id_and_label_change_the_bytes() {
    let inputs = Inputs::new();
    let spec = EspSpec {
        size: 64 * MIB,
        ..inputs.spec()
    };
    let base = write_spec(inputs.dir.path(), "base.img", &spec);
    for (name, changed) in [
        (
            "ts",
            EspSpec {
                timestamp: TS + 86_400,
                ..spec.clone()
            },
        ),
        (
            "id",
            EspSpec {
                volume_id: VOLUME_ID ^ 1,
                ..spec.clone()
            },
        ),
        (
            "label",
            EspSpec {
                label: "BOOT".into(),
                ..spec.clone()
            },
        ),
    ] {
        let other = write_spec(inputs.dir.path(), &format!("{name}.img"), &changed);
        assert!(
            !diff_files(&base, &other, 1).is_empty(),
            "{name} did not change the bytes"
        );
    }
}

/// Every timestamp of every entry, read back through fatfs (an independent
/// reader of the on-disk fields; the writer's clock is not involved).
fn all_fatfs_times(image: &Path) -> Vec<(String, fatfs::DateTime, fatfs::DateTime, fatfs::Date)> {
    fn walk<T: fatfs::ReadWriteSeek>(
        dir: fatfs::Dir<'_, T>,
        prefix: &str,
        out: &mut Vec<(String, fatfs::DateTime, fatfs::DateTime, fatfs::Date)>,
    ) {
        for e in dir.iter() {
            let e = e.unwrap();
            let name = format!("{prefix}/{}", e.file_name());
            out.push((name.clone(), e.created(), e.modified(), e.accessed()));
            if e.is_dir() && e.file_name() != "." && e.file_name() != ".." {
                walk(e.to_dir(), &name, out);
            }
        }
    }
    let f = File::open(image).unwrap();
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
    let mut out = Vec::new();
    walk(fs.root_dir(), "", &mut out);
    out
}

fn dt(y: u16, mo: u16, d: u16, h: u16, mi: u16, s: u16) -> fatfs::DateTime {
    fatfs::DateTime {
        date: fatfs::Date {
            year: y,
            month: mo,
            day: d,
        },
        time: fatfs::Time {
            hour: h,
            min: mi,
            sec: s,
            millis: 0,
        },
    }
}

#[test]
fn timestamps_are_the_spec_time_in_utc() {
    let inputs = Inputs::new();
    // (SOURCE_DATE_EPOCH, expected UTC time as stored, `date -u -d @N`):
    // odd seconds round down to FAT's 2-second resolution; times before
    // 1980 clamp to the FAT epoch.
    for (ts, want) in [
        (TS, dt(2023, 11, 14, 22, 13, 20)), // Tue Nov 14 22:13:20 UTC 2023
        (TS + 1, dt(2023, 11, 14, 22, 13, 20)), // ... 22:13:21 -> :20
        (951_825_599, dt(2000, 2, 29, 11, 59, 58)), // Tue Feb 29 11:59:59 UTC 2000
        (0, dt(1980, 1, 1, 0, 0, 0)),       // 1970 clamps to 1980-01-01
    ] {
        let spec = EspSpec {
            size: 64 * MIB,
            timestamp: ts,
            ..inputs.spec()
        };
        let image = write_spec(inputs.dir.path(), "ts.img", &spec);
        let times = all_fatfs_times(&image);
        // 3 directories (each with "." and "..") and 5 files.
        assert_eq!(times.len(), 3 * 3 + 5);
        for (name, created, modified, accessed) in &times {
            assert_eq!(*created, want, "created of {name} for {ts}");
            assert_eq!(*modified, want, "modified of {name} for {ts}");
            assert_eq!(*accessed, want.date, "accessed of {name} for {ts}");
        }

        // mdir shows date and hh:mm of every entry.
        let listing = String::from_utf8(
            run_ok(tool("mdir").args(["-/", "-a", "-i"]).arg(&image).arg("::")).stdout,
        )
        .unwrap();
        // Lines are compared with runs of spaces collapsed.
        let stamp = format!(
            "{:04}-{:02}-{:02} {}:{:02}",
            want.date.year, want.date.month, want.date.day, want.time.hour, want.time.min
        );
        let is_date = |w: &str| {
            w.len() == 10
                && w.char_indices().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        c == '-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        };
        let entries: Vec<String> = listing
            .lines()
            .filter(|l| l.split_whitespace().any(is_date))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(entries.len(), times.len(), "mdir entries:\n{listing}");
        for l in entries {
            assert!(l.contains(&stamp), "mdir line {l:?} lacks {stamp:?}");
        }

        // The volume-label entry (first entry of the root directory) too.
        // Root directory sector = BPB_RsvdSecCnt + BPB_NumFATs * BPB_FATSz32.
        let f = File::open(&image).unwrap();
        let mut bpb = [0u8; 512];
        f.read_exact_at(&mut bpb, 0).unwrap();
        let rsvd = u64::from(u16::from_le_bytes([bpb[14], bpb[15]]));
        let nfats = u64::from(bpb[16]);
        let fatsz = u64::from(u32::from_le_bytes([bpb[36], bpb[37], bpb[38], bpb[39]]));
        let mut entry = [0u8; 32];
        f.read_exact_at(&mut entry, (rsvd + nfats * fatsz) * 512)
            .unwrap();
        assert_eq!(&entry[..11], b"ESP        ");
        assert_eq!(entry[11], 0x08, "ATTR_VOLUME_ID");
        // DOS date = (year-1980)<<9 | month<<5 | day; time = h<<11 | m<<5 | s/2.
        let date = ((want.date.year - 1980) << 9) | (want.date.month << 5) | want.date.day;
        let time = (want.time.hour << 11) | (want.time.min << 5) | (want.time.sec / 2);
        assert_eq!(
            u16::from_le_bytes([entry[24], entry[25]]),
            date,
            "label WrtDate"
        );
        assert_eq!(
            u16::from_le_bytes([entry[22], entry[23]]),
            time,
            "label WrtTime"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Reading back.

#[test]
fn read_esp_lists_exactly_the_files_written() {
    let inputs = Inputs::new();
    let image = inputs.dir.path().join("disk.img");
    let offset = MIB;
    let f = create(&image);
    write_esp(&f, offset, &inputs.spec()).unwrap();
    let report = write_esp(&f, offset, &inputs.spec()).unwrap();

    let listing = read_esp(&f, offset, DEFAULT_ESP_SIZE).unwrap();
    assert_eq!(listing.fat_type, FatKind::Fat32);
    assert_eq!(listing.volume_id, VOLUME_ID);
    assert_eq!(listing.label, "ESP");
    assert_eq!(listing.directories, ["EFI", "EFI/BOOT", "EFI/cocos"]);
    let got: Vec<(String, u64, String)> = listing
        .files
        .iter()
        .map(|e| (e.path.clone(), e.size, e.sha256.clone()))
        .collect();
    let want: Vec<(String, u64, String)> = inputs
        .files
        .iter()
        .map(|(esp, (host, bytes, _))| (esp.clone(), bytes.len() as u64, sha256sum(host)))
        .collect();
    assert_eq!(got, want);
    // The write report says the same, from the same oracle (the inputs'
    // paths in byte order, their sizes, sha256sum's digests), and mdir
    // lists exactly those files and their directories.
    let reported: Vec<(String, u64, String)> = report
        .files
        .iter()
        .map(|e| (e.path.clone(), e.size, e.sha256.clone()))
        .collect();
    assert_eq!(reported, want, "write report");
    assert_eq!(mdir_paths(&image, offset), inputs.expected_mdir_paths());

    // Reading single files; lookups ignore case like FAT.
    let cfg = &inputs.files["EFI/BOOT/grub.cfg"].1;
    assert_eq!(
        &read_esp_file(&f, offset, DEFAULT_ESP_SIZE, "EFI/BOOT/grub.cfg").unwrap(),
        cfg
    );
    assert_eq!(
        &read_esp_file(&f, offset, DEFAULT_ESP_SIZE, "/efi/boot/GRUB.CFG").unwrap(),
        cfg
    );
    assert_eq!(
        listing.get("efi/boot/grub.cfg").unwrap().path,
        "EFI/BOOT/grub.cfg"
    );
    assert!(
        read_esp_file(&f, offset, DEFAULT_ESP_SIZE, "EFI/cocos/empty.txt")
            .unwrap()
            .is_empty()
    );
    for missing in ["EFI/BOOT/nope.cfg", "EFI/BOOT", "nope/grub.cfg", ""] {
        assert!(
            matches!(
                read_esp_file(&f, offset, DEFAULT_ESP_SIZE, missing),
                Err(FatError::NotFound { .. })
            ),
            "{missing:?}"
        );
    }
    // A range beyond the file is an error, not a panic.
    assert!(matches!(
        read_esp(&f, offset + MIB, DEFAULT_ESP_SIZE),
        Err(FatError::OutOfRange { .. })
    ));
}

#[test]
fn read_esp_reads_an_esp_made_by_mkfs_fat_and_mcopy() {
    let inputs = Inputs::new();
    let image = inputs.dir.path().join("ref.img");
    // mkfs.fat -C takes the size in KiB.
    run_ok(
        tool("mkfs.fat")
            .args(["-F", "32", "-i", "12345678", "-n", "REFESP", "-C"])
            .arg(&image)
            .arg((DEFAULT_ESP_SIZE / 1024).to_string()),
    );
    for dir in ["EFI", "EFI/BOOT", "EFI/cocos"] {
        run_ok(tool("mmd").arg("-i").arg(&image).arg(format!("::/{dir}")));
    }
    for (esp, (host, _, _)) in &inputs.files {
        run_ok(
            tool("mcopy")
                .arg("-i")
                .arg(&image)
                .arg(host)
                .arg(format!("::/{esp}")),
        );
    }
    let f = File::open(&image).unwrap();
    let listing = read_esp(&f, 0, DEFAULT_ESP_SIZE).unwrap();
    assert_eq!(listing.fat_type, FatKind::Fat32);
    assert_eq!(listing.volume_id, 0x1234_5678);
    assert_eq!(listing.label, "REFESP");
    let got: BTreeMap<String, (u64, String)> = listing
        .files
        .iter()
        .map(|e| (e.path.clone(), (e.size, e.sha256.clone())))
        .collect();
    let want: BTreeMap<String, (u64, String)> = inputs
        .files
        .iter()
        .map(|(esp, (host, bytes, _))| (esp.clone(), (bytes.len() as u64, sha256sum(host))))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        read_esp_file(&f, 0, DEFAULT_ESP_SIZE, "EFI/BOOT/grub.cfg").unwrap(),
        inputs.files["EFI/BOOT/grub.cfg"].1
    );
}

// ---------------------------------------------------------------------------
// 4. Errors.

fn spec_with(files: Vec<EspFile>, size: u64) -> EspSpec {
    EspSpec {
        size,
        volume_id: VOLUME_ID,
        label: "ESP".into(),
        timestamp: TS,
        files,
    }
}

fn bytes_file(path: &str, len: usize) -> EspFile {
    EspFile {
        path: path.into(),
        source: EspSource::Bytes(vec![0x5A; len]),
    }
}

#[test]
fn missing_source_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bzImage");
    let spec = spec_with(
        vec![
            bytes_file("EFI/BOOT/grub.cfg", 10),
            EspFile {
                path: "bzImage".into(),
                source: EspSource::File(missing.clone()),
            },
        ],
        64 * MIB,
    );
    let f = create(&dir.path().join("esp.img"));
    let err = write_esp(&f, 0, &spec).unwrap_err();
    match &err {
        FatError::Input {
            esp_path,
            path,
            source,
        } => {
            assert_eq!(esp_path, "bzImage");
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Input, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("bzImage"),
        "{msg}"
    );
    assert_eq!(
        f.metadata().unwrap().len(),
        0,
        "the output must not be touched"
    );

    // A directory is not a file either.
    let spec = spec_with(
        vec![EspFile {
            path: "x".into(),
            source: EspSource::File(dir.path().to_path_buf()),
        }],
        64 * MIB,
    );
    assert!(matches!(
        write_esp(&f, 0, &spec),
        Err(FatError::Input { .. })
    ));
}

#[test]
fn files_that_do_not_fit_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = create(&dir.path().join("esp.img"));
    // One file larger than a 64 MiB ESP (a sparse source: only its size is read).
    let huge = dir.path().join("huge");
    File::create(&huge).unwrap().set_len(70 * MIB).unwrap();
    let spec = spec_with(
        vec![
            bytes_file("EFI/BOOT/grub.cfg", 10),
            EspFile {
                path: "bzImage".into(),
                source: EspSource::File(huge),
            },
        ],
        64 * MIB,
    );
    match write_esp(&f, 0, &spec) {
        Err(FatError::NoSpace {
            esp_path,
            size,
            needed,
            available,
            esp_size,
        }) => {
            assert_eq!(esp_path, "bzImage");
            assert_eq!(size, 70 * MIB);
            assert!(needed > available);
            assert_eq!(esp_size, 64 * MIB);
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert_eq!(f.metadata().unwrap().len(), 0);

    // Two files that fit alone but not together: the second in write
    // order (sorted paths) is named.
    let spec = spec_with(
        vec![
            bytes_file("b.bin", 40 * MIB as usize),
            bytes_file("a.bin", 40 * MIB as usize),
        ],
        64 * MIB,
    );
    let err = write_esp(&f, 0, &spec).unwrap_err();
    assert!(
        matches!(&err, FatError::NoSpace { esp_path, .. } if esp_path == "b.bin"),
        "{err}"
    );
    assert!(err.to_string().contains("b.bin"), "{err}");

    // Filling the ESP exactly up to the capacity the writer computes works,
    // and fsck.fat agrees the result is consistent.
    let spec = spec_with(vec![bytes_file("a.bin", 30 * MIB as usize)], 64 * MIB);
    let image = dir.path().join("ok.img");
    let report = write_esp(&create(&image), 0, &spec).unwrap();
    let (_, used, total) = fsck_fat_clean(&image);
    assert_eq!(total - used, u64::from(report.free_clusters));
    let fill = u64::from(report.free_clusters) * u64::from(report.cluster_size);
    let spec = spec_with(
        vec![
            bytes_file("a.bin", 30 * MIB as usize),
            bytes_file("b.bin", fill as usize),
        ],
        64 * MIB,
    );
    let image = dir.path().join("full.img");
    let report = write_esp(&create(&image), 0, &spec).unwrap();
    assert_eq!(report.free_clusters, 0);
    let (_, used, total) = fsck_fat_clean(&image);
    assert_eq!(used, total);
    let spec = spec_with(
        vec![
            bytes_file("a.bin", 30 * MIB as usize),
            bytes_file("b.bin", fill as usize + 1),
        ],
        64 * MIB,
    );
    assert!(matches!(
        write_esp(&create(&dir.path().join("over.img")), 0, &spec),
        Err(FatError::NoSpace { .. })
    ));
}

#[test]
fn file_larger_than_fat_allows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    // 4 GiB: one byte over FAT's 32-bit DIR_FileSize (sparse, never read).
    File::create(&big).unwrap().set_len(1 << 32).unwrap();
    let spec = spec_with(
        vec![EspFile {
            path: "big.img".into(),
            source: EspSource::File(big),
        }],
        DEFAULT_ESP_SIZE,
    );
    let err = write_esp(&create(&dir.path().join("esp.img")), 0, &spec).unwrap_err();
    assert!(
        matches!(&err, FatError::FileTooLarge { esp_path, size } if esp_path == "big.img" && *size == 1 << 32),
        "{err:?}"
    );
    assert!(err.to_string().contains("big.img"), "{err}");
}

#[test]
fn bad_sizes_offsets_names_and_labels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = create(&dir.path().join("esp.img"));
    let ok = || vec![bytes_file("EFI/BOOT/grub.cfg", 10)];

    for size in [0, 1 << 20, 64 * MIB + 1] {
        let err = write_esp(&f, 0, &spec_with(ok(), size)).unwrap_err();
        assert!(
            matches!(
                err,
                FatError::TooSmallForFat32 { .. } | FatError::InvalidSize { .. }
            ),
            "{size}: {err:?}"
        );
    }
    assert!(matches!(
        write_esp(&f, 1000, &spec_with(ok(), 64 * MIB)),
        Err(FatError::InvalidOffset { .. })
    ));

    for bad in [
        "EFI//x",
        "/EFI/x",
        "EFI/x/",
        "",
        "../x",
        "EFI/./x",
        "a*b",
        "a:b",
        "a\\b",
        "tab\tname",
        "trailing.",
        "trailing ",
        " leading",
        "a\"b",
        "emoji\u{1F600}",
    ] {
        let err = write_esp(&f, 0, &spec_with(vec![bytes_file(bad, 1)], 64 * MIB)).unwrap_err();
        assert!(
            matches!(&err, FatError::InvalidPath { path, .. } if path == bad),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    let long = "x".repeat(256);
    assert!(matches!(
        write_esp(&f, 0, &spec_with(vec![bytes_file(&long, 1)], 64 * MIB)),
        Err(FatError::InvalidPath { .. })
    ));

    // FAT names ignore case.
    let dup = vec![
        bytes_file("EFI/BOOT/grub.cfg", 1),
        bytes_file("efi/boot/GRUB.CFG", 2),
    ];
    assert!(matches!(
        write_esp(&f, 0, &spec_with(dup, 64 * MIB)),
        Err(FatError::DuplicatePath { .. })
    ));
    let conflict = vec![
        bytes_file("EFI/BOOT", 1),
        bytes_file("efi/boot/grub.cfg", 2),
    ];
    assert!(matches!(
        write_esp(&f, 0, &spec_with(conflict, 64 * MIB)),
        Err(FatError::PathConflict { .. })
    ));

    for label in ["TWELVE_CHARS", "ESP?", " ESP", "ÉSP"] {
        let spec = EspSpec {
            label: label.into(),
            ..spec_with(ok(), 64 * MIB)
        };
        assert!(
            matches!(write_esp(&f, 0, &spec), Err(FatError::InvalidLabel { .. })),
            "{label:?}"
        );
    }
    assert_eq!(f.metadata().unwrap().len(), 0, "nothing written on error");
}

#[test]
fn names_with_mixed_case_and_long_names_round_trip_through_mtools() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("esp.img");
    let files = vec![
        bytes_file("efi/Boot/a long name with spaces.cfg", 3),
        bytes_file("EFI/BOOT/BOOTX64.EFI", 4),
        bytes_file("EFI/boot/grubx64.efi", 5),
        bytes_file("loader/entries/cocos+1.conf", 6),
        bytes_file("Ünïcödé.txt", 7),
    ];
    // With no label: BPB says "NO NAME", no label entry.
    let spec = EspSpec {
        label: String::new(),
        ..spec_with(files, 64 * MIB)
    };
    let report = write_esp(&create(&image), 0, &spec).unwrap();
    fsck_fat_clean(&image);
    assert_eq!(report.label, "NO NAME");
    // The first spelling of a directory (in byte order, "EFI" < "efi") wins.
    let paths: Vec<&str> = report.files.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/a long name with spaces.cfg",
            "EFI/BOOT/grubx64.efi",
            "loader/entries/cocos+1.conf",
            "Ünïcödé.txt",
        ]
    );
    let mut want: Vec<String> = ["EFI/", "EFI/BOOT/", "loader/", "loader/entries/"]
        .iter()
        .map(|s| s.to_string())
        .chain(paths.iter().map(|s| s.to_string()))
        .collect();
    want.sort();
    assert_eq!(mdir_paths(&image, 0), want);
    assert_eq!(
        mtype(&image, 0, "EFI/BOOT/a long name with spaces.cfg"),
        vec![0x5A; 3]
    );
}

#[test]
fn directories_spanning_several_clusters_stay_consistent() {
    // 512-byte clusters hold 16 entries; each name here takes 4 (three
    // long-name entries and the short entry), so EFI/Linux spans 11
    // clusters and the root 11: the '.'/'..' fix-up moves entries across
    // cluster boundaries.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..40 {
        files.push(bytes_file(
            &format!("EFI/Linux/kernel-module-number-{i:03}.efi"),
            i * 37,
        ));
        files.push(bytes_file(
            &format!("root-level-file-number-{i:03}.txt"),
            1000 + i,
        ));
    }
    files.push(bytes_file("EFI/Linux/deeper/still/deeper/x.cfg", 5));
    // What mdir must list: the paths given, and their directories.
    let mut want: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    let image = dir.path().join("esp.img");
    let report = write_esp(&create(&image), 0, &spec_with(files, 64 * MIB)).unwrap();
    let (count, used, total) = fsck_fat_clean(&image);
    // label + 81 files + EFI, Linux, deeper, still, deeper
    assert_eq!(count, 1 + 81 + 5);
    assert_eq!(total - used, u64::from(report.free_clusters));
    want.extend(
        [
            "EFI/",
            "EFI/Linux/",
            "EFI/Linux/deeper/",
            "EFI/Linux/deeper/still/",
            "EFI/Linux/deeper/still/deeper/",
        ]
        .map(String::from),
    );
    want.sort();
    assert_eq!(mdir_paths(&image, 0), want);
    assert_eq!(
        mtype(&image, 0, "EFI/Linux/kernel-module-number-039.efi"),
        vec![0x5A; 39 * 37]
    );
    assert_eq!(
        mtype(&image, 0, "EFI/Linux/deeper/still/deeper/x.cfg"),
        vec![0x5A; 5]
    );
    let listing = read_esp(&File::open(&image).unwrap(), 0, 64 * MIB).unwrap();
    assert_eq!(listing.files.len(), 81);
    assert_eq!(listing.directories.len(), 5);

    // An empty ESP is fine too.
    let image = dir.path().join("empty.img");
    write_esp(&create(&image), 0, &spec_with(Vec::new(), 64 * MIB)).unwrap();
    let (count, _, _) = fsck_fat_clean(&image);
    assert_eq!(count, 1, "just the label");
}

// ---------------------------------------------------------------------------
// Sparseness.

#[test]
fn esp_stays_sparse() {
    let inputs = Inputs::new();
    let image = inputs.dir.path().join("esp.img");
    write_esp(&create(&image), 0, &inputs.spec()).unwrap();
    let allocated = fs::metadata(&image).unwrap().blocks() * 512;
    let data = inputs.total_bytes();
    let du = String::from_utf8(run_ok(tool("du").arg("-k").arg(&image)).stdout).unwrap();
    println!(
        "256 MiB ESP holding {data} bytes of files: {allocated} bytes allocated (du -k: {})",
        du.trim()
    );
    // Data plus the used part of two FATs, boot sectors and directories:
    // well under 1 MiB of overhead (and 200 000 zero bytes of bzImage may
    // even be holes).
    assert!(
        allocated <= data + MIB,
        "{allocated} allocated for {data} bytes of data"
    );
}

// ---------------------------------------------------------------------------
// The FileSlice adapter.

#[test]
fn file_slice_stays_inside_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let f = create(&dir.path().join("f"));
    f.write_all_at(&[0xAA; 3000], 0).unwrap();
    let mut s = FileSlice::new(&f, 1000, 1000).unwrap();
    assert_eq!(s.len(), 1000);
    assert!(s.seek(SeekFrom::Start(1001)).is_err());
    assert!(s.seek(SeekFrom::End(1)).is_err());
    assert!(s.seek(SeekFrom::Current(-1)).is_err());
    assert_eq!(s.seek(SeekFrom::End(-10)).unwrap(), 990);
    assert!(s.write_all(&[1; 11]).is_err(), "write past the end");
    s.write_all(&[1; 10]).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "EOF at the end");
    s.seek(SeekFrom::Start(0)).unwrap();
    s.write_all(&[2; 5]).unwrap();
    drop(s);
    let mut all = vec![0u8; 3000];
    f.read_exact_at(&mut all, 0).unwrap();
    assert!(all[..1000].iter().all(|&b| b == 0xAA));
    assert_eq!(&all[1000..1005], &[2; 5]);
    assert!(all[1005..1990].iter().all(|&b| b == 0xAA));
    assert!(all[1990..2000].iter().all(|&b| b == 1));
    assert!(all[2000..].iter().all(|&b| b == 0xAA));

    // A range past the end of the file, and read-only slices.
    assert!(FileSlice::new(&f, 2500, 1000).is_err());
    let mut ro = FileSlice::read_only(&f, 0, 3000).unwrap();
    assert!(ro.write_all(&[0]).is_err());
    let mut got = Vec::new();
    ro.read_to_end(&mut got).unwrap();
    assert_eq!(got, all);
}

#[test]
fn file_slice_zero_writes_leave_holes() {
    let dir = tempfile::tempdir().unwrap();
    let f = create(&dir.path().join("f"));
    f.set_len(64 * MIB).unwrap();
    let mut s = FileSlice::new(&f, MIB, 32 * MIB).unwrap();
    s.write_all(&vec![0u8; 16 * MIB as usize]).unwrap();
    s.write_all(&[7u8; 100]).unwrap();
    drop(s);
    let allocated = f.metadata().unwrap().blocks() * 512;
    assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, MIB + 16 * MIB).unwrap();
    assert_eq!(b[0], 7);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any sequence of writes (many of them all-zero, over earlier data)
    /// leaves the file exactly as plain writes to a buffer would.
    #[test]
    fn file_slice_matches_a_plain_buffer(
        ops in prop::collection::vec((0u64..200_000, 1usize..20_000, any::<bool>(), any::<u8>()), 1..40),
        offset in 0u64..10_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let f = create(&dir.path().join("f"));
        let len = 220_000u64;
        f.set_len(offset + len).unwrap();
        let mut model = vec![0u8; len as usize];
        let mut s = FileSlice::new(&f, offset, len).unwrap();
        for (at, n, zero, byte) in ops {
            let n = n.min((len - at) as usize);
            let data: Vec<u8> = if zero { vec![0; n] } else { (0..n).map(|i| byte.wrapping_add(i as u8) | 1).collect() };
            s.seek(SeekFrom::Start(at)).unwrap();
            s.write_all(&data).unwrap();
            model[at as usize..at as usize + n].copy_from_slice(&data);
            // Read back a window through the slice (exercises the cache).
            s.seek(SeekFrom::Start(at)).unwrap();
            let mut back = vec![0u8; n];
            s.read_exact(&mut back).unwrap();
            prop_assert_eq!(&back, &data);
        }
        drop(s);
        let mut disk = vec![0u8; len as usize];
        f.read_exact_at(&mut disk, offset).unwrap();
        prop_assert!(disk == model);
    }
}

// ---------------------------------------------------------------------------
// 5. Reading FAT12/16 and corrupt filesystems.

/// A FAT image made by mkfs.fat (`bits` 12 or 16, `kib` KiB, one sector
/// per cluster) holding `files` (ESP path, content) copied in by mcopy.
fn mkfs_image(dir: &Path, bits: u32, kib: u64, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let image = dir.join(format!("fat{bits}.img"));
    let _ = fs::remove_file(&image);
    run_ok(
        tool("mkfs.fat")
            .args(["-F", &bits.to_string(), "-s", "1", "-n", "SMALL", "-C"])
            .arg(&image)
            .arg(kib.to_string()),
    );
    let mut made = Vec::new();
    for (i, (esp, bytes)) in files.iter().enumerate() {
        let parts: Vec<&str> = esp.split('/').collect();
        for depth in 1..parts.len() {
            let d = parts[..depth].join("/");
            if !made.contains(&d) {
                run_ok(tool("mmd").arg("-i").arg(&image).arg(format!("::/{d}")));
                made.push(d);
            }
        }
        let host = dir.join(format!("in-{bits}-{i}"));
        fs::write(&host, bytes).unwrap();
        run_ok(
            tool("mcopy")
                .arg("-i")
                .arg(&image)
                .arg(&host)
                .arg(format!("::/{esp}")),
        );
    }
    image
}

#[test]
fn read_esp_reads_fat12_and_fat16_made_by_mkfs_fat() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("EFI/BOOT/grub.cfg", b"set timeout=0\n".to_vec()),
        ("EFI/BOOT/BOOTX64.EFI", pseudo_random(70_000, 5)),
        ("a long file name.bin", pseudo_random(3000, 6)),
        ("README.TXT", Vec::new()),
        ("docs/x.md", pseudo_random(513, 7)),
    ];
    for (bits, kib, kind) in [(12, 1024, FatKind::Fat12), (16, 8192, FatKind::Fat16)] {
        let image = mkfs_image(dir.path(), bits, kib, &files);
        let f = File::open(&image).unwrap();
        let len = fs::metadata(&image).unwrap().len();
        let listing = read_esp(&f, 0, len).unwrap();
        assert_eq!(listing.fat_type, kind);
        assert_eq!(listing.label, "SMALL");
        // Paths as mtools lists them.
        let mut paths: Vec<String> = listing
            .directories
            .iter()
            .map(|d| format!("{d}/"))
            .chain(listing.files.iter().map(|e| e.path.clone()))
            .collect();
        paths.sort();
        assert_eq!(paths, mdir_paths(&image, 0), "FAT{bits}");
        for (esp, bytes) in &files {
            let e = listing.get(esp).unwrap();
            assert_eq!(e.size, bytes.len() as u64, "{esp}");
            let host = dir.path().join("check");
            fs::write(&host, bytes).unwrap();
            assert_eq!(e.sha256, sha256sum(&host), "{esp}");
            assert_eq!(read_esp_file(&f, 0, len, esp).unwrap(), *bytes, "{esp}");
        }
    }
}

/// Offsets in a FAT16 image, from its boot sector (FAT spec, 'Boot Sector
/// and BPB'): (first FAT, root directory, first data cluster, cluster size).
fn fat16_layout(image: &[u8]) -> (usize, usize, usize, usize) {
    let le16 = |at: usize| u16::from_le_bytes([image[at], image[at + 1]]) as usize;
    let (bps, spc, reserved, fats) = (le16(11), image[13] as usize, le16(14), image[16] as usize);
    let (root_entries, fat_sectors) = (le16(17), le16(22));
    let fat = reserved * bps;
    let root = fat + fats * fat_sectors * bps;
    let data = root + (root_entries * 32).div_ceil(bps) * bps;
    (fat, root, data, spc * bps)
}

/// The root directory entry whose 8.3 name is `name` (11 bytes, padded).
fn root_entry(image: &[u8], root: usize, name: &[u8; 11]) -> usize {
    (0..512)
        .map(|i| root + 32 * i)
        .find(|&at| &image[at..at + 11] == name)
        .unwrap()
}

#[test]
fn read_esp_refuses_corrupt_filesystems_without_panicking_or_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("A.BIN", pseudo_random(3000, 8)),
        ("B.BIN", pseudo_random(1000, 9)),
        ("D/C.BIN", pseudo_random(100, 10)),
    ];
    let image = mkfs_image(dir.path(), 16, 8192, &files);
    let good = fs::read(&image).unwrap();
    let (fat, root, _, _) = fat16_layout(&good);
    let a = root_entry(&good, root, b"A       BIN");
    let b = root_entry(&good, root, b"B       BIN");
    let d = root_entry(&good, root, b"D          ");
    let cluster = |img: &[u8], entry: usize| u16::from_le_bytes([img[entry + 26], img[entry + 27]]);
    let set_cluster = |img: &mut Vec<u8>, entry: usize, c: u16| {
        img[entry + 26..entry + 28].copy_from_slice(&c.to_le_bytes());
    };
    let set_fat = |img: &mut Vec<u8>, c: u16, next: u16| {
        let at = fat + 2 * c as usize;
        img[at..at + 2].copy_from_slice(&next.to_le_bytes());
    };
    let (ca, cb, cd) = (cluster(&good, a), cluster(&good, b), cluster(&good, d));
    let le16_at = |img: &mut Vec<u8>, at: usize, v: u16| {
        img[at..at + 2].copy_from_slice(&v.to_le_bytes());
    };
    type Check = fn(&FatError, (u32, u32, u32)) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "a file at cluster 1",
            {
                let mut img = good.clone();
                set_cluster(&mut img, a, 1);
                img
            },
            |e, _| matches!(e, FatError::EntryCluster { path, cluster: 1, .. } if path == "A.BIN"),
        ),
        (
            "a directory at a cluster past the end",
            {
                let mut img = good.clone();
                set_cluster(&mut img, d, 0xFFF0);
                img
            },
            |e, _| matches!(e, FatError::EntryCluster { path, cluster: 0xFFF0, .. } if path == "D"),
        ),
        (
            "a file whose chain loops",
            {
                let mut img = good.clone();
                set_fat(&mut img, ca, ca);
                img
            },
            |e, (ca, _, _)| {
                matches!(e, FatError::ChainLoop { path, cluster }
                    if path == "A.BIN" && *cluster == ca)
            },
        ),
        (
            "a directory whose chain loops",
            {
                let mut img = good.clone();
                set_fat(&mut img, cd, cd);
                img
            },
            |e, (_, _, cd)| {
                matches!(e, FatError::ChainLoop { path, cluster }
                    if path == "D" && *cluster == cd)
            },
        ),
        (
            "two files sharing clusters",
            {
                let mut img = good.clone();
                set_cluster(&mut img, b, ca);
                img
            },
            |e, (ca, _, _)| {
                matches!(e, FatError::CrossLinked { path, cluster }
                    if path == "B.BIN" && *cluster == ca)
            },
        ),
        (
            "a chain shorter than the file",
            {
                let mut img = good.clone();
                set_fat(&mut img, ca, 0xFFFF);
                img
            },
            // 3000 bytes need 6 clusters of 512 bytes.
            |e, _| {
                matches!(e, FatError::ChainTooShort {
                    path, size: 3000, clusters: 1, cluster_size: 512
                } if path == "A.BIN")
            },
        ),
        (
            "a file chain into a free cluster",
            {
                let mut img = good.clone();
                set_fat(&mut img, ca, 0);
                img
            },
            |e, (ca, _, _)| {
                matches!(e, FatError::BadFatEntry { path, cluster, value: 0, .. }
                    if path == "A.BIN" && *cluster == ca)
            },
        ),
        (
            "a file chain into a bad cluster",
            {
                let mut img = good.clone();
                // 0xFFF7 marks a bad cluster on FAT16 (FAT spec, 'FAT Data Structure').
                set_fat(&mut img, cb, 0xFFF7);
                img
            },
            |e, (_, cb, _)| {
                matches!(e, FatError::BadFatEntry { path, cluster, value: 0xFFF7, .. }
                    if path == "B.BIN" && *cluster == cb)
            },
        ),
        (
            "no boot sector signature",
            {
                let mut img = good.clone();
                img[510] = 0;
                img
            },
            |e, _| matches!(e, FatError::NoBootSignature { found: [0, 0xAA] }),
        ),
        (
            "300 bytes per sector",
            {
                let mut img = good.clone();
                // BPB_BytsPerSec at offset 11 (FAT spec, 'Boot Sector and BPB').
                le16_at(&mut img, 11, 300);
                img
            },
            |e, _| {
                matches!(
                    e,
                    FatError::BadBootSector {
                        field: "BPB_BytsPerSec",
                        value: 300,
                        ..
                    }
                )
            },
        ),
        (
            "3 sectors per cluster",
            {
                let mut img = good.clone();
                // BPB_SecPerClus at offset 13.
                img[13] = 3;
                img
            },
            |e, _| {
                matches!(
                    e,
                    FatError::BadBootSector {
                        field: "BPB_SecPerClus",
                        value: 3,
                        ..
                    }
                )
            },
        ),
        (
            "no FAT",
            {
                let mut img = good.clone();
                // BPB_NumFATs at offset 16.
                img[16] = 0;
                img
            },
            |e, _| {
                matches!(
                    e,
                    FatError::BadBootSector {
                        field: "BPB_NumFATs",
                        value: 0,
                        ..
                    }
                )
            },
        ),
        (
            "more sectors than the image holds",
            {
                let mut img = good.clone();
                // BPB_TotSec16 at offset 19: 8192 KiB is 16384 sectors.
                le16_at(&mut img, 19, 16385);
                img
            },
            |e, _| {
                matches!(
                    e,
                    FatError::BadBootSector {
                        field: "BPB_TotSec16",
                        value: 16385,
                        ..
                    }
                )
            },
        ),
    ];
    let path = dir.path().join("corrupt.img");
    for (what, img, check) in cases {
        fs::write(&path, &img).unwrap();
        let f = File::open(&path).unwrap();
        let len = img.len() as u64;
        let err = read_esp(&f, 0, len).unwrap_err();
        assert!(
            check(&err, (ca.into(), cb.into(), cd.into())),
            "{what}: {err:?}"
        );
        // One line, naming the file or field.
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{what}: {msg}");
        if let FatError::EntryCluster { path, .. }
        | FatError::ChainLoop { path, .. }
        | FatError::CrossLinked { path, .. }
        | FatError::ChainTooShort { path, .. }
        | FatError::BadFatEntry { path, .. } = &err
        {
            assert!(msg.contains(&format!("{path:?}")), "{what}: {msg}");
        }
        if let FatError::BadBootSector { field, .. } = &err {
            assert!(msg.contains(field), "{what}: {msg}");
        }
    }
    // The intact image reads.
    fs::write(&path, &good).unwrap();
    let listing = read_esp(&File::open(&path).unwrap(), 0, good.len() as u64).unwrap();
    assert_eq!(listing.files.len(), 3);
}
