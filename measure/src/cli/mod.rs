//! Subcommands of `cocos-measure` beyond `verity`.

pub mod idblock;
pub mod igvm;
pub mod snp;

use anyhow::Result;
use base64::Engine;
use cocos_measure::snp::Measurement;

/// How a digest is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lower-case hex, as sev-snp-measure prints by default.
    Hex,
    /// Standard base64 with padding.
    Base64,
    /// One JSON object with the digest in hex and base64.
    Json,
}

/// Prints a launch digest in `format`.
pub fn print_digest(m: &Measurement, kind: &str, format: OutputFormat) -> Result<()> {
    let algorithm = match m {
        Measurement::Snp(_) => "sha384",
        Measurement::Sev(_) => "sha256",
    };
    print_bytes(m.as_bytes(), kind, algorithm, format)
}

/// Prints digest bytes in `format`; `kind` and `algorithm` label the JSON.
pub fn print_bytes(bytes: &[u8], kind: &str, algorithm: &str, format: OutputFormat) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    match format {
        OutputFormat::Hex => println!("{}", hex::encode(bytes)),
        OutputFormat::Base64 => println!("{b64}"),
        OutputFormat::Json => {
            let value = serde_json::json!({
                "kind": kind,
                "algorithm": algorithm,
                "hex": hex::encode(bytes),
                "base64": b64,
            });
            println!("{value}");
        }
    }
    Ok(())
}
