//! The parsers of kernel module metadata on arbitrary input: `.modinfo`
//! sections, `modules.dep`, and the ELF reading behind them (the
//! `.modinfo` section of a module, the interpreter and dynamic section of
//! a program). None may panic; what they accept must be well-formed.
//!
//! The first byte chooses the parser.
#![no_main]

use cocos_imgbuild::initramfs::{elf, modules};
use libfuzzer_sys::fuzz_target;

fn module_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(info) = modules::parse_modinfo(input) {
                assert!(info.depends.iter().all(|d| module_name(d)));
                assert!(info.name.iter().all(|n| module_name(n)));
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(input) else {
                return;
            };
            if let Ok(lines) = modules::parse_modules_dep(text) {
                for l in &lines {
                    for p in std::iter::once(&l.module).chain(&l.depends) {
                        assert!(!p.starts_with('/') && !p.split('/').any(|c| c == ".."));
                    }
                }
            }
        }
        _ => {
            if let Ok(Some(section)) = elf::section_data(input, ".modinfo") {
                let _ = modules::parse_modinfo(section);
            }
            if let Ok(info) = elf::dynamic_info(input) {
                assert!(
                    info.needed
                        .iter()
                        .all(|n| !n.is_empty() && !n.contains('\0'))
                );
            }
        }
    }
});
