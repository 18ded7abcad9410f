//! OVMF images (GUIDed footer table, SEV metadata) on arbitrary bytes: the
//! parser and every launch computation over what it accepts must never
//! panic. The input is placed at the end of a 4 KiB-aligned buffer when
//! its first byte is odd, so the SNP paths (which need whole pages) run too.
#![no_main]

use cocos_measure::snp::{
    self, FirmwareImage, GuestMode, KernelHashes, LaunchConfig, LaunchDigest, VmmType,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if data.first().is_some_and(|b| b & 1 == 1) {
        let padded = data.len().div_ceil(4096).max(1) * 4096;
        let mut v = vec![0u8; padded - data.len()];
        v.extend_from_slice(data);
        bytes = v;
    }
    let Ok(ovmf) = FirmwareImage::parse_ovmf(bytes) else {
        return;
    };
    // Measuring a section is one SHA-384 per 4 KiB: skip images whose
    // sections would take seconds (the fuzzer's time, not a bug).
    let pages: u64 = ovmf.metadata().iter().map(|s| u64::from(s.size) / 4096 + 1).sum();
    if pages > 1 << 14 {
        return;
    }
    let _ = snp::snp_firmware_digest(&ovmf);
    let _ = ovmf.sev_hashes_table_gpa();
    let _ = ovmf.supports_sev_hashes_table();
    let _ = ovmf.svsm_entry_point();
    let hashes = KernelHashes::new(b"kernel", Some(b"initrd"), Some(b"console=ttyS0"));
    for mode in [GuestMode::Sev, GuestMode::SevEs, GuestMode::Snp] {
        for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            for kernel_hashes in [None, Some(hashes)] {
                let _ = snp::launch_digest(&LaunchConfig {
                    mode,
                    ovmf: &ovmf,
                    vcpus: 3,
                    vcpu_sig: 0x00a0_0f11,
                    vmm,
                    guest_features: 0x1,
                    kernel_hashes,
                    ovmf_hash: None,
                    svsm: None,
                });
            }
        }
    }
    let _ = snp::launch_digest(&LaunchConfig {
        mode: GuestMode::Snp,
        ovmf: &ovmf,
        vcpus: 1,
        vcpu_sig: 0,
        vmm: VmmType::Qemu,
        guest_features: 0,
        kernel_hashes: None,
        ovmf_hash: Some(LaunchDigest([7; 48])),
        svsm: None,
    });
    // The same image as an SVSM below itself.
    if let Ok(end) = snp::svsm_end_gpa(&ovmf, 0x2000) {
        if let Ok(svsm) = FirmwareImage::parse(ovmf.data().to_vec(), end) {
            let _ = snp::launch_digest(&LaunchConfig {
                mode: GuestMode::SnpSvsm,
                ovmf: &ovmf,
                vcpus: 2,
                vcpu_sig: 0,
                vmm: VmmType::Qemu,
                guest_features: 0,
                kernel_hashes: None,
                ovmf_hash: None,
                svsm: Some(&svsm),
            });
        }
    }
});
