//! The output directory's temporary names: every artifact is written as
//! `.NAME.partial` and renamed into place only once the build is complete.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::{BuildError, io_err};

/// Files written under temporary names, renamed into place by `commit` and
/// removed on drop otherwise.
pub(super) struct Staging {
    dir: PathBuf,
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staging {
    /// Stages artifacts in the output directory `dir`, created if needed.
    pub(super) fn in_dir(dir: &Path) -> Result<Self, BuildError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create"))?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            files: Vec::new(),
        })
    }

    /// Creates the temporary file for artifact `name`, `len` bytes long
    /// (sparse).
    pub(super) fn create_sized(&mut self, name: &str, len: u64) -> Result<File, BuildError> {
        let file = self.create(name)?;
        self.set_len(&file, name, len)?;
        Ok(file)
    }

    /// Creates the temporary file for artifact `name`.
    pub(super) fn create(&mut self, name: &str) -> Result<File, BuildError> {
        let temp = self.dir.join(format!(".{name}.partial"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_err(&temp, "create"))?;
        self.files.push((temp, self.dir.join(name)));
        Ok(file)
    }

    /// Sets the length of `file`, artifact `name`.
    pub(super) fn set_len(&self, file: &File, name: &str, len: u64) -> Result<(), BuildError> {
        file.set_len(len).map_err(io_err(&self.path(name), "size"))
    }

    /// Where artifact `name` ends up: the path its errors name.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Moves every staged file into place. Not fsynced (like the tools it
    /// replaces), so a machine crash right after a build may need a
    /// rebuild.
    pub(super) fn commit(mut self) -> Result<(), BuildError> {
        for (temp, dest) in std::mem::take(&mut self.files) {
            std::fs::rename(&temp, &dest).map_err(io_err(&dest, "move into place"))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for (temp, _) in &self.files {
            let _ = std::fs::remove_file(temp);
        }
    }
}
