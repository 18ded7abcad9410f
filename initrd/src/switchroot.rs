//! Handing over to the root's `/sbin/init`, as `switch_root(8)` does.
//!
//! Move `/dev`, `/proc`, `/sys` and `/run` into the new root, free the
//! initramfs (its files stay in memory otherwise), make the new root `/`
//! (`chdir`, `mount --move . /`, `chroot .`), then `execve` the init.
//!
//! Before `execve`, the init program, and the interpreters it names (ELF
//! `PT_INTERP`, `#!` line), are read in full: dm-verity checks every block
//! read, so a corrupt byte anywhere in them fails here, with a FATAL line,
//! instead of as a `SIGBUS` in the new PID 1 (a kernel panic) after control
//! has passed.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};
use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
use thiserror::Error;

use crate::mounts::{MountError, move_mount};

/// The program started in the new root.
pub const INIT: &str = "/sbin/init";
/// Mounts of the initramfs carried into the new root.
pub const CARRIED_MOUNTS: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];
/// `RAMFS_MAGIC` of `include/uapi/linux/magic.h` (the initramfs's rootfs
/// is a ramfs unless the kernel chose tmpfs).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
/// How many interpreters deep [`read_program`] follows.
const MAX_INTERPRETERS: usize = 4;

/// Why the switch failed.
#[derive(Debug, Error)]
pub enum SwitchError {
    /// Moving a mount or the root.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `chdir` or `chroot`.
    #[error("cannot {action} {}", path.display())]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: nix::errno::Errno,
    },
    /// Reading the init program (or an interpreter) failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (`EIO` for a block dm-verity rejected).
        source: io::Error,
    },
    /// `execve` failed.
    #[error("cannot execute {}", path.display())]
    Exec {
        /// The program.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The interpreter an ELF executable names in its `PT_INTERP` program
/// header (64-bit little-endian ELF only; `None` for anything else or a
/// static executable).
pub fn elf_interpreter(bytes: &[u8]) -> Option<PathBuf> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let field = |o: usize, n: usize| bytes.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| field(o, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        field(o, 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        field(o, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF-64 header: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        // p_offset at +8, p_filesz at +32.
        let offset = usize::try_from(u64_at(ph.checked_add(8)?)?).ok()?;
        let size = usize::try_from(u64_at(ph.checked_add(32)?)?).ok()?;
        let raw = bytes.get(offset..offset.checked_add(size)?)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let path = std::str::from_utf8(&raw[..end]).ok()?;
        return (!path.is_empty()).then(|| PathBuf::from(path));
    }
    None
}

/// The interpreter of a `#!` script.
pub fn script_interpreter(bytes: &[u8]) -> Option<PathBuf> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())];
    let line = std::str::from_utf8(line).ok()?;
    line.split_whitespace().next().map(PathBuf::from)
}

/// Reads `program` in full and, in turn, the interpreters it names;
/// returns the files read.
pub fn read_program(program: &Path) -> Result<Vec<PathBuf>, SwitchError> {
    let mut read = Vec::new();
    let mut next = Some(program.to_path_buf());
    while let Some(path) = next.take() {
        let bytes = std::fs::read(&path).map_err(|source| SwitchError::Read {
            path: path.clone(),
            source,
        })?;
        read.push(path);
        if read.len() <= MAX_INTERPRETERS {
            next = elf_interpreter(&bytes).or_else(|| script_interpreter(&bytes));
        }
    }
    Ok(read)
}

/// Removes the initramfs's files, as `switch_root(8)` does: everything
/// under `dir` on the same filesystem as `dir` (never crossing into a
/// mount), only if that filesystem is a ramfs or tmpfs. Best effort.
fn free_initramfs(dir: &Path) {
    let Ok(fs) = statfs(dir) else { return };
    if fs.filesystem_type() != RAMFS_MAGIC && fs.filesystem_type() != TMPFS_MAGIC {
        return;
    }
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    remove_on_device(dir, meta.dev());
}

fn remove_on_device(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue; // a mount point (the new root, /dev, ...)
        }
        if meta.is_dir() {
            remove_on_device(&path, dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Moves the carried mounts into `new_root`, detaches the initramfs's
/// `/tmp`, frees the initramfs and makes `new_root` the root directory.
pub fn enter_root(new_root: &Path) -> Result<(), SwitchError> {
    for m in CARRIED_MOUNTS {
        let target = crate::mounts::require_dir(new_root, m.trim_start_matches('/'))?;
        move_mount(Path::new(m), &target)?;
    }
    // Nothing of the initramfs's /tmp is needed after this point.
    let _ = umount2("/tmp", MntFlags::MNT_DETACH);
    let sys = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| SwitchError::Sys {
            action,
            path,
            source,
        }
    };
    nix::unistd::chdir(new_root).map_err(sys("enter", new_root))?;
    free_initramfs(Path::new("/"));
    move_mount(Path::new("."), Path::new("/"))?;
    nix::unistd::chroot(".").map_err(sys("chroot to", new_root))?;
    nix::unistd::chdir("/").map_err(sys("enter", Path::new("/")))?;
    Ok(())
}

/// Executes [`INIT`] as this process (PID 1); the caller has read it
/// through with [`read_program`] first. Returns only on failure.
pub fn exec_init() -> Result<Infallible, SwitchError> {
    let source = std::process::Command::new(INIT).exec();
    Err(SwitchError::Exec {
        path: PathBuf::from(INIT),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `readelf -l` (binutils) prints "[Requesting program interpreter: X]".
    fn readelf_interpreter(path: &Path) -> Option<PathBuf> {
        let out = Command::new("readelf")
            .arg("-lW")
            .arg(path)
            .output()
            .expect("readelf not found: run scripts/setup-host.sh (Debian package binutils)");
        assert!(out.status.success(), "readelf {}", path.display());
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("[Requesting program interpreter: "))
            .map(|s| PathBuf::from(s.trim_end_matches(']')))
    }

    #[test]
    fn the_interpreter_is_the_one_readelf_reports() {
        // Dynamic programs of the host, and this test binary.
        let me = std::env::current_exe().unwrap();
        for path in [
            Path::new("/bin/sh"),
            Path::new("/usr/bin/env"),
            me.as_path(),
        ] {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(
                elf_interpreter(&bytes),
                readelf_interpreter(path),
                "{}",
                path.display()
            );
        }
        assert!(elf_interpreter(&std::fs::read(&me).unwrap()).is_some());
    }

    #[test]
    fn scripts_name_their_interpreter() {
        assert_eq!(
            script_interpreter(b"#!/bin/sh -e\necho"),
            Some("/bin/sh".into())
        );
        assert_eq!(
            script_interpreter(b"#! /usr/bin/env python3\n"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(script_interpreter(b"\x7fELF"), None);
        assert_eq!(script_interpreter(b"#!\n"), None);
    }

    #[test]
    fn truncated_or_foreign_elf_gives_no_interpreter() {
        assert_eq!(elf_interpreter(b""), None);
        assert_eq!(elf_interpreter(b"\x7fELF\x02\x01"), None);
        // 32-bit ELF is not followed.
        assert_eq!(elf_interpreter(b"\x7fELF\x01\x01\x01\x00"), None);
        let mut bogus = vec![0u8; 64];
        bogus[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bogus[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        bogus[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(elf_interpreter(&bogus), None);
    }

    #[test]
    fn read_program_follows_script_and_elf_interpreters() {
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("init");
        std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
        let read = read_program(&script).unwrap();
        // /bin/sh is dynamic on Debian: readelf names its loader, which is
        // read too; the loader names no interpreter, so the chain ends.
        let loader = readelf_interpreter(Path::new("/bin/sh"))
            .expect("readelf names no interpreter for /bin/sh: expected a dynamic /bin/sh");
        assert_eq!(read, [script, PathBuf::from("/bin/sh"), loader]);
    }

    #[test]
    fn an_unreadable_program_is_named() {
        let e = read_program(Path::new("/nonexistent/init")).unwrap_err();
        assert_eq!(e.to_string(), "cannot read /nonexistent/init");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = elf_interpreter(&bytes);
            let mut elf = b"\x7fELF\x02\x01".to_vec();
            elf.extend_from_slice(&bytes);
            let _ = elf_interpreter(&elf);
            let _ = script_interpreter(&bytes);
        }
    }
}
