//! `cocos-agent SERVICE`: the agent services in one binary (wired to their
//! library crates as they land).

use clap::{Parser, Subcommand};

/// The agent services of the confidential VM.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    service: Service,
}

#[derive(Subcommand)]
enum Service {
    /// The orchestrator.
    Agent,
    /// The computation runner.
    Runner,
    /// The log forwarder.
    LogForwarder,
    /// The ingress proxy.
    Ingress,
    /// The egress proxy.
    Egress,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let name = match cli.service {
        Service::Agent => "agent",
        Service::Runner => "runner",
        Service::LogForwarder => "log-forwarder",
        Service::Ingress => "ingress",
        Service::Egress => "egress",
    };
    println!("COCOS_SERVICE_UP {name}");
    std::thread::sleep(std::time::Duration::from_secs(u64::MAX / 4));
    Ok(())
}
