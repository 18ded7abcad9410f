//! `docker` algorithms against a real Docker Engine. Test images are made
//! locally (no registry): a busybox-static root, `docker import`ed and
//! `docker save`d by the docker CLI.
//!
//! These tests need the engine on /var/run/docker.sock, so they are
//! `#[ignore]`d in a plain `cargo test` (listed as ignored, never passed
//! silently). To run them:
//!
//! ```text
//! agent/runner/tests/docker-setup.sh     # docker.io, busybox-static, dockerd
//! cargo test -p cocos-runner --test docker -- --ignored
//! ```
//!
//! Run that way without an engine, they fail and say why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cocos_runner::RunnerConfig;
use common::{Fixture, SERIAL, nobody_ids};
use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP_HINT: &str = "run agent/runner/tests/docker-setup.sh (installs docker.io and busybox-static, starts dockerd)";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker CLI: {e}; {SETUP_HINT}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}; {SETUP_HINT}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn require_engine() {
    assert!(
        Path::new("/var/run/docker.sock").exists() && docker_ok(&["version"]),
        "no Docker Engine on /var/run/docker.sock: {SETUP_HINT}"
    );
}

/// Imports a busybox root as `tag`, with `cmd` (JSON) as its command, and
/// returns its image id as the engine reports it.
fn import_busybox(dir: &Path, tag: &str, cmd: &str) -> String {
    let root = dir.join(format!("root-{}", tag.replace([':', '/'], "-")));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("/bin/busybox: {e}; {SETUP_HINT}"));
    for applet in ["sh", "cat", "echo", "id", "ls", "sleep", "touch"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join(format!("{}.tar", tag.replace([':', '/'], "-")));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let change = format!("CMD {cmd}");
    docker(&["import", "--change", &change, tar.to_str().unwrap(), tag]);
    docker(&["image", "inspect", "--format", "{{.Id}}", tag])
        .trim()
        .to_owned()
}

/// An archive of `tags` from `docker save`; the images are then removed
/// from the engine so the runner loads them itself.
fn save(dir: &Path, name: &str, tags: &[&str]) -> PathBuf {
    let archive = dir.join(name);
    let mut args = vec!["save", "-o", archive.to_str().unwrap()];
    args.extend_from_slice(tags);
    docker(&args);
    for tag in tags {
        docker(&["rmi", "-f", tag]);
    }
    archive
}

fn containers() -> usize {
    docker(&["ps", "-aq"]).lines().count()
}

fn image_exists(id: &str) -> bool {
    docker_ok(&["image", "inspect", id])
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

#[tokio::test]
#[ignore = "needs a Docker Engine: agent/runner/tests/docker-setup.sh, then --ignored"]
async fn docker_runs_the_archive_image_with_mounts_args_and_user() {
    let _serial = SERIAL.lock().await;
    require_engine();
    let fx = Fixture::new();
    let tag = format!("{}:v1", unique("cocos-runner-test"));
    let id = import_busybox(fx.path(), &tag, r#"["/bin/echo","default"]"#);
    let archive = save(fx.path(), "algo.tar", &[&tag]);
    assert!(!image_exists(&id));
    fx.dataset("input.txt", b"dataset bytes\n");
    let before = containers();

    let runner = fx.runner(fx.config());
    let script = "cat /cocos/datasets/input.txt > /cocos/results/out.txt; id -u; ls /sys/class/net; \
                  touch /cocos/datasets/x 2>/dev/null && echo datasets-writable; echo to-stderr >&2";
    let resp = runner
        .run(fx.request("d", "docker", &archive, &["/bin/sh", "-c", script]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(resp.exit_code, 0);
    assert_eq!(
        std::fs::read(fx.results().join("out.txt")).unwrap(),
        b"dataset bytes\n"
    );
    // Runs as the run user, with no network but loopback, datasets read-only.
    assert_eq!(fx.stdout("d"), format!("{}\nlo\n", nobody_ids().0));
    assert_eq!(fx.stderr("d"), "to-stderr\n");
    assert!(!fx.datasets().join("x").exists());
    // The container and the image are gone.
    assert_eq!(containers(), before);
    assert!(!image_exists(&id), "image {id} was not removed");
}

#[tokio::test]
#[ignore = "needs a Docker Engine: agent/runner/tests/docker-setup.sh, then --ignored"]
async fn the_image_run_is_the_archive_s_not_another_tagged_one() {
    let _serial = SERIAL.lock().await;
    require_engine();
    let fx = Fixture::new();
    // A tagged image already in the engine, listed before ours.
    let decoy = format!("{}:latest", unique("aaa-cocos-decoy"));
    let decoy_id = import_busybox(fx.path(), &decoy, r#"["/bin/echo","decoy"]"#);
    let tag = format!("{}:v1", unique("cocos-runner-test"));
    import_busybox(fx.path(), &tag, r#"["/bin/echo","ours"]"#);
    let archive = save(fx.path(), "algo.tar", &[&tag]);

    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("d", "docker", &archive, &[]))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    assert_eq!(fx.stdout("d"), "ours\n");
    // The decoy is not touched.
    assert!(image_exists(&decoy_id));
    docker(&["rmi", "-f", &decoy]);
}

#[tokio::test]
#[ignore = "needs a Docker Engine: agent/runner/tests/docker-setup.sh, then --ignored"]
async fn a_non_zero_exit_status_is_an_error() {
    let _serial = SERIAL.lock().await;
    require_engine();
    let fx = Fixture::new();
    let tag = format!("{}:v1", unique("cocos-runner-test"));
    let id = import_busybox(fx.path(), &tag, r#"["/bin/sh"]"#);
    let archive = save(fx.path(), "algo.tar", &[&tag]);
    let before = containers();
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request(
            "d",
            "docker",
            &archive,
            &["/bin/sh", "-c", "echo 'bad input' >&2; exit 3"],
        ))
        .await
        .unwrap();
    assert_eq!(resp.exit_code, 3);
    assert_eq!(resp.error, "algorithm exited with status 3: bad input");
    assert_eq!(containers(), before);
    assert!(!image_exists(&id));
}

#[tokio::test]
#[ignore = "needs a Docker Engine: agent/runner/tests/docker-setup.sh, then --ignored"]
async fn stop_kills_the_container() {
    let _serial = SERIAL.lock().await;
    require_engine();
    let fx = Fixture::new();
    let tag = format!("{}:v1", unique("cocos-runner-test"));
    let id = import_busybox(fx.path(), &tag, r#"["/bin/sh"]"#);
    let archive = save(fx.path(), "algo.tar", &[&tag]);
    let before = containers();
    let runner = fx.runner(fx.config());
    let run = {
        let runner = runner.clone();
        let req = fx.request(
            "d",
            "docker",
            &archive,
            &["/bin/sh", "-c", "echo up > /cocos/results/up; sleep 300"],
        );
        tokio::spawn(async move { runner.run(req).await })
    };
    fx.wait_for_file(&fx.results().join("up")).await;
    assert_eq!(containers(), before + 1);
    assert!(runner.stop("d").await);
    let resp = run.await.unwrap().unwrap();
    assert_eq!(resp.error, "computation stopped");
    assert_eq!(containers(), before);
    assert!(!image_exists(&id));
}

#[tokio::test]
#[ignore = "needs a Docker Engine: agent/runner/tests/docker-setup.sh, then --ignored"]
async fn the_container_gets_a_network_and_the_proxy_only_with_egress() {
    let _serial = SERIAL.lock().await;
    require_engine();
    let fx = Fixture::new();
    let tag = format!("{}:v1", unique("cocos-runner-test"));
    import_busybox(fx.path(), &tag, r#"["/bin/sh"]"#);
    let archive = save(fx.path(), "algo.tar", &[&tag]);
    let runner = fx.runner(RunnerConfig {
        egress_proxy: Some("http://127.0.0.1:3128".into()),
        ..fx.config()
    });
    let resp = runner
        .run(fx.request(
            "d",
            "docker",
            &archive,
            &[
                "/bin/sh",
                "-c",
                "ls /sys/class/net; echo \"proxy=$HTTPS_PROXY\"",
            ],
        ))
        .await
        .unwrap();
    assert_eq!(resp.error, "");
    let stdout = fx.stdout("d");
    assert!(stdout.lines().any(|l| l == "eth0"), "{stdout}");
    assert!(stdout.contains("proxy=http://127.0.0.1:3128\n"), "{stdout}");
}

#[tokio::test]
#[ignore = "needs a Docker Engine: agent/runner/tests/docker-setup.sh, then --ignored"]
async fn an_archive_of_two_images_is_refused() {
    let _serial = SERIAL.lock().await;
    require_engine();
    let fx = Fixture::new();
    let a = format!("{}:a", unique("cocos-runner-test"));
    let b = format!("{}:b", unique("cocos-runner-test2"));
    import_busybox(fx.path(), &a, r#"["/bin/echo","a"]"#);
    import_busybox(fx.path(), &b, r#"["/bin/echo","b2"]"#);
    let archive = save(fx.path(), "two.tar", &[&a, &b]);
    let runner = fx.runner(fx.config());
    let resp = runner
        .run(fx.request("d", "docker", &archive, &[]))
        .await
        .unwrap();
    assert_eq!(
        resp.error,
        "docker archive: manifest.json lists 2 images; exactly one is required"
    );
}
