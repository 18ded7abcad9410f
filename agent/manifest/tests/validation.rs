//! Manifest validation from the wire form: each broken rule is reported
//! naming its field, and every broken rule is reported at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cocos_auth::{KeyType, PrivateKey, Role};
use cocos_manifest::{AlgoType, Manifest, ManifestError};
use cocos_proto::cvms;
use cocos_proto::prost::Message;

fn key() -> Vec<u8> {
    PrivateKey::generate(KeyType::Ed25519)
        .unwrap()
        .public()
        .to_spki_der()
        .unwrap()
}

fn good() -> cvms::ComputationRunReq {
    cvms::ComputationRunReq {
        id: "comp-1".into(),
        datasets: vec![
            cvms::Dataset {
                hash: vec![1; 32],
                user_key: key(),
                filename: "iris.csv".into(),
                ..Default::default()
            },
            cvms::Dataset {
                hash: vec![2; 32],
                user_key: key(),
                filename: "wine.csv".into(),
                ..Default::default()
            },
        ],
        algorithm: Some(cvms::Algorithm {
            hash: vec![3; 32],
            user_key: key(),
            ..Default::default()
        }),
        result_consumers: vec![cvms::ResultConsumer { user_key: key() }],
        ..Default::default()
    }
}

fn errors(req: &cvms::ComputationRunReq) -> Vec<String> {
    match Manifest::from_wire(req) {
        Err(ManifestError::Invalid(errs)) => errs.iter().map(ToString::to_string).collect(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn a_good_manifest_validates_with_defaults_and_roles() {
    let m = Manifest::from_wire_bytes(&good().encode_to_vec()).unwrap();
    assert_eq!(m.algorithm.algo_type, AlgoType::Bin);
    assert_eq!(m.algorithm.requirements_hash, None);
    let roles: Vec<Role> = m.declared_keys().into_iter().map(|k| k.role).collect();
    assert_eq!(
        roles,
        vec![
            Role::AlgorithmProvider,
            Role::DataProvider {
                dataset: "iris.csv".into()
            },
            Role::DataProvider {
                dataset: "wine.csv".into()
            },
            Role::Consumer { index: 0 },
        ]
    );
    // The JSON form of a validated manifest reads back to the same one.
    let json = m.to_computation().to_json();
    let again = Manifest::from_json(&json).unwrap();
    assert_eq!(again.to_computation(), m.to_computation());
}

#[test]
fn a_31_byte_hash_names_the_dataset() {
    let mut req = good();
    req.datasets[1].hash = vec![0; 31];
    assert_eq!(
        errors(&req),
        ["datasets[1].hash: 31 bytes, expected 32 (SHA3-256)"]
    );
}

#[test]
fn a_missing_algorithm_is_named() {
    let mut req = good();
    req.algorithm = None;
    assert_eq!(
        errors(&req),
        ["algorithm: missing (a manifest must declare the algorithm)"]
    );
}

#[test]
fn a_bad_key_names_its_field_and_reason() {
    let mut req = good();
    req.result_consumers[0].user_key = b"garbage".to_vec();
    let errs = errors(&req);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("result_consumers[0].user_key: not a DER SubjectPublicKeyInfo"),
        "{errs:?}"
    );
    let mut req = good();
    req.algorithm.as_mut().unwrap().user_key.clear();
    assert_eq!(
        errors(&req),
        ["algorithm.user_key: missing (DER SubjectPublicKeyInfo)"]
    );
}

#[test]
fn duplicate_filenames_name_both_datasets() {
    let mut req = good();
    req.datasets[1].filename = "iris.csv".into();
    assert_eq!(
        errors(&req),
        ["datasets[1].filename: \"iris.csv\" is also datasets[0]'s"]
    );
}

#[test]
fn filenames_must_be_plain_names() {
    for (name, problem) in [
        ("../x", "contains `/`"),
        ("a/b", "contains `/`"),
        ("..", "`.` or `..`"),
        (".", "`.` or `..`"),
        ("", "empty"),
        ("a\0b", "contains NUL"),
    ] {
        let mut req = good();
        req.datasets[0].filename = name.into();
        let errs = errors(&req);
        assert_eq!(errs.len(), 1, "{name:?}: {errs:?}");
        assert!(errs[0].starts_with("datasets[0].filename: "), "{errs:?}");
        assert!(errs[0].contains(problem), "{name:?}: {errs:?}");
    }
}

#[test]
fn algo_type_and_requirements_hash_are_checked() {
    let mut req = good();
    req.algorithm.as_mut().unwrap().algo_type = "binary".into();
    req.algorithm.as_mut().unwrap().requirements_hash = vec![0; 5];
    assert_eq!(
        errors(&req),
        [
            "algorithm.requirements_hash: 5 bytes, expected 32 (SHA3-256)",
            "algorithm.algo_type: \"binary\" is not one of bin, python, wasm, docker",
        ]
    );
    let mut req = good();
    req.algorithm.as_mut().unwrap().algo_type = "python".into();
    req.algorithm.as_mut().unwrap().requirements_hash = vec![7; 32];
    let m = Manifest::from_wire(&req).unwrap();
    assert_eq!(m.algorithm.algo_type, AlgoType::Python);
    assert_eq!(m.algorithm.requirements_hash, Some([7; 32]));
}

#[test]
fn every_error_is_reported_at_once() {
    let mut req = good();
    req.id.clear();
    req.datasets[0].hash = vec![];
    req.datasets[1].filename = "../x".into();
    req.algorithm = None;
    let errs = errors(&req);
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert_eq!(errs[0], "id: missing");
    assert_eq!(errs[1], "datasets[0].hash: 0 bytes, expected 32 (SHA3-256)");
}

#[test]
fn bytes_that_are_not_a_run_request_are_refused() {
    assert!(matches!(
        Manifest::from_wire_bytes(b"\xff\xff\xff"),
        Err(ManifestError::Wire(_))
    ));
}
