//! The GRUB EFI image reader against `grub-mkimage`, the tool that writes
//! the format: the configuration given with `-c` and the prefix given with
//! `-p` are read back exactly, and an image without `-c` has none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use cocos_imgbuild::grub::efi_image::{GrubImage, GrubImageError};
use common::{run_ok, tool};

const MODULES_DIR: &str = "/usr/lib/grub/x86_64-efi";

fn mkimage(config: Option<&str>, prefix: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grub.efi");
    let mut cmd = tool("grub-mkimage");
    cmd.args(["-O", "x86_64-efi", "-p", prefix, "-d", MODULES_DIR, "-o"])
        .arg(&out);
    if let Some(config) = config {
        let cfg = dir.path().join("grub.cfg");
        fs::write(&cfg, config).unwrap();
        cmd.arg("-c").arg(&cfg);
    }
    run_ok(cmd.args(["normal", "linux", "fat"]));
    fs::read(out).unwrap()
}

#[test]
fn config_and_prefix_read_back_as_grub_mkimage_wrote_them() {
    // Lengths around the 4-byte padding of the module payload.
    for config in [
        "boot\n",
        "set timeout=0\nlinux /bzImage roothash=ab console=ttyS0\nboot\n",
        "linux /k a\n",
        "linux /k ab\n",
        "linux /k abc\n",
        "no newline at the end",
    ] {
        for prefix in ["/EFI/BOOT", "(hd0,gpt2)/boot/grub", "/x"] {
            let image = GrubImage::parse(&mkimage(Some(config), prefix)).unwrap();
            assert_eq!(image.config.as_deref(), Some(config));
            assert_eq!(image.prefix.as_deref(), Some(prefix));
            assert_eq!(image.ignored_configs, 0);
            // normal, linux, fat and what they depend on.
            assert!(image.elf_modules >= 3, "{}", image.elf_modules);
        }
    }
}

#[test]
fn an_image_without_a_config_has_none() {
    let image = GrubImage::parse(&mkimage(None, "/EFI/debian")).unwrap();
    assert_eq!(image.config, None);
    assert_eq!(image.prefix.as_deref(), Some("/EFI/debian"));
}

#[test]
fn files_that_are_not_grub_images_are_refused() {
    assert!(matches!(
        GrubImage::parse(b"MZ not really"),
        Err(GrubImageError::NotPe(_))
    ));
    // A PE image without a mods section: the kernel's EFI stub.
    let dir = std::env::var("COCOS_KERNEL_DIR").unwrap_or_else(|_| "/var/tmp/cocos-kernel".into());
    let kernel = (|| {
        fs::read_dir(format!("{dir}/root/boot"))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz")
            })
            .map(|p| p.display().to_string())
    })();
    let kernel = kernel.expect("no kernel: run scripts/fetch-boot-deps.sh");
    assert_eq!(
        GrubImage::parse(&fs::read(kernel).unwrap()),
        Err(GrubImageError::NoModsSection)
    );
    // The mods section's magic changed (the info header: magic, padding,
    // offset 24; "mimg" alone also occurs in GRUB's code).
    let mut image = mkimage(Some("boot\n"), "/EFI/BOOT");
    let header = b"mimg\0\0\0\0\x18\0\0\0\0\0\0\0";
    let at = image.windows(16).position(|w| w == header).unwrap();
    image[at] = b'x';
    assert_eq!(GrubImage::parse(&image), Err(GrubImageError::BadMagic));
}
