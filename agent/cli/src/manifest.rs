//! `cocos-cli manifest`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cocos_auth::PublicKey;
use cocos_manifest::json::{self, Computation, HashField};
use cocos_manifest::{Manifest, ManifestError};

/// `manifest` subcommands.
// Parsed once per run: the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
pub enum Command {
    /// Write a manifest's JSON form (compact, exactly as Go marshals it, so
    /// the file's SHA3-256 is its `checksum --manifest`) from the algorithm,
    /// the datasets and the public keys (PEM or DER).
    New(NewArgs),
    /// Validate a manifest JSON: prints its checksum, or every problem
    /// naming its field (exit status 1).
    Check {
        /// The manifest JSON.
        file: PathBuf,
    },
}

/// Arguments of `manifest new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// Computation id.
    #[arg(long)]
    id: String,
    /// Computation name.
    #[arg(long, default_value = "")]
    name: String,
    /// Computation description.
    #[arg(long, default_value = "")]
    description: String,
    /// The algorithm file and its provider's public key.
    #[arg(long, num_args = 2, value_names = ["FILE", "PUBLIC_KEY"], required = true)]
    algorithm: Vec<PathBuf>,
    /// Algorithm type.
    #[arg(long = "type", default_value = "bin", value_parser = ["bin", "python", "wasm", "docker"])]
    algo_type: String,
    /// Python requirements.txt, declared by its SHA3-256.
    #[arg(long)]
    requirements: Option<PathBuf>,
    /// An argument for the algorithm (repeat, in order).
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// A dataset (file or directory; its name is the upload's filename)
    /// and its provider's public key. Repeat for each dataset.
    #[arg(long, num_args = 2, value_names = ["PATH", "PUBLIC_KEY"], action = clap::ArgAction::Append)]
    dataset: Vec<PathBuf>,
    /// A result consumer's public key. Repeat for each consumer.
    #[arg(long)]
    consumer: Vec<PathBuf>,
    /// Output file; standard output when absent.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn public_key_der(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let key = PublicKey::from_pem_or_der(&bytes)
        .with_context(|| format!("public key {}", path.display()))?;
    Ok(key.to_spki_der()?)
}

fn sha3(path: &Path) -> anyhow::Result<HashField> {
    Ok(HashField::new(cocos_manifest::hash::sha3_path(path)?))
}

fn new(a: &NewArgs) -> anyhow::Result<ExitCode> {
    let [algo_file, algo_key] = a.algorithm.as_slice() else {
        bail!("--algorithm takes FILE PUBLIC_KEY");
    };
    let mut datasets = Vec::new();
    for pair in a.dataset.chunks(2) {
        let [path, key] = pair else {
            bail!("--dataset takes PATH PUBLIC_KEY");
        };
        let filename = path
            .canonicalize()
            .with_context(|| format!("dataset {}", path.display()))?
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .with_context(|| format!("dataset {}: no UTF-8 file name", path.display()))?;
        datasets.push(json::Dataset {
            hash: sha3(path)?,
            user_key: public_key_der(key)?,
            filename,
            ..Default::default()
        });
    }
    let computation = Computation {
        id: a.id.clone(),
        name: a.name.clone(),
        description: a.description.clone(),
        datasets,
        algorithm: Some(json::Algorithm {
            hash: sha3(algo_file)?,
            user_key: public_key_der(algo_key)?,
            algo_type: a.algo_type.clone(),
            algo_args: a.args.clone(),
            requirements_hash: a.requirements.as_deref().map(sha3).transpose()?,
            ..Default::default()
        }),
        result_consumers: a
            .consumer
            .iter()
            .map(|k| {
                Ok(json::ResultConsumer {
                    user_key: public_key_der(k)?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    Manifest::validate(&computation, None)?;
    let bytes = computation.to_json();
    match &a.output {
        Some(out) => {
            std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match Manifest::from_json(&bytes) {
        Ok(_) => {
            let sum = cocos_manifest::manifest_checksum(&bytes)?;
            println!("valid; checksum {}", hex::encode(sum));
            Ok(ExitCode::SUCCESS)
        }
        Err(ManifestError::Invalid(errors)) => {
            for e in errors {
                println!("{e}");
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            println!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Runs a `manifest` subcommand.
pub fn run(cmd: &Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::New(a) => new(a),
        Command::Check { file } => check(file),
    }
}
