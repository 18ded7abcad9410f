//! Mounts: the initramfs's own (step 1), the root and `/cocos` (steps 4
//! and 5), and the runtime ones inside the new root (step 6).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use thiserror::Error;

use crate::fstab::rewrite_fstab;

/// Where the new root is mounted.
pub const NEW_ROOT: &str = "/root";
/// Where the runtime fstab is written when the image's needs correcting
/// (on the initramfs's `/run` tmpfs, which moves into the new root).
pub const RUNTIME_FSTAB: &str = "/run/cocos-init/fstab";

/// A mount or file operation that failed.
#[derive(Debug, Error)]
pub enum MountError {
    /// `mount(2)` failed.
    #[error("cannot mount {what} on {}", target.display())]
    Mount {
        /// What was being mounted ("tmpfs", "/dev/mapper/root_verity").
        what: String,
        /// The mount point.
        target: PathBuf,
        /// The error.
        source: Errno,
    },
    /// A directory or file operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A mount point the read-only root must provide is missing.
    #[error(
        "{} does not exist in the root image (the root is read-only: the image must provide it)",
        path.display()
    )]
    MissingInImage {
        /// The path inside the root.
        path: PathBuf,
    },
}

/// Wraps an OS error with what was being done to which path.
pub fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MountError {
    let path = path.to_path_buf();
    move |source| MountError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dir` (and its parents) with `mode` if it does not exist.
pub fn make_dir(dir: &Path, mode: u32) -> Result<(), MountError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err("create", dir))
}

/// Mounts a filesystem of type `fstype` from `source` on `target` (created
/// if needed).
pub fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    make_dir(target, 0o755)?;
    mount(Some(source), target, Some(fstype), flags, data).map_err(|source_err| MountError::Mount {
        what: format!("{fstype} {source}"),
        target: target.to_path_buf(),
        source: source_err,
    })
}

/// Bind-mounts `source` on `target`.
pub fn bind(source: &Path, target: &Path) -> Result<(), MountError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| MountError::Mount {
        what: format!("bind {}", source.display()),
        target: target.to_path_buf(),
        source: e,
    })
}

/// Moves the mount at `source` to `target`.
pub fn move_mount(source: &Path, target: &Path) -> Result<(), MountError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|e| MountError::Mount {
        what: format!("(moved) {}", source.display()),
        target: target.to_path_buf(),
        source: e,
    })
}

/// Step 1, first: devtmpfs on `/dev`, so the console can be opened.
pub fn mount_dev() -> Result<(), MountError> {
    match mount_fs(
        "devtmpfs",
        Path::new("/dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    ) {
        // Already there (a kernel with CONFIG_DEVTMPFS_MOUNT mounting it).
        Err(MountError::Mount {
            source: Errno::EBUSY,
            ..
        }) => Ok(()),
        other => other,
    }
}

/// Step 1: `/proc`, `/sys`, `/dev/pts`, `/run` (with `/run/cryptsetup`,
/// libcryptsetup's lock directory) and `/tmp`.
pub fn early_mounts() -> Result<(), MountError> {
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", Path::new("/proc"), "proc", secure, None)?;
    mount_fs("sysfs", Path::new("/sys"), "sysfs", secure, None)?;
    mount_fs(
        "devpts",
        Path::new("/dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=0620,ptmxmode=0666"),
    )?;
    mount_fs(
        "tmpfs",
        Path::new("/run"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    make_dir(Path::new("/run/cryptsetup"), 0o700)?;
    mount_fs(
        "tmpfs",
        Path::new("/tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    Ok(())
}

/// configfs on `/sys/kernel/config`, when the kernel has it (after the
/// modules are loaded, since Debian builds it as a module).
pub fn mount_configfs() -> Result<bool, MountError> {
    let filesystems = std::fs::read_to_string("/proc/filesystems")
        .map_err(io_err("read", Path::new("/proc/filesystems")))?;
    let dir = Path::new("/sys/kernel/config");
    if !crate::modules::filesystem_available(&filesystems, "configfs") || !dir.is_dir() {
        return Ok(false);
    }
    mount_fs(
        "configfs",
        dir,
        "configfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    Ok(true)
}

/// Mounts the ext4 on `device` at `target`, read-only or not (no other
/// flags: the root keeps its device nodes usable, as a normal root).
pub fn mount_ext4(device: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount_fs(&device.to_string_lossy(), target, "ext4", flags, None)
}

/// A directory the read-only root must already have.
pub fn require_dir(root: &Path, rel: &str) -> Result<PathBuf, MountError> {
    let path = root.join(rel);
    if path.is_dir() {
        Ok(path)
    } else {
        Err(MountError::MissingInImage {
            path: Path::new("/").join(rel),
        })
    }
}

/// Step 6: tmpfs on `/tmp` and `/var` of the new root; `/cocos/docker` on
/// `/var/lib/docker`; the image's `/cocos_init` copied into
/// `/cocos/cocos_init`, which then covers it (scripts stay, and become
/// writable, as in the system this replaces).
pub fn runtime_mounts(root: &Path) -> Result<(), MountError> {
    let tmp = require_dir(root, "tmp")?;
    let var = require_dir(root, "var")?;
    let cocos_init = require_dir(root, "cocos_init")?;
    let cocos = root.join("cocos");
    mount_fs(
        "tmpfs",
        &tmp,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_fs(
        "tmpfs",
        &var,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    let docker = var.join("lib/docker");
    make_dir(&docker, 0o710)?;
    bind(&cocos.join("docker"), &docker)?;
    copy_tree(&cocos_init, &cocos.join("cocos_init"))?;
    bind(&cocos.join("cocos_init"), &cocos_init)?;
    Ok(())
}

/// Copies the contents of `src` into the existing directory `dst`: files
/// (with their permission bits), directories and symbolic links, with
/// their owners. Other kinds are skipped.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), MountError> {
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(io_err("read", src))?
        .collect::<Result<_, _>>()
        .map_err(io_err("read", src))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(io_err("read", &from))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            make_dir(&to, 0o700)?;
            copy_tree(&from, &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err("set the mode of", &to))?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to).map_err(io_err("copy", &from))?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(io_err("read", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("create", &to))?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
            .map_err(io_err("set the owner of", &to))?;
    }
    Ok(())
}

/// What [`install_fstab`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FstabOutcome {
    /// The image's fstab already describes the runtime.
    Kept,
    /// A corrected copy covers the image's.
    Replaced,
}

/// Makes `/etc/fstab` of the new root describe the runtime: when
/// [`rewrite_fstab`] changes the image's file, the new text is written to
/// `runtime_copy` (on a tmpfs) and bind-mounted, read-only, over it.
pub fn install_fstab(root: &Path, runtime_copy: &Path) -> Result<FstabOutcome, MountError> {
    let fstab = root.join("etc/fstab");
    let existing = match std::fs::read_to_string(&fstab) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::MissingInImage {
                path: PathBuf::from("/etc/fstab"),
            });
        }
        Err(e) => return Err(io_err("read", &fstab)(e)),
    };
    let runtime = rewrite_fstab(&existing);
    if runtime == existing {
        return Ok(FstabOutcome::Kept);
    }
    if let Some(dir) = runtime_copy.parent() {
        make_dir(dir, 0o755)?;
    }
    std::fs::write(runtime_copy, &runtime).map_err(io_err("write", runtime_copy))?;
    std::fs::set_permissions(runtime_copy, std::fs::Permissions::from_mode(0o644))
        .map_err(io_err("set the mode of", runtime_copy))?;
    bind(runtime_copy, &fstab)?;
    mount(
        None::<&str>,
        &fstab,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| MountError::Mount {
        what: "(read-only remount)".to_owned(),
        target: fstab.clone(),
        source: e,
    })?;
    Ok(FstabOutcome::Replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn copy_tree_keeps_files_modes_and_links() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(src.join("sub/deeper/data"), b"x").unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o711)).unwrap();
        std::os::unix::fs::symlink("sub/deeper/data", src.join("link")).unwrap();
        copy_tree(&src, &dst).unwrap();
        assert_eq!(
            fs::read(dst.join("run.sh")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            fs::metadata(dst.join("run.sh")).unwrap().mode() & 0o7777,
            0o750
        );
        assert_eq!(
            fs::metadata(dst.join("sub")).unwrap().mode() & 0o7777,
            0o711
        );
        assert_eq!(fs::read(dst.join("sub/deeper/data")).unwrap(), b"x");
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("sub/deeper/data")
        );
    }

    #[test]
    fn required_directories_are_reported_by_their_path_in_the_image() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("tmp")).unwrap();
        assert!(require_dir(t.path(), "tmp").is_ok());
        let e = require_dir(t.path(), "cocos_init").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/cocos_init does not exist in the root image (the root is read-only: the image must provide it)"
        );
    }

    #[test]
    fn an_image_fstab_that_fits_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("etc")).unwrap();
        // What the runtime needs, written out by hand (fstab(5)): the root
        // from dm-verity, read-only, and the two 9P shares over virtio;
        // with a comment, other spacing and extra options, all kept.
        let text = "# The image's fstab.\n\
                    /dev/mapper/root_verity  /  ext4  ro,noatime  0 0\n\
                    proc /proc proc defaults 0 0\n\
                    certs_share /etc/certs 9p trans=virtio,version=9p2000.L,cache=mmap,nofail 0 0\n\
                    env_share\t/etc/cocos\t9p\ttrans=virtio,version=9p2000.L\t0 0\n";
        fs::write(t.path().join("etc/fstab"), text).unwrap();
        let copy = t.path().join("run/fstab");
        let outcome = install_fstab(t.path(), &copy).unwrap();
        if outcome == FstabOutcome::Replaced {
            // Run as root, the wrong answer bind-mounted the copy: undo it
            // before failing, so that no mount outlives the test.
            let _ = nix::mount::umount2(
                &t.path().join("etc/fstab"),
                nix::mount::MntFlags::MNT_DETACH,
            );
        }
        assert_eq!(outcome, FstabOutcome::Kept);
        assert!(!copy.exists());
        assert_eq!(
            fs::read_to_string(t.path().join("etc/fstab")).unwrap(),
            text
        );
    }

    #[test]
    fn a_missing_image_fstab_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let e = install_fstab(t.path(), &t.path().join("copy")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/fstab does not exist in the root image"),
            "{e}"
        );
    }
}
