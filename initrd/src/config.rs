//! `/etc/cocos-init.toml`: what the initramfs builder tells the init.
//!
//! The file's type, [`InitConfig`], and its format are
//! `cocos_formats::init_config`'s, shared with the builder that writes it.
//! This module reads it: a missing file means no modules and the default
//! timeout; a file that cannot be read, is not valid TOML, has unknown keys
//! or names a module by a relative path is an error naming the file.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use cocos_formats::init_config::{CONFIG_PATH, DEFAULT_DEVICE_TIMEOUT_MS, InitConfig};

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Not valid TOML, or not our keys.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// A module path that is not absolute.
    #[error("{}: module {module:?} is not an absolute path", path.display())]
    RelativeModule {
        /// The file.
        path: PathBuf,
        /// The module path.
        module: PathBuf,
    },
}

/// Parses the file's text; `path` is only used in errors.
pub fn parse(text: &str, path: &Path) -> Result<InitConfig, ConfigError> {
    let config = InitConfig::from_toml(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        // toml's messages span several lines (a source excerpt); the
        // FATAL line is one line.
        message: e.message().trim().replace('\n', " "),
    })?;
    if let Some(m) = config.modules.iter().find(|m| !m.is_absolute()) {
        return Err(ConfigError::RelativeModule {
            path: path.to_path_buf(),
            module: m.clone(),
        });
    }
    Ok(config)
}

/// Reads `path`; a missing file gives the defaults.
pub fn load(path: &Path) -> Result<InitConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(InitConfig::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<InitConfig, ConfigError> {
        super::parse(text, Path::new(CONFIG_PATH))
    }

    #[test]
    fn the_builders_file_is_read() {
        // Exactly what cocos-imgbuild initramfs writes (issue 4).
        let text = "# Written by cocos-imgbuild initramfs.\nmodules = [\n  \"/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko\",\n]\ndevice_timeout_ms = 10000\n";
        let c = parse(text).unwrap();
        assert_eq!(
            c.modules,
            [PathBuf::from(
                "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko"
            )]
        );
        assert_eq!(c.device_timeout_ms, 10_000);
    }

    /// What the builder writes (`InitConfig::to_toml`, which `cocos-imgbuild
    /// initramfs` calls for the file) reads back here as the same
    /// configuration, whatever the module paths hold.
    #[test]
    fn what_the_builder_writes_reads_back() {
        let modules = [
            "/lib/modules/6.1/kernel/drivers/virtio/virtio.ko",
            "/lib/modules/6.1/kernel/we\"ird.ko",
            "/lib/modules/6.1/kernel/back\\slash.ko",
            "/lib/modules/6.1/kernel/both'\"quotes\\.ko",
            "/lib/modules/6.1/kernel/'''triple\"\"\".ko",
            "/lib/modules/6.1/kernel/naïve-模块-🦀.ko",
            "/lib/modules/6.1/kernel/tab\there\nnewline\u{7f}.ko",
        ];
        for modules in [&modules[..], &modules[..1], &[]] {
            let written = InitConfig {
                modules: modules.iter().map(PathBuf::from).collect(),
                device_timeout_ms: 2500,
            };
            let text = written.to_toml().unwrap();
            assert_eq!(parse(&text).unwrap(), written, "{text}");
        }
    }

    #[test]
    fn order_of_modules_is_kept() {
        let c = parse("modules = [\"/m/b.ko\", \"/m/a.ko\", \"/m/c.ko\"]").unwrap();
        assert_eq!(
            c.modules,
            ["/m/b.ko", "/m/a.ko", "/m/c.ko"].map(PathBuf::from)
        );
    }

    #[test]
    fn missing_keys_take_defaults() {
        assert_eq!(parse("").unwrap(), InitConfig::default());
        assert_eq!(
            parse("device_timeout_ms = 5").unwrap().modules,
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            parse("modules = []").unwrap().device_timeout_ms,
            DEFAULT_DEVICE_TIMEOUT_MS
        );
    }

    #[test]
    fn a_missing_file_gives_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(&dir.path().join("cocos-init.toml")).unwrap();
        assert_eq!(c, InitConfig::default());
        assert_eq!(c.device_timeout_ms, 10_000);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors_on_one_line() {
        for bad in [
            "module = []",
            "modules = \"/a.ko\"",
            "device_timeout_ms = -1",
            "device_timeout_ms = \"10s\"",
            "modules = [",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, ConfigError::Syntax { .. }), "{bad}: {e:?}");
            let text = e.to_string();
            assert!(text.starts_with("/etc/cocos-init.toml: "), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn relative_module_paths_are_rejected() {
        let e = parse("modules = [\"kernel/virtio.ko\"]").unwrap_err();
        assert!(matches!(e, ConfigError::RelativeModule { .. }), "{e:?}");
    }
}
