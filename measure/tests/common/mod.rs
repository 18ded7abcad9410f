//! Helpers shared by the integration tests: the reference tool, the binary
//! under test, and reproducible pseudo-random data.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The reference `veritysetup`. Its absence is a failure, never a skip:
/// `scripts/setup-host.sh` installs it (Debian package cryptsetup-bin).
pub fn veritysetup() -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join("veritysetup");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "veritysetup not found: the tests compare against it. Install cryptsetup-bin \
         (scripts/setup-host.sh does) and run again."
    );
}

/// Runs `veritysetup ARGS` in `dir` and returns its output, failing the test
/// if it does not succeed.
pub fn run_veritysetup(dir: &Path, args: &[String]) -> Output {
    let out = Command::new(veritysetup())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("veritysetup could not be started");
    assert!(
        out.status.success(),
        "veritysetup {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `cocos-measure` binary built for this test run.
pub fn cocos_measure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cocos-measure"))
}

/// The value after `label` on a line of veritysetup-style output.
pub fn field(stdout: &[u8], label: &str) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix(label).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {label:?} in output"))
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
