//! The VMSA (VM save area) page of a SEV-ES/SEV-SNP vCPU, as measured at
//! launch, and the initial register state QEMU, EC2 and GCE give it.
//!
//! Layout: AMD64 Architecture Programmer's Manual, Volume 2, appendix B,
//! table B-4 "VMSA Layout, State Save Area for SEV-ES" (the field names are
//! those of Linux's `struct sev_es_save_area`). The register values are
//! those of sev-snp-measure 0.0.13 (`vmsa.py`), which models QEMU/KVM's
//! reset state; the vectors pin them (`vmsa_bsp_sha384`, `vmsa_ap_sha384`).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::page_info::PAGE_SIZE;

/// A segment register in the save area (APM vol. 2, table B-4; Linux
/// `struct vmcb_seg`): 16 bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VmcbSegment {
    /// Selector.
    pub selector: U16,
    /// Attributes (the descriptor's type, S, DPL, P, AVL, L, D/B, G bits,
    /// packed as in the VMCB).
    pub attrib: U16,
    /// Limit.
    pub limit: U32,
    /// Base address.
    pub base: U64,
}

const _: () = assert!(size_of::<VmcbSegment>() == 16);

impl VmcbSegment {
    /// A segment from its four fields.
    pub fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Self {
        VmcbSegment {
            selector: U16::new(selector),
            attrib: U16::new(attrib),
            limit: U32::new(limit),
            base: U64::new(base),
        }
    }
}

/// The 4 KiB VMSA page (APM vol. 2, table B-4). Offsets are in the field
/// names of the reserved areas; all fields little-endian.
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
#[allow(missing_docs)] // register names as in the APM; documented where not obvious
pub struct SevEsSaveArea {
    pub es: VmcbSegment,
    pub cs: VmcbSegment,
    pub ss: VmcbSegment,
    pub ds: VmcbSegment,
    pub fs: VmcbSegment,
    pub gs: VmcbSegment,
    pub gdtr: VmcbSegment,
    pub ldtr: VmcbSegment,
    pub idtr: VmcbSegment,
    pub tr: VmcbSegment,
    pub vmpl0_ssp: U64,
    pub vmpl1_ssp: U64,
    pub vmpl2_ssp: U64,
    pub vmpl3_ssp: U64,
    pub u_cet: U64,
    pub reserved_0xc8: [u8; 2],
    pub vmpl: u8,
    pub cpl: u8,
    pub reserved_0xcc: [u8; 4],
    pub efer: U64,
    pub reserved_0xd8: [u8; 104],
    pub xss: U64,
    pub cr4: U64,
    pub cr3: U64,
    pub cr0: U64,
    pub dr7: U64,
    pub dr6: U64,
    pub rflags: U64,
    pub rip: U64,
    pub dr0: U64,
    pub dr1: U64,
    pub dr2: U64,
    pub dr3: U64,
    pub dr0_addr_mask: U64,
    pub dr1_addr_mask: U64,
    pub dr2_addr_mask: U64,
    pub dr3_addr_mask: U64,
    pub reserved_0x1c0: [u8; 24],
    pub rsp: U64,
    pub s_cet: U64,
    pub ssp: U64,
    pub isst_addr: U64,
    pub rax: U64,
    pub star: U64,
    pub lstar: U64,
    pub cstar: U64,
    pub sfmask: U64,
    pub kernel_gs_base: U64,
    pub sysenter_cs: U64,
    pub sysenter_esp: U64,
    pub sysenter_eip: U64,
    pub cr2: U64,
    pub reserved_0x248: [u8; 32],
    /// Guest PAT MSR.
    pub g_pat: U64,
    pub dbgctl: U64,
    pub br_from: U64,
    pub br_to: U64,
    pub last_excp_from: U64,
    pub last_excp_to: U64,
    pub reserved_0x298: [u8; 80],
    pub pkru: U32,
    pub tsc_aux: U32,
    pub reserved_0x2f0: [u8; 24],
    pub rcx: U64,
    /// At reset, RDX holds the CPUID family/model/stepping signature.
    pub rdx: U64,
    pub rbx: U64,
    pub reserved_0x320: U64,
    pub rbp: U64,
    pub rsi: U64,
    pub rdi: U64,
    pub r8: U64,
    pub r9: U64,
    pub r10: U64,
    pub r11: U64,
    pub r12: U64,
    pub r13: U64,
    pub r14: U64,
    pub r15: U64,
    pub reserved_0x380: [u8; 16],
    pub guest_exit_info_1: U64,
    pub guest_exit_info_2: U64,
    pub guest_exit_int_info: U64,
    pub guest_nrip: U64,
    /// SEV_FEATURES (APM vol. 2, 15.35.2): bit 0 SNP active, and the guest
    /// features the hypervisor enables (`--guest-features`).
    pub sev_features: U64,
    pub vintr_ctrl: U64,
    pub guest_exit_code: U64,
    pub virtual_tom: U64,
    pub tlb_id: U64,
    pub pcpu_id: U64,
    pub event_inj: U64,
    pub xcr0: U64,
    pub reserved_0x3f0: [u8; 16],
    pub x87_dp: U64,
    pub mxcsr: U32,
    pub x87_ftw: U16,
    pub x87_fsw: U16,
    pub x87_fcw: U16,
    pub x87_fop: U16,
    pub x87_ds: U16,
    pub x87_cs: U16,
    pub x87_rip: U64,
    pub fpreg_x87: [u8; 80],
    pub fpreg_xmm: [u8; 256],
    pub fpreg_ymm: [u8; 256],
    pub reserved_0x670: [u8; 2448],
}

const _: () = assert!(size_of::<SevEsSaveArea>() == PAGE_SIZE);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, efer) == 0xd0);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, cr4) == 0x148);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, rip) == 0x178);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, g_pat) == 0x268);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, rdx) == 0x310);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, sev_features) == 0x3b0);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, xcr0) == 0x3e8);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, mxcsr) == 0x408);
const _: () = assert!(std::mem::offset_of!(SevEsSaveArea, x87_fcw) == 0x410);

/// The hypervisor whose reset state the VMSA models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmType {
    /// QEMU/KVM.
    Qemu,
    /// Amazon EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl VmmType {
    /// The name used on sev-snp-measure's command line.
    pub fn name(self) -> &'static str {
        match self {
            VmmType::Qemu => "QEMU",
            VmmType::Ec2 => "ec2",
            VmmType::Gce => "gce",
        }
    }
}

impl std::str::FromStr for VmmType {
    type Err = String;

    /// Exactly the names sev-snp-measure accepts (case-sensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "QEMU" => Ok(VmmType::Qemu),
            "ec2" => Ok(VmmType::Ec2),
            "gce" => Ok(VmmType::Gce),
            _ => Err(format!(
                "unknown VMM type {s:?} (expected QEMU, ec2 or gce)"
            )),
        }
    }
}

/// Reset IP of the bootstrap processor (the x86 reset vector).
pub const BSP_EIP: u32 = 0xffff_fff0;

/// Guest PAT at reset (APM vol. 2, section 7.8.2 "PAT Register": power-on
/// value 0x0007040600070406).
const RESET_G_PAT: u64 = 0x0007_0406_0007_0406;

/// RDX that EC2 and GCE put in every VMSA instead of the CPU signature.
const CLOUD_RDX: u64 = 0x600;

impl SevEsSaveArea {
    /// An all-zero save area.
    pub fn zeroed() -> Self {
        FromZeros::new_zeroed()
    }

    /// The reset state of a vCPU starting at `eip` under `vmm`, as
    /// sev-snp-measure builds it for OVMF boots (`VMSA.build_save_area`).
    /// `vcpu_sig` goes into RDX for QEMU.
    pub fn reset_state(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> Self {
        // (CS attributes, SS attributes, TR attributes, RDX, MXCSR, FCW, G_PAT)
        let (cs, ss, tr, rdx, mxcsr, fcw, g_pat) = match vmm {
            VmmType::Qemu => (
                0x9b,
                0x93,
                0x8b,
                u64::from(vcpu_sig),
                0x1f80,
                0x37f,
                RESET_G_PAT,
            ),
            // EC2 clears the accessed bit of CS only for the reset vector.
            VmmType::Ec2 => {
                let cs = if eip == BSP_EIP { 0x9a } else { 0x9b };
                (cs, 0x92, 0x83, CLOUD_RDX, 0, 0, RESET_G_PAT)
            }
            // The GCE hypervisor overwrites the default G_PAT.
            VmmType::Gce => (0x9b, 0x93, 0x8b, CLOUD_RDX, 0, 0, 0x0007_0106),
        };
        let mut a = Self::zeroed();
        a.es = VmcbSegment::new(0, 0x93, 0xffff, 0);
        a.cs = VmcbSegment::new(0xf000, cs, 0xffff, u64::from(eip & 0xffff_0000));
        a.ss = VmcbSegment::new(0, ss, 0xffff, 0);
        a.ds = VmcbSegment::new(0, 0x93, 0xffff, 0);
        a.fs = VmcbSegment::new(0, 0x93, 0xffff, 0);
        a.gs = VmcbSegment::new(0, 0x93, 0xffff, 0);
        a.gdtr = VmcbSegment::new(0, 0, 0xffff, 0);
        a.idtr = VmcbSegment::new(0, 0, 0xffff, 0);
        a.ldtr = VmcbSegment::new(0, 0x82, 0xffff, 0);
        a.tr = VmcbSegment::new(0, tr, 0xffff, 0);
        a.efer = U64::new(0x1000); // KVM sets EFER.SVME
        a.cr4 = U64::new(0x40); // KVM sets CR4.MCE
        a.cr0 = U64::new(0x10);
        a.dr7 = U64::new(0x400);
        a.dr6 = U64::new(0xffff_0ff0);
        a.rflags = U64::new(0x2);
        a.rip = U64::new(u64::from(eip & 0xffff));
        a.g_pat = U64::new(g_pat);
        a.rdx = U64::new(rdx);
        a.sev_features = U64::new(sev_features);
        a.xcr0 = U64::new(0x1);
        a.mxcsr = U32::new(mxcsr);
        a.x87_fcw = U16::new(fcw);
        a
    }

    /// The state of every vCPU when COCONUT-SVSM boots first (QEMU only),
    /// as sev-snp-measure's `VMSA_SVSM` builds it: 64-bit flat segments,
    /// protected mode, RIP = the SVSM entry point, SEV_FEATURES = 0x1.
    ///
    /// **Quirk reproduced:** x87 FCW is 0, not 0x37f. sev-snp-measure passes
    /// the value under the keyword `fcw=`, while the ctypes field is named
    /// `x87_fcw`, so the value is silently dropped. The digests it computes
    /// (and the upstream test values obtained from a real QEMU launch)
    /// depend on it.
    pub fn svsm_state(eip: u64, vcpu_sig: u32) -> Self {
        let mut a = Self::zeroed();
        a.es = VmcbSegment::new(16, 0xc93, 0xffff_ffff, 0);
        a.cs = VmcbSegment::new(8, 0xc9b, 0xffff_ffff, 0);
        a.ss = VmcbSegment::new(16, 0xc93, 0xffff_ffff, 0);
        a.ds = VmcbSegment::new(16, 0xc93, 0xffff_ffff, 0);
        a.fs = VmcbSegment::new(16, 0xc93, 0xffff_ffff, 0);
        a.gs = VmcbSegment::new(0, 0x093, 0xffff, 0);
        a.gdtr = VmcbSegment::new(0, 0, 0xffff, 0);
        a.idtr = VmcbSegment::new(0, 0, 0xffff, 0);
        a.ldtr = VmcbSegment::new(0, 0x82, 0xffff, 0);
        a.tr = VmcbSegment::new(0, 0x8b, 0xffff, 0);
        a.efer = U64::new(0x1000);
        a.cr4 = U64::new(0x40);
        a.cr0 = U64::new(0x11);
        a.dr7 = U64::new(0x400);
        a.dr6 = U64::new(0xffff_0ff0);
        a.rflags = U64::new(0x2);
        a.rip = U64::new(eip);
        a.g_pat = U64::new(RESET_G_PAT);
        a.rdx = U64::new(u64::from(vcpu_sig));
        a.sev_features = U64::new(0x1);
        a.xcr0 = U64::new(0x1);
        a.mxcsr = U32::new(0x1f80);
        a.x87_fcw = U16::new(0); // the quirk described above
        a
    }

    /// The page as bytes.
    pub fn to_page(&self) -> [u8; PAGE_SIZE] {
        let mut page = [0u8; PAGE_SIZE];
        page.copy_from_slice(self.as_bytes());
        page
    }
}
