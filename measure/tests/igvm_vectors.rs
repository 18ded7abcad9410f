//! `cocos-measure igvm` on every row of `igvm_shared.jsonl` (digests of
//! igvmmeasure and of igvm 0.5.0's `generate_snp_measurement`).
//!
//! Where the two agree, the default and both compatibility flags print that
//! digest. Where they disagree, the default follows the SNP firmware ABI
//! (docs/decisions.md), `--igvmmeasure` prints igvmmeasure's digest and
//! `--igvm-crate` the crate's; where a tool fails, so does the flag that
//! mimics it, for the same reason (a refusal for another reason fails the
//! test). Malformed files are errors, never panics. `--igvm-crate` runs the
//! very function whose digests the rows record, so its test checks only
//! that the flag is wired to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod refs;

use std::process::Output;

use common::cocos_measure;
use refs::{rows, s, vector_file};
use serde_json::Value;

fn igvm(args: &[&str]) -> Output {
    cocos_measure().arg("igvm").args(args).output().unwrap()
}

fn path(row: &Value) -> String {
    vector_file(s(row, "file").unwrap()).display().to_string()
}

/// What a run must do: print this digest, or refuse the file with a message
/// containing this fragment (the reason, in our words).
#[derive(Clone, Copy, Debug)]
enum Expect<'a> {
    Digest(&'a str),
    Refused(&'a str),
}

/// Why the reference tools refuse a file (a fragment of the error the row
/// records) and the same reason in our message. A row whose recorded error
/// is not listed fails the test: a new refusal needs its reason here.
const REFUSALS: &[(&str, &str)] = &[
    // igvm 0.4.0 and 0.5.0's parsers: a VP context for a platform the file
    // does not declare (21).
    (
        "InvalidVpContextPlatformType",
        "invalid vp context platform type",
    ),
    // igvm 0.4.0's parser: VMSA bytes past 0x670 not zero (13).
    ("InvalidVmsa", "has non-zero bytes past offset 0x670"),
    // igvmmeasure's assertion on a 2 MiB page with 4 KiB of data (19).
    (
        "assertion failed: data.is_empty() || data.len() == page_len",
        "flagged as a 2 MiB page but carries 4096 bytes",
    ),
];

/// Our message fragment for the reason a reference tool recorded.
fn reason(reference_error: &str) -> &'static str {
    REFUSALS
        .iter()
        .find(|(theirs, _)| reference_error.contains(theirs))
        .map(|(_, ours)| *ours)
        .unwrap_or_else(|| panic!("no reason listed for the reference error {reference_error:?}"))
}

/// The outcome igvmmeasure recorded for `digest_key` (its default run or
/// `--native-zero`): the digest, or a refusal for the reason of its error.
fn igvmmeasure_expected<'a>(row: &'a Value, digest_key: &str) -> Expect<'a> {
    match s(row, digest_key) {
        Some(hex) => Expect::Digest(hex),
        None => Expect::Refused(reason(s(row, "igvmmeasure_error").unwrap())),
    }
}

/// The outcome the igvm crate recorded.
fn crate_expected(row: &Value) -> Expect<'_> {
    match s(row, "igvm_crate_hex") {
        Some(hex) => Expect::Digest(hex),
        None => Expect::Refused(reason(s(row, "igvm_crate_error").unwrap())),
    }
}

/// Asserts that `out` printed the expected digest, or refused the file
/// (exit status 2, nothing on stdout) for the expected reason.
fn check(out: &Output, expected: Expect<'_>, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
    match expected {
        Expect::Digest(hex) => {
            assert!(out.status.success(), "{what}: failed: {stderr}");
            assert_eq!(stdout, hex, "{what}");
        }
        Expect::Refused(why) => {
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what}: not refused (stdout {stdout:?}, stderr {stderr:?})"
            );
            assert!(stdout.is_empty(), "{what}: printed a digest on error");
            assert!(
                stderr.contains(why),
                "{what}: refused, but not because {why:?}: {stderr}"
            );
        }
    }
}

/// The default's expected outcome: both tools' where they agree (a digest,
/// or a refusal for the reason both give); the firmware ABI's choice where
/// they do not.
fn firmware_expected(row: &Value) -> Expect<'_> {
    let file = s(row, "file").unwrap();
    let outcome = s(row, "outcome").unwrap();
    match outcome {
        "same_digest" => Expect::Digest(s(row, "igvmmeasure_hex").unwrap()),
        "both_error" => {
            let why = reason(s(row, "igvm_crate_error").unwrap());
            assert_eq!(
                why,
                reason(s(row, "igvmmeasure_error").unwrap()),
                "{file}: the tools refuse it for different reasons"
            );
            Expect::Refused(why)
        }
        // The SEV-ES VMSA (compatibility mask 0x2) is not part of an SNP
        // launch: the crate's digest.
        _ if file.contains("12_vmsa_sev_es_mask") => crate_expected(row),
        // The firmware measures the whole 4 KiB VMSA page: the crate's.
        _ if file.contains("13_vmsa_nonzero_tail") => crate_expected(row),
        // A 2 MiB zero page is 512 pages of 4 KiB: igvmmeasure's.
        _ if file.contains("14_2mb_zero_page") => igvmmeasure_expected(row, "igvmmeasure_hex"),
        // Malformed: refused, for the reason igvmmeasure trips over.
        _ if file.contains("19_2mb_flag_with_4k_data") => {
            Expect::Refused(reason(s(row, "igvmmeasure_error").unwrap()))
        }
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
            firmware_expected(row),
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
            igvmmeasure_expected(row, "igvmmeasure_hex"),
            &format!("{p} --igvmmeasure"),
        );
        check(
            &igvm(&[&p, "--igvmmeasure", "--native-zero"]),
            igvmmeasure_expected(row, "igvmmeasure_native_zero_hex"),
            &format!("{p} --igvmmeasure --native-zero"),
        );
    }
}

/// Plumbing only. `--igvm-crate` calls igvm 0.5.0's
/// `generate_snp_measurement`, the function that produced the rows'
/// `igvm_crate_hex` values, so this shows that the flag hands it the file's
/// directives and SNP mask and prints what it returns (or refuses the file
/// for the crate's reason); it cannot show that the crate's digest is
/// right. The digests themselves are checked against igvmmeasure, another
/// implementation, by the tests of the default and of `--igvmmeasure`.
#[test]
fn igvm_crate_flag_reaches_the_igvm_crate() {
    for row in &rows("igvm_shared.jsonl") {
        let p = path(row);
        check(
            &igvm(&[&p, "--igvm-crate"]),
            crate_expected(row),
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
            igvmmeasure_expected(row, "igvmmeasure_native_zero_hex"),
            &format!("{p} --native-zero"),
        );
    }
}

/// `--check-id-block` on every row: signed files pass, file 15's ID block
/// mismatches, every other file is measured (or refused) as by default and
/// then reported as having no ID block to check.
#[test]
fn embedded_id_blocks_are_checked() {
    let rows = rows("igvm_shared.jsonl");
    let (mut signed, mut mismatched, mut without, mut refused) = (0, 0, 0, 0);
    for row in &rows {
        let p = path(row);
        let file = s(row, "file").unwrap();
        let out = igvm(&[&p, "--check-id-block"]);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{file}: panicked: {stderr}");
        if file.contains(".signed.") {
            assert!(out.status.success(), "{file}: {stderr}");
            assert_eq!(stdout, s(row, "igvmmeasure_hex").unwrap(), "{file}");
            assert!(stderr.contains("matches"), "{file}: {stderr}");
            signed += 1;
        } else if file.contains("15_idblock_mismatch") {
            // The digest is printed, then the mismatch reported (exit 1).
            assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
            assert_eq!(stdout, s(row, "igvmmeasure_hex").unwrap(), "{file}");
            assert!(stderr.contains(&"11".repeat(48)), "{file}: {stderr}");
            mismatched += 1;
        } else {
            match firmware_expected(row) {
                // Measured as by default, then: no ID block is an error,
                // not a silent pass.
                Expect::Digest(hex) => {
                    assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
                    assert_eq!(stdout, hex, "{file}");
                    assert!(stderr.contains("no SNP ID block"), "{file}: {stderr}");
                    without += 1;
                }
                refusal @ Expect::Refused(_) => {
                    check(&out, refusal, &format!("{file} --check-id-block"));
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(signed + mismatched + without + refused, rows.len());
    assert_eq!((signed, mismatched), (3, 1));
    // 19 and 21 are refused; 12, 13 and 14 among those without an ID block.
    assert_eq!(refused, 2);
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
    check(
        &out,
        Expect::Refused("the file has no tdx platform header"),
        "tdx on an SNP-only file",
    );
}
