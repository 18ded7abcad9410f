//! The agent's configuration: paths, caps, authentication, the manifest
//! file and the management service. Every field has a documented default;
//! a JSON file gives any subset of them ([`Config::from_json`]), the
//! environment a few ([`Config::from_env`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cocos_cvms::{CvmsSettings, ReassemblyLimits, SettingsError};
use serde::{Deserialize, Serialize};

/// Where the agent serves `agent.AgentService`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listen {
    /// A Unix socket (the ingress proxy forwards to it).
    Unix(PathBuf),
    /// A TCP address (`host:port`), for development.
    Tcp(String),
}

impl Listen {
    /// Reads `AGENT_GRPC_HOST` as the Go agent does (agent-api.md §1.3):
    /// empty or `0.0.0.0` means the default socket, a value starting with
    /// `/` or `.` a socket path, anything else a TCP `host:port`.
    pub fn parse(value: &str) -> Self {
        match value {
            "" | "0.0.0.0" => Listen::Unix(PathBuf::from(DEFAULT_AGENT_SOCKET)),
            v if v.starts_with('/') || v.starts_with('.') => Listen::Unix(PathBuf::from(v)),
            v => Listen::Tcp(v.to_string()),
        }
    }
}

/// The default agent socket.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/cocos/agent.sock";

/// Size caps, in bytes unless named otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Caps {
    /// Largest algorithm upload. Default 4 GiB (a docker image archive).
    pub algorithm_bytes: u64,
    /// Largest requirements.txt. Default 1 MiB.
    pub requirements_bytes: u64,
    /// Largest dataset upload. Default 16 GiB.
    pub dataset_bytes: u64,
    /// Most entries a decompressed dataset may hold. Default 100,000.
    pub extract_entries: u64,
    /// Most bytes a decompressed dataset may expand to. Default 64 GiB.
    pub extract_bytes: u64,
    /// Largest manifest sent as chunks. Default 16 MiB.
    pub manifest_bytes: usize,
    /// Most manifests reassembled at once. Default 8.
    pub manifest_ids: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            algorithm_bytes: 4 << 30,
            requirements_bytes: 1 << 20,
            dataset_bytes: 16 << 30,
            extract_entries: 100_000,
            extract_bytes: 64 << 30,
            manifest_bytes: 16 << 20,
            manifest_ids: 8,
        }
    }
}

impl Caps {
    /// The extraction limits for a decompressed dataset.
    pub fn extract_limits(&self) -> cocos_manifest::zip::Limits {
        cocos_manifest::zip::Limits {
            max_entries: self.extract_entries,
            max_bytes: self.extract_bytes,
        }
    }

    /// The reassembly limits for chunked manifests (30 s idle timeout).
    pub fn reassembly_limits(&self) -> ReassemblyLimits {
        ReassemblyLimits {
            max_bytes: self.manifest_bytes,
            max_ids: self.manifest_ids,
            ..ReassemblyLimits::default()
        }
    }
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the algorithm, datasets and results live. Default `/cocos`
    /// (the encrypted, per-boot partition).
    pub work_dir: PathBuf,
    /// Where `agent.AgentService` is served. Default the Unix socket
    /// `/run/cocos/agent.sock`.
    pub listen: Listen,
    /// The computation runner's socket. Default `/run/cocos/runner.sock`.
    pub runner_socket: PathBuf,
    /// The log forwarder's socket. Default `/run/cocos/log.sock`.
    pub log_socket: PathBuf,
    /// Upload and extraction caps.
    pub caps: Caps,
    /// Accept the Go CLI's replayable role-string signatures. Default
    /// false.
    pub legacy_auth: bool,
    /// How far a signed request's timestamp may be from the agent's clock,
    /// in seconds. Default 300.
    pub auth_window_secs: u64,
    /// A manifest in the JSON form (agent-api.md §2.2) to run without a
    /// management service, e.g. on the environment share. Default none.
    pub manifest_file: Option<PathBuf>,
    /// The management service; none for a VM run from a manifest file.
    pub cvms: Option<CvmsSettings>,
    /// How long to wait for the runner to acknowledge a stop, in seconds.
    /// Default 10.
    pub runner_stop_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            work_dir: PathBuf::from("/cocos"),
            listen: Listen::Unix(PathBuf::from(DEFAULT_AGENT_SOCKET)),
            runner_socket: PathBuf::from("/run/cocos/runner.sock"),
            log_socket: PathBuf::from("/run/cocos/log.sock"),
            caps: Caps::default(),
            legacy_auth: false,
            auth_window_secs: 300,
            manifest_file: None,
            cvms: None,
            runner_stop_timeout_secs: 10,
        }
    }
}

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The management-service settings.
    #[error(transparent)]
    Cvms(#[from] SettingsError),
    /// A variable that does not parse.
    #[error("{name}={value:?}: {problem}")]
    Variable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        problem: &'static str,
    },
    /// The JSON configuration file.
    #[error("configuration {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// `AGENT_CONFIG_FILE`: a JSON [`Config`], read first; the variables
/// below override it.
pub const ENV_CONFIG_FILE: &str = "AGENT_CONFIG_FILE";

impl Config {
    /// The verifier's policy from these settings.
    pub fn auth_policy(&self) -> cocos_auth::Policy {
        cocos_auth::Policy {
            window: Duration::from_secs(self.auth_window_secs),
            legacy: self.legacy_auth,
            ..cocos_auth::Policy::default()
        }
    }

    /// Parses a JSON configuration; missing fields take their defaults.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The process environment; see [`from_lookup`](Self::from_lookup).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The configuration from `AGENT_CONFIG_FILE` (if set) with these
    /// variables over it, each optional (empty counts as unset):
    ///
    /// | variable | field |
    /// | --- | --- |
    /// | `AGENT_WORK_DIR` | `work_dir` |
    /// | `AGENT_GRPC_HOST` | `listen` (see [`Listen::parse`]) |
    /// | `AGENT_RUNNER_SOCKET` | `runner_socket` |
    /// | `LOG_FORWARDER_SOCKET` | `log_socket` |
    /// | `AGENT_MANIFEST_FILE` | `manifest_file` |
    /// | `AGENT_LEGACY_AUTH` | `legacy_auth` (`true`/`false`) |
    /// | `AGENT_AUTH_WINDOW_SECS` | `auth_window_secs` |
    /// | `AGENT_MAX_ALGORITHM_BYTES`, `AGENT_MAX_DATASET_BYTES`, `AGENT_MAX_REQUIREMENTS_BYTES`, `AGENT_MAX_EXTRACT_ENTRIES`, `AGENT_MAX_EXTRACT_BYTES` | `caps` |
    /// | `AGENT_CVM_GRPC_*`, `AGENT_CVM_ID` | `cvms` ([`CvmsSettings::from_lookup`]) |
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let mut c = match get(ENV_CONFIG_FILE) {
            Some(p) => {
                let path = PathBuf::from(p);
                let bytes = std::fs::read(&path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Self::from_json(&bytes, &path)?
            }
            None => Self::default(),
        };
        if let Some(v) = get("AGENT_WORK_DIR") {
            c.work_dir = v.into();
        }
        if let Some(v) = get("AGENT_GRPC_HOST") {
            c.listen = Listen::parse(&v);
        }
        if let Some(v) = get("AGENT_RUNNER_SOCKET") {
            c.runner_socket = v.into();
        }
        if let Some(v) = get("LOG_FORWARDER_SOCKET") {
            c.log_socket = v.into();
        }
        if let Some(v) = get("AGENT_MANIFEST_FILE") {
            c.manifest_file = Some(v.into());
        }
        if let Some(v) = get("AGENT_LEGACY_AUTH") {
            c.legacy_auth = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Variable {
                        name: "AGENT_LEGACY_AUTH",
                        value: v,
                        problem: "expected true or false",
                    });
                }
            };
        }
        let number = |name: &'static str| -> Result<Option<u64>, ConfigError> {
            get(name)
                .map(|v| {
                    v.parse().map_err(|_| ConfigError::Variable {
                        name,
                        value: v.clone(),
                        problem: "expected a whole number",
                    })
                })
                .transpose()
        };
        if let Some(n) = number("AGENT_AUTH_WINDOW_SECS")? {
            c.auth_window_secs = n;
        }
        if let Some(n) = number("AGENT_MAX_ALGORITHM_BYTES")? {
            c.caps.algorithm_bytes = n;
        }
        if let Some(n) = number("AGENT_MAX_DATASET_BYTES")? {
            c.caps.dataset_bytes = n;
        }
        if let Some(n) = number("AGENT_MAX_REQUIREMENTS_BYTES")? {
            c.caps.requirements_bytes = n;
        }
        if let Some(n) = number("AGENT_MAX_EXTRACT_ENTRIES")? {
            c.caps.extract_entries = n;
        }
        if let Some(n) = number("AGENT_MAX_EXTRACT_BYTES")? {
            c.caps.extract_bytes = n;
        }
        if let Some(s) = CvmsSettings::from_lookup(|k| get(k))? {
            c.cvms = Some(s);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_are_the_documented_paths() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.work_dir, Path::new("/cocos"));
        assert_eq!(c.listen, Listen::Unix("/run/cocos/agent.sock".into()));
        assert!(!c.legacy_auth);
        assert!(c.cvms.is_none());
    }

    #[test]
    fn agent_grpc_host_as_the_go_agent_reads_it() {
        assert_eq!(
            Listen::parse("0.0.0.0"),
            Listen::Unix(DEFAULT_AGENT_SOCKET.into())
        );
        assert_eq!(Listen::parse("./a.sock"), Listen::Unix("./a.sock".into()));
        assert_eq!(
            Listen::parse("127.0.0.1:7001"),
            Listen::Tcp("127.0.0.1:7001".into())
        );
    }

    #[test]
    fn variables_override_and_bad_ones_are_named() {
        let vars = [
            ("AGENT_WORK_DIR", "/tmp/w"),
            ("AGENT_LEGACY_AUTH", "true"),
            ("AGENT_MAX_DATASET_BYTES", "1024"),
            ("AGENT_CVM_GRPC_URL", "10.0.2.2:7001"),
            ("AGENT_CVM_ID", "vm"),
        ];
        let c = Config::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        assert_eq!(c.work_dir, Path::new("/tmp/w"));
        assert!(c.legacy_auth);
        assert_eq!(c.caps.dataset_bytes, 1024);
        assert_eq!(c.cvms.unwrap().cvm_id, "vm");
        let e = Config::from_lookup(|k| (k == "AGENT_MAX_DATASET_BYTES").then(|| "1k".into()))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "AGENT_MAX_DATASET_BYTES=\"1k\": expected a whole number"
        );
    }

    #[test]
    fn a_json_file_gives_any_subset() {
        let c = Config::from_json(
            br#"{"work_dir":"/w","caps":{"dataset_bytes":5},"listen":{"tcp":"127.0.0.1:1"}}"#,
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(c.work_dir, Path::new("/w"));
        assert_eq!(c.caps.dataset_bytes, 5);
        assert_eq!(c.caps.algorithm_bytes, Caps::default().algorithm_bytes);
        assert_eq!(c.listen, Listen::Tcp("127.0.0.1:1".into()));
        assert!(Config::from_json(br#"{"wrok_dir":"/w"}"#, Path::new("c.json")).is_err());
    }
}
