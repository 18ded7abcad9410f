//! The shared libraries a dynamically linked program needs, found the way
//! the dynamic loader finds them and placed where it will look.
//!
//! Search order of glibc's `ld.so` (ld.so(8), "the dynamic linker searches
//! for it in the following sequence"): `DT_RPATH` of the object needing
//! the library and of the objects that loaded it (only when the object has
//! no `DT_RUNPATH`), then `LD_LIBRARY_PATH` (here: the `--lib-dir`
//! directories), then the object's `DT_RUNPATH`, then the system
//! directories. Debian's loader searches `/lib/<multiarch>` and
//! `/usr/lib/<multiarch>` before `/lib` and `/usr/lib` (`ld.so --help`,
//! "Shared library search path"); `/lib64` and `/usr/lib64` are the other
//! distributions' system directories. A name already loaded (by its
//! `DT_NEEDED` name or `DT_SONAME`) is not searched again: that is how
//! `libc.so.6`'s need for `ld-linux-x86-64.so.2` is met by the interpreter.
//! Candidates of another ELF class or machine are skipped, as the loader
//! does.
//!
//! Each library is stored, with the contents of the file the search found
//! (symbolic links followed), at the path the loader in the initramfs will
//! try: the same directory (a standard or RPATH/RUNPATH one, `$ORIGIN`
//! expanded from where the program is stored), or `/lib` for a library
//! found in a `--lib-dir` (a directory both glibc and musl search by
//! default).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::elf::{self, DynamicInfo, ElfError};

/// The system directories searched after RPATH/RUNPATH, in order (`<tuple>`
/// stands for the machine's multiarch tuple).
const SYSTEM_DIRS: [&str; 6] = [
    "/lib/<tuple>",
    "/usr/lib/<tuple>",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Where a library found in a `--lib-dir` is stored.
const EXTRA_DEST_DIR: &str = "/lib";

/// A library that could not be found or read.
#[derive(Debug, Error)]
pub enum LibraryError {
    /// No directory holds the library.
    #[error("shared library {name:?}, needed by {needed_by}, not found in {}", searched.join(", "))]
    NotFound {
        /// The `DT_NEEDED` name.
        name: String,
        /// The program or library that needs it.
        needed_by: String,
        /// The directories searched.
        searched: Vec<String>,
    },
    /// The interpreter named by `PT_INTERP` is missing.
    #[error("program interpreter {path}, needed by {needed_by}, cannot be read")]
    Interpreter {
        /// Its path.
        path: String,
        /// The program.
        needed_by: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A library file that cannot be read.
    #[error("{}: cannot read", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A library file that is not valid ELF.
    #[error("{}: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ElfError,
    },
    /// A `DT_NEEDED` entry this tool cannot place (a relative path).
    #[error(
        "{needed_by} needs {name:?}, a relative path the loader resolves against the working directory"
    )]
    RelativePath {
        /// The entry.
        name: String,
        /// Who needs it.
        needed_by: String,
    },
}

/// A dynamically linked program to find the libraries of.
#[derive(Debug, Clone)]
pub struct Program {
    /// Where it is stored in the initramfs (absolute).
    pub dest: String,
    /// Where it was read from (for `$ORIGIN` and messages).
    pub source: PathBuf,
    /// Its dynamic-linking facts.
    pub info: DynamicInfo,
}

/// A library to store.
#[derive(Debug, Clone)]
pub struct Library {
    /// The `DT_NEEDED` name, or the interpreter's path.
    pub name: String,
    /// Absolute path in the initramfs.
    pub dest: String,
    /// The file it was found as (before following symbolic links).
    pub found: PathBuf,
    /// Who needs it first (a path in the initramfs).
    pub needed_by: String,
    /// Whether the file has an execute bit (then stored 0755, else 0644).
    pub executable: bool,
    /// Contents.
    pub data: Vec<u8>,
}

/// Finds libraries for programs.
#[derive(Debug, Clone, Default)]
pub struct LibraryResolver {
    /// Directory prepended to every absolute path read (a sysroot; empty:
    /// the build machine's root).
    pub root: PathBuf,
    /// Extra directories (`--lib-dir`), searched after `DT_RPATH`.
    pub extra_dirs: Vec<PathBuf>,
}

/// An object loaded while resolving one program.
struct Loaded {
    dest: String,
    host_dir: PathBuf,
    info: DynamicInfo,
    /// Index of the object that loaded it (its RPATH applies too).
    loader: Option<usize>,
}

fn parent_dir(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.into(),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Expands `$ORIGIN`/`${ORIGIN}` in an RPATH/RUNPATH entry; `None` for
/// entries with other dynamic string tokens (`$LIB`, `$PLATFORM`), which
/// depend on the machine the program runs on.
fn expand_origin(entry: &str, origin: &str) -> Option<String> {
    let expanded = entry
        .replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin);
    (!expanded.contains('$')).then_some(expanded)
}

/// Normalizes an absolute path lexically (`a/../b` → `b`, `./` dropped).
fn normalize_abs(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

impl LibraryResolver {
    fn host(&self, abs: &str) -> PathBuf {
        if self.root.as_os_str().is_empty() {
            PathBuf::from(abs)
        } else {
            self.root.join(abs.trim_start_matches('/'))
        }
    }

    /// Every library `program` needs, transitively, with its interpreter
    /// first. Static programs need none.
    pub fn resolve(&self, program: &Program) -> Result<Vec<Library>, LibraryError> {
        let mut libraries: Vec<Library> = Vec::new();
        // Names the loader considers loaded: DT_NEEDED names and sonames.
        let mut satisfied: BTreeSet<String> = BTreeSet::new();
        if let Some(interp) = &program.info.interpreter {
            let path = self.host(interp);
            let data = std::fs::read(&path).map_err(|source| LibraryError::Interpreter {
                path: interp.clone(),
                needed_by: program.dest.clone(),
                source,
            })?;
            if let Ok(info) = elf::dynamic_info(&data) {
                satisfied.extend(info.soname);
            }
            if let Some(base) = interp.rsplit('/').next() {
                satisfied.insert(base.to_owned());
            }
            libraries.push(Library {
                name: interp.clone(),
                dest: normalize_abs(interp).unwrap_or_else(|| interp.clone()),
                executable: is_executable(&path),
                found: path,
                needed_by: program.dest.clone(),
                data,
            });
        }
        let mut objects = vec![Loaded {
            dest: program.dest.clone(),
            host_dir: program
                .source
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            info: program.info.clone(),
            loader: None,
        }];
        let mut queue = VecDeque::from([0usize]);
        while let Some(index) = queue.pop_front() {
            let needed = objects[index].info.needed.clone();
            for name in needed {
                if satisfied.contains(&name) {
                    continue;
                }
                let (dest, found) = self.search(&objects, index, &name)?;
                let data = std::fs::read(&found).map_err(|source| LibraryError::Io {
                    path: found.clone(),
                    source,
                })?;
                let info = elf::dynamic_info(&data).map_err(|source| LibraryError::Elf {
                    path: found.clone(),
                    source,
                })?;
                satisfied.insert(name.clone());
                satisfied.extend(info.soname.clone());
                let host_dir = found.parent().map(Path::to_path_buf).unwrap_or_default();
                objects.push(Loaded {
                    dest: dest.clone(),
                    host_dir,
                    info,
                    loader: Some(index),
                });
                queue.push_back(objects.len() - 1);
                libraries.push(Library {
                    name,
                    dest,
                    executable: is_executable(&found),
                    found,
                    needed_by: objects[index].dest.clone(),
                    data,
                });
            }
        }
        Ok(libraries)
    }

    /// Finds `name` for `objects[index]`: (path in the initramfs, file).
    fn search(
        &self,
        objects: &[Loaded],
        index: usize,
        name: &str,
    ) -> Result<(String, PathBuf), LibraryError> {
        let object = &objects[index];
        let needed_by = object.dest.clone();
        let want = (object.info.class64, object.info.machine);
        if name.contains('/') {
            let dest = normalize_abs(name).ok_or_else(|| LibraryError::RelativePath {
                name: name.into(),
                needed_by: needed_by.clone(),
            })?;
            let host = self.host(&dest);
            if matches_machine(&host, want) {
                return Ok((dest, host));
            }
            return Err(LibraryError::NotFound {
                name: name.into(),
                needed_by,
                searched: vec![dest],
            });
        }
        // (directory in the initramfs, directory on this machine).
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        let runpath_dirs = |o: &Loaded, entries: &[String], dirs: &mut Vec<(String, PathBuf)>| {
            let dest_origin = parent_dir(&o.dest);
            let host_origin = o.host_dir.to_string_lossy().into_owned();
            for entry in entries {
                let (Some(dest), Some(host)) = (
                    expand_origin(entry, &dest_origin).and_then(|d| normalize_abs(&d)),
                    expand_origin(entry, &host_origin),
                ) else {
                    tracing::warn!("{}: search path entry {entry:?} skipped", o.dest);
                    continue;
                };
                let host = if entry.contains("ORIGIN") {
                    PathBuf::from(host)
                } else {
                    self.host(&host)
                };
                dirs.push((dest, host));
            }
        };
        if object.info.runpath.is_empty() {
            let mut at = Some(index);
            while let Some(i) = at {
                runpath_dirs(&objects[i], &objects[i].info.rpath, &mut dirs);
                at = objects[i].loader;
            }
        }
        for extra in &self.extra_dirs {
            dirs.push((EXTRA_DEST_DIR.into(), extra.clone()));
        }
        runpath_dirs(object, &object.info.runpath, &mut dirs);
        let tuple = elf::multiarch_tuple(object.info.machine, object.info.class64);
        for dir in SYSTEM_DIRS {
            let dir = match (dir.contains("<tuple>"), tuple) {
                (false, _) => dir.to_owned(),
                (true, Some(t)) => dir.replace("<tuple>", t),
                (true, None) => continue,
            };
            let host = self.host(&dir);
            dirs.push((dir, host));
        }
        for (dest_dir, host_dir) in &dirs {
            let candidate = host_dir.join(name);
            if matches_machine(&candidate, want) {
                return Ok((join(dest_dir, name), candidate));
            }
        }
        Err(LibraryError::NotFound {
            name: name.into(),
            needed_by,
            searched: dirs.iter().map(|(_, h)| h.display().to_string()).collect(),
        })
    }
}

/// Whether `path` is a readable ELF file of this class and machine.
fn matches_machine(path: &Path, (class64, machine): (bool, u16)) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    // The ELF header alone decides; it is within the first 64 bytes.
    let mut head = [0u8; 64];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| {
        use std::io::Read;
        f.read(&mut head)
    }) else {
        return false;
    };
    let head = &head[..n];
    // e_ident[EI_CLASS] at 4 (1 = 32-bit, 2 = 64-bit), e_ident[EI_DATA] at
    // 5, e_machine at 18 (System V ABI, "ELF Header").
    if !elf::is_elf(head) || head.len() < 20 {
        return false;
    }
    let file_machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return false,
    };
    (head[4] == 2) == class64 && file_machine == machine
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_expanded_and_other_tokens_refused() {
        assert_eq!(
            expand_origin("$ORIGIN/../lib", "/usr/bin").as_deref(),
            Some("/usr/bin/../lib")
        );
        assert_eq!(expand_origin("${ORIGIN}/x", "/a").as_deref(), Some("/a/x"));
        assert_eq!(expand_origin("/opt/$LIB", "/a"), None);
        assert_eq!(
            normalize_abs("/usr/bin/../lib/./x").as_deref(),
            Some("/usr/lib/x")
        );
        assert_eq!(normalize_abs("rel"), None);
        assert_eq!(parent_dir("/init"), "/");
        assert_eq!(parent_dir("/bin/sh"), "/bin");
    }
}
