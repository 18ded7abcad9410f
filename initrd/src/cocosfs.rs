//! The ext4 filesystem of `/cocos`, written by the image builder's ext4 writer
//! (`cocos_formats::ext4`).
//!
//! With LUKS2 authenticated encryption, dm-integrity keeps a tag per
//! sector, and a sector that was never written has no valid tag: reading it
//! fails with an I/O error (and a kernel log line). cryptsetup avoids that
//! by wiping the whole device at format time (45 s per GiB under
//! emulation). We skip the wipe and instead write the filesystem with our
//! own writer (`cocos_formats::ext4`), which writes every block the kernel
//! will read back, in whole 4 KiB blocks: block 0 and every superblock
//! copy, the group descriptors, every bitmap, the inode table blocks the
//! kernel reads (lazy tables: those holding inodes in use and the one its
//! inode readahead reads after them, with the readahead switched off for
//! every mount; see `cocos_formats::ext4::writer::lazy_itable_blocks`),
//! and the directories. Free blocks are never read before the kernel
//! writes them, so the filesystem mounts and fills without a single tag
//! failure, and the time to write it depends on the metadata, not on the
//! partition size. (`mke2fs` reads blocks it did not write and zeroes
//! inode tables lazily; see docs/decisions.md.)
//!
//! The tree holds the directories the runtime expects (`.cache/oci`,
//! `datasets`, `docker`, `cocos_init`), so they are part of the same write.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cocos_formats::ext4::{
    BlockSink, Ext4Error, Ext4Options, Ext4Plan, Ext4Report, Node, NodeKind, SourceTree,
};
use thiserror::Error;
use uuid::Uuid;

/// Directories created on `/cocos` (those the system this replaces makes).
pub const COCOS_DIRS: [&str; 4] = [".cache/oci", "datasets", "docker", "cocos_init"];
/// One inode per this many bytes: a quarter of mke2fs's default density
/// (16 KiB), enough for container layers and datasets, and a quarter of the
/// inode tables to write at boot.
pub const BYTES_PER_INODE: u64 = 64 * 1024;
/// At most this many inodes (64 MiB of inode tables, reached at 16 GiB):
/// the tables are built in memory and written at every boot, so a very
/// large partition must not make either unbounded.
pub const MAX_INODES: u64 = 1 << 18;
/// The filesystem block size and the unit of every write.
pub const BLOCK: usize = cocos_formats::ext4::writer::BLOCK_SIZE as usize;

/// Why the filesystem could not be written.
#[derive(Debug, Error)]
pub enum CocosFsError {
    /// The device could not be opened or sized.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The device.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The writer failed.
    #[error("cannot write ext4 to {}", path.display())]
    Ext4 {
        /// The device.
        path: PathBuf,
        /// Its error.
        source: Ext4Error,
    },
}

/// A tree of empty directories (`paths` relative, `/`-separated, parents
/// implied), owned by root, mode 0755, in the node order
/// [`SourceTree`] documents (depth first, names sorted).
pub fn directory_tree(paths: &[&str], mtime: i64) -> SourceTree {
    #[derive(Default)]
    struct Dir(BTreeMap<Vec<u8>, Dir>);
    let mut root = Dir::default();
    for path in paths {
        let mut dir = &mut root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir = dir.0.entry(part.as_bytes().to_vec()).or_default();
        }
    }
    fn visit(dir: &Dir, path: PathBuf, mtime: i64, nodes: &mut Vec<Node>) {
        let id = nodes.len();
        nodes.push(Node {
            kind: NodeKind::Dir {
                children: Vec::new(),
            },
            permissions: 0o755,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
            path: path.clone(),
            links: 2,
        });
        let mut children = Vec::with_capacity(dir.0.len());
        for (name, sub) in &dir.0 {
            children.push((name.clone(), nodes.len()));
            visit(
                sub,
                path.join(String::from_utf8_lossy(name).as_ref()),
                mtime,
                nodes,
            );
        }
        nodes[id].kind = NodeKind::Dir { children };
    }
    let mut nodes = Vec::new();
    visit(&root, PathBuf::from("/"), mtime, &mut nodes);
    SourceTree {
        nodes,
        blobs: Vec::new(),
    }
}

/// The options of the `/cocos` filesystem for a device of `device_size`
/// bytes: the whole device (whole blocks), one inode per
/// [`BYTES_PER_INODE`] up to [`MAX_INODES`], label `cocos`.
pub fn cocos_options(device_size: u64, now: i64, uuid: Uuid, hash_seed: Uuid) -> Ext4Options {
    let size = device_size / BLOCK as u64 * BLOCK as u64;
    Ext4Options {
        uuid,
        hash_seed,
        timestamp: now,
        root_owned: true,
        size: Some(size),
        label: "cocos".to_owned(),
        min_inodes: Some((size / BYTES_PER_INODE).min(MAX_INODES)),
        lazy_inode_tables: true,
    }
}

/// A [`BlockSink`] writing whole 4 KiB blocks to a block device with
/// `O_DIRECT`, so nothing goes through the page cache (which could read a
/// block to fill a partial page) and each write reaches dm-crypt as whole,
/// aligned sectors. Data is copied into a 4 KiB-aligned buffer first, as
/// `O_DIRECT` requires.
pub struct DirectSink {
    file: File,
    buf: Vec<u8>,
}

impl DirectSink {
    /// Opens `path` for direct writes (plain writes where the filesystem
    /// does not support `O_DIRECT`, as in tests on tmpfs).
    pub fn open(path: &Path) -> io::Result<Self> {
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(path);
        let file = match direct {
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                OpenOptions::new().read(true).write(true).open(path)?
            }
            other => other?,
        };
        Ok(DirectSink {
            file,
            buf: Vec::new(),
        })
    }

    /// Size of the device in bytes.
    pub fn size(&mut self) -> io::Result<u64> {
        self.file.seek(io::SeekFrom::End(0))
    }

    /// Flushes the device's write cache.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl BlockSink for DirectSink {
    fn write_blocks(&mut self, first: u64, data: &[u8]) -> io::Result<()> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} bytes is not a whole number of blocks", data.len()),
            ));
        }
        // An aligned window inside an over-allocated buffer (no unsafe
        // allocation with a layout needed).
        if self.buf.len() < data.len() + BLOCK {
            self.buf = vec![0u8; data.len() + BLOCK];
        }
        let skew = self.buf.as_ptr() as usize % BLOCK;
        let start = if skew == 0 { 0 } else { BLOCK - skew };
        let window = &mut self.buf[start..start + data.len()];
        window.copy_from_slice(data);
        self.file.write_all_at(window, first * BLOCK as u64)
    }
}

/// Writes the `/cocos` filesystem (with [`COCOS_DIRS`]) over the whole of
/// `device` and flushes it.
pub fn write_filesystem(device: &Path, now: i64) -> Result<Ext4Report, CocosFsError> {
    let io_err = |action| {
        let path = device.to_path_buf();
        move |source| CocosFsError::Io {
            action,
            path,
            source,
        }
    };
    let mut sink = DirectSink::open(device).map_err(io_err("open"))?;
    let size = sink.size().map_err(io_err("find the size of"))?;
    let tree = directory_tree(&COCOS_DIRS, now);
    let options = cocos_options(size, now, Uuid::new_v4(), Uuid::new_v4());
    let ext4_err = |source| CocosFsError::Ext4 {
        path: device.to_path_buf(),
        source,
    };
    let plan = Ext4Plan::new(&tree, options).map_err(ext4_err)?;
    let report = plan.write(&tree, &mut sink, &|_| {}).map_err(ext4_err)?;
    sink.sync().map_err(io_err("flush"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{cmd:?}: {text}");
        text
    }

    /// A device image full of 0xa5 bytes: a block the writer leaves out
    /// reads back as garbage, as a never-written sector of an integrity
    /// device reads back as an error.
    fn garbage_device(path: &Path, size: usize) {
        std::fs::write(path, vec![0xa5u8; size]).unwrap();
    }

    /// `(in use, total)` from the summary line of `e2fsck -f`
    /// (`NAME: 16/4000 files (0.0% non-contiguous), 265/64000 blocks`).
    fn e2fsck_files(output: &str) -> (u64, u64) {
        let counts = output
            .lines()
            .find_map(|l| {
                let (_, rest) = l.rsplit_once(": ")?;
                let (counts, tail) = rest.split_once(' ')?;
                tail.starts_with("files (").then_some(counts)
            })
            .unwrap_or_else(|| panic!("no summary line in e2fsck's output:\n{output}"));
        let (used, total) = counts
            .split_once('/')
            .unwrap_or_else(|| panic!("{counts:?}"));
        (used.parse().unwrap(), total.parse().unwrap())
    }

    #[test]
    fn the_e2fsck_summary_is_read_whole() {
        let line = "/tmp/x/cocos.img: 16/4000 files (0.0% non-contiguous), 265/64000 blocks";
        assert_eq!(e2fsck_files(line), (16, 4000));
        let other = "Pass 5: Checking group summary information\ncocos: 6/16 files (0.0% non-contiguous), 26/100 blocks";
        assert_eq!(e2fsck_files(other), (6, 16));
    }

    /// A sink that writes to a file and records which blocks it wrote.
    struct RecordingSink {
        file: File,
        written: std::collections::BTreeSet<u64>,
    }

    impl BlockSink for RecordingSink {
        fn write_blocks(&mut self, first: u64, data: &[u8]) -> io::Result<()> {
            self.written
                .extend(first..first + (data.len() / BLOCK) as u64);
            self.file.write_all_at(data, first * BLOCK as u64)
        }
    }

    /// Per group, from `dumpe2fs`: the inode table's first block and the
    /// inodes in use at its start (`Inodes per group` less the group's
    /// `unused inodes`).
    fn inode_tables(dump: &str) -> Vec<(u64, u64)> {
        let per_group: u64 = dump
            .lines()
            .find_map(|l| l.strip_prefix("Inodes per group:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut groups = Vec::new();
        let mut table = None;
        for line in dump.lines().map(str::trim) {
            if let Some(at) = line.strip_prefix("Inode table at ") {
                table = Some(at.split('-').next().unwrap().parse::<u64>().unwrap());
            } else if let Some(counts) = line.strip_suffix(" unused inodes") {
                let unused: u64 = counts.rsplit(", ").next().unwrap().parse().unwrap();
                groups.push((table.take().unwrap(), per_group - unused));
            }
        }
        groups
    }

    #[test]
    fn every_inode_table_block_the_kernel_reads_is_written() {
        // The kernel reads an inode's table block, and reads ahead the
        // group's table up to and including block `in_use / 16` (16
        // 256-byte inodes per block; `__ext4_get_inode_loc` in
        // fs/ext4/inode.c, `while (b <= end)`): with 16 inodes in use the
        // mount's read of the root inode also reads the table's second
        // block (block 7 of a 256 MiB partition: "INTEGRITY AEAD ERROR,
        // sector 56"; block 131 at 8 GiB: sector 1048). Each of those
        // blocks must have been written, for the partition sizes of the
        // issue; where the tables are comes from dumpe2fs. The readahead
        // is also switched off for every mount of the filesystem.
        let t = tempfile::tempdir().unwrap();
        let mut failures = Vec::new();
        for size in [250u64 << 20, 8 << 30] {
            let dev = t.path().join(format!("cocos-{size}.img"));
            let file = File::create(&dev).unwrap();
            file.set_len(size).unwrap();
            let mut sink = RecordingSink {
                file,
                written: Default::default(),
            };
            let tree = directory_tree(&COCOS_DIRS, 1_700_000_000);
            let options = cocos_options(size, 1_700_000_000, Uuid::new_v4(), Uuid::new_v4());
            let plan = Ext4Plan::new(&tree, options).unwrap();
            plan.write(&tree, &mut sink, &|_| {}).unwrap();
            drop(sink.file);

            let dump = run(Command::new("dumpe2fs").arg(&dev));
            let groups = inode_tables(&dump);
            assert!(!groups.is_empty(), "{dump}");
            let mut read = Vec::new();
            for (table, in_use) in groups {
                if in_use > 0 {
                    read.extend(table..=table + in_use / 16);
                }
            }
            let unwritten: Vec<u64> = read
                .into_iter()
                .filter(|b| !sink.written.contains(b))
                .collect();
            if !unwritten.is_empty() {
                failures.push(format!(
                    "{size} bytes: the kernel reads blocks {unwritten:?}, never written"
                ));
            }
            assert!(
                dump.lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>()
                        == ["Mount", "options:", "inode_readahead_blks=0"]),
                "{dump}"
            );
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn directory_tree_is_in_depth_first_sorted_order() {
        let tree = directory_tree(&COCOS_DIRS, 0);
        let paths: Vec<_> = tree.nodes.iter().map(|n| n.path.clone()).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/.cache",
                "/.cache/oci",
                "/cocos_init",
                "/datasets",
                "/docker"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(tree.lookup(b".cache/oci"), Some(2));
        assert_eq!(tree.lookup(b"docker"), Some(5));
    }

    #[test]
    fn options_cover_the_device_with_an_inode_per_64_kib() {
        let o = cocos_options((256 << 20) + 1000, 7, Uuid::nil(), Uuid::nil());
        assert_eq!(o.size, Some(256 << 20));
        assert_eq!(o.min_inodes, Some(4096));
        assert_eq!(o.label, "cocos");
        let big = cocos_options(1 << 40, 7, Uuid::nil(), Uuid::nil());
        assert_eq!(big.min_inodes, Some(262_144));
    }

    #[test]
    fn every_block_e2fsck_reads_is_written() {
        // e2fsck -f reads the superblock, descriptors, every bitmap, every
        // inode table and every directory: on a device pre-filled with
        // garbage it only passes if the writer wrote all of them.
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("cocos.img");
        garbage_device(&dev, 300 << 20);
        let report = write_filesystem(&dev, 1_700_000_000).unwrap();
        assert_eq!(report.blocks, (300 << 20) / 4096);
        let text = run(Command::new("e2fsck").arg("-fn").arg(&dev));

        let dump = run(Command::new("dumpe2fs").arg("-h").arg(&dev));
        let field = |name: &str| -> u64 {
            dump.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        // e2fsck counts the inodes in use: the reserved ones below the
        // first non-reserved inode, lost+found, and the five directories
        // of the tree (.cache, .cache/oci, cocos_init, datasets, docker).
        let (files, inodes) = e2fsck_files(&text);
        assert_eq!(files, field("First inode:") - 1 + 1 + 5, "{text}");
        assert_eq!(inodes, field("Inode count:"), "{text}");
        assert!(field("Inode count:") >= (300 << 20) / BYTES_PER_INODE);
        assert_eq!(field("Block size:"), 4096);
        assert!(dump.contains("Filesystem volume name:   cocos"), "{dump}");

        let ls = run(Command::new("debugfs")
            .arg("-R")
            .arg("ls -p /.cache")
            .arg(&dev));
        assert!(ls.contains("/oci/"), "{ls}");
        let ls = run(Command::new("debugfs").arg("-R").arg("ls -p /").arg(&dev));
        for d in ["cocos_init", "datasets", "docker", "lost+found"] {
            assert!(ls.contains(&format!("/{d}/")), "{d}: {ls}");
        }
    }

    #[test]
    fn the_kernel_fills_it_without_reading_unwritten_blocks() {
        // Mounted read-write through a loop device over garbage: files,
        // directories and a large file go to blocks the writer left alone;
        // e2fsck after unmounting finds everything consistent.
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("cocos.img");
        garbage_device(&dev, 128 << 20);
        write_filesystem(&dev, 1_700_000_000).unwrap();
        let mnt = t.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,rw"])
            .arg(&dev)
            .arg(&mnt));
        let filled = (|| -> io::Result<()> {
            for i in 0..500 {
                std::fs::write(mnt.join(format!("datasets/f{i}")), format!("{i}"))?;
            }
            std::fs::create_dir_all(mnt.join("docker/overlay2/a/b/c"))?;
            std::fs::write(mnt.join("docker/big"), vec![3u8; 20 << 20])?;
            Ok(())
        })();
        let umount = Command::new("umount").arg(&mnt).status().unwrap();
        filled.unwrap();
        assert!(umount.success());
        run(Command::new("e2fsck").arg("-fn").arg(&dev));
    }

    #[test]
    fn the_direct_sink_rejects_partial_blocks() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("d");
        std::fs::write(&dev, vec![0u8; 1 << 16]).unwrap();
        let mut sink = DirectSink::open(&dev).unwrap();
        assert_eq!(sink.size().unwrap(), 1 << 16);
        assert!(sink.write_blocks(0, &[1u8; 100]).is_err());
        sink.write_blocks(2, &[1u8; 8192]).unwrap();
        let back = std::fs::read(&dev).unwrap();
        assert!(back[..8192].iter().all(|&b| b == 0));
        assert!(back[8192..16384].iter().all(|&b| b == 1));
    }
}
