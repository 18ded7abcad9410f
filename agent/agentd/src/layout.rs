//! The work directory (default `/cocos`, the per-boot encrypted partition):
//!
//! ```text
//! algo               the algorithm, once its hash matched (0755)
//! requirements.txt   requirements, when the manifest declares their hash
//! datasets/<name>    each dataset: the file, or with decompress a
//!                    directory holding the extracted zip
//! results/           what the algorithm writes
//! results.zip        the deterministic zip of results/, served by Result
//! .staging/          uploads and extractions in progress, the results
//!                    zip being written; renamed into place when accepted
//! .trash/            a stopped or finished computation's files, moved
//!                    here in one rename and deleted in the background
//! ```
//!
//! Paths keep the Go agent's names (`algo`, `datasets/`, `results/` under
//! the runner's working directory), so algorithms written for it find
//! their inputs. The directory may hold other things (`/cocos` has the
//! OCI cache and docker's store): only the names above are touched.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The work directory's layout; see the module documentation.
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

const MOVABLE: [&str; 5] = [
    "algo",
    "requirements.txt",
    "datasets",
    "results",
    "results.zip",
];

impl WorkDir {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The algorithm file.
    pub fn algorithm(&self) -> PathBuf {
        self.root.join("algo")
    }

    /// requirements.txt.
    pub fn requirements(&self) -> PathBuf {
        self.root.join("requirements.txt")
    }

    /// The datasets directory.
    pub fn datasets(&self) -> PathBuf {
        self.root.join("datasets")
    }

    /// One dataset (a plain name, checked by manifest validation).
    pub fn dataset(&self, filename: &str) -> PathBuf {
        self.datasets().join(filename)
    }

    /// The results directory.
    pub fn results(&self) -> PathBuf {
        self.root.join("results")
    }

    /// The zipped results.
    pub fn result_zip(&self) -> PathBuf {
        self.root.join("results.zip")
    }

    /// Uploads in progress.
    pub fn staging(&self) -> PathBuf {
        self.root.join(".staging")
    }

    /// Files on their way out.
    pub fn trash(&self) -> PathBuf {
        self.root.join(".trash")
    }

    /// Creates the root, `.staging/`, `.trash/` and an empty `datasets/`.
    /// `.staging/` and `.trash/` are 0700: the algorithm runs with `/cocos`
    /// as its working directory and must not read uploads in progress or
    /// a previous computation's files.
    pub fn prepare(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(&self.root)?;
        for (d, private) in [
            (self.staging(), true),
            (self.trash(), true),
            (self.datasets(), false),
        ] {
            match fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            if private {
                fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
            }
        }
        Ok(())
    }

    /// Moves every file of a computation (inputs, results, and with
    /// `staging` the uploads in progress) into a fresh directory under
    /// `.trash/`, one rename each, and returns it for
    /// [`empty_trash`]; then re-creates the empty directories.
    pub fn discard(&self, staging: bool) -> io::Result<PathBuf> {
        fs::create_dir_all(self.trash())?;
        let bin = tempfile::Builder::new()
            .prefix("discarded-")
            .tempdir_in(self.trash())?
            .keep();
        let names = MOVABLE.iter().copied().chain(staging.then_some(".staging"));
        for name in names {
            match fs::rename(self.root.join(name), bin.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.prepare()?;
        Ok(bin)
    }

    /// Moves the run's inputs and its results directory (not
    /// `results.zip`) to the trash, as after a run.
    pub fn discard_inputs(&self) -> io::Result<PathBuf> {
        let bin = tempfile::Builder::new()
            .prefix("inputs-")
            .tempdir_in(self.trash())?
            .keep();
        for name in ["algo", "requirements.txt", "datasets", "results"] {
            match fs::rename(self.root.join(name), bin.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(bin)
    }

    /// An empty `results/` (anything there before is discarded first).
    pub fn fresh_results(&self) -> io::Result<PathBuf> {
        let r = self.results();
        match fs::remove_dir_all(&r) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir(&r)?;
        Ok(r)
    }
}

/// Deletes a directory returned by [`WorkDir::discard`] in a blocking
/// task; failures are logged.
pub fn empty_trash(bin: PathBuf) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = fs::remove_dir_all(&bin) {
            tracing::warn!(path = %bin.display(), error = %e, "could not delete discarded files");
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn discard_moves_only_our_names_and_leaves_a_fresh_layout() {
        let t = tempfile::tempdir().unwrap();
        let w = WorkDir::new(t.path().join("cocos"));
        w.prepare().unwrap();
        fs::write(w.algorithm(), b"a").unwrap();
        fs::write(w.dataset("d.csv"), b"d").unwrap();
        fs::write(w.staging().join("partial"), b"p").unwrap();
        fs::create_dir(w.root().join("docker")).unwrap();
        let bin = w.discard(true).unwrap();
        assert!(bin.join("algo").exists());
        assert!(bin.join("datasets/d.csv").exists());
        assert!(bin.join(".staging/partial").exists());
        assert!(!w.algorithm().exists());
        assert!(w.datasets().is_dir());
        assert_eq!(fs::read_dir(w.datasets()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(w.staging()).unwrap().count(), 0);
        assert!(w.root().join("docker").is_dir());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(w.staging()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
