//! The image as data: the partition table and the dm-verity parameters of
//! a `disk.img`, as `[[partition]]` and `[verity]` tables of an image
//! description (`image.toml`).
//!
//! Each partition has a **role**, which says what `build` puts in it and
//! how `inspect` and cocos-init find it:
//!
//! | role | contents | size | unique GUID | type (default) | label (default) |
//! | --- | --- | --- | --- | --- | --- |
//! | `esp` | FAT with GRUB, the kernel, the initramfs | fixed (256M) | `seed:gpt:esp` | EFI System | `esp` |
//! | `root` | the ext4 root tree | `auto` (the tree plus 10%) or fixed | the root hash's first half | root (x86-64) | `root` |
//! | `root-verity` | the dm-verity superblock and hash tree of `root` | `auto` only | the root hash's last half | root verity (x86-64) | `root-verity` |
//! | `data` | nothing: a blank partition (cocos-init formats `cocos` at boot) | fixed | `seed:gpt:<label>` | Linux data | required |
//!
//! The table's order is the partitions' order on the disk; each starts
//! 1 MiB aligned after the previous one, so partitions cannot overlap. The
//! ESP comes first (it is written while the root tree is scanned, before
//! the others are sized). Without `[[partition]]` tables the default is
//! today's four partitions: `esp` 256M, `root`, `root-verity`, and a `data`
//! partition `cocos` of 20G.
//!
//! Like systemd-repart's `repart.d/*.conf` (`Type=`, `Label=`, `UUID=`,
//! `SizeMinBytes=`, `Verity=data|hash`, `VerityMatchKey=`), a partition is
//! declared by what it is, and the GUIDs of the root and its hash partition
//! come from the root hash; unlike repart, the root's contents and its hash
//! tree are written in one pass by `build` itself.
//!
//! ```toml
//! [verity]
//! algorithm = "sha256"
//!
//! [[partition]]
//! role = "esp"
//! size = "256M"
//!
//! [[partition]]
//! role = "root"
//!
//! [[partition]]
//! role = "root-verity"
//!
//! [[partition]]
//! role = "data"
//! label = "cocos"
//! size = "20G"
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cocos_measure::verity::{BlockSize, HashAlgorithm};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use uuid::Uuid;

use crate::gpt;
use crate::initramfs::ExtraFile;
use crate::seed::purpose;

/// What a partition holds; see the [module](self) documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The EFI system partition.
    Esp,
    /// The read-only root filesystem.
    Root,
    /// The dm-verity hash partition of the root.
    RootVerity,
    /// A blank partition.
    Data,
}

impl Role {
    /// The name used in image descriptions.
    pub fn name(self) -> &'static str {
        match self {
            Role::Esp => "esp",
            Role::Root => "root",
            Role::RootVerity => "root-verity",
            Role::Data => "data",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How big a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRule {
    /// From its contents (`"auto"`).
    Auto,
    /// This many bytes (`"256M"`, `"20G"`, `1048576`), rounded up to 1 MiB.
    Fixed(u64),
}

/// How a partition's unique GUID is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UuidRule {
    /// Derived from the image seed and this purpose label
    /// (`"seed:gpt:esp"`).
    Seed(String),
    /// The first 16 bytes of the root hash (`"root-hash-first-half"`).
    RootHashFirstHalf,
    /// The last 16 bytes of the root hash (`"root-hash-last-half"`).
    RootHashLastHalf,
    /// This GUID.
    Fixed(Uuid),
}

/// What filesystem (or format) a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filesystem {
    /// FAT (the ESP).
    Vfat,
    /// ext4, written by this tool's writer (the root).
    Ext4,
    /// A dm-verity superblock and hash tree.
    Verity,
    /// Nothing: the partition is left blank (zeros, sparse).
    None,
}

impl Filesystem {
    /// The name used in image descriptions.
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Vfat => "vfat",
            Filesystem::Ext4 => "ext4",
            Filesystem::Verity => "verity",
            Filesystem::None => "none",
        }
    }
}

/// A partition as an image description declares it; unset keys take the
/// role's defaults ([`PartitionDef::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PartitionDef {
    /// What it holds.
    pub role: Role,
    /// GPT partition name (at most 36 UTF-16 units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Partition type: `esp`, `root-x86-64`, `root-x86-64-verity`,
    /// `linux-data`, or a GUID.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// `"auto"` or a size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeRule>,
    /// `"seed:LABEL"`, `"root-hash-first-half"`, `"root-hash-last-half"` or
    /// a GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<UuidRule>,
    /// `vfat`, `ext4`, `verity` or `none`; must match the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
}

/// A partition with every rule decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// What it holds.
    pub role: Role,
    /// GPT partition name.
    pub label: String,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Its size.
    #[serde(serialize_with = "ser_size")]
    pub size: SizeRule,
    /// Its unique GUID.
    #[serde(serialize_with = "ser_uuid_rule")]
    pub uuid: UuidRule,
    /// What it holds.
    pub filesystem: Filesystem,
}

impl Partition {
    /// The declaration this resolution came from, with every key set.
    pub fn to_def(&self) -> PartitionDef {
        PartitionDef {
            role: self.role,
            label: Some(self.label.clone()),
            type_name: Some(self.type_guid.to_string()),
            size: Some(self.size),
            uuid: Some(self.uuid.clone()),
            filesystem: Some(self.filesystem),
        }
    }
}

/// The dm-verity parameters of the root (`[verity]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VeritySpec {
    /// `sha1`, `sha256` or `sha512`.
    #[serde(default = "default_algorithm", with = "algorithm_name")]
    pub algorithm: HashAlgorithm,
    /// Data block size (a power of two, 512 to 65536; the ext4 writer
    /// needs 4096).
    #[serde(default = "default_block")]
    pub data_block_size: u64,
    /// Hash block size (a power of two, 512 to 65536).
    #[serde(default = "default_block")]
    pub hash_block_size: u64,
    /// Seed purpose label of the salt (32 bytes).
    #[serde(default = "default_salt_label")]
    pub salt_seed: String,
    /// Seed purpose label of the superblock UUID.
    #[serde(default = "default_uuid_label")]
    pub uuid_seed: String,
}

impl Default for VeritySpec {
    fn default() -> Self {
        VeritySpec {
            algorithm: default_algorithm(),
            data_block_size: default_block(),
            hash_block_size: default_block(),
            salt_seed: default_salt_label(),
            uuid_seed: default_uuid_label(),
        }
    }
}

fn default_algorithm() -> HashAlgorithm {
    HashAlgorithm::Sha256
}
fn default_block() -> u64 {
    BlockSize::DEFAULT.bytes_u64()
}
fn default_salt_label() -> String {
    purpose::VERITY_SALT.into()
}
fn default_uuid_label() -> String {
    purpose::VERITY_UUID.into()
}

mod algorithm_name {
    use super::*;

    pub fn serialize<S: Serializer>(a: &HashAlgorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashAlgorithm, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an image description cannot be used: the key and the reason (the
/// caller adds the file).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{key}: {reason}")]
pub struct SpecError {
    /// The key, e.g. `partition[2].size` or `verity.algorithm`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn spec_err(key: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Parses `256M`, `20G`, `1048576`, `4K`, `2T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: unknown size unit {c:?} (use K, M, G or T)")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl FromStr for SizeRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "auto" {
            Ok(SizeRule::Auto)
        } else {
            parse_size(s).map(SizeRule::Fixed)
        }
    }
}

impl<'de> Deserialize<'de> for SizeRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(SizeRule::Fixed(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for SizeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeRule::Auto => f.write_str("auto"),
            SizeRule::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for SizeRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_size(self, s)
    }
}

fn ser_size<S: Serializer>(r: &SizeRule, s: S) -> Result<S::Ok, S::Error> {
    match r {
        SizeRule::Auto => s.serialize_str("auto"),
        SizeRule::Fixed(n) => s.serialize_u64(*n),
    }
}

impl FromStr for UuidRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "root-hash-first-half" => Ok(UuidRule::RootHashFirstHalf),
            "root-hash-last-half" => Ok(UuidRule::RootHashLastHalf),
            _ => match s.strip_prefix("seed:") {
                Some("") => Err("seed: needs a purpose label, e.g. seed:gpt:esp".into()),
                Some(label) => Ok(UuidRule::Seed(label.into())),
                None => Uuid::parse_str(s).map(UuidRule::Fixed).map_err(|_| {
                    format!(
                        "{s:?} is not seed:LABEL, root-hash-first-half, root-hash-last-half or a GUID"
                    )
                }),
            },
        }
    }
}

impl fmt::Display for UuidRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UuidRule::Seed(label) => write!(f, "seed:{label}"),
            UuidRule::RootHashFirstHalf => f.write_str("root-hash-first-half"),
            UuidRule::RootHashLastHalf => f.write_str("root-hash-last-half"),
            UuidRule::Fixed(u) => write!(f, "{u}"),
        }
    }
}

impl<'de> Deserialize<'de> for UuidRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for UuidRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_uuid_rule(self, s)
    }
}

fn ser_uuid_rule<S: Serializer>(r: &UuidRule, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(r)
}

/// A partition type name or GUID.
pub fn type_guid(name: &str) -> Result<Uuid, String> {
    match name {
        "esp" => Ok(gpt::ESP_TYPE),
        "root-x86-64" => Ok(gpt::ROOT_X86_64_TYPE),
        "root-x86-64-verity" => Ok(gpt::ROOT_X86_64_VERITY_TYPE),
        "linux-data" => Ok(gpt::LINUX_DATA_TYPE),
        _ => Uuid::parse_str(name).map_err(|_| {
            format!("{name:?} is not esp, root-x86-64, root-x86-64-verity, linux-data or a GUID")
        }),
    }
}

/// The partition table built without `[[partition]]` tables: the ESP
/// (`esp_size`), the root, its hash partition and the blank `cocos` data
/// partition (`cocos_size`).
pub fn default_partitions(esp_size: u64, cocos_size: u64) -> Vec<PartitionDef> {
    let def = |role, label: Option<&str>, size: Option<SizeRule>| PartitionDef {
        role,
        label: label.map(String::from),
        type_name: None,
        size,
        uuid: None,
        filesystem: None,
    };
    vec![
        def(Role::Esp, None, Some(SizeRule::Fixed(esp_size))),
        def(Role::Root, None, None),
        def(Role::RootVerity, None, None),
        def(
            Role::Data,
            Some(gpt::label::COCOS),
            Some(SizeRule::Fixed(cocos_size)),
        ),
    ]
}

impl PartitionDef {
    /// Fills unset keys with the role's defaults and checks that each
    /// set key fits the role; `key` names the table (`partition[N]`).
    pub fn resolve(&self, key: &str) -> Result<Partition, SpecError> {
        let role = self.role;
        let label = match (&self.label, role) {
            (Some(l), _) => l.clone(),
            (None, Role::Esp) => gpt::label::ESP.into(),
            (None, Role::Root) => gpt::label::ROOT.into(),
            (None, Role::RootVerity) => gpt::label::ROOT_VERITY.into(),
            (None, Role::Data) => {
                return Err(spec_err(
                    format!("{key}.label"),
                    "a data partition needs a label (cocos-init finds `cocos` by it)",
                ));
            }
        };
        if label.is_empty()
            || label.encode_utf16().count() > gpt::MAX_NAME_UNITS
            || label.contains('\0')
        {
            return Err(spec_err(
                format!("{key}.label"),
                format!(
                    "{label:?} must be 1 to {} UTF-16 units without NUL",
                    gpt::MAX_NAME_UNITS
                ),
            ));
        }
        let type_guid = match &self.type_name {
            Some(name) => type_guid(name).map_err(|r| spec_err(format!("{key}.type"), r))?,
            None => match role {
                Role::Esp => gpt::ESP_TYPE,
                Role::Root => gpt::ROOT_X86_64_TYPE,
                Role::RootVerity => gpt::ROOT_X86_64_VERITY_TYPE,
                Role::Data => gpt::LINUX_DATA_TYPE,
            },
        };
        let size = match (self.size, role) {
            (None, Role::Esp) => SizeRule::Fixed(256 << 20),
            (None, Role::Root | Role::RootVerity) => SizeRule::Auto,
            (None, Role::Data) => {
                return Err(spec_err(
                    format!("{key}.size"),
                    "a data partition needs a size",
                ));
            }
            (Some(SizeRule::Auto), Role::Esp | Role::Data) => {
                return Err(spec_err(
                    format!("{key}.size"),
                    format!("an {role} partition has no contents to size it by: give a size"),
                ));
            }
            (Some(SizeRule::Fixed(_)), Role::RootVerity) => {
                return Err(spec_err(
                    format!("{key}.size"),
                    "the hash partition is sized by its tree: use \"auto\"",
                ));
            }
            (Some(SizeRule::Fixed(0)), _) => {
                return Err(spec_err(
                    format!("{key}.size"),
                    "a partition cannot be empty",
                ));
            }
            (Some(size), _) => size,
        };
        let uuid = match (&self.uuid, role) {
            (None, Role::Root) | (Some(UuidRule::RootHashFirstHalf), Role::Root) => {
                UuidRule::RootHashFirstHalf
            }
            (None, Role::RootVerity) | (Some(UuidRule::RootHashLastHalf), Role::RootVerity) => {
                UuidRule::RootHashLastHalf
            }
            (Some(_), Role::Root | Role::RootVerity) => {
                return Err(spec_err(
                    format!("{key}.uuid"),
                    format!(
                        "the {role} partition's GUID must be the root hash's {} half (cocos-init and verifiers find it by the root hash)",
                        if role == Role::Root { "first" } else { "last" }
                    ),
                ));
            }
            (Some(UuidRule::RootHashFirstHalf | UuidRule::RootHashLastHalf), _) => {
                return Err(spec_err(
                    format!("{key}.uuid"),
                    "only the root and root-verity partitions take the root hash's halves",
                ));
            }
            (Some(rule), _) => rule.clone(),
            (None, Role::Esp) => UuidRule::Seed(purpose::GPT_ESP.into()),
            (None, Role::Data) => UuidRule::Seed(purpose::gpt_partition(&label)),
        };
        let expected_fs = match role {
            Role::Esp => Filesystem::Vfat,
            Role::Root => Filesystem::Ext4,
            Role::RootVerity => Filesystem::Verity,
            Role::Data => Filesystem::None,
        };
        if let Some(fs) = self.filesystem {
            if fs != expected_fs {
                return Err(spec_err(
                    format!("{key}.filesystem"),
                    format!("an {role} partition holds {}", expected_fs.name()),
                ));
            }
        }
        Ok(Partition {
            role,
            label,
            type_guid,
            size,
            uuid,
            filesystem: expected_fs,
        })
    }
}

/// A checked partition table: one ESP first, one root, one root-verity
/// after... any order of the rest, unique labels, unique fixed GUIDs.
pub fn resolve_partitions(defs: &[PartitionDef]) -> Result<Vec<Partition>, SpecError> {
    let parts = defs
        .iter()
        .enumerate()
        .map(|(i, d)| d.resolve(&format!("partition[{}]", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let count = |role| parts.iter().filter(|p| p.role == role).count();
    for role in [Role::Esp, Role::Root, Role::RootVerity] {
        match count(role) {
            1 => {}
            0 if role == Role::RootVerity => {}
            0 => {
                return Err(spec_err(
                    "partition",
                    format!("no partition has role = {:?}", role.name()),
                ));
            }
            n => {
                return Err(spec_err(
                    "partition",
                    format!("{n} partitions have role = {:?}; give one", role.name()),
                ));
            }
        }
    }
    if count(Role::RootVerity) == 0 {
        return Err(spec_err(
            "partition",
            "no partition has role = \"root-verity\": the root must be protected by dm-verity",
        ));
    }
    if parts.first().map(|p| p.role) != Some(Role::Esp) {
        return Err(spec_err(
            "partition[1].role",
            "the esp partition must come first (it is written before the others are sized)",
        ));
    }
    let mut labels = HashSet::new();
    let mut seeds = HashSet::new();
    for (i, p) in parts.iter().enumerate() {
        if !labels.insert(p.label.as_str()) {
            return Err(spec_err(
                format!("partition[{}].label", i + 1),
                format!("{:?} is the label of an earlier partition", p.label),
            ));
        }
        if let UuidRule::Seed(s) = &p.uuid {
            if !seeds.insert(s.as_str()) {
                return Err(spec_err(
                    format!("partition[{}].uuid", i + 1),
                    format!("seed:{s} gives the GUID of an earlier partition"),
                ));
            }
        }
    }
    Ok(parts)
}

impl VeritySpec {
    /// Checks the block sizes.
    pub fn check(&self) -> Result<(BlockSize, BlockSize), SpecError> {
        let block = |n: u64, key: &str| {
            BlockSize::new(n).map_err(|e| spec_err(format!("verity.{key}"), e.to_string()))
        };
        let data = block(self.data_block_size, "data-block-size")?;
        let hash = block(self.hash_block_size, "hash-block-size")?;
        if data.bytes_u64() != default_block() {
            return Err(spec_err(
                "verity.data-block-size",
                format!(
                    "must be {} (the root filesystem's block size)",
                    default_block()
                ),
            ));
        }
        Ok((data, hash))
    }
}

/// An image description (`image.toml`, `cocos-imgbuild build --config`):
/// the inputs and options under the same names as `build`'s flags
/// (`rootfs = "..."`, `cocos-size = "20G"`, ...), the partition table
/// (`[[partition]]`) and the dm-verity parameters (`[verity]`). Relative
/// paths are relative to the file. Flags overlay the file; `--esp-size`,
/// `--root-size` and `--cocos-size` (and the same keys) set the size of the
/// `esp`, `root` and `cocos` partitions of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageSpec {
    /// Output directory.
    pub out: Option<PathBuf>,
    /// Root tree: a directory or a tar archive.
    pub rootfs: Option<PathBuf>,
    /// Kernel image.
    pub kernel: Option<PathBuf>,
    /// A prebuilt initramfs.
    pub initramfs: Option<PathBuf>,
    /// The init program of a generated initramfs.
    pub init: Option<PathBuf>,
    /// Kernel module tree of a generated initramfs.
    pub modules_dir: Option<PathBuf>,
    /// Kernel modules to load (one per entry).
    #[serde(default)]
    pub module: Vec<String>,
    /// Kernel modules to load: one space-separated string or an array.
    #[serde(default, deserialize_with = "words")]
    pub modules: Option<String>,
    /// Extra initramfs files, `SRC:DEST[:MODE]`.
    #[serde(default, deserialize_with = "extra_files")]
    pub initramfs_file: Vec<ExtraFile>,
    /// Extra shared-library directories.
    #[serde(default)]
    pub lib_dir: Vec<PathBuf>,
    /// How long cocos-init waits for the partitions.
    pub device_timeout_ms: Option<u64>,
    /// A prebuilt EFI bootloader.
    pub bootloader: Option<PathBuf>,
    /// GRUB modules, space separated.
    pub grub_modules: Option<String>,
    /// GRUB module directory.
    pub grub_modules_dir: Option<PathBuf>,
    /// Extra kernel command line options.
    pub cmdline: Option<String>,
    /// Size of the `esp` partition.
    pub esp_size: Option<String>,
    /// Size of the `root` partition.
    pub root_size: Option<String>,
    /// Size of the `cocos` partition.
    pub cocos_size: Option<String>,
    /// Seed of every UUID and salt.
    pub seed: Option<Uuid>,
    /// Own every file by 0:0.
    #[serde(default)]
    pub root_owned: bool,
    /// The partition table, in disk order (empty: the default table).
    #[serde(default, rename = "partition")]
    pub partitions: Vec<PartitionDef>,
    /// The dm-verity parameters.
    #[serde(default)]
    pub verity: Option<VeritySpec>,
}

/// A list given as one space-separated string or as an array of strings.
fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Words {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match Words::deserialize(d)? {
        Words::One(s) => s,
        Words::Many(v) => v.join(" "),
    }))
}

/// `SRC:DEST[:MODE]` strings, parsed once.
fn extra_files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ExtraFile>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// Why an image description file cannot be used.
#[derive(Debug, Error)]
pub enum SpecFileError {
    /// The file cannot be read.
    #[error("{}: cannot read the image description", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key this tool does not know.
    #[error("{}: invalid image description: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (key, line and reason).
        message: String,
    },
    /// A key with a value that cannot be used.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key and the reason.
        source: SpecError,
    },
}

impl ImageSpec {
    /// Reads and checks an image description; relative paths become
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, SpecFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut spec: ImageSpec = toml::from_str(&text).map_err(|e| SpecFileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let invalid = |source| SpecFileError::Invalid {
            path: path.to_path_buf(),
            source,
        };
        if !spec.partitions.is_empty() {
            resolve_partitions(&spec.partitions).map_err(invalid)?;
        }
        if let Some(v) = &spec.verity {
            v.check().map_err(invalid)?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut spec.out,
            &mut spec.rootfs,
            &mut spec.kernel,
            &mut spec.initramfs,
            &mut spec.init,
            &mut spec.modules_dir,
            &mut spec.bootloader,
            &mut spec.grub_modules_dir,
        ]
        .into_iter()
        .flatten()
        .chain(spec.lib_dir.iter_mut())
        .chain(spec.initramfs_file.iter_mut().map(|f| &mut f.source))
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(spec)
    }

    /// The partition table: the `[[partition]]` tables (or the default
    /// table), with the sizes `esp_size`, `root_size` and `cocos_size` give
    /// (already overlaid by the caller: flags over the file) applied to
    /// the `esp`, `root` and `cocos` partitions.
    pub fn partition_table(&self) -> Result<Vec<Partition>, SpecError> {
        let size = |v: &Option<String>, key: &str| {
            v.as_deref()
                .map(|s| parse_size(s).map_err(|r| spec_err(key, r)))
                .transpose()
        };
        let esp = size(&self.esp_size, "esp-size")?;
        let root = size(&self.root_size, "root-size")?;
        let cocos = size(&self.cocos_size, "cocos-size")?;
        let mut defs = if self.partitions.is_empty() {
            default_partitions(256 << 20, 20 << 30)
        } else {
            self.partitions.clone()
        };
        for (value, key, matches) in [
            (
                esp,
                "esp-size",
                &(|d: &PartitionDef| d.role == Role::Esp) as &dyn Fn(&PartitionDef) -> bool,
            ),
            (root, "root-size", &|d: &PartitionDef| d.role == Role::Root),
            (cocos, "cocos-size", &|d: &PartitionDef| {
                d.role == Role::Data && d.label.as_deref() == Some(gpt::label::COCOS)
            }),
        ] {
            let Some(bytes) = value else { continue };
            let def = defs
                .iter_mut()
                .find(|d| matches(d))
                .ok_or_else(|| spec_err(key, "the partition table has no such partition"))?;
            def.size = Some(SizeRule::Fixed(bytes));
        }
        resolve_partitions(&defs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        partition: Vec<PartitionDef>,
        #[serde(default)]
        verity: Option<VeritySpec>,
    }

    fn table(toml_text: &str) -> Result<Vec<Partition>, String> {
        let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        if let Some(v) = f.verity {
            v.check().map_err(|e| e.to_string())?;
        }
        resolve_partitions(&f.partition).map_err(|e| e.to_string())
    }

    const DEFAULT: &str = r#"
[[partition]]
role = "esp"
size = "256M"
[[partition]]
role = "root"
[[partition]]
role = "root-verity"
[[partition]]
role = "data"
label = "cocos"
size = "20G"
"#;

    #[test]
    fn the_default_table_written_out_resolves_to_the_defaults() {
        let written = table(DEFAULT).unwrap();
        let defaults = resolve_partitions(&default_partitions(256 << 20, 20 << 30)).unwrap();
        assert_eq!(written, defaults);
        assert_eq!(
            defaults
                .iter()
                .map(|p| (p.label.as_str(), p.uuid.to_string()))
                .collect::<Vec<_>>(),
            [
                ("esp", "seed:gpt:esp".to_string()),
                ("root", "root-hash-first-half".into()),
                ("root-verity", "root-hash-last-half".into()),
                ("cocos", "seed:gpt:cocos".into()),
            ]
        );
    }

    #[test]
    fn bad_tables_name_the_key_and_the_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "[[partition]]\nrole = \"esp\"\nsizee = \"1M\"\n",
                "unknown field `sizee`",
            ),
            (
                &DEFAULT.replace("role = \"root-verity\"", "role = \"root\""),
                "partition: 2 partitions have role = \"root\"",
            ),
            (
                &DEFAULT.replace("[[partition]]\nrole = \"root-verity\"\n", ""),
                "no partition has role = \"root-verity\"",
            ),
            (
                &DEFAULT.replace("[[partition]]\nrole = \"root\"\n", ""),
                "no partition has role = \"root\"",
            ),
            (
                &DEFAULT.replace("size = \"20G\"", "size = \"auto\""),
                "partition[4].size: an data partition has no contents",
            ),
            (
                &DEFAULT.replace("label = \"cocos\"", "label = \"root\""),
                "partition[4].label: \"root\" is the label of an earlier partition",
            ),
            (
                &DEFAULT.replace("size = \"20G\"", "size = \"20X\""),
                "unknown size unit 'X'",
            ),
            (
                &DEFAULT.replace(
                    "role = \"root-verity\"",
                    "role = \"root-verity\"\nsize = \"1G\"",
                ),
                "partition[3].size: the hash partition is sized by its tree",
            ),
            (
                &DEFAULT.replace("role = \"root\"", "role = \"root\"\nuuid = \"seed:x\""),
                "partition[2].uuid: the root partition's GUID must be the root hash's first half",
            ),
            (
                &format!("{DEFAULT}[[partition]]\nrole = \"esp\"\nlabel = \"esp2\"\n"),
                "2 partitions have role = \"esp\"",
            ),
            (
                &DEFAULT
                    .replacen("[[partition]]\nrole = \"esp\"\nsize = \"256M\"\n", "", 1)
                    .replace(
                        "size = \"20G\"",
                        "size = \"20G\"\n[[partition]]\nrole = \"esp\"",
                    ),
                "partition[1].role: the esp partition must come first",
            ),
            (
                &DEFAULT.replace("role = \"root\"", "role = \"root\"\nfilesystem = \"vfat\""),
                "partition[2].filesystem: an root partition holds ext4",
            ),
            (
                &DEFAULT.replace("label = \"cocos\"", "label = \"cocos\"\ntype = \"swap\""),
                "partition[4].type: \"swap\" is not esp",
            ),
            (&format!("{DEFAULT}[verity]\nalgorithm = \"md5\"\n"), "md5"),
            (
                &format!("{DEFAULT}[verity]\nhash-block-size = 3000\n"),
                "verity.hash-block-size",
            ),
        ];
        for (text, needle) in cases {
            let e = table(text).expect_err(needle);
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
    }

    #[test]
    fn sizes_and_uuid_rules_parse() {
        assert_eq!("auto".parse(), Ok(SizeRule::Auto));
        assert_eq!("4K".parse(), Ok(SizeRule::Fixed(4096)));
        assert_eq!("seed:gpt:x".parse(), Ok(UuidRule::Seed("gpt:x".into())));
        assert!("seed:".parse::<UuidRule>().is_err());
        assert_eq!(
            "00000000-0000-4000-8000-000000000001".parse(),
            Ok(UuidRule::Fixed(Uuid::from_u128(0x4000_8000_0000_0000_0001)))
        );
    }
}
