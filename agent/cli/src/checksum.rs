//! `cocos-cli checksum`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;

/// Arguments of `checksum`.
#[derive(clap::Args)]
pub struct Args {
    /// A file, a directory (hashed as its deterministic zip, the form a
    /// directory dataset is uploaded in), or with --manifest a manifest JSON.
    path: PathBuf,
    /// Hash the manifest JSON as Go's encoding/json re-marshals it: the
    /// value the Go CLI's `checksum --manifest` prints.
    #[arg(short, long)]
    manifest: bool,
    /// Print standard base64 instead of hex.
    #[arg(short, long)]
    base64: bool,
}

/// Prints the hash, bare, on one line.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let digest = if args.manifest {
        let bytes = std::fs::read(&args.path)
            .with_context(|| format!("reading {}", args.path.display()))?;
        cocos_manifest::manifest_checksum(&bytes)
            .with_context(|| format!("{}", args.path.display()))?
    } else {
        cocos_manifest::hash::sha3_path(&args.path)?
    };
    if args.base64 {
        println!(
            "{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
    } else {
        println!("{}", hex::encode(digest));
    }
    Ok(ExitCode::SUCCESS)
}
