//! The GRUB configuration and the GRUB EFI image that embeds it.
//!
//! The configuration carries the kernel command line with `roothash=`.
//! It is embedded in the GRUB image (`grub-mkimage -c`), so the root hash is
//! part of the measured bootloader; a copy is also put at
//! `EFI/BOOT/grub.cfg` for people and for `cocos-imgbuild inspect`.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

/// Kernel file name on the ESP.
pub const KERNEL_PATH: &str = "bzImage";
/// Initramfs file name on the ESP.
pub const INITRD_PATH: &str = "initrd.cpio.gz";
/// The bootloader on the ESP: the removable-media path UEFI firmware boots.
pub const BOOTLOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// The copy of the GRUB configuration on the ESP (`-p /EFI/BOOT`).
pub const CONFIG_PATH: &str = "EFI/BOOT/grub.cfg";
/// Modules built into the GRUB image by default.
pub const DEFAULT_MODULES: &[&str] = &[
    "boot", "linux", "echo", "normal", "part_gpt", "fat", "ls", "search", "tpm",
];
/// Where Debian's grub-efi-amd64-bin installs the modules.
pub const DEFAULT_MODULES_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Why the GRUB image could not be built.
#[derive(Debug, Error)]
pub enum GrubError {
    /// grub-mkimage could not run.
    #[error(
        "cannot run {program} (install grub-efi-amd64-bin and grub-common, or pass --bootloader)"
    )]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// grub-mkimage failed.
    #[error("{program} failed: {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// What it printed.
        stderr: String,
    },
    /// The modules directory is missing.
    #[error("{}: GRUB module directory not found (install grub-efi-amd64-bin)", .0.display())]
    NoModules(PathBuf),
    /// A file in the temporary directory could not be written.
    #[error("cannot prepare the GRUB configuration")]
    Io(#[from] std::io::Error),
}

/// The kernel command line: the root hash, systemd's verity and GPT
/// auto-discovery switched off (the initramfs opens the root), then the
/// user's options.
pub fn kernel_cmdline(root_hash_hex: &str, extra: &str) -> String {
    let mut line = format!("roothash={root_hash_hex} systemd.verity=0 systemd.gpt_auto=0");
    let extra = extra.trim();
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// The GRUB configuration booting the kernel and initramfs on the ESP.
///
/// Plain commands, no `menuentry`: the configuration embedded with
/// `grub-mkimage -c` runs before normal mode has registered `menuentry`,
/// so a menu there would fall through to normal mode, which reads the
/// unmeasured `$prefix/grub.cfg` copy on the ESP instead. Booting from the
/// embedded commands means the measured bootloader decides the command line.
pub fn config(cmdline: &str) -> String {
    format!(
        "set timeout=0\n\
         search --no-floppy --set=root --file /{KERNEL_PATH}\n\
         echo \"cocos: booting /{KERNEL_PATH}\"\n\
         linux /{KERNEL_PATH} {cmdline}\n\
         initrd /{INITRD_PATH}\n\
         boot\n"
    )
}

/// The kernel command line written in a GRUB configuration (for inspect).
pub fn cmdline_of(config: &str) -> Option<String> {
    config.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("linux ")?;
        let mut parts = rest.splitn(2, char::is_whitespace);
        parts.next()?;
        Some(parts.next().unwrap_or("").trim().to_owned())
    })
}

/// Builds `BOOTX64.EFI` with `grub-mkimage`, embedding `config`.
pub fn mkimage(
    config: &str,
    modules: &[String],
    modules_dir: &Path,
    work_dir: &Path,
) -> Result<Vec<u8>, GrubError> {
    if !modules_dir.is_dir() {
        return Err(GrubError::NoModules(modules_dir.to_path_buf()));
    }
    let cfg = work_dir.join("embedded-grub.cfg");
    let out = work_dir.join("BOOTX64.EFI");
    std::fs::write(&cfg, config)?;
    let program = "grub-mkimage";
    let result = Command::new(program)
        .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-c"])
        .arg(&cfg)
        .arg("-d")
        .arg(modules_dir)
        .arg("-o")
        .arg(&out)
        .args(modules)
        .output()
        .map_err(|source| GrubError::Spawn {
            program: program.into(),
            source,
        })?;
    if !result.status.success() {
        return Err(GrubError::Failed {
            program: program.into(),
            stderr: String::from_utf8_lossy(&result.stderr).trim().to_owned(),
        });
    }
    Ok(std::fs::read(&out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_round_trips_through_the_config() {
        let line = kernel_cmdline("ab12", " console=ttyS0 ");
        assert_eq!(
            line,
            "roothash=ab12 systemd.verity=0 systemd.gpt_auto=0 console=ttyS0"
        );
        assert_eq!(cmdline_of(&config(&line)).as_deref(), Some(line.as_str()));
    }
}
