//! `cocos-imgbuild initramfs`: the initramfs cocos-init boots from, as a
//! deterministic gzip-compressed newc cpio archive.
//!
//! Contents:
//! * `/init`: the init program (0755);
//! * the base directories `/dev /proc /sys /run /tmp /root /etc
//!   /lib/modules`, and `/dev/console` (char 5,1) and `/dev/null` (char
//!   1,3) so PID 1 has a console before it mounts devtmpfs (the kernel
//!   opens `/dev/console` for PID 1's standard streams, `console_on_rootfs`
//!   in `init/main.c`);
//! * the requested kernel modules and every module they depend on, at
//!   `/lib/modules/<version>/<path in the tree>`, decompressed;
//! * the shared libraries of `/init` and of every extra ELF program,
//!   transitively, where the dynamic loader looks for them;
//! * extra files (`--file SRC:DEST[:MODE]`);
//! * `/etc/cocos-init.toml`: the modules in load order and the device
//!   timeout, for cocos-init (`cocos_formats::init_config::InitConfig`).
//!
//! Reproducible: entries sorted by path, owner 0:0, every timestamp
//! SOURCE_DATE_EPOCH, inode numbers in archive order, and a gzip header
//! without name or time, compressed in parallel into one gzip member
//! ([`gzip`]); the same inputs give the same bytes.
//!
//! ```no_run
//! use cocos_imgbuild::initramfs::{Initramfs, InitramfsSpec};
//! let spec = InitramfsSpec {
//!     init: "target/release/cocos-init".into(),
//!     modules_dir: Some("/var/tmp/cocos-kernel/root/lib/modules/6.1.0-56-amd64".into()),
//!     modules: vec!["virtio_scsi".into(), "dm-verity".into()],
//!     ..InitramfsSpec::default()
//! };
//! let initramfs = Initramfs::build(&spec)?;
//! let summary = initramfs.write(std::path::Path::new("out/initrd.cpio.gz"))?;
//! println!("{} modules, sha256 {}", summary.modules.len(), summary.sha256);
//! # Ok::<(), cocos_imgbuild::initramfs::InitramfsError>(())
//! ```

pub mod cpio;
pub mod elf;
pub mod gzip;
pub mod libs;
pub mod modules;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cocos_formats::init_config::{
    CONFIG_PATH, DEFAULT_DEVICE_TIMEOUT_MS, InitConfig, InitConfigError,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use cpio::{Archive, CpioError, Entry, EntryKind, Member};
pub use gzip::gzip;
use libs::{LibraryError, LibraryResolver, Program};
use modules::{ModuleError, ModuleTree};

/// Directories every initramfs has, with their permissions (those of
/// Debian's base-files: `/tmp` sticky and world-writable, `/root` private,
/// `/proc` and `/sys` read-only mount points).
const BASE_DIRS: [(&str, u32); 9] = [
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("etc", 0o755),
    ("lib", 0o755),
    ("lib/modules", 0o755),
];

/// Device nodes: path, (major, minor) from the kernel's
/// `Documentation/admin-guide/devices.txt`, permissions as udev gives them.
const DEVICES: [(&str, (u32, u32), u32); 2] = [
    // "5 char ... 1 = /dev/console System console"
    ("dev/console", (5, 1), 0o600),
    // "1 char Memory devices ... 3 = /dev/null Null device"
    ("dev/null", (1, 3), 0o666),
];

/// An extra file: `SRC:DEST[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// The file to copy (symbolic links followed).
    pub source: PathBuf,
    /// Absolute path in the initramfs.
    pub dest: String,
    /// Permissions [default: 0755 if the source has an execute bit, else
    /// 0644].
    pub mode: Option<u32>,
}

impl FromStr for ExtraFile {
    type Err = InitramfsError;

    /// Parses `SRC:DEST[:MODE]`: DEST is absolute, so the first `:/`
    /// separates it from SRC; MODE is octal (`755`, `0755`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| InitramfsError::BadFileSpec {
            spec: s.into(),
            reason: why.into(),
        };
        let (source, rest) = s
            .split_once(":/")
            .ok_or_else(|| bad("expected SRC:DEST[:MODE] with an absolute DEST"))?;
        if source.is_empty() {
            return Err(bad("empty SRC"));
        }
        let rest = format!("/{rest}");
        let (dest, mode) = match rest.rsplit_once(':') {
            Some((dest, mode)) => {
                let mode = u32::from_str_radix(mode, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777 && !mode.is_empty())
                    .ok_or_else(|| bad("MODE is not an octal mode up to 7777"))?;
                (dest.to_owned(), Some(mode))
            }
            None => (rest, None),
        };
        Ok(ExtraFile {
            source: source.into(),
            dest,
            mode,
        })
    }
}

/// What to put in the initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// The init program (stored as `/init`).
    pub init: PathBuf,
    /// A `lib/modules/<version>` directory.
    pub modules_dir: Option<PathBuf>,
    /// Modules to load (their dependencies are added).
    pub modules: Vec<String>,
    /// Extra files.
    pub files: Vec<ExtraFile>,
    /// Extra directories to find shared libraries in.
    pub lib_dirs: Vec<PathBuf>,
    /// Written to the configuration file for cocos-init.
    pub device_timeout_ms: u64,
    /// Timestamp of every entry (SOURCE_DATE_EPOCH).
    pub source_date_epoch: i64,
}

impl Default for InitramfsSpec {
    fn default() -> Self {
        InitramfsSpec {
            init: PathBuf::new(),
            modules_dir: None,
            modules: Vec::new(),
            files: Vec::new(),
            lib_dirs: Vec::new(),
            device_timeout_ms: DEFAULT_DEVICE_TIMEOUT_MS,
            source_date_epoch: crate::fat::FAT_EPOCH_UNIX,
        }
    }
}

/// A failure building the initramfs.
#[derive(Debug, Error)]
pub enum InitramfsError {
    /// An input or output file problem.
    #[error("{}: cannot {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A malformed `SRC:DEST[:MODE]`.
    #[error("{spec:?}: {reason}")]
    BadFileSpec {
        /// The argument.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// Modules asked for without a module tree.
    #[error("modules given ({0}) but no modules directory (--modules-dir)")]
    NoModulesDir(String),
    /// SOURCE_DATE_EPOCH outside what the cpio format holds.
    #[error("SOURCE_DATE_EPOCH {0} does not fit the cpio format (0 to 4294967295)")]
    Epoch(i64),
    /// A kernel module problem.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// A shared library problem.
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// An ELF program that cannot be parsed.
    #[error("{}: {source}", path.display())]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: elf::ElfError,
    },
    /// `/etc/cocos-init.toml` cannot be written.
    #[error(transparent)]
    Config(#[from] InitConfigError),
    /// An entry the archive cannot hold (conflicting paths, bad names).
    #[error("{what}: {source}")]
    Archive {
        /// Which input.
        what: String,
        /// The archive's complaint.
        source: CpioError,
    },
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> InitramfsError {
    let path = path.to_path_buf();
    move |source| InitramfsError::Io {
        path,
        action,
        source,
    }
}

/// A module in the summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModuleSummary {
    /// Name (normalized: `dm_verity`).
    pub name: String,
    /// Path in the initramfs.
    pub path: String,
    /// Modules it needs (loaded before it).
    pub depends: Vec<String>,
}

/// A shared library in the summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LibrarySummary {
    /// The `DT_NEEDED` name, or the interpreter's path.
    pub name: String,
    /// Path in the initramfs.
    pub path: String,
    /// The file it was copied from.
    pub source: PathBuf,
    /// The program or library that needs it first.
    pub needed_by: String,
}

/// An entry in the summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntrySummary {
    /// Absolute path.
    pub path: String,
    /// `directory`, `file`, `char-device` or `symlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Permissions, octal.
    pub mode: String,
    /// Size of a file's data.
    pub size: u64,
}

/// What `initramfs --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct InitramfsSummary {
    /// Every entry, in archive order.
    pub entries: Vec<EntrySummary>,
    /// Kernel version of the modules.
    pub kernel_version: Option<String>,
    /// Modules in load order.
    pub modules: Vec<ModuleSummary>,
    /// Requested modules that are built into the kernel.
    pub builtin_modules: Vec<String>,
    /// Shared libraries.
    pub libraries: Vec<LibrarySummary>,
    /// Size of the uncompressed cpio archive.
    pub cpio_size: u64,
    /// Size of the compressed file.
    pub size: u64,
    /// SHA-256 of the compressed file, hex.
    pub sha256: String,
}

/// A planned initramfs: every entry read and placed.
#[derive(Debug, Clone)]
pub struct Initramfs {
    archive: Archive,
    mtime: u32,
    kernel_version: Option<String>,
    modules: Vec<ModuleSummary>,
    builtin_modules: Vec<String>,
    libraries: Vec<LibrarySummary>,
}

/// Strips the leading `/` of an absolute path in the initramfs.
fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Permissions of a copied file: 0755 if it has any execute bit.
fn default_mode(path: &Path) -> Result<u32, InitramfsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(io_err(path, "stat"))?;
    Ok(if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    })
}

/// Reads a regular file (following symbolic links).
fn read_file(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    let meta = std::fs::metadata(path).map_err(io_err(path, "read"))?;
    if !meta.is_file() {
        return Err(InitramfsError::Io {
            path: path.to_path_buf(),
            action: "copy (not a regular file)",
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    std::fs::read(path).map_err(io_err(path, "read"))
}

impl Initramfs {
    /// Reads every input and places every entry; nothing is written.
    pub fn build(spec: &InitramfsSpec) -> Result<Self, InitramfsError> {
        let mtime = u32::try_from(spec.source_date_epoch)
            .map_err(|_| InitramfsError::Epoch(spec.source_date_epoch))?;
        let mut archive = Archive::new();
        for (dir, permissions) in BASE_DIRS {
            put(
                &mut archive,
                dir,
                Entry {
                    kind: EntryKind::Directory,
                    permissions,
                },
                &|| format!("/{dir}"),
            )?;
        }
        for (path, (major, minor), permissions) in DEVICES {
            put(
                &mut archive,
                path,
                Entry {
                    kind: EntryKind::CharDevice(major, minor),
                    permissions,
                },
                &|| format!("/{path}"),
            )?;
        }

        // Programs: /init, then the extra files; ELF ones get libraries.
        let mut programs = Vec::new();
        let mut add_program = |archive: &mut Archive,
                               source: &Path,
                               dest: &str,
                               permissions: u32|
         -> Result<(), InitramfsError> {
            let data = read_file(source)?;
            if elf::is_elf(&data) {
                let info = elf::dynamic_info(&data).map_err(|e| InitramfsError::Elf {
                    path: source.to_path_buf(),
                    source: e,
                })?;
                if info.is_dynamic() {
                    programs.push(Program {
                        dest: dest.to_owned(),
                        source: source.to_path_buf(),
                        info,
                    });
                }
            }
            put(
                archive,
                dest,
                Entry {
                    kind: EntryKind::File(data),
                    permissions,
                },
                &|| format!("{} (as {dest})", source.display()),
            )
        };
        add_program(&mut archive, &spec.init, "/init", 0o755)?;
        for file in &spec.files {
            let mode = match file.mode {
                Some(m) => m,
                None => default_mode(&file.source)?,
            };
            let dest = libs_dest(&file.dest).ok_or_else(|| InitramfsError::BadFileSpec {
                spec: format!("{}:{}", file.source.display(), file.dest),
                reason: "DEST must be an absolute path without . or .. components".into(),
            })?;
            add_program(&mut archive, &file.source, &dest, mode)?;
        }

        // Kernel modules.
        let mut kernel_version = None;
        let mut modules = Vec::new();
        let mut builtin_modules = Vec::new();
        let mut module_paths = Vec::new();
        match &spec.modules_dir {
            Some(dir) => {
                let tree = ModuleTree::open(dir)?;
                let order = tree.resolve(&spec.modules)?;
                let base = format!("/lib/modules/{}", tree.version());
                for m in order.modules {
                    let path = format!("{base}/{}", m.path);
                    put(
                        &mut archive,
                        &path,
                        Entry {
                            kind: EntryKind::File(m.data),
                            permissions: 0o644,
                        },
                        &|| format!("module {}", m.name),
                    )?;
                    module_paths.push(path.clone());
                    modules.push(ModuleSummary {
                        name: m.name,
                        path,
                        depends: m.depends,
                    });
                }
                builtin_modules = order.builtin;
                kernel_version = Some(tree.version().to_owned());
            }
            None if !spec.modules.is_empty() => {
                return Err(InitramfsError::NoModulesDir(spec.modules.join(" ")));
            }
            None => {}
        }

        // Shared libraries of every dynamic program.
        let resolver = LibraryResolver {
            root: PathBuf::new(),
            extra_dirs: spec.lib_dirs.clone(),
        };
        let mut libraries: Vec<LibrarySummary> = Vec::new();
        for program in &programs {
            for lib in resolver.resolve(program)? {
                let permissions = if lib.executable { 0o755 } else { 0o644 };
                put(
                    &mut archive,
                    &lib.dest,
                    Entry {
                        kind: EntryKind::File(lib.data),
                        permissions,
                    },
                    &|| {
                        format!(
                            "{} (library {} of {})",
                            lib.found.display(),
                            lib.name,
                            lib.needed_by
                        )
                    },
                )?;
                if !libraries.iter().any(|l| l.path == lib.dest) {
                    libraries.push(LibrarySummary {
                        name: lib.name,
                        path: lib.dest,
                        source: std::fs::canonicalize(&lib.found).unwrap_or(lib.found),
                        needed_by: lib.needed_by,
                    });
                }
            }
        }

        let config = InitConfig {
            modules: module_paths.into_iter().map(PathBuf::from).collect(),
            device_timeout_ms: spec.device_timeout_ms,
        };
        put(
            &mut archive,
            CONFIG_PATH,
            Entry {
                kind: EntryKind::File(config.to_toml()?.into_bytes()),
                permissions: 0o644,
            },
            &|| CONFIG_PATH.to_owned(),
        )?;
        Ok(Initramfs {
            archive,
            mtime,
            kernel_version,
            modules,
            builtin_modules,
            libraries,
        })
    }

    /// The archive's members in order (without the trailer).
    pub fn members(&self) -> Result<Vec<Member>, InitramfsError> {
        self.archive
            .members(self.mtime)
            .map_err(|source| InitramfsError::Archive {
                what: "the archive".into(),
                source,
            })
    }

    /// The uncompressed newc archive.
    pub fn cpio(&self) -> Result<Vec<u8>, InitramfsError> {
        self.archive
            .to_bytes(self.mtime)
            .map_err(|source| InitramfsError::Archive {
                what: "the archive".into(),
                source,
            })
    }

    /// The compressed archive and its summary.
    pub fn compressed(&self) -> Result<(Vec<u8>, InitramfsSummary), InitramfsError> {
        // One list of members (one copy of the file data) for both the
        // summary and the archive bytes.
        let members = self.members()?;
        let cpio = cpio::encode_archive(&members).map_err(|source| InitramfsError::Archive {
            what: "the archive".into(),
            source,
        })?;
        let entries = members.iter().map(entry_summary).collect();
        drop(members);
        let gz = gzip(&cpio).map_err(io_err(Path::new("<memory>"), "compress"))?;
        let summary = InitramfsSummary {
            entries,
            kernel_version: self.kernel_version.clone(),
            modules: self.modules.clone(),
            builtin_modules: self.builtin_modules.clone(),
            libraries: self.libraries.clone(),
            cpio_size: cpio.len() as u64,
            size: gz.len() as u64,
            sha256: hex::encode(Sha256::digest(&gz)),
        };
        Ok((gz, summary))
    }

    /// Writes the compressed archive to `out`: to a temporary file in the
    /// same directory, renamed into place when complete, so a failure
    /// leaves no partial file.
    pub fn write(&self, out: &Path) -> Result<InitramfsSummary, InitramfsError> {
        let (gz, summary) = self.compressed()?;
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".initramfs")
            .suffix(".partial")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(io_err(dir, "create a temporary file in"))?;
        temp.write_all(&gz).map_err(io_err(out, "write"))?;
        temp.persist(out)
            .map_err(|e| io_err(out, "move into place")(e.error))?;
        Ok(summary)
    }
}

/// Adds an entry at an absolute path; `what` names the input in errors.
fn put(
    archive: &mut Archive,
    path: &str,
    entry: Entry,
    what: &dyn Fn() -> String,
) -> Result<(), InitramfsError> {
    archive
        .insert(rel(path), entry)
        .map_err(|source| InitramfsError::Archive {
            what: what(),
            source,
        })
}

/// Checks and normalizes a destination path: absolute, no empty, `.` or
/// `..` components.
fn libs_dest(dest: &str) -> Option<String> {
    let rest = dest.strip_prefix('/')?;
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    Some(dest.to_owned())
}

fn entry_summary(m: &Member) -> EntrySummary {
    use cpio::mode;
    EntrySummary {
        path: format!("/{}", m.name),
        kind: match m.file_type() {
            mode::S_IFDIR => "directory",
            mode::S_IFCHR => "char-device",
            mode::S_IFLNK => "symlink",
            _ => "file",
        },
        mode: format!("{:04o}", m.mode & mode::PERMISSIONS),
        size: m.data.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_specs() {
        let f: ExtraFile = "/bin/busybox:/bin/sh".parse().unwrap();
        assert_eq!(f.source, PathBuf::from("/bin/busybox"));
        assert_eq!(f.dest, "/bin/sh");
        assert_eq!(f.mode, None);
        let f: ExtraFile = "rel/x:/etc/x.conf:0600".parse().unwrap();
        assert_eq!(
            (f.source, f.dest.as_str(), f.mode),
            (PathBuf::from("rel/x"), "/etc/x.conf", Some(0o600))
        );
        for bad in ["a:b", ":/x", "a:/x:9", "a:/x:", "a:/x:17777", "noseparator"] {
            assert!(bad.parse::<ExtraFile>().is_err(), "{bad}");
        }
    }
}
