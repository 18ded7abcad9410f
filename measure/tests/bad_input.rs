//! Bad input to `cocos-measure verity`: a clear one-line error naming the
//! file and the problem, exit status 2, never a panic; and a failed format
//! never leaves a hash file that looks valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{cocos_measure, field, pseudo_random};

fn run(dir: &Path, args: &[&str]) -> Output {
    cocos_measure()
        .arg("verity")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Exit status 2, no panic, and every needle on stderr. Errors of our own
/// are one line; argument errors come from clap with a usage hint.
fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
    if stderr.starts_with("cocos-measure: ") {
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "not one line: {stderr}"
        );
    }
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), pseudo_random(4096 * 64, 1)).unwrap();
    std::fs::write(dir.path().join("odd"), pseudo_random(5000, 2)).unwrap();
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    dir
}

fn format_ok(dir: &Path, hash: &str) -> String {
    let out = run(dir, &["format", "data", hash]);
    assert!(out.status.success());
    field(&out.stdout, "Root hash:")
}

#[test]
fn data_size_not_a_multiple_of_the_block_size() {
    let dir = setup();
    assert_error(
        &run(dir.path(), &["format", "odd", "h"]),
        &[
            "odd:",
            "5000 bytes is not a multiple of the data block size 4096",
        ],
    );
    assert!(!dir.path().join("h").exists());
}

#[test]
fn empty_or_too_short_data() {
    let dir = setup();
    assert_error(
        &run(dir.path(), &["format", "empty", "h"]),
        &["empty:", "empty"],
    );
    assert_error(
        &run(dir.path(), &["format", "data", "h", "--data-blocks=65"]),
        &["data:", "too small for 65 data blocks"],
    );
}

#[test]
fn missing_and_unreadable_files() {
    let dir = setup();
    assert_error(
        &run(dir.path(), &["format", "nope", "h"]),
        &["nope: cannot open data file", "No such file"],
    );
    assert_error(
        &run(dir.path(), &["format", "adir", "h"]),
        &["adir: is a directory"],
    );
    assert_error(
        &run(dir.path(), &["format", "data", "no/such/dir/h"]),
        &["no/such/dir/h: cannot create"],
    );
    let root = format_ok(dir.path(), "h");
    assert_error(
        &run(dir.path(), &["verify", "data", "missing", &root]),
        &["missing: cannot open hash file"],
    );
    assert_error(
        &run(
            dir.path(),
            &["verify", "data", "h", "--root-hash-file", "nofile"],
        ),
        &["nofile: cannot read root hash file"],
    );
    assert_error(
        &run(dir.path(), &["dump", "adir"]),
        &["adir: is a directory"],
    );
}

#[test]
fn hash_file_too_small_for_the_tree() {
    let dir = setup();
    let root = format_ok(dir.path(), "h");
    let h = dir.path().join("h");
    let len = std::fs::metadata(&h).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&h)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert_error(
        &run(dir.path(), &["verify", "data", "h", &root]),
        &["h:", "too small for the hash tree"],
    );
    // Superblock only, tree expected at an offset beyond the end.
    let out = run(
        dir.path(),
        &["verify", "data", "h", &root, "--hash-offset=1048576"],
    );
    assert_error(&out, &["h:"]);
}

#[test]
fn corrupt_or_missing_superblock() {
    let dir = setup();
    assert_error(
        &run(dir.path(), &["dump", "data"]),
        &["data: not a valid dm-verity superblock", "bad signature"],
    );
    assert_error(
        &run(dir.path(), &["dump", "empty"]),
        &["empty:", "truncated: 0 of 512 bytes"],
    );
}

#[test]
fn options_that_contradict_the_superblock() {
    let dir = setup();
    let root = format_ok(dir.path(), "h");
    for (opt, needle) in [
        (
            "--hash=sha1",
            "the hash algorithm is sha256, but sha1 was given",
        ),
        (
            "--data-block-size=512",
            "the data block size is 4096, but 512",
        ),
        (
            "--hash-block-size=1024",
            "the hash block size is 4096, but 1024",
        ),
        ("--salt=00", "the salt is"),
        ("--data-blocks=3", "the number of data blocks is 64, but 3"),
    ] {
        assert_error(
            &run(dir.path(), &["verify", "data", "h", &root, opt]),
            &["h: the superblock says", needle],
        );
    }
}

#[test]
fn invalid_parameters() {
    let dir = setup();
    for (opt, needle) in [
        (
            format!("--salt={}", "ab".repeat(257)),
            "257 bytes long; at most 256",
        ),
        ("--salt=abc".to_string(), "salt is not valid hexadecimal"),
        ("--salt=zz".to_string(), "salt is not valid hexadecimal"),
        ("--hash=md5".to_string(), "unknown hash algorithm \"md5\""),
        (
            "--data-block-size=256".to_string(),
            "256 is not a power of two between 512 and 65536",
        ),
        (
            "--hash-block-size=131072".to_string(),
            "131072 is not a power of two",
        ),
        (
            "--hash-block-size=3000".to_string(),
            "3000 is not a power of two",
        ),
        ("--data-block-size=4k".to_string(), "\"4k\" is not a number"),
        ("--uuid=1234".to_string(), "--uuid"),
    ] {
        assert_error(&run(dir.path(), &["format", "data", "h", &opt]), &[needle]);
        assert!(!dir.path().join("h").exists());
    }
    assert_error(
        &run(dir.path(), &["format", "data", "h", "--hash-offset=1000"]),
        &["h:", "hash offset 1000 is not a multiple of 512"],
    );
    assert_error(
        &run(
            dir.path(),
            &[
                "format",
                "data",
                "h",
                "--no-superblock",
                "--hash-offset=512",
            ],
        ),
        &["h:", "not a multiple of the hash block size"],
    );
    assert_error(
        &run(
            dir.path(),
            &[
                "format",
                "data",
                "data",
                "--hash-offset=4096",
                "--data-blocks=64",
            ],
        ),
        &["data:", "overlaps the data area"],
    );
    let root = format_ok(dir.path(), "h");
    assert_error(
        &run(dir.path(), &["verify", "data", "h", "xyz"]),
        &["root hash is not valid hexadecimal"],
    );
    assert_error(
        &run(dir.path(), &["verify", "data", "h", &root[..62]]),
        &["root hash is 31 bytes long but sha256 digests are 32 bytes"],
    );
    assert_error(
        &run(
            dir.path(),
            &["verify", "data", "h", &root, "--no-superblock"],
        ),
        &["--salt is required with --no-superblock"],
    );
}

/// Runs a format whose writes fail once the hash file would exceed 40 KiB
/// (RLIMIT_FSIZE, with SIGXFSZ ignored so write() returns EFBIG).
fn format_with_file_size_limit(dir: &Path, hash: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 40; exec '{}' verity format big {hash} --salt=01",
            env!("CARGO_BIN_EXE_cocos-measure")
        ))
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_failed_format_leaves_no_valid_looking_hash_file() {
    let dir = setup();
    // 3000 blocks: a tree of 25 blocks (100 KiB), beyond the 40 KiB limit.
    std::fs::write(dir.path().join("big"), pseudo_random(4096 * 3000, 9)).unwrap();

    // A new hash file is never created.
    let out = format_with_file_size_limit(dir.path(), "fresh");
    assert_error(&out, &["fresh: cannot write", "File too large"]);
    assert!(!dir.path().join("fresh").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("fresh"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // An existing hash file with a valid superblock loses it.
    let out = run(dir.path(), &["format", "big", "old", "--salt=00"]);
    assert!(out.status.success());
    assert!(run(dir.path(), &["dump", "old"]).status.success());
    let out = format_with_file_size_limit(dir.path(), "old");
    assert_error(&out, &["old: cannot write"]);
    assert_error(
        &run(dir.path(), &["dump", "old"]),
        &["old: not a valid dm-verity superblock"],
    );
}

#[test]
fn help_describes_every_option() {
    let out = cocos_measure()
        .args(["verity", "format", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--hash",
        "--data-block-size",
        "--hash-block-size",
        "--salt",
        "--uuid",
        "--no-superblock",
        "--hash-offset",
        "--data-blocks",
        "--root-hash-file",
        "--json",
    ] {
        assert!(help.contains(opt), "{opt} missing from --help");
    }
}
