//! The ext4 writer against the reference tools: `e2fsck -fn` must find
//! nothing, and the kernel's ext4 driver (loop mount, read-only) must show
//! exactly the tree: contents, modes, owners, link targets, link counts,
//! device numbers, xattrs and clamped mtimes.
//!
//! Needs root (device nodes, chown, security.capability, loop mounts) and
//! e2fsprogs; fails loudly without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use cocos_formats::ext4::{Ext4Options, Ext4Plan, FileSink, SourceTree};
use cocos_imgbuild::tree;
use common::{e2fsck_clean, pseudo_random, run_ok, tool};

const EPOCH: i64 = 1_700_000_000;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the ext4 tests need root (device nodes, chown, loop mounts); run them as root"
    );
}

fn options(root_owned: bool) -> Ext4Options {
    Ext4Options {
        uuid: uuid::Uuid::from_u128(0x1234),
        hash_seed: uuid::Uuid::from_u128(0x5678_9abc_def0),
        timestamp: EPOCH,
        root_owned,
        size: None,
        label: "root".into(),
        min_inodes: None,
        lazy_inode_tables: false,
    }
}

/// Writes `tree_dir` to `image` and returns the plan's size.
fn build(tree_dir: &Path, image: &Path, opts: Ext4Options) -> u64 {
    let tree = tree::dir::scan(tree_dir).unwrap();
    let plan = Ext4Plan::new(&tree, opts).unwrap();
    let file = fs::File::create(image).unwrap();
    file.set_len(plan.size()).unwrap();
    plan.write(&tree, &mut FileSink::new(&file, 0), &|_| {})
        .unwrap();
    plan.size()
}

struct Mount(PathBuf);

impl Mount {
    fn new(image: &Path, dir: &Path) -> Self {
        fs::create_dir_all(dir).unwrap();
        let st = tool("mount")
            .args(["-t", "ext4", "-o", "loop,ro"])
            .arg(image)
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "loop mount of {} failed", image.display());
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = tool("umount").arg(&self.0).status();
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    rdev: u64,
    size: u64,
    mtime: i64,
    target: Option<Vec<u8>>,
    content_sha: Option<[u8; 32]>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..]).unwrap();
        value.truncate(len);
        out.push((name.to_vec(), value));
    }
    out.sort();
    out
}

/// Everything observable about every path under `root`.
fn observe(root: &Path, root_owned: bool) -> BTreeMap<Vec<u8>, Seen> {
    use sha2::{Digest, Sha256};
    let mut map = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        if ft.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                let name = e.unwrap().file_name();
                if rel.as_os_str().is_empty() && name == "lost+found" {
                    continue;
                }
                stack.push(rel.join(name));
            }
        }
        let content_sha = ft.is_file().then(|| {
            use std::io::Read;
            let mut h = Sha256::new();
            let mut f = fs::File::open(&path).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            h.finalize().into()
        });
        let clamp = |t: i64| t.min(EPOCH);
        map.insert(
            rel.as_os_str().as_bytes().to_vec(),
            Seen {
                mode: meta.mode(),
                uid: if root_owned { 0 } else { meta.uid() },
                gid: if root_owned { 0 } else { meta.gid() },
                // Directories: the image adds lost+found under the root.
                nlink: meta.nlink(),
                rdev: meta.rdev(),
                size: if ft.is_dir() { 0 } else { meta.len() },
                mtime: clamp(meta.mtime()),
                target: ft.is_symlink().then(|| {
                    fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                content_sha,
                xattrs: xattrs(&path),
            },
        );
    }
    map
}

fn set_mtime(path: &Path, secs: i64) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A tree with every kind of thing the writer must preserve.
fn adversarial_tree(root: &Path, big_dir_entries: usize, huge: bool) {
    fs::create_dir_all(root).unwrap();
    let w = |p: &str, data: &[u8]| fs::write(root.join(p), data).unwrap();
    w("empty", b"");
    w("small", b"hello\n");
    w("block", &[7u8; 4096]);
    w("unaligned", &vec![0xa5; 4096 * 3 + 17]);
    w("zeros", &vec![0u8; 4096 * 5]);
    // A sparse file: holes at the start, middle and end.
    {
        let f = fs::File::create(root.join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle", 20 << 20).unwrap();
        f.write_all_at(&[1u8; 10000], 40 << 20).unwrap();
    }
    // Over 4 GiB (sparse, so cheap), with data past the 4 GiB mark.
    if huge {
        let f = fs::File::create(root.join("huge")).unwrap();
        f.set_len((5 << 30) + 123).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"beyond 4 GiB", (4 << 30) + 4096 * 3)
            .unwrap();
    }
    // Many extents: alternating data and holes (needs an extent leaf block).
    {
        let f = fs::File::create(root.join("fragmented")).unwrap();
        use std::os::unix::fs::FileExt;
        for i in 0..600u64 {
            f.write_all_at(&[i as u8 | 1; 4096], i * 8192).unwrap();
        }
    }
    // A file of ~9 MiB of pseudo-random data.
    w(
        "random",
        &pseudo_random(9 * 1024 * 1024 + 333, 0x9e37_79b9_7f4a_7c15),
    );

    symlink("small", root.join("fast-link")).unwrap();
    symlink("x".repeat(59), root.join("fast-link-59")).unwrap();
    symlink("y".repeat(60), root.join("slow-link-60")).unwrap();
    symlink("z/".repeat(2000), root.join("slow-link-4000")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();

    fs::hard_link(root.join("small"), root.join("hardlink-1")).unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::hard_link(root.join("small"), root.join("sub/hardlink-2")).unwrap();

    let mknod = |p: &str, kind: rustix::fs::FileType, dev: u64| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join(p),
            kind,
            rustix::fs::Mode::from_raw_mode(0o640),
            dev,
        )
        .unwrap()
    };
    mknod(
        "null",
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    mknod(
        "big-dev",
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::makedev(300, 70000),
    );
    mknod(
        "sda",
        rustix::fs::FileType::BlockDevice,
        rustix::fs::makedev(8, 0),
    );
    mknod("fifo", rustix::fs::FileType::Fifo, 0);
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());

    for (name, mode) in [
        ("setuid", 0o4755),
        ("setgid", 0o2711),
        ("sticky-dir", 0o1777),
        ("all-bits", 0o7777),
        ("no-bits", 0o000),
    ] {
        let p = root.join(name);
        if name.ends_with("dir") {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, name).unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::lchown(root.join("setuid"), Some(1000), Some(1001)).unwrap();
    std::os::unix::fs::lchown(root.join("fast-link"), Some(70000), Some(80000)).unwrap();

    // xattrs, including a file capability and one needing most of a block.
    let setx = |p: &str, name: &str, value: &[u8]| {
        rustix::fs::lsetxattr(root.join(p), name, value, rustix::fs::XattrFlags::empty()).unwrap()
    };
    // VFS capability v2: magic_etc, permitted (cap_net_raw), inheritable, ...
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    setx("random", "security.capability", &cap);
    setx("random", "user.comment", b"pseudo-random data");
    setx("random", "trusted.thing", b"");
    setx("sub", "user.dir-attr", b"on a directory");
    setx("block", "user.large", &vec![b'v'; 3000]);

    // Names that are not UTF-8, and 255-byte names.
    fs::write(root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"x").unwrap();
    fs::write(root.join(OsStr::from_bytes(&[b'n'; 255])), b"long").unwrap();
    fs::create_dir(root.join(OsStr::from_bytes(&[b'd'; 255]))).unwrap();

    // Deep nesting.
    let mut deep = root.join("deep");
    for i in 0..64 {
        deep = deep.join(format!("level-{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), b"deep").unwrap();

    // One large directory.
    let big = root.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..big_dir_entries {
        fs::File::create(big.join(format!("entry-{i:06}-{}", "p".repeat(i % 40)))).unwrap();
    }
    let mut f = fs::File::create(big.join("not-empty")).unwrap();
    f.write_all(b"some content").unwrap();

    // mtimes before and after the clamp.
    set_mtime(&root.join("small"), EPOCH - 1000);
    set_mtime(&root.join("random"), EPOCH + 1000);
    set_mtime(&root.join("fast-link"), 1);
    set_mtime(&root.join("sub"), EPOCH + 5);
}

fn check_tree(tree_dir: &Path, work: &Path, root_owned: bool) {
    let image = work.join("image.ext4");
    build(tree_dir, &image, options(root_owned));
    e2fsck_clean(&image);
    let mnt = Mount::new(&image, &work.join("mnt"));
    let want = observe(tree_dir, root_owned);
    let got = observe(&mnt.0, false);
    let mut differences = Vec::new();
    for (path, w) in &want {
        let name = String::from_utf8_lossy(path);
        match got.get(path) {
            None => differences.push(format!("{name}: missing")),
            Some(g) => {
                // The root directory gains lost+found: one more link.
                let mut w_nlink = w.nlink;
                if path.is_empty() {
                    w_nlink += 1;
                }
                let w = Seen {
                    nlink: w_nlink,
                    ..w.clone()
                };
                if &w != g {
                    differences.push(format!("{name}:\n  want {w:?}\n  got  {g:?}"));
                }
            }
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        differences.push(format!("{}: unexpected", String::from_utf8_lossy(path)));
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn adversarial_tree_is_clean_and_identical_through_the_kernel() {
    require_root();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let tree = work.path().join("tree");
    adversarial_tree(&tree, 50_000, true);
    check_tree(&tree, work.path(), false);
}

#[test]
fn root_owned_images_belong_to_root() {
    require_root();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let tree = work.path().join("tree");
    adversarial_tree(&tree, 100, false);
    check_tree(&tree, work.path(), true);
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    require_root();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    adversarial_tree(&a, 3000, false);
    // The same content created in a different order, with other inode
    // numbers and without sparse files on the source side.
    fs::create_dir(&b).unwrap();
    run_ok(
        tool("cp")
            .args(["-a", "--sparse=never"])
            .arg(format!("{}/.", a.display()))
            .arg(&b),
    );
    build(&a, &work.path().join("a.ext4"), options(false));
    build(&b, &work.path().join("b.ext4"), options(false));
    let ha = fs::read(work.path().join("a.ext4")).unwrap();
    let hb = fs::read(work.path().join("b.ext4")).unwrap();
    assert!(ha == hb, "images differ");
    // Another timestamp changes the image.
    let mut later = options(false);
    later.timestamp += 1;
    build(&a, &work.path().join("c.ext4"), later);
    assert!(fs::read(work.path().join("c.ext4")).unwrap() != ha);
}

/// Writes `tree_dir` with GNU tar into `archive`, with numeric owners and
/// sparse members, and `extra` options.
fn gnu_tar(tree_dir: &Path, archive: &Path, extra: &[&str]) {
    run_ok(
        tool("tar")
            .args(["--sparse", "--numeric-owner"])
            .args(extra)
            .arg("-cf")
            .arg(archive)
            .arg("-C")
            .arg(tree_dir)
            .arg("."),
    );
}

fn build_tree(tree: &SourceTree, image: &Path, opts: Ext4Options) {
    let plan = Ext4Plan::new(tree, opts).unwrap();
    let file = fs::File::create(image).unwrap();
    file.set_len(plan.size()).unwrap();
    plan.write(tree, &mut FileSink::new(&file, 0), &|_| {})
        .unwrap();
}

/// A tar of the adversarial tree (as GNU tar writes it: devices, owners,
/// xattrs, hard links, long names, a 5 GiB sparse member) gives exactly the
/// image of the directory, plain or gzip-compressed, without unpacking.
#[test]
fn a_tar_of_the_tree_gives_the_same_bytes() {
    require_root();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let tree = work.path().join("tree");
    adversarial_tree(&tree, 3000, true);
    // GNU tar does not archive sockets.
    fs::remove_file(tree.join("socket")).unwrap();
    let (plain, gz) = (work.path().join("tree.tar"), work.path().join("tree.tgz"));
    let xattrs = ["--xattrs", "--xattrs-include=*"];
    gnu_tar(&tree, &plain, &xattrs);
    gnu_tar(&tree, &gz, &[&xattrs[..], &["-z"]].concat());

    let from_dir = work.path().join("dir.ext4");
    build(&tree, &from_dir, options(false));
    let want = fs::read(&from_dir).unwrap();
    for archive in [&plain, &gz] {
        let image = work.path().join("tar.ext4");
        let source = tree::read(archive).unwrap();
        build_tree(&source, &image, options(false));
        e2fsck_clean(&image);
        let got = fs::read(&image).unwrap();
        assert!(
            got == want,
            "image from {} differs from the directory's",
            archive.display()
        );
        // Holes stay holes: the image takes about what the directory's does.
        let blocks = |p: &Path| fs::metadata(p).unwrap().blocks();
        assert_eq!(blocks(&image), blocks(&from_dir));
    }
}

/// Archives that cannot be represented are refused with the archive and
/// the member named.
#[test]
fn bad_archives_are_refused_with_the_member_named() {
    let work = tempfile::tempdir().unwrap();
    let junk = work.path().join("junk.tar");
    fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let err = chain(&tree::read(&junk).unwrap_err());
    assert!(
        err.contains("junk.tar: not a directory nor a tar archive"),
        "{err}"
    );
    let cases: [(&str, &[u8], &str); 3] = [
        ("escape.tar", b"../etc/passwd", "`..`"),
        ("longname.tar", &[b'n'; 256], "over 255 bytes"),
        ("link.tar", b"dangling", "not in the archive"),
    ];
    for (file, name, want) in cases {
        let path = work.path().join(file);
        let mut builder = tar::Builder::new(fs::File::create(&path).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if file == "link.tar" {
            header.set_entry_type(tar::EntryType::Link);
            builder
                .append_link(
                    &mut header,
                    name.iter().map(|&b| b as char).collect::<String>(),
                    "missing",
                )
                .unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            let mut gnu = header;
            // Raw name bytes, bypassing the builder's own path checks.
            builder
                .append_data(&mut gnu, "placeholder", &[][..])
                .unwrap();
            drop(builder);
            let mut bytes = fs::read(&path).unwrap();
            rewrite_name(&mut bytes, name);
            fs::write(&path, bytes).unwrap();
            let err = chain(&tree::read(&path).unwrap_err());
            assert!(err.contains(file) && err.contains(want), "{file}: {err}");
            continue;
        }
        builder.finish().unwrap();
        drop(builder);
        let err = chain(&tree::read(&path).unwrap_err());
        assert!(err.contains(file) && err.contains(want), "{file}: {err}");
    }
}

/// An error and its sources, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

/// Puts `name` in the first member of a GNU tar (as a GNU long-name member
/// when it does not fit the 100-byte field) and fixes the checksum.
fn rewrite_name(archive: &mut Vec<u8>, name: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.as_mut_bytes().copy_from_slice(&archive[..512]);
    let mut out = Vec::new();
    if name.len() > 100 {
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.as_mut_bytes()[..13].copy_from_slice(b"././@LongLink");
        long.set_size(name.len() as u64 + 1);
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        let mut data = name.to_vec();
        data.push(0);
        data.resize(data.len().next_multiple_of(512), 0);
        out.extend_from_slice(&data);
        header.as_mut_bytes()[..100].fill(0);
        header.as_mut_bytes()[..10].copy_from_slice(b"longlongxx");
    } else {
        header.as_mut_bytes()[..100].fill(0);
        header.as_mut_bytes()[..name.len()].copy_from_slice(name);
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&archive[512..]);
    *archive = out;
}

/// Every way GNU tar stores sparse files (the old GNU format, PAX formats
/// 0.0, 0.1 and 1.0) gives the same image. Without xattrs, as the old GNU
/// format cannot hold them.
#[test]
fn every_sparse_format_gives_the_same_bytes() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(tree.join("sparse")).unwrap();
        f.set_len(9 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&[3u8; 5000], 4 << 20).unwrap();
        f.write_all_at(b"end", (9 << 20) - 3).unwrap();
        // Enough fragments to need extension blocks in the old format.
        let f = fs::File::create(tree.join("fragmented")).unwrap();
        for i in 0..40u64 {
            f.write_all_at(&[i as u8 + 1; 100], i * 65536).unwrap();
        }
    }
    let formats: [&[&str]; 4] = [
        &["--format=gnu"],
        &["--format=posix", "--sparse-version=0.0"],
        &["--format=posix", "--sparse-version=0.1"],
        &["--format=posix", "--sparse-version=1.0"],
    ];
    let mut images = Vec::new();
    for (i, format) in formats.iter().enumerate() {
        let archive = work.path().join(format!("{i}.tar"));
        gnu_tar(&tree, &archive, format);
        let source = tree::read(&archive).unwrap();
        let image = work.path().join(format!("{i}.ext4"));
        build_tree(&source, &image, options(true));
        e2fsck_clean(&image);
        images.push(fs::read(&image).unwrap());
    }
    build(&tree, &work.path().join("dir.ext4"), options(true));
    let want = fs::read(work.path().join("dir.ext4")).unwrap();
    for (format, got) in formats.iter().zip(&images) {
        assert!(got == &want, "{format:?} differs from the directory");
    }
}

/// A real distribution tree (Debian bookworm minbase from debootstrap,
/// created by scripts/minbase-tree.sh): `e2fsck -fn` is clean and the
/// kernel shows every file as in the tree.
#[test]
fn debian_minbase_tree_is_clean_and_identical_through_the_kernel() {
    require_root();
    let tree = PathBuf::from(
        std::env::var("COCOS_MINBASE").unwrap_or_else(|_| "/var/tmp/cocos-minbase".into()),
    );
    assert!(
        tree.join("usr/bin/dpkg").exists(),
        "{}: no Debian minbase tree; create it with scripts/minbase-tree.sh",
        tree.display()
    );
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    check_tree(&tree, work.path(), false);
}

/// An empty filesystem with room for files (as `/cocos` is provisioned):
/// e2fsck is clean, the kernel mounts it read-write, files can be created
/// up to the inode count asked for, across groups, and e2fsck is still
/// clean after. With lazy inode tables (`uninit_bg`) only the used inode
/// table blocks are written.
#[test]
fn an_empty_writable_filesystem_takes_files() {
    require_root();
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let tree = work.path().join("empty");
    fs::create_dir(&tree).unwrap();
    let mut written = Vec::new();
    for lazy in [false, true] {
        let image = work.path().join(format!("cocos-{lazy}.ext4"));
        let opts = Ext4Options {
            size: Some(512 << 20),
            min_inodes: Some(40_000),
            lazy_inode_tables: lazy,
            ..options(true)
        };
        let size = build(&tree, &image, opts);
        assert_eq!(size, 512 << 20);
        written.push(fs::metadata(&image).unwrap().blocks());
        e2fsck_clean(&image);
        let out = run_ok(tool("dumpe2fs").arg(&image));
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_owned()
        };
        let count: u64 = field("Inode count:").parse().unwrap();
        assert!(count >= 40_000, "{count} inodes");
        assert_eq!(field("Filesystem features:").contains("uninit_bg"), lazy);
        if lazy {
            // dumpe2fs shows the groups without used inodes as uninitialised.
            assert!(text.contains("[INODE_UNINIT"), "{text}");
        }
        let mnt = work.path().join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let st = tool("mount")
            .args(["-o", "loop,rw"])
            .arg(&image)
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success());
        let made = (0..15_000).try_for_each(|i| fs::write(mnt.join(format!("f{i}")), b"x"));
        fs::create_dir_all(mnt.join("datasets/a/b")).unwrap();
        fs::write(mnt.join("datasets/a/b/big"), vec![9u8; 8 << 20]).unwrap();
        let st = tool("umount").arg(&mnt).status().unwrap();
        assert!(st.success());
        made.unwrap();
        e2fsck_clean(&image);
    }
    // Lazy tables write only group 0's first inode table blocks.
    assert!(written[1] < written[0] / 4, "{written:?}");
}
