//! `bin` algorithms through the library: results, exit statuses, signals,
//! timeout, Stop, the clean environment, the run user, read-only datasets,
//! one run at a time, argument checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cocos_runner::RunnerConfig;
use common::{Fixture, SERIAL, alive, live_in_group, nobody_ids};
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test]
async fn bin_writes_results_from_datasets_and_streams_stdout() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    fx.dataset("input.txt", b"alpha\nbeta\n");
    let algo = fx.script(
        "set -e\ncat datasets/input.txt datasets/input.txt > results/out.txt\nfor a in \"$@\"; do echo \"arg:$a\"; done",
    );
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("c1", "bin", &algo, &["one", "two words", "three"]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(resp.exit_code, 0);
    assert_eq!(resp.computation_id, "c1");
    let out = std::fs::read(fx.results().join("out.txt")).unwrap();
    assert_eq!(out, b"alpha\nbeta\nalpha\nbeta\n");
    // The arguments arrive in order, each whole; stdout pieces are lines.
    assert_eq!(fx.stdout("c1"), "arg:one\narg:two words\narg:three\n");
    assert_eq!(
        fx.sink.stdout_pieces("c1"),
        vec![
            b"arg:one\n".to_vec(),
            b"arg:two words\n".to_vec(),
            b"arg:three\n".to_vec()
        ]
    );
}

#[tokio::test]
async fn binary_is_an_alias_of_bin() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.script("echo ran");
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("c", "binary", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(fx.stdout("c"), "ran\n");
}

#[tokio::test]
async fn long_stdout_lines_are_cut_into_1_kib_pieces() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    // 3000 'x' and a newline, from printf and head (reference tools).
    let algo = fx.script("head -c 3000 /dev/zero | tr '\\0' x; echo");
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    let pieces = fx.sink.stdout_pieces("c");
    assert!(
        pieces.iter().all(|p| p.len() <= 1024),
        "{:?}",
        pieces.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut expected = vec![b'x'; 3000];
    expected.push(b'\n');
    assert_eq!(pieces.concat(), expected);
}

#[tokio::test]
async fn exit_status_1_is_an_error_with_the_last_stderr_line() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.script("echo 'warming up' >&2\necho 'model file missing' >&2\nexit 1");
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.exit_code, 1);
    assert_eq!(
        resp.error,
        "algorithm exited with status 1: warming up | model file missing"
    );
    assert_eq!(fx.stderr("c"), "warming up\nmodel file missing\n");
    // stderr raised an AlgorithmRun/Warning event (rate-limited: the second
    // line, 0 ms later, is folded into a closing event).
    let events = fx.sink.events("c");
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|(t, s, _)| t == "AlgorithmRun" && s == "Warning"),
        "{events:?}"
    );
    let first: serde_json::Value = serde_json::from_slice(&events[0].2).unwrap();
    assert_eq!(first["stderr"], "warming up");
}

#[tokio::test]
async fn a_signal_is_named() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.script("kill -SEGV $$");
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.exit_code, -1);
    assert_eq!(resp.error, "algorithm was killed by signal 11 (SIGSEGV)");
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.script("echo $$ > results/pgid\nsleep 300 &\nsleep 300");
    let runner = fx.runner(RunnerConfig {
        run_timeout_secs: 2,
        ..fx.config()
    });
    let started = Instant::now();
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.error, "algorithm timed out after 2 s");
    assert_eq!(resp.exit_code, -1);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let pgid: i32 = std::fs::read_to_string(fx.results().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(live_in_group(pgid), Vec::<i32>::new());
}

#[tokio::test]
async fn stop_kills_the_group_and_escaped_processes() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    // A background child in the group, and one that leaves it with setsid.
    let algo = fx.script(
        "sleep 300 &\nsetsid sleep 301 &\necho $! > results/escaped\necho $$ > results/pgid\nsleep 302",
    );
    let runner = fx.runner(fx.config());
    let run = {
        let runner = runner.clone();
        let req = fx.request("c-stop", "bin", &algo, &[]);
        tokio::spawn(async move { runner.run(req).await })
    };
    fx.wait_for_file(&fx.results().join("pgid")).await;
    let pgid: i32 = std::fs::read_to_string(fx.results().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let escaped: i32 = std::fs::read_to_string(fx.results().join("escaped"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!live_in_group(pgid).is_empty());
    // A Stop for another computation does nothing.
    assert!(!runner.stop("other").await);
    assert!(!live_in_group(pgid).is_empty());

    assert!(runner.stop("c-stop").await);
    // Stop returns once the run is torn down: nothing is left.
    assert_eq!(live_in_group(pgid), Vec::<i32>::new());
    assert!(!alive(escaped), "the setsid'd process {escaped} survived");
    let resp = run.await.unwrap().unwrap();
    assert_eq!(resp.error, "computation stopped");
    assert_eq!(resp.exit_code, -1);
    // Idle now.
    assert!(!runner.stop("c-stop").await);
}

#[tokio::test]
async fn stop_when_idle_is_false() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let runner = fx.runner(fx.config());
    assert!(!runner.stop("c").await);
    assert!(!runner.stop("").await);
}

/// `env` (a copy of /usr/bin/env) as the algorithm prints exactly the
/// environment it got.
fn env_of(stdout: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    vars.sort();
    vars
}

#[tokio::test]
async fn the_environment_is_clean() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.program("/usr/bin/env");
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    let env = env_of(&fx.stdout("c"));
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["HOME", "LANG", "PATH"]);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("LANG"), "C.UTF-8");
    assert_eq!(get("PATH"), "/usr/local/bin:/usr/bin:/bin");
    // HOME is the run's own scratch home, gone after the run.
    let home = get("HOME");
    assert!(home.starts_with(fx.path().to_str().unwrap()), "{home}");
    assert!(
        !std::path::Path::new(&home).exists(),
        "{home} was not removed"
    );
    // Nothing of the runner's own environment leaked: the test process has
    // variables of its own (cargo sets CARGO_* for tests; HOME and PATH
    // differ from ours).
    let ours: Vec<(String, String)> = std::env::vars().collect();
    let foreign: Vec<&(String, String)> = ours
        .iter()
        .filter(|(k, _)| !["HOME", "LANG", "PATH"].contains(&k.as_str()))
        .collect();
    assert!(
        !foreign.is_empty(),
        "the test process has no variable of its own to check for"
    );
    for (k, _) in foreign {
        assert!(
            !keys.contains(&k.as_str()),
            "{k} leaked into the algorithm's environment"
        );
    }
}

#[tokio::test]
async fn the_egress_proxy_is_in_the_environment_when_configured() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.program("/usr/bin/env");
    let runner = fx.runner(RunnerConfig {
        egress_proxy: Some("http://127.0.0.1:3128".into()),
        ..fx.config()
    });
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    let env = env_of(&fx.stdout("c"));
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert!(
            env.contains(&(k.to_owned(), "http://127.0.0.1:3128".to_owned())),
            "{k}: {env:?}"
        );
    }
    assert!(env.contains(&("NO_PROXY".to_owned(), "localhost,127.0.0.1".to_owned())));
}

#[tokio::test]
async fn the_algorithm_runs_as_nobody_without_supplementary_groups() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let (uid, gid) = nobody_ids();
    let algo = fx.program("/usr/bin/id");
    let runner = fx.runner(fx.config());
    for (id, flag, expected) in [("u", "-u", &uid), ("g", "-g", &gid), ("gs", "-G", &gid)] {
        let resp = runner
            .run(fx.request(id, "bin", &algo, &[flag]))
            .await
            .unwrap();
        assert_eq!(resp.error, "");
        assert_eq!(fx.stdout(id).trim(), expected.as_str(), "id {flag}");
    }
}

#[tokio::test]
async fn datasets_are_not_writable_and_results_are() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    fx.dataset("input.txt", b"precious\n");
    std::fs::create_dir(fx.datasets().join("sub")).unwrap();
    fx.dataset("sub/nested.txt", b"nested\n");
    let algo = fx.script(
        "touch datasets/new 2>/dev/null && echo created\n\
         echo x >> datasets/input.txt 2>/dev/null && echo appended\n\
         rm -f datasets/input.txt 2>/dev/null; [ -e datasets/input.txt ] || echo removed\n\
         touch datasets/sub/new 2>/dev/null && echo created-nested\n\
         chmod 777 datasets 2>/dev/null && echo chmod\n\
         cat datasets/sub/nested.txt > results/copy.txt && echo wrote-results",
    );
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(fx.stdout("c"), "wrote-results\n");
    assert_eq!(
        std::fs::read(fx.datasets().join("input.txt")).unwrap(),
        b"precious\n"
    );
    assert!(!fx.datasets().join("new").exists());
    assert_eq!(
        std::fs::read(fx.results().join("copy.txt")).unwrap(),
        b"nested\n"
    );
    // The result file belongs to the run user.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(fx.results().join("copy.txt")).unwrap();
    assert_eq!(meta.uid().to_string(), nobody_ids().0);
}

#[tokio::test]
async fn a_second_run_while_one_is_active_is_refused() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.script("echo started > results/started\nsleep 300");
    let runner = fx.runner(fx.config());
    let first = {
        let runner = runner.clone();
        let req = fx.request("first", "bin", &algo, &[]);
        tokio::spawn(async move { runner.run(req).await })
    };
    fx.wait_for_file(&fx.results().join("started")).await;
    let second = runner
        .run(fx.request("second", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(second.error, "computation already running");
    assert_eq!(second.computation_id, "second");
    assert!(runner.stop("first").await);
    assert_eq!(first.await.unwrap().unwrap().error, "computation stopped");
    // Free again.
    let again = fx.script("true");
    let third = runner
        .run(fx.request("third", "bin", &again, &[]))
        .await
        .unwrap();
    assert_eq!(third.error, "");
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.script("true");
    let runner = fx.runner(fx.config());

    let mut req = fx.request("c", "bin", &algo, &[]);
    req.algorithm_path.clear();
    let status = runner.run(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "algorithm path is required");

    let status = runner
        .run(fx.request("c", "cobol", &algo, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "unsupported algorithm type: cobol");

    let mut req = fx.request("c", "bin", &algo, &[]);
    req.results_dir = "results".into();
    let status = runner.run(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_missing_algorithm_is_a_run_error() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let runner = fx.runner(fx.config());
    let missing = fx.path().join("nope");
    let resp = runner
        .run(fx.request("c", "bin", &missing, &[]))
        .await
        .unwrap();
    assert!(
        resp.error.starts_with("preparing the run: stat "),
        "{}",
        resp.error
    );
    assert_eq!(resp.exit_code, -1);
}

#[tokio::test]
async fn the_run_user_must_exist_and_not_be_root() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let sink = fx.sink.clone();
    let err = cocos_runner::Runner::new(
        RunnerConfig {
            run_user: "no-such-user-cocos".into(),
            ..fx.config()
        },
        sink.clone(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, cocos_runner::RunnerError::UserNotFound(_)),
        "{err}"
    );
    let err = cocos_runner::Runner::new(
        RunnerConfig {
            run_user: "root".into(),
            ..fx.config()
        },
        sink,
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, cocos_runner::RunnerError::RunUserIsRoot(_)),
        "{err}"
    );
}

#[tokio::test]
async fn a_huge_timeout_does_not_overflow() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let algo = fx.script("true");
    let runner = fx.runner(RunnerConfig {
        run_timeout_secs: u64::MAX,
        ..fx.config()
    });
    let resp = runner
        .run(fx.request("c", "bin", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
}
