//! Shared fixtures of the runner's integration tests.
//!
//! The tests need root (to switch to the `nobody` user) and fail loudly
//! without it. Within one test binary they run one at a time: runs as
//! `nobody` end by killing every process of `nobody`.

#![allow(dead_code)]

use cocos_proto::runner::RunRequest;
use cocos_runner::{MemorySink, Runner, RunnerConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One test at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The user the tests run algorithms as.
pub const RUN_USER: &str = "nobody";

/// Fails the test unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the runner tests must run as root (they switch algorithms to the `nobody` user)"
    );
}

/// uid and gid of `nobody`, from the reference tool `id`.
pub fn nobody_ids() -> (String, String) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, RUN_USER])
            .output()
            .expect("id(1) must be installed");
        assert!(out.status.success(), "id {flag} {RUN_USER} failed");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    (id("-u"), id("-g"))
}

/// A computation's directory, like /cocos: `datasets/`, `results/` and the
/// algorithm, under a temporary directory the run user can enter.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub sink: Arc<MemorySink>,
}

impl Fixture {
    pub fn new() -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("cocos-runner-test-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("datasets")).unwrap();
        Self {
            dir,
            sink: Arc::new(MemorySink::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn datasets(&self) -> PathBuf {
        self.path().join("datasets")
    }

    pub fn results(&self) -> PathBuf {
        self.path().join("results")
    }

    /// The configuration of the tests: `nobody`, a scratch directory inside
    /// the fixture, a 60 s run limit.
    pub fn config(&self) -> RunnerConfig {
        RunnerConfig {
            run_user: RUN_USER.to_owned(),
            run_timeout_secs: 60,
            scratch_dir: Some(self.path().to_path_buf()),
            ..RunnerConfig::default()
        }
    }

    pub fn runner(&self, config: RunnerConfig) -> Runner {
        Runner::new(config, self.sink.clone()).unwrap()
    }

    /// Writes the algorithm file `name` (mode 0600, as the agent might
    /// leave it).
    pub fn write_algorithm(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A shell-script algorithm.
    pub fn script(&self, body: &str) -> PathBuf {
        self.write_algorithm("algo", format!("#!/bin/sh\n{body}\n").as_bytes())
    }

    /// A copy of a system program as the algorithm.
    pub fn program(&self, program: &str) -> PathBuf {
        let data = std::fs::read(program).unwrap_or_else(|e| panic!("{program}: {e}"));
        self.write_algorithm("algo", &data)
    }

    pub fn dataset(&self, name: &str, content: &[u8]) {
        std::fs::write(self.datasets().join(name), content).unwrap();
    }

    pub fn request(
        &self,
        id: &str,
        algo_type: &str,
        algorithm: &Path,
        args: &[&str],
    ) -> RunRequest {
        RunRequest {
            computation_id: id.to_owned(),
            algo_type: algo_type.to_owned(),
            algorithm_path: algorithm.display().to_string(),
            requirements_path: String::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            datasets_dir: self.datasets().display().to_string(),
            results_dir: self.results().display().to_string(),
        }
    }

    pub fn stdout(&self, id: &str) -> String {
        String::from_utf8(self.sink.stdout(id)).unwrap()
    }

    pub fn stderr(&self, id: &str) -> String {
        String::from_utf8(self.sink.stderr(id)).unwrap()
    }

    /// Polls until `path` exists (the algorithm has got that far).
    pub async fn wait_for_file(&self, path: &Path) {
        for _ in 0..600 {
            if path.exists()
                && std::fs::metadata(path)
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{} never appeared", path.display());
    }
}

/// Live (not zombie) processes in process group `pgid`, from /proc.
pub fn live_in_group(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces; split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2].parse::<i32>().ok() == Some(pgid) && fields[0] != "Z" {
            found.push(pid);
        }
    }
    found
}

/// Whether process `pid` is alive (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
            .unwrap_or(false),
        Err(_) => false,
    }
}
