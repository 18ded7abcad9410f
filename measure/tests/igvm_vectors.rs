//! `cocos-measure igvm` on every row of `igvm_shared.jsonl` (digests of
//! igvmmeasure and of igvm 0.5.0's `generate_snp_measurement`).
//!
//! Where the two agree, the default and both compatibility flags print that
//! digest. Where they disagree, the default follows the SNP firmware ABI
//! (docs/decisions.md), `--igvmmeasure` prints igvmmeasure's digest and
//! `--igvm-crate` the crate's; where a tool fails, so does the flag that
//! mimics it. Malformed files are errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod refs;

use std::process::Output;

use refs::{cocos_measure, rows, s, vector_file};
use serde_json::Value;

fn igvm(args: &[&str]) -> Output {
    cocos_measure().arg("igvm").args(args).output().unwrap()
}

fn path(row: &Value) -> String {
    vector_file(s(row, "file").unwrap()).display().to_string()
}

/// Asserts that `out` printed `expected`, or failed cleanly when `expected`
/// is `None`.
fn check(out: &Output, expected: Option<&str>, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    match expected {
        Some(hex) => {
            assert!(out.status.success(), "{what}: failed: {stderr}");
            assert_eq!(stdout, hex, "{what}");
        }
        None => {
            assert!(!out.status.success(), "{what}: accepted, printed {stdout}");
            assert!(stdout.is_empty(), "{what}: printed a digest on error");
            assert!(
                stderr.trim().len() > 20,
                "{what}: no clear message: {stderr:?}"
            );
        }
    }
}

/// The default's expected digest: both tools where they agree; the firmware
/// ABI's choice where they do not.
fn firmware_expected(row: &Value) -> Option<String> {
    let file = s(row, "file").unwrap();
    let outcome = s(row, "outcome").unwrap();
    match outcome {
        "same_digest" => Some(s(row, "igvmmeasure_hex").unwrap().to_owned()),
        "both_error" => None,
        // The SEV-ES VMSA (compatibility mask 0x2) is not part of an SNP
        // launch: the crate's digest.
        _ if file.contains("12_vmsa_sev_es_mask") => s(row, "igvm_crate_hex").map(str::to_owned),
        // The firmware measures the whole 4 KiB VMSA page: the crate's.
        _ if file.contains("13_vmsa_nonzero_tail") => s(row, "igvm_crate_hex").map(str::to_owned),
        // A 2 MiB zero page is 512 pages of 4 KiB: igvmmeasure's.
        _ if file.contains("14_2mb_zero_page") => s(row, "igvmmeasure_hex").map(str::to_owned),
        // Malformed: a clear error.
        _ if file.contains("19_2mb_flag_with_4k_data") => None,
        _ => panic!("{file}: disagreeing row without a documented choice"),
    }
}

#[test]
fn default_digest_follows_the_firmware_abi_on_every_row() {
    let rows = rows("igvm_shared.jsonl");
    for row in &rows {
        let p = path(row);
        check(
            &igvm(&[&p]),
            firmware_expected(row).as_deref(),
            &format!("{p} (default)"),
        );
    }
    assert!(
        rows.iter()
            .filter(|r| s(r, "outcome") == Some("same_digest"))
            .count()
            >= 10
    );
}

#[test]
fn igvmmeasure_flag_reproduces_igvmmeasure() {
    for row in &rows("igvm_shared.jsonl") {
        let p = path(row);
        check(
            &igvm(&[&p, "--igvmmeasure"]),
            s(row, "igvmmeasure_hex"),
            &format!("{p} --igvmmeasure"),
        );
        check(
            &igvm(&[&p, "--igvmmeasure", "--native-zero"]),
            s(row, "igvmmeasure_native_zero_hex"),
            &format!("{p} --igvmmeasure --native-zero"),
        );
    }
}

#[test]
fn igvm_crate_flag_reproduces_the_igvm_crate() {
    for row in &rows("igvm_shared.jsonl") {
        let p = path(row);
        check(
            &igvm(&[&p, "--igvm-crate"]),
            s(row, "igvm_crate_hex"),
            &format!("{p} --igvm-crate"),
        );
    }
}

#[test]
fn native_zero_matches_igvmmeasure_where_the_tools_agree() {
    for row in rows("igvm_shared.jsonl")
        .iter()
        .filter(|r| s(r, "outcome") == Some("same_digest"))
    {
        let p = path(row);
        check(
            &igvm(&[&p, "--native-zero"]),
            s(row, "igvmmeasure_native_zero_hex"),
            &format!("{p} --native-zero"),
        );
    }
}

#[test]
fn embedded_id_blocks_are_checked() {
    for row in &rows("igvm_shared.jsonl") {
        let p = path(row);
        let file = s(row, "file").unwrap();
        let out = igvm(&[&p, "--check-id-block"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if file.contains(".signed.") {
            assert!(out.status.success(), "{file}: {stderr}");
            assert!(stderr.contains("matches"), "{file}: {stderr}");
        } else if file.contains("15_idblock_mismatch") {
            // The digest is printed, then the mismatch reported (exit 1).
            assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                s(row, "igvmmeasure_hex").unwrap()
            );
            assert!(stderr.contains(&"11".repeat(48)), "{file}: {stderr}");
        } else if s(row, "outcome") == Some("same_digest") {
            // No ID block: an error, not a silent pass.
            assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
            assert!(stderr.contains("no SNP ID block"), "{file}: {stderr}");
        }
    }
}

#[test]
fn signing_reproduces_igvmmeasure_sign_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows("igvm_shared.jsonl");
    let mut signed = 0;
    for row in rows
        .iter()
        .filter(|r| r.get("signed_from").and_then(Value::as_str).is_some())
    {
        let source = vector_file(&format!("igvm/{}", s(row, "signed_from").unwrap()));
        let out_path = dir.path().join("signed.igvm");
        let out = cocos_measure()
            .args(["igvm", "sign"])
            .arg(&source)
            .arg("--id-key")
            .arg(vector_file("keys/id_key_test.pem"))
            .arg("--author-key")
            .arg(vector_file("keys/author_key_test.pem"))
            .arg("--out")
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = std::fs::read(&out_path).unwrap();
        let theirs = std::fs::read(path(row)).unwrap();
        assert!(
            ours == theirs,
            "{}: our signed file differs from igvmmeasure's",
            s(row, "file").unwrap()
        );
        signed += 1;
    }
    assert_eq!(signed, 3);
}

#[test]
fn tdx_is_refused_for_an_snp_only_file() {
    let rows = rows("igvm_shared.jsonl");
    let p = path(&rows[0]);
    let out = igvm(&[&p, "--platform", "tdx"]);
    check(&out, None, "tdx on an SNP-only file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tdx platform"));
}
