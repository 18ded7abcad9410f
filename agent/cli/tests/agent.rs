//! `algo`, `data` and `result` against an in-test `agent.AgentService`:
//! the bytes, metadata and signatures that arrive (signatures checked by
//! cocos-auth's `Verifier` with keys openssl made, payload hashes by
//! Python's hashlib), TLS with an openssl PKI, the result file, and the
//! status lines and exit statuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use cocos_auth::{Authorization, DeclaredKey, Role};
use common::*;
use tonic::Code;

const ID: &str = "computation-7";

fn plain(addr: std::net::SocketAddr) -> Vec<String> {
    vec!["--addr".into(), addr.to_string(), "--plaintext".into()]
}

async fn run(args: &[String], extra: &[String], dir: &Path) -> std::process::Output {
    let all: Vec<&str> = args.iter().chain(extra).map(String::as_str).collect();
    cli(&all, dir).await
}

fn signed(auth: Authorization) -> cocos_auth::CanonicalRequest {
    match auth {
        Authorization::Signed { request, .. } => request,
        other => panic!("expected a signed request, got {other:?}"),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn algo_streams_requirements_then_the_algorithm_in_mebibyte_chunks_signed_for_their_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "algo", "ed25519");
    std::fs::write(d.join("algo.py"), pattern(2 * MIB + MIB / 2)).unwrap();
    std::fs::write(d.join("requirements.txt"), b"numpy==2.1.0\npandas\n").unwrap();
    let (addr, agent) = start_agent(Behaviour::default(), None).await;

    let out = run(
        &strings(&[
            "algo",
            "algo.py",
            "--key",
            key.private.to_str().unwrap(),
            "--type",
            "python",
            "--requirements",
            "requirements.txt",
            "--args",
            "a",
            "--args",
            "-b",
            "--args",
            "c d",
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: --plaintext"),
        "{}",
        text(&out.stderr)
    );

    let calls = agent.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.algorithm, std::fs::read(d.join("algo.py")).unwrap());
    assert_eq!(
        call.requirements,
        std::fs::read(d.join("requirements.txt")).unwrap()
    );
    // Requirements first (as the Go CLI), then 1 MiB algorithm chunks.
    assert_eq!(
        call.messages,
        vec![
            ("requirements", 20),
            ("algorithm", MIB),
            ("algorithm", MIB),
            ("algorithm", MIB / 2)
        ]
    );
    assert_eq!(call.values("algo_type"), ["python"]);
    assert_eq!(call.values("algo_args"), ["a", "-b", "c d"]);
    assert!(call.values("signature").is_empty());

    let auth = call.verify(
        ID,
        vec![DeclaredKey {
            role: Role::AlgorithmProvider,
            key: key.public(),
        }],
        false,
    );
    let req = signed(auth);
    assert_eq!(req.computation_id, ID);
    assert_eq!(
        hex::encode(req.payload_sha3.unwrap()),
        python_sha3(&d.join("algo.py"))
    );
    assert_eq!(
        hex::encode(req.requirements_sha3.unwrap()),
        python_sha3(&d.join("requirements.txt"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn algo_type_defaults_to_bin_and_a_key_of_another_role_is_refused_by_the_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "k", "p256");
    let other = openssl_key(d, "other", "p256");
    std::fs::write(d.join("algo"), b"\x7fELF").unwrap();
    let (addr, agent) = start_agent(Behaviour::default(), None).await;
    let out = run(
        &strings(&[
            "algo",
            "algo",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let call = agent.calls.lock().unwrap()[0].clone();
    assert_eq!(call.values("algo_type"), ["bin"]);
    assert!(call.values("algo_args").is_empty());
    assert!(call.requirements.is_empty());
    let md = cocos_auth::AuthMetadata {
        cocos_auth: call.values("cocos-auth"),
        signature: vec![],
    };
    let verifier = cocos_auth::Verifier::new(
        ID,
        vec![DeclaredKey {
            role: Role::AlgorithmProvider,
            key: other.public(),
        }],
        cocos_auth::Policy::default(),
    );
    assert!(
        verifier
            .verify(cocos_auth::Rpc::Algo, &md, std::time::SystemTime::now())
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_sends_a_file_under_its_basename_signed_for_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "data", "rsa");
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/iris.csv"), pattern(MIB + 5)).unwrap();
    let (addr, agent) = start_agent(Behaviour::default(), None).await;
    let out = run(
        &strings(&[
            "data",
            "sub/iris.csv",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let call = agent.calls.lock().unwrap()[0].clone();
    assert_eq!(call.dataset, std::fs::read(d.join("sub/iris.csv")).unwrap());
    assert_eq!(call.messages, vec![("dataset", MIB), ("dataset", 5)]);
    assert!(
        call.filenames.iter().all(|f| f == "iris.csv"),
        "{:?}",
        call.filenames
    );
    assert!(call.values("decompress").is_empty());
    let req = signed(call.verify(
        ID,
        vec![DeclaredKey {
            role: Role::DataProvider {
                dataset: "iris.csv".into(),
            },
            key: key.public(),
        }],
        false,
    ));
    assert_eq!(req.resource, "iris.csv");
    assert_eq!(
        hex::encode(req.payload_sha3.unwrap()),
        python_sha3(&d.join("sub/iris.csv"))
    );

    // --decompress on a file asks the agent to extract it.
    let out = run(
        &strings(&[
            "data",
            "sub/iris.csv",
            "--decompress",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        agent.calls.lock().unwrap()[1].values("decompress"),
        ["true"]
    );

    // --json: one object naming what was sent, with python's SHA3-256.
    let out = run(
        &strings(&[
            "data",
            "sub/iris.csv",
            "--json",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["dataset"], "iris.csv");
    assert_eq!(v["bytes"], (MIB + 5) as u64);
    assert_eq!(v["sha3_256"], python_sha3(&d.join("sub/iris.csv")));
    assert_eq!(v["decompress"], false);
    assert!(v["hash_seconds"].as_f64().unwrap() >= 0.0);
    assert!(v["transfer_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_sends_a_directory_as_the_zip_that_checksum_hashes_and_python_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "data", "ed25519");
    let ds = d.join("dataset");
    std::fs::create_dir_all(ds.join("b/c")).unwrap();
    std::fs::write(ds.join("a.csv"), b"1,2\n").unwrap();
    std::fs::write(ds.join("b/c/d.bin"), pattern(3000)).unwrap();
    std::fs::write(ds.join("b/e.txt"), b"").unwrap();
    let (addr, agent) = start_agent(Behaviour::default(), None).await;
    // A trailing slash and a relative path still name the directory.
    let out = run(
        &strings(&[
            "data",
            "dataset/",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let call = agent.calls.lock().unwrap()[0].clone();
    assert!(
        call.filenames.iter().all(|f| f == "dataset"),
        "{:?}",
        call.filenames
    );
    assert_eq!(call.values("decompress"), ["true"]);
    let received = d.join("received.zip");
    std::fs::write(&received, &call.dataset).unwrap();
    let listed = tool(
        "python3",
        &[
            "-c",
            "import sys,zipfile;z=zipfile.ZipFile(sys.argv[1]);print(z.testzip());print(sorted(z.namelist()))",
            received.to_str().unwrap(),
        ],
        d,
    );
    assert_eq!(
        text(&listed.stdout),
        "None\n['a.csv', 'b/c/d.bin', 'b/e.txt']\n"
    );
    let req = signed(call.verify(
        ID,
        vec![DeclaredKey {
            role: Role::DataProvider {
                dataset: "dataset".into(),
            },
            key: key.public(),
        }],
        false,
    ));
    let sum = cli(&["checksum", "dataset"], d).await;
    assert_eq!(text(&sum.stdout).trim(), python_sha3(&received));
    assert_eq!(
        hex::encode(req.payload_sha3.unwrap()),
        python_sha3(&received)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_gives_the_id_and_a_mismatching_upload_is_refused_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "k", "ed25519");
    std::fs::write(d.join("algo"), b"the algorithm").unwrap();
    std::fs::write(d.join("other"), b"another algorithm").unwrap();
    std::fs::write(d.join("x.csv"), b"1\n").unwrap();
    // The manifest JSON by hand: hashes from hashlib, the key from openssl.
    let hash = |p: &str| {
        let h = hex::decode(python_sha3(&d.join(p))).unwrap();
        format!("{h:?}").replace(' ', "")
    };
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&key.public_der);
    let manifest = format!(
        r#"{{"id":"from-manifest","datasets":[{{"hash":{},"user_key":"{b64}","filename":"x.csv"}}],"algorithm":{{"hash":{},"user_key":"{b64}"}},"result_consumers":[{{"user_key":"{b64}"}}]}}"#,
        hash("x.csv"),
        hash("algo")
    );
    std::fs::write(d.join("m.json"), manifest).unwrap();
    let (addr, agent) = start_agent(Behaviour::default(), None).await;
    let k = key.private.to_str().unwrap();

    let out = run(
        &strings(&["algo", "algo", "--key", k, "--manifest", "m.json"]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let call = agent.calls.lock().unwrap()[0].clone();
    let req = signed(call.verify(
        "from-manifest",
        vec![DeclaredKey {
            role: Role::AlgorithmProvider,
            key: key.public(),
        }],
        false,
    ));
    assert_eq!(req.computation_id, "from-manifest");

    let out = run(
        &strings(&["algo", "other", "--key", k, "--manifest", "m.json"]),
        &plain(addr),
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("differs from the manifest's algorithm hash"));
    let out = run(
        &strings(&["data", "algo", "--key", k, "--manifest", "m.json"]),
        &plain(addr),
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("\"algo\" is not declared in the manifest"));
    // --computation must agree with the manifest.
    let out = run(
        &strings(&[
            "data",
            "x.csv",
            "--key",
            k,
            "--manifest",
            "m.json",
            "--computation",
            "c2",
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        agent.calls.lock().unwrap().len(),
        1,
        "nothing else was sent"
    );
    // Neither --computation nor --manifest: a usage error.
    let out = run(&strings(&["result", "--key", k]), &plain(addr), d).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_auth_signs_the_role_string_as_the_go_cli_and_openssl_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "k", "p384");
    std::fs::write(d.join("algo"), b"x").unwrap();
    std::fs::write(d.join("x.csv"), b"1\n").unwrap();
    let (addr, agent) = start_agent(Behaviour::default(), None).await;
    let k = key.private.to_str().unwrap();
    // No computation id is needed: the role string covers none.
    let out = run(
        &strings(&["algo", "algo", "--key", k, "--legacy-auth"]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &strings(&["data", "x.csv", "--key", k, "--legacy-auth"]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let calls = agent.calls.lock().unwrap().clone();
    for (call, role) in calls.iter().zip(["algorithm-provider", "data-provider"]) {
        assert!(call.values("cocos-auth").is_empty());
        assert_eq!(call.values("user-id"), [role]);
        // Go signs SHA-256 of the role string with ECDSA whatever the
        // curve: openssl dgst -sha256 -verify is the reference.
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&call.values("signature")[0])
            .unwrap();
        std::fs::write(d.join("sig.der"), sig).unwrap();
        std::fs::write(d.join("role"), role).unwrap();
        let v = tool(
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-verify",
                key.public_pem.to_str().unwrap(),
                "-signature",
                "sig.der",
                "role",
            ],
            d,
        );
        assert_eq!(text(&v.stdout), "Verified OK\n");
    }
    let keys = vec![
        DeclaredKey {
            role: Role::AlgorithmProvider,
            key: key.public(),
        },
        DeclaredKey {
            role: Role::DataProvider {
                dataset: "x.csv".into(),
            },
            key: key.public(),
        },
    ];
    for call in &calls {
        assert!(matches!(
            call.verify("any", keys.clone(), true),
            Authorization::Legacy { .. }
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn result_writes_exactly_the_streamed_bytes_and_prints_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "consumer", "p256");
    let chunks = vec![pattern(MIB), pattern(MIB), pattern(1234)];
    let total: usize = chunks.iter().map(Vec::len).sum();
    let (addr, agent) = start_agent(
        Behaviour {
            result: chunks.clone(),
            file_size: Some(total.to_string()),
            ..Default::default()
        },
        None,
    )
    .await;
    std::fs::create_dir(d.join("out")).unwrap();
    let out = run(
        &strings(&[
            "result",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
            "-o",
            "out/r.zip",
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = d.join("out/r.zip").canonicalize().unwrap();
    assert_eq!(text(&out.stdout), format!("{}\n", path.display()));
    assert_eq!(std::fs::read(&path).unwrap(), chunks.concat());
    // Nothing else is left in the directory.
    assert_eq!(std::fs::read_dir(d.join("out")).unwrap().count(), 1);
    let call = agent.calls.lock().unwrap()[0].clone();
    let req = signed(call.verify(
        ID,
        vec![DeclaredKey {
            role: Role::Consumer { index: 0 },
            key: key.public(),
        }],
        false,
    ));
    assert_eq!(req.payload_sha3, None);

    // The default output is results.zip in the working directory.
    let out = run(
        &strings(&[
            "result",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(d.join("results.zip")).unwrap(),
        chunks.concat()
    );

    // --json: the path, the bytes received and the download's duration.
    let out = run(
        &strings(&[
            "result",
            "--json",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
            "-o",
            "out/j.zip",
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let path = d.join("out/j.zip").canonicalize().unwrap();
    assert_eq!(v["path"], path.display().to_string());
    assert_eq!(v["bytes"], total as u64);
    assert!(v["transfer_seconds"].as_f64().unwrap() > 0.0);
}

async fn result_fails_cleanly(file_size: &str, chunks: Vec<Vec<u8>>, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "consumer", "ed25519");
    let (addr, _agent) = start_agent(
        Behaviour {
            result: chunks,
            file_size: Some(file_size.into()),
            ..Default::default()
        },
        None,
    )
    .await;
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = run(
        &strings(&[
            "result",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
            "-o",
            "out/results.zip",
        ]),
        &plain(addr),
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(expect), "{}", text(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn result_with_more_bytes_than_announced_fails_and_leaves_no_file() {
    result_fails_cleanly(
        "1500",
        vec![pattern(1000), pattern(1000)],
        "error: the agent broke the protocol: it announced 1500 bytes (file-size) and sent more (2000 so far)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn result_with_fewer_bytes_than_announced_fails_and_leaves_no_file() {
    result_fails_cleanly(
        "5000",
        vec![pattern(1000)],
        "and the stream ended after 1000",
    )
    .await;
    result_fails_cleanly("12x", vec![pattern(10)], "is not a decimal byte count").await;
}

async fn status_line(code: Code, message: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "k", "ed25519");
    std::fs::write(d.join("algo"), b"x").unwrap();
    let (addr, _agent) = start_agent(
        Behaviour {
            fail: Some((code, message.into())),
            ..Default::default()
        },
        None,
    )
    .await;
    let out = run(
        &strings(&[
            "algo",
            "algo",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
        ]),
        &plain(addr),
        d,
    )
    .await;
    let lines: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    (out.status.code(), lines[0].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_statuses_become_one_line_and_an_exit_status() {
    assert_eq!(
        status_line(Code::Unauthenticated, "signature verification failed").await,
        (
            Some(1),
            "error: the agent refused the signature: signature verification failed".into()
        )
    );
    assert_eq!(
        status_line(
            Code::FailedPrecondition,
            "agent not expecting this operation in the current state"
        )
        .await,
        (
            Some(1),
            "error: the agent is not in the right state: agent not expecting this operation in the current state"
                .into()
        )
    );
    assert_eq!(
        status_line(
            Code::Unknown,
            "malformed data, hash does not match manifest"
        )
        .await,
        (
            Some(1),
            "error: the agent refused the request: malformed data, hash does not match manifest"
                .into()
        )
    );
    let (code, line) = status_line(Code::Unavailable, "shutting down").await;
    assert_eq!(code, Some(3));
    assert!(
        line.starts_with("error: agent unavailable at http://127.0.0.1:"),
        "{line}"
    );
    assert!(line.ends_with(": shutting down"), "{line}");
    // An agent's message cannot inject a second line.
    assert_eq!(
        status_line(Code::Internal, "a\nb").await,
        (Some(1), "error: the agent failed: a\\nb".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_is_not_there_is_exit_status_3() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = openssl_key(d, "k", "ed25519");
    let port = closed_port().await;
    let out = cli(
        &[
            "result",
            "--key",
            key.private.to_str().unwrap(),
            "--computation",
            ID,
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--plaintext",
        ],
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: agent unavailable at http://127.0.0.1:{port}: "
        )),
        "{err}"
    );
    assert!(!d.join("results.zip").exists());
    assert_eq!(
        std::fs::read_dir(d).unwrap().count(),
        2,
        "only the key files are left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verifies_the_agent_against_the_ca_and_mutual_tls_sends_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = openssl_pki(&d.join("pki"));
    let key = openssl_key(d, "k", "ed25519");
    std::fs::write(d.join("algo"), pattern(MIB + 1)).unwrap();
    let k = key.private.to_str().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let (addr, agent) = start_agent(
        Behaviour::default(),
        Some(ServerTls {
            pki: &pki,
            require_client_cert: false,
        }),
    )
    .await;
    let port = addr.port().to_string();
    // By IP (the certificate's IP SAN) and by name (its DNS SAN).
    for host in ["https://127.0.0.1", "localhost"] {
        let url = format!("{host}:{port}");
        let out = cli(
            &[
                "algo",
                "algo",
                "--key",
                k,
                "--computation",
                ID,
                "--addr",
                &url,
                "--ca",
                ca,
            ],
            d,
        )
        .await;
        assert!(out.status.success(), "{url}: {}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("warning"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(agent.calls.lock().unwrap().len(), 2);
    assert_eq!(agent.calls.lock().unwrap()[1].algorithm, pattern(MIB + 1));

    // Another CA: the agent's certificate is not trusted.
    let other_ca = openssl_ca(&d.join("other"), "another CA");
    let url = format!("127.0.0.1:{port}");
    let out = cli(
        &[
            "algo",
            "algo",
            "--key",
            k,
            "--computation",
            ID,
            "--addr",
            &url,
            "--ca",
            other_ca.to_str().unwrap(),
        ],
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("UnknownIssuer"),
        "{}",
        text(&out.stderr)
    );
    // A name the certificate does not carry.
    let out = cli(
        &[
            "algo",
            "algo",
            "--key",
            k,
            "--computation",
            ID,
            "--addr",
            &url,
            "--ca",
            ca,
            "--domain",
            "agent.example",
        ],
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("certificate not valid for name \"agent.example\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        agent.calls.lock().unwrap().len(),
        2,
        "nothing reached the agent"
    );

    // An agent that requires a client certificate.
    let (maddr, magent) = start_agent(
        Behaviour::default(),
        Some(ServerTls {
            pki: &pki,
            require_client_cert: true,
        }),
    )
    .await;
    let url = format!("127.0.0.1:{}", maddr.port());
    let out = cli(
        &[
            "algo",
            "algo",
            "--key",
            k,
            "--computation",
            ID,
            "--addr",
            &url,
            "--ca",
            ca,
            "--tls-cert",
            pki.client_cert.to_str().unwrap(),
            "--tls-key",
            pki.client_key.to_str().unwrap(),
        ],
        d,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(
        &[
            "algo",
            "algo",
            "--key",
            k,
            "--computation",
            ID,
            "--addr",
            &url,
            "--ca",
            ca,
        ],
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(magent.calls.lock().unwrap().len(), 1);
}
