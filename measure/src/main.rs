//! `cocos-measure`: command-line front end of the `cocos_measure` library.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::EXIT_ERROR;

#[derive(Parser)]
#[command(
    name = "cocos-measure",
    version,
    about = "Compute what a verifier must expect from a confidential VM: dm-verity root hashes, \
        SEV-SNP launch digests, IGVM digests, ID blocks, TDX MRTD",
    long_about = "Compute what a verifier must expect from a confidential VM.\n\n\
        Exit status: 0 on success, 1 when a verification found a mismatch, 2 when the \
        command could not run (bad arguments, unreadable files, corrupt metadata)."
)]
struct Cli {
    /// Log more (repeat for more detail); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// dm-verity hash trees, byte-identical to veritysetup.
    #[command(subcommand)]
    Verity(cli::verity::VerityCommand),
    /// SEV, SEV-ES and SEV-SNP launch digests of OVMF boots, as sev-snp-measure.
    ///
    /// Same options, defaults and digests as sev-snp-measure 0.0.13 (the
    /// PyPI package), including the quirks listed below.
    Snp(cli::snp::SnpArgs),
    /// SEV-SNP launch digest or TDX MRTD of an IGVM file; `igvm sign` embeds an ID block.
    ///
    /// `cocos-measure igvm FILE` prints the launch digest; `cocos-measure igvm
    /// sign FILE --id-key PEM --out SIGNED.igvm` adds a signed SNP ID block.
    Igvm(cli::igvm::IgvmArgs),
    /// SEV-SNP ID block and ID auth structure for a launch digest (ECDSA P-384,
    /// RFC 6979), for QEMU's sev-snp-guest id-block= and id-auth=.
    IdBlock(cli::idblock::IdBlockArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cocos-measure: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Verity(command) => cli::verity::run(command),
        Command::Snp(args) => {
            cli::snp::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Igvm(args) => cli::igvm::run(args),
        Command::IdBlock(args) => {
            cli::idblock::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
