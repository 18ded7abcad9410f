//! `cocos-measure igvm`: launch digests of IGVM files, ID block checks and
//! signing (`igvm sign`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use cocos_measure::idblock::DEFAULT_POLICY;
use cocos_measure::igvm::sign::{SignOptions, sign};
use cocos_measure::igvm::{IgvmImage, Semantics};
use cocos_measure::snp::LaunchDigest;

use super::{EXIT_MISMATCH, IdFields, OutputFormat, print_bytes, read_igvm};

/// `--platform`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformArg {
    /// AMD SEV-SNP launch digest (SHA-384).
    SevSnp,
    /// Intel TDX MRTD (SHA-384).
    Tdx,
}

/// `cocos-measure igvm`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, after_long_help = IGVM_NOTES)]
pub struct IgvmArgs {
    #[command(subcommand)]
    command: Option<IgvmCommand>,
    #[command(flatten)]
    measure: MeasureArgs,
}

#[derive(Subcommand)]
enum IgvmCommand {
    /// Embed a signed SNP ID block in an IGVM file, as igvmmeasure sign does.
    Sign(SignArgs),
}

/// Options of `cocos-measure igvm sign`.
#[derive(Args)]
struct SignArgs {
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

/// Options of `cocos-measure igvm FILE`.
#[derive(Args)]
struct MeasureArgs {
    /// The IGVM file.
    #[arg(required = true)]
    file: Option<PathBuf>,
    /// Platform whose measurement to compute.
    #[arg(long, value_enum, default_value = "sev-snp")]
    platform: PlatformArg,
    /// Measure data-less pages as SNP ZERO pages instead of NORMAL pages of
    /// zeros (igvmmeasure --native-zero).
    #[arg(long)]
    native_zero: bool,
    /// Compute the digest as COCONUT-SVSM's igvmmeasure (igvm 0.4.0) does
    /// where it differs from the SNP firmware ABI.
    #[arg(long, conflicts_with = "igvm_crate")]
    igvmmeasure: bool,
    /// Compute the digest with igvm 0.5.0's generate_snp_measurement.
    #[arg(long, conflicts_with = "native_zero")]
    igvm_crate: bool,
    /// Also check the file's SNP ID block: its launch digest must equal the
    /// computed one and its signatures must verify. Exit status 1 when not.
    #[arg(long)]
    check_id_block: bool,
    /// Output: hex, base64 or json.
    #[arg(long, value_enum, default_value = "hex")]
    output_format: OutputFormat,
}

const IGVM_NOTES: &str = "\
Semantics (SEV-SNP). By default the digest follows the SNP firmware ABI (SNP_LAUNCH_UPDATE, one
PAGE_INFO per 4 KiB page) and the IGVM header documentation. The two reference tools differ from
it on some files; --igvmmeasure and --igvm-crate reproduce them:
  directive                           default            --igvmmeasure       --igvm-crate
  header for another platform (mask)  skipped            VMSAs measured      skipped
  page data with the shared flag      skipped            measured            skipped
  2 MiB page without data             512 pages          512 pages           1 page
  2 MiB flag with 4 KiB of data       error              error (it panics)   1 page
  parameter insert of N bytes         N/4096 pages       1 page              N/4096 pages
  VMSA bytes past 0x670 not zero      measured           error               measured
  no SNP guest policy                 measured           measured            error
On every file where the two tools agree, all three give the same digest.";

/// The digest semantics the `--igvmmeasure`/`--igvm-crate` flags choose.
fn semantics(igvmmeasure: bool, igvm_crate: bool) -> Semantics {
    if igvmmeasure {
        Semantics::Igvmmeasure
    } else if igvm_crate {
        Semantics::IgvmCrate
    } else {
        Semantics::Firmware
    }
}

/// Runs `cocos-measure igvm ...`.
pub fn run(args: IgvmArgs) -> Result<ExitCode> {
    if let Some(IgvmCommand::Sign(sign)) = args.command {
        run_sign(sign)?;
        return Ok(ExitCode::SUCCESS);
    }
    let m = args.measure;
    let Some(path) = m.file else {
        bail!("give the IGVM FILE to measure");
    };
    let image = read_igvm(&path)?;
    match m.platform {
        PlatformArg::Tdx => {
            if m.igvmmeasure || m.igvm_crate || m.native_zero || m.check_id_block {
                bail!(
                    "--igvmmeasure, --igvm-crate, --native-zero and --check-id-block apply to --platform sev-snp"
                );
            }
            let mrtd = image
                .tdx_mrtd()
                .with_context(|| format!("{}: cannot compute the TDX MRTD", path.display()))?;
            print_bytes(&mrtd, "tdx-mrtd", "sha384", m.output_format)?;
            Ok(ExitCode::SUCCESS)
        }
        PlatformArg::SevSnp => {
            let semantics = semantics(m.igvmmeasure, m.igvm_crate);
            let digest = image
                .snp_launch_digest(semantics, m.native_zero)
                .with_context(|| {
                    format!(
                        "{}: cannot compute the SEV-SNP launch digest",
                        path.display()
                    )
                })?;
            if semantics == Semantics::Firmware && image.snp_guest_policy()?.is_none() {
                tracing::warn!(
                    "{}: the file has no SNP guest policy; the digest does not depend on it, but a \
                     loader needs one",
                    path.display()
                );
            }
            print_bytes(&digest.0, "snp-igvm", "sha384", m.output_format)?;
            if m.check_id_block {
                return check_id_block(&image, &digest, &path);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `cocos-measure igvm sign`.
fn run_sign(args: SignArgs) -> Result<()> {
    let image = read_igvm(&args.file)?;
    let (id_key, author_key) = args.fields.keys()?;
    let semantics = semantics(args.igvmmeasure, args.igvm_crate);
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
fn check_id_block(image: &IgvmImage, digest: &LaunchDigest, path: &Path) -> Result<ExitCode> {
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
        return Ok(ExitCode::from(EXIT_MISMATCH));
    }
    let policy = image.snp_guest_policy()?.unwrap_or(DEFAULT_POLICY);
    if let Err(e) = block.verify(policy) {
        eprintln!(
            "cocos-measure: {}: the ID block's launch digest matches, but {e}",
            path.display()
        );
        return Ok(ExitCode::from(EXIT_MISMATCH));
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
