//! Planning: the [`EspSpec`] checked against FAT's rules and the size
//! (names, duplicates ignoring case, file/directory conflicts, the label,
//! free clusters) before anything is written, and put in write order.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::geometry::{Geometry, fat32_geometry};
use super::raw::{DIR_ENTRY_SIZE, LFN_CHARS_PER_ENTRY};
use super::{EspSource, EspSpec, FatError, MAX_FILE_SIZE};

/// A validated file.
#[derive(Debug)]
pub(super) struct PlannedFile<'s> {
    /// Components, directories spelled as they will be stored.
    pub(super) components: Vec<String>,
    /// Size in bytes.
    pub(super) size: u64,
    /// Where the content comes from.
    pub(super) source: &'s EspSource,
    /// The path as given (for errors).
    pub(super) given: &'s str,
}

impl PlannedFile<'_> {
    /// The path as stored.
    pub(super) fn path(&self) -> String {
        self.components.join("/")
    }
}

/// What [`plan`] found: the layout and everything to write, in order.
#[derive(Debug)]
pub(super) struct Plan<'s> {
    /// The FAT32 layout of the size asked for.
    pub(super) geometry: Geometry,
    /// `BS_VolLab` and the label entry's name; `None` for no label.
    pub(super) label: Option<[u8; 11]>,
    /// Directories to create, parents first.
    pub(super) dirs: Vec<Vec<String>>,
    /// Files, in write order (byte order of their components).
    pub(super) files: Vec<PlannedFile<'s>>,
}

/// Checks one path component against the long-name rules (FAT spec,
/// 'FAT Long Directory Entries')
/// as `fatfs` enforces them.
fn check_component(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty path component (leading, trailing or doubled '/')".into());
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' components are not allowed"));
    }
    // fatfs limits the UTF-8 length; FAT itself allows 255 UTF-16 units.
    if name.len() > 255 {
        return Err(format!("component {name:?} is longer than 255 bytes"));
    }
    if name.ends_with('.') || name.ends_with(' ') || name.starts_with(' ') {
        return Err(format!(
            "component {name:?} starts with a space or ends with a space or '.', which FAT drops"
        ));
    }
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric()
            || ('\u{80}'..='\u{FFFF}').contains(&c)
            || "$%'-_@~`!(){}. +,;=[]^#&".contains(c);
        if !ok {
            return Err(format!(
                "component {name:?} contains {c:?}, which a FAT long name cannot hold"
            ));
        }
    }
    Ok(())
}

/// Directory entries (short plus long-name) `fatfs` writes for `name`.
fn entry_slots(name: &str) -> u64 {
    let units = name.encode_utf16().count();
    1 + units.div_ceil(LFN_CHARS_PER_ENTRY) as u64
}

fn label_bytes(label: &str) -> Result<Option<[u8; 11]>, FatError> {
    if label.is_empty() {
        return Ok(None);
    }
    let bad = |reason| FatError::InvalidLabel {
        label: label.to_string(),
        reason,
    };
    if label.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    if label.starts_with(' ') {
        return Err(bad("starts with a space"));
    }
    let mut out = [b' '; 11];
    for (dst, c) in out.iter_mut().zip(label.bytes()) {
        // Short-name characters (FAT spec, 'FAT Directory Structure', DIR_Name),
        // plus space.
        let ok = c.is_ascii_alphanumeric() || b" !#$%&'()-@^_`{}~".contains(&c);
        if !ok {
            return Err(bad(
                "only ASCII letters, digits, space and !#$%&'()-@^_`{}~ are allowed",
            ));
        }
        *dst = c.to_ascii_uppercase();
    }
    Ok(Some(out))
}

fn source_size(esp_path: &str, source: &EspSource) -> Result<u64, FatError> {
    match source {
        EspSource::Bytes(b) => Ok(b.len() as u64),
        EspSource::Reserved(size) => Ok(*size),
        EspSource::File(p) => {
            let input = |source| FatError::Input {
                esp_path: esp_path.to_string(),
                path: p.clone(),
                source,
            };
            let md = std::fs::metadata(p).map_err(input)?;
            if !md.is_file() {
                return Err(input(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
            Ok(md.len())
        }
    }
}

fn upper(components: &[String]) -> String {
    components.join("/").to_uppercase()
}

/// Checks `spec` and puts it in write order; nothing is written.
pub(super) fn plan(spec: &EspSpec) -> Result<Plan<'_>, FatError> {
    let geometry = fat32_geometry(spec.size)?;
    let label = label_bytes(&spec.label)?;

    // Validate names and sizes, in the order given.
    let mut files = Vec::with_capacity(spec.files.len());
    for f in &spec.files {
        let components: Vec<String> = f.path.split('/').map(str::to_string).collect();
        for c in &components {
            check_component(c).map_err(|reason| FatError::InvalidPath {
                path: f.path.clone(),
                reason,
            })?;
        }
        let size = source_size(&f.path, &f.source)?;
        if size > MAX_FILE_SIZE {
            return Err(FatError::FileTooLarge {
                esp_path: f.path.clone(),
                size,
            });
        }
        files.push(PlannedFile {
            components,
            size,
            source: &f.source,
            given: &f.path,
        });
    }
    files.sort_by(|a, b| a.components.cmp(&b.components));

    // Case-insensitive duplicates and file/directory conflicts.
    let mut file_keys: HashMap<String, &str> = HashMap::new();
    for f in &files {
        if let Some(other) = file_keys.insert(upper(&f.components), f.given) {
            return Err(FatError::DuplicatePath {
                path: f.given.to_string(),
                other: other.to_string(),
            });
        }
    }
    // Directories, keyed case-insensitively, first spelling wins.
    let mut dir_names: HashMap<String, Vec<String>> = HashMap::new();
    let mut dirs: Vec<Vec<String>> = Vec::new();
    for f in &mut files {
        for depth in 1..f.components.len() {
            let key = upper(&f.components[..depth]);
            if let Some(file) = file_keys.get(&key) {
                return Err(FatError::PathConflict {
                    path: (*file).to_string(),
                    other: f.given.to_string(),
                });
            }
            // components[..depth - 1] are already canonical.
            let canonical = dir_names.entry(key).or_insert_with(|| {
                let d = f.components[..depth].to_vec();
                dirs.push(d.clone());
                d
            });
            f.components[..depth].clone_from_slice(canonical);
        }
    }
    files.sort_by(|a, b| a.components.cmp(&b.components));

    // Capacity: directory clusters first, then the files in write order.
    let cluster = geometry.cluster_size();
    let mut slots: BTreeMap<String, u64> = BTreeMap::new();
    slots.insert(String::new(), u64::from(label.is_some()));
    for d in &dirs {
        // fatfs gives "." and ".." a long-name entry each.
        slots.insert(upper(d), entry_slots(".") + entry_slots(".."));
        let parent = upper(&d[..d.len() - 1]);
        *slots.entry(parent).or_default() += entry_slots(&d[d.len() - 1]);
    }
    for f in &files {
        let n = f.components.len();
        let parent = upper(&f.components[..n - 1]);
        *slots.entry(parent).or_default() += entry_slots(&f.components[n - 1]);
    }
    let mut needed_clusters: u64 = slots
        .iter()
        .map(|(key, &s)| {
            let c = (s * DIR_ENTRY_SIZE).div_ceil(cluster).max(1);
            // The root's first cluster is allocated by format.
            if key.is_empty() { c - 1 } else { c }
        })
        .sum();
    let free_clusters = geometry.clusters - 1;
    for f in &files {
        needed_clusters += f.size.div_ceil(cluster);
        if needed_clusters > free_clusters {
            return Err(FatError::NoSpace {
                esp_path: f.path(),
                size: f.size,
                needed: needed_clusters * cluster,
                available: free_clusters * cluster,
                esp_size: spec.size,
            });
        }
    }

    Ok(Plan {
        geometry,
        label,
        dirs,
        files,
    })
}
