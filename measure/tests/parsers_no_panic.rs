//! The parsers of untrusted input never panic: random bytes, and real OVMF
//! and IGVM files from the vectors with random bytes overwritten where
//! their tables live. (The fuzz targets in measure/fuzz go further.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod refs;

use cocos_measure::igvm::{IgvmImage, Semantics};
use cocos_measure::snp::{self, FirmwareImage, GuestMode, KernelHashes, LaunchConfig, VmmType};
use proptest::prelude::*;
use refs::{input, vector_file};

fn measure_all(ovmf: &FirmwareImage) {
    // Keep each case quick: huge sections are valid, just slow to hash.
    let pages: u64 = ovmf
        .metadata()
        .iter()
        .map(|s| u64::from(s.size) / 4096 + 1)
        .sum();
    if pages > 1 << 14 {
        return;
    }
    let hashes = KernelHashes::new(b"k", None, Some(b"c"));
    for mode in [GuestMode::Sev, GuestMode::SevEs, GuestMode::Snp] {
        for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            for kernel_hashes in [None, Some(hashes)] {
                let _ = snp::launch_digest(&LaunchConfig {
                    mode,
                    ovmf,
                    vcpus: 2,
                    vcpu_sig: 0x800f12,
                    vmm,
                    guest_features: 1,
                    kernel_hashes,
                    ovmf_hash: None,
                    svsm: None,
                });
            }
        }
    }
}

fn measure_igvm(bytes: &[u8]) {
    if let Ok(image) = IgvmImage::parse(bytes) {
        for s in [
            Semantics::Firmware,
            Semantics::Igvmmeasure,
            Semantics::IgvmCrate,
        ] {
            let _ = image.snp_launch_digest(s, false);
        }
        let _ = image.snp_launch_digest(Semantics::Firmware, true);
        let _ = image.tdx_mrtd();
        if let Ok(Some(block)) = image.snp_id_block() {
            let _ = block.verify(0x30000);
        }
    }
}

/// The last 8 KiB of the AmdSev fixture: footer table, reset block, and
/// (in this build) the SEV metadata.
fn amdsev_tail() -> Vec<u8> {
    std::fs::read(input("fixtures/ovmf_AmdSev_suffix.bin")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_as_ovmf(mut data in proptest::collection::vec(any::<u8>(), 0..9000), aligned in any::<bool>()) {
        if aligned {
            data.resize(data.len().div_ceil(4096).max(1) * 4096, 0);
        }
        if let Ok(ovmf) = FirmwareImage::parse_ovmf(data) {
            measure_all(&ovmf);
        }
    }

    #[test]
    fn corrupted_ovmf_tables(edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..24)) {
        let mut data = amdsev_tail();
        let len = data.len();
        for (off, byte) in edits {
            // Bytes near the end: the table and the reset vector area.
            data[len - 1 - off] = byte;
        }
        if let Ok(ovmf) = FirmwareImage::parse_ovmf(data) {
            measure_all(&ovmf);
        }
    }

    #[test]
    fn random_bytes_as_igvm(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        measure_igvm(&data);
    }

    #[test]
    fn corrupted_igvm_headers(file in 0usize..4, edits in proptest::collection::vec((0usize..2048, any::<u8>()), 1..16)) {
        let names = [
            "igvm/01_normal_pages.igvm",
            "igvm/06_param_area_4k.igvm",
            "igvm/17_firmware_layout.signed.igvm",
            "igvm/14_2mb_zero_page.igvm",
        ];
        let mut data = std::fs::read(vector_file(names[file])).unwrap();
        // The fixed and variable headers sit at the start of the file.
        for (off, byte) in edits {
            let i = off % data.len();
            data[i] = byte;
        }
        measure_igvm(&data);
    }
}

#[test]
fn every_vector_igvm_file_measures_or_errors_without_panic() {
    let dir = vector_file("igvm");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        measure_igvm(&bytes);
        for cut in [0, 16, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            measure_igvm(&bytes[..cut]);
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} IGVM files in {}", dir.display());
}

/// Found by the igvm_measure fuzz target: variable headers whose offset
/// plus size overflows made the igvm crate panic (add overflow with
/// overflow checks, a slice out of bounds without). They are refused first.
#[test]
fn variable_headers_past_the_file_are_refused() {
    let crash: &[u8] = &[
        73, 71, 86, 77, 1, 0, 0, 0, 5, 0, 0, 0, 255, 255, 255, 255, 25, 0, 0, 0, 0, 0, 0, 173, 173,
    ];
    let err = cocos_measure::igvm::IgvmImage::parse(crash).unwrap_err();
    assert!(
        err.to_string().contains("do not fit in the 25-byte file"),
        "{err}"
    );
}
