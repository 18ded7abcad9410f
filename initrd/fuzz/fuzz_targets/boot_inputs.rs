//! What cocos-init reads before anything is verified: the kernel command
//! line, its config file and the root's /etc/fstab. Nothing may panic; a
//! rewritten fstab is stable (rewriting it again changes nothing).
#![no_main]

use std::path::Path;

use cocos_init::{cmdline, config, fstab};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = cmdline::parse(text);
    let _ = cmdline::debug_requested(text);
    let _ = config::parse(text, Path::new("/etc/cocos-init.toml"));
    let once = fstab::rewrite_fstab(text);
    assert_eq!(fstab::rewrite_fstab(&once), once, "rewriting is not idempotent");
});
