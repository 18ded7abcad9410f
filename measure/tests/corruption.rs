//! `cocos-measure verity verify` on damaged images: it must fail, name the
//! damaged block (top of the tree first, as the kernel checks), and print
//! one line, never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{cocos_measure, field, pseudo_random, run_veritysetup, veritysetup};

/// sha256 in 512-byte hash blocks holds 16 digests per block. With 300
/// data blocks of 512 bytes: level 0 has 19 blocks, level 1 two, level 2
/// (the top) one. On disk after the 512-byte superblock: level 2 at 512,
/// level 1 at 1024..2048, level 0 at 2048..11776. veritysetup confirms
/// these offsets (`level_offsets_are_where_veritysetup_finds_them`).
const BLOCKS: usize = 300;
const LEVEL_OFFSET: [u64; 3] = [2048, 1024, 512];

struct Image {
    _dir: tempfile::TempDir,
    data: PathBuf,
    hash: PathBuf,
    root: String,
}

/// An image formatted by the reference tool, so the expected layout does
/// not come from the code under test.
fn image() -> Image {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), pseudo_random(BLOCKS * 512, 42)).unwrap();
    let out = run_veritysetup(
        dir.path(),
        &[
            "format",
            "data",
            "hash",
            "--data-block-size=512",
            "--hash-block-size=512",
            "--salt=c0c05e",
        ]
        .map(String::from),
    );
    assert_eq!(field(&out.stdout, "Hash blocks:"), "22");
    Image {
        data: dir.path().join("data"),
        hash: dir.path().join("hash"),
        root: field(&out.stdout, "Root hash:"),
        _dir: dir,
    }
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn verify(img: &Image, extra: &[&str]) -> Output {
    cocos_measure()
        .args(["verity", "verify"])
        .arg(&img.data)
        .arg(&img.hash)
        .arg(&img.root)
        .args(extra)
        .output()
        .unwrap()
}

/// Asserts a failed verification with exit status `code` and a single
/// stderr line containing every one of `needles`.
fn assert_fails(out: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
    stderr
}

#[test]
fn intact_image_verifies() {
    let img = image();
    let out = verify(&img, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flipped_byte_in_data_names_the_data_block() {
    for block in [0u64, 1, 123, BLOCKS as u64 - 1] {
        let img = image();
        flip(&img.data, block * 512 + 77);
        let out = verify(&img, &[]);
        assert_fails(
            &out,
            1,
            &[&format!("data block {block} of"), "data", "corrupt"],
        );
    }
}

#[test]
fn flipped_byte_in_each_tree_level_names_block_and_level() {
    // (level, block within level)
    for (level, block) in [(0usize, 0u64), (0, 5), (0, 18), (1, 0), (1, 1)] {
        let img = image();
        flip(&img.hash, LEVEL_OFFSET[level] + block * 512 + 3);
        let out = verify(&img, &[]);
        assert_fails(
            &out,
            1,
            &[&format!("hash block {block} of tree level {level} (of 3")],
        );
    }
}

#[test]
fn flipped_byte_in_the_top_block_or_a_wrong_root_hash_is_a_root_mismatch() {
    let img = image();
    flip(&img.hash, LEVEL_OFFSET[2] + 100);
    assert_fails(
        &verify(&img, &[]),
        1,
        &["top hash block", "does not hash to the root hash"],
    );

    let mut img = image();
    img.root = format!("{}0", &img.root[..63]);
    assert_fails(&verify(&img, &[]), 1, &["does not hash to the root hash"]);
}

#[test]
fn padding_after_the_last_digest_is_covered() {
    // Level 0 holds 300 digests in 19 blocks of 16: the last block has 4
    // used slots; its tail must still be checked (through its parent).
    let img = image();
    flip(&img.hash, LEVEL_OFFSET[0] + 18 * 512 + 4 * 32 + 10);
    assert_fails(&verify(&img, &[]), 1, &["hash block 18 of tree level 0"]);
}

#[test]
fn the_highest_damage_is_reported_first() {
    let img = image();
    flip(&img.data, 10);
    flip(&img.hash, LEVEL_OFFSET[0] + 512 * 3);
    assert_fails(&verify(&img, &[]), 1, &["hash block 3 of tree level 0"]);
}

#[test]
fn json_output_describes_the_corruption() {
    let img = image();
    flip(&img.data, 200 * 512);
    let out = verify(&img, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["corruption"]["kind"], "data_block");
    assert_eq!(v["corruption"]["index"], 200);
    assert_eq!(v["corruption"]["offset"], 200 * 512);
}

#[test]
fn every_flipped_superblock_byte_fails_verification() {
    let img = image();
    let pristine = std::fs::read(&img.hash).unwrap();
    for offset in 0..512u64 {
        if (16..32).contains(&offset) {
            continue; // the UUID: see the next test
        }
        std::fs::write(&img.hash, &pristine).unwrap();
        flip(&img.hash, offset);
        let out = verify(&img, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "flip at superblock byte {offset} not detected"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    // Named precisely where a field is invalid.
    for (offset, needle) in [
        (0u64, "bad signature"),
        (8, "unsupported superblock version"),
        (12, "unsupported hash type"),
        (33, "bad hash algorithm at offset 32"),
        (65, "bad data_block_size at offset 64"),
        (69, "bad hash_block_size at offset 68"),
        (81, "salt_size"),
        (300, "reserved byte at offset 300"),
    ] {
        std::fs::write(&img.hash, &pristine).unwrap();
        flip(&img.hash, offset);
        assert_fails(&verify(&img, &[]), 2, &["hash", needle]);
    }
}

#[test]
fn a_changed_uuid_is_caught_when_the_expected_uuid_is_given() {
    // The kernel never reads the superblock and the UUID is not hashed; a
    // verifier that pins the UUID passes it and gets the mismatch. The UUID
    // is the one veritysetup reads from the superblock it wrote.
    let img = image();
    let dump = run_veritysetup(
        img.hash.parent().unwrap(),
        &["dump".into(), img.hash.display().to_string()],
    );
    let uuid = field(&dump.stdout, "UUID:");
    assert_eq!(uuid.len(), 36, "{uuid:?}");
    assert!(verify(&img, &["--uuid", &uuid]).status.success());
    flip(&img.hash, 20);
    assert_fails(&verify(&img, &["--uuid", &uuid]), 2, &["the UUID"]);
}

/// Where `veritysetup verify` says the tree first fails.
fn veritysetup_failure_position(img: &Image) -> u64 {
    let out = std::process::Command::new(veritysetup())
        .arg("verify")
        .arg(&img.data)
        .arg(&img.hash)
        .arg(&img.root)
        .output()
        .unwrap();
    assert!(!out.status.success(), "veritysetup accepted the damage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("Verification failed at position "))
        .and_then(|p| p.trim_end_matches('.').parse().ok())
        .unwrap_or_else(|| panic!("no failing position in {stderr:?}"))
}

/// The offsets the other tests flip bytes at, as veritysetup sees them: the
/// hash area ends where level 0 ends, and a changed first digest of a block
/// at `LEVEL_OFFSET[level]` makes veritysetup reject the block it covers,
/// one level down (data blocks below level 0).
#[test]
fn level_offsets_are_where_veritysetup_finds_them() {
    let img = image();
    let dump = run_veritysetup(
        img.hash.parent().unwrap(),
        &["dump".into(), img.hash.display().to_string()],
    );
    assert_eq!(
        field(&dump.stdout, "Hash device size:"),
        format!("{} [bytes]", LEVEL_OFFSET[0] + 19 * 512)
    );
    for (level, block) in [(0usize, 0u64), (0, 5), (0, 18), (1, 0), (1, 1), (2, 0)] {
        let img = image();
        flip(&img.hash, LEVEL_OFFSET[level] + block * 512 + 3);
        let child = 16 * block * 512;
        let expected = if level == 0 {
            child
        } else {
            LEVEL_OFFSET[level - 1] + child
        };
        assert_eq!(
            veritysetup_failure_position(&img),
            expected,
            "level {level} block {block}"
        );
    }
}

#[test]
fn veritysetup_also_rejects_what_we_reject() {
    // Sanity check of the damage itself with the reference tool.
    let img = image();
    flip(&img.data, 123 * 512);
    veritysetup_failure_position(&img);
}
