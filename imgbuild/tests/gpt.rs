//! The GPT of `disk.img` against the reference tools: `sgdisk` (Debian
//! package gdisk) must find no problems, `sfdisk --json` (package fdisk,
//! util-linux) must show exactly the planned table, and `read_gpt` must
//! read back what `write_gpt` wrote (and what `sgdisk` writes), reject
//! damage with typed errors and never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::Seek;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Output;

use cocos_imgbuild::gpt::{
    self, DiskLayout, ESP_TYPE, GptError, GptWriteError, HeaderKind, LINUX_DATA_TYPE,
    PartitionSpec, ROOT_X86_64_TYPE, ROOT_X86_64_VERITY_TYPE, plan_layout, read_gpt,
    verity_partition_uuids, write_gpt,
};
use cocos_imgbuild::seed::Seed;
use common::{pseudo_random, run_ok, tool};
use proptest::prelude::*;
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// A root hash recorded from a real systemd-repart 252 run (root partition
/// with `Verity=data`, hash partition with `Verity=hash`): repart printed
/// `"roothash" : "1f4f7b353629fa1c793b02c8250121a77e607bb28edf8f192849986d70db97ea"`
/// and gave the partitions the UUIDs in `verity_uuids_follow_systemd_repart`.
const ROOT_HASH: [u8; 32] = [
    0x1f, 0x4f, 0x7b, 0x35, 0x36, 0x29, 0xfa, 0x1c, 0x79, 0x3b, 0x02, 0xc8, 0x25, 0x01, 0x21, 0xa7,
    0x7e, 0x60, 0x7b, 0xb2, 0x8e, 0xdf, 0x8f, 0x19, 0x28, 0x49, 0x98, 0x6d, 0x70, 0xdb, 0x97, 0xea,
];

fn sgdisk(args: &[&str]) -> Output {
    run_ok(tool("sgdisk").args(args))
}

fn sfdisk(args: &[&str]) -> Output {
    run_ok(tool("sfdisk").args(args))
}

fn seed() -> Seed {
    Seed::new(Uuid::parse_str("8d1c7f4e-52a0-4c57-9a3e-6f0b1d2c3e4f").unwrap())
}

/// The four partitions of the product image.
fn product_specs() -> Vec<PartitionSpec> {
    let seed = seed();
    let (root_guid, verity_guid) = verity_partition_uuids(&ROOT_HASH);
    vec![
        PartitionSpec {
            name: "esp".into(),
            type_guid: ESP_TYPE,
            unique_guid: seed.uuid_for("partition:esp"),
            size: 256 * MIB,
        },
        PartitionSpec {
            name: "root".into(),
            type_guid: ROOT_X86_64_TYPE,
            unique_guid: root_guid,
            size: 300 * MIB,
        },
        PartitionSpec {
            name: "root-verity".into(),
            type_guid: ROOT_X86_64_VERITY_TYPE,
            unique_guid: verity_guid,
            size: 3 * MIB,
        },
        PartitionSpec {
            name: "cocos".into(),
            type_guid: LINUX_DATA_TYPE,
            unique_guid: seed.uuid_for("partition:cocos"),
            size: 20 * GIB,
        },
    ]
}

fn product_layout() -> DiskLayout {
    plan_layout(seed().uuid_for("gpt-disk"), &product_specs()).unwrap()
}

/// Two 1 MiB partitions: a 4 MiB disk, small enough to hold in memory.
fn small_layout() -> DiskLayout {
    let seed = seed();
    let specs = [("a", ESP_TYPE), ("b", LINUX_DATA_TYPE)].map(|(name, type_guid)| PartitionSpec {
        name: name.into(),
        type_guid,
        unique_guid: seed.uuid_for(name),
        size: 1,
    });
    plan_layout(seed.uuid_for("small-disk"), &specs).unwrap()
}

fn written(layout: &DiskLayout) -> tempfile::NamedTempFile {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    write_gpt(tmp.as_file(), layout).unwrap();
    tmp
}

fn path_str(tmp: &tempfile::NamedTempFile) -> &str {
    tmp.path().to_str().unwrap()
}

/// The bytes of the primary GPT (LBAs 0–33) and the backup (last 33 LBAs).
fn gpt_regions(file: &File, disk_size: u64) -> (Vec<u8>, Vec<u8>) {
    let mut head = vec![0; 34 * 512];
    file.read_exact_at(&mut head, 0).unwrap();
    let mut tail = vec![0; 33 * 512];
    file.read_exact_at(&mut tail, disk_size - 33 * 512).unwrap();
    (head, tail)
}

/// A temporary file holding `bytes`, sparse where they are zero.
fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(bytes.len() as u64).unwrap();
    for (i, chunk) in bytes.chunks(4096).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            tmp.as_file().write_all_at(chunk, i as u64 * 4096).unwrap();
        }
    }
    tmp
}

/// Test 1: the planned product table, written to a sparse file, passes
/// `sgdisk -v` and `sfdisk --json` shows exactly that table.
#[test]
fn product_table_matches_sgdisk_and_sfdisk() {
    let layout = product_layout();

    // The plan, by hand: 1 MiB = 2048 sectors; each partition follows the
    // previous one; the disk is the end of `cocos` plus 33 sectors of
    // backup GPT, rounded up to 1 MiB, i.e. one more MiB.
    let expected = [
        ("esp", 2048, 256 * 2048),
        ("root", 2048 + 256 * 2048, 300 * 2048),
        ("root-verity", 2048 + 556 * 2048, 3 * 2048),
        ("cocos", 2048 + 559 * 2048, 20 * 1024 * 2048),
    ];
    assert_eq!(layout.partitions.len(), 4);
    for (p, (name, start, sectors)) in layout.partitions.iter().zip(expected) {
        assert_eq!(p.name, name);
        assert_eq!(p.first_lba, start, "{name}");
        assert_eq!(p.sectors(), sectors, "{name}");
        assert_eq!(p.offset, start * 512);
        assert_eq!(p.last_lba, start + sectors - 1);
        assert_eq!(p.first_lba % 2048, 0, "{name} start not 1 MiB aligned");
        assert_eq!(p.size % MIB, 0, "{name} size not 1 MiB aligned");
    }
    assert_eq!(layout.partitions[0].first_lba, 2048);
    assert_eq!(layout.disk_size, 20 * GIB + 561 * MIB);
    assert_eq!(layout.disk_size % MIB, 0);

    let img = written(&layout);
    let out = sgdisk(&["-v", path_str(&img)]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("No problems found"),
        "sgdisk -v reported problems:\n{report}"
    );

    let out = sfdisk(&["--json", path_str(&img)]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["id"], layout.disk_guid.to_string().to_uppercase());
    assert_eq!(table["unit"], "sectors");
    assert_eq!(table["sectorsize"], 512);
    assert_eq!(table["firstlba"], 34);
    assert_eq!(table["lastlba"], layout.sectors() - 34);
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), layout.partitions.len());
    for (got, want) in parts.iter().zip(&layout.partitions) {
        // util-linux puts a "p" between a device name ending in a digit
        // and the partition number (the temporary name is random).
        let disk = path_str(&img);
        let sep = if disk.ends_with(|c: char| c.is_ascii_digit()) {
            "p"
        } else {
            ""
        };
        assert_eq!(
            got["node"],
            format!("{disk}{sep}{}", want.number),
            "partition number"
        );
        assert_eq!(got["start"], want.first_lba, "{} start", want.name);
        assert_eq!(got["size"], want.sectors(), "{} size", want.name);
        assert_eq!(
            got["type"],
            want.type_guid.to_string().to_uppercase(),
            "{} type",
            want.name
        );
        assert_eq!(
            got["uuid"],
            want.unique_guid.to_string().to_uppercase(),
            "{} uuid",
            want.name
        );
        assert_eq!(got["name"], want.name.as_str(), "{} name", want.name);
        assert!(got.get("attrs").is_none(), "{} has attributes", want.name);
        let start = got["start"].as_u64().unwrap();
        assert_eq!(start % 2048, 0, "{} not 1 MiB aligned", want.name);
    }
    // What systemd (blkid) sees as the verity partitions' UUIDs is the hex of
    // the root hash halves.
    assert_eq!(parts[1]["uuid"], "1F4F7B35-3629-FA1C-793B-02C8250121A7");
    assert_eq!(parts[2]["uuid"], "7E607BB2-8EDF-8F19-2849-986D70DB97EA");
}

/// Test 2: the 20.5 GiB image is sparse; only the two GPT regions have
/// blocks.
#[test]
fn image_is_sparse() {
    let layout = product_layout();
    let img = written(&layout);
    let meta = img.as_file().metadata().unwrap();
    assert_eq!(meta.len(), layout.disk_size);
    // st_blocks counts 512-byte units whatever the file system's block size.
    let allocated = meta.blocks() * 512;
    assert!(
        allocated <= 64 * 1024,
        "{allocated} bytes allocated for a {} byte image",
        layout.disk_size
    );
    // The same through du(1).
    let out = run_ok(tool("du").args(["--block-size=1", path_str(&img)]));
    let du: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(du <= 64 * 1024, "du says {du} bytes");
}

/// Test 3a: read_gpt returns the layout that was written.
#[test]
fn read_gpt_returns_written_layout() {
    for layout in [product_layout(), small_layout()] {
        let img = written(&layout);
        // write_gpt and read_gpt leave the file position where it was.
        assert_eq!(img.as_file().stream_position().unwrap(), 0);
        assert_eq!(read_gpt(img.as_file()).unwrap(), layout);
        assert_eq!(img.as_file().stream_position().unwrap(), 0);
    }
}

/// Flips the bits of one byte at `offset` of `file`.
fn corrupt(file: &File, offset: u64) {
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    file.write_all_at(&b, offset).unwrap();
}

/// Test 3b: damage to either copy is reported, by kind. There is no
/// fallback to the other copy.
#[test]
fn corruption_is_reported() {
    let layout = small_layout();
    let size = layout.disk_size;
    let backup_header = size - 512;
    let backup_array = size - 33 * 512;

    // A byte of the disk GUID in the primary header (LBA 1, offset 56).
    let img = written(&layout);
    corrupt(img.as_file(), 512 + 56);
    match read_gpt(img.as_file()) {
        Err(GptError::HeaderCrc {
            header: HeaderKind::Primary,
            stored,
            computed,
        }) => assert_ne!(stored, computed),
        other => panic!("expected a primary header CRC error, got {other:?}"),
    }

    // The signature of the primary header.
    let img = written(&layout);
    corrupt(img.as_file(), 512);
    assert!(matches!(
        read_gpt(img.as_file()),
        Err(GptError::BadSignature {
            header: HeaderKind::Primary
        })
    ));

    // A partition name in the primary entry array (LBA 2).
    let img = written(&layout);
    corrupt(img.as_file(), 1024 + 56);
    assert!(matches!(
        read_gpt(img.as_file()),
        Err(GptError::EntryArrayCrc {
            header: HeaderKind::Primary,
            ..
        })
    ));

    // The backup header and the backup entry array.
    let img = written(&layout);
    corrupt(img.as_file(), backup_header + 40);
    assert!(matches!(
        read_gpt(img.as_file()),
        Err(GptError::HeaderCrc {
            header: HeaderKind::Backup,
            ..
        })
    ));
    let img = written(&layout);
    corrupt(img.as_file(), backup_array + 128 + 3);
    assert!(matches!(
        read_gpt(img.as_file()),
        Err(GptError::EntryArrayCrc {
            header: HeaderKind::Backup,
            ..
        })
    ));

    // The protective MBR's 0xEE record type (byte 446 + 4).
    let img = written(&layout);
    corrupt(img.as_file(), 450);
    assert!(matches!(
        read_gpt(img.as_file()),
        Err(GptError::ProtectiveMbr(_))
    ));

    // Errors name what is wrong.
    let img = written(&layout);
    corrupt(img.as_file(), 512 + 56);
    let msg = read_gpt(img.as_file()).unwrap_err().to_string();
    assert!(msg.contains("primary GPT header: CRC32 mismatch"), "{msg}");
}

/// Test 3c: truncated files, empty files and random bytes are errors.
#[test]
fn truncated_and_garbage_inputs_are_errors() {
    let layout = small_layout();
    let img = written(&layout);
    let bytes = std::fs::read(img.path()).unwrap();
    assert_eq!(bytes.len() as u64, layout.disk_size);

    // Cut off the last MiB: the backup header is gone.
    let cut = file_with(&bytes[..bytes.len() - MIB as usize]);
    match read_gpt(cut.as_file()) {
        Err(GptError::InvalidHeader {
            header: HeaderKind::Primary,
            field: "AlternateLBA",
            ..
        }) => {}
        other => panic!("expected AlternateLBA beyond the device, got {other:?}"),
    }
    // Cut inside the primary entry array.
    let cut = file_with(&bytes[..3000]);
    assert!(matches!(
        read_gpt(cut.as_file()),
        Err(GptError::Truncated { .. } | GptError::InvalidHeader { .. })
    ));
    // Empty, one sector, MBR only.
    for len in [0, 1, 511, 512, 600] {
        let cut = file_with(&bytes[..len]);
        assert!(read_gpt(cut.as_file()).is_err(), "{len} bytes");
    }
    // All zeros and pseudo-random bytes.
    let zeros = file_with(&vec![0; 64 * 1024]);
    assert!(matches!(
        read_gpt(zeros.as_file()),
        Err(GptError::ProtectiveMbr(_))
    ));
    let noise = pseudo_random(64 * 1024, 0x9e37_79b9_7f4a_7c15);
    assert!(read_gpt(file_with(&noise).as_file()).is_err());
}

/// A valid small image held in memory (4 MiB, mostly zeros).
fn small_image_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let img = written(&small_layout());
        let bytes = std::fs::read(img.path()).unwrap();
        assert_eq!(
            read_gpt(file_with(&bytes).as_file()).unwrap(),
            small_layout()
        );
        bytes
    })
}

/// Where mutations land: the primary GPT, the backup GPT, anywhere.
fn mutation_offset(region: u8, at: usize, len: usize) -> usize {
    match region % 3 {
        0 => at % (34 * 512),
        1 => len - 1 - at % (33 * 512),
        _ => at % len,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Test 3c: random bytes never make read_gpt panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40_000)) {
        let file = file_with(&bytes);
        let _ = read_gpt(file.as_file());
    }

    /// Test 3c: a valid image with mutated bytes and an optional truncation
    /// never makes read_gpt panic; if it is accepted, it is a consistent
    /// table, and it is rejected whenever a header field or an entry was
    /// changed.
    #[test]
    fn mutated_images_never_panic(
        mutations in proptest::collection::vec((any::<u8>(), any::<usize>(), 1u8..=255), 1..8),
        truncate in proptest::option::weighted(0.2, any::<usize>()),
    ) {
        let mut bytes = small_image_bytes().to_vec();
        let len = bytes.len();
        let mut hit_crc_covered = false;
        for &(region, at, xor) in &mutations {
            let i = mutation_offset(region, at, len);
            bytes[i] ^= xor;
            let header_fields = |lba: usize| (lba * 512..lba * 512 + 92).contains(&i);
            let used_entries = |lba: usize| (lba * 512..lba * 512 + 2 * 128).contains(&i);
            hit_crc_covered |= header_fields(1)
                || header_fields(len / 512 - 1)
                || used_entries(2)
                || used_entries(len / 512 - 33);
        }
        if let Some(t) = truncate {
            bytes.truncate(t % (len + 1));
        }
        let file = file_with(&bytes);
        match read_gpt(file.as_file()) {
            Ok(layout) => {
                prop_assert!(!hit_crc_covered, "accepted a damaged table: {layout:?}");
                prop_assert_eq!(layout, small_layout());
            }
            Err(e) => {
                // Errors render (the message must not panic either).
                let _ = e.to_string();
            }
        }
    }
}

/// CRC-32 as GPT uses it (reflected 0xEDB88320), to re-seal mutated tables.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Recomputes the entry array CRC and the header CRC of the GPT whose
/// header is at `header_lba` and whose array is at `array_lba`.
fn reseal(bytes: &mut [u8], header_lba: usize, array_lba: usize) {
    let h = header_lba * 512;
    let a = array_lba * 512;
    let array_crc = crc32(&bytes[a..a + 128 * 128]);
    bytes[h + 88..h + 92].copy_from_slice(&array_crc.to_le_bytes());
    bytes[h + 16..h + 20].fill(0);
    let header_crc = crc32(&bytes[h..h + 92]);
    bytes[h + 16..h + 20].copy_from_slice(&header_crc.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Test 3c, past the CRCs: the same bytes of both headers (fields) and
    /// of both entry arrays are mutated and the CRCs recomputed, so the
    /// field and entry checks see the damage. read_gpt must not panic, and
    /// whatever it accepts lies inside the disk.
    #[test]
    fn resealed_mutations_never_panic(
        mutations in proptest::collection::vec((any::<bool>(), any::<usize>(), 1u8..=255), 1..6),
    ) {
        let mut bytes = small_image_bytes().to_vec();
        let sectors = bytes.len() / 512;
        for &(in_header, at, xor) in &mutations {
            let (primary, backup) = if in_header {
                // Header fields other than the header CRC (bytes 16..20).
                let i = at % 84;
                let i = if i < 16 { i } else { i + 4 };
                (512 + i, (sectors - 1) * 512 + i)
            } else {
                // The first entries of both arrays.
                let i = at % (4 * 128);
                (1024 + i, (sectors - 33) * 512 + i)
            };
            bytes[primary] ^= xor;
            bytes[backup] ^= xor;
        }
        reseal(&mut bytes, 1, 2);
        reseal(&mut bytes, sectors - 1, sectors - 33);
        let file = file_with(&bytes);
        if let Ok(layout) = read_gpt(file.as_file()) {
            for p in &layout.partitions {
                prop_assert!(p.first_lba <= p.last_lba);
                prop_assert!(p.end() <= layout.disk_size);
                prop_assert!(p.first_lba >= 2);
            }
        }
    }
}

/// Test 4: verity_partition_uuids follows systemd-repart.
///
/// Rule (systemd `src/repart/repart.c`, `partition_format_verity_hash()`):
/// the data partition's UUID is a plain copy of the first 16 bytes of the
/// root hash, the hash partition's a plain copy of the last 16, with no
/// version/variant bits forced (no `id128_make_v4_uuid()`), and the bytes
/// are in UUID-string order (`SD_ID128_TO_UUID_STRING`).
#[test]
fn verity_uuids_follow_systemd_repart() {
    // Root hash 00 01 02 … 1f. First half 00..0f written out as a UUID
    // string in byte order: 00010203-0405-0607-0809-0a0b0c0d0e0f; byte 6
    // (0x06) and byte 8 (0x08) are kept although they are not a version-4
    // nibble or the RFC 4122 variant. Last half 10..1f likewise.
    let counting: Vec<u8> = (0u8..32).collect();
    let (data, hash) = verity_partition_uuids(&counting);
    assert_eq!(data.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    assert_eq!(hash.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f");

    // The systemd-repart 252 run: these are the UUIDs it gave the root and
    // root-verity partitions for that root hash (sfdisk showed the same).
    let (data, hash) = verity_partition_uuids(&ROOT_HASH);
    assert_eq!(data.to_string(), "1f4f7b35-3629-fa1c-793b-02c8250121a7");
    assert_eq!(hash.to_string(), "7e607bb2-8edf-8f19-2849-986d70db97ea");
    assert_ne!(data.get_version_num(), 4, "no v4 bits are forced");

    // A SHA-512 root hash (64 bytes): first and last 16 bytes.
    let long: Vec<u8> = (0u8..64).collect();
    let (data, hash) = verity_partition_uuids(&long);
    assert_eq!(data.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    assert_eq!(hash.to_string(), "30313233-3435-3637-3839-3a3b3c3d3e3f");

    // On disk the GPT entry holds the GUID mixed-endian (UEFI 2.10
    // Appendix A: the first three fields little-endian): root is entry 2,
    // its unique GUID at byte 16 of the entry.
    let layout = small_layout_with_verity();
    let img = written(&layout);
    let mut raw = [0u8; 16];
    img.as_file()
        .read_exact_at(&mut raw, 1024 + 128 + 16)
        .unwrap();
    assert_eq!(
        raw,
        [
            0x35, 0x7b, 0x4f, 0x1f, 0x29, 0x36, 0x1c, 0xfa, 0x79, 0x3b, 0x02, 0xc8, 0x25, 0x01,
            0x21, 0xa7
        ]
    );
}

fn small_layout_with_verity() -> DiskLayout {
    let (root, verity) = verity_partition_uuids(&ROOT_HASH);
    let specs = [
        ("esp", ESP_TYPE, seed().uuid_for("partition:esp")),
        ("root", ROOT_X86_64_TYPE, root),
        ("root-verity", ROOT_X86_64_VERITY_TYPE, verity),
    ]
    .map(|(name, type_guid, unique_guid)| PartitionSpec {
        name: name.into(),
        type_guid,
        unique_guid,
        size: MIB,
    });
    plan_layout(seed().uuid_for("gpt-disk"), &specs).unwrap()
}

/// Test 5: the same layout gives the same bytes, whatever the file held.
#[test]
fn same_layout_same_bytes() {
    // Small image: compare every byte.
    let layout = small_layout();
    let a = written(&layout);
    let b = written(&layout);
    let read_all = |f: &tempfile::NamedTempFile| std::fs::read(f.path()).unwrap();
    assert_eq!(read_all(&a), read_all(&b));

    // Over garbage: a file of the right size full of 0xA5 gets the same GPT
    // regions (and only those change).
    let garbage = file_with(&vec![0xA5; layout.disk_size as usize]);
    write_gpt(garbage.as_file(), &layout).unwrap();
    assert_eq!(
        gpt_regions(garbage.as_file(), layout.disk_size),
        gpt_regions(a.as_file(), layout.disk_size)
    );
    let mut middle = vec![0; 1024];
    garbage.as_file().read_exact_at(&mut middle, MIB).unwrap();
    assert!(middle.iter().all(|&b| b == 0xA5));

    // Product image: the GPT regions (everything else is a hole).
    let layout = product_layout();
    let a = written(&layout);
    let b = written(&layout);
    assert_eq!(
        gpt_regions(a.as_file(), layout.disk_size),
        gpt_regions(b.as_file(), layout.disk_size)
    );
}

/// The same table built by sgdisk on a zeroed disk: read_gpt reads it,
/// and the bytes of the protective MBR (LBA 0), the primary GPT (LBAs
/// 1–33) and the backup equal ours.
#[test]
fn table_written_by_sgdisk_reads_the_same_and_matches_bytes() {
    let layout = product_layout();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(layout.disk_size).unwrap();
    let mut args = vec![
        "-o".to_string(),
        format!("--disk-guid={}", layout.disk_guid),
    ];
    for p in &layout.partitions {
        let n = p.number;
        args.push(format!("--new={n}:{}:{}", p.first_lba, p.last_lba));
        args.push(format!("--typecode={n}:{}", p.type_guid));
        args.push(format!("--partition-guid={n}:{}", p.unique_guid));
        args.push(format!("--change-name={n}:{}", p.name));
    }
    args.push(path_str(&tmp).to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sgdisk(&args);

    assert_eq!(read_gpt(tmp.as_file()).unwrap(), layout);

    let ours = written(&layout);
    let (their_head, their_tail) = gpt_regions(tmp.as_file(), layout.disk_size);
    let (our_head, our_tail) = gpt_regions(ours.as_file(), layout.disk_size);
    // LBA 0, the protective MBR. On a zeroed disk sgdisk leaves the boot
    // code, the disk signature and three records zero, and writes one
    // record of type 0xEE (starting CHS 0x000200, ending CHS 0xFFFFFF for
    // a disk this large, first LBA 1, size the disk's LBAs minus one) and
    // the 0x55AA signature. (On a disk whose LBA 0 held something, sgdisk
    // keeps the old boot code and disk signature; ours writes zeros, so
    // that the same layout gives the same bytes: hence the zeroed disk.)
    let differ: Vec<usize> = (0..512).filter(|&i| their_head[i] != our_head[i]).collect();
    assert!(
        differ.is_empty(),
        "protective MBR differs from sgdisk's at bytes {differ:?}"
    );
    assert_eq!(their_head[512..], our_head[512..], "primary GPT differs");
    assert_eq!(their_tail, our_tail, "backup GPT differs");
}

/// The planner rounds sizes up to 1 MiB and refuses what a GPT cannot hold.
#[test]
fn planner_rounds_and_refuses() {
    let spec = |name: &str, size| PartitionSpec {
        name: name.into(),
        type_guid: LINUX_DATA_TYPE,
        unique_guid: Uuid::new_v4(),
        size,
    };
    let disk = Uuid::new_v4();

    let layout = plan_layout(disk, &[spec("x", 1), spec("y", MIB + 1)]).unwrap();
    assert_eq!(layout.partitions[0].size, MIB);
    assert_eq!(layout.partitions[1].offset, 2 * MIB);
    assert_eq!(layout.partitions[1].size, 2 * MIB);
    // End of y at 4 MiB, plus 33 sectors of backup GPT, rounded up.
    assert_eq!(layout.disk_size, 5 * MIB);

    let empty = plan_layout(disk, &[]).unwrap();
    assert_eq!(empty.disk_size, 2 * MIB);

    assert!(matches!(
        plan_layout(disk, &[spec("zero", 0)]),
        Err(GptError::ZeroSize { .. })
    ));
    let long = "n".repeat(37);
    assert!(matches!(
        plan_layout(disk, &[spec(&long, MIB)]),
        Err(GptError::NameTooLong { units: 37, .. })
    ));
    assert!(plan_layout(disk, &[spec(&"n".repeat(36), MIB)]).is_ok());
    assert!(matches!(
        plan_layout(disk, &[spec("a\0b", MIB)]),
        Err(GptError::NameContainsNul { .. })
    ));
    let many: Vec<_> = (0..129).map(|i| spec(&format!("p{i}"), MIB)).collect();
    assert!(matches!(
        plan_layout(disk, &many),
        Err(GptError::TooManyPartitions { count: 129 })
    ));
    assert!(plan_layout(disk, &many[..128]).is_ok());
    assert!(matches!(
        plan_layout(disk, &[spec("huge", u64::MAX - 10)]),
        Err(GptError::Overflow)
    ));
    let same = spec("a", MIB);
    assert!(matches!(
        plan_layout(disk, &[same.clone(), same]),
        Err(GptError::InvalidLayout(_))
    ));
    assert!(matches!(
        plan_layout(Uuid::nil(), &[spec("a", MIB)]),
        Err(GptError::InvalidLayout(_))
    ));
}

/// Names are stored as UTF-16LE, beyond ASCII too, and read back.
#[test]
fn names_are_utf16() {
    let specs = [PartitionSpec {
        name: "données-ü-\u{1F512}".into(),
        type_guid: LINUX_DATA_TYPE,
        unique_guid: seed().uuid_for("n"),
        size: MIB,
    }];
    let layout = plan_layout(seed().uuid_for("d"), &specs).unwrap();
    let img = written(&layout);
    let mut raw = [0u8; 72];
    img.as_file().read_exact_at(&mut raw, 1024 + 56).unwrap();
    let expected: Vec<u8> = specs[0]
        .name
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_eq!(&raw[..expected.len()], &expected[..]);
    assert!(raw[expected.len()..].iter().all(|&b| b == 0));
    assert_eq!(read_gpt(img.as_file()).unwrap(), layout);
    let out = sfdisk(&["--json", path_str(&img)]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["partitiontable"]["partitions"][0]["name"],
        specs[0].name.as_str()
    );
}

/// write_gpt refuses a file longer than the disk and invalid layouts, and
/// writes attribute bits.
#[test]
fn write_refuses_bad_input_and_keeps_attributes() {
    let layout = small_layout();
    let long = tempfile::NamedTempFile::new().unwrap();
    long.as_file().set_len(layout.disk_size + 512).unwrap();
    assert!(matches!(
        write_gpt(long.as_file(), &layout),
        Err(GptWriteError::FileLongerThanDisk { .. })
    ));

    let mut bad = layout.clone();
    bad.partitions[1].first_lba -= 1;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    assert!(matches!(
        write_gpt(tmp.as_file(), &bad),
        Err(GptWriteError::Table(GptError::InvalidLayout(_)))
    ));
    let mut gap = layout.clone();
    gap.partitions[1].number = 3;
    assert!(matches!(
        write_gpt(tmp.as_file(), &gap),
        Err(GptWriteError::Table(GptError::InvalidLayout(_)))
    ));

    let mut attrs = layout.clone();
    attrs.partitions[1].attributes = gpt::ATTR_READ_ONLY | gpt::ATTR_NO_AUTO;
    let img = written(&attrs);
    assert_eq!(read_gpt(img.as_file()).unwrap(), attrs);
    let out = sfdisk(&["--json", path_str(&img)]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["partitiontable"]["partitions"][1]["attrs"],
        "GUID:60,63"
    );
}

/// The layout serialises into manifest.json with UUID strings and numbers.
#[test]
fn layout_serialises_for_the_manifest() {
    let layout = product_layout();
    let json = serde_json::to_value(&layout).unwrap();
    assert_eq!(json["disk_guid"], layout.disk_guid.to_string());
    assert_eq!(json["disk_size"], layout.disk_size);
    let root = &json["partitions"][1];
    assert_eq!(root["name"], "root");
    assert_eq!(root["type_guid"], "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    assert_eq!(root["unique_guid"], "1f4f7b35-3629-fa1c-793b-02c8250121a7");
    assert_eq!(root["first_lba"], 526_336);
    assert_eq!(root["offset"], 526_336 * 512);
    let back: DiskLayout = serde_json::from_value(json).unwrap();
    assert_eq!(back, layout);
}
