//! Helpers shared by the integration tests: the reference tools
//! (veritysetup, sev-snp-measure, mosaik's MRTD) and a runner, the binary
//! under test, and reproducible pseudo-random data.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A reference tool at `path`. Its absence is a failure, never a skip:
/// `install` says how to get it.
fn reference_tool(name: &str, path: PathBuf, install: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{name} not found at {}: the tests compare against it. {install} and run again.",
        path.display()
    );
    path
}

/// The reference `veritysetup` (Debian package cryptsetup-bin).
pub fn veritysetup() -> PathBuf {
    let path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join("veritysetup"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/veritysetup"));
    reference_tool(
        "veritysetup",
        path,
        "Install cryptsetup-bin (scripts/setup-host.sh does)",
    )
}

/// The PyPI `sev-snp-measure` 0.0.13 command. Installed by
/// `scripts/setup-python-refs.sh`; `$SEV_SNP_MEASURE` overrides the path.
pub fn sev_snp_measure() -> PathBuf {
    let path = std::env::var_os("SEV_SNP_MEASURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/cocos-python-refs/bin/sev-snp-measure"));
    reference_tool(
        "sev-snp-measure",
        path,
        "Run scripts/setup-python-refs.sh (or set SEV_SNP_MEASURE)",
    )
}

/// `mosaik-mrtd TDVF`: the TDX MRTD that mosaik 0.3.13 (a Rust crate)
/// computes for a TDVF image. Built by `scripts/setup-python-refs.sh`;
/// `$MOSAIK_MRTD` overrides the path.
pub fn mosaik_mrtd() -> PathBuf {
    let path = std::env::var_os("MOSAIK_MRTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/cocos-mrtd-ref/bin/mosaik-mrtd"));
    reference_tool(
        "mosaik-mrtd",
        path,
        "Run scripts/setup-python-refs.sh (or set MOSAIK_MRTD)",
    )
}

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not be started: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `veritysetup ARGS` in `dir` and returns its output, failing the test
/// if it does not succeed.
pub fn run_veritysetup(dir: &Path, args: &[String]) -> Output {
    run_ok(Command::new(veritysetup()).args(args).current_dir(dir))
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
