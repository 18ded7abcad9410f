//! The runner's configuration.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Longest time limit honoured (ten years): larger values are clamped so
/// that deadlines stay representable.
pub const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 86_400;

/// `secs` as a [`Duration`], clamped to [`MAX_TIMEOUT_SECS`].
pub(crate) fn bounded_secs(secs: u64) -> Duration {
    Duration::from_secs(secs.min(MAX_TIMEOUT_SECS))
}

/// How the runner runs algorithms. Every field has a default (see
/// [`RunnerConfig::default`]), so an empty document deserialises to the
/// defaults:
///
/// ```
/// let config: cocos_runner::RunnerConfig = serde_json::from_str("{}").unwrap();
/// assert_eq!(config.run_user, "cocos-runner");
/// assert_eq!(config.run_timeout_secs, 86_400);
/// assert_eq!(config.docker_socket, std::path::PathBuf::from("/var/run/docker.sock"));
/// assert!(config.egress_proxy.is_none());
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// Wall-clock limit of one run, in seconds, covering every step (venv
    /// creation, `pip install`, the algorithm; image load and container for
    /// docker). Default 86 400 (24 h).
    pub run_timeout_secs: u64,
    /// The unprivileged user algorithms run as, looked up by name in the
    /// user database (/etc/passwd); its primary group is the run group.
    /// Used only when the runner runs as root; otherwise algorithms run as
    /// the runner's own user (logged at start). Default `cocos-runner`.
    pub run_user: String,
    /// The Python interpreter that creates each run's venv. Default
    /// `/usr/bin/python3`.
    pub python3: PathBuf,
    /// `PATH` in the algorithm's environment. Default
    /// `/usr/local/bin:/usr/bin:/bin`.
    pub path_env: String,
    /// Where each run's scratch directory (its `HOME` and python venv) is
    /// created; removed after the run. Default: the system temporary
    /// directory (`$TMPDIR` or `/tmp`).
    pub scratch_dir: Option<PathBuf>,
    /// The Docker Engine's Unix socket. Default `/var/run/docker.sock`.
    pub docker_socket: PathBuf,
    /// Run docker containers as the image's own user (often root) instead
    /// of the run user. Default false: containers run as the run user's
    /// uid:gid, like every other algorithm.
    pub docker_run_as_image_user: bool,
    /// The egress proxy, for example `http://127.0.0.1:3128`. When set, the
    /// algorithm's environment (and pip's) gets `HTTP_PROXY`, `HTTPS_PROXY`,
    /// `http_proxy`, `https_proxy` pointing at it and
    /// `NO_PROXY=localhost,127.0.0.1`, and docker containers get the default
    /// bridge network. When unset, containers run with `--network none`.
    /// Default: unset.
    pub egress_proxy: Option<String>,
    /// After each run, SIGKILL every remaining process of the run user
    /// (processes that left the algorithm's process group, e.g. by
    /// `setsid`). Only when the runner is root and so the run user is a
    /// different, dedicated user. Default true.
    pub sweep_user_processes: bool,
    /// Least interval between two "AlgorithmRun"/"Warning" events raised by
    /// the algorithm's stderr, in milliseconds; the pieces in between are
    /// counted, and the next event says how many were folded. Default 1000.
    pub stderr_event_interval_ms: u64,
    /// Mode of the gRPC Unix socket. Default `0o600`: only root (the agent)
    /// may connect; never the run user.
    pub socket_mode: u32,
    /// Limits of WebAssembly runs.
    pub wasm: WasmLimits,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            run_timeout_secs: 86_400,
            run_user: "cocos-runner".to_owned(),
            python3: PathBuf::from("/usr/bin/python3"),
            path_env: "/usr/local/bin:/usr/bin:/bin".to_owned(),
            scratch_dir: None,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            docker_run_as_image_user: false,
            egress_proxy: None,
            sweep_user_processes: true,
            stderr_event_interval_ms: 1000,
            socket_mode: 0o600,
            wasm: WasmLimits::default(),
        }
    }
}

impl RunnerConfig {
    /// The run timeout as a [`Duration`] (at most [`MAX_TIMEOUT_SECS`]).
    pub fn run_timeout(&self) -> Duration {
        bounded_secs(self.run_timeout_secs)
    }

    /// The proxy variables for a child's environment (empty when no egress
    /// proxy is configured).
    pub fn proxy_env(&self) -> Vec<(String, String)> {
        let Some(proxy) = &self.egress_proxy else {
            return Vec::new();
        };
        let mut env: Vec<(String, String)> =
            ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
                .into_iter()
                .map(|name| (name.to_owned(), proxy.clone()))
                .collect();
        for name in ["NO_PROXY", "no_proxy"] {
            env.push((name.to_owned(), "localhost,127.0.0.1".to_owned()));
        }
        env
    }
}

/// Limits of a WebAssembly run (wasmtime, WASI preview 1).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WasmLimits {
    /// Largest linear memory (and so, in practice, heap) a module may grow
    /// to, in bytes. Growing past it ends the run with "wasm memory limit
    /// exceeded". Default 2 GiB.
    pub max_memory_bytes: u64,
    /// Wall-clock limit of a wasm run, in seconds; `None` uses
    /// `run_timeout_secs`. Enforced by epoch interruption. Default `None`.
    pub max_time_secs: Option<u64>,
    /// Most bytes the module may write to stdout and stderr together.
    /// Default 16 MiB.
    pub max_output_bytes: u64,
    /// Largest total size of the files under the results directory, in
    /// bytes, checked every 100 ms while the module runs. Default 1 GiB.
    pub max_results_bytes: u64,
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 2 << 30,
            max_time_secs: None,
            max_output_bytes: 16 << 20,
            max_results_bytes: 1 << 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_document_keeps_the_other_defaults() {
        let config: RunnerConfig = serde_json::from_str(
            r#"{"run_timeout_secs": 5, "egress_proxy": "http://127.0.0.1:3128", "wasm": {"max_time_secs": 2}}"#,
        )
        .unwrap();
        assert_eq!(config.run_timeout_secs, 5);
        assert_eq!(config.wasm.max_time_secs, Some(2));
        assert_eq!(config.wasm.max_memory_bytes, 2 << 30);
        assert_eq!(config.run_user, "cocos-runner");
        assert_eq!(config.socket_mode, 0o600);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<RunnerConfig>(r#"{"run_timeout": 5}"#).is_err());
    }

    #[test]
    fn proxy_variables_only_with_a_proxy() {
        assert!(RunnerConfig::default().proxy_env().is_empty());
        let config = RunnerConfig {
            egress_proxy: Some("http://p:3128".into()),
            ..RunnerConfig::default()
        };
        let env = config.proxy_env();
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert!(
                env.contains(&(name.to_owned(), "http://p:3128".to_owned())),
                "{name}"
            );
        }
        assert!(env.contains(&("NO_PROXY".to_owned(), "localhost,127.0.0.1".to_owned())));
    }

    #[test]
    fn huge_timeouts_are_clamped() {
        let config = RunnerConfig {
            run_timeout_secs: u64::MAX,
            ..RunnerConfig::default()
        };
        assert_eq!(config.run_timeout(), Duration::from_secs(MAX_TIMEOUT_SECS));
    }
}
