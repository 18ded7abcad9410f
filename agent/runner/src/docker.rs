//! `docker` algorithms: a `docker save` archive, loaded into the Docker
//! Engine (API over its Unix socket, through bollard) and run once.
//!
//! - The image run is the one the archive holds: its id is the SHA-256 of
//!   the image configuration that the archive's `manifest.json` names (the
//!   Engine's image id), checked with an inspect after `POST /images/load`.
//!   An archive with no image or several images is refused.
//! - The container gets the request's arguments as its command (the image's
//!   own command when there are none), the datasets directory read-only at
//!   `/cocos/datasets` and the results directory read-write at
//!   `/cocos/results`, `no-new-privileges`, the run user's uid:gid (unless
//!   configured otherwise), and `--network none` unless an egress proxy is
//!   configured (then the default bridge and the proxy variables).
//! - A non-zero exit status fails the run. Stop and the deadline kill the
//!   container. The container and the image are removed afterwards, always.

use crate::error::RunError;
use crate::run::RunContext;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, ImportImageOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Container path of the datasets directory.
pub const CONTAINER_DATASETS: &str = "/cocos/datasets";
/// Container path of the results directory.
pub const CONTAINER_RESULTS: &str = "/cocos/results";
/// Largest `manifest.json` read from an archive.
const MAX_MANIFEST: u64 = 1 << 20;
/// Largest image configuration read from an archive.
const MAX_CONFIG: u64 = 16 << 20;

fn docker_err(what: &'static str) -> impl FnOnce(bollard::errors::Error) -> RunError {
    move |err| RunError::Docker {
        what,
        detail: err.to_string(),
    }
}

fn archive_err(detail: impl Into<String>) -> RunError {
    RunError::DockerArchive(detail.into())
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
}

fn normalise(name: &Path) -> String {
    name.to_string_lossy().trim_start_matches("./").to_owned()
}

/// Reads the entry named `wanted` from the tar archive at `path`.
fn read_member(path: &Path, wanted: &str, limit: u64) -> Result<Vec<u8>, RunError> {
    let file = std::fs::File::open(path)
        .map_err(|e| archive_err(format!("opening {}: {e}", path.display())))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let entries = archive
        .entries()
        .map_err(|e| archive_err(format!("reading the tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| archive_err(format!("reading the tar archive: {e}")))?;
        let name = entry
            .path()
            .map(|p| normalise(&p))
            .map_err(|e| archive_err(format!("reading the tar archive: {e}")))?;
        if name != wanted {
            continue;
        }
        if entry.size() > limit {
            return Err(archive_err(format!(
                "{wanted} is larger than {limit} bytes"
            )));
        }
        let mut data = Vec::new();
        entry
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| archive_err(format!("reading {wanted}: {e}")))?;
        return Ok(data);
    }
    Err(archive_err(format!("no {wanted} in the archive")))
}

/// The image id (`sha256:<hex>`) and tags of the one image in the `docker
/// save` archive at `path`.
pub(crate) fn archive_image(path: &Path) -> Result<(String, Vec<String>), RunError> {
    let manifest = read_member(path, "manifest.json", MAX_MANIFEST)?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&manifest)
        .map_err(|e| archive_err(format!("manifest.json: {e}")))?;
    let [entry] = entries.as_slice() else {
        return Err(archive_err(format!(
            "manifest.json lists {} images; exactly one is required",
            entries.len()
        )));
    };
    let config_name = entry.config.trim_start_matches("./");
    let config = read_member(path, config_name, MAX_CONFIG)?;
    let id = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    Ok((id, entry.repo_tags.clone().unwrap_or_default()))
}

/// Runs the request's docker archive.
pub(crate) async fn run_docker(ctx: &RunContext) -> Result<(), RunError> {
    let archive = ctx.request.algorithm.clone();
    let (image_id, tags) = tokio::task::spawn_blocking(move || archive_image(&archive))
        .await
        .map_err(|e| archive_err(format!("reader task: {e}")))??;
    tracing::info!(image = image_id, ?tags, "docker archive");

    let socket = ctx.config.docker_socket.to_string_lossy().into_owned();
    // bollard's timeout bounds the wait for each response's head; loading a
    // large archive can take long before the engine answers. The run's own
    // deadline and Stop bound everything anyway.
    let head_timeout = ctx.config.run_timeout().as_secs().max(120);
    let docker = Docker::connect_with_unix(&socket, head_timeout, bollard::API_DEFAULT_VERSION)
        .map_err(docker_err("connecting to the engine"))?
        .negotiate_version()
        .await
        .map_err(docker_err("connecting to the engine"))?;

    let loaded = tokio::select! {
        loaded = load(&docker, &ctx.request.algorithm, &image_id) => loaded,
        err = ctx.ctl.ended() => Err(err),
    };
    let result = match loaded {
        Ok(()) => run_container(ctx, &docker, &image_id).await,
        Err(err) => Err(err),
    };
    // The image may be (partly) loaded even when loading failed or was cut.
    let remove = docker
        .remove_image(
            &image_id,
            Some(RemoveImageOptionsBuilder::new().force(true).build()),
            None,
        )
        .await;
    match remove {
        Ok(_) => tracing::debug!(image = image_id, "image removed"),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(err) => tracing::warn!(image = image_id, %err, "removing the image"),
    }
    result
}

/// `POST /images/load` of the archive, then checks the image is there.
async fn load(docker: &Docker, archive: &Path, image_id: &str) -> Result<(), RunError> {
    let file = tokio::fs::File::open(archive)
        .await
        .map_err(|e| archive_err(format!("opening {}: {e}", archive.display())))?;
    let body = tokio_util::io::ReaderStream::new(file);
    let mut progress = docker.import_image_stream(
        ImportImageOptionsBuilder::new().quiet(true).build(),
        body,
        None,
    );
    while let Some(item) = progress.next().await {
        let info = item.map_err(docker_err("loading the image"))?;
        if let Some(line) = info
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            tracing::info!(line, "docker load");
        }
    }
    let inspect = docker
        .inspect_image(image_id)
        .await
        .map_err(docker_err("finding the loaded image"))?;
    if inspect.id.as_deref() != Some(image_id) {
        return Err(RunError::Docker {
            what: "finding the loaded image",
            detail: format!(
                "engine reports id {:?}, archive says {image_id}",
                inspect.id
            ),
        });
    }
    Ok(())
}

fn bind(host: &Path, container: &str, mode: &str) -> String {
    format!("{}:{container}:{mode}", host.display())
}

/// Creates, runs and removes the container.
async fn run_container(ctx: &RunContext, docker: &Docker, image_id: &str) -> Result<(), RunError> {
    let request = &ctx.request;
    let env: Vec<String> = if ctx.config.egress_proxy.is_some() {
        ctx.config
            .proxy_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    } else {
        Vec::new()
    };
    let network = if ctx.config.egress_proxy.is_some() {
        "bridge"
    } else {
        "none"
    };
    let user = (!ctx.config.docker_run_as_image_user && ctx.user.switch)
        .then(|| format!("{}:{}", ctx.user.uid, ctx.user.gid));
    let body = ContainerCreateBody {
        image: Some(image_id.to_owned()),
        cmd: (!request.args.is_empty()).then(|| request.args.clone()),
        env: Some(env),
        user,
        tty: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        host_config: Some(HostConfig {
            binds: Some(vec![
                bind(&request.datasets, CONTAINER_DATASETS, "ro"),
                bind(&request.results, CONTAINER_RESULTS, "rw"),
            ]),
            network_mode: Some(network.to_owned()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(None, body)
        .await
        .map_err(docker_err("creating the container"))?;
    let container = created.id;
    tracing::info!(container, image = image_id, network, "container created");

    let result = attach_start_wait(ctx, docker, &container).await;

    let remove = docker
        .remove_container(
            &container,
            Some(
                RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
    if let Err(err) = remove {
        tracing::warn!(container, %err, "removing the container");
    }
    result
}

async fn attach_start_wait(
    ctx: &RunContext,
    docker: &Docker,
    container: &str,
) -> Result<(), RunError> {
    // Attach before starting, so no output is missed.
    let attached = docker
        .attach_container(
            container,
            Some(
                AttachContainerOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .stream(true)
                    .logs(true)
                    .build(),
            ),
        )
        .await
        .map_err(docker_err("attaching to the container"))?;
    let out = ctx.out.clone();
    let mut output = attached.output;
    let reader = tokio::spawn(async move {
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    out.stdout(&message)
                }
                Ok(LogOutput::StdErr { message }) => out.stderr(&message),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(err) => {
                    tracing::warn!(%err, "reading the container's output");
                    break;
                }
            }
        }
    });

    docker
        .start_container(container, None)
        .await
        .map_err(docker_err("starting the container"))?;

    let mut wait = docker.wait_container(container, None);
    let ended = tokio::select! {
        status = wait.next() => Ok(status),
        err = ctx.ctl.ended() => Err(err),
    };
    if let Err(reason) = &ended {
        tracing::info!(container, %reason, "killing the container");
        let kill = docker
            .kill_container(
                container,
                Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
            )
            .await;
        if let Err(err) = kill {
            tracing::warn!(container, %err, "killing the container");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), wait.next()).await;
    }
    let abort = reader.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .is_err()
    {
        abort.abort();
    }

    let code = match ended? {
        Some(Ok(response)) => response.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(err)) => return Err(docker_err("waiting for the container")(err)),
        None => {
            return Err(RunError::Docker {
                what: "waiting for the container",
                detail: "the engine closed the wait without a status".to_owned(),
            });
        }
    };
    match code {
        0 => Ok(()),
        code => Err(RunError::Exited {
            code: i32::try_from(code).unwrap_or(-1),
            stderr_tail: ctx.out.stderr_tail(),
        }),
    }
}
