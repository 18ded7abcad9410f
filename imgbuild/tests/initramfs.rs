//! `cocos-imgbuild initramfs`, checked against the reference tools: GNU
//! `cpio -t`/`-tv`/`-i` read the archive (contents, modes, device numbers
//! compared after extraction with `stat`), the header fields are walked by
//! hand from the newc specification, the module closure comes from
//! `modinfo -F depends` and from `depmod -b` on a copy of the tree, and the
//! shared libraries from `ldd`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cocos_imgbuild::initramfs::cpio::read_newc;
use common::{run_ok, tool};

/// SOURCE_DATE_EPOCH of the tests: 2001-09-09 01:46:40 UTC, long enough
/// ago that `cpio -tv` prints the year.
const EPOCH: u32 = 1_000_000_000;

/// Runs `cmd` with `input` on its standard input.
fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn imgbuild() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cocos-imgbuild"));
    c.env("SOURCE_DATE_EPOCH", EPOCH.to_string());
    c
}

/// Runs `initramfs --json` with `args` and returns the summary.
fn initramfs(args: &[&str]) -> serde_json::Value {
    let out = run_ok(imgbuild().arg("initramfs").arg("--json").args(args));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `initramfs --init INIT --out OUT --modules-dir DIR --modules LIST`.
fn with_modules(init: &Path, out: &Path, modules_dir: &Path, modules: &str) -> serde_json::Value {
    initramfs(&[
        "--init",
        init.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--modules-dir",
        modules_dir.to_str().unwrap(),
        "--modules",
        modules,
    ])
}

fn zcat(path: &Path) -> Vec<u8> {
    run_ok(tool("zcat").arg(path)).stdout
}

/// Extracts the archive `gz` with `zcat` and GNU `cpio -i` into `into` (a
/// new directory), so that what a test reads back is what cpio found, not
/// what the crate's own reader makes of the bytes.
fn cpio_extract(gz: &Path, into: &Path) {
    assert!(
        rustix::process::geteuid().is_root(),
        "extracting device nodes needs root; run the tests as root"
    );
    fs::create_dir(into).unwrap();
    run_with_input(
        tool("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(into),
        &zcat(gz),
    );
}

/// The contents and `st_mode` of `path`, extracted by [`cpio_extract`]
/// under `root`: a regular file (not a link that would reach the host's
/// copy).
fn extracted(root: &Path, path: &str) -> (Vec<u8>, u32) {
    let p = root.join(path.trim_start_matches('/'));
    let meta = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path}: not extracted: {e}"));
    assert!(meta.file_type().is_file(), "{path}: not a regular file");
    (fs::read(&p).unwrap(), meta.mode())
}

/// The `lib/modules/<version>` directory of the unpacked Debian kernel
/// (scripts/fetch-boot-deps.sh).
fn kernel_modules() -> PathBuf {
    let dir = std::env::var("COCOS_KERNEL_DIR").unwrap_or_else(|_| "/var/tmp/cocos-kernel".into());
    let base = Path::new(&dir).join("root/lib/modules");
    let mut versions: Vec<PathBuf> = fs::read_dir(&base)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; unpack Debian's kernel with scripts/fetch-boot-deps.sh",
                base.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kernel").is_dir())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("{}: no kernel modules", base.display()))
}

/// The modules of the issue: what the boot flow needs.
const BOOT_MODULES: &str = "virtio_scsi sd_mod ext4 dm-verity dm-crypt dm-integrity";

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// One newc member, decoded by hand from the kernel's buffer-format.rst.
#[derive(Debug)]
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    dev: (u32, u32),
    rdev: (u32, u32),
    check: u32,
    name: String,
    data: Vec<u8>,
}

/// Walks a newc archive as the specification describes it: "070701", 13
/// fields of 8 hex digits, the name with its NUL, padding to 4, the data,
/// padding to 4; ends with TRAILER!!! (returned last).
fn walk_newc(mut data: &[u8]) -> (Vec<Header>, usize) {
    let total = data.len();
    let mut out = Vec::new();
    loop {
        let offset = total - data.len();
        assert_eq!(offset % 4, 0, "member at {offset} is not 4-byte aligned");
        assert_eq!(&data[..6], b"070701", "magic at {offset}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&data[6 + 8 * i..14 + 8 * i]).unwrap();
            assert!(s.bytes().all(|b| b.is_ascii_hexdigit()), "{s:?}");
            u32::from_str_radix(s, 16).unwrap()
        };
        let namesize = field(11) as usize;
        let name_bytes = &data[110..110 + namesize];
        assert_eq!(name_bytes.last(), Some(&0), "name not NUL-terminated");
        let name = String::from_utf8(name_bytes[..namesize - 1].to_vec()).unwrap();
        let data_start = (110 + namesize).div_ceil(4) * 4;
        assert!(data[110 + namesize..data_start].iter().all(|&b| b == 0));
        let filesize = field(6) as usize;
        let h = Header {
            ino: field(0),
            mode: field(1),
            uid: field(2),
            gid: field(3),
            nlink: field(4),
            mtime: field(5),
            filesize: filesize as u32,
            dev: (field(7), field(8)),
            rdev: (field(9), field(10)),
            check: field(12),
            name,
            data: data[data_start..data_start + filesize].to_vec(),
        };
        let next = (data_start + filesize).div_ceil(4) * 4;
        assert!(data[data_start + filesize..next].iter().all(|&b| b == 0));
        data = &data[next..];
        let end = h.name == "TRAILER!!!";
        out.push(h);
        if end {
            return (out, total - data.len());
        }
    }
}

struct Inputs {
    dir: tempfile::TempDir,
    init: PathBuf,
    tool_bin: PathBuf,
    notes: PathBuf,
    secret: PathBuf,
}

/// A script as init (not ELF: no libraries) and three extra files.
fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("init"), b"#!/bin/sh\necho init\n").unwrap();
    fs::set_permissions(p("init"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(p("tool"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(p("tool"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(p("notes"), vec![b'n'; 5000]).unwrap();
    fs::set_permissions(p("notes"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(p("secret"), b"s3cret").unwrap();
    Inputs {
        init: p("init"),
        tool_bin: p("tool"),
        notes: p("notes"),
        secret: p("secret"),
        dir,
    }
}

fn file_args(inp: &Inputs) -> Vec<String> {
    vec![
        "--file".into(),
        format!("{}:/usr/share/doc/notes", inp.notes.display()),
        "--file".into(),
        format!("{}:/bin/tool", inp.tool_bin.display()),
        "--file".into(),
        format!("{}:/etc/secret:0600", inp.secret.display()),
    ]
}

fn build_small(inp: &Inputs, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<String> = vec![
        "--init".into(),
        inp.init.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--device-timeout-ms".into(),
        "2500".into(),
    ];
    args.extend(file_args(inp));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    initramfs(&args)
}

/// Expected entries (from the specification of the initramfs: base
/// directories, device nodes, /init, the config file, the extra files and
/// their parents), with their `ls -l` modes.
const EXPECTED: [(&str, &str); 21] = [
    ("bin", "drwxr-xr-x"),
    ("bin/tool", "-rwxr-xr-x"),
    ("dev", "drwxr-xr-x"),
    ("dev/console", "crw-------"),
    ("dev/null", "crw-rw-rw-"),
    ("etc", "drwxr-xr-x"),
    ("etc/cocos-init.toml", "-rw-r--r--"),
    ("etc/secret", "-rw-------"),
    ("init", "-rwxr-xr-x"),
    ("lib", "drwxr-xr-x"),
    ("lib/modules", "drwxr-xr-x"),
    ("proc", "dr-xr-xr-x"),
    ("root", "drwx------"),
    ("run", "drwxr-xr-x"),
    ("sys", "dr-xr-xr-x"),
    ("tmp", "drwxrwxrwt"),
    ("usr", "drwxr-xr-x"),
    ("usr/share", "drwxr-xr-x"),
    ("usr/share/doc", "drwxr-xr-x"),
    ("usr/share/doc/notes", "-rw-r--r--"),
    // Not an entry: the end of the list for `cpio -t`.
    ("", ""),
];

#[test]
fn cpio_lists_extracts_and_agrees_with_the_newc_specification() {
    let inp = inputs();
    let out = inp.dir.path().join("initrd.cpio.gz");
    let summary = build_small(&inp, &out, &[]);
    let cpio = zcat(&out);

    // `cpio -t` lists exactly the expected entries, in C-locale order.
    let listed = run_with_input(tool("cpio").arg("-t").arg("--quiet"), &cpio);
    let names: Vec<&str> = std::str::from_utf8(&listed.stdout)
        .unwrap()
        .lines()
        .collect();
    let expected: Vec<&str> = EXPECTED
        .iter()
        .map(|e| e.0)
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(names, expected);
    let sorted = run_with_input(
        tool("sort").env("LC_ALL", "C"),
        expected.join("\n").as_bytes(),
    );
    assert_eq!(
        String::from_utf8(sorted.stdout)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        names,
        "not in byte order of paths"
    );
    // `zcat | cpio -t` works on the compressed file too (the pipe the
    // kernel's unpacker mirrors).
    let piped = run_ok(tool("sh").arg("-c").arg(format!(
        "zcat '{}' | cpio -t --quiet | wc -l",
        out.display()
    )));
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim(),
        expected.len().to_string()
    );

    // `cpio -tv` shows the modes; `--list` prints the same lines.
    let verbose = run_with_input(
        tool("cpio").arg("-tv").arg("--quiet").env("TZ", "UTC"),
        &cpio,
    );
    let verbose = String::from_utf8(verbose.stdout).unwrap();
    for (line, (name, mode)) in verbose.lines().zip(EXPECTED) {
        assert!(line.starts_with(mode), "{name}: {line}");
        assert!(line.ends_with(&format!(" {name}")), "{line}");
        assert!(line.contains(" root     root "), "{line}");
        assert!(line.contains(" Sep  9  2001 "), "{line}");
    }
    let list = run_ok(
        imgbuild()
            .arg("initramfs")
            .arg("--list")
            .arg("--init")
            .arg(&inp.init)
            .arg("--out")
            .arg(inp.dir.path().join("again.cpio.gz"))
            .args(["--device-timeout-ms", "2500"])
            .args(file_args(&inp)),
    );
    assert_eq!(String::from_utf8(list.stdout).unwrap(), verbose);

    // Header fields, walked by hand.
    let (headers, end) = walk_newc(&cpio);
    let trailer = headers.last().unwrap();
    assert_eq!(trailer.name, "TRAILER!!!");
    assert_eq!((trailer.mode, trailer.filesize, trailer.nlink), (0, 0, 1));
    assert!(
        cpio[end..].iter().all(|&b| b == 0),
        "junk after the trailer"
    );
    assert_eq!(cpio.len() % 512, 0, "not padded to cpio's 512-byte block");
    let members = &headers[..headers.len() - 1];
    for (i, h) in members.iter().enumerate() {
        assert_eq!(h.ino, i as u32 + 1, "{}: inode numbers in order", h.name);
        assert_eq!((h.uid, h.gid), (0, 0), "{}", h.name);
        assert_eq!(h.mtime, EPOCH, "{}", h.name);
        assert_eq!(h.dev, (0, 0), "{}", h.name);
        assert_eq!(h.check, 0, "{}", h.name);
        let is_dir = h.mode & 0o170000 == 0o040000;
        let nlink = if is_dir {
            // A directory: "." and its entry in the parent, plus ".." of
            // each subdirectory.
            2 + members
                .iter()
                .filter(|c| {
                    c.mode & 0o170000 == 0o040000
                        && c.name.rsplit_once('/').map(|(p, _)| p) == Some(h.name.as_str())
                })
                .count() as u32
        } else {
            1
        };
        assert_eq!(h.nlink, nlink, "{}", h.name);
    }
    let by_name: BTreeMap<&str, &Header> = members.iter().map(|h| (h.name.as_str(), h)).collect();
    assert_eq!(by_name["dev/console"].mode, 0o020600);
    assert_eq!(by_name["dev/console"].rdev, (5, 1));
    assert_eq!(by_name["dev/null"].mode, 0o020666);
    assert_eq!(by_name["dev/null"].rdev, (1, 3));
    assert_eq!(by_name["init"].data, fs::read(&inp.init).unwrap());
    assert_eq!(
        String::from_utf8(by_name["etc/cocos-init.toml"].data.clone()).unwrap(),
        "# Written by cocos-imgbuild initramfs.\n\
         # Kernel modules to load with finit_module, in this order (paths in the initramfs).\n\
         modules = []\n\
         # How long to wait for the disk partitions to appear.\n\
         device_timeout_ms = 2500\n"
    );

    // `cpio -i` extracts it: contents, modes, owners, device numbers and
    // file times as `stat` reports them.
    assert!(
        rustix::process::geteuid().is_root(),
        "extracting device nodes needs root; run the tests as root"
    );
    let x = inp.dir.path().join("x");
    fs::create_dir(&x).unwrap();
    run_with_input(
        tool("cpio").args(["-idm", "--quiet"]).current_dir(&x),
        &cpio,
    );
    let stat = run_ok(
        tool("stat")
            .args(["-c", "%n %A %u %g %t %T %Y %s"])
            .args(expected.iter())
            .current_dir(&x),
    );
    for line in String::from_utf8(stat.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (name, mode) = (f[0], f[1]);
        let want = EXPECTED.iter().find(|e| e.0 == name).unwrap();
        assert_eq!(mode, want.1, "{name}");
        assert_eq!((f[2], f[3]), ("0", "0"), "{name}");
        match name {
            "dev/console" => assert_eq!((f[4], f[5]), ("5", "1")),
            "dev/null" => assert_eq!((f[4], f[5]), ("1", "3")),
            _ => {}
        }
        if !mode.starts_with('d') {
            assert_eq!(f[6], EPOCH.to_string(), "{name}: mtime");
        }
    }
    for (src, dest) in [
        (&inp.init, "init"),
        (&inp.tool_bin, "bin/tool"),
        (&inp.notes, "usr/share/doc/notes"),
        (&inp.secret, "etc/secret"),
    ] {
        assert_eq!(
            fs::read(src).unwrap(),
            fs::read(x.join(dest)).unwrap(),
            "{dest}"
        );
    }

    // The crate's own reader sees what cpio extracted.
    let read = read_newc(&cpio).unwrap();
    assert_eq!(
        read.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        expected
    );
    for m in &read {
        if m.mode & 0o170000 == 0o100000 {
            assert_eq!(m.data, fs::read(x.join(&m.name)).unwrap(), "{}", m.name);
        }
    }
    // The summary agrees with the archive.
    assert_eq!(summary["entries"].as_array().unwrap().len(), expected.len());
    let gz = fs::read(&out).unwrap();
    assert_eq!(summary["size"], gz.len());
    // "<64 hex digits>  <file name>": the whole digest field must agree.
    let sha = String::from_utf8(run_ok(tool("sha256sum").arg(&out)).stdout).unwrap();
    let (digest, name) = sha.trim_end().split_once("  ").unwrap();
    assert_eq!(name, out.to_str().unwrap());
    assert_eq!(summary["sha256"].as_str(), Some(digest));
}

#[test]
fn the_reader_parses_what_gnu_cpio_writes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("t");
    fs::create_dir_all(tree.join("d/e")).unwrap();
    fs::write(tree.join("d/a"), b"x").unwrap();
    fs::write(tree.join("d/e/b"), vec![7u8; 1001]).unwrap();
    std::os::unix::fs::symlink("a", tree.join("d/l")).unwrap();
    let archive = run_ok(tool("sh").arg("-c").arg(format!(
        "cd '{}' && find d | LC_ALL=C sort | cpio -o -H newc --quiet",
        tree.display()
    )))
    .stdout;
    let members = read_newc(&archive).unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["d", "d/a", "d/e", "d/e/b", "d/l"]);
    assert_eq!(members[1].data, b"x");
    assert_eq!(members[3].data, vec![7u8; 1001]);
    assert_eq!(members[4].mode & 0o170000, 0o120000);
    assert_eq!(members[4].data, b"a");
    // Damage is reported, not ignored.
    let mut bad = archive.clone();
    bad[0] = b'1';
    assert!(read_newc(&bad).is_err());
    assert!(read_newc(&archive[..archive.len() / 2]).is_err());
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let inp = inputs();
    let a = inp.dir.path().join("a.cpio.gz");
    let sub = inp.dir.path().join("elsewhere");
    fs::create_dir(&sub).unwrap();
    let b = sub.join("b.cpio.gz");
    build_small(&inp, &a, &[]);
    // The same files given in another order, from another directory.
    let mut args: Vec<String> = vec![
        "--init".into(),
        inp.init.display().to_string(),
        "--out".into(),
        b.display().to_string(),
        "--device-timeout-ms".into(),
        "2500".into(),
    ];
    let mut files = file_args(&inp);
    files.reverse();
    for pair in files.chunks(2) {
        args.push(pair[1].clone());
        args.push(pair[0].clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    initramfs(&args);
    let (ga, gb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_eq!(ga, gb, "two runs differ");
    // RFC 1952 §2.3: FLG 0 (no file name), MTIME 0, OS 3.
    assert_eq!(&ga[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);

    // Another SOURCE_DATE_EPOCH changes the bytes (every mtime).
    let c = inp.dir.path().join("c.cpio.gz");
    let out = run_ok(
        imgbuild()
            .env("SOURCE_DATE_EPOCH", "1000000001")
            .args(["initramfs", "--init"])
            .arg(&inp.init)
            .arg("--out")
            .arg(&c)
            .args(["--device-timeout-ms", "2500"])
            .args(file_args(&inp)),
    );
    assert!(out.status.success());
    assert_ne!(fs::read(&c).unwrap(), ga);
    let (h, _) = walk_newc(&zcat(&c));
    assert!(h[..h.len() - 1].iter().all(|h| h.mtime == EPOCH + 1));
}

#[test]
fn errors_name_the_input_and_leave_no_output() {
    let inp = inputs();
    let out = inp.dir.path().join("out.cpio.gz");
    let modules = kernel_modules();
    let run = |extra: &[&str]| {
        imgbuild()
            .arg("initramfs")
            .arg("--init")
            .arg(&inp.init)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let m = modules.to_str().unwrap();
    let clash = format!("{}:/init", inp.notes.display());
    let bad_mode = format!("{}:/x:8888", inp.notes.display());
    for (args, needles) in [
        (
            vec!["--modules-dir", m, "--modules", "ext4 no_such_module"],
            vec!["\"no_such_module\"", m],
        ),
        (vec!["--module", "ext4"], vec!["--modules-dir"]),
        (
            vec!["--file", "/nonexistent/x:/bin/x"],
            vec!["/nonexistent/x"],
        ),
        (vec!["--file", "relative-dest:bin/x"], vec!["SRC:DEST"]),
        (
            vec!["--file", &clash],
            vec!["/init", "two different entries"],
        ),
        (vec!["--file", &bad_mode], vec!["MODE"]),
    ] {
        let o = run(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        }
        assert!(!stderr.contains("panicked"));
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    let leftovers: Vec<_> = fs::read_dir(inp.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let o = imgbuild()
        .args(["initramfs", "--init", "/nonexistent/init", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/init"));
}

/// name → file of every module in the tree, as `find` lists them.
fn module_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let out = run_ok(tool("find").arg(dir).args(["-name", "*.ko"]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let p = PathBuf::from(l);
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (normalize(&stem), p)
        })
        .collect()
}

/// The closure of `names` following `modinfo -F depends` of each file.
fn modinfo_closure(dir: &Path, names: &str) -> BTreeMap<String, Vec<String>> {
    let files = module_files(dir);
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo: Vec<String> = names.split_whitespace().map(normalize).collect();
    while let Some(n) = todo.pop() {
        if deps.contains_key(&n) {
            continue;
        }
        let out = run_ok(tool("modinfo").args(["-F", "depends"]).arg(&files[&n]));
        let d: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(normalize)
            .collect();
        todo.extend(d.iter().cloned());
        deps.insert(n, d);
    }
    deps
}

/// Hard-links (or copies) the module tree to `base/lib/modules/<version>`
/// and runs `depmod -b base <version>`; returns modules.dep as name →
/// names.
fn depmod_copy(modules: &Path, base: &Path) -> (PathBuf, BTreeMap<String, Vec<String>>) {
    let version = modules.file_name().unwrap().to_str().unwrap();
    let dest = base.join("lib/modules").join(version);
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let linked = tool("cp")
        .arg("-al")
        .arg(modules)
        .arg(&dest)
        .status()
        .unwrap();
    if !linked.success() {
        let _ = fs::remove_dir_all(&dest);
        run_ok(tool("cp").arg("-a").arg(modules).arg(&dest));
    }
    run_ok(tool("depmod").arg("-b").arg(base).arg(version));
    let name = |p: &str| {
        let file = p.rsplit('/').next().unwrap();
        normalize(file.strip_suffix(".ko").unwrap())
    };
    let text = fs::read_to_string(dest.join("modules.dep")).unwrap();
    let deps = text
        .lines()
        .map(|l| {
            let (m, d) = l.split_once(':').unwrap();
            (name(m), d.split_whitespace().map(name).collect())
        })
        .collect();
    (dest, deps)
}

/// Checks that every module comes after each of its dependencies.
fn assert_order(order: &[String], deps: &BTreeMap<String, Vec<String>>) {
    for (i, m) in order.iter().enumerate() {
        for d in &deps[m] {
            let j = order
                .iter()
                .position(|o| o == d)
                .unwrap_or_else(|| panic!("{m} needs {d}, which is not loaded"));
            assert!(j < i, "{m} is loaded before its dependency {d}");
        }
    }
}

fn closure_of(names: &str, deps: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = names.split_whitespace().map(normalize).collect();
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            todo.extend(deps[&n].iter().cloned());
        }
    }
    seen
}

fn module_order(summary: &serde_json::Value) -> Vec<String> {
    summary["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn module_closure_and_order_agree_with_modinfo_and_depmod() {
    let modules = kernel_modules();
    assert!(
        !modules.join("modules.dep").exists(),
        "expected an unpacked package without modules.dep"
    );
    let inp = inputs();
    let out = inp.dir.path().join("m.cpio.gz");
    let summary = with_modules(&inp.init, &out, &modules, BOOT_MODULES);
    let order = module_order(&summary);

    // The closure of `modinfo -F depends`, followed recursively.
    let by_modinfo = modinfo_closure(&modules, BOOT_MODULES);
    assert_eq!(
        order.iter().cloned().collect::<BTreeSet<_>>(),
        by_modinfo.keys().cloned().collect::<BTreeSet<_>>()
    );
    assert_order(&order, &by_modinfo);

    // depmod on a copy: its modules.dep gives the same closure, the order
    // respects it, and with modules.dep present the tool reads it and
    // chooses the same modules in the same order.
    // In /var/tmp, usually the file system of the unpacked kernel, so
    // `cp -al` links instead of copying.
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let (copy, by_depmod) = depmod_copy(&modules, work.path());
    assert_eq!(
        closure_of(BOOT_MODULES, &by_depmod),
        order.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_order(&order, &by_depmod);
    let with_dep = with_modules(
        &inp.init,
        &inp.dir.path().join("d.cpio.gz"),
        &copy,
        BOOT_MODULES,
    );
    let order_dep = module_order(&with_dep);
    assert_order(&order_dep, &by_depmod);
    assert_eq!(order_dep, order);

    // The order is deterministic: dependencies first, ties by the order
    // given, then by name. Asking for the same modules in another order
    // changes the order but not the set.
    let reversed: Vec<&str> = BOOT_MODULES.split_whitespace().rev().collect();
    let other = with_modules(
        &inp.init,
        &inp.dir.path().join("r.cpio.gz"),
        &modules,
        &reversed.join(" "),
    );
    let order_r = module_order(&other);
    assert_order(&order_r, &by_depmod);
    assert_eq!(
        order_r.iter().collect::<BTreeSet<_>>(),
        order.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(order_r.last().map(String::as_str), Some("virtio_scsi"));
    assert_eq!(order.last().map(String::as_str), Some("dm_integrity"));

    // Stored byte for byte at /lib/modules/<version>/<path>, listed in
    // that order in /etc/cocos-init.toml.
    let version = modules.file_name().unwrap().to_str().unwrap();
    let files = module_files(&modules);
    let x = inp.dir.path().join("x");
    cpio_extract(&out, &x);
    let config = String::from_utf8(extracted(&x, "etc/cocos-init.toml").0).unwrap();
    let listed: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix("\","))
        .collect();
    assert_eq!(listed.len(), order.len());
    for (name, path) in order.iter().zip(&listed) {
        let src = &files[name];
        let rel = src.strip_prefix(&modules).unwrap();
        assert_eq!(
            *path,
            format!("/lib/modules/{version}/{}", rel.display()),
            "{name}"
        );
        let (data, mode) = extracted(&x, path);
        assert!(data == fs::read(src).unwrap(), "{name}: {path} differs");
        assert_eq!(mode, 0o100644, "{name}");
    }
}

/// The modules the issue measured for the boot flow, in the order it
/// loaded them: a list closed under dependencies, so the tool adds nothing.
#[test]
fn the_issue_module_list_is_closed_under_dependencies() {
    const MEASURED: &str = "virtio_pci_modern_dev virtio_pci_legacy_dev virtio_ring virtio \
        virtio_pci scsi_common scsi_mod virtio_scsi crct10dif_common crc-t10dif crc64 \
        crc64-rocksoft t10-pi sd_mod crc32c_generic jbd2 mbcache crc16 ext4 dm-mod \
        reed_solomon dm-bufio dm-verity async_tx xor async_xor dm-integrity dm-crypt gcm \
        gf128mul ghash-generic ctr ecb xts af_alg algif_aead";
    let modules = kernel_modules();
    let inp = inputs();
    let summary = with_modules(
        &inp.init,
        &inp.dir.path().join("i.cpio.gz"),
        &modules,
        MEASURED,
    );
    let order = module_order(&summary);
    assert_eq!(
        order.iter().cloned().collect::<BTreeSet<_>>(),
        MEASURED.split_whitespace().map(normalize).collect()
    );
    // Given in a valid load order, the list is kept as it is.
    assert_eq!(
        order,
        MEASURED
            .split_whitespace()
            .map(normalize)
            .collect::<Vec<_>>()
    );
    assert_order(&order, &modinfo_closure(&modules, MEASURED));
}

#[test]
fn builtin_modules_are_skipped_and_reported() {
    let modules = kernel_modules();
    let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap();
    // hmac is built into Debian's kernel (modules.builtin lists it).
    assert!(builtin.lines().any(|l| l.ends_with("/hmac.ko")));
    let inp = inputs();
    let summary = initramfs(&[
        "--init",
        inp.init.to_str().unwrap(),
        "--out",
        inp.dir.path().join("b.cpio.gz").to_str().unwrap(),
        "--modules-dir",
        modules.to_str().unwrap(),
        "--module",
        "hmac",
        "--module",
        "crc16",
    ]);
    assert_eq!(module_order(&summary), ["crc16"]);
    assert_eq!(summary["builtin_modules"], serde_json::json!(["hmac"]));
}

/// Compressed modules (xz with the CRC32 check kbuild uses, zstd, gzip)
/// are stored decompressed, under `.ko`.
#[test]
fn compressed_modules_are_stored_decompressed() {
    let modules = kernel_modules();
    let files = module_files(&modules);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("lib/modules/9.9.9-test");
    let mut originals = BTreeMap::new();
    for (name, compress) in [
        (
            "virtio_ring",
            Some(vec!["xz", "--check=crc32", "--lzma2=dict=1MiB"]),
        ),
        ("virtio", Some(vec!["zstd", "-q", "--rm"])),
        ("virtio_pci_modern_dev", Some(vec!["gzip", "-n"])),
        ("virtio_pci_legacy_dev", None),
        ("virtio_pci", Some(vec!["xz", "--check=crc32"])),
    ] {
        let src = &files[name];
        let rel = src.strip_prefix(&modules).unwrap();
        let dest = tree.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(src, &dest).unwrap();
        if let Some(cmd) = compress {
            run_ok(tool(cmd[0]).args(&cmd[1..]).arg(&dest));
        }
        originals.insert(
            format!("lib/modules/9.9.9-test/{}", rel.display()),
            fs::read(src).unwrap(),
        );
    }
    assert!(tree.join("kernel/drivers/virtio/virtio.ko.zst").exists());
    let inp = inputs();
    let out = dir.path().join("c.cpio.gz");
    let summary = initramfs(&[
        "--init",
        inp.init.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--modules-dir",
        tree.to_str().unwrap(),
        "--module",
        "virtio_pci",
    ]);
    assert_eq!(module_order(&summary).len(), 5);
    let x = dir.path().join("x");
    cpio_extract(&out, &x);
    for (path, data) in &originals {
        assert!(
            extracted(&x, path).0 == *data,
            "{path} differs from the uncompressed module"
        );
    }
}

/// `ldd`'s answer for a program: DT_NEEDED name → path, and the
/// interpreter.
fn ldd(path: &Path) -> (BTreeMap<String, String>, String) {
    let out = run_ok(tool("ldd").arg(path));
    let mut libs = BTreeMap::new();
    let mut interp = String::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let line = line.trim();
        if let Some((name, rest)) = line.split_once(" => ") {
            let p = rest.split(" (").next().unwrap();
            libs.insert(name.to_owned(), p.to_owned());
        } else if line.starts_with('/') {
            interp = line.split(" (").next().unwrap().to_owned();
        }
    }
    (libs, interp)
}

#[test]
fn shared_libraries_match_ldd() {
    let init = PathBuf::from("/bin/ls");
    let extra = PathBuf::from("/usr/sbin/cryptsetup");
    assert!(
        extra.exists(),
        "cryptsetup missing: run scripts/setup-host.sh"
    );
    let (mut want, interp) = ldd(&init);
    let (more, interp2) = ldd(&extra);
    assert_eq!(interp, interp2);
    want.extend(more);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.cpio.gz");
    let summary = initramfs(&[
        "--init",
        "/bin/ls",
        "--out",
        out.to_str().unwrap(),
        "--file",
        "/usr/sbin/cryptsetup:/sbin/cryptsetup",
    ]);
    let mut got = BTreeMap::new();
    let mut got_interp = None;
    for l in summary["libraries"].as_array().unwrap() {
        let (name, path) = (l["name"].as_str().unwrap(), l["path"].as_str().unwrap());
        if name.starts_with('/') {
            got_interp = Some(path.to_owned());
        } else {
            got.insert(name.to_owned(), path.to_owned());
        }
    }
    assert_eq!(got, want);
    assert_eq!(got_interp.as_deref(), Some(interp.as_str()));
    // Stored with the contents of the files ldd found (links followed):
    // regular files, as cpio extracts them.
    let x = dir.path().join("x");
    cpio_extract(&out, &x);
    for path in want.values().chain([&interp]) {
        assert!(
            extracted(&x, path).0 == fs::read(path).unwrap(),
            "{path} differs from the host's"
        );
    }

    // A static program needs nothing (ldd: "not a dynamic executable").
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "busybox-static missing: run scripts/setup-host.sh"
    );
    let o = tool("ldd").arg(busybox).output().unwrap();
    assert!(!o.status.success() || String::from_utf8_lossy(&o.stdout).contains("statically"));
    let summary = initramfs(&[
        "--init",
        "/bin/busybox",
        "--out",
        dir.path().join("s.cpio.gz").to_str().unwrap(),
    ]);
    assert_eq!(summary["libraries"], serde_json::json!([]));
}

/// A program needing a library nowhere on the machine: the error names
/// the library and the program; `--lib-dir` supplies it, stored in /lib.
#[test]
fn a_missing_library_is_named_and_lib_dir_supplies_it() {
    let dir = tempfile::tempdir().unwrap();
    // /bin/ls with DT_NEEDED "libselinux.so.1" renamed in its string
    // table to a name of the same length.
    let mut ls = fs::read("/bin/ls").unwrap();
    let (from, to) = (b"libselinux.so.1\0", b"libxyzzyxx.so.1\0");
    let at = ls
        .windows(from.len())
        .position(|w| w == from)
        .expect("/bin/ls does not need libselinux.so.1");
    ls[at..at + from.len()].copy_from_slice(to);
    let prog = dir.path().join("prog");
    fs::write(&prog, &ls).unwrap();
    let readelf = run_ok(tool("readelf").arg("-d").arg(&prog));
    assert!(String::from_utf8_lossy(&readelf.stdout).contains("[libxyzzyxx.so.1]"));

    let out = dir.path().join("p.cpio.gz");
    let o = imgbuild()
        .args(["initramfs", "--init"])
        .arg(&prog)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("\"libxyzzyxx.so.1\"") && err.contains("needed by /init"),
        "{err}"
    );
    assert!(!out.exists());

    let libs = dir.path().join("libs");
    fs::create_dir(&libs).unwrap();
    fs::copy(
        "/lib/x86_64-linux-gnu/libselinux.so.1",
        libs.join("libxyzzyxx.so.1"),
    )
    .unwrap();
    let summary = initramfs(&[
        "--init",
        prog.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--lib-dir",
        libs.to_str().unwrap(),
    ]);
    let found = summary["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "libxyzzyxx.so.1")
        .unwrap();
    assert_eq!(found["path"], "/lib/libxyzzyxx.so.1");
}

/// The kernel is the last word: Debian's kernel, booted under QEMU (TCG)
/// with the archive as its initramfs, unpacks it, runs /init (a busybox
/// script reading /etc/cocos-init.toml) and loads every module in the
/// listed order without an error; /proc/modules then holds exactly them.
#[test]
fn the_kernel_unpacks_it_and_loads_the_modules_in_order() {
    let modules = kernel_modules();
    let version = modules.file_name().unwrap().to_str().unwrap();
    let kernel = modules.join(format!("../../../boot/vmlinuz-{version}"));
    assert!(kernel.exists(), "{}: no kernel", kernel.display());
    assert!(
        Path::new("/bin/busybox").exists(),
        "busybox-static missing: run scripts/setup-host.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    fs::write(
        &init,
        "#!/bin/busybox sh\n\
         b=/bin/busybox\n\
         $b mount -t proc proc /proc\n\
         echo INIT_STARTED\n\
         for m in $($b sed -n 's/^  \"\\(.*\\)\",$/\\1/p' /etc/cocos-init.toml); do\n\
           $b insmod \"$m\" || echo \"INSMOD_FAILED $m\"\n\
         done\n\
         echo \"LOADED $($b cut -d' ' -f1 /proc/modules | $b sort | $b tr '\\n' ' ')\"\n\
         $b ls -ln /dev/console /dev/null\n\
         echo INIT_DONE\n\
         $b poweroff -f\n",
    )
    .unwrap();
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.path().join("boot.cpio.gz");
    let summary = initramfs(&[
        "--init",
        init.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--modules-dir",
        modules.to_str().unwrap(),
        "--modules",
        &format!("{BOOT_MODULES} crc32c_generic"),
        "--file",
        "/bin/busybox:/bin/busybox",
    ]);
    let o = tool("timeout")
        .arg("300")
        .arg("qemu-system-x86_64")
        .args(["-machine", "q35", "-m", "512", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&out)
        .args(["-append", "console=ttyS0 panic=-1"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(log.contains("INIT_STARTED"), "/init did not run:\n{log}");
    assert!(log.contains("INIT_DONE"), "/init did not finish:\n{log}");
    assert!(!log.contains("INSMOD_FAILED"), "{log}");
    assert!(!log.contains("Unknown symbol"), "{log}");
    let loaded: BTreeSet<&str> = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("LOADED "))
        .unwrap()
        .split_whitespace()
        .collect();
    let order = module_order(&summary);
    assert_eq!(loaded, order.iter().map(String::as_str).collect());
    // The device nodes, as the kernel sees them: char 5,1 and 1,3.
    assert!(log.contains("5,   1") && log.contains("1,   3"), "{log}");
}
