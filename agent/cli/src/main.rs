//! `cocos-cli`: the command line of a computation's providers and
//! consumers. A thin clap front: each subcommand parses its arguments and
//! calls cocos-manifest, cocos-auth or the generated gRPC code.
//!
//! - offline: `checksum`, `keys`, `manifest`;
//! - to the agent ([`agent`]): `algo`, `data`, `result`;
//! - a small computation management service ([`cvms`]): `cvms serve`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod checksum;
mod cvms;
mod keys;
mod manifest;

use agent::failure::Failure;

/// Exit statuses, as `--help` documents them.
const EXIT_HELP: &str = "\
Exit status:
  0  success
  1  a negative verdict: `manifest check` found the manifest invalid; the
     agent answered with an error (refused the signature, wrong state, hash
     mismatch, ...) or broke the protocol (e.g. more bytes than its
     file-size header); an upload does not match --manifest
  2  the command could not run: bad arguments, unreadable files or keys
  3  the agent could not be reached: connection refused, TLS handshake
     failed, UNAVAILABLE, timeout
`cvms serve` has its own (see `cocos-cli cvms serve --help`).

Agent connection (algo, data, result): --addr or COCOS_AGENT_URL (default
https://localhost:7002), TLS verified with --ca or COCOS_AGENT_CA (else the
system's roots), mutual TLS with --tls-cert/--tls-key, --plaintext only when
asked. Every request signs the computation id: --computation or
COCOS_COMPUTATION_ID, or the `id` of --manifest.";

/// Command line of the providers and consumers of a confidential
/// computation: checksums, keys, manifests, uploads and results.
#[derive(Parser)]
#[command(name = "cocos-cli", version, after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// SHA3-256 of a file, of a directory (as its deterministic zip), or of
    /// a manifest JSON (as Go re-marshals it).
    Checksum(checksum::Args),
    /// Key management.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Write and validate the manifest's JSON form.
    #[command(subcommand)]
    Manifest(manifest::Command),
    /// Upload the algorithm (and its requirements.txt), signed as the
    /// algorithm provider.
    #[command(after_help = EXIT_HELP)]
    Algo(agent::upload::AlgoArgs),
    /// Upload a dataset (a file, or a directory as its deterministic zip),
    /// signed as its provider.
    #[command(after_help = EXIT_HELP)]
    Data(agent::upload::DataArgs),
    /// Download the result zip, signed as a result consumer; prints the
    /// file's path.
    #[command(after_help = EXIT_HELP)]
    Result(agent::result::ResultArgs),
    /// A small computation management service (cvms.Service) for operators
    /// and tests.
    #[command(subcommand)]
    Cvms(cvms::Command),
}

/// Runs an async command on a runtime that is dropped without waiting
/// for blocked readers (stdin).
fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(f);
    rt.shutdown_background();
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Checksum(args) => checksum::run(&args),
        Command::Keys(cmd) => keys::run(&cmd),
        Command::Manifest(cmd) => manifest::run(&cmd),
        Command::Algo(args) => block_on(agent::upload::algo(&args)),
        Command::Data(args) => block_on(agent::upload::data(&args)),
        Command::Result(args) => block_on(agent::result::run(&args)),
        Command::Cvms(cmd) => block_on(cvms::run(&cmd)),
    };
    match result {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<Failure>() {
            Some(f) => {
                eprintln!("error: {f}");
                ExitCode::from(f.exit_status())
            }
            None => {
                eprintln!("error: {}", agent::failure::one_line(&format!("{e:#}")));
                ExitCode::from(2)
            }
        },
    }
}
