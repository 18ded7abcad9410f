//! The agent end to end on the host: a real tonic server on a Unix socket,
//! a real tonic client signing with cocos-auth, fakes for the runner, the
//! event sink and the control stream. The happy path to `Complete` with two
//! consumers, and each attack of issue 10 that concerns the agent: every
//! one checks the documented error, that the state did not move, and that
//! nothing already accepted was lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use cocos_agentd::error::{HASH_MISMATCH, RESULTS_NOT_READY, UNDECLARED_DATASET, WRONG_STATE};
use cocos_agentd::*;
use cocos_auth::Rpc;
use cocos_proto::cvms::{
    AgentStateReq, ComputationRunReq, RunReqChunks, ServerStreamMessage, StopComputation,
    client_stream_message, server_stream_message,
};
use cocos_proto::prost::Message;
use common::*;
use tonic::Code;

fn results() -> Vec<(String, Vec<u8>)> {
    vec![
        ("summary.txt".into(), b"mean 5.84\n".to_vec()),
        ("plots/hist.csv".into(), b"1,2,3\n".to_vec()),
    ]
}

/// Manifest in, algorithm and both datasets accepted: the agent is
/// Running (or past it).
async fn through_uploads(f: &mut Fixture, plan: &Plan) {
    f.send_manifest(plan.manifest(&f.parties)).await;
    f.wait_state(State::ReceivingAlgorithm).await;
    algo_signed(f, |p| &p.algo, &plan.algorithm).await.unwrap();
    let keys = [&f.parties.iris, &f.parties.wine];
    for (i, (name, bytes, decompress)) in plan.datasets.iter().enumerate() {
        data_signed(&mut f.client, keys[i], name, bytes, *decompress)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn happy_path_to_complete_with_two_consumers_and_events_in_order() {
    let mut f = Fixture::start(Behaviour::Succeed(results())).await;
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    // A directory dataset travels as a zip and is extracted.
    let tree = python_zip(&[
        ("a.csv", b"1,2\n", 0o100644),
        ("sub/b.csv", b"3,4\n", 0o100644),
    ]);
    let plan = Plan {
        datasets: vec![
            ("iris.csv".into(), b"5.1,3.5,1.4,0.2\n".repeat(300), false),
            ("tables".into(), tree, true),
        ],
        ..Plan::simple()
    };
    // The manifest arrives in chunks, the last one empty.
    let bytes = plan.manifest(&f.parties).encode_to_vec();
    let t = Instant::now();
    for piece in bytes.chunks(100) {
        f.agent
            .handle_server_message(chunk_msg(piece, false), t)
            .await;
    }
    f.agent.handle_server_message(chunk_msg(&[], true), t).await;
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    assert_eq!(
        f.run_responses(),
        [(COMPUTATION.to_string(), String::new())]
    );

    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        None,
    );
    algo(
        &mut f.client,
        &Auth::Signed(v),
        &plan.algorithm,
        None,
        &[
            ("algo_args", "--alpha"),
            ("algo_args", "1"),
            ("algo_args", "z"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(f.agent.state(), State::ReceivingData);
    // Datasets in any order: the second one first.
    let (name, bytes, _) = &plan.datasets[1];
    data_signed(&mut f.client, &f.parties.wine, name, bytes, false)
        .await
        .unwrap();
    assert_eq!(f.agent.state(), State::ReceivingData);
    let (name, bytes, _) = &plan.datasets[0];
    data_signed(&mut f.client, &f.parties.iris, name, bytes, false)
        .await
        .unwrap();
    f.wait_state(State::ConsumingResults).await;

    let run = f.runner.runs.lock().unwrap()[0].clone();
    let work = f.work();
    assert_eq!(run.request.computation_id, COMPUTATION);
    assert_eq!(run.request.algo_type, "bin");
    assert_eq!(run.request.args, ["--alpha", "1", "z"]);
    assert_eq!(
        run.request.algorithm_path,
        work.join("algo").to_str().unwrap()
    );
    assert_eq!(
        run.request.datasets_dir,
        work.join("datasets").to_str().unwrap()
    );
    assert_eq!(
        run.request.results_dir,
        work.join("results").to_str().unwrap()
    );
    assert_eq!(run.request.requirements_path, "");
    assert_eq!(run.algorithm, plan.algorithm);
    assert_eq!(
        run.datasets,
        vec![
            ("iris.csv".to_string(), plan.datasets[0].1.clone()),
            ("tables/a.csv".to_string(), b"1,2\n".to_vec()),
            ("tables/sub/b.csv".to_string(), b"3,4\n".to_vec()),
        ]
    );
    // The inputs are gone once the run is over.
    assert!(!work.join("algo").exists());
    assert!(f.accepted_datasets().is_empty());

    // The first consumer fetches (twice): still waiting for the second.
    let alice = f.parties.alice.clone();
    let (size, zip) = result_signed(&mut f.client, &alice).await.unwrap();
    assert_eq!(size, zip.len() as u64);
    let mut expected = results();
    expected.sort();
    assert_eq!(python_unzip(&zip), expected);
    let (_, again) = result_signed(&mut f.client, &alice).await.unwrap();
    assert_eq!(again, zip);
    assert_eq!(f.agent.state(), State::ConsumingResults);
    assert_eq!(f.agent.consumers_fetched(), [true, false]);
    // The second consumer completes the computation.
    let bob = f.parties.bob.clone();
    let (_, zip_b) = result_signed(&mut f.client, &bob).await.unwrap();
    assert_eq!(zip_b, zip);
    f.wait_state(State::Complete).await;
    // Results stay available after Complete.
    assert_eq!(result_signed(&mut f.client, &alice).await.unwrap().1, zip);

    let events = f.events(8).await;
    let expected: Vec<(String, String)> = [
        ("ReceivingManifest", "InProgress"),
        ("ReceivingAlgorithm", "InProgress"),
        ("ReceivingData", "InProgress"),
        ("Running", "Starting"),
        ("Running", "InProgress"),
        ("Running", "Completed"),
        ("ConsumingResults", "Ready"),
        ("Complete", "Completed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(events, expected);
    let all = f.events.all();
    assert!(
        all.iter()
            .all(|e| e.originator == "agent" && e.timestamp.is_some())
    );
    assert!(all[1..].iter().all(|e| e.computation_id == COMPUTATION));
}

fn chunk_msg(data: &[u8], is_last: bool) -> ServerStreamMessage {
    ServerStreamMessage {
        message: Some(server_stream_message::Message::RunReqChunks(RunReqChunks {
            data: data.to_vec(),
            id: COMPUTATION.into(),
            is_last,
        })),
    }
}

#[tokio::test]
async fn wrong_hash_is_refused_then_a_retry_succeeds() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;

    // Wrong bytes, honestly signed: refused before streaming.
    let wrong = b"#!/bin/sh\nrm -rf /\n".to_vec();
    assert_status(
        algo_signed(&mut f, |p| &p.algo, &wrong).await,
        Code::InvalidArgument,
        HASH_MISMATCH,
    );
    // The manifest's hash signed, other bytes streamed: refused after.
    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        None,
    );
    assert_status(
        algo(&mut f.client, &Auth::Signed(v), &wrong, None, &[]).await,
        Code::InvalidArgument,
        HASH_MISMATCH,
    );
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    assert_eq!(f.staging_entries(), 0);
    assert!(!f.work().join("algo").exists());
    // Retry with the right file.
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    assert_eq!(f.agent.state(), State::ReceivingData);

    // Same for a dataset; the accepted algorithm stays.
    let (name, bytes, _) = &plan.datasets[0];
    let iris = f.parties.iris.clone();
    let v = signed(&iris, Rpc::Data, name, Some(sha3(bytes)), None);
    assert_status(
        data(&mut f.client, &Auth::Signed(v), name, b"tampered", false).await,
        Code::InvalidArgument,
        HASH_MISMATCH,
    );
    assert_eq!(f.agent.state(), State::ReceivingData);
    assert_eq!(f.staging_entries(), 0);
    assert!(f.accepted_datasets().is_empty());
    assert_eq!(
        std::fs::read(f.work().join("algo")).unwrap(),
        plan.algorithm
    );
    data_signed(&mut f.client, &iris, name, bytes, false)
        .await
        .unwrap();
    assert_eq!(f.accepted_datasets(), ["iris.csv"]);
}

#[tokio::test]
async fn undeclared_keys_are_refused() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;
    assert_status(
        algo_signed(&mut f, |p| &p.stranger, &plan.algorithm).await,
        Code::Unauthenticated,
        "signature by an undeclared key",
    );
    // A declared key of another role is refused too.
    assert_status(
        algo_signed(&mut f, |p| &p.alice, &plan.algorithm).await,
        Code::Unauthenticated,
        "not declared for the algorithm (it is the key of result consumer 0)",
    );
    // No signature at all.
    assert_status(
        algo(&mut f.client, &Auth::None, &plan.algorithm, None, &[]).await,
        Code::Unauthenticated,
        "missing metadata",
    );
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    let (name, bytes, _) = &plan.datasets[0];
    let stranger = f.parties.stranger.clone();
    assert_status(
        data_signed(&mut f.client, &stranger, name, bytes, false).await,
        Code::Unauthenticated,
        "signature by an undeclared key",
    );
    assert_eq!(f.agent.state(), State::ReceivingData);
    assert!(f.accepted_datasets().is_empty());
    assert!(f.work().join("algo").exists());
}

#[tokio::test]
async fn a_dataset_signed_with_another_datasets_key_is_refused() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    let (wine, iris) = (f.parties.wine.clone(), f.parties.iris.clone());
    let (iris_name, iris_bytes, _) = &plan.datasets[0];
    // The wine provider uploads iris.csv.
    assert_status(
        data_signed(&mut f.client, &wine, iris_name, iris_bytes, false).await,
        Code::Unauthenticated,
        "signature by a key not declared for dataset \"iris.csv\" (it is the key of dataset \"wine.csv\")",
    );
    // The wine provider signs for wine.csv but names iris.csv in the
    // stream.
    let (wine_name, wine_bytes, _) = &plan.datasets[1];
    let v = signed(&wine, Rpc::Data, wine_name, Some(sha3(wine_bytes)), None);
    assert_status(
        data(
            &mut f.client,
            &Auth::Signed(v),
            iris_name,
            wine_bytes,
            false,
        )
        .await,
        Code::Unauthenticated,
        "the request was signed for dataset \"wine.csv\"",
    );
    assert_eq!(f.agent.state(), State::ReceivingData);
    assert!(f.accepted_datasets().is_empty());
    assert_eq!(f.staging_entries(), 0);
    // An undeclared dataset name.
    let v = signed(&iris, Rpc::Data, "secret.csv", Some(sha3(b"x")), None);
    assert_status(
        data(&mut f.client, &Auth::Signed(v), "secret.csv", b"x", false).await,
        Code::InvalidArgument,
        UNDECLARED_DATASET,
    );
    data_signed(&mut f.client, &iris, iris_name, iris_bytes, false)
        .await
        .unwrap();
    data_signed(&mut f.client, &wine, wine_name, wine_bytes, false)
        .await
        .unwrap();
    f.wait_state(State::ConsumingResults).await;
}

#[tokio::test]
async fn replayed_and_stale_requests_are_refused() {
    let mut f = Fixture::start(Behaviour::Succeed(results())).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    let (name, bytes, _) = &plan.datasets[0];
    let iris = f.parties.iris.clone();
    let captured = signed(&iris, Rpc::Data, name, Some(sha3(bytes)), None);
    data(
        &mut f.client,
        &Auth::Signed(captured.clone()),
        name,
        bytes,
        false,
    )
    .await
    .unwrap();
    // The same signed request again, e.g. captured on the wire.
    assert_status(
        data(&mut f.client, &Auth::Signed(captured), name, bytes, false).await,
        Code::Unauthenticated,
        "replayed nonce",
    );
    assert_eq!(f.agent.state(), State::ReceivingData);
    assert_eq!(f.accepted_datasets(), ["iris.csv"]);
    // A request signed ten minutes ago.
    let (wname, wbytes, _) = &plan.datasets[1];
    let wine = f.parties.wine.clone();
    let old = signed_at(
        &wine,
        Rpc::Data,
        wname,
        Some(sha3(wbytes)),
        now_ms() - 600_000,
    );
    assert_status(
        data(&mut f.client, &Auth::Signed(old), wname, wbytes, false).await,
        Code::Unauthenticated,
        "stale timestamp",
    );
    assert_eq!(f.accepted_datasets(), ["iris.csv"]);
    data_signed(&mut f.client, &wine, wname, wbytes, false)
        .await
        .unwrap();
    f.wait_state(State::ConsumingResults).await;
    // A replayed Result.
    let alice = f.parties.alice.clone();
    let r = signed(&alice, Rpc::Result, "", None, None);
    result(&mut f.client, &Auth::Signed(r.clone()))
        .await
        .unwrap();
    assert_status(
        result(&mut f.client, &Auth::Signed(r)).await,
        Code::Unauthenticated,
        "replayed nonce",
    );
    // A request signed for Algo presented to Result.
    let a = signed(&alice, Rpc::Algo, "", Some([0; 32]), None);
    assert_status(
        result(&mut f.client, &Auth::Signed(a)).await,
        Code::Unauthenticated,
        "request signed for Algo, presented to Result",
    );
}

#[tokio::test]
async fn requests_in_the_wrong_state_are_refused() {
    let mut f = Fixture::start(Behaviour::Block).await;
    let plan = Plan::simple();
    // Before any manifest.
    assert_status(
        algo_signed(&mut f, |p| &p.algo, &plan.algorithm).await,
        Code::FailedPrecondition,
        WRONG_STATE,
    );
    f.send_manifest(plan.manifest(&f.parties)).await;
    let (name, bytes, _) = &plan.datasets[0];
    let iris = f.parties.iris.clone();
    // Data before the algorithm.
    assert_status(
        data_signed(&mut f.client, &iris, name, bytes, false).await,
        Code::FailedPrecondition,
        WRONG_STATE,
    );
    let alice = f.parties.alice.clone();
    assert_status(
        result_signed(&mut f.client, &alice).await,
        Code::FailedPrecondition,
        RESULTS_NOT_READY,
    );
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    // A second algorithm.
    assert_status(
        algo_signed(&mut f, |p| &p.algo, &plan.algorithm).await,
        Code::FailedPrecondition,
        WRONG_STATE,
    );
    data_signed(&mut f.client, &iris, name, bytes, false)
        .await
        .unwrap();
    // The same dataset twice.
    assert_status(
        data_signed(&mut f.client, &iris, name, bytes, false).await,
        Code::FailedPrecondition,
        "dataset \"iris.csv\" was already received",
    );
    assert_eq!(f.accepted_datasets(), ["iris.csv"]);
    let wine = f.parties.wine.clone();
    let (wname, wbytes, _) = &plan.datasets[1];
    data_signed(&mut f.client, &wine, wname, wbytes, false)
        .await
        .unwrap();
    f.wait_state(State::Running).await;
    assert_status(
        result_signed(&mut f.client, &alice).await,
        Code::FailedPrecondition,
        RESULTS_NOT_READY,
    );
    f.runner.release();
}

#[tokio::test]
async fn over_cap_uploads_are_refused_and_leave_nothing() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;
    let cap = small_caps().algorithm_bytes;
    let big = vec![7u8; cap as usize + 1];
    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        None,
    );
    assert_status(
        algo(&mut f.client, &Auth::Signed(v), &big, None, &[]).await,
        Code::ResourceExhausted,
        &format!("algorithm upload exceeds the configured cap of {cap} bytes"),
    );
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    assert_eq!(f.staging_entries(), 0);
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    let (name, bytes, _) = &plan.datasets[0];
    let iris = f.parties.iris.clone();
    let v = signed(&iris, Rpc::Data, name, Some(sha3(bytes)), None);
    let cap = small_caps().dataset_bytes;
    let big = vec![1u8; cap as usize + 1024];
    assert_status(
        data(&mut f.client, &Auth::Signed(v), name, &big, false).await,
        Code::ResourceExhausted,
        &format!("dataset upload exceeds the configured cap of {cap} bytes"),
    );
    assert_eq!(f.agent.state(), State::ReceivingData);
    assert_eq!(f.staging_entries(), 0, "partial upload left in staging");
    assert!(f.work().join("algo").exists());
    data_signed(&mut f.client, &iris, name, bytes, false)
        .await
        .unwrap();
    assert_eq!(f.accepted_datasets(), ["iris.csv"]);
}

#[tokio::test]
async fn hostile_zips_in_a_decompressed_dataset_are_refused() {
    let slip = python_zip(&[
        ("ok.txt", b"fine", 0o100644),
        ("../evil.txt", b"pwned", 0o100644),
    ]);
    let absolute = python_zip(&[("/tmp/cocos-evil-absolute.txt", b"pwned", 0o100644)]);
    let symlink = python_zip(&[("link", b"../../../etc/passwd", 0o120777)]);
    let many: Vec<(String, Vec<u8>)> = (0..9).map(|i| (format!("f{i}"), vec![b'x'])).collect();
    let many_refs: Vec<(&str, &[u8], u32)> = many
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice(), 0o100644))
        .collect();
    let too_many = python_zip(&many_refs);
    let good = python_zip(&[("rows.csv", b"1,2,3\n", 0o100644)]);
    let cases = [
        ("slip", slip, "`..` component"),
        ("absolute", absolute, "absolute name"),
        ("symlink", symlink, "symbolic link"),
        ("many", too_many, "more than 8 entries"),
    ];
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let mut plan = Plan::simple();
    plan.datasets = vec![("good".into(), good.clone(), true)];
    for (name, zip, _) in &cases {
        plan.datasets.push((name.to_string(), zip.clone(), true));
    }
    let mut manifest = plan.manifest(&f.parties);
    // One key for all the datasets, for brevity.
    let key = f.parties.iris.clone();
    for d in &mut manifest.datasets {
        d.user_key = der(&key);
    }
    f.send_manifest(manifest).await;
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    data_signed(&mut f.client, &key, "good", &good, true)
        .await
        .unwrap();
    for (name, zip, text) in &cases {
        let r = data_signed(&mut f.client, &key, name, zip, true).await;
        assert_status(r, Code::InvalidArgument, "error decompressing dataset");
        assert_status(
            data_signed(&mut f.client, &key, name, zip, true).await,
            Code::InvalidArgument,
            text,
        );
        assert_eq!(f.agent.state(), State::ReceivingData, "{name}");
        assert_eq!(f.accepted_datasets(), ["good"], "{name}");
        assert_eq!(f.staging_entries(), 0, "{name}");
    }
    assert!(!f.work().join("datasets/evil.txt").exists());
    assert!(!f.work().join("evil.txt").exists());
    assert!(!std::path::Path::new("/tmp/cocos-evil-absolute.txt").exists());
    assert_eq!(
        std::fs::read(f.work().join("datasets/good/rows.csv")).unwrap(),
        b"1,2,3\n"
    );
}

#[tokio::test]
async fn a_runner_failure_moves_to_failed_with_its_text() {
    let text = "algorithm exited with status 1: division by zero";
    let mut f = Fixture::start(Behaviour::Fail(text.into())).await;
    through_uploads(&mut f, &Plan::simple()).await;
    f.wait_state(State::Failed).await;
    let alice = f.parties.alice.clone();
    assert_status(
        result_signed(&mut f.client, &alice).await,
        Code::FailedPrecondition,
        text,
    );
    // Only consumers learn the error.
    let stranger = f.parties.stranger.clone();
    assert_status(
        result_signed(&mut f.client, &stranger).await,
        Code::Unauthenticated,
        "undeclared key",
    );
    let events = f.events(7).await;
    assert_eq!(
        events[4..],
        [
            ("Running".to_string(), "InProgress".to_string()),
            ("Running".into(), "Failed".into()),
            ("Failed".into(), "Failed".into()),
        ]
    );
    let failed = f.events.all().pop().unwrap();
    let details: serde_json::Value = serde_json::from_slice(&failed.details).unwrap();
    assert_eq!(details["error"], text);
    assert!(!f.work().join("algo").exists());
    assert!(!f.work().join("results.zip").exists());
}

#[tokio::test]
async fn stop_during_a_run_returns_to_receiving_manifest_and_the_late_run_is_ignored() {
    let mut f = Fixture::start(Behaviour::Block).await;
    let plan = Plan::simple();
    through_uploads(&mut f, &plan).await;
    f.wait_state(State::Running).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.runner.runs.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the runner was never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.agent
        .handle_server_message(
            ServerStreamMessage {
                message: Some(server_stream_message::Message::StopComputation(
                    StopComputation {
                        computation_id: COMPUTATION.into(),
                    },
                )),
            },
            Instant::now(),
        )
        .await;
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    assert_eq!(f.runner.stops.load(std::sync::atomic::Ordering::SeqCst), 1);
    let stop_res: Vec<_> = f
        .control
        .all()
        .into_iter()
        .filter_map(|m| match m.message {
            Some(client_stream_message::Message::StopComputationRes(r)) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(stop_res.len(), 1);
    assert_eq!(stop_res[0].computation_id, COMPUTATION);
    assert_eq!(stop_res[0].message, "");
    assert!(!f.work().join("algo").exists());
    assert!(f.accepted_datasets().is_empty());

    // A new computation starts; then the stopped run comes back late.
    f.send_manifest(plan.manifest(&f.parties)).await;
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    f.runner.release();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    let events = f.events(8).await;
    assert_eq!(
        events[4..],
        [
            ("Running".to_string(), "InProgress".to_string()),
            ("Stopped".into(), "Stopped".into()),
            ("ReceivingManifest".into(), "InProgress".into()),
            ("ReceivingAlgorithm".into(), "InProgress".into()),
        ]
    );
    assert!(!events.iter().any(|(t, _)| t == "Failed"));
    // The new computation proceeds normally.
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    assert_eq!(f.agent.state(), State::ReceivingData);
}

#[tokio::test]
async fn stop_works_in_every_state_and_a_foreign_id_is_refused() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    // In ReceivingManifest.
    let r = f.agent.stop("").await;
    assert_eq!(r.message, "");
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    f.send_manifest(plan.manifest(&f.parties)).await;
    let r = f.agent.stop("another").await;
    assert!(
        r.message.contains("is not the current one"),
        "{}",
        r.message
    );
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    assert_eq!(f.agent.stop(COMPUTATION).await.message, "");
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    // After Complete.
    through_uploads(&mut f, &plan).await;
    f.wait_state(State::ConsumingResults).await;
    let (alice, bob) = (f.parties.alice.clone(), f.parties.bob.clone());
    result_signed(&mut f.client, &alice).await.unwrap();
    result_signed(&mut f.client, &bob).await.unwrap();
    f.wait_state(State::Complete).await;
    assert_eq!(f.agent.stop(COMPUTATION).await.message, "");
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    assert!(!f.work().join("results.zip").exists());
}

#[tokio::test]
async fn bad_manifests_are_refused_naming_the_field_and_the_agent_stays_ready() {
    let f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    let mut short = plan.manifest(&f.parties);
    short.datasets[0].hash.pop();
    f.send_manifest(short).await;
    let mut no_algo = plan.manifest(&f.parties);
    no_algo.algorithm = None;
    f.send_manifest(no_algo).await;
    let mut bad_key = plan.manifest(&f.parties);
    bad_key.result_consumers[1].user_key = b"not a key".to_vec();
    f.send_manifest(bad_key).await;
    let mut dup = plan.manifest(&f.parties);
    dup.datasets[1].filename = "iris.csv".into();
    f.send_manifest(dup).await;
    let mut slash = plan.manifest(&f.parties);
    slash.datasets[1].filename = "../wine.csv".into();
    f.send_manifest(slash).await;
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    let errors: Vec<String> = f.run_responses().into_iter().map(|(_, e)| e).collect();
    assert_eq!(errors.len(), 5);
    assert!(
        errors[0].contains("datasets[0].hash: 31 bytes, expected 32 (SHA3-256)"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("algorithm: missing"), "{}", errors[1]);
    assert!(
        errors[2].contains("result_consumers[1].user_key"),
        "{}",
        errors[2]
    );
    assert!(errors[3].contains("datasets[1].filename"), "{}", errors[3]);
    assert!(errors[4].contains("datasets[1].filename"), "{}", errors[4]);
    // A good one is then accepted, and a re-delivery is ignored.
    f.send_manifest(plan.manifest(&f.parties)).await;
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    let intake = f
        .agent
        .submit_manifest(ManifestSource::Wire(Box::new(plan.manifest(&f.parties))));
    assert!(matches!(intake, Intake::Ignored { .. }), "{intake:?}");
    let responses = f.run_responses();
    assert_eq!(responses.len(), 6);
    assert_eq!(responses[5], (COMPUTATION.to_string(), String::new()));
}

#[tokio::test]
async fn chunked_manifests_reassemble_and_partial_ones_are_dropped_after_30_s() {
    let f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let bytes = Plan::simple().manifest(&f.parties).encode_to_vec();
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    let t0 = Instant::now();
    f.agent
        .handle_server_message(chunk_msg(head, false), t0)
        .await;
    assert!(
        f.agent
            .expire_partial_manifests(t0 + Duration::from_secs(29))
            .is_empty()
    );
    assert_eq!(
        f.agent
            .expire_partial_manifests(t0 + Duration::from_secs(30)),
        [COMPUTATION]
    );
    // The tail alone is no manifest: refused for this id, agent ready.
    f.agent
        .handle_server_message(chunk_msg(tail, true), t0 + Duration::from_secs(31))
        .await;
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    let r = f.run_responses();
    assert_eq!(r.len(), 1);
    assert!(r[0].1.contains("may be corrupted"), "{}", r[0].1);
    // Resent in full, with an empty last chunk: accepted.
    let t1 = t0 + Duration::from_secs(40);
    f.agent
        .handle_server_message(chunk_msg(head, false), t1)
        .await;
    f.agent
        .handle_server_message(chunk_msg(tail, false), t1)
        .await;
    f.agent
        .handle_server_message(chunk_msg(&[], true), t1)
        .await;
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
}

#[tokio::test]
async fn requirements_need_a_declared_hash() {
    let reqs = b"numpy==2.1.0\n".to_vec();
    // Not declared: refused.
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;
    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        Some(sha3(&reqs)),
    );
    assert_status(
        algo(
            &mut f.client,
            &Auth::Signed(v),
            &plan.algorithm,
            Some(&reqs),
            &[],
        )
        .await,
        Code::FailedPrecondition,
        "the manifest declares no requirements_hash",
    );
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);

    // Declared: the matching file is accepted and handed to the runner.
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan {
        requirements_hash: Some(sha3(&reqs)),
        datasets: vec![],
        ..Plan::simple()
    };
    f.send_manifest(plan.manifest(&f.parties)).await;
    let other = b"evil==6.6.6\n".to_vec();
    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        Some(sha3(&other)),
    );
    assert_status(
        algo(
            &mut f.client,
            &Auth::Signed(v),
            &plan.algorithm,
            Some(&other),
            &[],
        )
        .await,
        Code::InvalidArgument,
        "requirements hash does not match manifest",
    );
    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        None,
    );
    assert_status(
        algo(&mut f.client, &Auth::Signed(v), &plan.algorithm, None, &[]).await,
        Code::InvalidArgument,
        "carries no requirements",
    );
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        Some(sha3(&reqs)),
    );
    algo(
        &mut f.client,
        &Auth::Signed(v),
        &plan.algorithm,
        Some(&reqs),
        &[("algo_type", "python")],
    )
    .await
    .unwrap();
    // No datasets: the algorithm starts the run.
    f.wait_state(State::ConsumingResults).await;
    let run = f.runner.runs.lock().unwrap()[0].clone();
    assert_eq!(run.request.algo_type, "python");
    assert_eq!(run.requirements.as_deref(), Some(reqs.as_slice()));
    assert_eq!(
        run.request.requirements_path,
        f.work().join("requirements.txt").to_str().unwrap()
    );
}

#[tokio::test]
async fn legacy_role_signatures_only_when_enabled() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;
    let sig = legacy(&f.parties.algo, "algorithm-provider");
    assert_status(
        algo(
            &mut f.client,
            &Auth::Legacy(sig),
            &plan.algorithm,
            None,
            &[],
        )
        .await,
        Code::Unauthenticated,
        "legacy authentication is not enabled",
    );

    let mut f = Fixture::start_with(Behaviour::Succeed(vec![]), |c| c.legacy_auth = true).await;
    f.send_manifest(plan.manifest(&f.parties)).await;
    let sig = legacy(&f.parties.algo, "algorithm-provider");
    // The Go CLI sends no algo_type: it defaults to bin.
    algo(
        &mut f.client,
        &Auth::Legacy(sig),
        &plan.algorithm,
        None,
        &[],
    )
    .await
    .unwrap();
    let (name, bytes, _) = &plan.datasets[0];
    // The wine provider's role signature does not authorise iris.csv.
    let wine_sig = legacy(&f.parties.wine, "data-provider");
    assert_status(
        data(&mut f.client, &Auth::Legacy(wine_sig), name, bytes, false).await,
        Code::Unauthenticated,
        "not declared for this dataset",
    );
    assert!(f.accepted_datasets().is_empty());
    let iris_sig = legacy(&f.parties.iris, "data-provider");
    data(&mut f.client, &Auth::Legacy(iris_sig), name, bytes, false)
        .await
        .unwrap();
    assert_eq!(f.accepted_datasets(), ["iris.csv"]);
}

#[tokio::test]
async fn state_requests_and_attestation_without_a_provider() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    f.agent
        .handle_server_message(
            ServerStreamMessage {
                message: Some(server_stream_message::Message::AgentStateReq(
                    AgentStateReq { id: "q".into() },
                )),
            },
            Instant::now(),
        )
        .await;
    let res: Vec<_> = f
        .control
        .all()
        .into_iter()
        .filter_map(|m| match m.message {
            Some(client_stream_message::Message::AgentStateRes(r)) => Some((r.id, r.state)),
            _ => None,
        })
        .collect();
    assert_eq!(res, [("q".to_string(), "ReceivingManifest".to_string())]);
    let r = f
        .client
        .attestation(cocos_proto::agent::AttestationRequest::default())
        .await;
    assert_status(
        r.map(|_| ()),
        Code::FailedPrecondition,
        NO_ATTESTATION_PROVIDER,
    );
    let r = f
        .client
        .azure_attestation_token(cocos_proto::agent::AttestationTokenRequest::default())
        .await;
    assert_status(
        r.map(|_| ()),
        Code::FailedPrecondition,
        NO_ATTESTATION_PROVIDER,
    );
    let r = f
        .client
        .ima_measurements(cocos_proto::agent::ImaMeasurementsRequest::default())
        .await;
    assert_status(
        r.map(|_| ()),
        Code::FailedPrecondition,
        NO_ATTESTATION_PROVIDER,
    );
    // gRPC health, as the Go CLI checks it.
    let mut health = tonic_health::pb::health_client::HealthClient::new(f.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "agent".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn a_manifest_file_runs_without_a_management_service() {
    let dir = tempfile::tempdir().unwrap();
    let parties = Parties::new();
    let plan = Plan::simple();
    let m = plan.manifest(&parties);
    // The JSON form of agent-api.md §2.2: hashes as arrays of 32 integers,
    // keys in standard base64.
    use base64::Engine as _;
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    let json = serde_json::json!({
        "id": m.id,
        "name": m.name,
        "description": m.description,
        "datasets": m.datasets.iter().map(|d| serde_json::json!({
            "hash": d.hash, "user_key": b64(&d.user_key), "filename": d.filename,
        })).collect::<Vec<_>>(),
        "algorithm": {
            "hash": m.algorithm.as_ref().unwrap().hash,
            "user_key": b64(&m.algorithm.as_ref().unwrap().user_key),
        },
        "result_consumers": m.result_consumers.iter().map(|c| serde_json::json!({
            "user_key": b64(&c.user_key),
        })).collect::<Vec<_>>(),
    });
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let f = Fixture::start_with(Behaviour::Succeed(vec![]), |c| {
        c.manifest_file = Some(path.clone());
    })
    .await;
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    assert_eq!(f.agent.computation_id(), COMPUTATION);

    // A file with a 31-byte hash: refused, naming the field.
    let mut bad = json.clone();
    bad["algorithm"]["hash"] = serde_json::json!(vec![0u8; 31]);
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let f = Fixture::start_with(Behaviour::Succeed(vec![]), |c| {
        c.manifest_file = Some(path.clone());
    })
    .await;
    assert_eq!(f.agent.state(), State::ReceivingManifest);
    let r = f.run_responses();
    assert!(r[0].1.contains("algorithm.hash: 31 bytes"), "{r:?}");
}

#[tokio::test]
async fn a_consumer_declared_twice_completes_both_slots_with_one_fetch() {
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    let mut m: ComputationRunReq = plan.manifest(&f.parties);
    m.result_consumers[1].user_key = der(&f.parties.alice);
    f.send_manifest(m).await;
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    let (iris, wine) = (f.parties.iris.clone(), f.parties.wine.clone());
    data_signed(&mut f.client, &iris, "iris.csv", &plan.datasets[0].1, false)
        .await
        .unwrap();
    data_signed(&mut f.client, &wine, "wine.csv", &plan.datasets[1].1, false)
        .await
        .unwrap();
    f.wait_state(State::ConsumingResults).await;
    let alice = f.parties.alice.clone();
    let (size, zip) = result_signed(&mut f.client, &alice).await.unwrap();
    // An empty results directory is the 22-byte empty zip.
    assert_eq!((size, zip.len()), (22, 22));
    assert!(python_unzip(&zip).is_empty());
    f.wait_state(State::Complete).await;
}

#[tokio::test]
async fn a_broken_upload_stream_leaves_nothing_and_a_retry_succeeds() {
    use cocos_proto::agent::AlgoRequest;
    use tonic::metadata::MetadataValue;
    let mut f = Fixture::start(Behaviour::Succeed(vec![])).await;
    let plan = Plan::simple();
    f.send_manifest(plan.manifest(&f.parties)).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<AlgoRequest>(4);
    let v = signed(
        &f.parties.algo,
        Rpc::Algo,
        "",
        Some(sha3(&plan.algorithm)),
        None,
    );
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert(
        cocos_auth::AUTH_METADATA,
        MetadataValue::try_from(v.as_str()).unwrap(),
    );
    let mut client = f.client.clone();
    let call = tokio::spawn(async move { client.algo(req).await });
    tx.send(AlgoRequest {
        algorithm: plan.algorithm[..5].to_vec(),
        requirements: vec![],
    })
    .await
    .unwrap();
    // The upload is being written to disk...
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.staging_entries() != 1 {
        assert!(Instant::now() < deadline, "upload never reached the disk");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ... when the client goes away mid-stream.
    call.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.staging_entries() != 0 {
        assert!(Instant::now() < deadline, "partial upload left behind");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tx);
    assert_eq!(f.agent.state(), State::ReceivingAlgorithm);
    assert!(!f.work().join("algo").exists());
    algo_signed(&mut f, |p| &p.algo, &plan.algorithm)
        .await
        .unwrap();
    assert_eq!(f.agent.state(), State::ReceivingData);
}

#[tokio::test]
async fn a_large_result_streams_in_1_mib_chunks() {
    // 2.5 MiB of an LCG's bytes (incompressible, and the zip stores anyway).
    let mut x = 0x2545_f491u32;
    let big: Vec<u8> = (0..(5 << 19))
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    let mut f = Fixture::start(Behaviour::Succeed(vec![("big.bin".into(), big.clone())])).await;
    through_uploads(&mut f, &Plan::simple()).await;
    f.wait_state(State::ConsumingResults).await;
    let v = signed(&f.parties.alice, Rpc::Result, "", None, None);
    let mut req = tonic::Request::new(cocos_proto::agent::ResultRequest {});
    req.metadata_mut().insert(
        cocos_auth::AUTH_METADATA,
        tonic::metadata::MetadataValue::try_from(v.as_str()).unwrap(),
    );
    let response = f.client.result(req).await.unwrap();
    let size: usize = response
        .metadata()
        .get("file-size")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut stream = response.into_inner();
    let mut sizes = Vec::new();
    let mut zip = Vec::new();
    while let Some(c) = stream.message().await.unwrap() {
        sizes.push(c.file.len());
        zip.extend_from_slice(&c.file);
    }
    assert_eq!(zip.len(), size);
    assert_eq!(sizes.len(), size.div_ceil(1 << 20));
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n == 1 << 20),
        "{sizes:?}"
    );
    assert_eq!(python_unzip(&zip), [("big.bin".to_string(), big)]);
    assert_eq!(f.agent.consumers_fetched(), [true, false]);
}
