//! The Go reference program (tests/go_reference.go), built once per test
//! binary with Debian's golang-go.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of the built reference program.
pub fn go_reference() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let out = tmp.join("go_reference");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go_reference.go");
        let status = go_command()
            .args(["build", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("go (Debian's golang-go) must be installed: scripts/setup-host.sh");
        assert!(status.success(), "go build of the reference failed");
        out
    })
}

/// `go` with its caches under the target directory and no network.
pub fn go_command() -> Command {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut c = Command::new("go");
    c.env("GOCACHE", tmp.join("gocache"))
        .env("GOPATH", tmp.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0");
    c
}

/// The reference program run with `args`, time zone UTC; its stdout.
pub fn run(args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(go_reference())
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Go's minor version (19 for go1.19.8).
pub fn go_minor() -> u32 {
    let out = go_command().arg("version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = text.split_whitespace().nth(2).unwrap_or("go1.0");
    v.trim_start_matches("go1.")
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}
