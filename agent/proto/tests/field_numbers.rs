//! Field numbers of the generated messages, as `protoc --decode_raw` (the
//! reference protobuf decoder, which knows no schema) reads our encoding.
//! The expected paths are those of agent-api.md §11.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::Write;
use std::process::{Command, Stdio};

use cocos_proto::agent;
use cocos_proto::cvms;
use cocos_proto::prost::Message;

/// `protoc --decode_raw` of `bytes`, flattened to `path: value` lines, e.g.
/// `5.7: "r"` for field 7 inside field 5.
fn decode_raw(bytes: &[u8]) -> Vec<String> {
    let mut child = Command::new("protoc")
        .arg("--decode_raw")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("protoc (Debian's protobuf-compiler) must be installed");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut path: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line == "}" {
            path.pop();
        } else if let Some(field) = line.strip_suffix(" {") {
            path.push(field.to_string());
        } else {
            let (field, value) = line.split_once(": ").unwrap();
            let mut full = path.clone();
            full.push(field.to_string());
            lines.push(format!("{}: {}", full.join("."), value));
        }
    }
    lines.sort();
    lines
}

fn sorted(expected: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn computation_run_req_fields_are_numbered_as_the_go_agent_with_requirements_hash_at_7() {
    let source = |t: &str| cvms::Source {
        r#type: format!("{t}type"),
        url: format!("{t}url"),
        kbs_resource_path: format!("{t}kbs"),
        encrypted: true,
    };
    let kbs = |t: &str| cvms::KbsConfig {
        url: format!("{t}kbsurl"),
        enabled: true,
    };
    let req = cvms::ComputationRunReq {
        id: "id".into(),
        name: "name".into(),
        description: "desc".into(),
        datasets: vec![cvms::Dataset {
            hash: b"dh".to_vec(),
            user_key: b"dk".to_vec(),
            filename: "df".into(),
            source: Some(source("d")),
            decompress: true,
            kbs: Some(kbs("d")),
        }],
        algorithm: Some(cvms::Algorithm {
            hash: b"ah".to_vec(),
            user_key: b"ak".to_vec(),
            source: Some(source("a")),
            algo_type: "python".into(),
            algo_args: vec!["x".into(), "y".into()],
            kbs: Some(kbs("a")),
            requirements_hash: b"rh".to_vec(),
        }),
        result_consumers: vec![cvms::ResultConsumer {
            user_key: b"ck".to_vec(),
        }],
        agent_config: Some(cvms::AgentConfig {
            port: "7002".into(),
            cert_file: "cert".into(),
            key_file: "key".into(),
            client_ca_file: "cca".into(),
            server_ca_file: "sca".into(),
            log_level: "info".into(),
            attested_tls: true,
        }),
    };
    let msg = cvms::ServerStreamMessage {
        message: Some(cvms::server_stream_message::Message::RunReq(req)),
    };
    // ServerStreamMessage.runReq is field 2; the manifest's fields below it.
    let expected = sorted(&[
        "2.1: \"id\"",
        "2.2: \"name\"",
        "2.3: \"desc\"",
        "2.4.1: \"dh\"",
        "2.4.2: \"dk\"",
        "2.4.3: \"df\"",
        "2.4.4.1: \"dtype\"",
        "2.4.4.2: \"durl\"",
        "2.4.4.3: \"dkbs\"",
        "2.4.4.4: 1",
        "2.4.5: 1",
        "2.4.6.1: \"dkbsurl\"",
        "2.4.6.2: 1",
        "2.5.1: \"ah\"",
        "2.5.2: \"ak\"",
        "2.5.3.1: \"atype\"",
        "2.5.3.2: \"aurl\"",
        "2.5.3.3: \"akbs\"",
        "2.5.3.4: 1",
        "2.5.4: \"python\"",
        "2.5.5: \"x\"",
        "2.5.5: \"y\"",
        "2.5.6.1: \"akbsurl\"",
        "2.5.6.2: 1",
        "2.5.7: \"rh\"",
        "2.6.1: \"ck\"",
        "2.7.1: \"7002\"",
        "2.7.2: \"cert\"",
        "2.7.3: \"key\"",
        "2.7.4: \"cca\"",
        "2.7.5: \"sca\"",
        "2.7.6: \"info\"",
        "2.7.7: 1",
    ]);
    assert_eq!(decode_raw(&msg.encode_to_vec()), expected);
}

#[test]
fn stream_messages_use_the_go_agent_oneof_numbers() {
    use cvms::client_stream_message::Message as C;
    use cvms::server_stream_message::Message as S;
    let ts = cocos_proto::prost_types::Timestamp {
        seconds: 5,
        nanos: 6,
    };
    let cases: Vec<(C, Vec<&str>)> = vec![
        (
            C::AgentLog(cvms::AgentLog {
                message: "m".into(),
                computation_id: "c".into(),
                level: "l".into(),
                timestamp: Some(ts),
            }),
            vec![
                "1.1: \"m\"",
                "1.2: \"c\"",
                "1.3: \"l\"",
                "1.4.1: 5",
                "1.4.2: 6",
            ],
        ),
        (
            C::AgentEvent(cvms::AgentEvent {
                event_type: "t".into(),
                timestamp: Some(ts),
                computation_id: "c".into(),
                details: b"d".to_vec(),
                originator: "o".into(),
                status: "s".into(),
            }),
            vec![
                "2.1: \"t\"",
                "2.2.1: 5",
                "2.2.2: 6",
                "2.3: \"c\"",
                "2.4: \"d\"",
                "2.5: \"o\"",
                "2.6: \"s\"",
            ],
        ),
        (
            C::RunRes(cvms::RunResponse {
                computation_id: "c".into(),
                error: "e".into(),
            }),
            vec!["3.1: \"c\"", "3.2: \"e\""],
        ),
        (
            C::StopComputationRes(cvms::StopComputationResponse {
                computation_id: "c".into(),
                message: "m".into(),
            }),
            vec!["4.1: \"c\"", "4.2: \"m\""],
        ),
        (
            C::AgentStateRes(cvms::AgentStateRes {
                id: "i".into(),
                state: "s".into(),
            }),
            vec!["5.1: \"i\"", "5.2: \"s\""],
        ),
        (
            C::VTpMattestationReport(cvms::AttestationResponse {
                file: b"f".to_vec(),
                cert_serial_number: "n".into(),
            }),
            vec!["6.1: \"f\"", "6.2: \"n\""],
        ),
        (
            C::AzureAttestationToken(cvms::AzureAttestationToken {
                file: b"f".to_vec(),
                cert_serial_number: "n".into(),
            }),
            vec!["7.1: \"f\"", "7.2: \"n\""],
        ),
    ];
    for (msg, expected) in cases {
        let msg = cvms::ClientStreamMessage { message: Some(msg) };
        assert_eq!(
            decode_raw(&msg.encode_to_vec()),
            sorted(&expected),
            "{msg:?}"
        );
    }
    let server: Vec<(S, Vec<&str>)> = vec![
        (
            S::RunReqChunks(cvms::RunReqChunks {
                data: b"d".to_vec(),
                id: "i".into(),
                is_last: true,
            }),
            vec!["1.1: \"d\"", "1.2: \"i\"", "1.3: 1"],
        ),
        (
            S::StopComputation(cvms::StopComputation {
                computation_id: "c".into(),
            }),
            vec!["3.1: \"c\""],
        ),
        (
            S::AgentStateReq(cvms::AgentStateReq { id: "i".into() }),
            vec!["4.1: \"i\""],
        ),
        (
            S::DisconnectReq(cvms::DisconnectReq { id: "i".into() }),
            vec!["5.1: \"i\""],
        ),
    ];
    for (msg, expected) in server {
        let msg = cvms::ServerStreamMessage { message: Some(msg) };
        assert_eq!(
            decode_raw(&msg.encode_to_vec()),
            sorted(&expected),
            "{msg:?}"
        );
    }
}

#[test]
fn agent_service_messages_use_the_go_agent_numbers() {
    let check =
        |bytes: Vec<u8>, expected: &[&str]| assert_eq!(decode_raw(&bytes), sorted(expected));
    check(
        agent::AlgoRequest {
            algorithm: b"a".to_vec(),
            requirements: b"r".to_vec(),
        }
        .encode_to_vec(),
        &["1: \"a\"", "2: \"r\""],
    );
    check(
        agent::DataRequest {
            dataset: b"d".to_vec(),
            filename: "f".into(),
        }
        .encode_to_vec(),
        &["1: \"d\"", "2: \"f\""],
    );
    check(
        agent::ResultResponse {
            file: b"f".to_vec(),
        }
        .encode_to_vec(),
        &["1: \"f\""],
    );
    check(
        agent::AttestationRequest {
            tee_nonce: b"t".to_vec(),
            vtpm_nonce: b"v".to_vec(),
            r#type: 3,
        }
        .encode_to_vec(),
        &["1: \"t\"", "2: \"v\"", "3: 3"],
    );
    check(
        agent::ImaMeasurementsResponse {
            file: b"f".to_vec(),
            pcr10: b"p".to_vec(),
        }
        .encode_to_vec(),
        &["1: \"f\"", "2: \"p\""],
    );
    check(
        agent::AttestationTokenRequest {
            token_nonce: b"n".to_vec(),
            r#type: 2,
        }
        .encode_to_vec(),
        &["1: \"n\"", "3: 2"],
    );
    check(
        agent::AttestationTokenResponse {
            file: b"f".to_vec(),
        }
        .encode_to_vec(),
        &["1: \"f\""],
    );
}
