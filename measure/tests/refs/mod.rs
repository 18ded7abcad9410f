//! Helpers for the tests against the shared reference vectors
//! (`../shared/vectors` beside the workspace) and the reference tools
//! (sev-snp-measure from PyPI, mosaik's MRTD, a Rust crate).
//! A missing vector directory or tool fails the test: never a silent skip.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The shared vectors directory: `$COCOS_VECTORS`, else `../shared/vectors`
/// relative to the workspace root.
pub fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("COCOS_VECTORS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "reference vectors not found at {}: the tests need the shared vectors beside the \
         workspace (../shared/vectors) or COCOS_VECTORS set",
        dir.display()
    );
    dir
}

/// The rows of a JSONL vector file; fails if it is missing or empty.
pub fn rows(file: &str) -> Vec<Value> {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("bad JSON line in vectors"))
        .collect();
    assert!(!rows.is_empty(), "{} has no rows", path.display());
    rows
}

/// The path of a logical input name (`/dev/null` stays itself).
pub fn input(name: &str) -> PathBuf {
    if name == "/dev/null" {
        return PathBuf::from(name);
    }
    vectors_dir().join("inputs").join(name)
}

/// A file beside the vectors README (`igvm/...`, `keys/...`).
pub fn vector_file(name: &str) -> PathBuf {
    vectors_dir().join(name)
}

/// The `cocos-measure` binary built for this test run.
pub fn cocos_measure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
}

/// The PyPI `sev-snp-measure` 0.0.13 command. Installed by
/// `scripts/setup-python-refs.sh`; `$SEV_SNP_MEASURE` overrides the path.
pub fn sev_snp_measure() -> PathBuf {
    let path = std::env::var_os("SEV_SNP_MEASURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/cocos-python-refs/bin/sev-snp-measure"));
    assert!(
        path.is_file(),
        "sev-snp-measure not found at {}: the side-by-side tests run it. Run \
         scripts/setup-python-refs.sh (or set SEV_SNP_MEASURE) and run again.",
        path.display()
    );
    path
}

/// `mosaik-mrtd TDVF`: the TDX MRTD that mosaik 0.3.13 (a Rust crate)
/// computes for a TDVF image. Built by `scripts/setup-python-refs.sh`;
/// `$MOSAIK_MRTD` overrides the path.
pub fn mosaik_mrtd() -> PathBuf {
    let path = std::env::var_os("MOSAIK_MRTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/cocos-mrtd-ref/bin/mosaik-mrtd"));
    assert!(
        path.is_file(),
        "mosaik-mrtd not found at {}: the TDX side-by-side tests run it. Run \
         scripts/setup-python-refs.sh (or set MOSAIK_MRTD) and run again.",
        path.display()
    );
    path
}

/// A string field of a row, `None` for JSON null or absent.
pub fn s<'a>(row: &'a Value, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}
