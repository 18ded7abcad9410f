//! Loading kernel modules with `finit_module(2)`.
//!
//! The initramfs builder resolved the dependencies (`modules.dep`) and
//! wrote the load order into `/etc/cocos-init.toml`; this only loads the
//! files in that order. A module already loaded (or built in under the
//! same name) gives `EEXIST`, which is fine.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use thiserror::Error;

/// A module that could not be loaded.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// The file cannot be opened.
    #[error("{}: cannot open", path.display())]
    Open {
        /// The module file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel refused it.
    #[error("{}: the kernel refused it{}", path.display(), hint(*.errno))]
    Load {
        /// The module file.
        path: PathBuf,
        /// The error number.
        #[source]
        errno: Errno,
    },
}

/// What an `finit_module` error usually means (init_module(2)).
fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENOENT => " (unknown symbol: a dependency is missing or comes later in the list)",
        Errno::ENOEXEC => " (not a module for this kernel, or compressed)",
        Errno::EKEYREJECTED | Errno::EBADMSG => " (signature rejected)",
        _ => "",
    }
}

/// Loads `path`; `Ok(false)` when it was already loaded.
pub fn load_module(path: &Path) -> Result<bool, ModuleError> {
    let file = File::open(path).map_err(|source| ModuleError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // No module parameters: an empty string.
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(errno) => Err(ModuleError::Load {
            path: path.to_path_buf(),
            errno,
        }),
    }
}

/// Loads `modules` in order, stopping at the first failure; returns how
/// many were newly loaded.
pub fn load_modules(modules: &[PathBuf]) -> Result<usize, ModuleError> {
    let mut loaded = 0;
    for m in modules {
        if load_module(m)? {
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Whether the running kernel knows the filesystem type `name`
/// (`/proc/filesystems`).
pub fn filesystem_available(proc_filesystems: &str, name: &str) -> bool {
    proc_filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_file_is_named() {
        let e = load_module(Path::new("/nonexistent/virtio.ko")).unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/virtio.ko: cannot open");
    }

    #[test]
    fn a_file_that_is_not_a_module_is_refused() {
        // Unprivileged: EPERM; as root: ENOEXEC (not an ELF module), or
        // EPERM when module loading is disabled. Never success.
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("junk.ko");
        std::fs::write(&f, b"not an ELF file").unwrap();
        let e = load_module(&f).unwrap_err();
        assert!(matches!(e, ModuleError::Load { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}: the kernel refused it", f.display()))
        );
    }

    #[test]
    fn load_order_stops_at_the_first_failure() {
        let t = tempfile::tempdir().unwrap();
        let list = [t.path().join("a.ko"), t.path().join("b.ko")];
        let e = load_modules(&list).unwrap_err();
        assert!(e.to_string().contains("a.ko"), "{e}");
        assert_eq!(load_modules(&[]).unwrap(), 0);
    }

    #[test]
    fn filesystem_list_is_read_as_the_kernel_writes_it() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tconfigfs\n";
        assert!(filesystem_available(text, "configfs"));
        assert!(filesystem_available(text, "ext4"));
        assert!(!filesystem_available(text, "9p"));
        assert!(!filesystem_available(text, "nodev"));
    }
}
