//! Safe extraction: archives crafted with Python's zipfile (the reference
//! writer) — zip-slip, absolute names, symlinks, too many entries, too many
//! bytes — are each refused with their own error and leave nothing on
//! disk; well-formed ones (stored or deflated) extract to their contents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use cocos_manifest::zip::{ExtractError, Limits, extract, zip_dir_to_vec};

/// Runs `script` with Python, `out` as sys.argv[1]; returns the file.
fn python_zip(script: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.zip");
    let status = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\n{script}\nz.close()"
            ),
        ])
        .arg(&out)
        .status()
        .expect("python3 must be installed");
    assert!(status.success());
    fs::read(out).unwrap()
}

/// Extracts into a fresh parent; on refusal, checks nothing is left there.
fn try_extract(zip: &[u8], limits: &Limits) -> Result<tempfile::TempDir, ExtractError> {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("out");
    match extract(Cursor::new(zip), &dest, limits) {
        Ok(_) => Ok(parent),
        Err(e) => {
            let left: Vec<_> = fs::read_dir(parent.path()).unwrap().collect();
            assert!(left.is_empty(), "{e}: left {left:?}");
            Err(e)
        }
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

#[test]
fn well_formed_archives_extract_stored_and_deflated() {
    let zip = python_zip(
        "z.writestr('a.txt', b'stored')\n\
         z.writestr(zipfile.ZipInfo('d/'), b'')\n\
         z.writestr('d/e.bin', b'x' * 100000, compress_type=zipfile.ZIP_DEFLATED)",
    );
    let parent = try_extract(&zip, &Limits::default()).unwrap();
    let out = parent.path().join("out");
    assert_eq!(read(&out.join("a.txt")), b"stored");
    assert_eq!(read(&out.join("d/e.bin")), vec![b'x'; 100000]);
}

#[test]
fn our_zip_of_a_directory_extracts_to_the_same_files() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("x/y")).unwrap();
    fs::write(src.path().join("x/y/z"), b"zz").unwrap();
    fs::write(src.path().join("top"), b"t").unwrap();
    let zip = zip_dir_to_vec(src.path()).unwrap();
    let parent = try_extract(&zip, &Limits::default()).unwrap();
    assert_eq!(read(&parent.path().join("out/x/y/z")), b"zz");
    assert_eq!(read(&parent.path().join("out/top")), b"t");
}

#[test]
fn a_parent_component_is_refused() {
    let zip = python_zip("z.writestr('ok.txt', b'fine')\nz.writestr('a/../../evil', b'x')");
    let err = try_extract(&zip, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ExtractError::ParentComponent(ref n) if n == "a/../../evil"),
        "{err}"
    );
}

#[test]
fn an_absolute_name_is_refused() {
    // zipfile strips a leading '/' from names; set it on the ZipInfo after.
    let zip = python_zip("i = zipfile.ZipInfo('x')\ni.filename = '/etc/evil'\nz.writestr(i, b'x')");
    let err = try_extract(&zip, &Limits::default()).unwrap_err();
    assert!(matches!(err, ExtractError::Absolute(_)), "{err}");
}

#[test]
fn a_symlink_entry_is_refused() {
    let zip = python_zip(
        "i = zipfile.ZipInfo('link')\ni.create_system = 3\ni.external_attr = 0o120777 << 16\n\
         z.writestr(i, '/etc/passwd')",
    );
    let err = try_extract(&zip, &Limits::default()).unwrap_err();
    assert!(matches!(err, ExtractError::Symlink(_)), "{err}");
}

#[test]
fn too_many_entries_are_refused() {
    let zip = python_zip("for i in range(4):\n    z.writestr(f'f{i}', b'x')");
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let err = try_extract(&zip, &limits).unwrap_err();
    assert!(matches!(err, ExtractError::TooManyEntries(3)), "{err}");
    try_extract(
        &zip,
        &Limits {
            max_entries: 4,
            ..Limits::default()
        },
    )
    .unwrap();
}

#[test]
fn too_many_bytes_are_refused_as_they_inflate() {
    // 10 MB of zeros deflate to about 10 KB.
    let zip =
        python_zip("z.writestr('bomb', b'\\0' * 10_000_000, compress_type=zipfile.ZIP_DEFLATED)");
    assert!(zip.len() < 100_000);
    let limits = Limits {
        max_bytes: 1_000_000,
        ..Limits::default()
    };
    let err = try_extract(&zip, &limits).unwrap_err();
    assert!(
        matches!(err, ExtractError::TooManyBytes(1_000_000)),
        "{err}"
    );
}

#[test]
fn duplicates_corruption_and_existing_destinations_are_refused() {
    let zip = python_zip("z.writestr('a', b'1')\nz.writestr('a', b'2')");
    assert!(matches!(
        try_extract(&zip, &Limits::default()),
        Err(ExtractError::Duplicate(_))
    ));
    let mut zip = python_zip("z.writestr('a', b'hello')");
    // Flip a byte of the stored data (after the 30-byte header and name).
    zip[31] ^= 0xff;
    assert!(matches!(
        try_extract(&zip, &Limits::default()),
        Err(ExtractError::Corrupt(_, _))
    ));
    assert!(matches!(
        try_extract(b"not a zip", &Limits::default()),
        Err(ExtractError::Malformed(_))
    ));
    let parent = tempfile::tempdir().unwrap();
    let err = extract(
        Cursor::new(python_zip("z.writestr('a', b'1')")),
        parent.path(),
        &Limits::default(),
    );
    assert!(matches!(err, Err(ExtractError::Exists(_))));
}
