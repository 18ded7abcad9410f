//! The GRUB EFI image reader (`inspect` runs it on the `BOOTX64.EFI` of
//! disk images it is given) on arbitrary input: parsing a whole PE file and
//! a bare `mods` section must never panic or hang, and a configuration it
//! returns must be checked by `boot_cmdline` without panicking either.
#![no_main]

use cocos_imgbuild::grub::{self, efi_image::GrubImage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: 0 = a whole PE file, otherwise a bare mods section (most
    // mutations of a PE file never reach the section walk).
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parsed = if mode == 0 {
        GrubImage::parse(rest)
    } else {
        GrubImage::parse_mods_section(rest)
    };
    if let Ok(image) = parsed {
        if let Some(config) = image.config {
            let _ = grub::boot_cmdline(&config);
        }
        if let Some(prefix) = image.prefix {
            let _ = grub::efi_image::config_file(Some(&prefix), "EFI/BOOT");
        }
    }
});
