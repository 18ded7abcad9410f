//! Kernel modules: finding them in a `lib/modules/<version>` tree, their
//! dependencies, and the order to load them in.
//!
//! Sources, in the order the tools use them:
//! * the tree itself: a module's name is its file name without `.ko` (and
//!   a compression suffix), with `-` and `_` equivalent (kbuild derives
//!   `KBUILD_MODNAME` from the file name, replacing `-` by `_`; kmod's
//!   `modname_normalize` does the same);
//! * `modules.dep` (written by `depmod`, format in depmod(5)'s
//!   `modules.dep`: `path: dep dep ...`, paths relative to the tree) when it
//!   exists: it lists every module a module needs;
//! * otherwise the module's own `.modinfo` ELF section (NUL-separated
//!   `key=value` strings, the `MODULE_INFO` macro of
//!   `include/linux/moduleparam.h`), whose `depends=` field (comma
//!   separated, written by `modpost`) names the modules it needs directly.
//!   An unpacked Debian kernel package has no `modules.dep`: depmod runs
//!   only when the package is installed.
//! * `modules.builtin` names modules compiled into the kernel: asking for
//!   one is not an error, and nothing is loaded for it.
//!
//! Soft dependencies (`softdep=pre: crypto-crc32c` of ext4) name aliases
//! that only `modules.alias` resolves at run time; they are reported, not
//! followed: list the module that provides them (`crc32c_generic`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::elf;

/// Decompressed modules larger than this are refused (the largest module
/// of Debian's 6.1 kernel is about 12 MiB).
const MAX_MODULE_SIZE: u64 = 256 << 20;

/// Suffixes of module files, with the compression the kernel build can
/// apply (`CONFIG_MODULE_COMPRESS_{GZIP,XZ,ZSTD}`).
const SUFFIXES: [(&str, Compression); 4] = [
    (".ko", Compression::None),
    (".ko.xz", Compression::Xz),
    (".ko.zst", Compression::Zstd),
    (".ko.gz", Compression::Gzip),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

/// A failure finding, reading or ordering modules.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// A file or directory could not be read.
    #[error("{}: cannot {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A module that is neither in the tree nor built in.
    #[error("module {name:?} is not in {} (nor in its modules.builtin)", dir.display())]
    UnknownModule {
        /// The name asked for.
        name: String,
        /// The module tree.
        dir: PathBuf,
    },
    /// A dependency that is neither in the tree nor built in.
    #[error("module {name:?}, needed by {needed_by}, is not in {} (nor in its modules.builtin)", dir.display())]
    MissingDependency {
        /// The dependency.
        name: String,
        /// The module that needs it.
        needed_by: String,
        /// The module tree.
        dir: PathBuf,
    },
    /// Modules that depend on each other in a circle.
    #[error("modules depend on each other in a cycle: {}", modules.join(", "))]
    Cycle {
        /// The modules that could not be ordered.
        modules: Vec<String>,
    },
    /// A module file whose `.modinfo` is missing or malformed.
    #[error("{}: {reason}", path.display())]
    Modinfo {
        /// The module file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A malformed `modules.dep` or `modules.builtin`.
    #[error("{}:{line}: {reason}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A compressed module that does not decompress.
    #[error("{}: cannot decompress: {reason}", path.display())]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
}

/// The module name as the kernel knows it: `-` replaced by `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file name (`dm-verity.ko.xz` → `dm-verity`), or
/// `None` if it is not a module file.
pub fn module_file_name(file_name: &str) -> Option<&str> {
    SUFFIXES
        .iter()
        .find_map(|(suffix, _)| file_name.strip_suffix(suffix))
        .filter(|n| !n.is_empty())
}

/// The path a module is stored at: the same relative path, with `.ko` as
/// suffix (compressed modules are stored decompressed).
fn stored_path(rel: &str) -> String {
    for (suffix, _) in SUFFIXES.iter().skip(1) {
        if let Some(stem) = rel.strip_suffix(suffix) {
            return format!("{stem}.ko");
        }
    }
    rel.to_owned()
}

fn compression(rel: &str) -> Compression {
    SUFFIXES
        .iter()
        .rev()
        .find(|(suffix, _)| rel.ends_with(suffix))
        .map_or(Compression::None, |(_, c)| *c)
}

/// Whether `name` is a plausible module name: what kbuild produces from a
/// file name (letters, digits, `_`, `-`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The fields of a `.modinfo` section this crate uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`: the module's name (kernels since 5.3 record it).
    pub name: Option<String>,
    /// `depends=`: modules it needs, in the order modpost listed them.
    pub depends: Vec<String>,
    /// `softdep=`: soft dependencies, as written (`pre: a b post: c`).
    pub softdeps: Vec<String>,
    /// `vermagic=`: the kernel version and options it was built for.
    pub vermagic: Option<String>,
}

/// Parses the contents of a `.modinfo` section: `key=value` strings, each
/// terminated by NUL, with NUL padding between them. Strings without `=`
/// are ignored (as `modinfo` does); the fields used must be UTF-8, and
/// `name=` and `depends=` must hold module names.
pub fn parse_modinfo(section: &[u8]) -> Result<ModInfo, String> {
    let mut info = ModInfo::default();
    for raw in section.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let Some(eq) = raw.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&raw[..eq], &raw[eq + 1..]);
        if !matches!(key, b"name" | b"depends" | b"softdep" | b"vermagic") {
            continue;
        }
        let key = String::from_utf8_lossy(key);
        let value = std::str::from_utf8(value)
            .map_err(|_| format!(".modinfo field {key}= is not UTF-8"))?;
        match &*key {
            "name" => {
                if !valid_name(value) {
                    return Err(format!(".modinfo name={value:?} is not a module name"));
                }
                info.name = Some(value.to_owned());
            }
            "depends" => {
                for dep in value.split(',').filter(|d| !d.is_empty()) {
                    if !valid_name(dep) {
                        return Err(format!(".modinfo depends= names {dep:?}"));
                    }
                    info.depends.push(dep.to_owned());
                }
            }
            "softdep" => info.softdeps.push(value.to_owned()),
            _ => info.vermagic = Some(value.to_owned()),
        }
    }
    Ok(info)
}

/// One line of `modules.dep`: a module and the modules it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepLine {
    /// Path of the module, relative to the tree.
    pub module: String,
    /// Paths of the modules it needs.
    pub depends: Vec<String>,
}

/// Checks a path from an index file: relative, `/`-separated, no empty,
/// `.` or `..` components, a module file name.
fn check_index_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        return Err(format!("{path:?} is not relative to the module tree"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("{path:?} is not a plain relative path"));
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    match module_file_name(file) {
        Some(name) if valid_name(name) => Ok(()),
        _ => Err(format!("{path:?} is not a module file")),
    }
}

/// Parses `modules.dep` (depmod(5)): one module per line, `path:`
/// followed by the paths it needs, separated by spaces. Empty lines are
/// skipped. Returns `(line number, error)` for a malformed line.
pub fn parse_modules_dep(text: &str) -> Result<Vec<DepLine>, (usize, String)> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((module, deps)) = line.split_once(':') else {
            return Err((line_no, "no ':' after the module path".into()));
        };
        let module = module.trim();
        check_index_path(module).map_err(|e| (line_no, e))?;
        let mut depends = Vec::new();
        for dep in deps.split_whitespace() {
            check_index_path(dep).map_err(|e| (line_no, e))?;
            depends.push(dep.to_owned());
        }
        lines.push(DepLine {
            module: module.to_owned(),
            depends,
        });
    }
    Ok(lines)
}

/// A module chosen for the initramfs.
#[derive(Debug, Clone)]
pub struct Module {
    /// Name, normalized (`dm_verity`).
    pub name: String,
    /// Path of the file in the tree, relative to it.
    pub source: String,
    /// Path relative to the tree where it is stored (`.ko`, decompressed).
    pub path: String,
    /// Names (normalized) of the modules it needs and that are loaded
    /// before it (built-in ones left out).
    pub depends: Vec<String>,
    /// Soft dependencies it declares (not followed).
    pub softdeps: Vec<String>,
    /// The module, decompressed.
    pub data: Vec<u8>,
}

/// The modules to load, in order, and the requested ones that are built in.
#[derive(Debug, Clone)]
pub struct LoadOrder {
    /// Every module needed, each after the modules it depends on.
    pub modules: Vec<Module>,
    /// Requested modules compiled into the kernel (nothing to load).
    pub builtin: Vec<String>,
}

/// A `lib/modules/<version>` directory.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    dir: PathBuf,
    version: String,
    /// Normalized name → path of its file, relative to `dir`.
    files: BTreeMap<String, String>,
    /// Normalized names of built-in modules.
    builtin: BTreeSet<String>,
    /// From `modules.dep`: module path → paths it needs.
    dep: Option<BTreeMap<String, Vec<String>>>,
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> ModuleError {
    let path = path.to_path_buf();
    move |source| ModuleError::Io {
        path,
        action,
        source,
    }
}

impl ModuleTree {
    /// Indexes the module files under `dir` (without following symbolic
    /// links to directories, such as `build` and `source`) and reads
    /// `modules.builtin` and `modules.dep` when present. The version is
    /// the directory's name.
    pub fn open(dir: &Path) -> Result<Self, ModuleError> {
        let version = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|v| !v.is_empty() && !v.contains(['/', '\0']))
            .ok_or_else(|| ModuleError::Io {
                path: dir.to_path_buf(),
                action: "use as lib/modules/<version> (its name is not a version)",
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?
            .to_owned();
        let mut all = Vec::new();
        walk(dir, "", &mut all)?;
        all.sort();
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for rel in all {
            let file = rel.rsplit('/').next().unwrap_or(&rel);
            let Some(name) = module_file_name(file) else {
                continue;
            };
            let name = normalize(name);
            match files.get(&name) {
                // depmod's default search order puts `updates` first.
                Some(old) if old.starts_with("updates/") || !rel.starts_with("updates/") => {
                    tracing::warn!(
                        "{}: {rel} and {old} are both {name}; using {old}",
                        dir.display()
                    );
                }
                _ => {
                    files.insert(name, rel);
                }
            }
        }
        let builtin_path = dir.join("modules.builtin");
        let mut builtin = BTreeSet::new();
        if let Some(text) = read_optional(&builtin_path)? {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let file = line.rsplit('/').next().unwrap_or(line);
                let name = module_file_name(file).ok_or_else(|| ModuleError::Index {
                    path: builtin_path.clone(),
                    line: i + 1,
                    reason: format!("{line:?} is not a module file"),
                })?;
                builtin.insert(normalize(name));
            }
        }
        let dep_path = dir.join("modules.dep");
        let dep = match read_optional(&dep_path)? {
            Some(text) => {
                let lines =
                    parse_modules_dep(&text).map_err(|(line, reason)| ModuleError::Index {
                        path: dep_path.clone(),
                        line,
                        reason,
                    })?;
                Some(
                    lines
                        .into_iter()
                        .map(|l| (l.module, l.depends))
                        .collect::<BTreeMap<_, _>>(),
                )
            }
            None => None,
        };
        Ok(ModuleTree {
            dir: dir.to_path_buf(),
            version,
            files,
            builtin,
            dep,
        })
    }

    /// The kernel version (the directory's name).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the tree has a `modules.dep`.
    pub fn has_modules_dep(&self) -> bool {
        self.dep.is_some()
    }

    /// Whether the module is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The file of a module, relative to the tree.
    pub fn file_of(&self, name: &str) -> Option<&str> {
        self.files.get(&normalize(name)).map(String::as_str)
    }

    /// Reads (and decompresses) the module at `rel`, and finds the modules
    /// it needs: from `modules.dep` if it lists the module, else from its
    /// `.modinfo`.
    fn load(&self, name: &str, rel: &str) -> Result<Module, ModuleError> {
        let path = self.dir.join(rel);
        let raw = std::fs::read(&path).map_err(io_err(&path, "read"))?;
        let data = decompress(compression(rel), raw).map_err(|reason| ModuleError::Decompress {
            path: path.clone(),
            reason,
        })?;
        let modinfo_err = |reason: String| ModuleError::Modinfo {
            path: path.clone(),
            reason,
        };
        let section = elf::section_data(&data, ".modinfo")
            .map_err(|e| modinfo_err(format!("not a kernel module: {e}")))?
            .ok_or_else(|| modinfo_err("no .modinfo section: not a kernel module".into()))?;
        let info = parse_modinfo(section).map_err(modinfo_err)?;
        if let Some(own) = &info.name {
            if normalize(own) != name {
                tracing::warn!("{}: the file declares name={own}", path.display());
            }
        }
        let depends = match self.dep.as_ref().and_then(|d| d.get(rel)) {
            Some(paths) => paths
                .iter()
                .filter_map(|p| module_file_name(p.rsplit('/').next().unwrap_or(p)))
                .map(normalize)
                .collect(),
            None => info.depends.iter().map(|d| normalize(d)).collect(),
        };
        Ok(Module {
            name: name.to_owned(),
            source: rel.to_owned(),
            path: stored_path(rel),
            depends,
            softdeps: info.softdeps,
            data,
        })
    }

    /// The modules `requested` need, transitively, in load order (see
    /// [`load_order`]). Names compare with `-` and `_` equivalent; built-in
    /// modules are skipped; an unknown name is an error naming the tree.
    pub fn resolve(&self, requested: &[String]) -> Result<LoadOrder, ModuleError> {
        let mut roots = Vec::new();
        let mut builtin = Vec::new();
        for name in requested {
            let n = normalize(name);
            if self.files.contains_key(&n) {
                if !roots.contains(&n) {
                    roots.push(n);
                }
            } else if self.builtin.contains(&n) {
                if !builtin.contains(&n) {
                    builtin.push(n);
                }
            } else {
                return Err(ModuleError::UnknownModule {
                    name: name.clone(),
                    dir: self.dir.clone(),
                });
            }
        }
        let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
        let mut queue: VecDeque<String> = roots.iter().cloned().collect();
        while let Some(name) = queue.pop_front() {
            if loaded.contains_key(&name) {
                continue;
            }
            let rel = self
                .files
                .get(&name)
                .ok_or_else(|| ModuleError::UnknownModule {
                    name: name.clone(),
                    dir: self.dir.clone(),
                })?;
            let mut module = self.load(&name, rel)?;
            let mut depends = Vec::new();
            for dep in std::mem::take(&mut module.depends) {
                if self.files.contains_key(&dep) {
                    if !depends.contains(&dep) {
                        queue.push_back(dep.clone());
                        depends.push(dep);
                    }
                } else if !self.builtin.contains(&dep) {
                    return Err(ModuleError::MissingDependency {
                        name: dep,
                        needed_by: name,
                        dir: self.dir.clone(),
                    });
                }
            }
            module.depends = depends;
            loaded.insert(name, module);
        }
        let graph: BTreeMap<String, Vec<String>> = loaded
            .iter()
            .map(|(n, m)| (n.clone(), m.depends.clone()))
            .collect();
        let order = load_order(&roots, &graph)?;
        let modules = order
            .into_iter()
            .filter_map(|n| loaded.remove(&n))
            .collect();
        Ok(LoadOrder { modules, builtin })
    }
}

/// Orders the modules of `graph` (name → names it needs; every name that
/// appears must be a key) so that each comes after everything it needs.
/// Among the modules ready to load, the one needed by the earliest of
/// `roots` (the order the user gave) goes first, then the smallest name:
/// the order depends on the inputs only.
pub fn load_order(
    roots: &[String],
    graph: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, ModuleError> {
    // rank: the position of the first root whose closure holds the module.
    let mut rank: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, root) in roots.iter().enumerate() {
        let mut stack = vec![root.as_str()];
        while let Some(n) = stack.pop() {
            if rank.contains_key(n) {
                continue;
            }
            rank.insert(n, i);
            if let Some(deps) = graph.get(n) {
                stack.extend(deps.iter().map(String::as_str));
            }
        }
    }
    // Modules not reachable from a root (none when called by `resolve`)
    // go last.
    for n in graph.keys() {
        rank.entry(n).or_insert(roots.len());
    }
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, deps) in graph {
        let unique: BTreeSet<&str> = deps.iter().map(String::as_str).collect();
        waiting.insert(n, unique.len());
        for d in unique {
            dependents.entry(d).or_default().push(n);
        }
    }
    let mut ready: BTreeSet<(usize, &str)> = waiting
        .iter()
        .filter(|(_, w)| **w == 0)
        .map(|(n, _)| (rank.get(n).copied().unwrap_or(usize::MAX), *n))
        .collect();
    let mut order = Vec::with_capacity(graph.len());
    while let Some(next) = ready.pop_first() {
        let n = next.1;
        order.push(n.to_owned());
        for d in dependents.get(n).map(Vec::as_slice).unwrap_or_default() {
            if let Some(w) = waiting.get_mut(d) {
                *w -= 1;
                if *w == 0 {
                    ready.insert((rank.get(d).copied().unwrap_or(usize::MAX), d));
                }
            }
        }
    }
    if order.len() < graph.len() {
        let done: BTreeSet<&str> = order.iter().map(String::as_str).collect();
        return Err(ModuleError::Cycle {
            modules: graph
                .keys()
                .filter(|n| !done.contains(n.as_str()))
                .cloned()
                .collect(),
        });
    }
    Ok(order)
}

/// Collects the regular files under `dir/prefix`, relative to `dir`,
/// without following symbolic links.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), ModuleError> {
    let here = dir.join(prefix);
    let entries = std::fs::read_dir(&here).map_err(io_err(&here, "list"))?;
    for entry in entries {
        let entry = entry.map_err(io_err(&here, "list"))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ty = entry.file_type().map_err(io_err(&entry.path(), "stat"))?;
        if ty.is_dir() {
            walk(dir, &rel, out)?;
        } else if ty.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<String>, ModuleError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModuleError::Io {
            path: path.to_path_buf(),
            action: "read",
            source: e,
        }),
    }
}

fn decompress(how: Compression, data: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let limited = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), String> {
        r.take(MAX_MODULE_SIZE + 1)
            .read_to_end(out)
            .map_err(|e| e.to_string())?;
        if out.len() as u64 > MAX_MODULE_SIZE {
            return Err(format!("larger than {MAX_MODULE_SIZE} bytes"));
        }
        Ok(())
    };
    match how {
        Compression::None => return Ok(data),
        Compression::Xz => {
            lzma_rs::xz_decompress(&mut data.as_slice(), &mut out).map_err(|e| e.to_string())?;
            if out.len() as u64 > MAX_MODULE_SIZE {
                return Err(format!("larger than {MAX_MODULE_SIZE} bytes"));
            }
        }
        Compression::Zstd => {
            let mut d =
                ruzstd::StreamingDecoder::new(data.as_slice()).map_err(|e| e.to_string())?;
            limited(&mut d, &mut out)?;
        }
        Compression::Gzip => {
            let mut d = flate2::read::MultiGzDecoder::new(data.as_slice());
            limited(&mut d, &mut out)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn roots(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dependencies_load_first_ties_by_request_then_name() {
        let g = graph(&[
            ("b", &["z"]),
            ("a", &["y", "x"]),
            ("x", &[]),
            ("y", &["x"]),
            ("z", &[]),
        ]);
        // "b" asked first: its closure first, then "a"'s.
        assert_eq!(
            load_order(&roots(&["b", "a"]), &g).unwrap(),
            ["z", "b", "x", "y", "a"]
        );
        assert_eq!(
            load_order(&roots(&["a", "b"]), &g).unwrap(),
            ["x", "y", "a", "z", "b"]
        );
    }

    #[test]
    fn a_cycle_is_named() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        match load_order(&roots(&["a", "d"]), &g) {
            Err(ModuleError::Cycle { modules }) => assert_eq!(modules, ["a", "b", "c"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modinfo_fields() {
        let section = b"softdep=pre: crypto-crc32c\0license=GPL\0\0\0depends=jbd2,mbcache,crc16\0retpoline=Y\0name=ext4\0vermagic=6.1.0-56-amd64 SMP\0noequals\0";
        let info = parse_modinfo(section).unwrap();
        assert_eq!(info.name.as_deref(), Some("ext4"));
        assert_eq!(info.depends, ["jbd2", "mbcache", "crc16"]);
        assert_eq!(info.softdeps, ["pre: crypto-crc32c"]);
        assert_eq!(info.vermagic.as_deref(), Some("6.1.0-56-amd64 SMP"));
        assert_eq!(
            parse_modinfo(b"depends=\0").unwrap().depends,
            Vec::<String>::new()
        );
        assert!(parse_modinfo(b"depends=../x\0").is_err());
        assert!(parse_modinfo(b"name=\xff\0").is_err());
    }

    #[test]
    fn modules_dep_lines() {
        let text = "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko\nkernel/lib/crc16.ko:\n\n";
        let lines = parse_modules_dep(text).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].module, "kernel/fs/ext4/ext4.ko");
        assert_eq!(
            lines[0].depends,
            ["kernel/fs/jbd2/jbd2.ko", "kernel/fs/mbcache.ko"]
        );
        assert!(lines[1].depends.is_empty());
        assert_eq!(parse_modules_dep("x.ko\n").unwrap_err().0, 1);
        assert!(parse_modules_dep("a.ko: ../b.ko\n").is_err());
        assert!(parse_modules_dep("/lib/a.ko:\n").is_err());
        assert!(parse_modules_dep("a.txt:\n").is_err());
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(module_file_name("dm-verity.ko.xz"), Some("dm-verity"));
        assert_eq!(module_file_name("modules.dep"), None);
        assert_eq!(module_file_name(".ko"), None);
        assert_eq!(normalize("crc-t10dif"), "crc_t10dif");
        assert_eq!(stored_path("kernel/a/b.ko.zst"), "kernel/a/b.ko");
        assert_eq!(stored_path("kernel/a/b.ko"), "kernel/a/b.ko");
    }
}
