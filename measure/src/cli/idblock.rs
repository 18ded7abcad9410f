//! `cocos-measure id-block` and `cocos-measure igvm sign`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{ArgGroup, Args};
use cocos_measure::idblock::{DEFAULT_POLICY, IdAuth, IdBlock, IdKey};
use cocos_measure::igvm::sign::{SignOptions, sign};
use cocos_measure::igvm::{IgvmImage, Semantics};
use cocos_measure::snp::LaunchDigest;
use zerocopy::IntoBytes;

use super::snp::parse_auto_int;

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

/// Keys and owner-chosen fields, shared by `id-block` and `igvm sign`.
#[derive(Args)]
pub struct IdFields {
    /// P-384 private key (PEM) that signs the ID block.
    #[arg(long, value_name = "PEM")]
    id_key: PathBuf,
    /// P-384 private key (PEM) that signs the ID key; QEMU then needs
    /// author-key-enabled=on.
    #[arg(long, value_name = "PEM")]
    author_key: Option<PathBuf>,
    /// Family ID: 32 hex digits [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_id16)]
    family_id: Option<[u8; 16]>,
    /// Image ID: 32 hex digits [default: zeros].
    #[arg(long, value_name = "HEX", value_parser = parse_id16)]
    image_id: Option<[u8; 16]>,
    /// Guest security version number.
    #[arg(long, value_name = "N", default_value_t = 0)]
    guest_svn: u32,
}

/// Options of `cocos-measure igvm sign`.
#[derive(Args)]
pub struct SignArgs {
    /// The IGVM file to sign.
    file: PathBuf,
    #[command(flatten)]
    fields: IdFields,
    /// Where to write the signed file.
    #[arg(long, value_name = "SIGNED.igvm")]
    out: PathBuf,
    /// Sign the digest igvmmeasure computes (see `igvm --help`).
    #[arg(long, conflicts_with = "igvm_crate")]
    igvmmeasure: bool,
    /// Sign the digest of igvm 0.5.0's generate_snp_measurement.
    #[arg(long)]
    igvm_crate: bool,
}

fn parse_policy(s: &str) -> Result<u64, String> {
    let v = parse_auto_int(s).or_else(|_| {
        u128::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| format!("{s:?} is not a number"))
    })?;
    u64::try_from(v).map_err(|_| format!("{s} does not fit in 64 bits"))
}

fn parse_id16(s: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(s).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes, expected 16 (32 hex digits)", bytes.len()))
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

impl IdFields {
    /// The ID key and, if given, the author key.
    fn keys(&self) -> Result<(IdKey, Option<IdKey>)> {
        let id = read_key(&self.id_key)?;
        Ok((id, self.author_key.as_deref().map(read_key).transpose()?))
    }
}

fn read_key(path: &Path) -> Result<IdKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the key", path.display()))?;
    IdKey::from_pem(&pem).with_context(|| format!("{}: unusable key", path.display()))
}

/// Runs `cocos-measure id-block`.
pub fn run_id_block(args: IdBlockArgs) -> Result<()> {
    let (ld, file_policy) = match (&args.measurement, &args.igvm) {
        (Some(m), _) => (parse_measurement(m)?, None),
        (None, Some(path)) => {
            let image = super::igvm::read_image(path)?;
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

/// Runs `cocos-measure igvm sign`.
pub fn run_sign(args: SignArgs) -> Result<()> {
    let image = super::igvm::read_image(&args.file)?;
    let (id_key, author_key) = args.fields.keys()?;
    let semantics = super::igvm::semantics(args.igvmmeasure, args.igvm_crate);
    let signed = sign(
        &image,
        &SignOptions {
            id_key: &id_key,
            author_key: author_key.as_ref(),
            family_id: args.fields.family_id.unwrap_or_default(),
            image_id: args.fields.image_id.unwrap_or_default(),
            guest_svn: args.fields.guest_svn,
            semantics,
        },
    )
    .with_context(|| format!("{}: cannot sign", args.file.display()))?;
    std::fs::write(&args.out, &signed.file)
        .with_context(|| format!("{}: cannot write", args.out.display()))?;
    println!("{}", hex::encode(signed.id_block.ld));
    Ok(())
}

/// `igvm FILE --check-id-block`: compares the file's ID block with the
/// computed digest and verifies its signatures. Exit status 1 on mismatch.
pub fn check_igvm_id_block(
    image: &IgvmImage,
    digest: &LaunchDigest,
    path: &Path,
) -> Result<ExitCode> {
    let Some(block) = image.snp_id_block()? else {
        bail!("{}: the file has no SNP ID block to check", path.display());
    };
    if block.ld != digest.0 {
        eprintln!(
            "cocos-measure: {}: the ID block expects launch digest {}, but the file measures {}",
            path.display(),
            hex::encode(block.ld),
            digest
        );
        return Ok(ExitCode::from(crate::EXIT_MISMATCH));
    }
    let policy = image.snp_guest_policy()?.unwrap_or(DEFAULT_POLICY);
    if let Err(e) = block.verify(policy) {
        eprintln!(
            "cocos-measure: {}: the ID block's launch digest matches, but {e}",
            path.display()
        );
        return Ok(ExitCode::from(crate::EXIT_MISMATCH));
    }
    eprintln!(
        "{}: ID block matches the launch digest; signatures verify{}",
        path.display(),
        if block.author_key_enabled {
            " (ID key and author key)"
        } else {
            " (ID key)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
