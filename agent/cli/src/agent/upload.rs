//! `cocos-cli algo` and `cocos-cli data`: hash, sign, then stream the
//! upload.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use cocos_auth::Rpc;
use cocos_manifest::hash::{Sha3Digest, sha3_file};
use cocos_proto::agent::agent_service_client::AgentServiceClient;
use cocos_proto::agent::{AlgoRequest, DataRequest};
use sha3::{Digest, Sha3_256};
use tokio::task::JoinHandle;

use super::connect::{ConnectArgs, MAX_MESSAGE, connect};
use super::failure::Failure;
use super::sign::{SignArgs, Signer, ascii};
use super::stream::{Part, Sent, progress, spawn_reader};

/// Arguments of `algo`.
#[derive(clap::Args, Debug)]
pub struct AlgoArgs {
    /// The algorithm file (a binary, a Python script, a wasm module or a
    /// `docker save` archive).
    file: PathBuf,
    /// Algorithm type, sent as metadata `algo_type`.
    #[arg(long = "type", short = 'a', default_value = "bin", value_parser = ["bin", "python", "wasm", "docker"])]
    algo_type: String,
    /// Python requirements.txt, streamed before the algorithm.
    #[arg(long, short = 'r', value_name = "FILE")]
    requirements: Option<PathBuf>,
    /// An argument for the algorithm, sent as metadata `algo_args`; repeat
    /// for each, in order (printable ASCII only, as gRPC metadata).
    #[arg(
        long = "args",
        visible_alias = "arg",
        value_name = "A",
        allow_hyphen_values = true
    )]
    args: Vec<String>,
    /// Print one JSON object (what was sent, its SHA3-256, and the seconds
    /// spent hashing and transferring) instead of the sentence.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sign: SignArgs,
    #[command(flatten)]
    conn: ConnectArgs,
}

/// Arguments of `data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// The dataset: a file, or a directory (sent as its deterministic zip,
    /// whose SHA3-256 is `cocos-cli checksum DIR`, and extracted by the
    /// agent). The filename sent is the basename, for a directory its name
    /// without `.zip`: it must be the manifest's `filename`.
    path: PathBuf,
    /// Ask the agent to extract the upload (a zip) into its datasets
    /// directory: metadata `decompress` = `true`. Implied for a directory.
    #[arg(long, short = 'd')]
    decompress: bool,
    /// Print one JSON object (what was sent, its SHA3-256, and the seconds
    /// spent hashing and transferring) instead of the sentence.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sign: SignArgs,
    #[command(flatten)]
    conn: ConnectArgs,
}

fn size_of(path: &Path) -> anyhow::Result<u64> {
    let meta = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    Ok(meta.len())
}

async fn hash(path: PathBuf) -> anyhow::Result<Sha3Digest> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || sha3_file(&path))
        .await
        .context("hashing task")?
        .with_context(|| format!("hashing {shown}"))
}

/// The SHA3-256s the reader saw must be those signed: otherwise a file
/// changed between hashing and sending. Returns the reader's I/O error, if
/// any, first.
async fn check_sent(
    task: JoinHandle<Sent>,
    signed: &[(&Path, Sha3Digest)],
) -> anyhow::Result<bool> {
    let sent = task.await.context("reader task")??;
    if sent.len() < signed.len() {
        // The call ended before everything was read.
        return Ok(false);
    }
    for ((path, want), got) in signed.iter().zip(&sent) {
        if want != got {
            bail!(
                "{} changed while it was sent (SHA3-256 {} when signed, {} as sent)",
                path.display(),
                hex::encode(want),
                hex::encode(got)
            );
        }
    }
    Ok(true)
}

/// Runs `algo`.
pub async fn algo(a: &AlgoArgs) -> anyhow::Result<ExitCode> {
    let signer = Signer::load(&a.sign)?;
    let endpoint = a.conn.endpoint()?;
    let addr = a.conn.display_addr();
    let mut total = size_of(&a.file)?;
    if let Some(r) = &a.requirements {
        total += size_of(r)?;
    }
    for (i, arg) in a.args.iter().enumerate() {
        ascii(arg).with_context(|| format!("--args number {}", i + 1))?;
    }
    let hashing = Instant::now();
    let payload = hash(a.file.clone()).await?;
    let requirements = match &a.requirements {
        Some(r) => Some(hash(r.clone()).await?),
        None => None,
    };
    let hash_seconds = hashing.elapsed().as_secs_f64();
    if let Some(m) = &signer.manifest {
        if m.algorithm.hash != payload {
            return Err(Failure::Manifest(format!(
                "{}: SHA3-256 {} differs from the manifest's algorithm hash {}; the agent would refuse it",
                a.file.display(),
                hex::encode(payload),
                hex::encode(m.algorithm.hash)
            ))
            .into());
        }
        if requirements.is_some() && m.algorithm.requirements_hash.is_none() {
            eprintln!(
                "warning: the manifest declares no requirements_hash; an agent that checks it will refuse the requirements"
            );
        }
        if let (Some(got), Some(want)) = (requirements, m.algorithm.requirements_hash) {
            if got != want {
                return Err(Failure::Manifest(format!(
                    "requirements: SHA3-256 {} differs from the manifest's requirements_hash {}",
                    hex::encode(got),
                    hex::encode(want)
                ))
                .into());
            }
        }
    }

    // The Go CLI sends every requirements chunk first, then the algorithm
    // (agent-api §3); the agent concatenates each field on its own.
    let mut parts = Vec::new();
    let mut signed = Vec::new();
    if let (Some(path), Some(digest)) = (&a.requirements, requirements) {
        parts.push(Part {
            path: path.clone(),
            wrap: Box::new(|chunk| AlgoRequest {
                requirements: chunk,
                ..Default::default()
            }),
        });
        signed.push((path.as_path(), digest));
    }
    parts.push(Part {
        path: a.file.clone(),
        wrap: Box::new(|chunk| AlgoRequest {
            algorithm: chunk,
            ..Default::default()
        }),
    });
    signed.push((a.file.as_path(), payload));

    let transfer = Instant::now();
    let channel = connect(endpoint, &addr).await?;
    let bar = progress(Some(total), "algorithm");
    let (stream, task) = spawn_reader(parts, bar.clone());
    let mut request = tonic::Request::new(stream);
    let md = request.metadata_mut();
    signer.sign_into(md, Rpc::Algo, "", Some(payload), requirements)?;
    md.insert("algo_type", ascii(&a.algo_type)?);
    for arg in &a.args {
        md.append("algo_args", ascii(arg)?);
    }
    let result = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .algo(request)
        .await;
    bar.finish_and_clear();
    check_sent(task, &signed).await?;
    result.map_err(|s| Failure::from_status(&s, &addr))?;
    let transfer_seconds = transfer.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "algorithm": a.file.display().to_string(),
                "bytes": size_of(&a.file)?,
                "sha3_256": hex::encode(payload),
                "total_bytes": total,
                "hash_seconds": hash_seconds,
                "transfer_seconds": transfer_seconds,
            })
        );
    } else {
        println!(
            "algorithm {} uploaded: {} bytes, SHA3-256 {}",
            a.file.display(),
            size_of(&a.file)?,
            hex::encode(payload)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A `Write` that hashes what it passes on.
struct Tee<W> {
    inner: W,
    hasher: Sha3_256,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A directory's deterministic zip in a temporary file (removed when
/// dropped), and its SHA3-256, computed as it is written.
fn zip_to_temp(dir: &Path) -> anyhow::Result<(tempfile::NamedTempFile, Sha3Digest)> {
    let tmp = tempfile::Builder::new()
        .prefix("cocos-cli-dataset-")
        .suffix(".zip")
        .tempfile()
        .context("temporary file for the directory's zip")?;
    let digest = {
        let mut tee = Tee {
            inner: std::io::BufWriter::new(tmp.as_file()),
            hasher: Sha3_256::new(),
        };
        cocos_manifest::zip::write_dir(dir, &mut tee)?;
        tee.flush().context("writing the directory's zip")?;
        tee.hasher.finalize().into()
    };
    Ok((tmp, digest))
}

/// Runs `data`.
pub async fn data(a: &DataArgs) -> anyhow::Result<ExitCode> {
    let signer = Signer::load(&a.sign)?;
    let endpoint = a.conn.endpoint()?;
    let addr = a.conn.display_addr();
    let meta = std::fs::metadata(&a.path).with_context(|| a.path.display().to_string())?;
    let canonical = a
        .path
        .canonicalize()
        .with_context(|| a.path.display().to_string())?;
    let filename = canonical
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{}: no UTF-8 file name", a.path.display()))?;
    // `_zip` lives until the upload ends: dropping it removes the zip.
    let hashing = Instant::now();
    let (file, payload, decompress, _zip) = if meta.is_dir() {
        let dir = canonical.clone();
        let (tmp, digest) = tokio::task::spawn_blocking(move || zip_to_temp(&dir))
            .await
            .context("zip task")??;
        (tmp.path().to_path_buf(), digest, true, Some(tmp))
    } else {
        size_of(&a.path)?;
        let digest = hash(a.path.clone()).await?;
        (a.path.clone(), digest, a.decompress, None)
    };
    let hash_seconds = hashing.elapsed().as_secs_f64();
    if let Some(m) = &signer.manifest {
        let Some(d) = m.datasets.iter().find(|d| d.filename == filename) else {
            let declared: Vec<_> = m.datasets.iter().map(|d| d.filename.as_str()).collect();
            return Err(Failure::Manifest(format!(
                "dataset {filename:?} is not declared in the manifest (declared: {declared:?})"
            ))
            .into());
        };
        if d.hash != payload {
            return Err(Failure::Manifest(format!(
                "dataset {filename:?}: SHA3-256 {} differs from the manifest's {}; the agent would refuse it",
                hex::encode(payload),
                hex::encode(d.hash)
            ))
            .into());
        }
    }
    ascii(&filename).context("the dataset's filename")?;

    let size = size_of(&file)?;
    let transfer = Instant::now();
    let channel = connect(endpoint, &addr).await?;
    let bar = progress(Some(size), &filename);
    let name = filename.clone();
    let parts = vec![Part {
        path: file.clone(),
        // The filename rides on every chunk: the agent keeps the last
        // non-empty one (agent-api §3), so any chunk may come first.
        wrap: Box::new(move |chunk| DataRequest {
            dataset: chunk,
            filename: name.clone(),
        }),
    }];
    let (stream, task) = spawn_reader(parts, bar.clone());
    let mut request = tonic::Request::new(stream);
    let md = request.metadata_mut();
    signer.sign_into(md, Rpc::Data, &filename, Some(payload), None)?;
    if decompress {
        md.insert("decompress", ascii("true")?);
    }
    let result = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .data(request)
        .await;
    bar.finish_and_clear();
    check_sent(task, &[(file.as_path(), payload)]).await?;
    result.map_err(|s| Failure::from_status(&s, &addr))?;
    let transfer_seconds = transfer.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "dataset": filename,
                "bytes": size,
                "sha3_256": hex::encode(payload),
                "decompress": decompress,
                "hash_seconds": hash_seconds,
                "transfer_seconds": transfer_seconds,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "dataset {filename} uploaded{}: {size} bytes, SHA3-256 {}",
        if decompress { " (to be extracted)" } else { "" },
        hex::encode(payload)
    );
    Ok(ExitCode::SUCCESS)
}
