//! `cocos-measure snp` on every row of `snp_ovmf_shared.jsonl` (digests of
//! sev-snp-measure 0.0.13): each `ok` row prints the recorded digest and
//! dumps VMSAs with the recorded SHA-384s; each `error` row is refused for
//! the reason the reference gave, in a message of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod refs;

use std::path::Path;

use common::cocos_measure;
use refs::{input, rows, s};
use serde_json::Value;
use sha2::{Digest, Sha384};

/// The row's argv with logical names replaced by paths; `--dump-vmsa` (a
/// flag in sev-snp-measure) gets `dump_dir` as its directory.
fn our_args(row: &Value, dump_dir: Option<&Path>) -> Vec<String> {
    let argv = row["argv"].as_array().expect("argv");
    let mut out = vec!["snp".to_owned()];
    for a in &argv[1..] {
        let a = a.as_str().unwrap();
        match a.split_once('=') {
            Some((k, v))
                if ["--ovmf", "--kernel", "--initrd", "--svsm", "--vars-file"].contains(&k) =>
            {
                out.push(format!("{k}={}", input(v).display()));
            }
            _ => out.push(a.to_owned()),
        }
    }
    if let Some(dir) = dump_dir {
        out.push(format!("--dump-vmsa={}", dir.display()));
    }
    out
}

#[test]
fn every_ok_row_prints_the_reference_digest() {
    let rows = rows("snp_ovmf_shared.jsonl");
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in rows.iter().filter(|r| s(r, "status") == Some("ok")) {
        let id = s(row, "id").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mode = s(row, "mode").unwrap_or("");
        let dump = (mode != "sev" && mode != "snp:ovmf-hash").then_some(dir.path());
        let out = cocos_measure().args(our_args(row, dump)).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let expected = s(row, "expected_hex").unwrap();
        if !out.status.success() || stdout != expected {
            failures.push(format!(
                "{id}: got {stdout:?} (status {}), expected {expected}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        // The VMSA pages themselves (BSP and APs), where recorded.
        let inter = &row["intermediate"];
        for (file, key) in [
            ("vmsa0.bin", "vmsa_bsp_sha384"),
            ("vmsa1.bin", "vmsa_ap_sha384"),
        ] {
            if let Some(want) = inter.get(key).and_then(Value::as_str) {
                let page = std::fs::read(dir.path().join(file))
                    .unwrap_or_else(|e| panic!("{id}: {file} not dumped: {e}"));
                assert_eq!(page.len(), 4096, "{id}: {file}");
                let got = hex::encode(Sha384::digest(&page));
                if got != want {
                    failures.push(format!("{id}: {file} has SHA-384 {got}, expected {want}"));
                }
            }
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 60, "only {checked} ok rows found");
}

/// Why sev-snp-measure refuses a row (a fragment of the stderr the row
/// records) and the same reason in our message. A row whose recorded error
/// is not listed fails the test: a new refusal needs its reason here.
const REFUSALS: &[(&str, &str)] = &[
    (
        "OVMF metadata doesn't include SNP_KERNEL_HASHES section",
        "this OVMF has no SNP_KERNEL_HASHES section",
    ),
    (
        "OVMF doesn't support kernel/initrd/cmdline measurement",
        "this OVMF has no kernel-hashes table",
    ),
    ("missing --vcpus N", "--vcpus N is required"),
    (
        "missing --vcpu-type or --vcpu-sig or --vcpu-family",
        "needs the vCPU signature",
    ),
    (
        "--kernel required when using --append",
        "--append needs --kernel",
    ),
    (
        "argument --vcpu-type: invalid choice: 'EPYC-Foo'",
        "invalid value 'EPYC-Foo' for '--vcpu-type",
    ),
    (
        "snp:svsm mode requires --vars-size or --vars-file",
        "--mode snp:svsm needs --vars-size SIZE or --vars-file PATH",
    ),
    (
        "SVSM mode is only implemented for Qemu",
        "--mode snp:svsm is modelled for QEMU only",
    ),
    (
        "SNP OVMF hash only works with SNP",
        "--snp-ovmf-hash applies only to --mode snp",
    ),
    (
        "non-hexadecimal number found in fromhex()",
        "--snp-ovmf-hash: expected 96 hex digits (a SHA-384 digest): not a hexadecimal string",
    ),
    // A 32-byte hash makes the PAGE_INFO too short for its assertion.
    (
        "assert len(page_info) == page_info_len",
        "--snp-ovmf-hash: expected 96 hex digits (a SHA-384 digest): 32 bytes",
    ),
    (
        "--dump-vmsa is not availibe in the selected mode",
        "--dump-vmsa: --mode sev measures no VMSA",
    ),
    (
        "the following arguments are required: --mode",
        "the following required arguments were not provided:\n  --mode",
    ),
];

/// Each error row is refused as sev-snp-measure refuses it: exit status 2
/// (could not run), nothing on stdout, and a message giving the reason the
/// reference gave, so a refusal for another reason fails.
#[test]
fn every_error_row_is_refused_for_the_reference_reason() {
    let rows = rows("snp_ovmf_shared.jsonl");
    let mut used = vec![0; REFUSALS.len()];
    for row in rows.iter().filter(|r| s(r, "status") == Some("error")) {
        let id = s(row, "id").unwrap();
        let reference = s(row, "stderr").unwrap();
        let (class, (_, why)) = REFUSALS
            .iter()
            .enumerate()
            .find(|(_, (theirs, _))| reference.contains(theirs))
            .unwrap_or_else(|| panic!("{id}: no reason listed for {reference:?}"));
        used[class] += 1;
        let dir = tempfile::tempdir().unwrap();
        let out = cocos_measure()
            .args(our_args(row, None))
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{id}: not refused: stdout {:?}, stderr {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "{id}: printed a digest on error");
        assert!(!stderr.contains("panicked"), "{id}: panicked: {stderr}");
        assert!(
            stderr.contains(why),
            "{id}: refused, but not because {why:?}: {stderr}"
        );
    }
    assert!(
        used.iter().all(|&n| n > 0),
        "reasons no row needs: {used:?}"
    );
    assert!(used.iter().sum::<usize>() >= 10, "only {used:?} error rows");
}

/// The reference's behaviours worth copying (vectors README, section 1),
/// each checked as a pair of rows that must agree.
#[test]
fn documented_equalities_hold() {
    let rows = rows("snp_ovmf_shared.jsonl");
    let hex = |id: &str| {
        let row = rows
            .iter()
            .find(|r| s(r, "id") == Some(id))
            .unwrap_or_else(|| panic!("no row {id}"));
        s(row, "expected_hex").unwrap().to_owned()
    };
    let ours = |id: &str| {
        let row = rows.iter().find(|r| s(r, "id") == Some(id)).unwrap();
        let out = cocos_measure().args(our_args(row, None)).output().unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // --append '' is the same as no --append.
    assert_eq!(
        hex("snp-qemu-amdsev-empty-append-equals-none"),
        hex("snp-qemu-amdsev-deb_kernel_initrd-EPYC-Milan-1vcpu")
    );
    assert_eq!(
        ours("snp-qemu-amdsev-empty-append-equals-none"),
        hex("snp-qemu-amdsev-deb_kernel_initrd-EPYC-Milan-1vcpu")
    );
    // --vars-file contributes only its size.
    assert_eq!(
        ours("svsm-qemu-svsmovmf-EPYC-Milan-2vcpu-varsfile4m"),
        hex("svsm-qemu-svsmovmf-EPYC-Milan-2vcpu-vars540672")
    );
}

#[test]
fn base64_and_json_outputs_carry_the_same_digest() {
    let rows = rows("snp_ovmf_shared.jsonl");
    let row = rows
        .iter()
        .find(|r| s(r, "id") == Some("snp-qemu-amdsev-EPYC-v4-4vcpu-deb_full"))
        .unwrap();
    let expected = hex::decode(s(row, "expected_hex").unwrap()).unwrap();
    let mut args = our_args(row, None);
    args.push("--output-format=base64".into());
    let out = cocos_measure().args(&args).output().unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&expected);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), b64);
    args.pop();
    args.push("--output-format=json".into());
    let out = cocos_measure().args(&args).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hex"], s(row, "expected_hex").unwrap());
    assert_eq!(v["base64"], b64);
}
