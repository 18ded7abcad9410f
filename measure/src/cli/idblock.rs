//! `cocos-measure id-block`: an SNP ID block and ID auth structure for a
//! launch digest. (`igvm sign`, which embeds one in an IGVM file, is in
//! [`super::igvm`].)

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{ArgGroup, Args};
use cocos_measure::idblock::{DEFAULT_POLICY, IdAuth, IdBlock};
use cocos_measure::igvm::Semantics;
use cocos_measure::snp::LaunchDigest;
use zerocopy::IntoBytes;

use super::{IdFields, parse_auto_int, read_igvm};

/// `--format` of `id-block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IdBlockFormat {
    /// `id-block=B64,id-auth=B64` for QEMU's sev-snp-guest object, then the
    /// key digests, as sev-snp-measure's snp-create-id-block prints them.
    Qemu,
    /// One JSON object.
    Json,
    /// The 96-byte ID block followed by the 4096-byte ID auth, raw.
    Bin,
}

/// Options of `cocos-measure id-block`.
#[derive(Args)]
#[command(group(ArgGroup::new("digest").required(true).args(["measurement", "igvm"])))]
pub struct IdBlockArgs {
    /// Launch digest to sign: 96 hex digits (base64 accepted too).
    #[arg(long, value_name = "HEX")]
    measurement: Option<String>,
    /// Take the launch digest (and the default policy) from this IGVM file.
    #[arg(long, value_name = "FILE")]
    igvm: Option<PathBuf>,
    #[command(flatten)]
    fields: IdFields,
    /// Guest policy, decimal or 0x-prefixed hex (as the reference reads it)
    /// [default: the IGVM file's, else 0x30000].
    #[arg(long, value_name = "N", value_parser = parse_policy)]
    policy: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "qemu")]
    format: IdBlockFormat,
}

fn parse_policy(s: &str) -> Result<u64, String> {
    let v = parse_auto_int(s).or_else(|_| {
        u128::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| format!("{s:?} is not a number"))
    })?;
    u64::try_from(v).map_err(|_| format!("{s} does not fit in 64 bits"))
}

fn parse_measurement(s: &str) -> Result<LaunchDigest> {
    let bytes = match hex::decode(s.trim()) {
        Ok(b) => b,
        Err(_) => base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .context("--measurement: neither hex nor base64")?,
    };
    let arr: [u8; 48] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "--measurement: {} bytes, but a SEV-SNP launch digest (SHA-384) has 48",
            bytes.len()
        )
    })?;
    Ok(LaunchDigest(arr))
}

/// Runs `cocos-measure id-block`.
pub fn run(args: IdBlockArgs) -> Result<()> {
    let (ld, file_policy) = match (&args.measurement, &args.igvm) {
        (Some(m), _) => (parse_measurement(m)?, None),
        (None, Some(path)) => {
            let image = read_igvm(path)?;
            let ld = image
                .snp_launch_digest(Semantics::Firmware, false)
                .with_context(|| format!("{}: cannot compute the launch digest", path.display()))?;
            (ld, image.snp_guest_policy()?)
        }
        (None, None) => bail!("give --measurement or --igvm"),
    };
    let policy = args.policy.or(file_policy).unwrap_or(DEFAULT_POLICY);
    let (id_key, author_key) = args.fields.keys()?;
    let block = IdBlock::new(
        ld,
        args.fields.family_id.unwrap_or_default(),
        args.fields.image_id.unwrap_or_default(),
        args.fields.guest_svn,
        policy,
    );
    let auth = IdAuth::sign(&block, &id_key, author_key.as_ref());
    print_id_block(&block, &auth, args.format)
}

fn print_id_block(block: &IdBlock, auth: &IdAuth, format: IdBlockFormat) -> Result<()> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut out = std::io::stdout().lock();
    let author = auth.has_author_key().then(|| auth.author_key.digest());
    match format {
        IdBlockFormat::Qemu => {
            writeln!(
                out,
                "id-block={},id-auth={}",
                b64(block.as_bytes()),
                b64(auth.as_bytes())
            )?;
            write!(out, "id_key_hash: {}", b64(&auth.id_key.digest()))?;
            if let Some(a) = author {
                write!(out, "\nauthor_key: {}", b64(&a))?;
            }
            writeln!(out)?;
        }
        IdBlockFormat::Json => {
            let value = serde_json::json!({
                "id_block": b64(block.as_bytes()),
                "id_auth": b64(auth.as_bytes()),
                "author_key_enabled": author.is_some(),
                "id_key_digest": hex::encode(auth.id_key.digest()),
                "author_key_digest": author.map(hex::encode),
                "ld": hex::encode(block.ld),
                "policy": format!("{:#x}", block.policy.get()),
            });
            writeln!(out, "{value}")?;
        }
        IdBlockFormat::Bin => {
            out.write_all(block.as_bytes())?;
            out.write_all(auth.as_bytes())?;
        }
    }
    Ok(())
}
