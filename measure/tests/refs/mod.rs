//! Helpers for the tests against the shared reference vectors
//! (`../shared/vectors` beside the workspace); the reference tools are in
//! `common`. A missing vector directory fails the test: never a silent skip.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

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

/// A string field of a row, `None` for JSON null or absent.
pub fn s<'a>(row: &'a Value, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}
