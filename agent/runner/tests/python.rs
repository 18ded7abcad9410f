//! `python` algorithms: a venv per run, requirements from a local wheel (no
//! network), errors, and Stop during `pip install`.
//!
//! Needs Debian's python3 with venv and pip: `apt-get install -y
//! python3-venv python3-pip`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, SERIAL, nobody_ids};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";

fn require_venv() {
    let ok = std::process::Command::new(PYTHON)
        .args(["-m", "ensurepip", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{PYTHON} with venv/ensurepip is required: apt-get install -y python3-venv python3-pip"
    );
}

/// Writes a pure-Python wheel `cocos_testpkg-1.0-py3-none-any.whl` into
/// `dir` with Python's own zipfile (the reference writer), per the wheel
/// spec (PEP 427): the package, METADATA, WHEEL, and RECORD.
fn build_wheel(dir: &Path) -> PathBuf {
    let script = r#"
import base64, hashlib, sys, zipfile
out = sys.argv[1]
files = {
    "cocos_testpkg/__init__.py": 'VALUE = "from-the-wheel"\n',
    "cocos_testpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: cocos_testpkg\nVersion: 1.0\n",
    "cocos_testpkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: cocos-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(out, "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("cocos_testpkg-1.0.dist-info/RECORD,,")
    z.writestr("cocos_testpkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let wheel = dir.join("cocos_testpkg-1.0-py3-none-any.whl");
    let status = std::process::Command::new(PYTHON)
        .args(["-c", script])
        .arg(&wheel)
        .status()
        .unwrap();
    assert!(status.success());
    let mut perms = std::fs::metadata(&wheel).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&wheel, perms).unwrap();
    wheel
}

/// Scratch directories left in the fixture (there must be none after a run).
fn scratch_left(fx: &Fixture) -> Vec<String> {
    std::fs::read_dir(fx.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cocos-run-"))
        .collect()
}

#[tokio::test]
async fn python_without_requirements_runs_in_a_venv() {
    let _serial = SERIAL.lock().await;
    require_venv();
    let fx = Fixture::new();
    fx.dataset("numbers.txt", b"1\n2\n3\n");
    let algo = fx.write_algorithm(
        "algo.py",
        b"import os, sys\n\
          total = sum(int(l) for l in open('datasets/numbers.txt'))\n\
          open('results/sum.txt', 'w').write(str(total) + ' ' + ' '.join(sys.argv[1:]))\n\
          print('in venv:', sys.prefix != sys.base_prefix)\n\
          print('uid:', os.getuid())\n",
    );
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("p", "python", &algo, &["a", "b c"]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(
        std::fs::read_to_string(fx.results().join("sum.txt")).unwrap(),
        "6 a b c"
    );
    assert_eq!(
        fx.stdout("p"),
        format!("in venv: True\nuid: {}\n", nobody_ids().0)
    );
    assert_eq!(scratch_left(&fx), Vec::<String>::new());
}

#[tokio::test]
async fn python_with_requirements_installs_a_local_wheel() {
    let _serial = SERIAL.lock().await;
    require_venv();
    let fx = Fixture::new();
    let wheel = build_wheel(fx.path());
    let requirements = fx.path().join("requirements.txt");
    std::fs::write(&requirements, format!("--no-index\n{}\n", wheel.display())).unwrap();
    let algo = fx.write_algorithm(
        "algo.py",
        b"import cocos_testpkg\nopen('results/value.txt', 'w').write(cocos_testpkg.VALUE)\n",
    );
    let runner = fx.runner(fx.config());
    let mut req = fx.request("p", "python", &algo, &[]);
    req.requirements_path = requirements.display().to_string();
    let resp = runner.run(req).await.unwrap();
    assert_eq!(resp.error, "", "stderr: {}", fx.stderr("p"));
    assert_eq!(
        std::fs::read_to_string(fx.results().join("value.txt")).unwrap(),
        "from-the-wheel"
    );
    assert!(
        fx.stdout("p")
            .contains("Successfully installed cocos-testpkg-1.0"),
        "{}",
        fx.stdout("p")
    );
    assert_eq!(scratch_left(&fx), Vec::<String>::new());
}

#[tokio::test]
async fn a_failing_requirement_fails_the_run_before_the_algorithm() {
    let _serial = SERIAL.lock().await;
    require_venv();
    let fx = Fixture::new();
    let requirements = fx.path().join("requirements.txt");
    std::fs::write(&requirements, "--no-index\nno-such-package-cocos==1.0\n").unwrap();
    let algo = fx.write_algorithm("algo.py", b"open('results/ran', 'w').write('yes')\n");
    let runner = fx.runner(fx.config());
    let mut req = fx.request("p", "python", &algo, &[]);
    req.requirements_path = requirements.display().to_string();
    let resp = runner.run(req).await.unwrap();
    assert!(
        resp.error
            .starts_with("pip install -r requirements failed: exit status 1: "),
        "{}",
        resp.error
    );
    assert!(
        resp.error.contains("no-such-package-cocos"),
        "{}",
        resp.error
    );
    assert!(!fx.results().join("ran").exists());
}

#[tokio::test]
async fn a_python_exception_is_an_error_with_its_last_line() {
    let _serial = SERIAL.lock().await;
    require_venv();
    let fx = Fixture::new();
    let algo = fx.write_algorithm("algo.py", b"raise ValueError('bad dataset')\n");
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("p", "python", &algo, &[]))
        .await
        .unwrap();
    assert_eq!(resp.exit_code, 1);
    assert!(
        resp.error.starts_with("algorithm exited with status 1: "),
        "{}",
        resp.error
    );
    assert!(
        resp.error.ends_with("ValueError: bad dataset"),
        "{}",
        resp.error
    );
}

#[tokio::test]
async fn stop_during_pip_install_kills_pip() {
    let _serial = SERIAL.lock().await;
    require_venv();
    let fx = Fixture::new();
    // A package index on loopback that accepts connections and never
    // answers: pip waits on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let _ = accepted_tx.send(());
            held.push(stream);
        }
    });
    let requirements = fx.path().join("requirements.txt");
    let mut file = std::fs::File::create(&requirements).unwrap();
    writeln!(
        file,
        "--index-url http://127.0.0.1:{port}/simple\nsome-package"
    )
    .unwrap();
    let algo = fx.write_algorithm("algo.py", b"open('results/ran', 'w').write('yes')\n");
    let runner = fx.runner(fx.config());
    let mut req = fx.request("p", "python", &algo, &[]);
    req.requirements_path = requirements.display().to_string();
    let run = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run(req).await })
    };
    // pip has connected: it is running.
    tokio::task::spawn_blocking(move || accepted_rx.recv_timeout(Duration::from_secs(120)))
        .await
        .unwrap()
        .expect("pip never connected to the local index");
    let uid: u32 = nobody_ids().0.parse().unwrap();
    assert!(
        !processes_of(uid).is_empty(),
        "pip is not running as nobody"
    );

    assert!(runner.stop("p").await);
    assert_eq!(
        processes_of(uid),
        Vec::<i32>::new(),
        "processes of nobody survive Stop"
    );
    let resp = run.await.unwrap().unwrap();
    assert_eq!(resp.error, "computation stopped");
    assert!(!fx.results().join("ran").exists());
    assert_eq!(scratch_left(&fx), Vec::<String>::new());
}

/// Live processes whose real uid is `uid` (from /proc/PID/status).
fn processes_of(uid: u32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|u| u.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if real == Some(uid) && !zombie {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn pip_goes_through_the_egress_proxy() {
    let _serial = SERIAL.lock().await;
    require_venv();
    let fx = Fixture::new();
    // A proxy on loopback that records the first request line and answers
    // 404: pip must send it the absolute-form request for the index.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut reader, &mut line);
            let _ = line_tx.send(line);
            let _ = (&stream).write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let requirements = fx.path().join("requirements.txt");
    std::fs::write(
        &requirements,
        "--index-url http://index.cocos.invalid/simple\n--trusted-host index.cocos.invalid\nsome-package\n",
    )
    .unwrap();
    let algo = fx.write_algorithm("algo.py", b"print('ran')\n");
    let runner = fx.runner(cocos_runner::RunnerConfig {
        egress_proxy: Some(format!("http://127.0.0.1:{port}")),
        ..fx.config()
    });
    let mut req = fx.request("p", "python", &algo, &[]);
    req.requirements_path = requirements.display().to_string();
    let resp = runner.run(req).await.unwrap();
    assert!(
        resp.error.starts_with("pip install -r requirements failed"),
        "{}",
        resp.error
    );
    let line = line_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| {
            panic!(
                "pip never reached the proxy: {}\n{}",
                resp.error,
                fx.stdout("p")
            )
        });
    assert!(
        line.starts_with("GET http://index.cocos.invalid/simple/some-package/ HTTP/1.1"),
        "{line:?}"
    );
}
