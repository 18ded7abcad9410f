//! Helpers of the end-to-end tests: the development image built by
//! `scripts/dev-image.sh`, copies of it with one thing changed (an attack),
//! and booting under QEMU with `scripts/qemu-dev.sh`, returning the serial
//! log.
//!
//! The tests are `#[ignore]`d so that `cargo test --workspace` does not boot
//! VMs; `scripts/test.sh` builds the image and runs them with `--ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The image under test: `$COCOS_E2E_DIR` (a `scripts/dev-image.sh` output
/// directory). Panics with instructions when it is missing: these tests
/// must never pass without booting.
pub fn image_dir() -> PathBuf {
    let dir = std::env::var_os("COCOS_E2E_DIR").map(PathBuf::from).expect(
        "COCOS_E2E_DIR is not set: build the image with scripts/dev-image.sh DIR and set \
         COCOS_E2E_DIR=DIR (scripts/test.sh does both)",
    );
    assert!(
        dir.join("disk.img").is_file(),
        "{}: no disk.img; run scripts/dev-image.sh {}",
        dir.display(),
        dir.display()
    );
    dir
}

/// The root hash the image was built with.
pub fn root_hash(dir: &Path) -> String {
    fs::read_to_string(dir.join("rootfs.roothash"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A sparse copy of the image's disk in a new temporary directory.
pub fn copy_disk(dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir_in(dir).unwrap();
    let disk = tmp.path().join("disk.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(dir.join("disk.img"))
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success(), "cp failed");
    (tmp, disk)
}

/// `(offset, size)` in bytes of partition `n` (1-based), from `sfdisk --json`.
pub fn partition(disk: &Path, n: usize) -> (u64, u64) {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .expect("sfdisk not found: run scripts/setup-host.sh");
    assert!(
        out.status.success(),
        "sfdisk --json {} failed",
        disk.display()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["partitiontable"]["partitions"][n - 1];
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

/// Flips every bit of the byte at `offset`.
pub fn flip_byte(disk: &Path, offset: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).unwrap();
}

/// Replaces every occurrence of `from` by `to` (same length) within
/// `[start, start + len)` of `disk`; returns how many were replaced.
pub fn replace_bytes(disk: &Path, (start, len): (u64, u64), from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, start).unwrap();
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = buf[i..].windows(from.len()).position(|w| w == from) {
        let at = i + at;
        buf[at..at + to.len()].copy_from_slice(to);
        n += 1;
        i = at + to.len();
    }
    f.write_all_at(&buf, start).unwrap();
    n
}

/// The 4 KiB blocks of `path` in an ext4 image, from `debugfs`.
pub fn file_blocks(ext4: &Path, path: &str) -> Vec<u64> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("blocks {path}"))
        .arg(ext4)
        .output()
        .expect("debugfs not found: run scripts/setup-host.sh");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect()
}

/// Boots `disk` with `scripts/qemu-dev.sh` and returns the serial log.
/// When a line of the log contains `when`, `input` is typed on the serial
/// console (for the debug shell). The VM must power off within `timeout_s`
/// seconds.
pub fn boot(disk: &Path, typed: Option<(&str, &str)>, timeout_s: u32) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(workspace().join("scripts/qemu-dev.sh"))
        .arg(disk)
        .env("TIMEOUT", timeout_s.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run scripts/qemu-dev.sh");
    let mut stdin = child.stdin.take();
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut log = String::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        log.push_str(&text);
        if let (Some((when, input)), Some(pipe)) = (typed, stdin.as_mut()) {
            if text.contains(when) {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let _ = pipe.write_all(input.as_bytes());
                let _ = pipe.flush();
            }
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    log.push_str(&err_reader.join().unwrap_or_default());
    assert!(
        status.code() != Some(124),
        "the VM did not power off within {timeout_s} s; log:\n{log}"
    );
    log
}

/// The lines of `log` between `--- start` and the next `---` marker.
pub fn section<'a>(log: &'a str, start: &str) -> Vec<&'a str> {
    log.lines()
        .skip_while(|l| l.trim_end() != start)
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .map(str::trim_end)
        .collect()
}

/// Text in a kernel line that reports an I/O or integrity error (besides
/// the `device-mapper:` lines [`dm_info`] does not accept).
const KERNEL_ERRORS: [&str; 5] = [
    "I/O error",
    "critical medium error",
    "integrity: error",
    "EXT4-fs error",
    "INTEGRITY AEAD ERROR",
];

/// Whether `text` (a line from its `device-mapper:` on) is one of the
/// informational lines of a clean boot of the development image (Debian's
/// 6.1 kernel). The kernel prints device-mapper errors in the same form,
/// at a log level the serial console does not show, so every other
/// `device-mapper:` line counts as an error.
fn dm_info(text: &str) -> bool {
    let version = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.');
    if let Some(rest) = text.strip_prefix("device-mapper: ioctl: ") {
        // 4.47.0-ioctl (2022-07-28) initialised: dm-devel@redhat.com
        return rest.split_once("-ioctl (").is_some_and(|(v, tail)| {
            version(v)
                && tail
                    .split_once(") ")
                    .is_some_and(|(_, t)| t == "initialised: dm-devel@redhat.com")
        });
    }
    if let Some(rest) = text.strip_prefix("device-mapper: verity: ") {
        // sha256 using implementation "sha256-generic"
        return rest
            .split_once(" using implementation \"")
            .and_then(|(alg, imp)| Some((alg, imp.strip_suffix('"')?)))
            .is_some_and(|(alg, imp)| {
                ![alg, imp]
                    .iter()
                    .any(|w| w.is_empty() || w.contains([' ', '"']))
            });
    }
    if let Some(v) = text.strip_prefix("device-mapper: uevent: version ") {
        return version(v);
    }
    text == "device-mapper: core: CONFIG_IMA_DISABLE_HTABLE is disabled. \
             Duplicate IMA measurements will not be recorded in the IMA log."
}

/// The lines of a serial log in which the kernel reports an I/O or
/// integrity error: any of [`KERNEL_ERRORS`], and every `device-mapper:`
/// line that is not informational (such as `device-mapper: crypt: dm-1:
/// INTEGRITY AEAD ERROR, sector 56` or `device-mapper: verity: 8:2: data
/// block 504 is corrupted`).
pub fn kernel_errors(log: &str) -> Vec<&str> {
    log.lines()
        .map(str::trim_end)
        .filter(|line| {
            KERNEL_ERRORS.iter().any(|e| line.contains(e))
                || line
                    .find("device-mapper:")
                    .is_some_and(|at| !dm_info(&line[at..]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn informational_device_mapper_lines_are_not_errors() {
        // The lines of a clean boot, as the serial console shows them.
        let log = "[    7.795592] device-mapper: core: CONFIG_IMA_DISABLE_HTABLE is disabled. Duplicate IMA measurements will not be recorded in the IMA log.\r
[    7.796230] device-mapper: uevent: version 1.0.3\r
[    7.803943] device-mapper: ioctl: 4.47.0-ioctl (2022-07-28) initialised: dm-devel@redhat.com\r
[    8.491777] device-mapper: verity: sha256 using implementation \"sha256-generic\"\r
[    8.561194] EXT4-fs (dm-0): mounted filesystem without journal. Quota mode: none.\r
";
        assert_eq!(kernel_errors(log), Vec::<&str>::new());
    }

    #[test]
    fn device_mapper_errors_and_io_errors_are_errors() {
        for line in [
            // Issue 16, as the boot logged it.
            "[    9.727788] trusted_key: device-mapper: crypt: dm-1: INTEGRITY AEAD ERROR, sector 56",
            "[   20.584710] device-mapper: crypt: dm-1: INTEGRITY AEAD ERROR, sector 64",
            "[   12.1] device-mapper: verity: 8:2: data block 504 is corrupted",
            "[   12.1] device-mapper: integrity: dm-1: Checksum failed at sector 0x38",
            "[   12.1] device-mapper: table: 254:1: crypt: Error allocating crypto tfm (-ENOENT)",
            "[   12.1] device-mapper: ioctl: error adding target to table",
            "[   12.1] device-mapper: ioctl: 4.47.0-ioctl (2022-07-28) initialised: someone else",
            "[   12.1] device-mapper: verity: sha256 using implementation \"x\" failed",
            "[   12.1] device-mapper: uevent: version 1.0.3 and an error",
            "[   12.1] device-mapper: core: CONFIG_IMA_DISABLE_HTABLE is disabled.",
            "[   12.1] blk_update_request: I/O error, dev sda, sector 2048 op 0x0:(READ)",
            "[   12.1] sd 0:0:0:0: [sda] tag#0 Add. Sense: critical medium error",
            "[   12.1] EXT4-fs error (device dm-2): ext4_find_entry:1663: inode #2: comm ls",
            "cocos-init: [5/6] encrypted /cocos[    9.7] device-mapper: crypt: dm-1: INTEGRITY AEAD ERROR, sector 56",
        ] {
            assert_eq!(
                kernel_errors(&format!("ok\r\n{line}\r\nok\n")),
                [line],
                "{line}"
            );
        }
    }
}
