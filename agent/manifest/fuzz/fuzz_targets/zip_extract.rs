//! Zip extraction on arbitrary bytes, with small caps: it must never
//! panic, never write outside the destination, and leave nothing behind
//! when it refuses.
#![no_main]

use std::io::Cursor;

use cocos_manifest::zip::{Limits, extract};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parent = tempfile::tempdir().expect("temporary directory");
    let dest = parent.path().join("out");
    let limits = Limits {
        max_entries: 64,
        max_bytes: 1 << 20,
    };
    let result = extract(Cursor::new(data), &dest, &limits);
    let left: Vec<_> = std::fs::read_dir(parent.path())
        .expect("read parent")
        .map(|e| e.expect("entry").file_name())
        .collect();
    match result {
        Ok(_) => assert_eq!(left, vec![std::ffi::OsString::from("out")]),
        Err(_) => assert!(left.is_empty(), "refused archive left {left:?}"),
    }
});
