//! Helpers shared by the integration tests: running the reference tools.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// The Debian package of the reference tools whose package is not their
/// name, for the install hint.
const PACKAGES: &[(&str, &str)] = &[
    ("modinfo", "kmod"),
    ("depmod", "kmod"),
    ("veritysetup", "cryptsetup-bin"),
    ("e2fsck", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("fsck.fat", "dosfstools"),
    ("mtype", "mtools"),
    ("sgdisk", "gdisk"),
    ("sfdisk", "fdisk"),
    ("sha256sum", "coreutils"),
];

/// A reference tool; panics with an install hint when it is missing (tests
/// never skip).
pub fn tool(name: &str) -> Command {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists());
    let package = PACKAGES
        .iter()
        .find(|(tool, _)| *tool == name)
        .map_or(name, |(_, package)| *package);
    assert!(
        found,
        "{name} not found: run scripts/setup-host.sh (Debian package {package})"
    );
    Command::new(name)
}

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
