//! The agent services wired together on the host, as in the VM: the real
//! `cocos-agent` processes (agent, runner, log-forwarder, ingress over TLS,
//! egress), configured only through their environment with every path in a
//! per-test directory, a real management service (`cocos-cli cvms serve`,
//! whose JSON lines the tests read), and the uploads and the result
//! download with `cocos-cli` through the ingress — the flow of
//! `scripts/agent-run.sh` without QEMU.
//!
//! Expected values come from the tests themselves and from the documented
//! behaviour (agent-api.md §4: states, statuses, the state after a stop),
//! read back with reference tools (Python's `zipfile`, `/proc`).
//!
//! Needs root (the runner switches to a per-test user, created with
//! `useradd --system` when missing), `openssl`, `python3`, `curl`, and the
//! `cocos-cli` binary (`COCOS_CLI`, or next to `cocos-agent`: build it with
//! `cargo build -p cocos-cli`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    HttpServer, Job, Spec, agent_states, assert_no_process_with, pairs, unique_digits, unzip,
};

/// Time for one step of a computation (upload to event, run to result).
const STEP: Duration = Duration::from_secs(20);

const DATASET: &str = "sepal,petal\n7.0,3.2\n6.4,3.2\n5.9,3.0\n";

/// Starts a management service and the services, and waits for the agent
/// to take the manifest (it then waits for the algorithm).
fn started(spec: Spec) -> Job {
    let mut job = Job::new(spec);
    job.start_cvms();
    job.start_services();
    job.cvms()
        .wait_event("ReceivingAlgorithm", Some("InProgress"), STEP);
    job
}

/// An algorithm that sleeps in three processes, each carrying `marker` in
/// its command line (the shell as its argument, `sleep` as its duration),
/// one of them in a session of its own (out of the algorithm's process
/// group). It says `started` once all three are there.
fn sleeper() -> (String, String) {
    let marker = format!("600.{}", unique_digits());
    let script = "#!/bin/sh\n\
                  sleep \"$1\" &\n\
                  setsid sleep \"$1\" &\n\
                  echo \"started $1\"\n\
                  sleep \"$1\"\n"
        .to_string();
    (script, marker)
}

#[test]
fn a_binary_algorithm_runs_to_its_result_and_complete() {
    let t0 = Instant::now();
    let mut spec = Spec::new(
        "ok",
        "#!/bin/sh\n\
         set -e\n\
         tr a-z A-Z < datasets/iris.csv > results/upper.csv\n\
         printf '%s\\n' \"$@\" > results/args.txt\n\
         echo wired-ok-done\n",
    );
    spec.args = vec!["one".into(), "two".into()];
    spec.datasets = vec![("iris.csv".into(), DATASET.as_bytes().to_vec())];
    let job = started(spec);
    job.upload_algorithm();
    job.cvms()
        .wait_event("ReceivingData", Some("InProgress"), STEP);
    job.upload_datasets();
    job.cvms()
        .wait_event("ConsumingResults", Some("Ready"), STEP);

    let (code, out, zip) = job.fetch_result();
    assert_eq!(code, 0, "cocos-cli result: {out}");
    let files = unzip(&zip);
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        ["args.txt", "upper.csv"],
        "the result zip's members"
    );
    assert_eq!(
        String::from_utf8_lossy(&files["upper.csv"]),
        DATASET.to_uppercase()
    );
    assert_eq!(String::from_utf8_lossy(&files["args.txt"]), "one\ntwo\n");

    job.cvms().wait_event("Complete", Some("Completed"), STEP);
    // agent-api §4: the states in order, each event's status as documented
    // (ReceivingManifest's status is the agent's own choice).
    let mut seen = agent_states(&job.cvms().events(), false);
    assert_eq!(
        seen.first().map(|p| p.0.as_str()),
        Some("ReceivingManifest")
    );
    seen.remove(0);
    assert_eq!(
        seen,
        pairs(&[
            ("ReceivingAlgorithm", "InProgress"),
            ("ReceivingData", "InProgress"),
            ("Running", "Starting"),
            ("Running", "InProgress"),
            ("Running", "Completed"),
            ("ConsumingResults", "Ready"),
            ("Complete", "Completed"),
        ])
    );
    // The algorithm's stdout reached the management service as logs.
    assert!(
        job.cvms()
            .log_messages()
            .iter()
            .any(|m| m.contains("wired-ok-done")),
        "the algorithm's output is not among the logs"
    );
    eprintln!(
        "a_binary_algorithm_runs_to_its_result_and_complete: {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_failing_algorithm_ends_failed_with_its_error_text() {
    let t0 = Instant::now();
    let text = format!("wired: cannot open the model {}", unique_digits());
    let job = started(Spec::new(
        "fail",
        &format!("#!/bin/sh\necho '{text}' >&2\nexit 1\n"),
    ));
    job.upload_algorithm();
    let failed = job.cvms().wait_event("Failed", None, STEP);
    assert_eq!(failed.status, "Failed");
    assert_eq!(failed.computation_id, job.id);
    let details: serde_json::Value = serde_json::from_str(&failed.details)
        .unwrap_or_else(|e| panic!("Failed details are not JSON ({e}): {:?}", failed.details));
    assert!(
        details["error"].as_str().is_some_and(|e| !e.is_empty()),
        "Failed carries no error: {details}"
    );
    // The error text the algorithm wrote reached the management service.
    let in_logs = job.cvms().log_messages().iter().any(|m| m.contains(&text));
    let in_events = job
        .cvms()
        .events()
        .iter()
        .any(|e| e.details.contains(&text));
    assert!(
        in_logs || in_events,
        "{text:?} is neither in the logs nor in event details"
    );
    // No dataset: ReceivingAlgorithm leads straight to Running (§4).
    let seen = agent_states(&job.cvms().events(), false);
    let types: Vec<&str> = seen.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        types,
        [
            "ReceivingManifest",
            "ReceivingAlgorithm",
            "Running",
            "Running",
            "Running",
            "Failed"
        ],
        "{seen:?}"
    );
    assert_eq!(seen[4], ("Running".into(), "Failed".into()));
    // In Failed, Result answers with the run's error (§4), not a zip.
    let (code, out, _) = job.fetch_result();
    assert_eq!(code, 1, "cocos-cli result in Failed: {out}");
    eprintln!(
        "a_failing_algorithm_ends_failed_with_its_error_text: {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_run_past_its_timeout_fails_and_leaves_no_process() {
    let t0 = Instant::now();
    let (script, marker) = sleeper();
    let mut spec = Spec::new("timeout", &script);
    spec.args = vec![marker.clone()];
    spec.timeout_secs = 2;
    let job = started(spec);
    job.upload_algorithm();
    job.cvms().wait_for("the algorithm's start", STEP, |v| {
        v["type"] == "agent_log"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("started {marker}")))
    });
    let running = Instant::now();
    // Visible in /proc, or the check below would prove nothing.
    common::wait_processes_with(&marker, 4, STEP);
    let failed = job.cvms().wait_event("Failed", None, STEP);
    let took = running.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the 2 s limit ended the run only after {took:?}"
    );
    let details = failed.details.to_lowercase();
    assert!(
        details.contains("timed out") || details.contains("timeout"),
        "Failed does not say it timed out: {:?}",
        failed.details
    );
    assert_no_process_with(&marker, Duration::from_secs(2));
    eprintln!(
        "a_run_past_its_timeout_fails_and_leaves_no_process: {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_stop_during_the_run_ends_it_and_the_agent_waits_for_a_manifest() {
    let t0 = Instant::now();
    let (script, marker) = sleeper();
    let mut spec = Spec::new("stop", &script);
    spec.args = vec![marker.clone()];
    let mut job = started(spec);
    job.upload_algorithm();
    job.cvms().wait_for("the algorithm's start", STEP, |v| {
        v["type"] == "agent_log"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("started {marker}")))
    });
    // The shell and its three sleeps (the last starts after `started`).
    common::wait_processes_with(&marker, 4, STEP);
    job.cvms_mut().send("stop");
    let res = job.cvms().wait_for("stopComputationRes", STEP, |v| {
        v["type"] == "stopComputationRes"
    });
    assert_eq!(res["computation_id"], job.id.as_str(), "{res}");
    assert_eq!(res["message"], "", "the stop reported an error: {res}");
    assert_no_process_with(&marker, Duration::from_secs(5));

    // agent-api §4: a Stopped event, then the agent is back in
    // ReceivingManifest; it says so when asked.
    job.cvms().wait_event("Stopped", Some("Stopped"), STEP);
    job.cvms_mut().send("state");
    let state = job
        .cvms()
        .wait_for("agentStateRes", STEP, |v| v["type"] == "agentStateRes");
    assert_eq!(state["state"], "ReceivingManifest", "{state}");
    let seen = agent_states(&job.cvms().events(), false);
    let stopped = seen
        .iter()
        .position(|p| p.0 == "Stopped")
        .expect("Stopped among the events");
    assert_eq!(
        seen[stopped + 1..]
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>(),
        ["ReceivingManifest"],
        "after the stop: {seen:?}"
    );
    eprintln!(
        "a_stop_during_the_run_ends_it_and_the_agent_waits_for_a_manifest: {:?}",
        t0.elapsed()
    );
}

#[test]
fn logs_and_events_wait_for_the_management_service_and_arrive_in_order() {
    let t0 = Instant::now();
    const LINES: usize = 25;
    let mut job = started(Spec::new(
        "down",
        &format!(
            "#!/bin/sh\n\
             i=1\n\
             while [ $i -le {LINES} ]; do echo \"wired-seq $i.\"; i=$((i+1)); sleep 0.02; done\n\
             echo done > results/done.txt\n"
        ),
    ));
    // The manifest is taken; the management service goes away.
    job.cvms_mut().kill();
    let first = job.cvms.take().unwrap();
    job.upload_algorithm();
    // The whole computation happens while nobody listens: run, result,
    // fetch (so Complete too).
    let deadline = Instant::now() + STEP;
    loop {
        let (code, out, _) = job.fetch_result();
        if code == 0 {
            break;
        }
        assert!(
            code == 1 && out.contains("not") && Instant::now() < deadline,
            "cocos-cli result: {code}: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    job.services.check_alive("log-forwarder");
    // Back on the same address.
    job.start_cvms();
    job.cvms().wait_event("Complete", Some("Completed"), STEP);

    // Every event, in order: what the first service printed, then what the
    // second got (which may repeat what the first never confirmed).
    let mut events = first.events();
    events.extend(job.cvms().events());
    let mut seen = agent_states(&events, true);
    assert_eq!(
        seen.first().map(|p| p.0.as_str()),
        Some("ReceivingManifest")
    );
    seen.remove(0);
    assert_eq!(
        seen,
        pairs(&[
            ("ReceivingAlgorithm", "InProgress"),
            ("Running", "Starting"),
            ("Running", "InProgress"),
            ("Running", "Completed"),
            ("ConsumingResults", "Ready"),
            ("Complete", "Completed"),
        ])
    );
    // The numbered lines, all of them, in order (first appearances: a
    // replay may repeat some).
    let text: String = job.cvms().log_messages().concat();
    let mut numbers: Vec<usize> = Vec::new();
    for piece in text.split("wired-seq ").skip(1) {
        let n: usize = piece
            .split('.')
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("a mangled line: {piece:?}"));
        if !numbers.contains(&n) {
            numbers.push(n);
        }
    }
    assert_eq!(numbers, (1..=LINES).collect::<Vec<_>>());
    eprintln!(
        "logs_and_events_wait_for_the_management_service_and_arrive_in_order: {:?}",
        t0.elapsed()
    );
}

#[test]
fn the_egress_proxy_refuses_what_is_not_allowlisted() {
    let t0 = Instant::now();
    let curl = std::process::Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|o| o.status.success()),
        "curl is needed by the algorithm: apt-get install -y curl"
    );
    let denied_body = format!("wired-denied-{}\n", unique_digits());
    let allowed_body = format!("wired-allowed-{}\n", unique_digits());
    let denied = HttpServer::start(&denied_body);
    let allowed = HttpServer::start(&allowed_body);
    // NO_PROXY (localhost,127.0.0.1) would send these requests past the
    // proxy: --noproxy '' makes curl use it anyway. -p: a CONNECT tunnel.
    let mut spec = Spec::new(
        "egress",
        "#!/bin/sh\n\
         p=\"$HTTP_PROXY\"\n\
         printf '%s' \"$p\" > results/proxy.txt\n\
         c() { curl -sS --max-time 10 --noproxy '' -x \"$p\" \"$@\"; }\n\
         c -o /dev/null -w '%{http_code}' \"http://127.0.0.1:$1/\" > results/denied-http.txt || true\n\
         c -p -o /dev/null -w '%{http_connect}' \"http://127.0.0.1:$1/\" > results/denied-connect.txt || true\n\
         c \"http://127.0.0.1:$2/\" > results/allowed-http.txt\n\
         c -p \"http://127.0.0.1:$2/\" > results/allowed-connect.txt\n",
    );
    spec.args = vec![
        denied.addr.port().to_string(),
        allowed.addr.port().to_string(),
    ];
    spec.egress_allow = format!("127.0.0.1:{}", allowed.addr.port());
    let job = started(spec);
    job.upload_algorithm();
    let done = job.cvms().wait_for("the end of the run", STEP, |v| {
        v["type"] == "agent_event"
            && (v["event_type"] == "ConsumingResults" || v["event_type"] == "Failed")
    });
    assert_eq!(done["event_type"], "ConsumingResults", "{done}");
    let (code, out, zip) = job.fetch_result();
    assert_eq!(code, 0, "cocos-cli result: {out}");
    let files = unzip(&zip);
    let file = |n: &str| String::from_utf8_lossy(&files[n]).into_owned();
    assert_eq!(file("proxy.txt"), format!("http://{}", job.egress));
    assert_eq!(file("denied-http.txt"), "403");
    assert_eq!(file("denied-connect.txt"), "403");
    assert_eq!(file("allowed-http.txt"), allowed_body);
    assert_eq!(file("allowed-connect.txt"), allowed_body);
    assert_eq!(
        denied.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the proxy connected to the server that is not allowlisted"
    );
    assert_eq!(allowed.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    eprintln!(
        "the_egress_proxy_refuses_what_is_not_allowlisted: {:?}",
        t0.elapsed()
    );
}
