//! The agent's checks of signed requests: replay, freshness, keys bound to
//! roles, legacy signatures, and the documented byte encoding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cocos_auth::*;

const NOW_MS: u64 = 1_750_000_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(NOW_MS)
}

struct Parties {
    algo: PrivateKey,
    iris: PrivateKey,
    wine: PrivateKey,
    consumer: PrivateKey,
    stranger: PrivateKey,
}

fn parties() -> Parties {
    let k = || PrivateKey::generate(KeyType::Ed25519).unwrap();
    Parties {
        algo: PrivateKey::generate(KeyType::Ecdsa).unwrap(),
        iris: k(),
        wine: k(),
        consumer: k(),
        stranger: k(),
    }
}

fn verifier(p: &Parties, legacy: bool) -> Verifier {
    let declared = |role, key: &PrivateKey| DeclaredKey {
        role,
        key: key.public(),
    };
    Verifier::new(
        "comp-1",
        vec![
            declared(Role::AlgorithmProvider, &p.algo),
            declared(
                Role::DataProvider {
                    dataset: "iris.csv".into(),
                },
                &p.iris,
            ),
            declared(
                Role::DataProvider {
                    dataset: "wine.csv".into(),
                },
                &p.wine,
            ),
            declared(Role::Consumer { index: 0 }, &p.consumer),
        ],
        Policy {
            legacy,
            ..Policy::default()
        },
    )
}

fn request(rpc: Rpc, resource: &str, nonce: u8, at_ms: u64) -> CanonicalRequest {
    CanonicalRequest {
        rpc,
        computation_id: "comp-1".into(),
        resource: resource.into(),
        payload_sha3: (rpc != Rpc::Result).then_some([9; 32]),
        requirements_sha3: None,
        nonce: [nonce; 16],
        timestamp_ms: at_ms,
    }
}

fn signed(req: &CanonicalRequest, key: &PrivateKey) -> AuthMetadata {
    AuthMetadata {
        cocos_auth: vec![auth_metadata_value(req, key)],
        signature: vec![],
    }
}

#[test]
fn the_same_signed_request_twice_is_refused_the_second_time() {
    let p = parties();
    let v = verifier(&p, false);
    let md = signed(&request(Rpc::Data, "iris.csv", 1, NOW_MS), &p.iris);
    let first = v.verify(Rpc::Data, &md, now()).unwrap();
    assert_eq!(
        first,
        Authorization::Signed {
            request: request(Rpc::Data, "iris.csv", 1, NOW_MS),
            signer: Role::DataProvider {
                dataset: "iris.csv".into()
            },
        }
    );
    let second = v.verify(Rpc::Data, &md, now()).unwrap_err();
    assert_eq!(second, AuthError::Replayed);
    assert_eq!(second.to_string(), "replayed nonce");
    // A fresh nonce from the same provider is fine.
    let md = signed(&request(Rpc::Data, "iris.csv", 2, NOW_MS), &p.iris);
    v.verify(Rpc::Data, &md, now()).unwrap();
}

#[test]
fn timestamps_outside_five_minutes_either_way_are_stale() {
    let p = parties();
    let v = verifier(&p, false);
    for (nonce, at) in [(1, NOW_MS - 300_001), (2, NOW_MS + 300_001)] {
        let md = signed(&request(Rpc::Algo, "", nonce, at), &p.algo);
        let err = v.verify(Rpc::Algo, &md, now()).unwrap_err();
        assert!(matches!(err, AuthError::Stale { .. }), "{err}");
        assert!(err.to_string().starts_with("stale timestamp ("), "{err}");
    }
    for (nonce, at) in [(3, NOW_MS - 300_000), (4, NOW_MS + 300_000)] {
        let md = signed(&request(Rpc::Algo, "", nonce, at), &p.algo);
        v.verify(Rpc::Algo, &md, now()).unwrap();
    }
}

#[test]
fn a_dataset_signed_with_another_datasets_key_is_refused_naming_both() {
    let p = parties();
    let v = verifier(&p, false);
    let md = signed(&request(Rpc::Data, "iris.csv", 1, NOW_MS), &p.wine);
    let err = v.verify(Rpc::Data, &md, now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "signature by a key not declared for dataset \"iris.csv\" (it is the key of dataset \"wine.csv\")"
    );
}

#[test]
fn an_undeclared_key_is_refused() {
    let p = parties();
    let v = verifier(&p, false);
    let md = signed(&request(Rpc::Result, "", 1, NOW_MS), &p.stranger);
    let err = v.verify(Rpc::Result, &md, now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "signature by an undeclared key (expected the key of a result consumer)"
    );
    // The algorithm provider is declared, but not as a consumer.
    let md = signed(&request(Rpc::Result, "", 2, NOW_MS), &p.algo);
    let err = v.verify(Rpc::Result, &md, now()).unwrap_err();
    assert!(matches!(err, AuthError::OtherRole { .. }), "{err}");
    // A refused request does not spend its nonce: signed properly, it passes.
    let md = signed(&request(Rpc::Result, "", 1, NOW_MS), &p.consumer);
    let auth = v.verify(Rpc::Result, &md, now()).unwrap();
    assert_eq!(auth.consumer(), Some(0));
}

#[test]
fn a_request_is_bound_to_its_rpc_computation_payload_and_dataset() {
    let p = parties();
    let v = verifier(&p, false);
    let md = signed(&request(Rpc::Algo, "", 1, NOW_MS), &p.algo);
    assert!(matches!(
        v.verify(Rpc::Data, &md, now()),
        Err(AuthError::WrongRpc {
            signed: Rpc::Algo,
            called: Rpc::Data
        })
    ));
    let mut other = request(Rpc::Algo, "", 2, NOW_MS);
    other.computation_id = "comp-2".into();
    assert!(matches!(
        v.verify(Rpc::Algo, &signed(&other, &p.algo), now()),
        Err(AuthError::WrongComputation { .. })
    ));
    let auth = v
        .verify(
            Rpc::Data,
            &signed(&request(Rpc::Data, "iris.csv", 3, NOW_MS), &p.iris),
            now(),
        )
        .unwrap();
    auth.check_payload(&[9; 32]).unwrap();
    assert!(matches!(
        auth.check_payload(&[8; 32]),
        Err(AuthError::PayloadMismatch { .. })
    ));
    auth.check_dataset("iris.csv").unwrap();
    assert!(auth.check_dataset("wine.csv").is_err());
    let err = v
        .verify(
            Rpc::Data,
            &signed(&request(Rpc::Data, "cars.csv", 4, NOW_MS), &p.iris),
            now(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dataset \"cars.csv\" is not declared in the manifest"
    );
}

#[test]
fn a_tampered_request_or_signature_fails() {
    let p = parties();
    let v = verifier(&p, false);
    let value = auth_metadata_value(&request(Rpc::Algo, "", 1, NOW_MS), &p.algo);
    let (mut bytes, sig) = parse_auth_metadata_value(&value).unwrap();
    // Change the payload hash's last byte (the byte before the
    // requirements flag): the signature no longer matches.
    let at = bytes.len() - 2;
    bytes[at] ^= 1;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let md = AuthMetadata {
        cocos_auth: vec![format!("{}.{}", b64.encode(&bytes), b64.encode(&sig))],
        signature: vec![],
    };
    assert!(matches!(
        v.verify(Rpc::Algo, &md, now()),
        Err(AuthError::UndeclaredKey { .. })
    ));
    let md = AuthMetadata {
        cocos_auth: vec!["not base64".into()],
        signature: vec![],
    };
    assert_eq!(v.verify(Rpc::Algo, &md, now()), Err(AuthError::Malformed));
    assert_eq!(
        v.verify(Rpc::Algo, &AuthMetadata::default(), now()),
        Err(AuthError::Missing)
    );
}

#[test]
fn legacy_role_signatures_only_when_enabled_and_still_bound_to_the_dataset() {
    use base64::Engine as _;
    let p = parties();
    let legacy = AuthMetadata {
        cocos_auth: vec![],
        signature: vec![
            base64::engine::general_purpose::STANDARD.encode(p.wine.sign(b"data-provider")),
        ],
    };
    let off = verifier(&p, false);
    assert_eq!(
        off.verify(Rpc::Data, &legacy, now()),
        Err(AuthError::LegacyDisabled)
    );
    let on = verifier(&p, true);
    let auth = on.verify(Rpc::Data, &legacy, now()).unwrap();
    auth.check_dataset("wine.csv").unwrap();
    assert!(auth.check_dataset("iris.csv").is_err());
    // Legacy signatures are replayable by design; the same one passes again.
    on.verify(Rpc::Data, &legacy, now()).unwrap();
    // A data-provider signature is not a consumer's.
    assert!(on.verify(Rpc::Result, &legacy, now()).is_err());
}

#[test]
fn the_replay_cache_is_bounded_and_forgets_only_expired_nonces() {
    let p = parties();
    let v = Verifier::new(
        "comp-1",
        vec![DeclaredKey {
            role: Role::AlgorithmProvider,
            key: p.algo.public(),
        }],
        Policy {
            replay_capacity: 2,
            ..Policy::default()
        },
    );
    let at = |n: u8, t: u64| signed(&request(Rpc::Algo, "", n, t), &p.algo);
    v.verify(Rpc::Algo, &at(1, NOW_MS - 200_000), now())
        .unwrap();
    v.verify(Rpc::Algo, &at(2, NOW_MS), now()).unwrap();
    assert_eq!(
        v.verify(Rpc::Algo, &at(3, NOW_MS), now()),
        Err(AuthError::ReplayCacheFull)
    );
    // 200 s later nonce 1 is out of the window and its room is free again;
    // nonce 2 is still remembered.
    let later = now() + Duration::from_secs(200);
    v.verify(Rpc::Algo, &at(3, NOW_MS + 200_000), later)
        .unwrap();
    assert_eq!(
        v.verify(Rpc::Algo, &at(2, NOW_MS), later),
        Err(AuthError::Replayed)
    );
}

#[test]
fn canonical_request_bytes_follow_the_documented_table() {
    let req = CanonicalRequest {
        rpc: Rpc::Data,
        computation_id: "c1".into(),
        resource: "a.csv".into(),
        payload_sha3: Some([0xab; 32]),
        requirements_sha3: None,
        nonce: [0x11; 16],
        timestamp_ms: 0x0102_0304_0506_0708,
    };
    // Written from the table in cocos_auth::request, not by the encoder.
    let mut expected = Vec::new();
    expected.extend_from_slice(b"COCOSREQ");
    expected.push(1); // version
    expected.push(2); // Data
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    expected.extend_from_slice(&[0x11; 16]);
    expected.extend_from_slice(&[0, 2]);
    expected.extend_from_slice(b"c1");
    expected.extend_from_slice(&[0, 5]);
    expected.extend_from_slice(b"a.csv");
    expected.push(1);
    expected.extend_from_slice(&[0xab; 32]);
    expected.push(0);
    assert_eq!(req.encode(), expected);
    assert_eq!(CanonicalRequest::decode(&expected).unwrap(), req);

    let mut trailing = expected.clone();
    trailing.push(0);
    assert_eq!(
        CanonicalRequest::decode(&trailing),
        Err(RequestError::Trailing(1))
    );
    let mut bad_flag = expected.clone();
    let last = bad_flag.len() - 1;
    bad_flag[last] = 2;
    assert_eq!(
        CanonicalRequest::decode(&bad_flag),
        Err(RequestError::Flag("requirements"))
    );
    // Data without a filename breaks the RPC's shape rule.
    let mut no_name = req.clone();
    no_name.resource.clear();
    assert!(matches!(
        CanonicalRequest::decode(&no_name.encode()),
        Err(RequestError::Shape { rpc: Rpc::Data, .. })
    ));
    for cut in 0..expected.len() {
        assert!(
            CanonicalRequest::decode(&expected[..cut]).is_err(),
            "prefix {cut}"
        );
    }
}
