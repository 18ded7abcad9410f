//! Keys and signatures against OpenSSL, the reference: keys OpenSSL writes
//! (every PEM and DER form the CLI accepts) are read and give OpenSSL's
//! public key; our signatures verify with `openssl`, and OpenSSL's verify
//! with ours.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use cocos_auth::{PrivateKey, PublicKey};

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ok(args: &[&str], dir: &Path) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success()
}

struct Case {
    name: &'static str,
    genpkey: &'static [&'static str],
    /// `openssl dgst` digest of our canonical signatures; None for Ed25519.
    digest: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "rsa",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        digest: Some("-sha256"),
    },
    Case {
        name: "p256",
        genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        digest: Some("-sha256"),
    },
    Case {
        name: "p384",
        genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        digest: Some("-sha384"),
    },
    Case {
        name: "ed25519",
        genpkey: &["-algorithm", "ED25519"],
        digest: None,
    },
];

/// Every form of the key OpenSSL writes that the CLI must read.
fn key_forms(case: &Case, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut args = vec!["genpkey"];
    args.extend_from_slice(case.genpkey);
    args.extend_from_slice(&["-out", "key.pem"]);
    openssl(&args, dir);
    let mut forms = vec![
        (
            "PKCS#8 PEM".to_string(),
            std::fs::read(dir.join("key.pem")).unwrap(),
        ),
        (
            "PKCS#8 DER".to_string(),
            openssl(&["pkey", "-in", "key.pem", "-outform", "DER"], dir),
        ),
    ];
    match case.name {
        "rsa" => {
            let pkcs1_pem = openssl(&["rsa", "-in", "key.pem", "-traditional"], dir);
            let go_style = String::from_utf8(pkcs1_pem.clone())
                .unwrap()
                .replace("RSA PRIVATE KEY", "PRIVATE KEY");
            forms.push(("PKCS#1 PEM".into(), pkcs1_pem));
            // The Go CLI's `keys -k rsa`: PKCS#1 under a PRIVATE KEY label.
            forms.push((
                "PKCS#1 under PRIVATE KEY (Go CLI)".into(),
                go_style.into_bytes(),
            ));
            forms.push((
                "PKCS#1 DER".into(),
                openssl(
                    &["rsa", "-in", "key.pem", "-traditional", "-outform", "DER"],
                    dir,
                ),
            ));
        }
        "p256" | "p384" => {
            forms.push((
                "SEC1 PEM".into(),
                openssl(&["ec", "-in", "key.pem", "-outform", "PEM"], dir),
            ));
            forms.push((
                "SEC1 DER".into(),
                openssl(&["ec", "-in", "key.pem", "-outform", "DER"], dir),
            ));
            // As `openssl ecparam -genkey` writes it: EC PARAMETERS first.
            let params = openssl(&["ec", "-in", "key.pem", "-param_out"], dir);
            let mut both = params;
            both.extend(openssl(&["ec", "-in", "key.pem"], dir));
            forms.push(("EC PARAMETERS then SEC1 PEM".into(), both));
        }
        _ => {}
    }
    forms
}

#[test]
fn openssl_keys_read_in_every_form_and_give_openssls_public_key() {
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let forms = key_forms(case, dir.path());
        let spki = openssl(
            &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"],
            dir.path(),
        );
        let pub_pem = openssl(&["pkey", "-in", "key.pem", "-pubout"], dir.path());
        for (form, bytes) in forms {
            let key = PrivateKey::from_pem_or_der(&bytes)
                .unwrap_or_else(|e| panic!("{} {form}: {e}", case.name));
            assert_eq!(
                key.public().to_spki_der().unwrap(),
                spki,
                "{} {form}",
                case.name
            );
        }
        let from_der = PublicKey::from_spki_der(&spki).unwrap();
        let from_pem = PublicKey::from_pem_or_der(&pub_pem).unwrap();
        assert_eq!(from_der, from_pem, "{}", case.name);
        // Our PEM is OpenSSL's byte for byte (64-column base64, LF).
        assert_eq!(
            from_der.to_pem().unwrap().as_bytes(),
            pub_pem,
            "{}",
            case.name
        );
    }
}

#[test]
fn our_signatures_verify_with_openssl_and_openssls_with_ours() {
    let message = b"COCOSREQ\x01 a canonical request";
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        key_forms(case, d);
        openssl(&["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"], d);
        std::fs::write(d.join("msg"), message).unwrap();
        let key = PrivateKey::from_pem_or_der(&std::fs::read(d.join("key.pem")).unwrap()).unwrap();
        let public = key.public();

        std::fs::write(d.join("ours.sig"), key.sign(message)).unwrap();
        let verify_ours: Vec<&str> = match case.digest {
            Some(dg) => vec![
                "dgst",
                dg,
                "-verify",
                "pub.pem",
                "-signature",
                "ours.sig",
                "msg",
            ],
            None => vec![
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg",
                "-sigfile", "ours.sig",
            ],
        };
        assert!(
            ok(&verify_ours, d),
            "{}: openssl rejects our signature",
            case.name
        );

        let sign_theirs: Vec<&str> = match case.digest {
            Some(dg) => vec!["dgst", dg, "-sign", "key.pem", "-out", "theirs.sig", "msg"],
            None => vec![
                "pkeyutl",
                "-sign",
                "-inkey",
                "key.pem",
                "-rawin",
                "-in",
                "msg",
                "-out",
                "theirs.sig",
            ],
        };
        openssl(&sign_theirs, d);
        let theirs = std::fs::read(d.join("theirs.sig")).unwrap();
        assert!(
            public.verify(message, &theirs),
            "{}: we reject openssl's",
            case.name
        );
        // A flipped message byte must fail.
        let mut other = message.to_vec();
        other[0] ^= 1;
        assert!(
            !public.verify(&other, &theirs),
            "{}: verifies a changed message",
            case.name
        );
    }
}

#[test]
fn legacy_role_signatures_as_the_go_cli_makes_them_verify() {
    // The Go CLI signs SHA-256 of the role string with every ECDSA curve,
    // PKCS#1 v1.5 SHA-256 with RSA and the raw string with Ed25519.
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        key_forms(case, d);
        std::fs::write(d.join("role"), b"data-provider").unwrap();
        let args: Vec<&str> = match case.name {
            "ed25519" => vec![
                "pkeyutl", "-sign", "-inkey", "key.pem", "-rawin", "-in", "role", "-out", "sig",
            ],
            _ => vec!["dgst", "-sha256", "-sign", "key.pem", "-out", "sig", "role"],
        };
        openssl(&args, d);
        let sig = std::fs::read(d.join("sig")).unwrap();
        let key = PrivateKey::from_pem_or_der(&std::fs::read(d.join("key.pem")).unwrap()).unwrap();
        assert!(
            key.public().verify_legacy(b"data-provider", &sig),
            "{}",
            case.name
        );
        assert!(
            !key.public().verify_legacy(b"consumer", &sig),
            "{}",
            case.name
        );
    }
}

#[test]
fn unsupported_and_malformed_public_keys_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // secp256k1: a well-formed ECDSA key on a curve we do not accept.
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
            "-out",
            "k.pem",
        ],
        d,
    );
    let spki = openssl(&["pkey", "-in", "k.pem", "-pubout", "-outform", "DER"], d);
    let err = PublicKey::from_spki_der(&spki).unwrap_err().to_string();
    assert!(
        err.contains("unsupported key algorithm ECDSA on curve 1.3.132.0.10"),
        "{err}"
    );
    // X25519: an algorithm we do not accept.
    openssl(&["genpkey", "-algorithm", "X25519", "-out", "x.pem"], d);
    let spki = openssl(&["pkey", "-in", "x.pem", "-pubout", "-outform", "DER"], d);
    let err = PublicKey::from_spki_der(&spki).unwrap_err().to_string();
    assert!(
        err.contains("unsupported key algorithm 1.3.101.110"),
        "{err}"
    );
    let err = PublicKey::from_spki_der(b"\x30\x03\x02\x01\x00")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("not a DER SubjectPublicKeyInfo"), "{err}");
}
