//! The deterministic directory zip against Go's archive/zip used as the Go
//! CLI uses it (tests/go_reference.go, TZ=UTC): byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cocos_manifest::hash::sha3_path;
use cocos_manifest::zip::zip_dir_to_vec;

fn go_zip(dir: &Path) -> Vec<u8> {
    common::run(&[OsStr::new("zip"), dir.as_os_str()])
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn an_empty_directory_is_the_22_byte_empty_zip() {
    let dir = tempfile::tempdir().unwrap();
    let ours = zip_dir_to_vec(dir.path()).unwrap();
    assert_eq!(ours.len(), 22);
    assert_eq!(ours, go_zip(dir.path()));
}

#[test]
fn a_tree_of_files_zips_byte_identical_to_go() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("a.txt"), b"hello\n", 0o644);
    write(&d.join("a/b"), b"nested", 0o600);
    write(&d.join("a/c/deep.bin"), &[0u8; 0], 0o644);
    write(&d.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&d.join("read-only"), b"ro", 0o444);
    write(&d.join("setuid"), b"s", 0o4755);
    // Names that set Go's UTF-8 flag: non-ASCII, '~', '\\', control.
    write(&d.join("é.csv"), b"accent", 0o644);
    write(&d.join("~tilde"), b"t", 0o644);
    write(&d.join("back\\slash"), b"b", 0o644);
    write(&d.join("tab\tname"), b"c", 0o644);
    write(&d.join("space name"), b"d", 0o644);
    // Over one 1 MiB read buffer, not a multiple of it.
    let big: Vec<u8> = (0..(3 << 20) + 12345)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    write(&d.join("big/data"), &big, 0o644);
    // A symlink to a regular file is archived as that file, as Go does.
    std::os::unix::fs::symlink("a.txt", d.join("link")).unwrap();
    // Empty directories do not appear.
    fs::create_dir_all(d.join("empty/dir")).unwrap();

    let ours = zip_dir_to_vec(d).unwrap();
    let go = go_zip(d);
    assert_eq!(ours.len(), go.len());
    assert!(
        ours == go,
        "zip differs from Go's at byte {:?}",
        ours.iter().zip(&go).position(|(a, b)| a != b)
    );

    // And Go reads ours back: names, modes, epoch time, contents.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), &ours).unwrap();
    let listing =
        String::from_utf8(common::run(&[OsStr::new("unzip"), tmp.path().as_os_str()])).unwrap();
    assert!(listing.contains("run.sh -rwxr-xr-x 0 "), "{listing}");
    assert!(listing.contains("read-only -r--r--r-- 0 "), "{listing}");
    assert_eq!(listing.lines().count(), 13, "{listing}");

    // The hash of a directory is SHA3-256 of Go's zip.
    use sha3::Digest;
    let expected: [u8; 32] = sha3::Sha3_256::digest(&go).into();
    assert_eq!(sha3_path(d).unwrap(), expected);
}

#[test]
fn special_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", dir.path().join("dangling")).unwrap();
    let err = zip_dir_to_vec(dir.path()).unwrap_err().to_string();
    assert!(err.contains("dangling"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", dir.path().join("to-dir")).unwrap();
    let err = zip_dir_to_vec(dir.path()).unwrap_err().to_string();
    assert!(err.contains("to-dir: not a regular file"), "{err}");
}
