//! The offline commands end to end, against reference tools: Python's
//! hashlib for SHA3-256, OpenSSL for the keys written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn cli(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocos-cli"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn checksum_of_a_file_is_pythons_sha3_256() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"some algorithm bytes\n").unwrap();
    let py = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys;print(hashlib.sha3_256(open(sys.argv[1],'rb').read()).hexdigest())",
        ])
        .arg(dir.path().join("f"))
        .output()
        .unwrap();
    let ours = cli(&["checksum", "f"], dir.path());
    assert!(ours.status.success());
    assert_eq!(stdout(&ours), stdout(&py));
    let b64 = cli(&["checksum", "--base64", "f"], dir.path());
    let py_b64 = Command::new("python3")
        .args(["-c", "import base64,hashlib,sys;print(base64.b64encode(hashlib.sha3_256(open(sys.argv[1],'rb').read()).digest()).decode())"])
        .arg(dir.path().join("f"))
        .output()
        .unwrap();
    assert_eq!(stdout(&b64), stdout(&py_b64));
}

#[test]
fn generated_keys_are_what_openssl_reads() {
    for kind in ["ed25519", "ecdsa"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(
            cli(&["keys", "generate", "--type", kind], d)
                .status
                .success()
        );
        let derived = Command::new("openssl")
            .args(["pkey", "-in", "private.pem", "-pubout"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(derived.status.success(), "{kind}");
        assert_eq!(
            derived.stdout,
            std::fs::read(d.join("public.pem")).unwrap(),
            "{kind}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("private.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second run does not overwrite.
        let again = cli(&["keys", "generate", "--type", kind], d);
        assert_eq!(again.status.code(), Some(2));
    }
}

#[test]
fn manifest_new_then_check_and_a_broken_manifest_names_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(cli(&["keys", "generate"], d).status.success());
    std::fs::write(d.join("algo"), b"#!/bin/sh\n").unwrap();
    std::fs::create_dir(d.join("ds")).unwrap();
    std::fs::write(d.join("ds/x.csv"), b"1,2\n").unwrap();
    let new = cli(
        &[
            "manifest",
            "new",
            "--id",
            "c1",
            "--algorithm",
            "algo",
            "public.pem",
            "--dataset",
            "ds",
            "public.pem",
            "--consumer",
            "public.pem",
            "-o",
            "m.json",
        ],
        d,
    );
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    let check = cli(&["manifest", "check", "m.json"], d);
    assert_eq!(check.status.code(), Some(0));
    // The file is written as Go marshals it: its own SHA3 is its checksum.
    let sum = stdout(&cli(&["checksum", "--manifest", "m.json"], d));
    let file_sum = stdout(&cli(&["checksum", "m.json"], d));
    assert_eq!(sum, file_sum);
    assert!(stdout(&check).contains(sum.trim()));

    std::fs::write(
        d.join("bad.json"),
        br#"{"id":"c","datasets":[{"hash":[1,2],"filename":"../x"}]}"#,
    )
    .unwrap();
    let bad = cli(&["manifest", "check", "bad.json"], d);
    assert_eq!(bad.status.code(), Some(1));
    let text = stdout(&bad);
    assert!(
        text.contains("datasets[0].hash: 2 bytes, expected 32 (SHA3-256)"),
        "{text}"
    );
    assert!(text.contains("datasets[0].filename: \"../x\""), "{text}");
    assert!(text.contains("algorithm: missing"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(cli(&["checksum"], dir.path()).status.code(), Some(2));
    assert_eq!(
        cli(&["checksum", "missing-file"], dir.path()).status.code(),
        Some(2)
    );
}
