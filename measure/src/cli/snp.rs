//! `cocos-measure snp`: the options of sev-snp-measure, same digests.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use cocos_measure::snp::{
    self, FirmwareImage, GuestMode, KernelHashes, LaunchConfig, LaunchDigest, Measurement, VmmType,
    cpu,
};

use super::{OutputFormat, parse_auto_int, print_digest};

/// `--mode`: the guest type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// SEV: SHA-256 of firmware and kernel hashes.
    Sev,
    /// SEV-ES: SEV plus one VMSA per vCPU.
    Seves,
    /// SEV-SNP: SHA-384 PAGE_INFO chain.
    Snp,
    /// The SEV-SNP digest of the OVMF pages alone (for --snp-ovmf-hash).
    #[value(name = "snp:ovmf-hash")]
    SnpOvmfHash,
    /// SEV-SNP with COCONUT-SVSM booting first.
    #[value(name = "snp:svsm")]
    SnpSvsm,
}

/// Options of `cocos-measure snp`, named and defaulted as in
/// sev-snp-measure 0.0.13.
#[derive(Args)]
#[command(after_long_help = SNP_NOTES)]
pub struct SnpArgs {
    /// Guest type.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Number of vCPUs (required except in sev and snp:ovmf-hash modes; 0
    /// is accepted and measures no VMSA).
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// QEMU CPU model of the vCPUs; its CPUID signature goes into RDX of
    /// every VMSA.
    #[arg(long, value_name = "CPUTYPE", value_parser = clap::builder::PossibleValuesParser::new(cpu::model_names()))]
    vcpu_type: Option<String>,
    /// vCPU signature (CPUID Fn0000_0001_EAX) as a number (0x.. for hex);
    /// 0 counts as not given, as in sev-snp-measure 0.0.13.
    #[arg(long, value_name = "VALUE", value_parser = parse_u32_auto)]
    vcpu_sig: Option<u32>,
    /// vCPU family (with --vcpu-model and --vcpu-stepping); wins over
    /// --vcpu-sig and --vcpu-type.
    #[arg(long, value_name = "FAMILY")]
    vcpu_family: Option<u32>,
    /// vCPU model.
    #[arg(long, value_name = "MODEL")]
    vcpu_model: Option<u32>,
    /// vCPU stepping.
    #[arg(long, value_name = "STEPPING")]
    vcpu_stepping: Option<u32>,
    /// Hypervisor: QEMU, ec2 or gce (exact spelling).
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU", value_parser = parse_vmm)]
    vmm_type: VmmType,
    /// OVMF image.
    #[arg(long, value_name = "PATH")]
    ovmf: PathBuf,
    /// Kernel for direct boot (QEMU -kernel); the OVMF must have a
    /// kernel-hashes section.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initrd (QEMU -initrd); needs --kernel.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line (QEMU -append); needs --kernel. '' is the same
    /// as no --append.
    #[arg(long, value_name = "CMDLINE", allow_hyphen_values = true)]
    append: Option<OsString>,
    /// SEV_FEATURES of the SNP VMSAs, a number (0x.. for hex). Ignored in
    /// seves (0) and snp:svsm (0x1) modes.
    #[arg(long, value_name = "VALUE", default_value = "0x1", value_parser = parse_u64_auto)]
    guest_features: u64,
    /// Precalculated SNP digest of the OVMF pages (96 hex digits, from
    /// --mode snp:ovmf-hash); --mode snp only. The OVMF file is then only
    /// read for its metadata.
    #[arg(long, value_name = "HASH")]
    snp_ovmf_hash: Option<String>,
    /// Write the measured VMSA pages to DIR/vmsa<N>.bin (default: the
    /// current directory); seves, snp and snp:svsm modes.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    dump_vmsa: Option<PathBuf>,
    /// SVSM image (snp:svsm mode).
    #[arg(long, value_name = "PATH")]
    svsm: Option<PathBuf>,
    /// Size of the OVMF variables store in bytes (snp:svsm mode); 0 counts
    /// as not given.
    #[arg(long, value_name = "SIZE", conflicts_with = "vars_file")]
    vars_size: Option<u64>,
    /// OVMF variables file (snp:svsm mode); only its size matters.
    #[arg(long, value_name = "PATH")]
    vars_file: Option<PathBuf>,
    /// Output: hex, base64 or json.
    #[arg(long, value_enum, default_value = "hex")]
    output_format: OutputFormat,
}

const SNP_NOTES: &str = "\
Compatibility with sev-snp-measure 0.0.13 (the digests depend on these):
  * --append '' is the same as no --append: the command line hash is SHA-256 of a single NUL.
  * --vars-file contributes only its size.
  * snp:svsm VMSAs have x87 FCW = 0, not 0x37f: sev-snp-measure passes the value under a name
    its structure does not have, so it is dropped. Real QEMU launches agree with that value.
  * ec2: the CPUID page is measured after all other metadata sections; VMSA RDX = 0x600.
  * gce: SNP_SEC_MEM sections are measured as unmeasured pages; G_PAT = 0x70106, RDX = 0x600.
  * The vCPU signature comes from --vcpu-family/--vcpu-model/--vcpu-stepping, else
    --vcpu-sig, else --vcpu-type; a 0 family or signature counts as not given.
  * --vcpus 0 measures no VMSA; --vars-size 0 counts as missing.
Stricter than sev-snp-measure: --kernel/--initrd/--append with snp:svsm, --svsm in another mode,
and --dump-vmsa in sev or snp:ovmf-hash mode are errors instead of being ignored.";

fn parse_vmm(s: &str) -> Result<VmmType, String> {
    s.parse()
}

fn parse_u64_auto(s: &str) -> Result<u64, String> {
    let v = parse_auto_int(s)?;
    u64::try_from(v).map_err(|_| format!("{s} does not fit in 64 bits"))
}

fn parse_u32_auto(s: &str) -> Result<u32, String> {
    let v = parse_auto_int(s)?;
    u32::try_from(v).map_err(|_| format!("{s} does not fit in 32 bits"))
}

fn read_firmware(path: &Path, what: &str) -> Result<FirmwareImage> {
    let data = std::fs::read(path)
        .with_context(|| format!("{}: cannot read the {what} image", path.display()))?;
    FirmwareImage::parse_ovmf(data)
        .with_context(|| format!("{}: not a usable {what} image", path.display()))
}

/// Runs `cocos-measure snp`.
pub fn run(args: SnpArgs) -> Result<()> {
    let mode = match args.mode {
        ModeArg::SnpOvmfHash => {
            if args.dump_vmsa.is_some() {
                bail!("--dump-vmsa: --mode snp:ovmf-hash measures no VMSA");
            }
            let ovmf = read_firmware(&args.ovmf, "OVMF")?;
            let digest = snp::snp_firmware_digest(&ovmf)
                .with_context(|| format!("{}: cannot measure", args.ovmf.display()))?;
            return print_digest(
                &Measurement::Snp(digest),
                "snp:ovmf-hash",
                args.output_format,
            );
        }
        ModeArg::Sev => GuestMode::Sev,
        ModeArg::Seves => GuestMode::SevEs,
        ModeArg::Snp => GuestMode::Snp,
        ModeArg::SnpSvsm => GuestMode::SnpSvsm,
    };
    let append = args
        .append
        .as_deref()
        .map(|a| a.as_bytes())
        .filter(|a| !a.is_empty());
    if args.kernel.is_none() {
        if args.initrd.is_some() {
            bail!(
                "--initrd needs --kernel: the initrd is only measured with a kernel (direct boot)"
            );
        }
        if append.is_some() {
            bail!(
                "--append needs --kernel: the command line is only measured with a kernel (direct boot)"
            );
        }
    }
    let vcpus = match (mode, args.vcpus) {
        (GuestMode::Sev, _) => 0,
        (_, Some(n)) => n,
        (_, None) => bail!(
            "--vcpus N is required in --mode {}: every vCPU has a measured VMSA",
            mode.name()
        ),
    };
    let vcpu_sig = vcpu_signature(&args, mode)?;
    let vars_size = if mode == GuestMode::SnpSvsm {
        match (&args.vars_file, args.vars_size) {
            (Some(path), _) => std::fs::metadata(path)
                .with_context(|| {
                    format!("{}: cannot read the OVMF variables file", path.display())
                })?
                .len(),
            (None, Some(n)) if n != 0 => n,
            _ => bail!(
                "--mode snp:svsm needs --vars-size SIZE or --vars-file PATH: the SVSM is placed \
                 below the OVMF variables store (--vars-size 0 counts as missing)"
            ),
        }
    } else {
        0
    };
    if mode == GuestMode::Sev && args.dump_vmsa.is_some() {
        bail!("--dump-vmsa: --mode sev measures no VMSA");
    }
    let ovmf_hash = match &args.snp_ovmf_hash {
        None => None,
        Some(_) if mode != GuestMode::Snp => {
            bail!("--snp-ovmf-hash applies only to --mode snp (it seeds the SEV-SNP digest)")
        }
        Some(text) => Some(
            LaunchDigest::from_hex(text)
                .context("--snp-ovmf-hash: expected 96 hex digits (a SHA-384 digest)")?,
        ),
    };
    if mode == GuestMode::SnpSvsm && args.vmm_type != VmmType::Qemu {
        bail!(
            "--mode snp:svsm is modelled for QEMU only (sev-snp-measure has no EC2 or GCE SVSM state)"
        );
    }
    if mode == GuestMode::SnpSvsm && args.kernel.is_some() {
        bail!(
            "--mode snp:svsm does not measure a kernel, initrd or command line; remove --kernel, --initrd and --append"
        );
    }
    if mode != GuestMode::SnpSvsm && args.svsm.is_some() {
        bail!("--svsm applies only to --mode snp:svsm");
    }

    // Hash the kernel and initrd while the firmware pages are hashed.
    let (ovmf, kernel_hashes) = rayon::join(
        || -> Result<FirmwareImage> {
            let ovmf = read_firmware(&args.ovmf, "OVMF")?;
            if ovmf_hash.is_none() {
                ovmf.page_digests();
            }
            Ok(ovmf)
        },
        || -> Result<Option<KernelHashes>> {
            let Some(kernel) = &args.kernel else {
                return Ok(None);
            };
            let hashes = KernelHashes::from_files(kernel, args.initrd.as_deref(), append)
                .with_context(|| {
                    format!(
                        "cannot read {} or {}",
                        kernel.display(),
                        args.initrd
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )
                })?;
            Ok(Some(hashes))
        },
    );
    let (ovmf, kernel_hashes) = (ovmf?, kernel_hashes?);
    let svsm = match (mode, &args.svsm) {
        (GuestMode::SnpSvsm, Some(path)) => {
            let data = std::fs::read(path)
                .with_context(|| format!("{}: cannot read the SVSM image", path.display()))?;
            let end = snp::svsm_end_gpa(&ovmf, vars_size)?;
            Some(
                FirmwareImage::parse(data, end)
                    .with_context(|| format!("{}: not a usable SVSM image", path.display()))?,
            )
        }
        (GuestMode::SnpSvsm, None) => bail!("--mode snp:svsm needs --svsm PATH"),
        _ => None,
    };
    let launch = snp::launch_digest(&LaunchConfig {
        mode,
        ovmf: &ovmf,
        vcpus,
        vcpu_sig,
        vmm: args.vmm_type,
        guest_features: args.guest_features,
        kernel_hashes,
        ovmf_hash,
        svsm: svsm.as_ref(),
    })
    .with_context(|| {
        format!(
            "{}: cannot compute the {} launch digest",
            args.ovmf.display(),
            mode.name()
        )
    })?;
    if let Some(dir) = &args.dump_vmsa {
        for (i, page) in launch.vmsas.iter().enumerate() {
            let path = dir.join(format!("vmsa{i}.bin"));
            std::fs::write(&path, page)
                .with_context(|| format!("{}: cannot write the VMSA", path.display()))?;
        }
    }
    print_digest(&launch.measurement, mode.name(), args.output_format)
}

/// The vCPU signature, chosen as sev-snp-measure 0.0.13 does: family (if
/// non-zero), else signature (if non-zero), else CPU type, else an error
/// for QEMU (EC2 and GCE put 0x600 in RDX whatever the CPU).
fn vcpu_signature(args: &SnpArgs, mode: GuestMode) -> Result<u32> {
    if mode == GuestMode::Sev {
        return Ok(0);
    }
    if let Some(family) = args.vcpu_family.filter(|f| *f != 0) {
        let (Some(model), Some(stepping)) = (args.vcpu_model, args.vcpu_stepping) else {
            bail!("--vcpu-family needs --vcpu-model and --vcpu-stepping");
        };
        return Ok(cpu::cpu_signature(family, model, stepping));
    }
    if let Some(sig) = args.vcpu_sig.filter(|s| *s != 0) {
        return Ok(sig);
    }
    if let Some(name) = &args.vcpu_type {
        return cpu::model_signature(name).with_context(|| format!("unknown --vcpu-type {name}"));
    }
    if args.vmm_type == VmmType::Qemu {
        bail!(
            "--mode {} with QEMU needs the vCPU signature: give --vcpu-type, a non-zero --vcpu-sig, \
             or --vcpu-family/--vcpu-model/--vcpu-stepping",
            mode.name()
        );
    }
    Ok(0)
}
