//! Helpers shared by the integration tests: running the reference tools,
//! and reproducible pseudo-random data.
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
    ("dumpe2fs", "e2fsprogs"),
    ("fsck.fat", "dosfstools"),
    ("mkfs.fat", "dosfstools"),
    ("mtype", "mtools"),
    ("mcopy", "mtools"),
    ("mdir", "mtools"),
    ("minfo", "mtools"),
    ("mmd", "mtools"),
    ("grub-mkimage", "grub-common"),
    ("readelf", "binutils"),
    ("sgdisk", "gdisk"),
    ("sfdisk", "fdisk"),
    ("sha256sum", "coreutils"),
    ("du", "coreutils"),
    ("cp", "coreutils"),
    ("sh", "dash"),
    ("mount", "mount"),
    ("umount", "mount"),
];

/// A reference tool, found by its full path (the sbin directories are not
/// always on a user's PATH); panics with an install hint when it is
/// missing (tests never skip). mtools' check of the drive geometry is off:
/// the images are files, not floppies.
pub fn tool(name: &str) -> Command {
    let package = PACKAGES
        .iter()
        .find(|(tool, _)| *tool == name)
        .map_or(name, |(_, package)| *package);
    let path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not found: run scripts/setup-host.sh (Debian package {package})")
        });
    let mut cmd = Command::new(path);
    cmd.env("MTOOLS_SKIP_CHECK", "1");
    cmd
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

/// `fsck.fat -n -V -U -S` must succeed and print nothing but its version
/// line, its two pass lines and the summary line (any warning or repair
/// adds lines). Returns (files, used clusters, total clusters) from the
/// summary.
pub fn fsck_fat_clean(image: &Path) -> (u64, u64, u64) {
    let o = tool("fsck.fat")
        .args(["-n", "-V", "-U", "-S"])
        .arg(image)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "fsck.fat found problems:\n{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let unexpected: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            !l.starts_with("fsck.fat ")
                && !l.contains(" files, ")
                && **l != "Starting check/repair pass."
                && **l != "Starting verification pass."
        })
        .collect();
    assert!(unexpected.is_empty(), "fsck.fat printed warnings:\n{out}");
    let summary = lines
        .iter()
        .find(|l| l.contains(" files, "))
        .unwrap_or_else(|| panic!("no fsck.fat summary in:\n{out}"));
    // "<image>: 6 files, 2052/516214 clusters"
    let tail = summary.rsplit(": ").next().unwrap();
    let mut words = tail.split_whitespace();
    let files: u64 = words.next().unwrap().parse().unwrap();
    words.next(); // "files,"
    let (used, total) = words.next().unwrap().split_once('/').unwrap();
    (files, used.parse().unwrap(), total.parse().unwrap())
}

/// `e2fsck -fn` must succeed and print only its five passes and the
/// summary line: any other line is a problem it found.
pub fn e2fsck_clean(image: &Path) {
    let out = tool("e2fsck").arg("-fn").arg(image).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "e2fsck -fn found problems:\n{text}");
    for line in text.lines() {
        assert!(
            line.starts_with("Pass ") || line.contains(" files (") || line.starts_with("e2fsck "),
            "e2fsck said: {line}\n{text}"
        );
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
/// The tests compare what the reference tools read back with these bytes,
/// never with fixed digests, so any seed serves.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
