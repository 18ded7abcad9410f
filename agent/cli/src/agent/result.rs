//! `cocos-cli result`: download the result zip into a temporary file next
//! to the output, renamed into place only once complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cocos_auth::Rpc;
use cocos_proto::agent::ResultRequest;
use cocos_proto::agent::agent_service_client::AgentServiceClient;

use super::connect::{ConnectArgs, MAX_MESSAGE, connect};
use super::failure::Failure;
use super::sign::{SignArgs, Signer};
use super::stream::progress;

/// Response header carrying the result's length in decimal (agent-api §3).
pub const FILE_SIZE_HEADER: &str = "file-size";

/// Arguments of `result`.
#[derive(clap::Args, Debug)]
pub struct ResultArgs {
    /// Where to write the result zip. It appears only once complete: the
    /// download goes to a temporary file beside it, renamed at the end.
    #[arg(short, long, default_value = "results.zip", value_name = "FILE")]
    output: PathBuf,
    /// Print one JSON object (the file, its size, the seconds the download
    /// took) instead of the path.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sign: SignArgs,
    #[command(flatten)]
    conn: ConnectArgs,
}

/// The announced size: `None` when the header is absent.
fn announced_size(metadata: &tonic::metadata::MetadataMap) -> Result<Option<u64>, Failure> {
    let Some(value) = metadata.get(FILE_SIZE_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    text.trim().parse().map(Some).map_err(|_| {
        Failure::Protocol(format!(
            "header {FILE_SIZE_HEADER} {:?} is not a decimal byte count",
            super::failure::one_line(text)
        ))
    })
}

fn temp_beside(output: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("-o {}: not a file name", output.display()))?;
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(&dir)
        .with_context(|| format!("temporary file in {}", dir.display()))
}

/// Runs `result`.
pub async fn run(a: &ResultArgs) -> anyhow::Result<ExitCode> {
    let signer = Signer::load(&a.sign)?;
    let endpoint = a.conn.endpoint()?;
    let addr = a.conn.display_addr();
    // Made before dialling, so that an unwritable directory fails first;
    // removed on every path that does not persist it.
    let mut tmp = temp_beside(&a.output)?;

    let transfer = std::time::Instant::now();
    let channel = connect(endpoint, &addr).await?;
    let mut request = tonic::Request::new(ResultRequest {});
    signer.sign_into(request.metadata_mut(), Rpc::Result, "", None, None)?;
    let response = AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .result(request)
        .await
        .map_err(|s| Failure::from_status(&s, &addr))?;
    let size = announced_size(response.metadata())?;
    if size.is_none() {
        eprintln!("warning: the agent sent no {FILE_SIZE_HEADER} header; the length is unchecked");
    }
    let mut stream = response.into_inner();
    let bar = progress(size, "result");
    let mut received: u64 = 0;
    let outcome: anyhow::Result<()> = async {
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| Failure::from_status(&s, &addr))?
        {
            received += chunk.file.len() as u64;
            if let Some(size) = size {
                if received > size {
                    return Err(Failure::Protocol(format!(
                        "it announced {size} bytes ({FILE_SIZE_HEADER}) and sent more ({received} so far)"
                    ))
                    .into());
                }
            }
            tmp.write_all(&chunk.file)
                .with_context(|| format!("writing {}", tmp.path().display()))?;
            bar.set_position(received);
        }
        if let Some(size) = size {
            if received < size {
                return Err(Failure::Protocol(format!(
                    "it announced {size} bytes ({FILE_SIZE_HEADER}) and the stream ended after {received}"
                ))
                .into());
            }
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    outcome?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(&a.output)
        .with_context(|| format!("renaming the download to {}", a.output.display()))?;
    let transfer_seconds = transfer.elapsed().as_secs_f64();
    let shown = a.output.canonicalize().unwrap_or_else(|_| a.output.clone());
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "path": shown.display().to_string(),
                "bytes": received,
                "transfer_seconds": transfer_seconds,
            })
        );
    } else {
        println!("{}", shown.display());
    }
    Ok(ExitCode::SUCCESS)
}
