//! The tar reader (`--rootfs FILE.tar`) on arbitrary archives: it must
//! never panic, and every regular file it accepts must have chunks inside
//! the archive, in order, within the file's size.
#![no_main]

use std::io::Write;

use cocos_formats::ext4::{FileContent, NodeKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let Ok(tree) = cocos_imgbuild::tree::read(file.path()) else {
        return;
    };
    for node in &tree.nodes {
        if let NodeKind::File {
            size,
            content: FileContent::Chunks(chunks),
        } = &node.kind
        {
            let mut end = 0;
            for c in chunks {
                assert!(c.logical >= end, "chunks out of order");
                end = c.logical + c.len;
                assert!(end <= *size, "chunk past the end of the file");
                assert!(
                    c.offset + c.len <= data.len() as u64,
                    "chunk outside the archive"
                );
            }
        }
    }
});
