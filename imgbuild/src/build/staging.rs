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
    /// Stages artifacts in the output directory `dir`.
    pub(super) fn new(dir: &Path) -> Self {
        Staging {
            dir: dir.to_path_buf(),
            files: Vec::new(),
        }
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

    /// Where artifact `name` ends up: the path its errors name.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Moves every staged file into place.
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
