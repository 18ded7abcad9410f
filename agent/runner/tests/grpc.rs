//! The gRPC service on a Unix socket, driven by a tonic client: a run, the
//! argument errors as INVALID_ARGUMENT, one run at a time, Stop, and the
//! socket's handling (stale socket replaced, mode, other files refused).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cocos_proto::runner::StopRequest;
use cocos_proto::runner::computation_runner_client::ComputationRunnerClient;
use cocos_runner::{RunnerError, serve_with_shutdown};
use common::{Fixture, SERIAL, live_in_group};
use hyper_util::rt::TokioIo;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

async fn connect(socket: &Path) -> ComputationRunnerClient<Channel> {
    // The server may not be listening yet (or a stale socket is still
    // there): retry for a while.
    let mut last = None;
    for _ in 0..100 {
        let socket = socket.to_path_buf();
        let connected = Endpoint::from_static("http://runner")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    tokio::net::UnixStream::connect(socket)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await;
        match connected {
            Ok(channel) => return ComputationRunnerClient::new(channel),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {}: {last:?}", socket.display());
}

struct Server {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RunnerError>>,
}

impl Server {
    fn start(fx: &Fixture) -> Self {
        let socket = fx.path().join("runner.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        let config = fx.config();
        let sink = fx.sink.clone();
        let path = socket.clone();
        let task = tokio::spawn(async move {
            serve_with_shutdown(config, &path, sink, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            socket,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
        assert!(!self.socket.exists(), "the socket is removed at shutdown");
    }
}

#[tokio::test]
async fn run_and_errors_over_the_socket() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    // A stale socket from an earlier runner is replaced.
    let stale = std::os::unix::net::UnixListener::bind(fx.path().join("runner.sock")).unwrap();
    drop(stale);
    let server = Server::start(&fx);
    let mut client = connect(&server.socket).await;

    let meta = std::fs::metadata(&server.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    fx.dataset("input.txt", b"42\n");
    let algo = fx.script("cp datasets/input.txt results/answer.txt\necho computed");
    let resp = client
        .run(fx.request("g1", "bin", &algo, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.error, "");
    assert_eq!(resp.exit_code, 0);
    assert_eq!(resp.computation_id, "g1");
    assert_eq!(
        std::fs::read(fx.results().join("answer.txt")).unwrap(),
        b"42\n"
    );
    assert_eq!(fx.stdout("g1"), "computed\n");

    let failing = fx.script("echo 'no luck' >&2\nexit 3");
    let resp = client
        .run(fx.request("g2", "bin", &failing, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.exit_code, 3);
    assert_eq!(resp.error, "algorithm exited with status 3: no luck");

    let mut req = fx.request("g3", "bin", &algo, &[]);
    req.algorithm_path.clear();
    let status = client.run(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "algorithm path is required");

    let status = client
        .run(fx.request("g4", "fortran", &algo, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "unsupported algorithm type: fortran");

    let idle = client
        .stop(StopRequest {
            computation_id: "g1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!idle.stopped);

    server.shutdown().await;
}

#[tokio::test]
async fn one_run_at_a_time_and_stop_over_the_socket() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let server = Server::start(&fx);
    let mut client = connect(&server.socket).await;
    let algo = fx.script("echo $$ > results/pgid\nsleep 300 &\nsleep 300");

    let first = {
        let mut client = client.clone();
        let req = fx.request("long", "bin", &algo, &[]);
        tokio::spawn(async move { client.run(req).await })
    };
    fx.wait_for_file(&fx.results().join("pgid")).await;
    let pgid: i32 = std::fs::read_to_string(fx.results().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let second = client
        .run(fx.request("other", "bin", &algo, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.error, "computation already running");

    let stop = client
        .stop(StopRequest {
            computation_id: "long".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stop.stopped);
    assert_eq!(live_in_group(pgid), Vec::<i32>::new());
    let resp = first.await.unwrap().unwrap().into_inner();
    assert_eq!(resp.error, "computation stopped");
    assert_eq!(resp.exit_code, -1);

    server.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_goes_away_stops_its_run() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let server = Server::start(&fx);
    let mut client = connect(&server.socket).await;
    let algo = fx.script("echo $$ > results/pgid\nsleep 300");
    let run = {
        let mut client = client.clone();
        let req = fx.request("orphan", "bin", &algo, &[]);
        tokio::spawn(async move { client.run(req).await })
    };
    fx.wait_for_file(&fx.results().join("pgid")).await;
    let pgid: i32 = std::fs::read_to_string(fx.results().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    run.abort();
    let _ = run.await;
    // The runner notices the cancelled RPC and tears the run down.
    for _ in 0..100 {
        if live_in_group(pgid).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live_in_group(pgid), Vec::<i32>::new());
    // And is free for the next run.
    let quick = fx.script("true");
    let mut resp = client
        .run(fx.request("next", "bin", &quick, &[]))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..50 {
        if resp.error.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        resp = client
            .run(fx.request("next", "bin", &quick, &[]))
            .await
            .unwrap()
            .into_inner();
    }
    assert_eq!(resp.error, "");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_active_run() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let server = Server::start(&fx);
    let client = connect(&server.socket).await;
    let algo = fx.script("echo $$ > results/pgid\nsleep 300");
    let run = {
        let mut client = client.clone();
        let req = fx.request("busy", "bin", &algo, &[]);
        tokio::spawn(async move { client.run(req).await })
    };
    fx.wait_for_file(&fx.results().join("pgid")).await;
    let pgid: i32 = std::fs::read_to_string(fx.results().join("pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("the server did not shut down while a run was active");
    assert_eq!(live_in_group(pgid), Vec::<i32>::new());
    let resp = run.await.unwrap().unwrap().into_inner();
    assert_eq!(resp.error, "computation stopped");
}

#[tokio::test]
async fn the_server_kills_what_a_previous_runner_left_behind() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    // An algorithm of a runner that died: a process of the run user.
    let mut orphan = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sleep",
            "300",
        ])
        .spawn()
        .expect("setpriv (util-linux) is required");
    let pid = i32::try_from(orphan.id()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(common::alive(pid));
    let server = Server::start(&fx);
    let _client = connect(&server.socket).await;
    let status = tokio::task::spawn_blocking(move || orphan.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_regular_file_in_place_of_the_socket_is_refused() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::new();
    let path = fx.path().join("runner.sock");
    std::fs::write(&path, b"not a socket").unwrap();
    let err = serve_with_shutdown(fx.config(), &path, fx.sink.clone(), async {})
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}
