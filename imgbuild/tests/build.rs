//! `cocos-imgbuild build` end to end, checked with the reference tools:
//! veritysetup verifies the root and hash partitions with the printed root
//! hash, sgdisk finds no problems, sfdisk shows the table, e2fsck and
//! fsck.fat find nothing; two builds are bit-identical; SOURCE_DATE_EPOCH
//! and the seed change only what depends on them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{e2fsck_clean, fsck_fat_clean, run_ok, tool};
use sha2::{Digest, Sha256};

const SEED: &str = "0c0c0a1b-2c3d-4e5f-8a9b-abcdefabcdef";

/// A small root tree, its files created in the given order.
fn tree(root: &Path, reverse: bool) {
    let mut items: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                format!("d{}/f{i}", i % 7),
                format!("file {i}\n").repeat(i + 1).into_bytes(),
            )
        })
        .collect();
    items.push(("etc/fstab".into(), b"# fstab\n".to_vec()));
    items.push((
        "sbin/init".into(),
        b"#!/bin/sh\necho COCOS_ROOT_READY\n".to_vec(),
    ));
    if reverse {
        items.reverse();
    }
    for (path, data) in items {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

struct Inputs {
    _dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
    tree_a: PathBuf,
    tree_b: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bzImage");
    let initrd = dir.path().join("initrd.gz");
    fs::write(&kernel, vec![0x4b; 3 << 20]).unwrap();
    fs::write(&initrd, vec![0x1d; 1 << 20]).unwrap();
    let (tree_a, tree_b) = (dir.path().join("a"), dir.path().join("b"));
    tree(&tree_a, false);
    tree(&tree_b, true);
    Inputs {
        _dir: dir,
        kernel,
        initrd,
        tree_a,
        tree_b,
    }
}

/// The binary under test.
fn imgbuild() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cocos-imgbuild"))
}

impl Inputs {
    /// `cocos-imgbuild build --out OUT --rootfs TREE --kernel KERNEL
    /// --initramfs INITRD`: the output and the inputs every build names.
    fn build_cmd(&self, tree: &Path, out: &Path) -> Command {
        let mut cmd = self.build_cmd_without_initramfs(tree, out);
        cmd.arg("--initramfs").arg(&self.initrd);
        cmd
    }

    /// The same without `--initramfs`, for builds that generate one.
    fn build_cmd_without_initramfs(&self, tree: &Path, out: &Path) -> Command {
        let mut cmd = imgbuild();
        cmd.arg("build")
            .arg("--out")
            .arg(out)
            .arg("--rootfs")
            .arg(tree);
        cmd.arg("--kernel").arg(&self.kernel);
        cmd
    }
}

fn build(inp: &Inputs, tree: &Path, out: &Path, epoch: &str, seed: &str) -> serde_json::Value {
    let out = run_ok(
        inp.build_cmd(tree, out)
            .args([
                "--json",
                "--root-owned",
                "--cocos-size",
                "1G",
                "--seed",
                seed,
            ])
            .args(["--cmdline", "console=ttyS0"])
            .env("SOURCE_DATE_EPOCH", epoch),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn digests(dir: &Path) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let mut h = Sha256::new();
        h.update(fs::read(e.path()).unwrap());
        map.insert(
            name,
            h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        );
    }
    map
}

/// `(start, size)` in bytes of partition `n` (1-based), from sfdisk.
fn partition(disk: &Path, n: usize) -> (u64, u64) {
    let out = run_ok(tool("sfdisk").arg("--json").arg(disk));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["partitiontable"]["partitions"][n - 1];
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

fn extract(disk: &Path, (start, size): (u64, u64), to: &Path) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(disk).unwrap();
    let mut buf = vec![0u8; size as usize];
    f.read_exact_at(&mut buf, start).unwrap();
    fs::write(to, buf).unwrap();
}

#[test]
fn build_is_verifiable_and_reproducible() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let (out1, out2) = (work.path().join("one"), work.path().join("two"));
    let s1 = build(&inp, &inp.tree_a, &out1, "1700000000", SEED);
    let root_hash = s1["root_hash"].as_str().unwrap().to_owned();

    // Reproducible: another output directory and a tree created in the
    // opposite order give the same bytes for every artifact.
    build(&inp, &inp.tree_b, &out2, "1700000000", SEED);
    let (d1, d2) = (digests(&out1), digests(&out2));
    assert_eq!(
        d1.keys().collect::<Vec<_>>(),
        [
            "disk.img",
            "manifest.json",
            "rootfs.cpio.gz",
            "rootfs.ext4",
            "rootfs.roothash",
            "rootfs.verity"
        ]
    );
    assert_eq!(d1, d2, "two builds of the same inputs differ");

    let disk = out1.join("disk.img");
    // The partition table: sgdisk finds no problems; names, types and the
    // root/verity GUIDs from the root hash halves.
    let v = run_ok(tool("sgdisk").arg("-v").arg(&disk));
    assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
    let out = run_ok(tool("sfdisk").arg("--json").arg(&disk));
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["esp", "root", "root-verity", "cocos"]);
    let types: Vec<String> = parts
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(
        types,
        [
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
            "0fc63daf-8483-4772-8e79-3d69d8477de4"
        ]
    );
    let guid = |p: &serde_json::Value| p["uuid"].as_str().unwrap().replace('-', "").to_lowercase();
    assert_eq!(guid(&parts[1]), root_hash[..32]);
    assert_eq!(guid(&parts[2]), root_hash[32..]);
    assert_eq!(parts[0]["start"], 2048);
    for p in parts {
        assert_eq!(p["start"].as_u64().unwrap() % 2048, 0);
        assert_eq!(p["size"].as_u64().unwrap() % 2048, 0);
    }

    // dm-verity: veritysetup verifies the partitions with the root hash.
    let (p2, p3) = (work.path().join("p2"), work.path().join("p3"));
    extract(&disk, partition(&disk, 2), &p2);
    extract(&disk, partition(&disk, 3), &p3);
    run_ok(
        tool("veritysetup")
            .arg("verify")
            .arg(&p2)
            .arg(&p3)
            .arg(&root_hash),
    );
    assert_eq!(
        fs::read(&p2).unwrap(),
        fs::read(out1.join("rootfs.ext4")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(out1.join("rootfs.roothash")).unwrap(),
        format!("{root_hash}\n")
    );

    // Filesystems: e2fsck and fsck.fat print nothing but their summaries.
    e2fsck_clean(&out1.join("rootfs.ext4"));
    let p1 = work.path().join("p1");
    extract(&disk, partition(&disk, 1), &p1);
    let (files, _, _) = fsck_fat_clean(&p1);
    // fsck.fat counts directory entries: the volume label, the
    // directories EFI and EFI/BOOT, and the four files.
    assert_eq!(files, 7);
    let cfg = run_ok(tool("mtype").arg("-i").arg(&p1).arg("::/EFI/BOOT/grub.cfg"));
    let cfg = String::from_utf8_lossy(&cfg.stdout);
    assert!(cfg.contains(&format!("roothash={root_hash} ")), "{cfg}");
    assert!(cfg.contains("console=ttyS0"));
    // The GRUB image embeds the same configuration, root hash included
    // (both are written into the ESP after the root hash is known).
    let grub = run_ok(
        tool("mtype")
            .arg("-i")
            .arg(&p1)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
    )
    .stdout;
    assert!(
        grub.windows(cfg.len()).any(|w| w == cfg.as_bytes()),
        "BOOTX64.EFI does not embed grub.cfg"
    );

    // Sparse: the 1 GiB cocos partition and free space take no blocks.
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(&disk).unwrap();
    let data: u64 = ["rootfs.ext4", "rootfs.verity"]
        .iter()
        .map(|f| fs::metadata(out1.join(f)).unwrap().blocks() * 512)
        .sum();
    assert!(
        meta.blocks() * 512 < data + (8 << 20),
        "disk.img allocates {} bytes for {} bytes of root and hash data",
        meta.blocks() * 512,
        data
    );
}

#[test]
fn epoch_and_seed_change_only_what_depends_on_them() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    build(&inp, &inp.tree_a, &base, "1700000000", SEED);
    let later = work.path().join("later");
    build(&inp, &inp.tree_a, &later, "1800000000", SEED);
    let (b, l) = (digests(&base), digests(&later));
    // Timestamps live in the root filesystem (hence its tree and hash) and
    // the ESP; the initramfs copy does not depend on them.
    assert_eq!(b["rootfs.cpio.gz"], l["rootfs.cpio.gz"]);
    for changed in [
        "rootfs.ext4",
        "rootfs.verity",
        "rootfs.roothash",
        "disk.img",
    ] {
        assert_ne!(b[changed], l[changed], "{changed}");
    }

    let other_seed = work.path().join("seed");
    build(
        &inp,
        &inp.tree_a,
        &other_seed,
        "1700000000",
        "99999999-2c3d-4e5f-8a9b-abcdefabcdef",
    );
    let s = digests(&other_seed);
    assert_eq!(b["rootfs.cpio.gz"], s["rootfs.cpio.gz"]);
    for changed in [
        "rootfs.ext4",
        "rootfs.verity",
        "rootfs.roothash",
        "disk.img",
    ] {
        assert_ne!(b[changed], s[changed], "{changed}");
    }
}

#[test]
fn missing_inputs_and_unwritable_outputs_are_named() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let kernel = inp.kernel.to_str().unwrap();
    let initrd = inp.initrd.to_str().unwrap();
    let tree = inp.tree_a.to_str().unwrap();
    let out = work.path().join("out");
    let out = out.to_str().unwrap();
    // Every row gives these, but for the one it changes (`None`: leaves
    // out) and the flags it adds.
    let base = [
        ("--out", out),
        ("--rootfs", tree),
        ("--kernel", kernel),
        ("--initramfs", initrd),
    ];
    for (changed, added, needle) in [
        (
            vec![("--rootfs", Some("/nonexistent"))],
            vec![],
            "/nonexistent: root tree not found",
        ),
        (
            vec![("--kernel", Some("/no/kernel"))],
            vec![],
            "/no/kernel: kernel not found",
        ),
        (
            vec![("--out", Some("/proc/forbidden"))],
            vec![],
            "/proc/forbidden",
        ),
        (
            vec![],
            vec!["--root-size", "64K"],
            "the tree needs at least",
        ),
        (vec![], vec!["--esp-size", "12Q"], "unknown size unit"),
        (vec![("--out", None)], vec![], "--out DIR is required"),
    ] {
        let mut args: Vec<&str> = Vec::new();
        for (flag, value) in base {
            match changed.iter().find(|(f, _)| *f == flag) {
                Some((_, Some(v))) => args.extend([flag, v]),
                Some((_, None)) => {}
                None => args.extend([flag, value]),
            }
        }
        args.extend(added);
        let o = imgbuild().arg("build").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        assert!(!stderr.contains("panicked"));
    }
    // Nothing that looks like a finished image is left behind.
    assert!(!work.path().join("out/disk.img").exists());
}

#[test]
fn inspect_reports_the_image_and_catches_a_flipped_root_byte() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let summary = build(&inp, &inp.tree_a, &out, "1700000000", SEED);
    let disk = out.join("disk.img");
    let inspect = |disk: &Path| {
        imgbuild()
            .args(["inspect", "--json"])
            .arg(disk)
            .output()
            .unwrap()
    };
    let o = inspect(&disk);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The root hash inspect reports is one veritysetup verifies the
    // partitions with, and its verity parameters are the superblock's as
    // veritysetup dump reads them.
    let root_hash = v["root_hash"].as_str().unwrap();
    let (p2, p3) = (work.path().join("p2"), work.path().join("p3"));
    extract(&disk, partition(&disk, 2), &p2);
    extract(&disk, partition(&disk, 3), &p3);
    run_ok(
        tool("veritysetup")
            .arg("verify")
            .arg(&p2)
            .arg(&p3)
            .arg(root_hash),
    );
    let dump = run_ok(tool("veritysetup").arg("dump").arg(&p3));
    let dump = String::from_utf8_lossy(&dump.stdout);
    let field = |name: &str| {
        dump.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {dump}"))
    };
    assert_eq!(v["verity"]["uuid"], field("UUID:"));
    assert_eq!(v["verity"]["algorithm"], field("Hash algorithm:"));
    assert_eq!(v["verity"]["salt"], field("Salt:"));
    assert_eq!(
        v["verity"]["data_blocks"].as_u64().unwrap().to_string(),
        field("Data blocks:")
    );
    assert_eq!(v["root_hash"], summary["root_hash"]);
    assert_eq!(v["kernel_cmdline"], summary["kernel_cmdline"]);
    assert_eq!(v["verification"]["ok"], true);
    let files: Vec<&str> = v["esp_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/grub.cfg",
            "bzImage",
            "initrd.cpio.gz"
        ]
    );

    // One byte of the root partition changed: exit 1, named.
    let (start, size) = partition(&disk, 2);
    let bad = work.path().join("bad.img");
    fs::copy(&disk, &bad).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&bad)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, start + size / 3).unwrap();
        f.write_all_at(&[b[0] ^ 0xff], start + size / 3).unwrap();
    }
    let o = inspect(&bad);
    assert_eq!(o.status.code(), Some(1));
    // The block named is the one changed.
    let block = size / 3 / 4096;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "partition 2 (root): data block {block} (offset {}) is corrupt: it does not verify against the roothash=",
            block * 4096
        )),
        "{stderr}"
    );
}

fn inspect_json(disk: &Path) -> (Option<i32>, serde_json::Value, String) {
    let o = imgbuild()
        .args(["inspect", "--json"])
        .arg(disk)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code(), v, stderr)
}

/// `mtools`' image argument for the ESP (partition 1) of `disk`.
fn esp_arg(disk: &Path) -> String {
    format!("{}@@{}", disk.display(), partition(disk, 1).0)
}

/// A file of the ESP, read with mtools.
fn esp_get(disk: &Path, path: &str) -> Vec<u8> {
    run_ok(
        tool("mtype")
            .arg("-i")
            .arg(esp_arg(disk))
            .arg(format!("::/{path}")),
    )
    .stdout
}

/// Replaces a file of the ESP with mtools.
fn esp_put(disk: &Path, path: &str, bytes: &[u8]) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), bytes).unwrap();
    run_ok(
        tool("mcopy")
            .args(["-o", "-i"])
            .arg(esp_arg(disk))
            .arg(tmp.path())
            .arg(format!("::/{path}")),
    );
}

/// `bytes` with the first hex digit after every `roothash=` changed; panics
/// when there is none.
fn flip_root_hash_digit(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let needle = b"roothash=";
    let mut found = 0;
    for i in 0..out.len().saturating_sub(needle.len()) {
        if &out[i..i + needle.len()] == needle {
            let d = &mut out[i + needle.len()];
            *d = if *d == b'0' { b'1' } else { b'0' };
            found += 1;
        }
    }
    assert_eq!(found, 1, "expected one roothash= in the file");
    out
}

/// GRUB boots with the configuration embedded in BOOTX64.EFI, not with
/// the ESP copy: a root hash changed in either one alone is caught, and
/// the line says which file differs.
#[test]
fn inspect_checks_the_configuration_grub_boots_with() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let summary = build(&inp, &inp.tree_a, &out, "1700000000", SEED);
    let disk = out.join("disk.img");
    let (code, v, stderr) = inspect_json(&disk);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(v["boot_config"]["file"], "EFI/BOOT/BOOTX64.EFI");
    assert_eq!(v["boot_config"]["embedded"], true);
    assert_eq!(v["boot_config"]["prefix"], "/EFI/BOOT");
    assert_eq!(v["boot_config"]["esp_copy_agrees"], true);
    let root_hash = summary["root_hash"].as_str().unwrap();
    assert_eq!(v["root_hash"], root_hash);

    // The embedded configuration alone: the copy still carries the right
    // root hash, but GRUB boots with the other one.
    let embedded = work.path().join("embedded.img");
    fs::copy(&disk, &embedded).unwrap();
    let efi = esp_get(&embedded, "EFI/BOOT/BOOTX64.EFI");
    esp_put(
        &embedded,
        "EFI/BOOT/BOOTX64.EFI",
        &flip_root_hash_digit(&efi),
    );
    let (code, v, stderr) = inspect_json(&embedded);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(v["boot_config"]["esp_copy_agrees"], false);
    assert_ne!(v["root_hash"], root_hash);
    assert!(
        stderr.contains(
            "EFI/BOOT/grub.cfg differs from the configuration embedded in EFI/BOOT/BOOTX64.EFI"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "partition 3 (root-verity): the top hash block (offset 4096 of the hash area) does not hash to the root hash: it does not verify against the roothash={} in the configuration embedded in EFI/BOOT/BOOTX64.EFI, which GRUB boots with",
            v["root_hash"].as_str().unwrap()
        )),
        "{stderr}"
    );
    // The digit changed is in the first half: the root partition's GUID.
    assert!(
        stderr.contains("partition 2 (root) has GUID")
            && !stderr.contains("partition 3 (root-verity) has GUID"),
        "{stderr}"
    );

    // The copy alone: GRUB boots the right root, but the copy disagrees.
    let copy = work.path().join("copy.img");
    fs::copy(&disk, &copy).unwrap();
    let cfg = esp_get(&copy, "EFI/BOOT/grub.cfg");
    esp_put(&copy, "EFI/BOOT/grub.cfg", &flip_root_hash_digit(&cfg));
    let (code, v, stderr) = inspect_json(&copy);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(v["root_hash"], root_hash, "the embedded root hash is read");
    let problems = v["verification"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let line = problems[0].as_str().unwrap();
    assert!(
        line.starts_with(
            "EFI/BOOT/grub.cfg differs from the configuration embedded in EFI/BOOT/BOOTX64.EFI, which GRUB boots with: line 4"
        ) && line.contains(&format!("roothash={root_hash}")),
        "{line}"
    );
}

/// A prebuilt GRUB without an embedded configuration (`--bootloader`):
/// inspect says GRUB reads `$prefix/grub.cfg` and checks that file.
#[test]
fn inspect_checks_the_file_a_prebuilt_grub_reads() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    // What a distribution's prebuilt image looks like: modules and a
    // prefix, no configuration.
    let grub = work.path().join("grubx64.efi");
    run_ok(
        tool("grub-mkimage")
            .args([
                "-O",
                "x86_64-efi",
                "-p",
                "/EFI/BOOT",
                "-d",
                "/usr/lib/grub/x86_64-efi",
                "-o",
            ])
            .arg(&grub)
            .args(["normal", "linux", "fat", "part_gpt"]),
    );
    let out = work.path().join("out");
    run_ok(
        inp.build_cmd(&inp.tree_a, &out)
            .args([
                "--json",
                "--root-owned",
                "--cocos-size",
                "1G",
                "--seed",
                SEED,
            ])
            .arg("--bootloader")
            .arg(&grub)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let disk = out.join("disk.img");
    let (code, v, stderr) = inspect_json(&disk);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(v["boot_config"]["file"], "EFI/BOOT/grub.cfg");
    assert_eq!(v["boot_config"]["embedded"], false);
    assert_eq!(v["boot_config"]["esp_copy_agrees"], serde_json::Value::Null);

    let cfg = esp_get(&disk, "EFI/BOOT/grub.cfg");
    esp_put(&disk, "EFI/BOOT/grub.cfg", &flip_root_hash_digit(&cfg));
    let (code, _, stderr) = inspect_json(&disk);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("does not hash to the root hash: it does not verify against the roothash=")
            && stderr.contains("in EFI/BOOT/grub.cfg, which GRUB boots with"),
        "{stderr}"
    );
}

/// A verity superblock claiming more data blocks than the root partition
/// holds stops inspect with a clear error; nothing is read past the
/// partition. `veritysetup dump` confirms the field that was changed.
#[test]
fn inspect_refuses_a_superblock_that_overruns_the_root_partition() {
    use std::os::unix::fs::FileExt;
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    build(&inp, &inp.tree_a, &out, "1700000000", SEED);
    let disk = out.join("disk.img");
    let (_, root_size) = partition(&disk, 2);
    let (verity_start, _) = partition(&disk, 3);
    // The superblock's data_blocks field: a little-endian u64 at offset 72
    // (veritysetup's "Data blocks"; cryptsetup's verity format docs).
    let claim = root_size / 4096 + 1;
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&claim.to_le_bytes(), verity_start + 72)
        .unwrap();
    drop(f);
    let p3 = work.path().join("p3");
    extract(&disk, partition(&disk, 3), &p3);
    let dump = run_ok(tool("veritysetup").arg("dump").arg(&p3));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.lines().any(|l| l.starts_with("Data blocks:")
            && l.split_whitespace().last() == Some(&claim.to_string())),
        "{dump}"
    );
    let (code, _, stderr) = inspect_json(&disk);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "partition 3 (root-verity): the dm-verity superblock covers {claim} data blocks of 4096 bytes, more than the {root_size}-byte root partition"
        )),
        "{stderr}"
    );
}

/// The default partition table and verity parameters, written out in full
/// in an image description, build exactly what the flags build; the
/// description is the data `build` follows.
#[test]
fn an_explicit_default_table_builds_the_same_image() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let by_flags = work.path().join("flags");
    build(&inp, &inp.tree_a, &by_flags, "1700000000", SEED);
    let config = work.path().join("image.toml");
    fs::write(
        &config,
        format!(
            "seed = \"{SEED}\"\nroot-owned = true\ncmdline = \"console=ttyS0\"\n\
             [verity]\nalgorithm = \"sha256\"\ndata-block-size = 4096\n\
             hash-block-size = 4096\nsalt-seed = \"verity:salt\"\nuuid-seed = \"verity:uuid\"\n\
             [[partition]]\nrole = \"esp\"\nlabel = \"esp\"\ntype = \"esp\"\n\
             size = \"256M\"\nuuid = \"seed:gpt:esp\"\nfilesystem = \"vfat\"\n\
             [[partition]]\nrole = \"root\"\nlabel = \"root\"\ntype = \"root-x86-64\"\n\
             size = \"auto\"\nuuid = \"root-hash-first-half\"\nfilesystem = \"ext4\"\n\
             [[partition]]\nrole = \"root-verity\"\nlabel = \"root-verity\"\n\
             type = \"2c7357ed-ebd2-46d9-aec1-23d437ec2bf5\"\nuuid = \"root-hash-last-half\"\n\
             [[partition]]\nrole = \"data\"\nlabel = \"cocos\"\ntype = \"linux-data\"\n\
             size = \"1G\"\nuuid = \"seed:gpt:cocos\"\nfilesystem = \"none\"\n"
        ),
    )
    .unwrap();
    let described = work.path().join("described");
    run_ok(
        inp.build_cmd(&inp.tree_a, &described)
            .args(["--json", "--config"])
            .arg(&config)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    assert_eq!(digests(&described), digests(&by_flags));
}

/// A table of another shape: a second blank partition with a fixed GUID
/// and relabelled root partitions. sfdisk shows the table as described,
/// sgdisk finds no problem, and inspect still finds and verifies the root
/// (by its type).
#[test]
fn a_described_partition_table_is_built_as_described() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("image.toml");
    let scratch = "8d4e2a3c-1b5f-4a6e-9c7d-0e1f2a3b4c5d";
    fs::write(
        &config,
        format!(
            "seed = \"{SEED}\"\nroot-owned = true\n\
             [[partition]]\nrole = \"esp\"\nsize = \"64M\"\n\
             [[partition]]\nrole = \"root\"\nlabel = \"system\"\nsize = \"16M\"\n\
             [[partition]]\nrole = \"root-verity\"\nlabel = \"system-hash\"\n\
             [[partition]]\nrole = \"data\"\nlabel = \"cocos\"\nsize = \"32M\"\n\
             [[partition]]\nrole = \"data\"\nlabel = \"scratch\"\nsize = \"8M\"\n\
             uuid = \"{scratch}\"\ntype = \"0657fd6d-a4ab-43c4-84e5-0933c84b4f4f\"\n"
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let summary: serde_json::Value = serde_json::from_slice(
        &run_ok(
            inp.build_cmd(&inp.tree_a, &out)
                .args(["--json", "--config"])
                .arg(&config)
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        )
        .stdout,
    )
    .unwrap();
    let disk = out.join("disk.img");
    let v = run_ok(tool("sgdisk").arg("-v").arg(&disk));
    assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
    let table: serde_json::Value =
        serde_json::from_slice(&run_ok(tool("sfdisk").arg("--json").arg(&disk)).stdout).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let field = |k: &str| -> Vec<String> {
        parts
            .iter()
            .map(|p| p[k].as_str().unwrap().to_lowercase())
            .collect()
    };
    assert_eq!(
        field("name"),
        ["esp", "system", "system-hash", "cocos", "scratch"]
    );
    assert_eq!(
        field("type")[4],
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
        "the swap type GUID given"
    );
    assert_eq!(field("uuid")[4], scratch);
    let root_hash = summary["root_hash"].as_str().unwrap();
    assert_eq!(field("uuid")[1].replace('-', ""), root_hash[..32]);
    assert_eq!(field("uuid")[2].replace('-', ""), root_hash[32..]);
    // Sizes in 512-byte sectors: 64M, 16M, then 32M and 8M.
    let sizes: Vec<u64> = parts.iter().map(|p| p["size"].as_u64().unwrap()).collect();
    assert_eq!(
        (sizes[0], sizes[1], sizes[3], sizes[4]),
        (64 << 11, 16 << 11, 32 << 11, 8 << 11)
    );
    let (code, v, stderr) = inspect_json(&disk);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(v["verification"]["root_verified"], true);
}

/// A description that cannot be built is refused before anything is
/// written, with the file, the key and the reason.
#[test]
fn bad_image_descriptions_name_the_file_the_key_and_the_reason() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("image.toml");
    let base = "[[partition]]\nrole = \"esp\"\n[[partition]]\nrole = \"root\"\n\
                [[partition]]\nrole = \"root-verity\"\n";
    for (text, needle) in [
        (
            format!("{base}[[partition]]\nrole = \"data\"\nlabel = \"cocos\"\nsise = \"1G\"\n"),
            "unknown field `sise`",
        ),
        (
            format!("{base}[[partition]]\nrole = \"root\"\nlabel = \"r2\"\n"),
            "partition: 2 partitions have role = \"root\"",
        ),
        (
            "[[partition]]\nrole = \"esp\"\n[[partition]]\nrole = \"root-verity\"\n".to_string(),
            "partition: no partition has role = \"root\"",
        ),
        (
            format!("{base}[[partition]]\nrole = \"data\"\nlabel = \"esp\"\nsize = \"1G\"\n"),
            "partition[4].label: \"esp\" is the label of an earlier partition",
        ),
        (
            format!(
                "{base}[[partition]]\nrole = \"data\"\nlabel = \"big\"\nsize = \"99999999T\"\n"
            ),
            "is too large",
        ),
        (
            format!("{base}[verity]\nhash-block-size = 1000\n"),
            "verity.hash-block-size",
        ),
    ] {
        fs::write(&config, &text).unwrap();
        let out = work.path().join("out");
        let o = inp
            .build_cmd(&inp.tree_a, &out)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&config.display().to_string()) && stderr.contains(needle),
            "{needle:?} or the file not in {stderr:?}"
        );
        assert!(!out.join("disk.img").exists());
    }
    // A --cocos-size with no cocos partition in the table.
    fs::write(
        &config,
        format!("{base}[[partition]]\nrole = \"data\"\nlabel = \"other\"\nsize = \"1M\"\n"),
    )
    .unwrap();
    let o = inp
        .build_cmd(&inp.tree_a, &work.path().join("out"))
        .args(["--cocos-size", "1G", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr.contains("cocos-size: the partition table has no such partition"),
        "{stderr}"
    );
}

/// `--config image.toml` (paths relative to the file, a tar archive as the
/// root tree) builds exactly what the same flags build from the directory;
/// a flag given with `--config` wins over the file.
#[test]
fn config_file_with_a_tar_root_matches_the_flags() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let by_flags = work.path().join("flags");
    build(&inp, &inp.tree_a, &by_flags, "1700000000", SEED);

    // The same inputs, described by a file next to them.
    let desc = work.path().join("desc");
    fs::create_dir(&desc).unwrap();
    run_ok(
        tool("tar")
            .arg("-cf")
            .arg(desc.join("root.tar"))
            .arg("-C")
            .arg(&inp.tree_a)
            .arg("."),
    );
    fs::copy(&inp.kernel, desc.join("bzImage")).unwrap();
    fs::copy(&inp.initrd, desc.join("initrd.gz")).unwrap();
    let config = desc.join("image.toml");
    fs::write(
        &config,
        format!(
            "out = \"built\"\nrootfs = \"root.tar\"\nkernel = \"bzImage\"\n\
             initramfs = \"initrd.gz\"\ncmdline = \"console=ttyS0\"\n\
             cocos-size = \"1G\"\nseed = \"{SEED}\"\nroot-owned = true\n"
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = run_ok(
            imgbuild()
                .args(["build", "--json", "--config"])
                .arg(&config)
                .args(extra)
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    run(&[]);
    assert_eq!(
        digests(&desc.join("built")),
        digests(&by_flags),
        "the config file and tar root built something else"
    );

    // Flags win: another command line and output directory.
    let other = work.path().join("other");
    let summary = run(&[
        "--cmdline",
        "console=hvc0",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(other.join("disk.img").exists());
    let inspect = run_ok(
        imgbuild()
            .args(["inspect", "--json"])
            .arg(other.join("disk.img")),
    );
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let cmdline = report.to_string();
    assert!(cmdline.contains("console=hvc0") && !cmdline.contains("console=ttyS0"));
    // Only the command line changed: the root is the same.
    assert_eq!(
        summary["root_hash"],
        fs::read_to_string(by_flags.join("rootfs.roothash"))
            .unwrap()
            .trim()
    );

    // A key the tool does not know is refused, naming the file.
    fs::write(&config, "rootfs = \"root.tar\"\nroot_size = \"1G\"\n").unwrap();
    let out = imgbuild()
        .args(["build", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("image.toml") && err.contains("root_size"),
        "{err}"
    );
}

/// A progress bar is drawn on a terminal (a pseudo-terminal from
/// `script`), and nothing is drawn when stderr is a pipe.
#[test]
fn progress_bar_only_on_a_terminal() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let command = |out: &Path| {
        format!(
            "{} build --root-owned --cocos-size 1G --out {} --rootfs {} --kernel {} --initramfs {}",
            env!("CARGO_BIN_EXE_cocos-imgbuild"),
            out.display(),
            inp.tree_a.display(),
            inp.kernel.display(),
            inp.initrd.display()
        )
    };
    let tty = run_ok(
        tool("script")
            .args(["-qec"])
            .arg(command(&work.path().join("tty")))
            .arg("/dev/null"),
    );
    let seen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        seen.contains("writing root filesystem"),
        "no progress bar on a terminal:\n{seen}"
    );
    let piped = run_ok(tool("sh").arg("-c").arg(command(&work.path().join("pipe"))));
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !err.contains("writing root filesystem") && !err.contains('\u{1b}'),
        "progress drawn into a pipe:\n{err}"
    );
}

/// A kernel module tree without modules.dep (as in an unpacked kernel
/// package): two "modules" made from any ELF file with `objcopy
/// --add-section .modinfo=...`; `a` needs `b-mod` (written with `-`, asked
/// for and listed with `_`).
fn fake_modules(dir: &Path) -> PathBuf {
    let tree = dir.join("lib/modules/1.2.3-test");
    for (rel, modinfo) in [
        ("kernel/a.ko", &b"license=GPL\0depends=b_mod\0name=a\0"[..]),
        ("kernel/sub/b-mod.ko", &b"depends=\0name=b_mod\0"[..]),
    ] {
        let dest = tree.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let info = dir.join("modinfo");
        fs::write(&info, modinfo).unwrap();
        run_ok(
            tool("objcopy")
                .arg(format!("--add-section=.modinfo={}", info.display()))
                .arg("/bin/true")
                .arg(&dest),
        );
    }
    tree
}

fn cpio_file(archive: &Path, member: &str) -> Vec<u8> {
    let out = run_ok(tool("sh").arg("-c").arg(format!(
        "zcat '{}' | cpio -i --quiet --to-stdout '{member}'",
        archive.display()
    )));
    out.stdout
}

/// `build --init` generates the initramfs (modules, libraries, extra
/// files): it becomes rootfs.cpio.gz and the ESP's initrd.cpio.gz, two
/// builds are identical, and image.toml's keys build the same.
#[test]
fn build_with_init_generates_a_reproducible_initramfs() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let modules = fake_modules(work.path());
    let extra = work.path().join("motd");
    fs::write(&extra, b"hello\n").unwrap();
    let build_init = |tree: &Path, out: &Path| {
        let o = run_ok(
            inp.build_cmd_without_initramfs(tree, out)
                .args(["--json", "--root-owned", "--cocos-size", "1G"])
                .args(["--seed", SEED, "--cmdline", "console=ttyS0"])
                .args(["--init", "/bin/true", "--modules-dir"])
                .arg(&modules)
                .args(["--module", "a", "--device-timeout-ms", "5000"])
                .arg("--initramfs-file")
                .arg(format!("{}:/etc/motd:0640", extra.display()))
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    build_init(&inp.tree_a, &one);
    build_init(&inp.tree_b, &two);
    assert_eq!(
        digests(&one),
        digests(&two),
        "two builds with --init differ"
    );

    let initrd = one.join("rootfs.cpio.gz");
    let listing = run_ok(
        tool("sh")
            .arg("-c")
            .arg(format!("zcat '{}' | cpio -t --quiet", initrd.display())),
    );
    let listing = String::from_utf8(listing.stdout).unwrap();
    for entry in [
        "init",
        "etc/motd",
        "dev/console",
        "lib/modules/1.2.3-test/kernel/a.ko",
        "lib/modules/1.2.3-test/kernel/sub/b-mod.ko",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(
            listing.lines().any(|l| l == entry),
            "{entry} not in\n{listing}"
        );
    }
    assert_eq!(
        String::from_utf8(cpio_file(&initrd, "etc/cocos-init.toml")).unwrap(),
        "# Written by cocos-imgbuild initramfs.\n\
         # Kernel modules to load with finit_module, in this order (paths in the initramfs).\n\
         modules = [\n  \"/lib/modules/1.2.3-test/kernel/sub/b-mod.ko\",\n  \
         \"/lib/modules/1.2.3-test/kernel/a.ko\",\n]\n\
         # How long to wait for the disk partitions to appear.\n\
         device_timeout_ms = 5000\n"
    );
    assert_eq!(cpio_file(&initrd, "etc/motd"), b"hello\n");
    assert!(cpio_file(&initrd, "init") == fs::read("/bin/true").unwrap());

    // The ESP boots the same archive.
    let disk = one.join("disk.img");
    let p1 = work.path().join("p1");
    extract(&disk, partition(&disk, 1), &p1);
    let esp_initrd = run_ok(tool("mtype").arg("-i").arg(&p1).arg("::/initrd.cpio.gz"));
    assert!(esp_initrd.stdout == fs::read(&initrd).unwrap());

    // The manifest records the init program and what the archive holds.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(one.join("manifest.json")).unwrap()).unwrap();
    let roles: Vec<&str> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["kernel", "init", "initramfs-file:/etc/motd"]);
    // The generated archive's digest (known when it was made, not read
    // back) is the file's, as sha256sum computes it.
    let recorded = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "rootfs.cpio.gz")
        .unwrap();
    let sum = run_ok(tool("sha256sum").arg(&initrd));
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        recorded["sha256"].as_str().unwrap(),
        sum.split_whitespace().next().unwrap()
    );
    assert_eq!(
        recorded["size"].as_u64().unwrap(),
        fs::metadata(&initrd).unwrap().len()
    );
    assert_eq!(
        manifest["initramfs"]["modules"],
        serde_json::json!([
            "/lib/modules/1.2.3-test/kernel/sub/b-mod.ko",
            "/lib/modules/1.2.3-test/kernel/a.ko"
        ])
    );

    // image.toml: the same inputs as keys, paths relative to the file.
    let desc = work.path().join("desc");
    fs::create_dir(&desc).unwrap();
    run_ok(
        tool("cp")
            .arg("-a")
            .arg(work.path().join("lib"))
            .arg(&inp.tree_a)
            .arg(&inp.kernel)
            .arg(&extra)
            .arg(&desc),
    );
    fs::copy("/bin/true", desc.join("init")).unwrap();
    let config = desc.join("image.toml");
    fs::write(
        &config,
        format!(
            "out = \"built\"\nrootfs = \"a\"\nkernel = \"bzImage\"\ninit = \"init\"\n\
             modules-dir = \"lib/modules/1.2.3-test\"\nmodules = [\"a\"]\n\
             initramfs-file = [\"motd:/etc/motd:0640\"]\ndevice-timeout-ms = 5000\n\
             cmdline = \"console=ttyS0\"\ncocos-size = \"1G\"\nseed = \"{SEED}\"\n\
             root-owned = true\n"
        ),
    )
    .unwrap();
    run_ok(
        imgbuild()
            .args(["build", "--config"])
            .arg(&config)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    assert_eq!(digests(&desc.join("built")), digests(&one));

    // --initramfs and --init: one of them, not both, and the generation
    // options only with --init.
    let initrd_in = inp.initrd.to_str().unwrap();
    let bad = work.path().join("bad");
    for (extra, needle) in [
        (
            vec!["--initramfs", initrd_in, "--init", "/bin/true"],
            "not both",
        ),
        (vec![], "--init FILE (to generate one) is required"),
        (
            vec!["--initramfs", initrd_in, "--module", "a"],
            "only apply with --init",
        ),
        (
            vec![
                "--init",
                "/bin/true",
                "--modules-dir",
                "/nonexistent",
                "--module",
                "a",
            ],
            "/nonexistent",
        ),
    ] {
        let o = inp
            .build_cmd_without_initramfs(&inp.tree_a, &bad)
            .args(&extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        assert!(!work.path().join("bad/disk.img").exists());
    }
    // A prebuilt initramfs from image.toml and a module flag: refused,
    // not silently ignored.
    fs::write(&config, format!("initramfs = \"{initrd_in}\"\n")).unwrap();
    let o = inp
        .build_cmd_without_initramfs(&inp.tree_a, &bad)
        .arg("--config")
        .arg(&config)
        .args(["--module", "a"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("only apply with --init"), "{stderr}");
}

/// Every digest in manifest.json is what `sha256sum` computes: of each
/// output file, and of each listed partition of disk.img (extracted with
/// the offsets sfdisk reports). Free space is hashed without being read
/// back, so this checks that shortcut against the reference tool.
#[test]
fn manifest_digests_match_sha256sum() {
    let inp = inputs();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    build(&inp, &inp.tree_a, &out, "1700000000", SEED);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let sha256sum = |path: &Path| {
        let o = run_ok(tool("sha256sum").arg(path));
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let artifacts = manifest["artifacts"].as_array().unwrap();
    assert!(artifacts.len() >= 7, "{artifacts:?}");
    for a in artifacts {
        let path = a["path"].as_str().unwrap();
        let file = match path.split_once('#') {
            Some((disk, n)) => {
                let part = work.path().join(format!("part{n}"));
                extract(
                    &out.join(disk),
                    partition(&out.join(disk), n.parse().unwrap()),
                    &part,
                );
                part
            }
            None => out.join(path),
        };
        assert_eq!(a["sha256"].as_str().unwrap(), sha256sum(&file), "{path}");
        assert_eq!(
            a["size"].as_u64().unwrap(),
            fs::metadata(&file).unwrap().len(),
            "{path}"
        );
    }
}
