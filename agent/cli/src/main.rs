//! `cocos-cli`: the command line of a computation's providers and
//! consumers. A thin clap front: each subcommand parses its arguments and
//! calls cocos-manifest or cocos-auth.
//!
//! Offline commands so far (`checksum`, `keys`, `manifest`); the networked
//! ones (`algo`, `data`, `result`, `cvms serve`) join [`Command`] later, each
//! in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod checksum;
mod keys;
mod manifest;

/// Exit statuses, as `--help` documents them.
const EXIT_HELP: &str = "\
Exit status:
  0  success
  1  a check's verdict is negative (`manifest check`: the manifest is invalid)
  2  the command could not run: bad arguments, unreadable files or keys";

/// Command line of the providers and consumers of a confidential
/// computation: checksums, keys and manifests.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Checksum(args) => checksum::run(&args),
        Command::Keys(cmd) => keys::run(&cmd),
        Command::Manifest(cmd) => manifest::run(&cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cocos-cli: {e:#}");
            ExitCode::from(2)
        }
    }
}
