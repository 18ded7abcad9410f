//! `/etc/cocos-init.toml`: what the initramfs builder tells cocos-init.
//!
//! One type, [`InitConfig`], for both sides: `cocos-imgbuild initramfs`
//! writes it with [`InitConfig::to_toml`] and cocos-init reads it with
//! [`InitConfig::from_toml`] (adding the file's path to errors and checking
//! that module paths are absolute). The file looks like this:
//!
//! ```toml
//! # Written by cocos-imgbuild initramfs.
//! # Kernel modules to load with finit_module, in this order (paths in the initramfs).
//! modules = [
//!   "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko",
//! ]
//! # How long to wait for the disk partitions to appear.
//! device_timeout_ms = 10000
//! ```
//!
//! `modules` are loaded in the order given (the builder resolved the
//! dependencies from `modules.dep`); `device_timeout_ms` bounds the wait
//! for the partitions. A missing key takes its default. Unknown keys are
//! errors: the builder and the init come from the same workspace, and a
//! misspelt key silently ignored would be a boot that does not do what its
//! image says.
//!
//! ```
//! use cocos_formats::init_config::InitConfig;
//! let config = InitConfig {
//!     modules: vec!["/lib/modules/6.1/kernel/virtio.ko".into()],
//!     device_timeout_ms: 2500,
//! };
//! let text = config.to_toml()?;
//! assert_eq!(InitConfig::from_toml(&text)?, config);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where the builder puts the file in the initramfs, and where cocos-init
/// reads it.
pub const CONFIG_PATH: &str = "/etc/cocos-init.toml";

/// Default of [`InitConfig::device_timeout_ms`]: how long cocos-init waits
/// for the disk partitions when the file does not say.
pub const DEFAULT_DEVICE_TIMEOUT_MS: u64 = 10_000;

/// The first lines of every file the builder writes.
const HEADER: &str = "# Written by cocos-imgbuild initramfs.\n";
/// The comment above `modules`.
const MODULES_COMMENT: &str =
    "# Kernel modules to load with finit_module, in this order (paths in the initramfs).\n";
/// The comment above `device_timeout_ms`.
const TIMEOUT_COMMENT: &str = "# How long to wait for the disk partitions to appear.\n";

/// The contents of `/etc/cocos-init.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Kernel modules to load, in this order (absolute paths in the
    /// initramfs).
    #[serde(default)]
    pub modules: Vec<PathBuf>,
    /// How long to wait for the partitions, in milliseconds.
    #[serde(default = "default_timeout")]
    pub device_timeout_ms: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_DEVICE_TIMEOUT_MS
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            modules: Vec::new(),
            device_timeout_ms: DEFAULT_DEVICE_TIMEOUT_MS,
        }
    }
}

/// A configuration that TOML cannot hold.
#[derive(Debug, Error)]
#[error("{CONFIG_PATH}: cannot write {key}: {source}")]
pub struct InitConfigError {
    /// The key whose value cannot be written.
    pub key: &'static str,
    /// The TOML writer's reason (a module path that is not UTF-8).
    pub source: toml::ser::Error,
}

impl InitConfig {
    /// Parses the file's text. Checks the keys and their types only; that
    /// module paths are absolute is the reader's check.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The text of the file: a comment per key, one module per line in
    /// load order. Every value is written by the `toml` crate (quoting and
    /// escaping as TOML needs); only the layout is fixed here.
    pub fn to_toml(&self) -> Result<String, InitConfigError> {
        let mut text = String::from(HEADER);
        text.push_str(MODULES_COMMENT);
        if self.modules.is_empty() {
            text.push_str("modules = []\n");
        } else {
            text.push_str("modules = [\n");
            for module in &self.modules {
                text.push_str("  ");
                text.push_str(&value("modules", module)?);
                text.push_str(",\n");
            }
            text.push_str("]\n");
        }
        text.push_str(TIMEOUT_COMMENT);
        text.push_str("device_timeout_ms = ");
        text.push_str(&value("device_timeout_ms", &self.device_timeout_ms)?);
        text.push('\n');
        Ok(text)
    }
}

/// `v` as a TOML value.
fn value(key: &'static str, v: &impl Serialize) -> Result<String, InitConfigError> {
    let mut out = String::new();
    v.serialize(toml::ser::ValueSerializer::new(&mut out))
        .map_err(|source| InitConfigError { key, source })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_file_has_a_comment_per_key_and_a_module_per_line() {
        let config = InitConfig {
            modules: vec![
                "/lib/modules/6.1/kernel/a.ko".into(),
                "/lib/modules/6.1/b-mod.ko".into(),
            ],
            device_timeout_ms: 2500,
        };
        assert_eq!(
            config.to_toml().unwrap(),
            "# Written by cocos-imgbuild initramfs.\n\
             # Kernel modules to load with finit_module, in this order (paths in the initramfs).\n\
             modules = [\n  \"/lib/modules/6.1/kernel/a.ko\",\n  \"/lib/modules/6.1/b-mod.ko\",\n]\n\
             # How long to wait for the disk partitions to appear.\n\
             device_timeout_ms = 2500\n"
        );
        let empty = InitConfig::default().to_toml().unwrap();
        assert!(empty.contains("\nmodules = []\n"), "{empty}");
        assert!(empty.ends_with("\ndevice_timeout_ms = 10000\n"), "{empty}");
    }

    #[test]
    fn what_toml_cannot_hold_is_an_error_naming_the_key_and_the_rest_reads_back() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let not_utf8 = InitConfig {
            modules: vec![PathBuf::from(OsStr::from_bytes(b"/m/\xff.ko"))],
            ..InitConfig::default()
        };
        let e = not_utf8.to_toml().unwrap_err();
        assert_eq!(e.key, "modules");
        assert!(
            e.to_string()
                .starts_with("/etc/cocos-init.toml: cannot write modules: "),
            "{e}"
        );
        // The toml crate writes and reads every u64, beyond TOML's signed
        // 64-bit integers.
        for device_timeout_ms in [0, i64::MAX as u64, u64::MAX] {
            let config = InitConfig {
                device_timeout_ms,
                ..InitConfig::default()
            };
            let text = config.to_toml().unwrap();
            assert_eq!(InitConfig::from_toml(&text).unwrap(), config);
        }
    }
}
