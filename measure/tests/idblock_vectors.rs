//! `cocos-measure id-block` and the `idblock` library on
//! `id_block_shared.jsonl`: ID blocks, key digests and the signature-free
//! parts of ID auth byte for byte (sev-snp-measure's snp-create-id-block),
//! RFC 6979 signatures byte for byte (Python `cryptography` and `p384`),
//! sev-snp-measure's random-nonce signatures verified, and the ID block
//! directives igvmmeasure embedded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod refs;

use base64::Engine;
use cocos_measure::idblock::{EcdsaSignature, IdAuth, IdBlock, IdKey};
use cocos_measure::igvm::IgvmImage;
use common::cocos_measure;
use refs::{rows, s, vector_file};
use serde_json::Value;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn key(name: &str) -> IdKey {
    IdKey::from_pem(&std::fs::read_to_string(vector_file(name)).unwrap()).unwrap()
}

fn id_block_cli(row: &Value, format: &str) -> std::process::Output {
    cocos_measure()
        .arg("id-block")
        .arg("--measurement")
        .arg(s(row, "measurement_hex").unwrap())
        .arg("--id-key")
        .arg(vector_file(
            s(row, "id_key").unwrap_or("keys/id_key_test.pem"),
        ))
        .arg("--author-key")
        .arg(vector_file(
            s(row, "author_key").unwrap_or("keys/author_key_test.pem"),
        ))
        .arg("--format")
        .arg(format)
        .output()
        .unwrap()
}

fn part_a() -> Vec<Value> {
    rows("id_block_shared.jsonl")
        .into_iter()
        .filter(|r| s(r, "id").unwrap().starts_with("idblock-") && s(r, "status") == Some("ok"))
        .collect()
}

#[test]
fn qemu_output_equals_the_reference_with_rfc6979_signatures() {
    let rows = part_a();
    assert!(rows.len() >= 5);
    for row in &rows {
        let id = s(row, "id").unwrap();
        let e = &row["expected"];
        let rfc = &row["rfc6979_reference"];
        // The reference's stdout layout, with its random-nonce id-auth
        // replaced by the RFC 6979 one.
        let want = format!(
            "id-block={},id-auth={}\nid_key_hash: {}\nauthor_key: {}\n",
            s(e, "id_block_b64").unwrap(),
            s(rfc, "id_auth_with_rfc6979_signatures_b64").unwrap(),
            s(e, "id_key_digest_b64").unwrap(),
            s(e, "author_key_digest_b64").unwrap(),
        );
        let out = id_block_cli(row, "qemu");
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{id}");
    }
}

#[test]
fn library_parts_match_field_by_field() {
    for row in &part_a() {
        let id = s(row, "id").unwrap();
        let e = &row["expected"];
        let rfc = &row["rfc6979_reference"];
        let ld = hex::decode(s(row, "measurement_hex").unwrap()).unwrap();
        let block = IdBlock::new(
            cocos_measure::snp::LaunchDigest(ld.try_into().unwrap()),
            [0; 16],
            [0; 16],
            0,
            0x30000,
        );
        assert_eq!(
            hex::encode(block.as_bytes()),
            s(e, "id_block_hex").unwrap(),
            "{id}"
        );
        let auth = IdAuth::sign(
            &block,
            &key("keys/id_key_test.pem"),
            Some(&key("keys/author_key_test.pem")),
        );
        assert_eq!(
            hex::encode(auth.id_key.digest()),
            s(e, "id_key_digest_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(auth.author_key.digest()),
            s(e, "author_key_digest_hex").unwrap(),
            "{id}"
        );
        let mut without = auth.clone();
        without.id_block_sig = EcdsaSignature::new_zeroed();
        without.id_key_sig = EcdsaSignature::new_zeroed();
        assert_eq!(
            hex::encode(without.as_bytes()),
            s(e, "id_auth_without_signatures_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(&auth.id_block_sig.r[..]),
            s(rfc, "id_block_sig_r_le_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(&auth.id_block_sig.s[..]),
            s(rfc, "id_block_sig_s_le_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(&auth.id_key_sig.r[..]),
            s(rfc, "id_key_sig_r_le_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(&auth.id_key_sig.s[..]),
            s(rfc, "id_key_sig_s_le_hex").unwrap(),
            "{id}"
        );
        auth.verify(&block).unwrap();
    }
}

/// sev-snp-measure signs with random nonces: our verifier must accept its
/// signatures, and reject them once a byte of the ID block changes.
#[test]
fn reference_random_nonce_signatures_verify() {
    for row in &part_a() {
        let id = s(row, "id").unwrap();
        let sample = &row["sample_run"];
        let auth = IdAuth::read_from_bytes(&b64(s(sample, "id_auth_b64").unwrap())).unwrap();
        let mut block =
            IdBlock::read_from_bytes(&b64(s(&row["expected"], "id_block_b64").unwrap())).unwrap();
        auth.verify(&block).unwrap_or_else(|e| panic!("{id}: {e}"));
        block.ld[0] ^= 1;
        assert!(
            auth.verify(&block).is_err(),
            "{id}: a changed ID block still verifies"
        );
    }
}

/// Why snp-create-id-block refuses a row (a fragment of the error the row
/// records) and the same reason in our message.
const REFUSALS: &[(&str, &str)] = &[(
    "Buffer size too small (32 instead of at least 48 bytes)",
    "--measurement: 32 bytes, but a SEV-SNP launch digest (SHA-384) has 48",
)];

/// Each error row is refused (exit status 2, nothing on stdout) for the
/// reason the reference gave; a refusal for another reason fails.
#[test]
fn error_rows_are_refused_for_the_reference_reason() {
    let errors: Vec<Value> = rows("id_block_shared.jsonl")
        .into_iter()
        .filter(|r| s(r, "status") == Some("error"))
        .collect();
    assert!(!errors.is_empty());
    for row in &errors {
        let id = s(row, "id").unwrap();
        let reference = s(row, "error").unwrap();
        let (_, why) = REFUSALS
            .iter()
            .find(|(theirs, _)| reference.contains(theirs))
            .unwrap_or_else(|| panic!("{id}: no reason listed for {reference:?}"));
        let out = id_block_cli(row, "qemu");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id}: not refused: {stderr}");
        assert!(out.stdout.is_empty(), "{id}: printed an ID block on error");
        assert!(
            stderr.contains(why),
            "{id}: refused, but not because {why:?}: {stderr}"
        );
    }
    // The reference's other error class is a missing key (it needs both);
    // ours needs the ID key and takes the author key as optional.
    let out = cocos_measure()
        .args(["id-block", "--measurement", &"00".repeat(48)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("the following required arguments were not provided:\n  --id-key"),
        "refused, but not for the missing ID key: {stderr}"
    );
}

#[test]
fn json_and_bin_formats_carry_the_same_structures() {
    let row = &part_a()[0];
    let json: Value = serde_json::from_slice(&id_block_cli(row, "json").stdout).unwrap();
    let bin = id_block_cli(row, "bin").stdout;
    assert_eq!(bin.len(), 96 + 4096);
    assert_eq!(b64(json["id_block"].as_str().unwrap()), &bin[..96]);
    assert_eq!(b64(json["id_auth"].as_str().unwrap()), &bin[96..]);
    // Both are the reference's bytes, not just each other's.
    assert_eq!(bin[..96], b64(s(&row["expected"], "id_block_b64").unwrap()));
    assert_eq!(
        bin[96..],
        b64(s(
            &row["rfc6979_reference"],
            "id_auth_with_rfc6979_signatures_b64"
        )
        .unwrap())
    );
    assert_eq!(json["id_key_digest"], row["expected"]["id_key_digest_hex"]);
}

/// Part B: the ID block directives igvmmeasure embedded.
#[test]
fn igvmmeasure_directives_decode_and_verify() {
    let rows: Vec<Value> = rows("id_block_shared.jsonl")
        .into_iter()
        .filter(|r| s(r, "id").unwrap().starts_with("igvmmeasure-sign-"))
        .collect();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let id = s(row, "id").unwrap();
        let file = s(row, "source").unwrap().split_whitespace().next().unwrap();
        let image = IgvmImage::parse(&std::fs::read(vector_file(file)).unwrap()).unwrap();
        let block = image.snp_id_block().unwrap().expect("ID block");
        let d = &row["igvm_snp_id_block_directive"];
        assert_eq!(hex::encode(block.ld), s(d, "ld_hex").unwrap(), "{id}");
        assert_eq!(
            hex::encode(block.id_key_signature.0),
            s(d, "id_key_sig_r_le_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(block.id_key_signature.1),
            s(d, "id_key_sig_s_le_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(block.author_key_signature.0),
            s(d, "author_key_sig_r_le_hex").unwrap(),
            "{id}"
        );
        assert_eq!(
            hex::encode(block.author_key_signature.1),
            s(d, "author_key_sig_s_le_hex").unwrap(),
            "{id}"
        );
        let policy = image.snp_guest_policy().unwrap().unwrap();
        assert_eq!(format!("{policy:#x}"), s(row, "policy").unwrap());
        assert_eq!(
            hex::encode(block.id_block(policy).as_bytes()),
            s(row, "id_block_hex").unwrap(),
            "{id}"
        );
        block.verify(policy).unwrap_or_else(|e| panic!("{id}: {e}"));
        // Our RFC 6979 signature of the same ID block is igvmmeasure's.
        let ours = IdAuth::sign(
            &block.id_block(policy),
            &key("keys/id_key_test.pem"),
            Some(&key("keys/author_key_test.pem")),
        );
        assert_eq!(ours.id_block_sig.r, block.id_key_signature.0, "{id}");
        assert_eq!(ours.id_block_sig.s, block.id_key_signature.1, "{id}");
        assert_eq!(ours.id_key_sig.r, block.author_key_signature.0, "{id}");
        assert_eq!(ours.id_key_sig.s, block.author_key_signature.1, "{id}");
    }
}
