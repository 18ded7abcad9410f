//! Boots the development image under QEMU (TCG, OVMF, GRUB from the ESP)
//! and checks the boot flow from the serial log; then boots copies with one
//! thing broken and checks that the boot fails closed, at the right step,
//! with the exact message, without offering a shell.
//!
//! Run by scripts/test.sh (`cargo test -p cocos-e2e -- --ignored
//! --test-threads=1` with COCOS_E2E_DIR set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use cocos_e2e::*;

// The FATAL lines of cocos-init for each attack (exact text after the
// `cocos-init: FATAL: ` prefix; see initrd/src/report.rs).
const FATAL_CORRUPT_INIT: &str =
    "switch_root: cannot read /sbin/init: Input/output error (os error 5)";
const FATAL_WRONG_ROOT_HASH: &str = "dm-verity: root hash does not match the verity partition \
     (/dev/sda3: top hash block at offset 4096)";
const FATAL_NO_COCOS: &str = "partitions: no cocos partition found after 10000 ms \
     (no partition named \"cocos\" on /dev/sda, which holds root /dev/sda2 and verity /dev/sda3)";

/// Seconds a boot may take under TCG before the test fails.
const BOOT_TIMEOUT: u32 = 240;

/// Steps of cocos-init, as it announces them.
fn step_markers(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("cocos-init: [").nth(1)?;
            rest.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The checks every failed boot shares: the FATAL line is `fatal`, no step
/// after `step` started, the root's init never ran, and no shell was
/// offered.
fn assert_failed_closed(log: &str, step: u32, fatal: &str) {
    let fatal_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cocos-init: FATAL"))
        .map(str::trim_end)
        .collect();
    assert!(
        fatal_lines.len() == 1 && fatal_lines[0].ends_with(fatal),
        "expected exactly one line ending in {fatal:?}, got {fatal_lines:?}; log:\n{log}"
    );
    let steps = step_markers(log);
    assert!(
        steps.iter().all(|&s| s <= step),
        "steps after {step} ran: {steps:?}; log:\n{log}"
    );
    assert!(
        steps.contains(&step),
        "step {step} never started; log:\n{log}"
    );
    assert!(
        !log.contains("COCOS_ROOT_READY"),
        "the root's init ran; log:\n{log}"
    );
    assert!(
        !log.contains("starting /bin/sh"),
        "a shell was offered; log:\n{log}"
    );
    assert!(
        log.contains("reboot: Power down"),
        "the VM did not power off; log:\n{log}"
    );
}

#[test]
#[ignore = "boots a VM: run by scripts/test.sh"]
fn boots_through_verity_and_luks_into_the_root() {
    let dir = image_dir();
    let hash = root_hash(&dir);
    let (_tmp, disk) = copy_disk(&dir);
    let log = boot(&disk, None, BOOT_TIMEOUT);

    // The kernel command line carries the root hash.
    let cmdline = log
        .lines()
        .find(|l| l.contains("Kernel command line:"))
        .unwrap_or_else(|| panic!("no kernel command line in the log:\n{log}"));
    assert!(cmdline.contains(&format!("roothash={hash}")), "{cmdline}");
    // Every step ran, then the root's init.
    assert_eq!(step_markers(&log), (1..=6).collect::<Vec<_>>(), "{log}");
    assert!(log.contains("COCOS_ROOT_READY"), "{log}");
    // No kernel I/O or integrity errors and no device-mapper errors: a
    // read of a never-written sector of the cocos partition fails its tag
    // check ("device-mapper: crypt: dm-1: INTEGRITY AEAD ERROR, sector 56").
    let errors = kernel_errors(&log);
    assert!(
        errors.is_empty(),
        "kernel errors in the log: {errors:#?}\nlog:\n{log}"
    );

    let mounts = section(&log, "--- /proc/mounts");
    let mount = |target: &str| -> Vec<String> {
        mounts
            .iter()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[1] == target)
            .unwrap_or_else(|| panic!("{target} not mounted: {mounts:#?}"))
    };
    let root = mount("/");
    assert_eq!(root[0], "/dev/mapper/root_verity", "{root:?}");
    assert_eq!(root[2], "ext4");
    assert!(
        root[3].split(',').any(|o| o == "ro"),
        "root not read-only: {root:?}"
    );
    let cocos = mount("/cocos");
    assert!(cocos[0].starts_with("/dev/mapper/"), "{cocos:?}");
    assert_eq!(cocos[2], "ext4");
    assert!(cocos[3].split(',').any(|o| o == "rw"), "{cocos:?}");
    // The filesystem's own default options: no inode table readahead,
    // which would read unused, never-written table blocks.
    assert!(
        cocos[3].split(',').any(|o| o == "inode_readahead_blks=0"),
        "{cocos:?}"
    );
    for tmpfs in ["/tmp", "/var"] {
        assert_eq!(mount(tmpfs)[2], "tmpfs", "{tmpfs}");
    }
    // The binds come from the cocos filesystem.
    for bind in ["/var/lib/docker", "/cocos_init"] {
        assert_eq!(
            mount(bind)[0],
            cocos[0],
            "{bind} is not on the cocos device"
        );
    }

    // The runtime fstab: root from the verity device, both 9P shares. The
    // image's fstab has only the root line, so the shares come from the
    // corrected copy cocos-init binds over it.
    assert!(
        log.contains("corrected copy bound over it"),
        "cocos-init did not correct the fstab"
    );
    let fstab = section(&log, "--- /etc/fstab");
    let entry = |spec: &str, target: &str, kind: &str| {
        fstab.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[0] == spec && f[1] == target && f[2] == kind
        })
    };
    assert!(entry("/dev/mapper/root_verity", "/", "ext4"), "{fstab:#?}");
    assert!(entry("certs_share", "/etc/certs", "9p"), "{fstab:#?}");
    assert!(entry("env_share", "/etc/cocos", "9p"), "{fstab:#?}");

    // After power-off, partition 4 holds a LUKS2 header with the configured
    // authenticated encryption.
    let (start, _) = partition(&disk, 4);
    let header = disk.with_file_name("luks-header");
    let st = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", header.display()))
        .args(["bs=1M", "count=16", "status=none", "iflag=skip_bytes"])
        .arg(format!("skip={start}"))
        .status()
        .unwrap();
    assert!(st.success());
    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&header)
        .output()
        .expect("cryptsetup not found: run scripts/setup-host.sh");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.status.success(), "luksDump failed: {text}");
    assert!(text.contains("Version:       \t2"), "{text}");
    assert!(text.contains("cipher: aes-gcm-random"), "{text}");
    assert!(text.contains("integrity: aead"), "{text}");
    assert!(text.contains("sector: 4096"), "{text}");
    assert!(text.contains("PBKDF:      pbkdf2"), "{text}");
}

/// The ext4 image of the root in the image directory.
fn rootfs(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("rootfs.ext4")
}

#[test]
#[ignore = "boots a VM: run by scripts/test.sh"]
fn a_flipped_byte_in_the_root_halts_the_boot() {
    let dir = image_dir();
    let (_tmp, disk) = copy_disk(&dir);
    // A byte of /sbin/init, which the boot reads last (the exec).
    let block = *file_blocks(&rootfs(&dir), "/sbin/init")
        .first()
        .expect("/sbin/init has a data block");
    let (root_start, _) = partition(&disk, 2);
    flip_byte(&disk, root_start + block * 4096 + 3);
    let log = boot(&disk, None, BOOT_TIMEOUT);
    assert!(
        log.contains("device-mapper: verity") && log.contains("is corrupted"),
        "dm-verity did not report the corrupt block:\n{log}"
    );
    assert_failed_closed(&log, 6, FATAL_CORRUPT_INIT);
}

/// `veritysetup dump` of the `size` bytes at `start` of `disk` (the verity
/// partition), as its `Field:` → value pairs.
fn veritysetup_dump(
    disk: &std::path::Path,
    start: u64,
    size: u64,
) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; size as usize];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut bytes, start)
        .unwrap();
    let copy = disk.with_file_name("verity-partition");
    std::fs::write(&copy, bytes).unwrap();
    let out = Command::new("veritysetup")
        .arg("dump")
        .arg(&copy)
        .output()
        .expect("veritysetup not found: run scripts/setup-host.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "veritysetup dump failed: {text}");
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((format!("{name}:"), value.trim().to_owned()))
        })
        .collect()
}

#[test]
#[ignore = "boots a VM: run by scripts/test.sh"]
fn a_flipped_byte_in_the_hash_partition_halts_the_boot() {
    let dir = image_dir();
    let (_tmp, disk) = copy_disk(&dir);
    // A byte of the leaf hash block covering data block 0, the ext4
    // superblock, which the mount reads first. The leaf level is the last
    // level of the hash area (superblock, then levels from the top down):
    // it ends where veritysetup says the hash device ends, and has one
    // block per (hash block size / digest size) data blocks.
    let (hash_start, hash_size) = partition(&disk, 3);
    let dump = veritysetup_dump(&disk, hash_start, hash_size);
    let number = |name: &str| -> u64 {
        let value = &dump[name];
        value
            .trim_end_matches(" [bytes]")
            .parse()
            .unwrap_or_else(|_| panic!("{name} {value:?}"))
    };
    let digest: u64 = match dump["Hash algorithm:"].as_str() {
        "sha1" => 20,
        "sha256" => 32,
        "sha512" => 64,
        other => panic!("hash algorithm {other}"),
    };
    let hash_block = number("Hash block size:");
    let leaf_blocks = number("Data blocks:").div_ceil(hash_block / digest);
    // More hash blocks than leaves: the tree has levels above the leaves.
    assert!(number("Hash blocks:") > leaf_blocks, "{dump:#?}");
    let leaf_offset = number("Hash device size:") - leaf_blocks * hash_block;
    flip_byte(&disk, hash_start + leaf_offset + 5);
    let log = boot(&disk, None, BOOT_TIMEOUT);
    // cocos-init checks the whole tree against the root hash before it
    // activates the mapping.
    let fatal = format!(
        "dm-verity: verity partition /dev/sda3 is corrupt: hash block 0 of level 0 \
         (offset {leaf_offset}) does not match level 1"
    );
    assert_failed_closed(&log, 4, &fatal);
}

#[test]
#[ignore = "boots a VM: run by scripts/test.sh"]
fn a_wrong_root_hash_halts_naming_the_mismatch() {
    let dir = image_dir();
    let hash = root_hash(&dir);
    let (_tmp, disk) = copy_disk(&dir);
    // Change one digit of roothash= in the ESP: in the configuration
    // embedded in GRUB and in the copy beside it.
    let mut wrong = hash.clone().into_bytes();
    wrong[10] = if wrong[10] == b'0' { b'1' } else { b'0' };
    let esp = partition(&disk, 1);
    let n = replace_bytes(&disk, esp, hash.as_bytes(), &wrong);
    assert!(n >= 2, "root hash found {n} times in the ESP");
    let log = boot(&disk, None, BOOT_TIMEOUT);
    assert!(log.contains(&format!("roothash={}", String::from_utf8_lossy(&wrong))));
    assert_failed_closed(&log, 4, FATAL_WRONG_ROOT_HASH);
}

/// A copy of the image without partition 4.
fn without_cocos(dir: &std::path::Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, disk) = copy_disk(dir);
    let st = Command::new("sgdisk")
        .args(["-d", "4"])
        .arg(&disk)
        .output()
        .expect("sgdisk not found: run scripts/setup-host.sh");
    assert!(st.status.success(), "sgdisk -d 4 failed");
    (tmp, disk)
}

#[test]
#[ignore = "boots a VM: run by scripts/test.sh"]
fn a_missing_cocos_partition_halts_naming_it() {
    let dir = image_dir();
    let (_tmp, disk) = without_cocos(&dir);
    let log = boot(&disk, None, BOOT_TIMEOUT);
    assert_failed_closed(&log, 3, FATAL_NO_COCOS);
}

#[test]
#[ignore = "boots a VM: run by scripts/test.sh"]
fn cocos_debug_offers_a_shell_instead() {
    let dir = image_dir();
    let (_tmp, disk) = without_cocos(&dir);
    // Same length: replace an option GRUB passes by cocos.debug=1.
    let esp = partition(&disk, 1);
    let n = replace_bytes(&disk, esp, b"systemd.verity=0", b"cocos.debug=1   ");
    assert!(n >= 2, "option found {n} times in the ESP");
    let log = boot(
        &disk,
        Some(("starting /bin/sh", "echo SHELL_$((6 * 7)); poweroff -f\n")),
        BOOT_TIMEOUT,
    );
    assert!(log.contains(FATAL_NO_COCOS), "{log}");
    assert!(log.contains("cocos-init: debug: starting /bin/sh"), "{log}");
    assert!(
        log.contains("SHELL_42"),
        "the shell did not run the command:\n{log}"
    );
    assert!(!log.contains("COCOS_ROOT_READY"), "{log}");
}
