//! `cocos-cli cvms serve`: a small computation management service for
//! operators and tests. The agent dials in (`cvms.Service/Process`); the
//! service sends it the manifest, prints what it reports as JSON lines
//! ([`output`]) and relays commands typed on stdin ([`server::commands`]).

pub mod output;
pub mod server;
pub mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cocos_manifest::Manifest;
use cocos_proto::cvms::service_server::ServiceServer;
use serde_json::json;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use output::Printer;
use server::{Cvms, Shared};

/// What `cvms serve --help` adds: the output, the commands, the exit
/// statuses.
pub const SERVE_HELP: &str = "\
Output: one JSON object per line on stdout, flushed per line. Messages from
an agent have the proto oneof name as \"type\" (agent_log, agent_event,
run_res, stopComputationRes, agentStateRes, vTPMattestationReport,
azureAttestationToken), their fields under the proto names, timestamps as
RFC 3339 (UTC) strings, bytes as standard base64, and \"conn\" (the
connection's number) and \"connection\" (its connection-type metadata:
\"log-forwarder\" for the log and event stream, \"control\" when absent).
The service's own lines: listening, connected, disconnected, sent, error.

Commands on stdin, one per line, sent to every control connection:
  stop        StopComputation for the manifest's id
  state       AgentStateReq
  run         the manifest again
  disconnect  DisconnectReq
Unknown commands, or commands with no agent connected, print a line of type
\"error\". The end of stdin ends nothing: the service runs until killed or
until --exit-on.

Exit status:
  0  an agent_event listed in --exit-on arrived (other than Failed)
  1  an agent_event of type Failed arrived and Failed is listed in --exit-on
  2  the service could not run: bad arguments, manifest, certificates, address";

/// Arguments of `cvms serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The manifest JSON to send to each agent that connects.
    manifest: PathBuf,
    /// Address to listen on (port 0 picks a free port; the `listening` line
    /// tells which).
    #[arg(long, default_value = "127.0.0.1:7001", value_name = "ADDR")]
    listen: String,
    /// Send the manifest as one `runReq` instead of `runReqChunks`.
    #[arg(long)]
    unchunked: bool,
    /// Exit when an agent_event with one of these event types arrives
    /// (comma-separated, e.g. Complete,Failed): status 0, or 1 for Failed.
    #[arg(long, value_delimiter = ',', value_name = "STATE[,STATE]")]
    exit_on: Vec<String>,
    /// Serve TLS with this certificate chain (PEM), with --key. Plaintext
    /// otherwise.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Require agents to present a client certificate signed by this CA
    /// (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    client_ca: Option<PathBuf>,
}

/// Commands of `cvms`.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Serve cvms.Service/Process: send the manifest to each agent that
    /// connects, print what agents send as JSON lines, relay commands from
    /// stdin.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
}

/// Runs a `cvms` command.
pub async fn run(cmd: &Command) -> anyhow::Result<ExitCode> {
    let Command::Serve(a) = cmd;
    let bytes = read(&a.manifest, "manifest")?;
    let manifest = Manifest::from_json(&bytes)
        .with_context(|| format!("manifest {}", a.manifest.display()))?;
    let run_messages = wire::run_messages(&manifest, a.unchunked);
    let mut builder = Server::builder();
    let tls = a.cert.is_some();
    if let (Some(cert), Some(key)) = (&a.cert, &a.key) {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
            read(cert, "--cert")?,
            read(key, "--key")?,
        ));
        if let Some(ca) = &a.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca, "--client-ca")?));
        }
        builder = builder.tls_config(config).context("TLS settings")?;
    }
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("--listen {}", a.listen))?;
    let local = listener.local_addr().context("listening address")?;

    let (printer, exit) = Printer::spawn();
    let shared = Arc::new(Shared::new(
        manifest.id.clone(),
        run_messages,
        a.exit_on.clone(),
        printer.clone(),
    ));
    printer
        .print(json!({
            "type": "listening",
            "addr": local.to_string(),
            "tls": tls,
            "computation_id": manifest.id,
            "run_messages": shared.run_messages.len(),
        }))
        .await;
    tokio::spawn(server::commands(shared.clone()));
    let serve = builder
        .add_service(ServiceServer::new(Cvms(shared)))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::select! {
        result = serve => {
            result.context("serving")?;
            Ok(ExitCode::SUCCESS)
        }
        code = exit => Ok(ExitCode::from(code.unwrap_or(0))),
    }
}
