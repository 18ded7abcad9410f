//! The subcommands of `cocos-measure`, one module each, over what they share.
//!
//! Each subcommand module depends only on this one, never on a sibling:
//! - `verity` runs `verity format|verify|dump`, as veritysetup;
//! - `snp` runs `snp`, as sev-snp-measure;
//! - `igvm` runs `igvm FILE` (launch digest, TDX MRTD, `--check-id-block`)
//!   and `igvm sign`;
//! - `idblock` runs `id-block`.
//!
//! This module holds the exit statuses, digest printing, Python-style
//! integers, and the ID block keys and fields that `id-block` and `igvm sign`
//! both take.

pub mod idblock;
pub mod igvm;
pub mod snp;
pub mod verity;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use clap::Args;
use cocos_measure::idblock::IdKey;
use cocos_measure::igvm::IgvmImage;
use cocos_measure::snp::Measurement;

/// Exit status when verification ran and found a mismatch.
pub const EXIT_MISMATCH: u8 = 1;
/// Exit status when the command could not run (bad input, I/O error).
pub const EXIT_ERROR: u8 = 2;

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

/// Parses an integer as Python's `int(s, 0)`: decimal, or 0x/0o/0b prefixed,
/// with optional underscores between digits, as sev-snp-measure reads its
/// numeric options.
pub fn parse_auto_int(s: &str) -> Result<u128, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (digits, radix) = if let Some(r) = lower.strip_prefix("0x") {
        (r, 16)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (r, 8)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (r, 2)
    } else {
        (lower.as_str(), 10)
    };
    let bad = || format!("{s:?} is not a number (decimal, or 0x.. hex, 0o.. octal, 0b.. binary)");
    let clean = digits.strip_prefix('_').unwrap_or(digits);
    if clean.is_empty() || clean.starts_with('_') || clean.ends_with('_') || clean.contains("__") {
        return Err(bad());
    }
    // Python rejects decimal literals with leading zeros ("010").
    if radix == 10
        && clean.len() > 1
        && clean.starts_with('0')
        && !clean.trim_start_matches('0').is_empty()
    {
        return Err(bad());
    }
    if radix == 10 && digits.starts_with('_') {
        return Err(bad());
    }
    u128::from_str_radix(&clean.replace('_', ""), radix).map_err(|_| bad())
}

/// Reads and parses an IGVM file.
pub fn read_igvm(path: &Path) -> Result<IgvmImage> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    IgvmImage::parse(&bytes).with_context(|| format!("{}: cannot parse", path.display()))
}

/// Keys and owner-chosen fields of an SNP ID block, shared by `id-block` and
/// `igvm sign`.
#[derive(Args)]
pub struct IdFields {
    /// P-384 private key (PEM) that signs the ID block.
    #[arg(long, value_name = "PEM")]
    pub id_key: PathBuf,
    /// P-384 private key (PEM) that signs the ID key; QEMU then needs
    /// author-key-enabled=on.
    #[arg(long, value_name = "PEM")]
    pub author_key: Option<PathBuf>,
    /// Family ID: 32 hex digits [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_id16)]
    pub family_id: Option<[u8; 16]>,
    /// Image ID: 32 hex digits [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_id16)]
    pub image_id: Option<[u8; 16]>,
    /// Guest security version number.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub guest_svn: u32,
}

impl IdFields {
    /// The ID key and, if given, the author key.
    pub fn keys(&self) -> Result<(IdKey, Option<IdKey>)> {
        let id = read_key(&self.id_key)?;
        Ok((id, self.author_key.as_deref().map(read_key).transpose()?))
    }
}

fn parse_id16(s: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes, expected 16 (32 hex digits)", bytes.len()))
}

fn read_key(path: &Path) -> Result<IdKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the key", path.display()))?;
    IdKey::from_pem(&pem).with_context(|| format!("{}: unusable key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_auto_int;

    #[test]
    fn python_int_literals() {
        assert_eq!(parse_auto_int("0x21"), Ok(0x21));
        assert_eq!(parse_auto_int("33"), Ok(33));
        assert_eq!(parse_auto_int("0"), Ok(0));
        assert_eq!(parse_auto_int("000"), Ok(0));
        assert_eq!(parse_auto_int("0X1_0"), Ok(16));
        assert!(parse_auto_int("010").is_err());
        assert!(parse_auto_int("0x").is_err());
        assert!(parse_auto_int("xyz").is_err());
        assert!(parse_auto_int("-1").is_err());
    }
}
