//! Launch digests of OVMF direct boots under SEV, SEV-ES and SEV-SNP (also
//! with COCONUT-SVSM), computed as QEMU/KVM and the AMD secure processor
//! compute them, and bit-identical to sev-snp-measure 0.0.13.
//!
//! What each mode measures:
//! - **SEV**: `SHA-256(firmware ‖ padded kernel-hashes table)`
//!   (`LAUNCH_UPDATE_DATA` of the SEV API, section 6.3).
//! - **SEV-ES**: the same followed by one VMSA page per vCPU
//!   (`LAUNCH_UPDATE_VMSA`, SEV API section 6.4), SEV_FEATURES = 0.
//! - **SEV-SNP**: the PAGE_INFO chain of [`super::page_info`]: the firmware
//!   pages, then every SEV metadata section of OVMF, then one VMSA per vCPU.
//! - **SEV-SNP with SVSM**: OVMF pages, SVSM pages, the SVSM's metadata
//!   sections, and one SVSM-entry VMSA per vCPU.

use sha2::{Digest, Sha256, Sha384};
use zerocopy::IntoBytes;

use super::error::SnpError;
use super::hashes::KernelHashes;
use super::ovmf::{FirmwareImage, SectionType};
use super::page_info::{GuestContext, LD_SIZE, LaunchDigest, PAGE_SIZE, PageType, VMSA_GPA};
use super::vmsa::{BSP_EIP, SevEsSaveArea, VmmType};

/// The guest type (sev-snp-measure `--mode`, except `snp:ovmf-hash`, which
/// is [`snp_firmware_digest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    /// SEV (`sev`): SHA-256, no vCPU state.
    Sev,
    /// SEV-ES (`seves`): SHA-256 including the VMSAs.
    SevEs,
    /// SEV-SNP (`snp`): SHA-384 PAGE_INFO chain.
    Snp,
    /// SEV-SNP booting COCONUT-SVSM before OVMF (`snp:svsm`).
    SnpSvsm,
}

impl GuestMode {
    /// The `--mode` name.
    pub fn name(self) -> &'static str {
        match self {
            GuestMode::Sev => "sev",
            GuestMode::SevEs => "seves",
            GuestMode::Snp => "snp",
            GuestMode::SnpSvsm => "snp:svsm",
        }
    }
}

/// Everything a launch digest depends on.
#[derive(Debug, Clone)]
pub struct LaunchConfig<'a> {
    /// The guest type.
    pub mode: GuestMode,
    /// The OVMF image (mapped to end at 4 GiB).
    pub ovmf: &'a FirmwareImage,
    /// Number of vCPUs, each with one VMSA (ignored for SEV).
    pub vcpus: u32,
    /// CPUID signature QEMU puts in RDX (see [`super::cpu`]).
    pub vcpu_sig: u32,
    /// The hypervisor.
    pub vmm: VmmType,
    /// SEV_FEATURES of the VMSAs in SNP mode (SEV-ES uses 0, SVSM uses 1).
    pub guest_features: u64,
    /// Hashes of kernel, initrd and command line for direct boot.
    pub kernel_hashes: Option<KernelHashes>,
    /// SNP only: start from this digest of the firmware pages instead of
    /// hashing `ovmf` (sev-snp-measure `--snp-ovmf-hash`).
    pub ovmf_hash: Option<LaunchDigest>,
    /// SNP with SVSM: the SVSM image, mapped to end where the OVMF
    /// variables store begins (see [`svsm_end_gpa`]).
    pub svsm: Option<&'a FirmwareImage>,
}

/// A launch digest: SHA-384 for SEV-SNP, SHA-256 for SEV and SEV-ES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    /// SEV-SNP launch digest.
    Snp(LaunchDigest),
    /// SEV / SEV-ES launch measurement digest.
    Sev([u8; 32]),
}

impl Measurement {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Measurement::Snp(d) => &d.0,
            Measurement::Sev(d) => d,
        }
    }

    /// The digest as lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }
}

/// The result of a launch computation: the digest, and the VMSA page of
/// every vCPU in launch order (for `--dump-vmsa` and for checking them).
#[derive(Debug, Clone)]
pub struct Launch {
    /// The launch digest.
    pub measurement: Measurement,
    /// The VMSA page of every vCPU (none for SEV).
    pub vmsas: VmsaPages,
}

/// One VMSA page.
pub type VmsaPage = Box<[u8; PAGE_SIZE]>;

/// Most vCPUs accepted: far above what KVM supports (4096 on x86), low
/// enough that a typo cannot make the tool hash for hours.
pub const MAX_VCPUS: u32 = 1 << 16;

/// The VMSA pages of a launch, in vCPU order: the bootstrap processor's,
/// then the same page for every application processor. Stored once each.
#[derive(Debug, Clone, Default)]
pub struct VmsaPages {
    bsp: Option<VmsaPage>,
    ap: Option<VmsaPage>,
    count: u32,
}

impl VmsaPages {
    fn new(bsp: VmsaPage, ap: Option<VmsaPage>, count: u32) -> Self {
        VmsaPages {
            bsp: (count > 0).then_some(bsp),
            ap: ap.filter(|_| count > 1),
            count,
        }
    }

    /// Number of vCPUs.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The page of vCPU `index`.
    pub fn get(&self, index: u32) -> Option<&[u8; PAGE_SIZE]> {
        match index {
            i if i >= self.count => None,
            0 => self.bsp.as_deref(),
            _ => self.ap.as_deref(),
        }
    }

    /// The pages in vCPU order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8; PAGE_SIZE]> {
        (0..self.count).filter_map(|i| self.get(i))
    }
}

/// The SNP digest of the OVMF pages alone (sev-snp-measure
/// `--mode snp:ovmf-hash`), to pass later as [`LaunchConfig::ovmf_hash`].
pub fn snp_firmware_digest(ovmf: &FirmwareImage) -> Result<LaunchDigest, SnpError> {
    let mut gctx = GuestContext::new();
    add_firmware_pages(&mut gctx, ovmf, "OVMF")?;
    Ok(gctx.launch_digest())
}

/// Where the SVSM image ends: below the OVMF code and its variables store
/// of `vars_size` bytes (QEMU maps OVMF_VARS directly below OVMF_CODE).
pub fn svsm_end_gpa(ovmf: &FirmwareImage, vars_size: u64) -> Result<u64, SnpError> {
    ovmf.gpa()
        .checked_sub(vars_size)
        .ok_or(SnpError::AddressUnderflow {
            what: "the OVMF variables store",
        })
}

/// Computes the launch digest of `config`.
pub fn launch_digest(config: &LaunchConfig<'_>) -> Result<Launch, SnpError> {
    if config.ovmf_hash.is_some() && config.mode != GuestMode::Snp {
        return Err(SnpError::OvmfHashNeedsSnp);
    }
    if config.vcpus > MAX_VCPUS {
        return Err(SnpError::TooManyVcpus(config.vcpus));
    }
    if config.svsm.is_some() != (config.mode == GuestMode::SnpSvsm) {
        return Err(SnpError::SvsmImage);
    }
    match config.mode {
        GuestMode::Sev | GuestMode::SevEs => sev_launch(config),
        GuestMode::Snp => snp_launch(config),
        GuestMode::SnpSvsm => svsm_launch(config),
    }
}

fn sev_launch(config: &LaunchConfig<'_>) -> Result<Launch, SnpError> {
    let ovmf = config.ovmf;
    let mut h = Sha256::new();
    h.update(ovmf.data());
    if let Some(hashes) = &config.kernel_hashes {
        if !ovmf.supports_sev_hashes_table()? {
            return Err(SnpError::NoSevHashesTable);
        }
        h.update(hashes.table().as_bytes());
    }
    let mut vmsas = VmsaPages::default();
    if config.mode == GuestMode::SevEs {
        vmsas = reset_vmsas(ovmf, config.vcpus, 0, config.vcpu_sig, config.vmm)?;
        for page in vmsas.iter() {
            h.update(page);
        }
    }
    Ok(Launch {
        measurement: Measurement::Sev(h.finalize().into()),
        vmsas,
    })
}

fn snp_launch(config: &LaunchConfig<'_>) -> Result<Launch, SnpError> {
    let ovmf = config.ovmf;
    let mut gctx = match config.ovmf_hash {
        Some(seed) => GuestContext::with_seed(seed),
        None => {
            let mut g = GuestContext::new();
            add_firmware_pages(&mut g, ovmf, "OVMF")?;
            g
        }
    };
    add_metadata_pages(&mut gctx, ovmf, config.kernel_hashes.as_ref(), config.vmm)?;
    let vmsas = reset_vmsas(
        ovmf,
        config.vcpus,
        config.guest_features,
        config.vcpu_sig,
        config.vmm,
    )?;
    add_vmsa_pages(&mut gctx, &vmsas);
    Ok(Launch {
        measurement: Measurement::Snp(gctx.launch_digest()),
        vmsas,
    })
}

fn svsm_launch(config: &LaunchConfig<'_>) -> Result<Launch, SnpError> {
    let Some(svsm) = config.svsm else {
        return Err(SnpError::SvsmImage);
    };
    if config.vmm != VmmType::Qemu {
        return Err(SnpError::SvsmNeedsQemu);
    }
    if config.kernel_hashes.is_some() {
        return Err(SnpError::SvsmKernel);
    }
    let entry = svsm.svsm_entry_point()?.ok_or(SnpError::SvsmNoEntryPoint)?;
    let mut gctx = GuestContext::new();
    add_firmware_pages(&mut gctx, config.ovmf, "OVMF")?;
    add_firmware_pages(&mut gctx, svsm, "SVSM")?;
    // The SVSM's metadata, not OVMF's, describes what is pre-validated.
    add_metadata_pages(&mut gctx, svsm, None, VmmType::Qemu)?;
    let page: VmsaPage = Box::new(SevEsSaveArea::svsm_state(entry, config.vcpu_sig).to_page());
    let vmsas = VmsaPages::new(page.clone(), Some(page), config.vcpus);
    add_vmsa_pages(&mut gctx, &vmsas);
    Ok(Launch {
        measurement: Measurement::Snp(gctx.launch_digest()),
        vmsas,
    })
}

fn add_firmware_pages(
    gctx: &mut GuestContext,
    image: &FirmwareImage,
    what: &'static str,
) -> Result<(), SnpError> {
    let len = image.data().len();
    if len == 0 || len % PAGE_SIZE != 0 {
        return Err(SnpError::NotPageAligned {
            what,
            len: len as u64,
        });
    }
    if image.gpa() >= super::ovmf::FOUR_GIB {
        return Err(SnpError::AddressUnderflow { what });
    }
    gctx.update_page_digests(image.gpa(), image.page_digests());
    Ok(())
}

/// Adds the pages the SEV metadata sections describe, in file order; EC2
/// adds the CPUID page after all others.
fn add_metadata_pages(
    gctx: &mut GuestContext,
    image: &FirmwareImage,
    hashes: Option<&KernelHashes>,
    vmm: VmmType,
) -> Result<(), SnpError> {
    for s in image.metadata() {
        let gpa = u64::from(s.gpa);
        let sized = |kind| -> Result<u64, SnpError> {
            if s.size as usize % PAGE_SIZE != 0 {
                return Err(SnpError::SectionNotAligned {
                    kind,
                    gpa: s.gpa,
                    size: s.size,
                });
            }
            Ok(u64::from(s.size))
        };
        match s.kind {
            SectionType::SnpSecMem => {
                let size = sized("SNP_SEC_MEM")?;
                // GCE accepts these pages unmeasured instead of as zero pages.
                let page_type = if vmm == VmmType::Gce {
                    PageType::Unmeasured
                } else {
                    PageType::Zero
                };
                gctx.update_empty_pages(page_type, gpa, size);
            }
            SectionType::SnpSecrets => gctx.update(PageType::Secrets, gpa, [0; LD_SIZE]),
            SectionType::Cpuid => {
                if vmm != VmmType::Ec2 {
                    gctx.update(PageType::Cpuid, gpa, [0; LD_SIZE]);
                }
            }
            SectionType::SnpKernelHashes => match hashes {
                Some(h) => {
                    let table_gpa = image
                        .sev_hashes_table_gpa()?
                        .ok_or(SnpError::NoSevHashesTable)?;
                    if s.size as usize != PAGE_SIZE {
                        return Err(SnpError::HashesSectionSize { size: s.size });
                    }
                    let page = h.page(table_gpa as usize & (PAGE_SIZE - 1))?;
                    gctx.update_normal_pages(gpa, &page);
                }
                None => {
                    let size = sized("SNP_KERNEL_HASHES")?;
                    gctx.update_empty_pages(PageType::Zero, gpa, size);
                }
            },
            SectionType::SvsmCaa => {
                let size = sized("SVSM_CAA")?;
                gctx.update_empty_pages(PageType::Zero, gpa, size);
            }
            SectionType::Unknown(kind) => {
                return Err(SnpError::UnknownSection { kind, gpa: s.gpa });
            }
        }
    }
    if vmm == VmmType::Ec2 {
        for s in image
            .metadata()
            .iter()
            .filter(|s| s.kind == SectionType::Cpuid)
        {
            gctx.update(PageType::Cpuid, u64::from(s.gpa), [0; LD_SIZE]);
        }
    }
    if hashes.is_some() && !image.has_section(SectionType::SnpKernelHashes) {
        return Err(SnpError::NoKernelHashesSection);
    }
    Ok(())
}

/// The VMSA of every vCPU for an OVMF boot: the BSP starts at the reset
/// vector, the APs at the address in OVMF's SEV-ES reset block.
fn reset_vmsas(
    ovmf: &FirmwareImage,
    vcpus: u32,
    sev_features: u64,
    vcpu_sig: u32,
    vmm: VmmType,
) -> Result<VmsaPages, SnpError> {
    // sev-snp-measure reads the reset block even for zero vCPUs.
    let ap_eip = ovmf.sev_es_reset_eip()?.ok_or(SnpError::NoResetBlock)?;
    let bsp = Box::new(SevEsSaveArea::reset_state(BSP_EIP, sev_features, vcpu_sig, vmm).to_page());
    let mut ap = None;
    if vcpus > 1 {
        if ap_eip == 0 {
            return Err(SnpError::NoApResetAddress);
        }
        ap = Some(Box::new(
            SevEsSaveArea::reset_state(ap_eip, sev_features, vcpu_sig, vmm).to_page(),
        ));
    }
    Ok(VmsaPages::new(bsp, ap, vcpus))
}

/// Adds the VMSA pages, hashing each distinct page once.
fn add_vmsa_pages(gctx: &mut GuestContext, pages: &VmsaPages) {
    let digest = |p: Option<&[u8; PAGE_SIZE]>| p.map(|p| <[u8; LD_SIZE]>::from(Sha384::digest(p)));
    let bsp = digest(pages.get(0));
    let ap = digest(pages.get(1));
    for i in 0..pages.len() {
        if let Some(d) = if i == 0 { bsp } else { ap } {
            gctx.update(PageType::Vmsa, VMSA_GPA, d);
        }
    }
}
