//! The file-system side of a run: who owns what, and with which mode.
//!
//! When the runner is root (production), before each run:
//! - the **datasets** directory and everything in it is made root-owned,
//!   directories 0755 and files 0644 (0755 when already executable):
//!   the run user can read but not change anything;
//! - the **results** directory is created and, with everything in it,
//!   given to the run user; the directory itself is 0700;
//! - the **algorithm** (bin, python) and the requirements file are made
//!   root-owned, 0755 (bin) or 0644, so the run user can run or read them
//!   but not change them;
//! - a **scratch** directory (the run's `HOME`, and the python venv) is
//!   created under the configured scratch directory, 0700 and owned by the
//!   run user, and removed after the run.
//!
//! The working directory of the algorithm is the parent of the results
//! directory (`/cocos` in the VM): every directory above it must be
//! searchable by the run user.
//!
//! When the runner is not root, nothing is re-owned and the datasets are not
//! protected (the algorithm runs as their owner): a development mode.

use crate::error::RunError;
use crate::user::RunUser;
use nix::unistd::{Gid, Uid};
use std::fs;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};

fn prep(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.to_path_buf();
    move |source| RunError::Prepare { what, path, source }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RunError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(prep("chmod", path))
}

fn set_owner(path: &Path, uid: Uid, gid: Gid) -> Result<(), RunError> {
    lchown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(prep("chown", path))
}

/// Calls `f` on `root` and every entry below it, without following
/// symbolic links.
fn walk(
    root: &Path,
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(prep("stat", &path))?;
        f(&path, &meta)?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(prep("list", &path))? {
                stack.push(entry.map_err(prep("list", &path))?.path());
            }
        }
    }
    Ok(())
}

/// Makes `dir` (created when missing) readable but not writable by the
/// run user.
pub(crate) fn lock_down_datasets(dir: &Path, user: &RunUser) -> Result<(), RunError> {
    fs::create_dir_all(dir).map_err(prep("create", dir))?;
    if !user.switch {
        return Ok(());
    }
    walk(dir, &mut |path, meta| {
        set_owner(path, Uid::from_raw(0), Gid::from_raw(0))?;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            return Ok(());
        }
        let executable = meta.permissions().mode() & 0o111 != 0;
        let mode = if file_type.is_dir() || executable {
            0o755
        } else {
            0o644
        };
        set_mode(path, mode)
    })
}

/// Creates `dir` when missing and gives it, with its contents, to the run
/// user.
pub(crate) fn hand_over_results(dir: &Path, user: &RunUser) -> Result<(), RunError> {
    fs::create_dir_all(dir).map_err(prep("create", dir))?;
    if !user.switch {
        return Ok(());
    }
    walk(dir, &mut |path, _| set_owner(path, user.uid, user.gid))?;
    set_mode(dir, 0o700)
}

/// Makes the algorithm (or requirements) file usable by the run user:
/// root-owned with `mode` when the runner is root; otherwise only adds the
/// owner's bits of `mode` when they are missing.
pub(crate) fn make_usable(path: &Path, mode: u32, user: &RunUser) -> Result<(), RunError> {
    let meta = fs::metadata(path).map_err(prep("stat", path))?;
    if !meta.is_file() {
        return Err(RunError::Prepare {
            what: "use",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    if user.switch {
        // chown through the link target: `metadata` followed it too.
        std::os::unix::fs::chown(path, Some(0), Some(0)).map_err(prep("chown", path))?;
        set_mode(path, mode)
    } else {
        let current = meta.permissions().mode() & 0o7777;
        let wanted = current | (mode & 0o700);
        if wanted != current {
            set_mode(path, wanted)?;
        }
        Ok(())
    }
}

/// A run's scratch directory: its `HOME` and, for python, the venv.
/// Removed when dropped (or by [`Scratch::remove`]).
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates it under `base` (the system temporary directory when `None`),
    /// owned by the run user, 0700, with an empty `home/`.
    pub(crate) fn create(base: Option<&Path>, user: &RunUser) -> Result<Self, RunError> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = tempfile::Builder::new()
            .prefix("cocos-run-")
            .tempdir_in(&base)
            .map_err(prep("create scratch directory in", &base))?;
        let scratch = Self { dir };
        let home = scratch.home();
        fs::create_dir(&home).map_err(prep("create", &home))?;
        set_mode(&home, 0o700)?;
        set_mode(scratch.path(), 0o700)?;
        if user.switch {
            set_owner(scratch.path(), user.uid, user.gid)?;
            set_owner(&home, user.uid, user.gid)?;
        }
        Ok(scratch)
    }

    /// The scratch directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The run's `HOME`.
    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Removes it, logging a failure.
    pub(crate) fn remove(self) {
        let path = self.dir.path().to_path_buf();
        if let Err(err) = self.dir.close() {
            tracing::warn!(path = %path.display(), %err, "removing the run's scratch directory");
        }
    }
}
