//! `cocos-measure snp` on every row of `snp_ovmf_shared.jsonl` (digests of
//! sev-snp-measure 0.0.13): each `ok` row prints the recorded digest and
//! dumps VMSAs with the recorded SHA-384s; each `error` row exits non-zero
//! with a message of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod refs;

use std::path::Path;

use refs::{cocos_measure, input, rows, s};
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

#[test]
fn every_error_row_is_rejected_with_a_message() {
    let rows = rows("snp_ovmf_shared.jsonl");
    let mut checked = 0;
    for row in rows.iter().filter(|r| s(r, "status") == Some("error")) {
        let id = s(row, "id").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = cocos_measure()
            .args(our_args(row, None))
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{id}: accepted, printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "{id}: printed a digest on error");
        assert!(!stderr.contains("panicked"), "{id}: panicked: {stderr}");
        assert!(
            stderr.trim().len() > 20,
            "{id}: no clear message: {stderr:?}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} error rows found");
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
