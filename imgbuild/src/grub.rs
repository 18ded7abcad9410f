//! The GRUB configuration and the GRUB EFI image that embeds it.
//!
//! The configuration carries the kernel command line with `roothash=`.
//! It is embedded in the GRUB image (`grub-mkimage -c`), so the root hash is
//! part of the measured bootloader; a copy is also put at
//! `EFI/BOOT/grub.cfg`, which GRUB reads only when the image embeds no
//! configuration (a prebuilt `--bootloader`). [`efi_image`] reads both back
//! out of an image for `cocos-imgbuild inspect`.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

pub mod efi_image;

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
    /// The kernel command line has characters GRUB's script parser would
    /// change before the kernel sees them.
    #[error(transparent)]
    Cmdline(#[from] CmdlineTextError),
}

/// Characters GRUB's script parser interprets on a `linux` line
/// (variables, quoting, escapes, command separators, comments, blocks):
/// with any of them the kernel would not receive the text as written.
pub const GRUB_SPECIAL: &[char] = &[
    '$', '\\', '"', '\'', ';', '&', '|', '<', '>', '{', '}', '#', '`',
];

/// A kernel command line GRUB would not pass on unchanged.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "kernel command line {cmdline:?}: {found:?} is interpreted by GRUB's script parser, so the kernel would not receive this text (allowed: printable ASCII without {})",
    GRUB_SPECIAL.iter().collect::<String>()
)]
pub struct CmdlineTextError {
    /// The command line.
    pub cmdline: String,
    /// The first character that is not allowed.
    pub found: char,
}

/// Checks that GRUB passes `cmdline` to the kernel exactly as written:
/// printable ASCII, spaces, no [`GRUB_SPECIAL`] character.
pub fn check_cmdline_text(cmdline: &str) -> Result<(), CmdlineTextError> {
    match cmdline
        .chars()
        .find(|&c| !(c == ' ' || c.is_ascii_graphic()) || GRUB_SPECIAL.contains(&c))
    {
        Some(found) => Err(CmdlineTextError {
            cmdline: cmdline.into(),
            found,
        }),
        None => Ok(()),
    }
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

/// Why a GRUB configuration is not one whose kernel command line can be
/// vouched for.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No `linux` line.
    #[error("no linux line")]
    NoLinuxLine,
    /// Anything besides the commands [`config`] writes, which could change
    /// what GRUB boots (another `linux` line, a condition, a variable).
    #[error(
        "it is not the configuration cocos-imgbuild writes for its linux line (other commands could change what boots)"
    )]
    NotOurs,
    /// The command line itself would be changed by GRUB.
    #[error(transparent)]
    Text(#[from] CmdlineTextError),
}

/// The kernel command line GRUB boots with from `config`, when `config` is
/// exactly what [`config`] writes for it (nothing added, nothing changed)
/// and GRUB passes the line on unchanged.
pub fn boot_cmdline(config_text: &str) -> Result<String, ConfigError> {
    let line = cmdline_of(config_text).ok_or(ConfigError::NoLinuxLine)?;
    if config(&line) != config_text {
        return Err(ConfigError::NotOurs);
    }
    check_cmdline_text(&line)?;
    Ok(line)
}

/// The kernel command line written on the first `linux` line of a GRUB
/// configuration. Lenient: [`boot_cmdline`] is the checked reading.
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
        assert_eq!(boot_cmdline(&config(&line)), Ok(line));
    }

    #[test]
    fn only_our_own_configuration_is_vouched_for() {
        let line = kernel_cmdline("ab12", "console=ttyS0");
        let ours = config(&line);
        assert_eq!(
            boot_cmdline("set timeout=0\n"),
            Err(ConfigError::NoLinuxLine)
        );
        // A second linux line, a condition, a trailing command: refused.
        for extra in [
            "linux /bzImage roothash=ffff\n",
            "if true; then linux /bzImage roothash=ffff; fi\n",
            "set root=(hd1)\n",
        ] {
            assert_eq!(
                boot_cmdline(&format!("{ours}{extra}")),
                Err(ConfigError::NotOurs),
                "{extra:?}"
            );
            assert_eq!(
                boot_cmdline(&format!("{extra}{ours}")),
                Err(ConfigError::NotOurs),
                "{extra:?}"
            );
        }
        // A line GRUB would rewrite ($var, quotes) is refused even in
        // a configuration of our shape.
        for bad in ["roothash=$h", "a=\"b c\"", "x;boot", "é"] {
            assert!(
                matches!(boot_cmdline(&config(bad)), Err(ConfigError::Text(_))),
                "{bad:?}"
            );
            assert!(check_cmdline_text(bad).is_err(), "{bad:?}");
        }
        assert!(check_cmdline_text("console=ttyS0,115200n8 quiet a=b/c:d").is_ok());
    }
}
