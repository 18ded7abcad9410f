//! `cocos-agent SERVICE`: the agent services of the confidential VM in one
//! binary, one subcommand per service (see docs/decisions.md, "The agent
//! services"). Each systemd unit in `agent/systemd/` runs one of them.
//!
//! Every service reads its configuration from the environment (the units
//! load `/etc/cocos/environment` from the 9P environment share); the keys
//! are listed by `cocos-agent SERVICE --help` and in `agent/README.md`.
//! Logs go to stderr (the journal) and, for every service but the log
//! forwarder itself, to the log forwarder, which relays them to the
//! computation management service.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The agent services of the confidential VM (one per systemd unit).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    service: Service,
}

#[derive(Subcommand)]
enum Service {
    /// The orchestrator: the computation state machine, the management
    /// service's stream, and `agent.AgentService` on its Unix socket.
    ///
    /// Environment: AGENT_CONFIG_FILE (JSON), AGENT_WORK_DIR,
    /// AGENT_GRPC_HOST, AGENT_RUNNER_SOCKET, LOG_FORWARDER_SOCKET,
    /// AGENT_MANIFEST_FILE, AGENT_LEGACY_AUTH, AGENT_AUTH_WINDOW_SECS,
    /// AGENT_MAX_ALGORITHM_BYTES, AGENT_MAX_DATASET_BYTES,
    /// AGENT_MAX_REQUIREMENTS_BYTES, AGENT_MAX_EXTRACT_ENTRIES,
    /// AGENT_MAX_EXTRACT_BYTES, AGENT_CVM_GRPC_*, AGENT_CVM_ID.
    Agent,
    /// The computation runner: runs the algorithm as an unprivileged user.
    ///
    /// Environment: RUNNER_CONFIG_FILE (JSON: every field of the runner's
    /// configuration), RUNNER_TIMEOUT_SECS, RUNNER_USER, RUNNER_EGRESS_PROXY
    /// (e.g. http://127.0.0.1:3128), AGENT_RUNNER_SOCKET,
    /// LOG_FORWARDER_SOCKET. None of it reaches the algorithm, whose
    /// environment is built from scratch.
    Runner,
    /// The log forwarder: relays logs and events to the management
    /// service, buffering on disk while it is unreachable.
    ///
    /// Environment: LOG_FORWARDER_CONFIG_FILE (JSON: every field of the
    /// forwarder's configuration), LOG_FORWARDER_BUFFER_DIR (the on-disk
    /// buffer, default /cocos/log-buffer), LOG_FORWARDER_SOCKET,
    /// AGENT_CVM_GRPC_URL, AGENT_CVM_GRPC_CLIENT_CERT,
    /// AGENT_CVM_GRPC_CLIENT_KEY, AGENT_CVM_GRPC_SERVER_CA_CERTS,
    /// AGENT_CVM_ID.
    LogForwarder,
    /// The ingress proxy: TLS (or mTLS) on port 7002 to the agent's socket.
    ///
    /// Environment: COCOS_INGRESS_LISTEN, COCOS_INGRESS_UPSTREAM,
    /// COCOS_INGRESS_CERT, COCOS_INGRESS_KEY (paths or inline PEM),
    /// COCOS_INGRESS_CLIENT_CA, COCOS_INGRESS_ALLOW_PLAINTEXT.
    Ingress,
    /// The egress proxy: allowlisted HTTP CONNECT and absolute-form HTTP on
    /// localhost for the algorithms.
    ///
    /// Environment: COCOS_EGRESS_LISTEN, COCOS_EGRESS_ALLOW (patterns),
    /// COCOS_PROXY_PORT.
    Egress,
}

impl Service {
    /// The name in logs and events (the Go agent's originators).
    fn name(&self) -> &'static str {
        match self {
            Service::Agent => "agent",
            Service::Runner => "computation-runner",
            Service::LogForwarder => "log-forwarder",
            Service::Ingress => "ingress-proxy",
            Service::Egress => "egress-proxy",
        }
    }
}

/// A path from the environment variable `key`, or `default`.
fn env_path(key: &str, default: &str) -> PathBuf {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// The log forwarder's socket, as the services find it.
fn log_socket() -> PathBuf {
    env_path("LOG_FORWARDER_SOCKET", "/run/cocos/log.sock")
}

/// A non-empty environment variable.
fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The runner's configuration: `RUNNER_CONFIG_FILE` (JSON) or the
/// defaults, with the `RUNNER_*` variables over it.
fn runner_config() -> anyhow::Result<cocos_runner::RunnerConfig> {
    let mut config = match env_var("RUNNER_CONFIG_FILE") {
        Some(path) => {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {path}"))?
        }
        None => cocos_runner::RunnerConfig::default(),
    };
    if let Some(v) = env_var("RUNNER_TIMEOUT_SECS") {
        config.run_timeout_secs = v
            .parse()
            .with_context(|| format!("RUNNER_TIMEOUT_SECS={v:?}: not a number of seconds"))?;
    }
    if let Some(v) = env_var("RUNNER_USER") {
        config.run_user = v;
    }
    if let Some(v) = env_var("RUNNER_EGRESS_PROXY") {
        config.egress_proxy = Some(v);
    }
    Ok(config)
}

/// The log forwarder's configuration: `LOG_FORWARDER_CONFIG_FILE` (JSON)
/// or the defaults, with `LOG_FORWARDER_BUFFER_DIR`, `LOG_FORWARDER_SOCKET`
/// and the `AGENT_CVM_*` variables over it.
fn log_forwarder_config() -> anyhow::Result<cocos_logfwd::Config> {
    let mut config = match env_var("LOG_FORWARDER_CONFIG_FILE") {
        Some(path) => {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {path}"))?
        }
        None => cocos_logfwd::Config::default(),
    };
    if let Some(v) = env_var("LOG_FORWARDER_BUFFER_DIR") {
        config.buffer.dir = PathBuf::from(v);
    }
    if let Some(v) = env_var("LOG_FORWARDER_SOCKET") {
        config.socket_path = PathBuf::from(v);
    }
    config.upstream.apply_env(|key| std::env::var(key).ok());
    Ok(config)
}

/// The algorithm's output and the runner's events, to the log forwarder:
/// stdout as INFO logs, stderr as ERROR logs (as the Go runner logged
/// them), events as they are.
struct ForwardOutput(cocos_logfwd::LogClient);

impl cocos_runner::OutputSink for ForwardOutput {
    fn stdout(&self, computation_id: &str, bytes: &[u8]) {
        self.0.log(
            cocos_logfwd::Level::Info,
            computation_id,
            &String::from_utf8_lossy(bytes),
        );
    }

    fn stderr(&self, computation_id: &str, bytes: &[u8]) {
        self.0.log(
            cocos_logfwd::Level::Error,
            computation_id,
            &String::from_utf8_lossy(bytes),
        );
    }

    fn event(&self, computation_id: &str, event_type: &str, status: &str, details_json: &[u8]) {
        self.0
            .event(event_type, computation_id, status, details_json.to_vec());
    }
}

/// Logs to stderr at the level of `RUST_LOG`/`AGENT_LOG_LEVEL` (info by
/// default) and, unless this is the forwarder, to the log forwarder.
fn init_logging(service: &Service) -> anyhow::Result<()> {
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AGENT_LOG_LEVEL"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&level).with_context(|| format!("log level {level:?}"))?;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time();
    let forward = match service {
        Service::LogForwarder => None,
        _ => Some(cocos_logfwd::LogLayer::new(
            cocos_logfwd::LogClient::connect(log_socket(), service.name())
                .context("the log forwarder client")?,
        )),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(forward)
        .init();
    Ok(())
}

async fn run(service: Service) -> anyhow::Result<()> {
    init_logging(&service)?;
    tracing::info!("{} starting", service.name());
    match service {
        Service::Agent => {
            let config = cocos_agentd::Config::from_env().context("agent configuration")?;
            cocos_agentd::run(config, termination()).await?;
        }
        Service::Runner => {
            let config = runner_config().context("runner configuration")?;
            let socket = env_path("AGENT_RUNNER_SOCKET", "/run/cocos/runner.sock");
            let logs = cocos_logfwd::LogClient::connect(log_socket(), Service::Runner.name())
                .context("the log forwarder client")?;
            cocos_runner::serve(config, &socket, Arc::new(ForwardOutput(logs))).await?;
        }
        Service::LogForwarder => {
            let config = log_forwarder_config().context("log forwarder configuration")?;
            config.validate().context("log forwarder configuration")?;
            cocos_logfwd::serve(config).await?;
        }
        Service::Ingress => {
            let config =
                cocos_proxy::ingress::IngressConfig::from_env().context("ingress configuration")?;
            cocos_proxy::ingress::serve_ingress(config).await?;
        }
        Service::Egress => {
            let config =
                cocos_proxy::egress::EgressConfig::from_env().context("egress configuration")?;
            cocos_proxy::egress::serve_egress(config).await?;
        }
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT (or at once if they cannot be watched,
/// after saying so).
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        }
        (Err(e), _) | (_, Err(e)) => tracing::error!("cannot watch for SIGTERM/SIGINT: {e}"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cocos-agent: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.service)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cocos-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
