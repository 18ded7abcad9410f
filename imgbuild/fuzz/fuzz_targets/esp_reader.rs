//! The ESP reader (`inspect` runs it on disk images it is given) on
//! arbitrary filesystems: listing the files and reading them back must
//! never panic or hang, whatever the boot sector, FATs and directories
//! hold.
#![no_main]

use std::io::Write;

use cocos_imgbuild::fat::{read_esp, read_esp_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::tempfile().expect("a temporary file");
    file.write_all(data).expect("write the input");
    let len = data.len() as u64;
    let Ok(listing) = read_esp(&file, 0, len) else {
        return;
    };
    for entry in listing.files.iter().take(8) {
        let _ = read_esp_file(&file, 0, len, &entry.path);
    }
    let _ = read_esp_file(&file, 0, len, "EFI/BOOT/grub.cfg");
});
