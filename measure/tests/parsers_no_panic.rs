//! The parsers of untrusted input never panic, and what they accept is
//! measured without panicking either. What the cases reach:
//!
//! - `generated_ovmf_images`: OVMF images built field by field (a GUIDed
//!   footer table with the SEV metadata, kernel-hashes, SEV-ES reset and
//!   SVSM entries and unknown ones; an "ASEV" metadata header; up to six
//!   sections of every type, known and unknown, aligned and not, at most 64
//!   pages each), each field sometimes given a wrong value (signature,
//!   version, sizes, counts, offsets, entry lengths). Most of them parse
//!   (`generated_images_reach_the_launch_digest` checks how many), so the
//!   table walker, the metadata reader and `launch_digest` run in every
//!   mode (SEV, SEV-ES, SNP with and without a firmware hash, SNP with the
//!   image as SVSM), for QEMU, EC2 and GCE, with and without kernel hashes.
//! - `random_bytes_as_ovmf`: random bytes, half of them with the table
//!   footer GUID where the parser looks for it, so the table walker reads
//!   random entries; the rest exercise the rejection of a missing table.
//! - `corrupted_ovmf_tables`: the AmdSev fixture's table and metadata with
//!   random bytes overwritten. A changed size can ask for gigabytes of
//!   zero pages, seconds of hashing per SNP digest: images whose sections
//!   add up to more than 64 MiB are measured in SEV and SEV-ES modes only
//!   (which do not hash the sections); the others in every mode.
//! - IGVM: random bytes (almost always refused by the igvm crate's
//!   header checks), real files from the vectors with random bytes
//!   overwritten in their headers, and every vector file whole and cut
//!   short; what parses is measured under the three SNP semantics, for
//!   TDX, and its ID block verified.
//!
//! The fuzz targets in measure/fuzz go further.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod refs;

use cocos_measure::igvm::{IgvmImage, Semantics};
use cocos_measure::snp::{
    self, FirmwareImage, GuestMode, KernelHashes, LaunchConfig, LaunchDigest, VmmType,
};
use common::pseudo_random;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use refs::{input, vector_file};

/// Zero pages the sections of an image ask for, in total.
fn section_pages(ovmf: &FirmwareImage) -> u64 {
    ovmf.metadata()
        .iter()
        .map(|s| u64::from(s.size).div_ceil(4096))
        .sum()
}

/// Runs every launch digest on `ovmf` (only SEV and SEV-ES when
/// `snp_too` is false) and returns how many SNP digests succeeded.
fn measure_all(ovmf: &FirmwareImage, snp_too: bool) -> usize {
    let _ = ovmf.sev_es_reset_eip();
    let _ = ovmf.supports_sev_hashes_table();
    let _ = ovmf.svsm_entry_point();
    let svsm = snp::svsm_end_gpa(ovmf, 0x84000)
        .ok()
        .and_then(|end| FirmwareImage::parse(ovmf.data().to_vec(), end).ok());
    let hashes = KernelHashes::new(b"k", None, Some(b"c"));
    let modes: &[GuestMode] = if snp_too {
        &[
            GuestMode::Sev,
            GuestMode::SevEs,
            GuestMode::Snp,
            GuestMode::SnpSvsm,
        ]
    } else {
        &[GuestMode::Sev, GuestMode::SevEs]
    };
    let mut snp_ok = 0;
    for &mode in modes {
        for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            for kernel_hashes in [None, Some(hashes)] {
                for ovmf_hash in [None, Some(LaunchDigest([7; 48]))] {
                    if ovmf_hash.is_some() && mode != GuestMode::Snp {
                        continue;
                    }
                    let result = snp::launch_digest(&LaunchConfig {
                        mode,
                        ovmf,
                        vcpus: 2,
                        vcpu_sig: 0x800f12,
                        vmm,
                        guest_features: 1,
                        kernel_hashes,
                        ovmf_hash,
                        svsm: (mode == GuestMode::SnpSvsm)
                            .then_some(svsm.as_ref())
                            .flatten(),
                    });
                    if result.is_ok() && mode == GuestMode::Snp {
                        snp_ok += 1;
                    }
                }
            }
        }
    }
    snp_ok
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

/// The AmdSev fixture: footer table, reset block and SEV metadata.
fn amdsev_tail() -> Vec<u8> {
    std::fs::read(input("fixtures/ovmf_AmdSev_suffix.bin")).unwrap()
}

const FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const METADATA_GUID: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";
const HASH_TABLE_GUID: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
const SEV_ES_RESET_GUID: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
const SVSM_INFO_GUID: &str = "a789a612-0597-4c4b-a49f-cbb1fe9d1ddd";

fn guid(text: &str) -> [u8; 16] {
    uuid::Uuid::parse_str(text).unwrap().to_bytes_le()
}

/// One metadata section: type, GPA, size.
type Section = (u32, u32, u32);

/// An OVMF image described field by field; `ovmf_image` writes it. The
/// `bad_*` fields, when set, replace a field with a wrong value.
#[derive(Debug, Clone)]
struct Spec {
    pages: usize,
    seed: u64,
    /// Where the "ASEV" header sits, from the start of the last page.
    metadata_at: usize,
    sections: Vec<Section>,
    /// Optional entries: kernel-hashes table (GPA, size), SEV-ES reset EIP,
    /// SVSM entry, and an unknown entry with this many data bytes.
    hash_table: Option<(u32, u32)>,
    reset_eip: Option<u32>,
    svsm_info: Option<u32>,
    unknown_entry: Option<usize>,
    with_metadata_entry: bool,
    bad_signature: bool,
    bad_version: Option<u32>,
    bad_metadata_size: Option<u32>,
    bad_count: Option<u32>,
    bad_metadata_offset: Option<u32>,
    bad_footer_size: Option<u16>,
    short_reset_entry: bool,
}

fn entry(table: &mut Vec<u8>, data: &[u8], guid_text: &str) {
    table.extend_from_slice(data);
    table.extend_from_slice(&(data.len() as u16 + 18).to_le_bytes());
    table.extend_from_slice(&guid(guid_text));
}

fn ovmf_image(spec: &Spec) -> Vec<u8> {
    let mut image = pseudo_random(spec.pages * 4096, spec.seed);
    let len = image.len();

    let meta_at = len - 4096 + spec.metadata_at;
    let mut meta = Vec::new();
    meta.extend_from_slice(if spec.bad_signature { b"ASEW" } else { b"ASEV" });
    let size = 16 + 12 * spec.sections.len() as u32;
    meta.extend_from_slice(&spec.bad_metadata_size.unwrap_or(size).to_le_bytes());
    meta.extend_from_slice(&spec.bad_version.unwrap_or(1).to_le_bytes());
    let count = spec.sections.len() as u32;
    meta.extend_from_slice(&spec.bad_count.unwrap_or(count).to_le_bytes());
    for (kind, gpa, size) in &spec.sections {
        meta.extend_from_slice(&gpa.to_le_bytes());
        meta.extend_from_slice(&size.to_le_bytes());
        meta.extend_from_slice(&kind.to_le_bytes());
    }
    image[meta_at..meta_at + meta.len()].copy_from_slice(&meta);

    // Entries in table order, then the footer, ending 32 bytes before the
    // end of the image (OVMF's ResetVectorVtf0.asm).
    let mut table = Vec::new();
    if let Some(n) = spec.unknown_entry {
        entry(
            &mut table,
            &pseudo_random(n, spec.seed ^ 1),
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        );
    }
    if let Some((gpa, size)) = spec.hash_table {
        let mut data = gpa.to_le_bytes().to_vec();
        data.extend_from_slice(&size.to_le_bytes());
        entry(&mut table, &data, HASH_TABLE_GUID);
    }
    if let Some(eip) = spec.reset_eip {
        let data = eip.to_le_bytes();
        let data = if spec.short_reset_entry {
            &data[..2]
        } else {
            &data[..]
        };
        entry(&mut table, data, SEV_ES_RESET_GUID);
    }
    if let Some(at) = spec.svsm_info {
        entry(&mut table, &at.to_le_bytes(), SVSM_INFO_GUID);
    }
    if spec.with_metadata_entry {
        let offset = spec.bad_metadata_offset.unwrap_or((len - meta_at) as u32);
        entry(&mut table, &offset.to_le_bytes(), METADATA_GUID);
    }
    let footer_size = spec.bad_footer_size.unwrap_or(table.len() as u16 + 18);
    table.extend_from_slice(&footer_size.to_le_bytes());
    table.extend_from_slice(&guid(FOOTER_GUID));
    image[len - 32 - table.len()..len - 32].copy_from_slice(&table);
    image
}

/// A section of any type, known or not, at a GPA and size that are
/// sometimes unaligned; at most 64 pages.
fn section() -> impl Strategy<Value = Section> {
    let kind = prop_oneof![
        12 => prop::sample::select(vec![1u32, 2, 3, 4, 0x10]),
        1 => any::<u32>(),
    ];
    let gpa = prop_oneof![
        4 => (0x80u32..0x900).prop_map(|p| p * 4096),
        1 => Just(0xffff_f000u32),
        1 => any::<u32>(),
    ];
    let size = prop_oneof![
        10 => (1u32..=64).prop_map(|p| p * 4096),
        1 => Just(0u32),
        1 => 1u32..0x4000,
    ];
    (kind, gpa, size)
}

/// `Some(wrong value)` once in `n`.
fn sometimes<T: std::fmt::Debug + Clone + 'static>(
    n: u32,
    wrong: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![n - 1 => Just(None), 1 => wrong.prop_map(Some)]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (1usize..=4, any::<u64>(), (0usize..=256).prop_map(|w| w * 4)),
        proptest::collection::vec(section(), 0..=6),
        (
            proptest::option::of((any::<u32>(), prop_oneof![Just(4096u32), any::<u32>()])),
            proptest::option::of(prop_oneof![Just(0xffff_fff0u32), any::<u32>()]),
            proptest::option::weighted(0.2, any::<u32>()),
            proptest::option::weighted(0.3, 0usize..40),
            prop::bool::weighted(0.9),
        ),
        (
            prop::bool::weighted(0.05),
            sometimes(20, 2u32..10),
            sometimes(20, any::<u32>()),
            sometimes(20, 9u32..1000),
            sometimes(20, any::<u32>()),
            sometimes(20, any::<u16>()),
            prop::bool::weighted(0.05),
        ),
    )
        .prop_map(
            |((pages, seed, metadata_at), sections, entries, bad)| Spec {
                pages,
                seed,
                metadata_at,
                sections,
                hash_table: entries.0,
                reset_eip: entries.1,
                svsm_info: entries.2,
                unknown_entry: entries.3,
                with_metadata_entry: entries.4,
                bad_signature: bad.0,
                bad_version: bad.1,
                bad_metadata_size: bad.2,
                bad_count: bad.3,
                bad_metadata_offset: bad.4,
                bad_footer_size: bad.5,
                short_reset_entry: bad.6,
            },
        )
}

/// The generator is worth its name: most images parse, and a good share
/// of them get an SNP launch digest (the deepest code) in some setting.
#[test]
fn generated_images_reach_the_launch_digest() {
    let mut runner = TestRunner::deterministic();
    let strategy = spec();
    let (mut parsed, mut measured) = (0, 0);
    let cases = 200;
    for _ in 0..cases {
        let spec = strategy.new_tree(&mut runner).unwrap().current();
        if let Ok(ovmf) = FirmwareImage::parse_ovmf(ovmf_image(&spec)) {
            parsed += 1;
            assert!(section_pages(&ovmf) <= 6 * 64);
            if measure_all(&ovmf, true) > 0 {
                measured += 1;
            }
        }
    }
    assert!(parsed >= cases * 6 / 10, "only {parsed} of {cases} parsed");
    assert!(
        measured >= cases / 5,
        "only {measured} of {cases} got an SNP digest"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_ovmf_images(spec in spec()) {
        if let Ok(ovmf) = FirmwareImage::parse_ovmf(ovmf_image(&spec)) {
            measure_all(&ovmf, true);
        }
    }

    #[test]
    fn random_bytes_as_ovmf(
        mut data in proptest::collection::vec(any::<u8>(), 0..9000),
        aligned in any::<bool>(),
        footer in any::<bool>(),
    ) {
        if aligned {
            data.resize(data.len().div_ceil(4096).max(1) * 4096, 0);
        }
        // Half the time the footer GUID is where the parser looks, so the
        // table walker reads the random bytes before it as entries.
        if footer && data.len() >= 50 {
            let at = data.len() - 48;
            data[at..at + 16].copy_from_slice(&guid(FOOTER_GUID));
        }
        if let Ok(ovmf) = FirmwareImage::parse_ovmf(data) {
            let snp_too = section_pages(&ovmf) <= 1 << 14;
            measure_all(&ovmf, snp_too);
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
            // Up to 64 MiB of sections in SNP mode too (see the module doc).
            let snp_too = section_pages(&ovmf) <= 1 << 14;
            measure_all(&ovmf, snp_too);
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
